/**
 * Log watch latency: time from writing a ready line to the model log until `watchLog` delivers
 * its 'load' event. PyWorker polls its log every 100 ms; the target here is well under 50 ms.
 *
 * Run: `npm run build && node build/benchmarks/logwatch-latency.js [--samples 50]`
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { percentile, sleep } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { watchLog, type LogEvent } from '#nodeworker/worker/logwatch.js';

export interface LogwatchLatency {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * Write `samples` ready lines (one at a time, 10 ms apart) to a fresh log in a temp dir and
 * measure write → onEvent for each. Cleans up its watch and temp dir.
 */
export async function measureLogwatchLatency(samples: number): Promise<LogwatchLatency> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logwatch-bench-'));
  const file = path.join(dir, 'model.log');
  fs.writeFileSync(file, 'model server starting\n');
  let waiting: { line: string; resolve: (e: LogEvent) => void } | null = null;
  const watch = watchLog({
    path: file,
    actions: { onLoad: ['Application startup complete'], onError: [], onInfo: [] },
    onEvent: (e) => {
      if (waiting && e.line === waiting.line) {
        const w = waiting;
        waiting = null;
        w.resolve(e);
      }
    },
  });
  const latencies: number[] = [];
  try {
    await sleep(100); // the watch is running on the existing file
    for (let i = 0; i < samples; i++) {
      const line = `INFO: Application startup complete (sample ${i})`;
      const seen = new Promise<LogEvent>((resolve) => {
        waiting = { line, resolve };
      });
      const t0 = performance.now();
      fs.appendFileSync(file, `${line}\n`);
      const timeout = sleep(5000).then(() => null);
      const got = await Promise.race([seen, timeout]);
      if (!got) throw new Error(`sample ${i}: no event within 5 s`);
      latencies.push(performance.now() - t0);
      await sleep(10);
    }
  } finally {
    await watch.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return { p50Ms: round(percentile(latencies, 50)), p99Ms: round(percentile(latencies, 99)), maxMs: round(Math.max(...latencies)) };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (isMain) {
  const args = benchArgs('logwatch-latency', '[--samples N]', { samples: 'string' });
  const samples = Number(args.samples ?? 50);
  measureLogwatchLatency(Number.isFinite(samples) && samples > 0 ? samples : 50)
    .then((r) => {
      console.log(`logwatch latency over ${samples} samples: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, max ${r.maxMs} ms`);
      console.log(JSON.stringify(r));
    })
    .catch((err: Error) => {
      console.error(err.message);
      process.exitCode = 1;
    });
}
