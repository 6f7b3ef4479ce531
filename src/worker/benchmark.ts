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

/** Why one benchmark request did not count: the model's status and body, or the connection error. */
export interface BenchmarkFailure {
  /** 'warmup' or the round. */
  at: 'warmup' | number;
  /** The model's HTTP status; null when no answer came (refused, reset, timeout). */
  status: number | null;
  /** The first bytes of the model's answer, or the error's code and message. */
  detail: string;
}

export interface BenchmarkResult {
  perf: number;
  rounds: RoundResult[];
  cached: boolean;
  error?: string;
  /** The first failed requests (at most MAX_FAILURES_KEPT), warm-up included; absent when cached. */
  failures?: BenchmarkFailure[];
}

/** What the benchmark is doing, as it happens: enough for a display to move from the first second. */
export type BenchmarkProgress =
  | { kind: 'warmup'; route: string }
  | { kind: 'warmup-done'; ok: boolean; seconds: number; failure?: BenchmarkFailure }
  | { kind: 'round-start'; round: number; total: number; requests: number; route: string }
  | { kind: 'request-done'; round: number; total: number; done: number; ok: number; requests: number; failure?: BenchmarkFailure }
  | { kind: 'round-done'; result: RoundResult; total: number };

/** Failures kept in the result and named in the error: the first few say why; more repeat it. */
export const MAX_FAILURES_KEPT = 5;
const BODY_EXCERPT_CHARS = 200;

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
  /** Called at every step: warm-up, round start, each answer, round end (see `benchmarkProgressPrinter`). */
  onProgress?: (e: BenchmarkProgress) => void;
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

/** One request's outcome: its workload when the model answered 200, else why not. */
type Shot = { workload: number; failure?: undefined } | { workload: 0; failure: Omit<BenchmarkFailure, 'at'> };

/** A body excerpt fit for one log line: whitespace folded, cut at BODY_EXCERPT_CHARS. */
function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > BODY_EXCERPT_CHARS ? `${flat.slice(0, BODY_EXCERPT_CHARS)}…` : flat;
}

/** An error as `CODE: message` (ECONNREFUSED, UND_ERR_HEADERS_TIMEOUT, ...), the code first since it says the most. */
function describeError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } };
  const code = typeof e.code === 'string' ? e.code : typeof e.cause?.code === 'string' ? e.cause.code : '';
  const message = typeof e.cause?.message === 'string' && e.cause.message ? e.cause.message : String(e.message ?? err);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/** One request straight to the model. */
async function fire(opts: BenchmarkOptions, payload: unknown): Promise<Shot> {
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
    if (res.statusCode === 200) {
      // Read the whole answer: a streamed answer is only done at its end.
      for await (const _ of res.body) void _;
      return { workload };
    }
    // A failed answer is read (up to a few KB) for the reason it gives.
    let text = '';
    for await (const chunk of res.body) if (text.length < 4096) text += (chunk as Buffer).toString('utf8');
    return { workload: 0, failure: { status: res.statusCode, detail: excerpt(text) || '(empty body)' } };
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    return { workload: 0, failure: { status: null, detail: excerpt(describeError(err)) } };
  }
}

