import { isUtf8 } from 'node:buffer';
import type { IncomingMessage, ServerResponse, IncomingHttpHeaders } from 'node:http';
import { errors as undiciErrors, type Dispatcher, type Pool } from 'undici';
import type { Logger } from '../common/log.js';
import { errorBody } from '../common/protocol.js';
import type { AuthChecker } from './auth.js';
import type { FifoGate } from './admission.js';
import type { ResolvedHandler } from './config.js';
import { fieldErrors, parseEnvelope, payloadSpan } from './envelope.js';
import type { Ledger, RequestEntry } from './ledger.js';
import type { Lifecycle } from './lifecycle.js';
import { FRAMING_HEADERS, type OutgoingHeaders } from './http1/head.js';
import { BadAnswerError, type ModelClient } from './http1/model-client.js';
import { lingerOnClose } from './http1/linger.js';
import { httpReply, type ClientReply } from './http1/reply.js';
import type { RouteFn } from './http1/fast-lane.js';

/** Requests bound to an open session: strict mode checks their signature, not their expiry again. */
const IN_SESSION = { withinOpenSession: true } as const;

/*
 * The request path of a handler route (PROTOCOL §2):
 *   body (size limit) → envelope → session → payload schema → workload → ledger entry
 *   → signature (401) → queue time (429) → started → FIFO gate (non-parallel) → model → answer.
 * Written without a framework because it is the hot path; everything else is a hono route. A
 * request arrives either through node:http (IncomingMessage/ServerResponse) or through the
 * listener's fast lane (http1/fast-lane.ts: the whole body and a `ClientReply`); both meet in `serve`.
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
  /** The lean client the request path sends model calls with (http1/model-client.ts); the pool without one. */
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

/** Headers of the model's answer that stay between the model and the worker (framing is the worker's own). */
const HOP_BY_HOP = new Set([...FRAMING_HEADERS, 'proxy-authenticate', 'proxy-authorization']);
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

/** The model's end-to-end headers: no framing, no hop-by-hop, nothing its Connection header names. */
function copyHeaders(from: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const connection = from.connection;
  // The usual `keep-alive` / `close` name no header: only other values cost a set.
  const named =
    connection === undefined || connection === 'keep-alive' || connection === 'close'
      ? null
      : new Set(
          String(connection)
            .toLowerCase()
            .split(/\s*,\s*/),
        );
  for (const k in from) {
    const v = from[k];
    if (v !== undefined && !HOP_BY_HOP.has(k) && !named?.has(k)) out[k] = v;
  }
  return out;
}

/**
 * The body length the model's answer was framed by (its Content-Length, without Transfer-Encoding;
 * equal repeats count once), else undefined: the client then gets a chunked answer.
 */
function framedLength(headers: IncomingHttpHeaders): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const cl = headers['content-length'] as string | string[] | undefined;
  const first = Array.isArray(cl) ? cl[0] : cl;
  if (first === undefined || !/^\d{1,15}$/.test(first)) return undefined;
  if (Array.isArray(cl) && cl.some((v) => v !== first)) return undefined;
  return Number(first);
}

