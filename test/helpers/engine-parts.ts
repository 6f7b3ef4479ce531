/**
 * Builders for the engine's parts tested alone (registry, protocol, scaler, store): a registry on
 * a fake clock with a silent log and a test key, an endpoint declaration, and a worker record
 * registered in it.
 */
import { createPrivateKey } from 'node:crypto';
import { FakeClock } from '../../src/autoscaler/clock.js';
import { engineTimingSchema } from '../../src/autoscaler/config.js';
import { endpointSchema, type EndpointInput } from '../../src/autoscaler/params.js';
import { newWorkerRecord, Registry, type WorkerRecord } from '../../src/autoscaler/registry.js';
import { createLogger } from '../../src/common/log.js';
import { generateRsaKeyPair } from '../../src/common/signature.js';

let pem: string | undefined;

export function testRegistry(o: { accountKey?: string; clock?: FakeClock } = {}): { reg: Registry; clock: FakeClock } {
  pem ??= generateRsaKeyPair(1024).privateKeyPem;
  const clock = o.clock ?? new FakeClock(1_000_000);
  const reg = new Registry({
    clock,
    logger: createLogger('parts-test', { level: 'silent' }),
    key: createPrivateKey(pem),
    timing: engineTimingSchema.parse({ tick_seconds: 1 }),
    ...(o.accountKey ? { accountKey: o.accountKey } : {}),
  });
  return { reg, clock };
}

export function endpointCfg(name: string, over: Partial<EndpointInput> = {}) {
  return endpointSchema.parse({
    name,
    api_key: `${name}-key-1234`,
    cold_mult: 0,
    workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }],
    ...over,
  });
}

/** A worker of `endpoint/wg/gpu` registered in state `created`. */
export function addTestWorker(reg: Registry, endpoint: string): WorkerRecord {
  const rec = newWorkerRecord({
    id: reg.allocWorkerId(),
    endpoint,
    workergroup: 'wg',
    machineType: 'gpu',
    dollarsPerHour: 1,
    storageDollarsPerHour: 0,
    dlperf: 0,
    reason: 'test',
    now: reg.clock.now(),
  });
  reg.addWorker(rec, 'test');
  return rec;
}
