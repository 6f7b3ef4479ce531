import { isUtf8 } from 'node:buffer';
import type { IncomingMessage, ServerResponse, IncomingHttpHeaders } from 'node:http';
import { errors as undiciErrors, type Dispatcher, type Pool } from 'undici';
import type { Logger } from '../common/log.js';
import type { AuthChecker } from './auth.js';
import type { FifoGate } from './admission.js';
import type { ResolvedHandler } from './config.js';
import { fieldErrors, parseEnvelope, payloadSpan } from './envelope.js';
import type { Ledger, RequestEntry } from './ledger.js';
import type { Lifecycle } from './lifecycle.js';
import type { ModelClient } from './model-client.js';
import { httpReply, type ClientReply, type OutgoingHeaders, type RouteFn } from './server.js';

/** Requests bound to an open session: strict mode checks their signature, not their expiry again. */
const IN_SESSION = { withinOpenSession: true } as const;

/*
 * The request path of a handler route (PROTOCOL §2):
 *   body (size limit) → envelope → session → payload schema → workload → ledger entry
 *   → signature (401) → queue time (429) → started → FIFO gate (non-parallel) → model → answer.
 * Written without a framework because it is the hot path; everything else is a hono route. A
 * request arrives either through node:http (IncomingMessage/ServerResponse) or through the
 * listener's fast lane (server.ts: the whole body and a `ClientReply`); both meet in `serve`.
 * Every admitted request ends exactly once in the ledger (see ledger.ts); `ModelCall.settle`
 * below is the only place that ends it.
 */

/** What the request path needs from the sessions part (PROTOCOL §6). */
export interface SessionAccess {
  /** Open and not expired. */
  isOpen(id: string): boolean;
  /** A request arrived in the session: push its expiry out. */
  touch(id: string): void;
  /** Abort `abort` when the session closes; returns the function that stops tracking. */
  track(id: string, abort: () => void): () => void;
}

/**
 * Hooks for metrics and request logs, called on the hot path (keep them cheap): admitted once per
 * admitted request, first byte at most once, finished exactly once per admitted request (status 499
 * when the client left), refused for each answer given before a ledger entry exists (410, 413, 422,
 * 503); 401 and 429 are ledger rejections, seen through `Ledger.onEnd`.
 */
export interface RequestObserver {
  onAdmitted?(entry: RequestEntry): void;
  onFirstByte?(entry: RequestEntry, ms: number): void;
  onFinished?(entry: RequestEntry, status: number, ms: number): void;
  onRefused?(route: string, status: number): void;
}

/** Everything a handler route uses; built once by the composition root (worker.ts). */
export interface ProxyDeps {
  ledger: Ledger;
  auth: AuthChecker;
  lifecycle: Lifecycle;
  pool: Pool;
  /** The lean client the request path sends model calls with (model-client.ts); the pool without one. */
  model?: ModelClient;
  gate: FifoGate;
  logger: Logger;
  sessions?: SessionAccess;
  observer?: RequestObserver;
  maxBodyBytes: number;
  modelTimeoutMs: number;
  /** Seconds a draining worker tells clients to wait before retrying elsewhere. */
  retryAfterSeconds?: number;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'trailers']);
const JSON_HEADERS = { 'content-type': 'application/json' };

/** Answer with a JSON body (no-op when an answer has already started or the client is gone). */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** `sendJson` for either listener. */
function replyJson(reply: ClientReply, status: number, body: unknown, headers?: Record<string, string>): void {
  if (reply.headersSent || reply.destroyed) return;
  reply.send(status, headers ? { ...JSON_HEADERS, ...headers } : JSON_HEADERS, JSON.stringify(body));
}

const NO_HEADERS: OutgoingHeaders = {};

function replyEmpty(reply: ClientReply, status: number): void {
  if (reply.headersSent || reply.destroyed) return;
  reply.send(status, NO_HEADERS);
}

function copyHeaders(from: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in from) {
    const v = from[k];
    if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  }
  return out;
}

/**
 * Read a body up to `limit` bytes. Calls back with the body, or with null and `tooLarge` true after
 * answering 413 itself, or with null and false when the client went away mid-body.
 */
function readBody(req: IncomingMessage, res: ServerResponse, limit: number, cb: (body: Buffer | null, tooLarge: boolean) => void): void {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) {
    tooLarge(req, res, limit);
    return cb(null, true);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let done = false;
  req.on('data', (c: Buffer) => {
    if (done) return;
    size += c.length;
    if (size > limit) {
      done = true;
      tooLarge(req, res, limit);
      cb(null, true);
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    if (done) return;
    done = true;
    cb(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size), false);
  });
  req.on('error', () => {
    if (done) return;
    done = true;
    cb(null, false);
  });
}

