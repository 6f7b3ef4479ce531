import type { Dispatcher } from 'undici';
import { errorBody, fieldErrors, routeAnswerSchema, type RouteAnswer } from '../common/protocol.js';
import {
  QueueTimeoutError,
  RequestAbortedError,
  RequestTimeoutError,
  RetriesExhaustedError,
  RouteError,
  type ServerlessError,
  WorkerError,
  type AttemptFailure,
} from './errors.js';
import { discard, postJson, readBody, type RawAnswer } from './http.js';
import { backoffDelay, describeConnectionError, isConnectionError, isRetryableStatus, retryAfterMs, type RetryOptions } from './retry.js';
import { ServerlessStream } from './stream.js';

/**
 * The request loop shared by endpoint requests and session requests:
 *   target (route at the autoscaler, polling while queued; or a session's fixed worker)
 *   → POST {url}{route} {auth_data, payload} → answer, stream, or a retry after back-off.
 * Guarantees: at most `maxAttempts` tries; every wait (back-off, poll) ends when the deadline or
 * the caller's signal does; a retried request routes its same request_idx again (as Vast's SDK
 * does), and the engine routes it afresh away from the worker that failed it, without counting it
 * twice; no secret (api key, auth_data) appears in an error.
 */

/** What `/route/` returns when a worker is chosen; sent back verbatim as `auth_data`. */
export type { RouteAnswer };

/** Reported to `onRetry` before each back-off. */
export interface RetryInfo extends AttemptFailure {
  /** How long the client waits before the next try. */
  delayMs: number;
}

/** A complete (non-streamed) answer. */
export interface ServerlessResponse<T = unknown> {
  /** The worker's status (2xx). */
  status: number;
  /** The body: parsed JSON, or text when it is not JSON, or null when empty. */
  body: T;
  headers: Record<string, string | string[] | undefined>;
  /** The worker that answered. */
  url: string;
  /** The engine's request_idx of the try that succeeded (0 when sent straight to a worker). */
  requestIdx: number;
  /** Tries it took (1 = no retry). */
  attempts: number;
  /** From the call to the whole answer, ms. */
  latencyMs: number;
}

/** Client-wide settings every call reads. */
export interface TransportSettings {
  dispatcher: Dispatcher;
  autoscalerUrl: string;
  apiKey: string;
  defaultTimeoutMs: number;
  maxPollIntervalMs: number;
  retry: Required<RetryOptions>;
  random: () => number;
}

/** A try failed in a way another try may fix. */
export class RetryableFailure extends Error {
  constructor(
    readonly failure: Omit<AttemptFailure, 'attempt'>,
    readonly retryAfter: number | null = null,
  ) {
    super(failure.reason);
  }
}

const TIMEOUT = Symbol('timeout');

/** One call's deadline and cancellation: the caller's signal and the timeout as one AbortSignal. */
export class Deadline {
  readonly at: number;
  private readonly ac = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly onUserAbort: () => void;

