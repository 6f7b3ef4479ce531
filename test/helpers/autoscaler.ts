/**
 * Test helpers for the autoscaler: for the engine driven in this process on a fake clock, a provider
 * that only records what it is asked and the engine as these tests build it (the test plays the
 * workers through the engine's own methods, as the HTTP routes call them); for providers whose
 * workers are HTTP servers the test plays, starting and stopping those servers.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/common/log.js';
import { generateRsaKeyPair } from '../../src/common/signature.js';
import type { FakeClock } from '../../src/autoscaler/clock.js';
import { engineTimingSchema } from '../../src/autoscaler/config.js';
import { Engine } from '../../src/autoscaler/engine.js';
import type { Journal } from '../../src/autoscaler/journal.js';
import type { Provider, ProviderEvent, WorkerHandle, WorkerSpec } from '../../src/autoscaler/providers/types.js';

/** A complete (if minimal) provider that records every call (`create <id> <machine type>`, `start <id>`, ...) and can emit events. */
export class RecordingProvider implements Provider {
  readonly kind: string = 'recording';
  readonly specs: WorkerSpec[] = [];
  readonly calls: string[] = [];
  private listeners = new Set<(e: ProviderEvent) => void>();
  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    this.specs.push(spec);
    this.calls.push(`create ${spec.workerId} ${spec.machineType}`);
    return { id: spec.workerId, url: `http://127.0.0.1:${20000 + spec.workerId}` };
  }
  async start(id: number) {
    this.calls.push(`start ${id}`);
  }
  async stop(id: number) {
    this.calls.push(`stop ${id}`);
  }
  async destroy(id: number) {
    this.calls.push(`destroy ${id}`);
  }
  async probe(_id?: number) {
    return true;
  }
  subscribe(l: (e: ProviderEvent) => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  emit(e: ProviderEvent) {
    for (const l of this.listeners) l(e);
  }
  async close() {}
}

/** Listen on an ephemeral port of 127.0.0.1; resolves with the server's http:// URL. */
export async function listenLoopback(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Close `server` and every connection it holds (at once when it is not listening). */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

let key: string | undefined;

/** An engine on `clock` as the fake-clock tests build it: 1 s ticks, a silent log, a test key, reports to a dead address. The caller closes it. */
export function fakeClockEngine(o: { provider: Provider; clock: FakeClock; logName: string; store?: Journal }): Engine {
  key ??= generateRsaKeyPair(1024).privateKeyPem;
  return new Engine({
    clock: o.clock,
    provider: o.provider,
    privateKey: key,
    logger: createLogger(o.logName, { level: 'silent' }),
    timing: engineTimingSchema.parse({ tick_seconds: 1 }),
    reportAddrs: () => ['http://127.0.0.1:1'],
    store: o.store,
  });
}