function tooLarge(req: IncomingMessage, res: ServerResponse, limit: number): void {
  sendJson(res, 413, { error: `request body too large: the limit is ${limit} bytes`, field: 'body' }, { connection: 'close' });
  req.resume();
}

/**
 * The function serving one handler route (node:http), with its fast-lane entry (`.fast`). It never
 * throws and never lets a request escape the ledger: every request it admits ends exactly once
 * (success, error or cancelled), and every 4xx it gives is JSON naming the field, except the
 * bodiless 401 and 429 of the protocol.
 */
export function createHandlerRoute(deps: ProxyDeps, handler: ResolvedHandler): RouteFn {
  const { ledger, auth, lifecycle, gate, logger, observer } = deps;
  const route = handler.route;
  const retryAfter = String(deps.retryAfterSeconds ?? 5);
  const drainingHeaders = { 'retry-after': retryAfter, connection: 'close' };
  // What the request being admitted has made so far, for the error path of `serve`. Admission is
  // synchronous, so one pair per route is enough (no per-request object).
  let madeEntry: RequestEntry | null = null;
  let madeCall: ModelCall | null = null;

  /** Admit one request whose whole body is in; answers it on every path. */
  function serve(body: Buffer, reply: ClientReply): void {
    madeEntry = null;
    madeCall = null;
    // Last line of defence: a throw here (a handler's or an extension's bug) would otherwise kill
    // the process from inside an event handler, and leave a started request without an end.
    try {
      admit(body, reply);
    } catch (err) {
      const message = (err as Error)?.message ?? String(err);
      const entry = madeEntry as RequestEntry | null;
      const call = madeCall as ModelCall | null;
      logger.error({ route, rid: entry?.id, err: message }, 'request path failed');
      if (call) return call.fail(`request path failed: ${message}`);
      if (entry?.state === 'created') ledger.start(entry);
      if (entry?.state === 'started') ledger.end(entry, 'error');
      replyJson(reply, 500, { error: 'internal error in the worker', field: 'worker' });
    }
  }

  function admit(body: Buffer, reply: ClientReply): void {
    const parsed = parseEnvelope(body.toString('utf8'));
    if (!parsed.ok) {
      observer?.onRefused?.(route, parsed.status);
      return replyJson(reply, parsed.status, parsed.body);
    }
    const env = parsed.envelope;
    const sessionId = env.session_id;
    if (sessionId !== null && !deps.sessions?.isOpen(sessionId)) {
      observer?.onRefused?.(route, 410);
      return replyJson(reply, 410, { error: 'invalid session', field: 'session_id' });
    }
    let check: ReturnType<typeof handler.payload.safeParse>;
    try {
      check = handler.payload.safeParse(env.payload);
    } catch (err) {
      // A refinement in the handler's schema threw instead of reporting an issue.
      observer?.onRefused?.(route, 422);
      return replyJson(reply, 422, { payload: { '(payload)': (err as Error)?.message ?? String(err) } });
    }
    if (!check.success) {
      observer?.onRefused?.(route, 422);
      return replyJson(reply, 422, { payload: fieldErrors(check.error) });
    }
    // The handler's own code runs before the request enters the ledger: its errors are the client's 422.
    let workload: number;
    let modelBody: string | Buffer;
    try {
      workload = handler.workload(check.data);
      if (!Number.isFinite(workload) || workload < 0) throw new Error(`workload must be a non-negative number, got ${workload}`);
    } catch (err) {
      observer?.onRefused?.(route, 422);
      return replyJson(reply, 422, { payload: { '(workload)': (err as Error)?.message ?? String(err) } });
    }
    try {
      modelBody = handler.toModelRequest ? modelRequestBody(handler.toModelRequest(check.data)) : extractPayload(body, env.payload);
    } catch (err) {
      observer?.onRefused?.(route, 422);
      return replyJson(reply, 422, { payload: { '(toModelRequest)': (err as Error)?.message ?? String(err) } });
    }
    const entry = (madeEntry = ledger.create({
      requestIdx: env.auth_data.request_idx,
      reqnum: env.auth_data.reqnum,
      workload,
      route,
      sessionBound: sessionId !== null,
    }));
    if (!auth.check(env.auth_data, sessionId !== null ? IN_SESSION : undefined)) {
      ledger.reject(entry);
      logger.info({ rid: entry.id, request_idx: entry.requestIdx, route }, 'rejected: signature does not verify');
      return replyEmpty(reply, 401);
    }
    if (handler.maxQueueTime !== null && sessionId === null && ledger.expectedQueueTime() > handler.maxQueueTime) {
      ledger.reject(entry);
      if (logger.isLevelEnabled('debug')) logger.debug({ rid: entry.id, request_idx: entry.requestIdx, route }, 'rejected: queue time over max_queue_time');
      return replyEmpty(reply, 429);
    }
    ledger.start(entry);
    const call = (madeCall = new ModelCall(deps, handler, reply, entry));
    if (sessionId !== null) deps.sessions!.touch(sessionId);
    observer?.onAdmitted?.(entry);
    forward(call, modelBody, sessionId);
  }

  function forward(call: ModelCall, modelBody: string | Buffer, sessionId: string | null): void {
    if (sessionId !== null) {
      call.untrack = deps.sessions!.track(sessionId, () => {
        call.reply.destroy();
        call.cancel('session closed');
      });
    }
    if (handler.allowParallelRequests) return call.send(modelBody);
    // Only a non-parallel request can wait, so only it pays for an AbortController.
    const ac = new AbortController();
    call.gateAbort = ac;
    gate.acquire(ac.signal).then(
      () => {
        if (call.ended) return gate.release();
        call.holdsGate = true;
        call.send(modelBody);
      },
      () => {
        /* aborted while queued: already settled as cancelled */
      },
    );
  }

  const fn: RouteFn = (req, res) => {
    if (!lifecycle.admitting) {
      observer?.onRefused?.(route, 503);
      sendJson(res, 503, { error: 'worker is draining: retry on another worker' }, drainingHeaders);
      req.resume();
      return;
    }
    readBody(req, res, deps.maxBodyBytes, (body, tooBig) => {
      if (body === null) {
        if (tooBig) observer?.onRefused?.(route, 413);
        return;
      }
      serve(body, httpReply(res));
    });
  };
  fn.fast = (body, reply) => {
    if (!lifecycle.admitting) {
      observer?.onRefused?.(route, 503);
      return replyJson(reply, 503, { error: 'worker is draining: retry on another worker' }, drainingHeaders);
    }
    serve(body, reply);
  };
  fn.maxBodyBytes = deps.maxBodyBytes;
  return fn;
}