  constructor(
    readonly timeoutMs: number,
    private readonly user?: AbortSignal,
  ) {
    this.at = Date.now() + timeoutMs;
    this.timer = setTimeout(() => this.ac.abort(TIMEOUT), timeoutMs);
    this.timer.unref?.();
    this.onUserAbort = () => this.ac.abort(user!.reason);
    if (user?.aborted) this.ac.abort(user.reason);
    else user?.addEventListener('abort', this.onUserAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  get timedOut(): boolean {
    return this.ac.signal.aborted && this.ac.signal.reason === TIMEOUT;
  }

  remaining(): number {
    return Math.max(0, this.at - Date.now());
  }

  /** Stop the timer (a stream lives on after its call returned); the caller's signal still cancels. */
  release(): void {
    clearTimeout(this.timer);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.user?.removeEventListener('abort', this.onUserAbort);
  }

  /** The error for an abort seen while `stage`. */
  abortError(stage: string, endpoint: string, startedAt: number): ServerlessError {
    if (!this.timedOut) return new RequestAbortedError({ cause: this.ac.signal.reason });
    if (stage === 'queued') return new QueueTimeoutError(endpoint, Date.now() - startedAt);
    return new RequestTimeoutError(this.timeoutMs, stage);
  }

  /** Wait `ms`, or less when the deadline or the caller's signal ends first (then throws). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.ac.signal.aborted) return reject(this.ac.signal.reason);
      const t = setTimeout(
        () => {
          this.ac.signal.removeEventListener('abort', onAbort);
          resolve();
        },
        Math.min(ms, this.remaining() + 1),
      );
      const onAbort = () => {
        clearTimeout(t);
        reject(this.ac.signal.reason);
      };
      this.ac.signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/**
 * The request_idx of one call across its tries: a retry routes the same id again, as Vast's SDK
 * does, so the engine knows the worker that failed it (and avoids it) and never counts it twice.
 */
export interface RouteMemo {
  requestIdx: number;
}

/** POST /route/ until a worker is chosen: polls while the request waits in the engine's queue. */
export async function routeRequest(
  s: TransportSettings,
  endpoint: string,
  cost: number,
  d: Deadline,
  startedAt: number,
  memo: RouteMemo = { requestIdx: 0 },
): Promise<RouteAnswer> {
  let requestIdx = memo.requestIdx;
  let pollMs = 100;
  for (;;) {
    const body = {
      endpoint,
      api_key: s.apiKey,
      cost,
      request_idx: requestIdx,
      // The engine may hold the request as long as we are willing to wait.
      replay_timeout: Math.max(1, Math.ceil(d.remaining() / 1000)),
    };
    let answer: RawAnswer;
    try {
      // undici's own timeout is a backstop a second after ours, so the deadline decides the error.
      answer = await postJson(s.dispatcher, `${s.autoscalerUrl}/route/`, body, { signal: d.signal, headersTimeout: d.remaining() + 1000 });
    } catch (err) {
      if (d.signal.aborted) throw d.abortError(requestIdx ? 'queued' : 'routing', endpoint, startedAt);
      if (isConnectionError(err)) throw new RetryableFailure({ stage: 'route', status: null, reason: `autoscaler: ${describeConnectionError(err)}` });
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = await readBody(answer);
    } catch (err) {
      if (d.signal.aborted) throw d.abortError('routing', endpoint, startedAt);
      throw new RetryableFailure({ stage: 'route', status: answer.status, reason: `autoscaler answer cut: ${describeConnectionError(err)}` });
    }
    const b = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
    const ok = answer.status >= 200 && answer.status < 300;
    if (ok && b.url !== undefined && b.url !== null && b.url !== '') {
      // Forwarded verbatim (a strict signature covers its exact values): checked, not rewritten.
      const chosen = routeAnswerSchema.safeParse(b);
      if (!chosen.success)
        throw new RouteError(answer.status, errorBody("the autoscaler's route answer is not valid auth_data", fieldErrors(chosen.error)), endpoint);
      const idx = Number(b.request_idx);
      memo.requestIdx = Number.isInteger(idx) && idx > 0 ? idx : 0;
      return b as RouteAnswer;
    }
    if (ok) {
      // Queued: poll with the request_idx the engine gave us.
      const idx = Number(b.request_idx);
      if (!Number.isInteger(idx) || idx <= 0)
        throw new RouteError(answer.status, { error: 'the autoscaler answered without url and without a request_idx to poll with' }, endpoint);
      requestIdx = idx;
      memo.requestIdx = idx;
      try {
        await d.sleep(pollMs);
      } catch {
        throw d.abortError('queued', endpoint, startedAt);
      }
      pollMs = Math.min(s.maxPollIntervalMs, pollMs * 2);
      continue;
    }
    if (answer.status === 408) throw new QueueTimeoutError(endpoint, Date.now() - startedAt);
    if (answer.status === 404 && requestIdx !== 0 && isRequestIdxProblem(b)) {
      // The engine does not know our id (another engine, or it forgot it): queue again.
      requestIdx = 0;
      memo.requestIdx = 0;
      continue;
    }
    if (isRetryableStatus(answer.status) && answer.status !== 503) {
      throw new RetryableFailure(
        { stage: 'route', status: answer.status, reason: `autoscaler HTTP ${answer.status}` },
        retryAfterMs(answer.headers['retry-after']),
      );
    }
    throw new RouteError(answer.status, parsed, endpoint);
  }
}

function isRequestIdxProblem(b: Record<string, unknown>): boolean {
  const fields = b.fields as Record<string, unknown> | undefined;
  return !!fields && typeof fields === 'object' && 'request_idx' in fields;
}

/** One call of the loop. */
export interface CallSpec {
  endpoint: string;
  route: string;
  payload: unknown;
  stream: boolean;
  /** Keys added to the worker body beside auth_data and payload (session_id). */
  extra?: Record<string, unknown>;
  /** Where each try goes: a route (of the call's request_idx, kept in `memo` across tries), or a session's worker. */
  target: (d: Deadline, startedAt: number, memo: RouteMemo) => Promise<RouteAnswer>;
  timeoutMs?: number;
  signal?: AbortSignal;
  retry?: RetryOptions | false;
  onRetry?: (info: RetryInfo) => void;
  /** A worker status to turn into a specific error before the generic handling (e.g. 410 in a session). */
  statusError?: (status: number, body: unknown, url: string) => Error | null;
  /** Called when a streamed answer ends (ok = read to its end). */
  onStreamEnd?: (ok: boolean) => void;
}

/** The outcome of a call: the answer and the auth_data that got it. */
export type CallResult = { kind: 'full'; response: ServerlessResponse; auth: RouteAnswer } | { kind: 'stream'; stream: ServerlessStream; auth: RouteAnswer };

/** Run the loop. Throws a ServerlessError subclass on failure. */
export async function call(s: TransportSettings, spec: CallSpec): Promise<CallResult> {
  const retry = spec.retry === false ? { ...s.retry, maxAttempts: 1 } : { ...s.retry, ...spec.retry };
  const timeoutMs = spec.timeoutMs ?? s.defaultTimeoutMs;
  if (!(timeoutMs > 0)) throw new RangeError(`timeout must be a positive number of ms (got ${timeoutMs})`);
  const d = new Deadline(timeoutMs, spec.signal);
  const startedAt = Date.now();
  const failures: AttemptFailure[] = [];
  let handedOff = false;
  const memo: RouteMemo = { requestIdx: 0 };
  try {
    for (let attempt = 1; ; attempt++) {
      let failure: RetryableFailure;
      let auth: RouteAnswer | undefined;
      try {
        auth = await spec.target(d, startedAt, memo);
        const url = auth.url.replace(/\/+$/, '');
        let answer: RawAnswer;
        try {
          answer = await postJson(
            s.dispatcher,
            url + spec.route,
            { auth_data: auth, payload: spec.payload, ...spec.extra },
            {
              signal: d.signal,
              headersTimeout: d.remaining() + 1000,
            },
          );
        } catch (err) {
          if (d.signal.aborted) throw d.abortError('waiting for the worker', spec.endpoint, startedAt);
          if (isConnectionError(err)) throw new RetryableFailure({ stage: 'worker', status: null, reason: describeConnectionError(err), url });
          throw err;
        }
        if (answer.status >= 200 && answer.status < 300) {
          if (spec.stream) {
            // The stream outlives this call: only the caller's signal and the body's idle timeout govern it now.
            d.release();
            handedOff = true;
            const stream = new ServerlessStream(answer.body, answer.status, answer.headers, url, Number(auth.request_idx) || 0, (ok) => {
              d.dispose();
              spec.onStreamEnd?.(ok);
            });
            return { kind: 'stream', stream, auth };
          }
          let body: unknown;
          try {
            body = await readBody(answer);
          } catch (err) {
            if (d.signal.aborted) throw d.abortError('reading the answer', spec.endpoint, startedAt);
            throw new RetryableFailure({ stage: 'worker', status: answer.status, reason: `answer cut: ${describeConnectionError(err)}`, url });
          }
          const response: ServerlessResponse = {
            status: answer.status,
            body,
            headers: answer.headers,
            url,
            requestIdx: Number(auth.request_idx) || 0,
            attempts: attempt,
            latencyMs: Date.now() - startedAt,
          };
          return { kind: 'full', response, auth };
        }
        let body: unknown = null;
        try {
          body = await readBody(answer);
        } catch {
          discard(answer);
        }
        const special = spec.statusError?.(answer.status, body, url);
        if (special) throw special;
        if (isRetryableStatus(answer.status)) {
          throw new RetryableFailure(
            { stage: 'worker', status: answer.status, reason: `HTTP ${answer.status}`, url },
            retryAfterMs(answer.headers['retry-after']),
          );
        }
        throw new WorkerError(answer.status, body, url, spec.route);
      } catch (err) {
        if (!(err instanceof RetryableFailure)) throw err;
        failure = err;
      }
      failures.push({ attempt, ...failure.failure });
      if (attempt >= retry.maxAttempts) throw new RetriesExhaustedError(failures);
      const wait = Math.min(retry.maxDelayMs, Math.max(backoffDelay(attempt, retry, s.random), failure.retryAfter ?? 0));
      if (wait >= d.remaining()) {
        // No time left for another try: say why the last one failed.
        throw d.timedOut || d.remaining() === 0
          ? new RequestTimeoutError(timeoutMs, `retrying after ${failure.failure.reason}`)
          : new RetriesExhaustedError(failures);
      }
      spec.onRetry?.({ attempt, ...failure.failure, delayMs: Math.round(wait) });
      try {
        await d.sleep(wait);
      } catch {
        throw d.abortError('waiting to retry', spec.endpoint, startedAt);
      }
    }
  } finally {
    if (!handedOff) d.dispose();
  }
}