/** A model call failure that is the model breaking HTTP (the worker's 502), not a connection failing. */
function isBadAnswer(err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  if (err instanceof BadAnswerError || err instanceof undiciErrors.HTTPParserError || err instanceof undiciErrors.ResponseContentLengthMismatchError)
    return true;
  if (typeof code !== 'string') return false;
  // undici's words for an answer it cannot frame (an unasked 1xx or 101, a head over its limit).
  if (code === 'UND_ERR_SOCKET') return err.message === 'bad response' || err.message === 'bad upgrade';
  return code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_HEADERS_OVERFLOW';
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
  // The client may still be sending: read on after the answer, or the close resets it unread.
  if (req.socket) lingerOnClose(req.socket);
  sendJson(res, 413, errorBody(`request body too large: the limit is ${limit} bytes`, 'body'), { connection: 'close' });
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
      replyJson(reply, 500, errorBody('internal error in the worker', 'worker'));
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
      return replyJson(reply, 410, errorBody('invalid session', 'session_id'));
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
    const entry = ledger.create({
      requestIdx: env.auth_data.request_idx,
      reqnum: env.auth_data.reqnum,
      workload,
      route,
      sessionBound: sessionId !== null,
    });
    madeEntry = entry;
    if (!auth.check(env.auth_data, sessionId !== null ? IN_SESSION : undefined)) {
      ledger.reject(entry);
      logger.info({ rid: entry.id, request_idx: entry.requestIdx, route }, 'rejected: signature does not verify');
      return replyEmpty(reply, 401);
    }
    if (handler.maxQueueTime !== null && sessionId === null && ledger.expectedQueueTime() > handler.maxQueueTime) {
      ledger.reject(entry);
      if (logger.isLevelEnabled('debug')) logger.debug({ rid: entry.id, request_idx: entry.requestIdx, route }, 'rejected: queue time over max_queue_time');
      // PROTOCOL: the queue-time 429 is bodiless. A worker that is not ready yet (perf unknown, so
      // any queue is too long) says why in JSON, naming its state, instead of an empty 429.
      const state = lifecycle.state;
      if (state === 'starting' || state === 'loading' || state === 'benchmarking' || state === 'errored')
        return replyJson(reply, 429, {
          error: `the worker is not ready (${state}): it serves once the model is loaded and benchmarked`,
          field: 'worker',
          state,
        });
      return replyEmpty(reply, 429);
    }
    ledger.start(entry);
    const call = new ModelCall(deps, handler, reply, entry);
    madeCall = call;
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
      sendJson(res, 503, errorBody('worker is draining: retry on another worker'), drainingHeaders);
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
      return replyJson(reply, 503, errorBody('worker is draining: retry on another worker'), drainingHeaders);
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
  private gathered = 0;
  private headers: Record<string, string | string[]> | null = null;
  private firstByte = true;
  private waitingDrain = false;

  constructor(
    private readonly deps: ProxyDeps,
    private readonly handler: ResolvedHandler,
    readonly reply: ClientReply,
    private readonly entry: RequestEntry,
  ) {
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

  /** The model broke HTTP: a 502 JSON naming the model when nothing is out yet, else the client is cut off. */
  badAnswer(why: string): void {
    if (this.ended) return;
    this.settle('error', 502, `bad answer from the model: ${why}`);
    this.controller?.abort(new Error(why));
    if (this.reply.headersSent) return this.reply.destroy();
    try {
      replyJson(this.reply, 502, errorBody(`the model sent a bad answer: ${why}`, 'model'));
    } catch {
      this.reply.destroy();
    }
  }

  /** Every callback of the call runs through here: a throw goes to the call's failure path, never up the socket's stack. */
  private guard(err: unknown): void {
    const message = (err as Error)?.message ?? String(err);
    const code = (err as { code?: unknown })?.code;
    // A header node:http or the fast lane refused to write came from the model.
    if (code === 'ERR_INVALID_CHAR' || code === 'ERR_INVALID_HTTP_TOKEN' || err instanceof BadAnswerError) return this.badAnswer(message);
    this.deps.logger.error({ rid: this.entry.id, err: message }, 'request path failed while answering');
    this.fail(`request path failed: ${message}`);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (this.ended) return;
    this.controller = controller;
    try {
      this.responseStart(statusCode, headers);
    } catch (err) {
      this.guard(err);
    }
  }

  private responseStart(statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) {
      // 100 Continue and 103 Early Hints come before the answer; any other status under 200 is no answer.
      if (statusCode === 100 || statusCode === 103) return;
      return this.badAnswer(`status ${statusCode} is not an answer`);
    }
    this.status = statusCode;
    // A transfer coding other than chunked (`gzip, chunked`) would reach the client decoded of its
    // chunks only, as plain bytes under the wrong framing: refused as nginx does (502).
    const te = headers['transfer-encoding'];
    if (te !== undefined && !onlyChunked(te)) return this.badAnswer(`unsupported Transfer-Encoding ${JSON.stringify(String(te).slice(0, 64))}`);
    const stream = isStreamType(headers['content-type']);
    const length = framedLength(headers);
    if (this.handler.toClientResponse && !stream) {
      this.mode = 'transform';
      this.chunks = [];
    } else if (!stream && (length === undefined || length <= SMALL_ANSWER_BYTES)) {
      // Small, complete answers: one write with the headers instead of one per piece (an answer
      // of unknown length is gathered too, and streamed once it passes the small size).
      this.mode = 'small';
      this.gathered = 0;
      this.chunks = [];
      this.headers = copyHeaders(headers);
    } else {
      this.mode = 'stream';
      // Streamed answers show their headers at once, before the first token. The length goes on
      // only when the model framed the answer by it (the model client checked the body keeps to it).
      this.reply.start(statusCode, copyHeaders(headers), stream, length);
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.ended) return;
    try {
      this.responseData(controller, chunk);
    } catch (err) {
      this.guard(err);
    }
  }

  private responseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.status === 0) return; // the body of an interim answer (undici hands none; be sure)
    if (this.firstByte) {
      this.firstByte = false;
      this.deps.observer?.onFirstByte?.(this.entry, performance.now() - this.t0);
    }
    if (this.chunks !== null) {
      this.chunks.push(chunk);
      this.gathered += chunk.length;
      if (this.mode !== 'small' || this.gathered <= SMALL_ANSWER_BYTES) return;
      // Not small after all: stream it (chunked to the client) from here on.
      this.mode = 'stream';
      const gathered = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = null;
      this.reply.start(this.status, this.headers!, false);
      chunk = gathered;
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
    try {
      this.responseEnd();
    } catch (err) {
      this.guard(err);
    }
  }

  private responseEnd(): void {
    const status = this.status;
    if (status === 0) return this.badAnswer('the answer ended without a final status');
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
    try {
      this.responseError(err);
    } catch (e) {
      this.guard(e);
    }
  }

  private responseError(err: Error): void {
    const reply = this.reply;
    if (isBadAnswer(err)) return this.badAnswer(err.message);
    if (reply.headersSent) {
      // Part of the answer is out: all we can do is cut the client off.
      reply.destroy();
      return this.settle('error', this.status, `model stream failed: ${err.message}`);
    }
    if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
      replyJson(reply, 504, errorBody(`the model did not answer within ${this.deps.modelTimeoutMs} ms`, 'model'));
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
    deps.ledger.end(entry, outcome);
    const ms = performance.now() - this.t0;
    try {
      deps.observer?.onFinished?.(entry, status, ms);
    } catch (err) {
      // The request has ended in the ledger; an observer's bug must not escape a socket callback.
      deps.logger.error({ rid: entry.id, err: (err as Error)?.message }, 'request observer failed');
    }
    if (outcome === 'success') {
      // The object costs an allocation a request: build it only when debug lines are wanted.
      if (deps.logger.isLevelEnabled('debug'))
        deps.logger.debug({ rid: entry.id, request_idx: entry.requestIdx, route: entry.route, status, ms }, 'request done');
    } else deps.logger.info({ rid: entry.id, request_idx: entry.requestIdx, route: entry.route, status, outcome, ms, why }, `request ${outcome}`);
  }
}

/** Transfer-Encoding says exactly `chunked` (any case, once, surrounding spaces allowed). */
function onlyChunked(te: string | string[]): boolean {
  const v = Array.isArray(te) ? te.join(',') : te;
  return v.trim().toLowerCase() === 'chunked';
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
