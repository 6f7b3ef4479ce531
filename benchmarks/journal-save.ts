/**
 * Save time of the engine's state journal at scale (issue 21 point 1, issue 22 point 4): a
 * registry with 1,000 workers and 10,000 open requests saved by the real EngineStore into a real
 * journal (CRC-32 framed records, fsync) in a temp dir, as every tick saves it:
 * - the first save (every record), the steady tick (100 workers' reports changed and the open
 *   requests moved on), and a tick with nothing changed;
 * - a restore of it all (journal open: length, checksum and zod of every record).
 *
 *   npm run build && node build/benchmarks/journal-save.js [--workers 1000] [--requests 10000] [--ticks 50]
 */
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchArgs } from './lib/args.js';
import { FakeClock } from '#nodeworker/autoscaler/clock.js';
import { engineTimingSchema } from '#nodeworker/autoscaler/config.js';
import { Journal } from '#nodeworker/autoscaler/journal.js';
import { endpointSchema } from '#nodeworker/autoscaler/params.js';
import { newWorkerRecord, Registry } from '#nodeworker/autoscaler/registry.js';
import { EngineStore, validateRecord } from '#nodeworker/autoscaler/store.js';
import { createLogger } from '#nodeworker/common/log.js';
import { generateRsaKeyPair } from '#nodeworker/common/signature.js';

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function registry(clock: FakeClock, key: string): Registry {
  return new Registry({
    clock,
    logger: createLogger('bench', { level: 'silent' }),
    key: createPrivateKey(key),
    timing: engineTimingSchema.parse({}),
  });
}

function main(): void {
  const args = benchArgs('journal-save', '[--workers N] [--requests N] [--ticks N]', { workers: 'string', requests: 'string', ticks: 'string' });
  const nWorkers = Number(args.workers ?? 1000);
  const nRequests = Number(args.requests ?? 10_000);
  const ticks = Number(args.ticks ?? 50);
  const key = generateRsaKeyPair(2048).privateKeyPem;
  const dir = mkdtempSync(join(tmpdir(), 'journal-bench-'));
  const path = join(dir, 'engine-state.jsonl');
  try {
    const clock = new FakeClock(1_000_000);
    const reg = registry(clock, key);
    const ep = reg.addEndpoint(
      endpointSchema.parse({ name: 'bench', api_key: 'bench-key-1234', workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }] }),
    );
    const journal = new Journal(path, { validate: validateRecord });
    const store = new EngineStore(reg, journal);
    for (let i = 0; i < nWorkers; i++) {
      const w = newWorkerRecord({
        id: reg.allocWorkerId(),
        endpoint: 'bench',
        workergroup: 'wg',
        machineType: 'gpu',
        dollarsPerHour: 1,
        storageDollarsPerHour: 0,
        dlperf: 0,
        reason: 'bench',
        now: clock.now(),
      });
      reg.addWorker(w, 'bench');
    }
    for (let i = 0; i < nRequests; i++) ep.router.submit(reg.allocRequestIdx(), 100, 600);

    let t = performance.now();
    store.save(false);
    const first = performance.now() - t;
    const size = statSync(path).size;

    const steady: number[] = [];
    const idle: number[] = [];
    const workers = [...reg.workers.values()];
    for (let k = 0; k < ticks; k++) {
      clock.advanceBy(1000);
      for (let i = 0; i < 100; i++) {
        const w = workers[(k * 100 + i) % workers.length]!;
        w.reports++;
        w.lastReportAt = clock.now();
      }
      // The open requests move on: 100 new ones each tick.
      for (let i = 0; i < 100; i++) ep.router.submit(reg.allocRequestIdx(), 100, 600);
      t = performance.now();
      store.save(false);
      steady.push(performance.now() - t);
      t = performance.now();
      store.save(false);
      idle.push(performance.now() - t);
    }
    journal.close();
    t = performance.now();
    const j2 = new Journal(path, { validate: validateRecord });
    const open = performance.now() - t;
    t = performance.now();
    const out = new EngineStore(registry(new FakeClock(2_000_000), key), j2).restore();
    const restore = performance.now() - t;
    j2.close();

    steady.sort((a, b) => a - b);
    idle.sort((a, b) => a - b);
    const f = (x: number) => `${x.toFixed(1)} ms`;
    console.log(`journal save, ${nWorkers} workers, ${nRequests}+ open requests (${ticks} ticks; fsync on ${tmpdir()})`);
    console.log(`  first save (every record)         ${f(first)}  (${(size / 1024 / 1024).toFixed(2)} MiB)`);
    console.log(`  tick save: 100 workers + requests p50 ${f(quantile(steady, 0.5))}  p99 ${f(quantile(steady, 0.99))}  max ${f(steady.at(-1)!)}`);
    console.log(`  tick save: nothing changed        p50 ${f(quantile(idle, 0.5))}  p99 ${f(quantile(idle, 0.99))}`);
    console.log(`  open (check every record)         ${f(open)};  restore ${f(restore)} (${out.workers} workers, ${out.requests} requests)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
