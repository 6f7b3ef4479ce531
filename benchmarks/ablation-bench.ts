/**
 * What each hot-path optimisation buys, before/after in the same run: four worker processes in
 * front of one model-sim (the openai handler with the CLI's extensions: lib/worker-proc.ts) that
 * differ only in the request path's two knobs (WorkerOptions.requestPath), loaded in turns with
 * the same small JSON requests.
 *
 *   stock:        node:http listener + undici Pool
 *   fast lane:    the listener's fast lane (http1/fast-lane.ts) + undici
 *   model client: node:http listener + the lean ModelClient (http1/model-client.ts)
 *   both:         the default
 *
 * Figures are medians over rounds (a disturbed round on a shared machine moves them less).
 *
 * Run: `npm run build && node build/benchmarks/ablation-bench.js [--duration 3] [--rounds 3] [--concurrency 64]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.js';
import { hasWrk, runLoad } from './lib/loadgen.js';
import { cpuSeconds, type BenchProcess } from './lib/procs.js';
import { startModelSim, startPartsWorker } from './lib/stack.js';
import { bodyFor } from './proxy-bench.js';

export const VARIANTS = [
  { name: 'stock (node:http + undici)', fastLane: false, modelClient: false },
  { name: 'fast lane only', fastLane: true, modelClient: false },
  { name: 'model client only', fastLane: false, modelClient: true },
  { name: 'both (default)', fastLane: true, modelClient: true },
] as const;

export interface AblationRow {
  name: string;
  rps: number;
  cpuUs: number;
  p50: number;
  errors: number;
}

export interface AblationReport {
  concurrency: number;
  rounds: number;
  generator: 'wrk' | 'undici';
  rows: AblationRow[];
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;

export async function runAblationBench(
  opts: { durationS?: number; warmupS?: number; rounds?: number; concurrency?: number; generator?: 'auto' | 'wrk' | 'undici'; log?: (l: string) => void } = {},
): Promise<AblationReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const durationS = opts.durationS ?? 3;
  const warmupS = opts.warmupS ?? 1;
  const rounds = opts.rounds ?? 3;
  const concurrency = opts.concurrency ?? 64;
  const generator: 'wrk' | 'undici' = opts.generator === 'undici' || (opts.generator !== 'wrk' && !hasWrk()) ? 'undici' : 'wrk';
  const dir = mkdtempSync(join(tmpdir(), 'ablation-bench-'));
  const procs: BenchProcess[] = [];
  try {
    const sim = await startModelSim({ dir });
    procs.push(sim);
    const workers: BenchProcess[] = [];
    for (const v of VARIANTS) {
      const w = await startPartsWorker({ dir, modelUrl: sim.ready, extensions: true, engineUrl: null, fastLane: v.fastLane, modelClient: v.modelClient });
      procs.push(w);
      workers.push(w);
    }
    const body = bodyFor('worker', { model: 'bench', prompt: 'Say hello.', max_tokens: 1 });
    const samples = VARIANTS.map(() => ({ rps: [] as number[], cpu: [] as number[], p50: [] as number[], errors: 0 }));
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < VARIANTS.length; i++) {
        const w = workers[i]!;
        const spec = { url: `${w.ready}/v1/completions`, body, concurrency, durationS };
        if (warmupS > 0 && r === 0) await runLoad({ ...spec, durationS: warmupS }, generator); // later rounds are warm
        const c0 = cpuSeconds(w.pid);
        const load = await runLoad(spec, generator);
        const served = Math.max(1, load.requests - load.errors);
        const cpu = ((cpuSeconds(w.pid) - c0) * 1e6) / served;
        samples[i]!.rps.push(load.rps);
        samples[i]!.cpu.push(cpu);
        samples[i]!.p50.push(load.p50);
        samples[i]!.errors += load.errors;
        log(`ablation-bench: round ${r + 1} ${VARIANTS[i]!.name}: ${load.rps.toFixed(0)} req/s, ${cpu.toFixed(1)} µs CPU/req`);
      }
    }
    return {
      concurrency,
      rounds,
      generator,
      rows: VARIANTS.map((v, i) => ({
        name: v.name,
        rps: median(samples[i]!.rps),
        cpuUs: median(samples[i]!.cpu),
        p50: median(samples[i]!.p50),
        errors: samples[i]!.errors,
      })),
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The ablation as a markdown table, each variant against the stock one. */
export function formatAblation(r: AblationReport): string {
  const base = r.rows[0]!;
  const lines = [`| request path (c=${r.concurrency}, median of ${r.rounds}) | req/s | worker CPU µs/request | vs stock |`, '| --- | ---: | ---: | ---: |'];
  for (const row of r.rows) {
    const saved = ((base.cpuUs - row.cpuUs) / base.cpuUs) * 100;
    lines.push(
      `| ${row.name} | ${row.rps.toFixed(0)} | ${row.cpuUs.toFixed(1)} | ${row === base ? '–' : `${saved >= 0 ? '−' : '+'}${Math.abs(saved).toFixed(0)}% CPU`} |`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs('ablation-bench', '[--duration S] [--rounds N] [--concurrency N]', { duration: 'string', rounds: 'string', concurrency: 'string' });
  const num = (k: string) => (typeof args[k] === 'string' ? Number(args[k]) : undefined);
  runAblationBench({ durationS: num('duration'), rounds: num('rounds'), concurrency: num('concurrency') }).then(
    (r) => process.stdout.write(formatAblation(r) + '\n'),
    (err: Error) => {
      process.stderr.write(`ablation-bench failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
