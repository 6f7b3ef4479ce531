import { Agent, type Dispatcher } from 'undici';
import { RouteError, ServerlessError, SessionClosedError, WorkerError } from './errors.js';
import { postJson, readBody } from './http.js';
import { DEFAULT_RETRY, describeConnectionError, isConnectionError, type RetryOptions } from './retry.js';
import { ServerlessSession, type SessionInit } from './session.js';
import type { ServerlessStream } from './stream.js';
import { call, routeRequest, type RetryInfo, type RouteAnswer, type ServerlessResponse, type TransportSettings } from './transport.js';

/**
 * The client of a serverless endpoint (PROTOCOL §2, §6, §9): ask the autoscaler for a worker,
 * send the request to it, retry what is worth retrying, stream answers, hold sessions.
 *
 *   const client = new Serverless({ autoscalerUrl: 'http://127.0.0.1:8080', apiKey });
 *   const ep = client.endpoint('my-llm');
 *   const { body } = await ep.request('/v1/completions', { prompt: 'Hi', max_tokens: 16 }, { cost: 20 });
 *   await client.close();
 */

export interface ServerlessOptions {
  /** The autoscaler (engine) base URL, e.g. https://run.vast.ai or http://127.0.0.1:8080. */
  autoscalerUrl: string;
  /** The endpoint's api key (what /route/ checks). Never logged, never put in an error. */
  apiKey: string;
  /** Default per-request timeout in ms, routing and queueing included (default 600 000). */
  timeout?: number;
  /** Longest pause between polls while a request waits in the engine's queue, ms (default 2000). */
  maxPollInterval?: number;
  /** Default retry settings (maxAttempts 8, baseDelayMs 250, maxDelayMs 10 000). */
  retry?: RetryOptions;
  /** Connections per origin (default 256); ignored when `dispatcher` is given. */
  connections?: number;
  /** An undici dispatcher to use instead of the client's own Agent (closed by its owner). */
  dispatcher?: Dispatcher;
  /** Random source of the back-off jitter (tests). */
  random?: () => number;
}

/** Options of one request. */
export interface RequestOptions {
  /** The request's load as the engine counts it: tokens for an LLM (default 100). */
  cost?: number;
  /** Return a ServerlessStream instead of the whole body (default false). */
  stream?: boolean;
  /** ms, routing and queueing included; for a stream, until its first byte (default: the client's). */
  timeout?: number;
  signal?: AbortSignal;
  /** Retry settings for this request, or false for a single try. */
  retry?: RetryOptions | false;
  /** Called before each retry with what failed and how long the client waits. */
  onRetry?: (info: RetryInfo) => void;
}

/** Options of `endpoint.session()`. */
export interface SessionOptions {
  /** Load the open session holds on its worker (default 100). */
  cost?: number;
  /** Seconds the session lives without a request; each request pushes it out again (default 60). */
  lifetime?: number;
  /** A path on the model server POSTed (with `session_id`) when the session closes. */
  onCloseRoute?: string;
  /** The body of that POST (session_id is added). */
  onClosePayload?: Record<string, unknown>;
  timeout?: number;
  signal?: AbortSignal;
  retry?: RetryOptions | false;
  onRetry?: (info: RetryInfo) => void;
}

/** One worker of an endpoint, as `/get_endpoint_workers/` lists it. */
export interface EndpointWorker {
  id: number;
  status: string;
  cur_load: number;
  new_load: number;
  cur_load_rolling_avg: number;
  cur_perf: number;
  perf: number;
  measured_perf: number;
  dlperf: number;
  reliability: number;
  reqs_working: number;
  disk_usage: number;
  loaded_at: number | null;
  started_at: number | null;
  [extra: string]: unknown;
}

/** Holds the connections and settings; hands out endpoints. */
export class Serverless {
  private readonly settings: TransportSettings;
  private readonly ownAgent: Agent | null;