/** Non-streamed answers up to this size are sent to the client in one write, headers included. */
const SMALL_ANSWER_BYTES = 64 * 1024;

type AnswerMode = 'stream' | 'small' | 'transform';

/**
 * One admitted request's trip to the model and back, on undici's dispatch API (served by the
 * ModelClient, or by the undici pool without one): no response stream
 * objects on the hot path, each model chunk written to the client as it arrives, and the model
 * paused while the client's socket is full (back-pressure). `settle` is the only place that ends
 * the request in the ledger, and it runs exactly once.
 */
class ModelCall implements Dispatcher.DispatchHandler {
  ended = false;
  holdsGate = false;
  untrack: (() => void) | undefined;
  gateAbort: AbortController | undefined;
  private controller: Dispatcher.DispatchController | null = null;
  private readonly t0 = performance.now();
  private status = 0;
  private mode: AnswerMode = 'stream';
  private chunks: Buffer[] | null = null;
  private headers: Record<string, string | string[]> | null = null;
  private firstByte = true;
  private waitingDrain = false;

  constructor(
    private readonly deps: ProxyDeps,
    private readonly handler: ResolvedHandler,
    readonly reply: ClientReply,
    private readonly entry: RequestEntry,
  ) {
    deps.lifecycle.requestStarted();
    // The client going away aborts the model request: its model connection is closed, so the model sees it end.
    reply.onClose(() => {
      if (!this.ended) this.cancel('client disconnected');
    });
  }

  send(body: string | Buffer): void {
    if (this.ended) return;
    const d = this.deps;
    (d.model ?? d.pool).dispatch(
      { path: this.handler.upstreamPath, method: 'POST', headers: JSON_HEADERS, body, headersTimeout: d.modelTimeoutMs, bodyTimeout: d.modelTimeoutMs },
      this,
    );
  }

  /** The worker itself failed before or while calling the model: an empty 500, counted errored. */
  fail(why: string): void {
    if (this.ended) return;
    this.settle('error', 500, why);
    this.controller?.abort(new Error(why));
    this.gateAbort?.abort();
    if (this.reply.headersSent) this.reply.destroy();
    else replyEmpty(this.reply, 500);
  }

