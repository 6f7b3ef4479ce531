import { setMaxListeners } from 'node:events';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Dispatcher } from 'undici';
import type { Logger } from '../common/log.js';
import type { ResolvedHandler } from './config.js';

/**
 * The benchmark (PROTOCOL §5): perf = the best round's throughput, in load per second.
 * A cache file (`.has_benchmark` in WORKSPACE_DIR) holding a number short-circuits it. Otherwise an
 * optional warm-up request, then `runs` rounds; each fires `concurrency` requests at once; round
 * throughput = workload of the 200-answered requests / the round's elapsed seconds. No 200 at all
 * → error "No successful responses from benchmark" and perf 0 (not cached).
 */
export const BENCHMARK_CACHE_FILE = '.has_benchmark';
export const NO_SUCCESS_ERROR = 'No successful responses from benchmark';

export interface RoundResult {
  round: number;
  requests: number;
  ok: number;
  workload: number;
  seconds: number;
  throughput: number;
}

export interface BenchmarkResult {
  perf: number;
  rounds: RoundResult[];
  cached: boolean;
  error?: string;
}

export interface BenchmarkOptions {
  handler: ResolvedHandler;
  /** A dispatcher bound to the model server (the worker's undici pool). */
  model: Dispatcher;
  workspaceDir?: string;
  runs?: number;
  concurrency?: number;
  /** Skip the cache file (the CLI's on-demand run) but still write it when `writeCache`. */
  useCache?: boolean;
  writeCache?: boolean;
  logger?: Logger;
  /** Called after every round (progress display). */
  onRound?: (r: RoundResult, total: number) => void;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export function resolveBenchmarkSettings(handler: ResolvedHandler, runs?: number, concurrency?: number): { runs: number; concurrency: number } {
  const b = handler.benchmark ?? {};
  return {
    runs: runs ?? b.runs ?? 8,
    concurrency: concurrency ?? b.concurrency ?? (handler.allowParallelRequests ? 10 : 1),
  };
}

export async function readCachedPerf(workspaceDir: string): Promise<number | null> {
  try {
    const text = (await readFile(join(workspaceDir, BENCHMARK_CACHE_FILE), 'utf8')).trim();
    const n = Number(text);
    return text !== '' && Number.isFinite(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

function payloadFor(handler: ResolvedHandler, i: number): unknown {
  const b = handler.benchmark!;
  if (b.generator) return b.generator(i);
  const ds = b.dataset!;
  return ds[i % ds.length];
}

/** One request straight to the model; resolves the workload when it answered 200, else 0. */
async function fire(opts: BenchmarkOptions, payload: unknown): Promise<number> {
  const { handler } = opts;
  const parsed = handler.payload.safeParse(payload);
  if (!parsed.success) throw new Error(`the benchmark payload does not pass the handler's schema: ${parsed.error.issues[0]?.message ?? ''}`);
  const workload = handler.workload(parsed.data);
  const body = JSON.stringify(handler.toModelRequest ? handler.toModelRequest(parsed.data) : payload);
  try {
    const res = await opts.model.request({
      path: handler.upstreamPath,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      signal: opts.signal,
      headersTimeout: opts.timeoutMs ?? 300_000,
      bodyTimeout: opts.timeoutMs ?? 300_000,
    });
    // Read the whole answer: a streamed answer is only done at its end.
    for await (const _ of res.body) void _;
    return res.statusCode === 200 ? workload : 0;
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    return 0;
  }
}

export async function runBenchmark(opts: BenchmarkOptions): Promise<BenchmarkResult> {
  const { handler, logger } = opts;
  if (!handler.benchmark) throw new Error(`handler ${handler.route} has no benchmark`);
  const useCache = opts.useCache ?? true;
  if (useCache && opts.workspaceDir) {
    const cached = await readCachedPerf(opts.workspaceDir);
    if (cached !== null) {
      logger?.info({ perf: cached, file: join(opts.workspaceDir, BENCHMARK_CACHE_FILE) }, 'benchmark: using cached perf');
      return { perf: cached, rounds: [], cached: true };
    }
  }
  const { runs, concurrency } = resolveBenchmarkSettings(handler, opts.runs, opts.concurrency);
  // Every request of a round listens on the one shutdown signal: that many listeners is expected.
  if (opts.signal) setMaxListeners(Math.max(concurrency * 2, 10), opts.signal);
  let n = 0;
  const warmup = handler.benchmark.warmup ?? true;
  if (warmup !== false) {
    logger?.info('benchmark: warm-up request');
    await fire(opts, warmup === true ? payloadFor(handler, n++) : warmup);
  }
  const rounds: RoundResult[] = [];
  for (let round = 1; round <= runs; round++) {
    const payloads = Array.from({ length: concurrency }, () => payloadFor(handler, n++));
    const t0 = performance.now();
    const results = await Promise.all(payloads.map((p) => fire(opts, p)));
    const seconds = (performance.now() - t0) / 1000;
    const workload = results.reduce((a, b) => a + b, 0);
    const r: RoundResult = { round, requests: concurrency, ok: results.filter((w) => w > 0).length, workload, seconds, throughput: seconds > 0 ? workload / seconds : 0 };
    rounds.push(r);
    opts.onRound?.(r, runs);
  }
  const perf = Math.max(0, ...rounds.map((r) => r.throughput));
  if (rounds.every((r) => r.ok === 0)) {
    logger?.error({ runs, concurrency }, NO_SUCCESS_ERROR);
    return { perf: 0, rounds, cached: false, error: NO_SUCCESS_ERROR };
  }
  if ((opts.writeCache ?? true) && opts.workspaceDir) {
    try {
      await mkdir(dirname(join(opts.workspaceDir, BENCHMARK_CACHE_FILE)), { recursive: true });
      await writeFile(join(opts.workspaceDir, BENCHMARK_CACHE_FILE), String(perf));
    } catch (err) {
      logger?.warn({ err: (err as Error).message }, 'benchmark: could not write the cache file; perf kept in memory');
    }
  }
  logger?.info({ perf, runs, concurrency }, 'benchmark done');
  return { perf, rounds, cached: false };
}

/** "[#########.........] 5/8 rounds  1234.5 load/s" for a terminal. */
export function progressLine(done: number, total: number, best: number, width = 20): string {
  const filled = Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} rounds  best ${best.toFixed(1)} load/s`;
}
