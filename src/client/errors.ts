/**
 * The client's errors. Every one is a `ServerlessError` with a stable `code` to branch on and a
 * message that says what happened and what to do about it. None carries the api key or auth_data.
 */

/** What kind of failure: stable strings, safe to switch on. */
export type ServerlessErrorCode =
  | 'ROUTE_REJECTED'
  | 'QUEUE_TIMEOUT'
  | 'WORKER_REJECTED'
  | 'RETRIES_EXHAUSTED'
  | 'TIMEOUT'
  | 'ABORTED'
  | 'SESSION_CLOSED'
  | 'STREAM_INTERRUPTED'
  | 'INVALID_ARGUMENT';

/** The base of every error the client throws. */
export class ServerlessError extends Error {
  constructor(
    readonly code: ServerlessErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ServerlessError';
  }
}

/** The fields a 4xx body names: `{fields: {...}}` (autoscaler), `{payload: {...}}` / `{field}` (worker). */
export function namedFields(body: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return out;
  const b = body as Record<string, unknown>;
  const flatten = (prefix: string, v: unknown) => {
    if (typeof v === 'string') out[prefix] = v;
    else if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      for (const [k, inner] of Object.entries(v)) flatten(prefix ? `${prefix}.${k}` : k, inner);
    } else if (v !== undefined) out[prefix] = JSON.stringify(v);
  };
  if (b.fields && typeof b.fields === 'object') flatten('', b.fields);
  for (const key of ['payload', 'auth_data', 'session_id', 'session_auth'] as const) {
    if (b[key] !== undefined) flatten(key, b[key]);
  }
  if (typeof b.field === 'string' && typeof b.error === 'string' && !(b.field in out)) out[b.field] = b.error;
  return out;
}

function describeFields(fields: Record<string, string>): string {
  const entries = Object.entries(fields);
  return entries.length === 0 ? '' : `: ${entries.map(([k, v]) => `${k}: ${v}`).join('; ')}`;
}

/** The autoscaler refused `/route/` for good: wrong api key, unknown endpoint, a bad field. */
export class RouteError extends ServerlessError {
  readonly fields: Record<string, string>;
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly endpoint: string,
  ) {
    const fields = namedFields(body);
    const hint =
      status === 401
        ? "check the api key: it must be the endpoint's key (the /route/ api_key), not an account key of another endpoint"
        : status === 404
          ? `check the endpoint name "${endpoint}" (it must exist on the autoscaler) or the request_idx`
          : status === 503
            ? 'the endpoint is stopped: start it (state "active") before sending requests'
            : 'fix the named fields and send again';
    super('ROUTE_REJECTED', `the autoscaler refused to route a request to endpoint "${endpoint}" (HTTP ${status})${describeFields(fields)}. ${hint}`);
    this.name = 'RouteError';
    this.fields = fields;
  }
}

/** No worker took the request within the endpoint's replay_timeout or the request's timeout. */
export class QueueTimeoutError extends ServerlessError {
  constructor(
    readonly endpoint: string,
    readonly waitedMs: number,
  ) {
    super(
      'QUEUE_TIMEOUT',
      `no worker of endpoint "${endpoint}" could take the request within ${Math.round(waitedMs / 100) / 10} s: ` +
        'every worker is loading or full. Raise the timeout, send fewer requests at once, or let the endpoint scale (max_workers, min_load)',
    );
    this.name = 'QueueTimeoutError';
  }
}

/** The worker answered with a status that retrying will not change (4xx other than 408/429). */
export class WorkerError extends ServerlessError {
  readonly fields: Record<string, string>;
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly url: string,
    readonly route: string,
  ) {
    const fields = namedFields(body);
    const hint =
      status === 422
        ? "the payload does not match the handler's schema: fix the named fields"
        : status === 401
          ? 'the worker did not accept the signature: it must get its public key from the same autoscaler that routed the request'
          : status === 404
            ? `the worker has no route ${route}: check the route against the worker's handlers`
            : status === 413
              ? 'the request body is larger than the worker accepts'
              : status === 410
                ? 'the session is closed: open a new one'
                : "see the body for the model's own message";
    super('WORKER_REJECTED', `the worker refused POST ${route} (HTTP ${status})${describeFields(fields)}. ${hint}`);
    this.name = 'WorkerError';
    this.fields = fields;
  }
}

/** One failed try, as kept by `RetriesExhaustedError` and reported to `onRetry`. */
export interface AttemptFailure {
  attempt: number;
  /** `route` (the autoscaler) or `worker`. */
  stage: 'route' | 'worker';
  /** HTTP status, or null when the connection failed. */
  status: number | null;
  /** Short reason: "HTTP 429", "connection refused (ECONNREFUSED)", ... */
  reason: string;
  /** The worker's URL, when the try reached the worker stage. */
  url?: string;
}

/** Every try failed with a retryable answer (408, 429, 5xx, lost connection). */
export class RetriesExhaustedError extends ServerlessError {
  constructor(
    readonly attempts: AttemptFailure[],
    options?: { cause?: unknown },
  ) {
    const last = attempts.at(-1);
    super(
      'RETRIES_EXHAUSTED',
      `gave up after ${attempts.length} tries; the last failed at the ${last?.stage ?? '?'} stage with ${last?.reason ?? 'no answer'}. ${exhaustedHint(last)}`,
      options,
    );
    this.name = 'RetriesExhaustedError';
  }
}

/** What to check after the last failed try: the autoscaler, the worker's host, or the workers' load. */
function exhaustedHint(last: AttemptFailure | undefined): string {
  if (last?.stage === 'route' && last.status === null) {
    return "The autoscaler itself could not be reached: check that it is running and that the client's autoscaler URL points to it";
  }
  if (last?.stage === 'worker' && last.status === null) {
    return "The worker the autoscaler chose could not be reached (stopped, or its address is not reachable from here): check the endpoint's workers";
  }
  return "The workers may be overloaded (429) or failing (5xx): check the endpoint's workers, or raise retry.maxAttempts";
}

/** The request's own `timeout` passed before an answer arrived. */
export class RequestTimeoutError extends ServerlessError {
  constructor(
    readonly timeoutMs: number,
    readonly stage: string,
  ) {
    super('TIMEOUT', `the request took longer than its timeout (${timeoutMs} ms) while ${stage}; raise the timeout option if the model is just slow`);
    this.name = 'RequestTimeoutError';
  }
}

/** The caller's AbortSignal fired. */
export class RequestAbortedError extends ServerlessError {
  constructor(options?: { cause?: unknown }) {
    super('ABORTED', 'the request was aborted by its signal', options);
    this.name = 'RequestAbortedError';
  }
}

/** The session is closed or unknown on its worker (410, or the worker is gone). */
export class SessionClosedError extends ServerlessError {
  constructor(
    readonly sessionId: string,
    reason: string,
  ) {
    super('SESSION_CLOSED', `session ${sessionId} is closed (${reason}); open a new session with endpoint.session()`);
    this.name = 'SessionClosedError';
  }
}

/** A streamed answer broke after it started; what arrived was delivered, the rest is lost. */
export class StreamInterruptedError extends ServerlessError {
  constructor(
    readonly url: string,
    options?: { cause?: unknown },
  ) {
    super(
      'STREAM_INTERRUPTED',
      `the stream from ${url} broke after it started (${(options?.cause as Error | undefined)?.message ?? 'connection lost'}); ` +
        'partial output is not retried automatically, send the request again if it is safe to repeat',
      options,
    );
    this.name = 'StreamInterruptedError';
  }
}
