import type { Logger } from '../../../common/log.js';
import { sleep } from '../../../common/util.js';
import type { RateKind } from './config.js';

/**
 * The HTTP side of the Vast provider: `Authorization: Bearer <key>` on every call, calls of one
 * kind spaced by Vast's per-endpoint threshold, 429 answered by waiting past the threshold (Vast
 * sends no Retry-After; its body may name the threshold), 5xx and network errors retried with
 * jittered exponential backoff when the call is safe to repeat, and `success: false` on a 200
 * turned into an error. The key never appears in a log line or an error message.
 */

export class VastApiError extends Error {
  constructor(
    message: string,
    /** HTTP status (0: no answer). */
    readonly status: number,
    /** Vast's `error` code when the body has one (`no_such_ask`, `invalid_args` ...). */
    readonly code: string,
  ) {
    super(message);
  }
}

export interface VastApiOptions {
  baseUrl: string;
  apiKey: string;
  /** Seconds between two calls of each kind. */
  limits: Record<RateKind, number>;
  timeoutMs: number;
  maxAttempts: number;
  logger: Logger;
}

export interface CallOptions {
  /** Repeat on 5xx/network errors (a create is not: its answer may have been lost after it happened). */
  idempotent: boolean;
}

/** Counts of what the API answered, for the report and the tests. */
export interface ApiCounters {
  calls: number;
  throttled: number;
  serverErrors: number;
  refused: number;
}

export class VastApi {
  private readonly nextAt = new Map<RateKind, number>();
  private readonly queues = new Map<RateKind, Promise<unknown>>();
  readonly counters: ApiCounters = { calls: 0, throttled: 0, serverErrors: 0, refused: 0 };

  constructor(private readonly o: VastApiOptions) {}

  /** One API call (path after `/api/v0`); resolves with the parsed JSON body. */
  call<T = Record<string, unknown>>(kind: RateKind, method: string, path: string, body: unknown, opts: CallOptions): Promise<T> {
    // Calls of one kind go one after the other: the threshold is per endpoint, not per call.
    const prev = this.queues.get(kind) ?? Promise.resolve();
    const run = prev.then(
      () => this.attempts<T>(kind, method, path, body, opts),
      () => this.attempts<T>(kind, method, path, body, opts),
    );
    this.queues.set(
      kind,
      run.catch(() => undefined),
    );
    return run;
  }

  private async pace(kind: RateKind, extraMs = 0): Promise<void> {
    const wait = (this.nextAt.get(kind) ?? 0) - Date.now() + extraMs;
    if (wait > 0) await sleep(wait);
    // 10 % over the threshold: a call delayed on its way would otherwise reach Vast too close to the next.
    this.nextAt.set(kind, Date.now() + this.o.limits[kind] * 1100);
  }

  private async attempts<T>(kind: RateKind, method: string, path: string, body: unknown, opts: CallOptions): Promise<T> {
    let lastErr: VastApiError | null = null;
    for (let attempt = 1; attempt <= this.o.maxAttempts; attempt++) {
      await this.pace(kind);
      const res = await this.once(method, path, body);
      this.counters.calls++;
      if (res.status === 429) {
        this.counters.throttled++;
        // Past the threshold the body names (or the configured one), growing with each refusal, with jitter.
        const named = /threshold\s*=\s*([0-9.]+)/.exec(res.text)?.[1];
        const threshold = Math.max(Number(named) || 0, this.o.limits[kind]);
        const waitMs = threshold * 1000 * (1 + 0.5 * (attempt - 1)) * (1 + Math.random() * 0.25);
        this.o.logger.warn(
          { event: 'vast_api', op: `${method} ${redactPath(path)}`, status: 429, wait_ms: Math.round(waitMs), attempt },
          'Vast API: too many requests, backing off',
        );
        lastErr = new VastApiError(`${method} ${redactPath(path)}: 429 too many requests`, 429, 'rate_limited');
        await sleep(waitMs);
        continue;
      }
      if (res.status === 0 || res.status >= 500) {
        this.counters.serverErrors++;
        lastErr = new VastApiError(`${method} ${redactPath(path)}: ${res.status === 0 ? res.text : `HTTP ${res.status}`}`, res.status, 'server_error');
        if (!opts.idempotent) throw lastErr;
        const waitMs = Math.min(5000, 250 * 2 ** (attempt - 1)) * (0.5 + Math.random());
        this.o.logger.warn(
          { event: 'vast_api', op: `${method} ${redactPath(path)}`, status: res.status, wait_ms: Math.round(waitMs), attempt },
          'Vast API: server error, retrying',
        );
        await sleep(waitMs);
        continue;
      }
      const json = parseJson(res.text);
      if (res.status >= 400 || (json && json.success === false)) {
        this.counters.refused++;
        const code = typeof json?.error === 'string' ? json.error : res.status >= 400 ? `http_${res.status}` : 'success_false';
        const msg = typeof json?.msg === 'string' ? json.msg : typeof json?.message === 'string' ? json.message : '';
        throw new VastApiError(this.redact(`${method} ${redactPath(path)}: ${res.status} ${code}${msg ? `: ${msg}` : ''}`), res.status, code);
      }
      if (!json) throw new VastApiError(`${method} ${redactPath(path)}: answer is not JSON`, res.status, 'bad_answer');
      return json as T;
    }
    throw lastErr ?? new VastApiError(`${method} ${redactPath(path)}: no answer`, 0, 'no_answer');
  }

  private async once(method: string, path: string, body: unknown): Promise<{ status: number; text: string }> {
    const url = `${this.o.baseUrl.replace(/\/+$/, '')}/api/v0${path}`;
    try {
      const res = await fetch(url, {
        method,
        headers: {
          authorization: `Bearer ${this.o.apiKey}`,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.o.timeoutMs),
      });
      return { status: res.status, text: await res.text() };
    } catch (err) {
      return { status: 0, text: this.redact(err instanceof Error ? `${err.name}: ${err.message}` : String(err)) };
    }
  }

  /** The key out of any text that may carry it (an echoing server, a URL in an error). */
  redact(text: string): string {
    return this.o.apiKey ? text.split(this.o.apiKey).join('<redacted>') : text;
  }
}

/** Query strings may carry api_key=; paths logged never show it. */
function redactPath(path: string): string {
  return path.replace(/api_key=[^&]*/g, 'api_key=<redacted>');
}

function parseJson(text: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
