/**
 * When to try again and how long to wait: capped exponential back-off with jitter, and the
 * classification of answers and network errors into "retry" and "give up".
 */

/** Retry settings of a client or one request. */
export interface RetryOptions {
  /** Tries in all, the first included (default 8). 1 disables retries. */
  maxAttempts?: number;
  /** Back-off before the second try, ms (default 250); doubles each try. */
  baseDelayMs?: number;
  /** Back-off cap, ms (default 10 000). */
  maxDelayMs?: number;
}

export const DEFAULT_RETRY: Required<RetryOptions> = { maxAttempts: 8, baseDelayMs: 250, maxDelayMs: 10_000 };

/**
 * Delay before try `attempt + 1` after `attempt` failed tries (attempt ≥ 1): the exponential
 * step min(max, base·2^(attempt−1)), then "equal jitter": half of it fixed, half random, so
 * clients that failed together do not come back together. Always within [step/2, step].
 */
export function backoffDelay(attempt: number, opts: Required<RetryOptions>, random: () => number = Math.random): number {
  const step = Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return step / 2 + random() * (step / 2);
}

/** Statuses worth another try: the request may succeed elsewhere or later. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** `Retry-After` as milliseconds (seconds or an HTTP date); null when absent or unreadable. */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | null {
  const v = Array.isArray(header) ? header[0] : header;
  if (!v) return null;
  const secs = Number(v);
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : null;
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);

/** The error's code, looking through `cause` chains (undici wraps system errors). */
export function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** True when the error means the server could not be reached or dropped the connection. */
export function isConnectionError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
    // fetch-style "other side closed" without a code.
    if (e instanceof Error && /other side closed|socket hang up/i.test(e.message)) return true;
  }
  return false;
}

/** "connection refused (ECONNREFUSED)" style text for logs and errors. */
export function describeConnectionError(err: unknown): string {
  const code = errorCode(err);
  const names: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ECONNRESET: 'connection reset',
    UND_ERR_SOCKET: 'connection closed by the other side',
    UND_ERR_CONNECT_TIMEOUT: 'connect timed out',
    ETIMEDOUT: 'connection timed out',
    EHOSTUNREACH: 'host unreachable',
    ENOTFOUND: 'host not found',
  };
  const what = (code && names[code]) ?? (err instanceof Error ? err.message : String(err));
  return code ? `${what} (${code})` : what;
}