  constructor(opts: ServerlessOptions) {
    if (typeof opts?.autoscalerUrl !== 'string' || !/^https?:\/\//.test(opts.autoscalerUrl)) {
      throw new ServerlessError('INVALID_ARGUMENT', `autoscalerUrl must be an http(s) URL, got ${JSON.stringify(opts?.autoscalerUrl)}`);
    }
    if (typeof opts.apiKey !== 'string' || opts.apiKey === '') {
      throw new ServerlessError('INVALID_ARGUMENT', "apiKey must be the endpoint's api key (a non-empty string)");
    }
    this.ownAgent = opts.dispatcher ? null : new Agent({ connections: opts.connections ?? 256, keepAliveTimeout: 30_000, pipelining: 1 });
    this.settings = {
      dispatcher: opts.dispatcher ?? this.ownAgent!,
      autoscalerUrl: opts.autoscalerUrl.replace(/\/+$/, ''),
      apiKey: opts.apiKey,
      defaultTimeoutMs: opts.timeout ?? 600_000,
      maxPollIntervalMs: opts.maxPollInterval ?? 2000,
      retry: { ...DEFAULT_RETRY, ...opts.retry },
      random: opts.random ?? Math.random,
    };
  }

  /** The endpoint `name` (no network call). */
  endpoint(name: string): Endpoint {
    if (typeof name !== 'string' || name === '') throw new ServerlessError('INVALID_ARGUMENT', 'endpoint name must be a non-empty string');
    return new Endpoint(this.settings, name);
  }

  /** Close the client's connections (a dispatcher passed in is left to its owner). */
  async close(): Promise<void> {
    await this.ownAgent?.close();
  }
}

/** One endpoint: requests, sessions, its workers. */
export class Endpoint {
  constructor(
    private readonly s: TransportSettings,
    readonly name: string,
  ) {}

  /**
   * Send `payload` to `route` on a worker of this endpoint and return the whole answer, or a
   * stream with `{stream: true}`. Retries 408, 429, 5xx and lost connections (re-routed each
   * time, so a vanished or full worker is left for another) with capped exponential back-off.
   */
  request<T = unknown>(route: string, payload: unknown, opts?: RequestOptions & { stream?: false }): Promise<ServerlessResponse<T>>;
  request(route: string, payload: unknown, opts: RequestOptions & { stream: true }): Promise<ServerlessStream>;
  request(route: string, payload: unknown, opts?: RequestOptions): Promise<ServerlessResponse | ServerlessStream>;
  async request(route: string, payload: unknown, opts: RequestOptions = {}): Promise<ServerlessResponse | ServerlessStream> {
    checkRoute(route);
    const cost = checkCost(opts.cost);
    const out = await call(this.s, {
      endpoint: this.name,
      route,
      payload,
      stream: opts.stream === true,
      target: (d, startedAt, memo) => routeRequest(this.s, this.name, cost, d, startedAt, memo),
      timeoutMs: opts.timeout,
      signal: opts.signal,
      retry: opts.retry,
      onRetry: opts.onRetry,
    });
    return out.kind === 'stream' ? out.stream : out.response;
  }

