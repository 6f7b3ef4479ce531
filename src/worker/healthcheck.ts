/**
 * The model's health check (PROTOCOL §5): `GET {model}{health path}` every 10 s once the benchmark
 * is done. After the first success, a non-200 answer or a connection error is a failure the worker
 * reports (error_msg); before it, failures are expected (the model may still be starting).
 *
 * Beyond PyWorker: the first probe runs at once, and until the first success probes run every
 * `startupIntervalMs` (1 s) so readiness is not held back by up to a whole interval. Each probe
 * uses a fresh connection (like PyWorker's force_close), so a dead model shows up as "connection
 * refused", not as a stale keep-alive socket.
 *
 * A transient failure (this process out of file descriptors or buffers: EMFILE, ENFILE, ENOBUFS,
 * EADDRNOTAVAIL; or a connection reset) says little about the model: it is probed again every
 * `startupIntervalMs` and reported only if it lasts `transientGraceMs`, so a client flood that
 * briefly exhausts descriptors does not mark a healthy model (and the worker) errored.
 */
import { Agent, request } from 'undici';
import { deadline } from '../common/deadline.js';

export interface HealthcheckOptions {
  /** Full URL of the health path, e.g. http://127.0.0.1:8000/health. */
  url: string;
  /** Between probes once the model has answered 200 once; default 10 000. */
  intervalMs?: number;
  /** Per probe, for the whole answer; default 10 000. */
  timeoutMs?: number;
  /** Between probes until the first success; default 1 000 (never more than intervalMs). */
  startupIntervalMs?: number;
  /** How long a transient failure may last before it is reported; default 3 × intervalMs. */
  transientGraceMs?: number;
  /**
   * After the first success: the check went from ok to failing, or its failure message changed.
   * `transient`: a resource error of this process (EMFILE, resets, …) outlasted the grace period.
   */
  onFailure: (message: string, info: { transient: boolean }) => void;
  /** A 200 after onFailure was called. */
  onRecovery?: () => void;
  /** Every 200. */
  onSuccess?: () => void;
}

/** A running health check loop; probes never overlap and never outlive `stop()`. */
export interface Healthcheck {
  /** Stop probing: cancels the probe in flight, closes its connections, resolves waiters with false. */
  stop(): void;
  /**
   * True once a probe has answered 200 (at once if one already has); false when `deadlineMs`
   * passes first, `signal` aborts, or `stop()` is called.
   */
  waitForFirstSuccess(deadlineMs: number, signal?: AbortSignal): Promise<boolean>;
  /** The last probe's outcome; null before the first probe completes. */
  lastOk(): boolean | null;
}

type ProbeResult = { ok: true } | { ok: false; message: string; transient: boolean };

/** Error codes of a probe that failed for a reason of this process or the path, not of the model. */
const TRANSIENT = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL', 'EAGAIN', 'ECONNRESET', 'EPIPE']);