/** "POST /generate answered 404: {...}" or "POST /generate failed: ECONNREFUSED ...", for logs and error_msg. */
export function describeFailure(route: string, f: Pick<BenchmarkFailure, 'status' | 'detail'>): string {
  return f.status === null ? `POST ${route} failed: ${f.detail}` : `POST ${route} answered ${f.status}: ${f.detail}`;
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
  const route = handler.upstreamPath;
  const failures: BenchmarkFailure[] = [];
  let failed = 0;
  // The first failures are logged and kept: they say why (model down, wrong path, bad payload).
  const noteFailure = (at: BenchmarkFailure['at'], f: Omit<BenchmarkFailure, 'at'>): BenchmarkFailure => {
    const failure = { at, ...f };
    failed++;
    if (failures.length < MAX_FAILURES_KEPT) {
      failures.push(failure);
      logger?.warn({ at, status: f.status, detail: f.detail }, `benchmark request failed: ${describeFailure(route, f)}`);
    }
    return failure;
  };
  const warmup = handler.benchmark.warmup ?? true;
  if (warmup !== false) {
    logger?.info('benchmark: warm-up request');
    opts.onProgress?.({ kind: 'warmup', route });
    const t0 = performance.now();
    const shot = await fire(opts, warmup === true ? payloadFor(handler, n++) : warmup);
    const failure = shot.failure ? noteFailure('warmup', shot.failure) : undefined;
    opts.onProgress?.({ kind: 'warmup-done', ok: !failure, seconds: (performance.now() - t0) / 1000, failure });
  }
  const rounds: RoundResult[] = [];
  for (let round = 1; round <= runs; round++) {
    const payloads = Array.from({ length: concurrency }, () => payloadFor(handler, n++));
    opts.onProgress?.({ kind: 'round-start', round, total: runs, requests: concurrency, route });
    let done = 0;
    let ok = 0;
    const t0 = performance.now();
    const results = await Promise.all(
      payloads.map((p) =>
        fire(opts, p).then((shot) => {
          done++;
          if (!shot.failure) ok++;
          const failure = shot.failure ? noteFailure(round, shot.failure) : undefined;
          opts.onProgress?.({ kind: 'request-done', round, total: runs, done, ok, requests: concurrency, failure });
          return shot.workload;
        }),
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    const workload = results.reduce((a, b) => a + b, 0);
    const r: RoundResult = {
      round,
      requests: concurrency,
      ok: results.filter((w) => w > 0).length,
      workload,
      seconds,
      throughput: seconds > 0 ? workload / seconds : 0,
    };
    rounds.push(r);
    opts.onProgress?.({ kind: 'round-done', result: r, total: runs });
    opts.onRound?.(r, runs);
  }
  const perf = Math.max(0, ...rounds.map((r) => r.throughput));
  if (rounds.every((r) => r.ok === 0)) {
    const first = failures.find((f) => f.at !== 'warmup') ?? failures[0];
    const error = first
      ? `${NO_SUCCESS_ERROR}: ${failed} of ${runs * concurrency + (warmup !== false ? 1 : 0)} requests failed; first: ${describeFailure(route, first)}`
      : NO_SUCCESS_ERROR;
    logger?.error({ runs, concurrency, failures }, error);
    return { perf: 0, rounds, cached: false, error, failures };
  }
  if ((opts.writeCache ?? true) && opts.workspaceDir) {
    try {
      await mkdir(dirname(join(opts.workspaceDir, BENCHMARK_CACHE_FILE)), { recursive: true });
      await writeFile(join(opts.workspaceDir, BENCHMARK_CACHE_FILE), String(perf));
    } catch (err) {
      logger?.warn({ err: (err as Error).message }, 'benchmark: could not write the cache file; perf kept in memory');
    }
  }
  logger?.info({ perf, runs, concurrency, failed }, 'benchmark done');
  return { perf, rounds, cached: false, failures };
}

/** "[#########.........] 5/8 rounds  1234.5 load/s" for a terminal. */
export function progressLine(done: number, total: number, best: number, width = 20): string {
  const filled = Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} rounds  best ${best.toFixed(1)} load/s`;
}

/**
 * Prints benchmark progress to `out` from the first second: on a terminal one line redrawn every
 * second (phase, answers so far, elapsed); elsewhere a line per phase, per round, per kept failure,
 * and every 10 s while a phase is still waiting. The worker (on a terminal) and `nodeworker
 * benchmark` both print through it; `stop()` ends the timer.
 */
export function benchmarkProgressPrinter(
  out: { write(s: string): unknown },
  opts: { tty: boolean; tickMs?: number; waitingEveryMs?: number },
): { onProgress: (e: BenchmarkProgress) => void; stop: () => void } {
  const tty = opts.tty;
  let best = 0;
  let roundsDone = 0;
  let total = 0;
  let phase: { label: string; since: number; lastNote: number } | null = null;
  let detail = '';
  let printedFailures = 0;
  const seconds = (ms: number) => `${Math.floor(ms / 1000)} s`;
  const draw = () => {
    if (!phase) return;
    const elapsed = performance.now() - phase.since;
    if (tty) {
      const bar = total > 0 ? progressLine(roundsDone, total, best) : `[${'.'.repeat(20)}]`;
      out.write(`\r${bar}  ${phase.label}${detail ? `: ${detail}` : ''}, ${seconds(elapsed)}\x1b[K`);
    } else if (elapsed - phase.lastNote >= (opts.waitingEveryMs ?? 10_000)) {
      phase.lastNote = elapsed;
      out.write(`benchmark ${phase.label}: still waiting after ${seconds(elapsed)}${detail ? ` (${detail})` : ''}\n`);
    }
  };
  const timer = setInterval(draw, opts.tickMs ?? 1000);
  timer.unref();
  const begin = (label: string) => {
    phase = { label, since: performance.now(), lastNote: 0 };
    detail = '';
    draw();
  };
  const failure = (f: BenchmarkFailure | undefined, route: string) => {
    if (!f || printedFailures >= MAX_FAILURES_KEPT) return;
    printedFailures++;
    const line = `benchmark ${f.at === 'warmup' ? 'warm-up' : `round ${f.at}`}: ${describeFailure(route, f)}`;
    out.write(tty ? `\r${line}\x1b[K\n` : `${line}\n`);
  };
  let route = '';
  const onProgress = (e: BenchmarkProgress) => {
    switch (e.kind) {
      case 'warmup':
        route = e.route;
        if (!tty) out.write(`benchmark warm-up: one request to POST ${e.route}\n`);
        begin('warm-up request');
        break;
      case 'warmup-done':
        phase = null;
        failure(e.failure, route);
        if (!tty && e.ok) out.write(`benchmark warm-up: answered in ${e.seconds.toFixed(2)} s\n`);
        break;
      case 'round-start':
        route = e.route;
        total = e.total;
        begin(`round ${e.round}/${e.total}`);
        break;
      case 'request-done':
        detail = `${e.done}/${e.requests} answered, ${e.ok} ok`;
        failure(e.failure, route);
        break;
      case 'round-done': {
        phase = null;
        const r = e.result;
        best = Math.max(best, r.throughput);
        roundsDone = r.round;
        if (tty) out.write(`\r${progressLine(r.round, e.total, best)}\x1b[K${r.round === e.total ? '\n' : ''}`);
        else out.write(`benchmark round ${r.round}/${e.total}: ${r.ok}/${r.requests} ok, ${r.throughput.toFixed(1)} load/s in ${r.seconds.toFixed(3)} s\n`);
        break;
      }
    }
  };
  return { onProgress, stop: () => clearInterval(timer) };
}
