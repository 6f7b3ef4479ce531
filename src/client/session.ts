import { ServerlessError, SessionClosedError, WorkerError } from './errors.js';
import { postJson, readBody } from './http.js';
import { describeConnectionError, isConnectionError } from './retry.js';
import type { ServerlessStream } from './stream.js';
import { call, type RetryInfo, type RouteAnswer, type ServerlessResponse, type TransportSettings } from './transport.js';
import type { RetryOptions } from './retry.js';

/** What a session is made from (by `endpoint.session()` or `endpoint.getSession()`). */
export interface SessionInit {
  endpoint: string;
  id: string;
  /** The worker holding the session. */
  url: string;
  /** The auth_data the session was created with: its `session_auth`. */
  authData: RouteAnswer;
  lifetime: number;
  /** Unix seconds, as the worker said at creation. */
  expiration: number;
}

/** Options of a request inside a session (no cost: the session's cost is already counted). */
export interface SessionRequestOptions {
  stream?: boolean;
  timeout?: number;
  signal?: AbortSignal;
  /** Retries go to the same worker (a session cannot move); lost connections end the session. */
  retry?: RetryOptions | false;
  onRetry?: (info: RetryInfo) => void;
}

/** What `/session/get` says about a session. */
export interface SessionInfo {
  session_id: string;
  lifetime: number;
  expiration: number;
  created_at: number;
  on_close_route: string | null;
  on_close_payload: Record<string, unknown> | null;
}

/**
 * An open session on one worker (PROTOCOL §6). Requests carry its `session_id` and the
 * auth_data it was created with; each pushes its expiry out by `lifetime`. `end()` closes it
 * (idempotent); after that, or once the worker has closed it, requests throw SessionClosedError.
 * `authData` is a credential: keep it private (with the id, it controls the session).
 */
export class ServerlessSession {
  readonly endpoint: string;
  readonly id: string;
  readonly url: string;
  readonly lifetime: number;
  /** Unix seconds; refreshed by `info()`. */
  expiration: number;
  private readonly auth: RouteAnswer;
  private ended = false;

  constructor(
    private readonly s: TransportSettings,
    init: SessionInit,
  ) {
    this.endpoint = init.endpoint;
    this.id = init.id;
    this.url = init.url.replace(/\/+$/, '');
    this.lifetime = init.lifetime;
    this.expiration = init.expiration;
    this.auth = init.authData;
  }

  /** The session's `session_auth`, to reattach elsewhere with `endpoint.getSession()`. */
  get authData(): RouteAnswer {
    return this.auth;
  }

  /** True once `end()` ran or a request found the session closed. */
  get closed(): boolean {
    return this.ended;
  }

  /** Send a request in the session, to its worker. Same answers as `endpoint.request()`. */
  request<T = unknown>(route: string, payload: unknown, opts?: SessionRequestOptions & { stream?: false }): Promise<ServerlessResponse<T>>;
  request(route: string, payload: unknown, opts: SessionRequestOptions & { stream: true }): Promise<ServerlessStream>;
  async request(route: string, payload: unknown, opts: SessionRequestOptions = {}): Promise<ServerlessResponse | ServerlessStream> {
    if (this.ended) throw new SessionClosedError(this.id, 'it was ended');
    if (typeof route !== 'string' || !route.startsWith('/'))
      throw new ServerlessError('INVALID_ARGUMENT', `route must be a path starting with "/" (got ${JSON.stringify(route)})`);
    let lost = 0;
    try {
      const out = await call(this.s, {
        endpoint: this.endpoint,
        route,
        payload,
        stream: opts.stream === true,
        extra: { session_id: this.id },
        target: async () => {
          // A session lives on one worker: when that worker cannot be reached twice, it is gone.
          return this.auth;
        },
        timeoutMs: opts.timeout,
        signal: opts.signal,
        retry: opts.retry,
        onRetry: (info) => {
          if (info.status === null && ++lost >= 2) throw new SessionClosedError(this.id, `its worker cannot be reached: ${info.reason}`);
          opts.onRetry?.(info);
        },
        statusError: (status) => (status === 410 ? new SessionClosedError(this.id, 'the worker says it is closed or expired') : null),
      });
      return out.kind === 'stream' ? out.stream : out.response;
    } catch (err) {
      if (err instanceof SessionClosedError) this.ended = true;
      throw err;
    }
  }

  /** Whether the worker still holds the session open (false when it is closed, unknown or unreachable). */
  async isOpen(opts: { timeout?: number } = {}): Promise<boolean> {
    try {
      const a = await this.post('/session/health', opts.timeout);
      const body = (await readBody(a)) as { ok?: unknown } | null;
      return a.status === 200 && body?.ok === true;
    } catch (err) {
      if (isConnectionError(err)) return false;
      throw err;
    }
  }

  /** The worker's record of the session (expiration, lifetime, on_close settings). */
  async info(opts: { timeout?: number } = {}): Promise<SessionInfo> {
    const a = await this.post('/session/get', opts.timeout);
    const body = (await readBody(a)) as Record<string, unknown> | null;
    if (a.status === 400 || a.status === 410) {
      this.ended = true;
      throw new SessionClosedError(this.id, 'the worker does not know it');
    }
    if (a.status !== 200 || !body) throw new WorkerError(a.status, body, this.url, '/session/get');
    this.expiration = Number(body.expiration) || this.expiration;
    const { auth_data: _secret, ...info } = body;
    return info as unknown as SessionInfo;
  }

  /**
   * Close the session: its running requests are cancelled and its on_close_route called.
   * Resolves `{ended: true}` when this call closed it, `{ended: false}` when it was already
   * closed (by an earlier end(), expiry, or a vanished worker).
   */
  async end(opts: { timeout?: number } = {}): Promise<{ ended: boolean }> {
    if (this.ended) return { ended: false };
    let a: Awaited<ReturnType<typeof postJson>>;
    try {
      a = await this.post('/session/end', opts.timeout);
    } catch (err) {
      if (isConnectionError(err)) {
        this.ended = true;
        throw new SessionClosedError(this.id, `its worker cannot be reached to end it: ${describeConnectionError(err)}`);
      }
      throw err;
    }
    const body = await readBody(a);
    if (a.status === 200) {
      this.ended = true;
      return { ended: true };
    }
    if (a.status === 400 || a.status === 410) {
      this.ended = true;
      return { ended: false };
    }
    throw new WorkerError(a.status, body, this.url, '/session/end');
  }

  /** Same as `end()`, named as in Vast's Python SDK. */
  close(opts: { timeout?: number } = {}): Promise<{ ended: boolean }> {
    return this.end(opts);
  }

  private post(path: string, timeoutMs = 10_000) {
    return postJson(this.s.dispatcher, this.url + path, { session_id: this.id, session_auth: this.auth }, { signal: AbortSignal.timeout(timeoutMs) });
  }
}