/** Start probing `opts.url` now. Never throws; a throwing callback is ignored by the loop. */
export function startHealthcheck(opts: HealthcheckOptions): Healthcheck {
  const intervalMs = positive(opts.intervalMs, 10_000);
  const timeoutMs = positive(opts.timeoutMs, 10_000);
  const startupIntervalMs = Math.min(positive(opts.startupIntervalMs, 1_000), intervalMs);
  const transientGraceMs = opts.transientGraceMs !== undefined && opts.transientGraceMs >= 0 ? opts.transientGraceMs : 3 * intervalMs;
  const shownUrl = redactUrl(opts.url);
  const prefix = `model health check failed: GET ${shownUrl}`;
  const agent = new Agent({ connect: { timeout: timeoutMs } });
  const stopController = new AbortController();

  let stopped = false;
  let everOk = false;
  let last: boolean | null = null;
  let reportedFailure: string | null = null;
  /** When the current run of transient failures began (null: none). */
  let transientSince: number | null = null;
  let timer: NodeJS.Timeout | null = null;
  const waiters = new Set<(ok: boolean) => void>();

  const probe = async (): Promise<ProbeResult> => {
    // Our own timer and one listener on the stop signal, both gone after the probe (no
    // AbortSignal.any: it would keep one WeakRef per probe in the stop signal, issue 21 row 18).
    const limit = deadline(timeoutMs, stopController.signal);
    const signal = limit.signal;
    try {
      const res = await request(opts.url, { method: 'GET', dispatcher: agent, signal, reset: true, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
      await res.body.dump();
      return res.statusCode === 200 ? { ok: true } : { ok: false, message: `${prefix} answered ${res.statusCode}`, transient: false };
    } catch (err) {
      const why = limit.timedOut ? `no answer within ${timeoutMs} ms` : describeError(err, timeoutMs);
      return { ok: false, message: `${prefix}: ${why}`, transient: !limit.timedOut && TRANSIENT.has(errorCode(err) ?? '') };
    } finally {
      limit.dispose();
    }
  };

  const safely = (fn: (() => void) | undefined) => {
    try {
      fn?.();
    } catch {
      // a callback's failure is the caller's; the loop goes on
    }
  };

  const record = (result: ProbeResult) => {
    last = result.ok;
    if (result.ok || !result.transient) transientSince = null;
    if (result.ok) {
      if (!everOk) {
        everOk = true;
        for (const w of [...waiters]) w(true);
      }
      if (reportedFailure !== null) {
        reportedFailure = null;
        safely(opts.onRecovery);
      }
      safely(opts.onSuccess);
      return;
    }
    // Before the first success the model may still be starting: not an error.
    if (!everOk || result.message === reportedFailure) return;
    if (result.transient) {
      transientSince ??= performance.now();
      if (performance.now() - transientSince < transientGraceMs) return;
    }
    reportedFailure = result.message;
    safely(() => opts.onFailure(result.message, { transient: result.transient }));
  };

  const tick = async () => {
    timer = null;
    const started = performance.now();
    const result = await probe();
    if (stopped) return;
    record(result);
    if (stopped) return; // a callback may have stopped us
    // Until the first success, and while a transient failure is being waited out: probe often.
    const period = everOk && transientSince === null ? intervalMs : startupIntervalMs;
    timer = setTimeout(() => void tick(), Math.max(0, period - (performance.now() - started)));
  };

  timer = setTimeout(() => void tick(), 0);

  return {
    stop() {
      if (stopped) return;
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      stopController.abort();
      for (const w of [...waiters]) w(false);
      agent.destroy().catch(() => {});
    },
    waitForFirstSuccess(deadlineMs: number, signal?: AbortSignal): Promise<boolean> {
      if (everOk) return Promise.resolve(true);
      if (stopped || signal?.aborted) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          clearTimeout(giveUp);
          signal?.removeEventListener('abort', onAbort);
          waiters.delete(done);
          resolve(ok);
        };
        const onAbort = () => done(false);
        const giveUp = setTimeout(() => done(false), Math.max(0, deadlineMs));
        signal?.addEventListener('abort', onAbort, { once: true });
        waiters.add(done);
      });
    },
    lastOk: () => last,
  };
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** The error's code (undici wraps the socket's error in `cause`). */
function errorCode(err: unknown): string | undefined {
  const e = err as { code?: string; errors?: Array<{ code?: string }>; cause?: { code?: string } };
  const code = e?.cause?.code ?? e?.code ?? e?.errors?.[0]?.code;
  return typeof code === 'string' ? code : undefined;
}

/** What went wrong, in words a user can act on. */
function describeError(err: unknown, timeoutMs: number): string {
  const e = err as { code?: string; name?: string; message?: string; errors?: Array<{ code?: string }> };
  const code = errorCode(err);
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (is the model server listening?)';
    case 'ECONNRESET':
      return 'connection reset by the model server';
    case 'UND_ERR_SOCKET':
      return 'the model server closed the connection without answering';
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return `no answer within ${timeoutMs} ms`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host not found';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    case 'ERR_INVALID_URL':
    case 'UND_ERR_INVALID_ARG':
      return `invalid health check URL (${e.message ?? code})`;
    case 'EMFILE':
    case 'ENFILE':
      return `the worker is out of file descriptors (${code})`;
  }
  if (e.name === 'AbortError') return 'stopped';
  return code ? `${e.message ?? 'error'} (${code})` : (e.message ?? String(err));
}

/** The URL without any user:password part, for messages. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '';
      u.password = '';
    }
    return u.toString();
  } catch {
    return url;
  }
}
