/**
 * Readiness benchmarks (issue 3):
 *
 * 1. Ready-line-to-ready latency: a worker whose perf is cached (no benchmark requests) and whose
 *    no-health wait is 0; the time from appending the model's ready line to the log until the
 *    lifecycle's `ready` transition. This is the worker's own overhead (log watch, cache read,
 *    state changes); the benchmark itself and the configured health/no-health waits are excluded.
 *    Target: p99 <= 50 ms. Also reported: line → `benchmarking` (the log watch alone).
 * 2. Perf accuracy: the worker's benchmark (runBenchmark, the same code the worker runs) against a
 *    model-sim process with `--capacity C`, through the TGI handler (workload = max_new_tokens =
 *    the tokens generated), with concurrency and max tokens chosen by the rule of docs/benchmark.md.
 *    Target: measured perf / C within 1 ± 0.05.
 *
 * Run: `npm run build && node build/benchmarks/readiness-bench.js [--samples 20] [--capacities 500,5000,50000]`
 */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import { generate } from 'nodeworker/handlers/tgi';
import { createLogger } from '#nodeworker/common/log.js';
import { percentile, sleep } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { BENCHMARK_CACHE_FILE, runBenchmark } from '#nodeworker/worker/benchmark.js';
import { defineWorker } from '#nodeworker/worker/config.js';
import { parseWorkerEnv } from '#nodeworker/worker/env.js';
import { startWorker } from '#nodeworker/worker/worker.js';
import { startProcess } from './lib/procs.js';

export interface ReadyLatency {
  samples: number;
  /** Line appended → `ready` transition, ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Line appended → `benchmarking` transition (the log watch's share), ms. */
  watchP50Ms: number;
  watchP99Ms: number;
}

const READY_LINE = '{"timestamp":"2024-05-01T12:00:00Z","level":"INFO","message":"Connected","target":"text_generation_router"}';
const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Start `samples` workers one after another (cached perf, no health path, noHealthWaitMs 0, no
 * engine: UNSECURED), append the ready line to each one's log and time the transitions.
 */