  /** Open a session on one worker (PROTOCOL §6); its requests all go to that worker. */
  async session(opts: SessionOptions = {}): Promise<ServerlessSession> {
    const cost = checkCost(opts.cost);
    const lifetime = opts.lifetime ?? 60;
    if (!(typeof lifetime === 'number' && lifetime > 0))
      throw new ServerlessError('INVALID_ARGUMENT', `lifetime must be a positive number of seconds (got ${JSON.stringify(opts.lifetime)})`);
    const payload: Record<string, unknown> = { lifetime };
    if (opts.onCloseRoute !== undefined) payload.on_close_route = opts.onCloseRoute;
    if (opts.onClosePayload !== undefined) payload.on_close_payload = opts.onClosePayload;
    const out = await call(this.s, {
      endpoint: this.name,
      route: '/session/create',
      payload,
      stream: false,
      target: (d, startedAt, memo) => routeRequest(this.s, this.name, cost, d, startedAt, memo),
      timeoutMs: opts.timeout,
      signal: opts.signal,
      retry: opts.retry,
      onRetry: opts.onRetry,
    });
    if (out.kind !== 'full') throw new Error('unreachable');
    const b = out.response.body as { session_id?: unknown; expiration?: unknown };
    if (typeof b?.session_id !== 'string' && typeof b?.session_id !== 'number') {
      throw new WorkerError(out.response.status, out.response.body, out.response.url, '/session/create');
    }
    const init: SessionInit = {
      endpoint: this.name,
      id: String(b.session_id),
      url: out.response.url,
      authData: out.auth,
      lifetime,
      expiration: Number(b.expiration) || 0,
    };
    return new ServerlessSession(this.s, init);
  }

  /**
   * Reattach to an open session from its id and `session_auth` (the auth_data it was created
   * with, e.g. kept by another process). Throws SessionClosedError when it is gone.
   */
  async getSession(sessionId: string, sessionAuth: RouteAnswer, opts: { timeout?: number } = {}): Promise<ServerlessSession> {
    if (typeof sessionAuth?.url !== 'string')
      throw new ServerlessError('INVALID_ARGUMENT', 'sessionAuth must be the auth_data the session was created with (it carries the worker url)');
    const url = sessionAuth.url.replace(/\/+$/, '');
    let answer: Awaited<ReturnType<typeof postJson>>;
    try {
      answer = await postJson(
        this.s.dispatcher,
        `${url}/session/get`,
        { session_id: sessionId, session_auth: sessionAuth },
        { signal: AbortSignal.timeout(opts.timeout ?? 10_000) },
      );
    } catch (err) {
      if (isConnectionError(err)) throw new SessionClosedError(sessionId, `its worker cannot be reached: ${describeConnectionError(err)}`);
      throw err;
    }
    const body = (await readBody(answer)) as Record<string, unknown> | null;
    if (answer.status === 400 || answer.status === 410) throw new SessionClosedError(sessionId, 'the worker does not know it');
    if (answer.status !== 200 || !body) throw new WorkerError(answer.status, body, url, '/session/get');
    return new ServerlessSession(this.s, {
      endpoint: this.name,
      id: sessionId,
      url,
      authData: sessionAuth,
      lifetime: Number(body.lifetime) || 60,
      expiration: Number(body.expiration) || 0,
    });
  }

  /** The endpoint's workers and their load (`/get_endpoint_workers/`). */
  async workers(opts: { timeout?: number } = {}): Promise<EndpointWorker[]> {
    const answer = await postJson(
      this.s.dispatcher,
      `${this.s.autoscalerUrl}/get_endpoint_workers/`,
      { id: this.name, api_key: this.s.apiKey },
      { signal: AbortSignal.timeout(opts.timeout ?? 10_000) },
    );
    if (answer.status !== 200) {
      const body = await readBody(answer).catch(() => null);
      throw new RouteError(answer.status, body, this.name);
    }
    const body = await readBody(answer);
    if (!Array.isArray(body)) {
      throw new RouteError(answer.status, { error: 'expected a list of workers' }, this.name);
    }
    return body as EndpointWorker[];
  }
}

function checkRoute(route: string): void {
  if (typeof route !== 'string' || !route.startsWith('/'))
    throw new ServerlessError('INVALID_ARGUMENT', `route must be a path starting with "/" (got ${JSON.stringify(route)})`);
}

function checkCost(cost: number | undefined): number {
  const c = cost ?? 100;
  if (typeof c !== 'number' || !Number.isFinite(c) || c < 0)
    throw new ServerlessError('INVALID_ARGUMENT', `cost must be a number ≥ 0: the request's load, e.g. its tokens (got ${JSON.stringify(cost)})`);
  return c;
}
