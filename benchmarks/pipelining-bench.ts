/**
 * Is HTTP pipelining to the model worth it? The bare Node proxy (lib/bare-proxy.ts: node:http +
 * one undici Pool) in front of model-sim with three pool shapes, side by side in one run:
 *
 *   512 connections, pipelining 1   (what the worker's pool had)
 *   16 connections,  pipelining 1
 *   16 connections,  pipelining 10  (up to 10 requests queued on each connection)
 *
 * 1. Cost: CPU µs per proxied request and req/s at concurrency 64 (small JSON answers).
 * 2. Risk: head-of-line blocking. 64 long generations (2 s each) are sent first, then 20 short
 *    requests; with pipelining a short request may wait behind a long one on the same connection.
 *
 * Run: `npm run build && node build/benchmarks/pipelining-bench.js [--duration 4]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { percentile } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { runLoad } from './lib/loadgen.js';
import { cpuSeconds, startProcess, type BenchProcess } from './lib/procs.js';
import { LIB_DIR, startModelSim } from './lib/stack.js';
import { bodyFor } from './proxy-bench.js';

const SHAPES = [
  { connections: 512, pipelining: 1 },
  { connections: 16, pipelining: 1 },
  { connections: 16, pipelining: 10 },
] as const;

export interface PipeliningRow {
  connections: number;
  pipelining: number;
  rps: number;
  cpuUs: number;
  /** Latency of short requests sent while long generations are in flight, ms. */
  shortP50Ms: number;
  shortMaxMs: number;
}

export async function runPipeliningBench(opts: { durationS?: number; log?: (l: string) => void } = {}): Promise<PipeliningRow[]> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const dir = mkdtempSync(join(tmpdir(), 'pipelining-bench-'));
  const procs: BenchProcess[] = [];
  try {
    // Fast for the load; the long requests ask for 200 tokens at 100 tokens/s each (2 s).
    const sim = await startModelSim({ dir, tokenRate: 100 });
    procs.push(sim);
    const proxies: BenchProcess[] = [];
    for (const s of SHAPES) {
      const p = await startProcess(process.execPath, [join(LIB_DIR, 'bare-proxy.js'), sim.ready, String(s.connections), String(s.pipelining)], {
        readyLine: /bare-proxy listening on (http:\/\/[\d.:]+)\s/,
      });
      procs.push(p);
      proxies.push(p);
    }
    const rows: PipeliningRow[] = [];
    const short = bodyFor('bare', { model: 'bench', prompt: 'Say hello.', max_tokens: 1 });
    const long = bodyFor('bare', { model: 'bench', prompt: 'Tell a story.', max_tokens: 200 });
    for (let i = 0; i < SHAPES.length; i++) {
      const p = proxies[i]!;
      const spec = { url: `${p.ready}/v1/completions`, body: short, concurrency: 64, durationS: opts.durationS ?? 4 };
      await runLoad({ ...spec, durationS: 1 });
      const c0 = cpuSeconds(p.pid);
      const load = await runLoad(spec);
      const cpuUs = ((cpuSeconds(p.pid) - c0) * 1e6) / Math.max(1, load.requests - load.errors);

      const client = new Pool(p.ready, { connections: 128 });
      const send = (body: string) =>
        client.request({ path: '/v1/completions', method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.body.dump());
      const longs = Array.from({ length: 64 }, () => send(long));
      await new Promise((r) => setTimeout(r, 200)); // the long ones are generating
      const times = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const t0 = performance.now();
          await send(short);
          return performance.now() - t0;
        }),
      );
      await Promise.all(longs);
      await client.close();
      const row = { ...SHAPES[i]!, rps: load.rps, cpuUs, shortP50Ms: percentile(times, 50), shortMaxMs: Math.max(...times) };
      rows.push(row);
      log(
        `pipelining-bench: ${row.connections} connections × pipelining ${row.pipelining}: ${row.rps.toFixed(0)} req/s, ${row.cpuUs.toFixed(1)} µs CPU/req; short requests behind long ones: p50 ${row.shortP50Ms.toFixed(1)} ms, max ${row.shortMaxMs.toFixed(1)} ms`,
      );
    }
    return rows;
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatPipelining(rows: PipeliningRow[]): string {
  return [
    '| pool to the model | req/s (c=64) | proxy CPU µs/req | short request behind 64 long ones: p50 / max ms |',
    '| --- | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.connections} connections × pipelining ${r.pipelining} | ${r.rps.toFixed(0)} | ${r.cpuUs.toFixed(1)} | ${r.shortP50Ms.toFixed(1)} / ${r.shortMaxMs.toFixed(1)} |`,
    ),
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs('pipelining-bench', '[--duration S]', { duration: 'string' });
  runPipeliningBench({ durationS: typeof args.duration === 'string' ? Number(args.duration) : undefined }).then(
    (rows) => process.stdout.write(formatPipelining(rows) + '\n'),
    (err: Error) => {
      process.stderr.write(`pipelining-bench failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