  /** The client or the session went away: abort the model call and count the request cancelled. */
  cancel(why: string): void {
    if (this.ended) return;
    this.settle('cancelled', 499, why);
    this.controller?.abort(new Error(why));
    this.gateAbort?.abort();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // The client left while the request waited for a model connection.
    if (this.ended) controller.abort(new Error('client disconnected'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (this.ended || statusCode < 200) return;
    this.status = statusCode;
    const stream = isStreamType(headers['content-type']);
    const length = Number(headers['content-length']);
    if (this.handler.toClientResponse && !stream) {
      this.mode = 'transform';
      this.chunks = [];
    } else if (!stream && length <= SMALL_ANSWER_BYTES) {
      // Small, complete answers: one write with the headers instead of one per piece.
      this.mode = 'small';
      this.chunks = [];
      this.headers = copyHeaders(headers);
    } else {
      this.mode = 'stream';
      // Streamed answers show their headers at once, before the first token.
      this.reply.start(statusCode, copyHeaders(headers), stream);
    }
    this.controller = controller;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.ended) return;
    if (this.firstByte) {
      this.firstByte = false;
      this.deps.observer?.onFirstByte?.(this.entry, performance.now() - this.t0);
    }
    if (this.chunks !== null) {
      this.chunks.push(chunk);
      return;
    }
    if (!this.reply.write(chunk) && !this.waitingDrain) {
      // The client's socket is full: pause the model until it drains.
      this.waitingDrain = true;
      controller.pause();
      this.reply.onDrain(() => {
        this.waitingDrain = false;
        controller.resume();
      });
    }
  }

  onResponseEnd(): void {
    if (this.ended) return;
    const status = this.status;
    const outcome = status >= 500 ? 'error' : 'success';
    const done = (): void => this.settle(outcome, status);
    if (this.mode === 'stream') {
      this.reply.end(done);
      return;
    }
    const body = this.chunks!.length === 1 ? this.chunks![0]! : Buffer.concat(this.chunks!);
    this.chunks = null;
    if (this.mode === 'small') {
      this.reply.send(status, this.headers!, body, done);
      return;
    }
    let out: string;
    try {
      const text = body.toString('utf8');
      out = JSON.stringify(this.handler.toClientResponse!(text ? JSON.parse(text) : null, status));
    } catch (err) {
      replyEmpty(this.reply, 500);
      return this.settle('error', 500, `toClientResponse failed: ${(err as Error).message}`);
    }
    if (this.reply.headersSent || this.reply.destroyed) return this.settle('cancelled', 499, 'client disconnected');
    this.reply.send(status, JSON_HEADERS, out, done);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.ended) return;
    const reply = this.reply;
    if (reply.headersSent) {
      // Part of the answer is out: all we can do is cut the client off.
      reply.destroy();
      return this.settle('error', this.status, `model stream failed: ${err.message}`);
    }
    if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
      replyJson(reply, 504, { error: `the model did not answer within ${this.deps.modelTimeoutMs} ms` });
      return this.settle('error', 504, err.message);
    }
    replyEmpty(reply, 500);
    this.settle('error', 500, `model call failed: ${err.message}`);
  }

  private settle(outcome: 'success' | 'error' | 'cancelled', status: number, why?: string): void {
    if (this.ended) return;
    this.ended = true;
    const { deps, entry } = this;
    if (this.holdsGate) deps.gate.release();
    this.untrack?.();
    deps.lifecycle.requestEnded();
    deps.ledger.end(entry, outcome);
    const ms = performance.now() - this.t0;
    deps.observer?.onFinished?.(entry, status, ms);
    if (outcome === 'success') {
      // The object costs an allocation a request: build it only when debug lines are wanted.
      if (deps.logger.isLevelEnabled('debug')) deps.logger.debug({ rid: entry.id, request_idx: entry.requestIdx, route: entry.route, status, ms }, 'request done');
    }
    else deps.logger.info({ rid: entry.id, request_idx: entry.requestIdx, route: entry.route, status, outcome, ms, why }, `request ${outcome}`);
  }
}

function isStreamType(ct: string | string[] | undefined): boolean {
  const s = Array.isArray(ct) ? ct[0] : ct;
  return !!s && (s.includes('event-stream') || s.includes('ndjson') || s.includes('jsonl'));
}

/** The body of a handler's `toModelRequest` result; throws when there is none. */
function modelRequestBody(request: unknown): string {
  const text = JSON.stringify(request);
  if (text === undefined) throw new Error('toModelRequest returned nothing to send');
  return text;
}

/**
 * The payload's own bytes, cut out of the envelope (no re-serialization: the model gets exactly
 * what the client wrote); JSON.stringify of the parsed payload when the bytes are not valid UTF-8.
 */
function extractPayload(body: Buffer, payload: unknown): string | Buffer {
  const span = payloadSpan(body);
  if (span !== null) {
    const bytes = body.subarray(span[0], span[1]);
    if (isUtf8(bytes)) return bytes;
  }
  return JSON.stringify(payload);
}