export async function measureReadyLatency(samples = 20): Promise<ReadyLatency> {
  const toReady: number[] = [];
  const toWatch: number[] = [];
  const logger = createLogger('readiness-bench', { level: 'silent' });
  const definition = defineWorker({
    modelServerUrl: 'http://127.0.0.1:9', // never called: the perf is cached
    logActions: { onLoad: ['"message":"Connected"'], onError: ['Error: ShardCannotStart'] },
    handlers: [{ ...generate, benchmark: { dataset: [{ inputs: 'x', parameters: { max_new_tokens: 1 } }] } }],
  });
  for (let i = 0; i < samples; i++) {
    const dir = mkdtempSync(path.join(tmpdir(), 'ready-bench-'));
    const log = path.join(dir, 'model.log');
    writeFileSync(path.join(dir, BENCHMARK_CACHE_FILE), '1000');
    writeFileSync(log, 'INFO text_generation_launcher: Starting shard\n');
    const env = parseWorkerEnv({ WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '1', UNSECURED: 'true', WORKSPACE_DIR: dir, MODEL_LOG: log });
    const worker = await startWorker({ definition, env, logger, timings: { noHealthWaitMs: 0, progressLogMs: 60_000 } });
    try {
      await sleep(100); // the watch has read the existing lines and waits for more
      let tWatch = NaN;
      const ready = new Promise<number>((resolve) => {
        worker.lifecycle.on('transition', (t) => {
          const now = performance.now();
          if (t.to === 'benchmarking') tWatch = now;
          if (t.to === 'ready') resolve(now);
        });
      });
      const t0 = performance.now();
      appendFileSync(log, `${READY_LINE}\n`);
      const tReady = await Promise.race([ready, sleep(5000).then(() => NaN)]);
      if (Number.isNaN(tReady)) throw new Error(`sample ${i}: not ready within 5 s (state ${worker.lifecycle.state}: ${worker.lifecycle.reason})`);
      toReady.push(tReady - t0);
      toWatch.push(tWatch - t0);
    } finally {
      await worker.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return {
    samples,
    p50Ms: round3(percentile(toReady, 50)),
    p99Ms: round3(percentile(toReady, 99)),
    maxMs: round3(Math.max(...toReady)),
    watchP50Ms: round3(percentile(toWatch, 50)),
    watchP99Ms: round3(percentile(toWatch, 99)),
  };
}

export interface AccuracyRow {
  capacity: number;
  /** model-sim's per-request token rate. */
  tokenRate: number;
  ttftMs: number;
  concurrency: number;
  maxTokens: number;
  runs: number;
  perf: number;
  /** perf / capacity. */
  ratio: number;
  /** What round = ttft + N·(T−1)/C predicts for perf / capacity (no HTTP overhead). */
  predictedRatio: number;
  /** Seconds the whole benchmark took (warm-up included). */
  seconds: number;
}

export interface AccuracyOptions {
  capacities?: number[];
  /** One request's own speed in model-sim; default: C/10 clamped to [50, 400] tok/s (bigger GPUs decode faster). */
  tokenRate?: (capacity: number) => number;
  ttftMs?: number;
  /**
   * Shortest round, s. Each round is also at least 40 × (ttft + N × dispatchMs): docs/benchmark.md
   * (the round's fixed costs, first token and sending N requests, stay near 2.5% of it).
   */
  roundSeconds?: number;
  /** CPU time to send one request and read its answer, ms (measured ~0.3 ms on a small VM). */
  dispatchMs?: number;
  /** Concurrency = headroom × C / tokenRate (default 2: stragglers of a round still fill the batch). */
  headroom?: number;
  runs?: number;
}

/**
 * For each capacity C: start `model-sim --flavor tgi --capacity C` as its own process and run the
 * worker's benchmark against it with concurrency N = ceil(headroom · C / tokenRate) (saturation
 * with headroom) and T = ceil(round · C / N) tokens per request, round = max(roundSeconds,
 * 40 · (ttft + N · dispatchMs)).
 */
export async function measurePerfAccuracy(opts: AccuracyOptions = {}): Promise<AccuracyRow[]> {
  const capacities = opts.capacities ?? [500, 5000, 50_000];
  const rateOf = opts.tokenRate ?? ((c: number) => Math.min(400, Math.max(50, c / 10)));
  const ttftMs = opts.ttftMs ?? 50;
  const roundSeconds = opts.roundSeconds ?? 3;
  const headroom = opts.headroom ?? 2;
  const dispatchMs = opts.dispatchMs ?? 0.3;
  const runs = opts.runs ?? 3;
  const cli = fileURLToPath(import.meta.resolve('#nodeworker/cli.js'));
  const rows: AccuracyRow[] = [];
  for (const capacity of capacities) {
    const tokenRate = rateOf(capacity);
    const concurrency = Math.ceil((headroom * capacity) / tokenRate);
    const round = Math.max(roundSeconds, (40 * (ttftMs + concurrency * dispatchMs)) / 1000);
    const maxTokens = Math.ceil((round * capacity) / concurrency);
    const sim = await startProcess(
      process.execPath,
      [
        cli,
        'model-sim',
        '--flavor',
        'tgi',
        '--port',
        '0',
        '--load-seconds',
        '0',
        '--capacity',
        String(capacity),
        '--token-rate',
        String(tokenRate),
        '--ttft-ms',
        String(ttftMs),
      ],
      {
        readyLine: /model-sim listening on (http:\/\/\S+)/,
      },
    );
    const pool = new Pool(sim.ready, { connections: concurrency + 8 });
    try {
      const handler = defineWorker({
        handlers: [
          {
            ...generate,
            benchmark: {
              generator: (i: number) => ({ inputs: `Request ${i}: benchmark prompt`, parameters: { max_new_tokens: maxTokens } }),
              runs,
              concurrency,
            },
          },
        ],
      }).benchmarkHandler;
      const t0 = performance.now();
      const result = await runBenchmark({ handler, model: pool, useCache: false, writeCache: false });
      const seconds = (performance.now() - t0) / 1000;
      if (result.error) throw new Error(`capacity ${capacity}: ${result.error}`);
      const predicted = (concurrency * maxTokens) / (ttftMs / 1000 + (concurrency * (maxTokens - 1)) / capacity) / capacity;
      rows.push({
        capacity,
        tokenRate,
        ttftMs,
        concurrency,
        maxTokens,
        runs,
        perf: Math.round(result.perf * 10) / 10,
        ratio: round3(result.perf / capacity),
        predictedRatio: round3(predicted),
        seconds: Math.round(seconds * 10) / 10,
      });
    } finally {
      await pool.destroy();
      await sim.stop();
    }
  }
  return rows;
}

export function formatReadiness(latency: ReadyLatency | null, rows: AccuracyRow[]): string {
  const out: string[] = [];
  if (latency) {
    out.push(
      `ready line → ready over ${latency.samples} workers: p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms, max ${latency.maxMs} ms (target p99 <= 50 ms)`,
      `  of which line → benchmarking (log watch): p50 ${latency.watchP50Ms} ms, p99 ${latency.watchP99Ms} ms`,
    );
  }
  if (rows.length) {
    out.push('perf accuracy (tgi handler vs model-sim --capacity C; target ratio 1 ± 0.05):');
    out.push('  capacity  tok/s/req  ttft ms  concurrency  max_tokens  perf        ratio  predicted  bench s');
    for (const r of rows) {
      out.push(
        `  ${String(r.capacity).padStart(8)}  ${String(r.tokenRate).padStart(9)}  ${String(r.ttftMs).padStart(7)}  ${String(r.concurrency).padStart(11)}  ${String(r.maxTokens).padStart(10)}  ${r.perf.toFixed(1).padStart(10)}  ${r.ratio.toFixed(3)}  ${r.predictedRatio.toFixed(3).padStart(9)}  ${r.seconds.toFixed(1).padStart(7)}`,
      );
    }
  }
  return out.join('\n');
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (isMain) {
  const args = benchArgs('readiness-bench', '[--samples N] [--capacities 500,5000,50000] [--skip-latency] [--skip-accuracy]', {
    samples: 'string',
    capacities: 'string',
    'skip-latency': 'boolean',
    'skip-accuracy': 'boolean',
  });
  const samples = Number(args.samples ?? 20);
  const capacities =
    typeof args.capacities === 'string'
      ? args.capacities
          .split(',')
          .map(Number)
          .filter((n) => n > 0)
      : undefined;
  (async () => {
    const latency = args['skip-latency'] ? null : await measureReadyLatency(Number.isInteger(samples) && samples > 0 ? samples : 20);
    const rows = args['skip-accuracy'] ? [] : await measurePerfAccuracy({ capacities });
    console.log(formatReadiness(latency, rows));
    console.log(JSON.stringify({ latency, accuracy: rows }));
  })().catch((err: Error) => {
    console.error(err.message);
    process.exitCode = 1;
  });
}
