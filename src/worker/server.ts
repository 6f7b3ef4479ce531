import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';

/**
 * The worker's listener: handler routes (the hot path) go straight to their own function; every
 * other path goes to the hono app. Header and body timeouts stop slow-drip clients.
 *
 * On plain HTTP the hot path has a fast lane: the connection is read here, and a request that is
 * exactly `POST <handler route> HTTP/1.1` with a Content-Length body (no Transfer-Encoding, no
 * Expect, no Upgrade, strictly well-formed) goes to the route's `fast` entry with its whole body and
 * a `ClientReply` that writes the answer in one write. Anything else, from the first byte of that
 * request on, is handed to node:http with the bytes already read, and that connection stays there.
 * On a small VM that takes a third off the worker's CPU per request (docs/performance.md: the
 * IncomingMessage/ServerResponse streams and their per-request objects and GC are what it saves).
 */
export interface ListenOptions {
  host: string;
  port: number;
  tls?: { certPath: string; keyPath: string };
  /** ms to receive all headers (default 10 s). */
  headersTimeoutMs?: number;
  /** ms to receive the whole request, body included (default 60 s). */
  requestTimeoutMs?: number;
  /** Serve handler routes on the fast lane (plain HTTP only; default true). */
  fastLane?: boolean;
}

/** Header values of an answer, as node:http takes them. */
export type OutgoingHeaders = Record<string, string | number | string[]>;

/**
 * The answer side of one request, whoever read it (the fast lane or node:http). An answer is either
 * whole (`send`) or streamed (`start`, `write`..., `end`); after either ends, the reply is done.
 */
export interface ClientReply {
  /** An answer has started (its headers are sent or queued). */
  readonly headersSent: boolean;
  /** The client's connection is gone (or was cut). */
  readonly destroyed: boolean;
  /** A whole answer in one write (content-length set here); `done` runs once it is written. */
  send(status: number, headers: OutgoingHeaders, body?: string | Buffer, done?: () => void): void;
  /** Start a streamed answer (chunked unless `headers` carry content-length); `flush` sends the headers now. */
  start(status: number, headers: OutgoingHeaders, flush: boolean): void;
  /** A piece of a streamed answer; false when the client's socket is full (wait for `onDrain`). */
  write(chunk: Buffer): boolean;
  /** `cb` once, when the client's socket has room again. */
  onDrain(cb: () => void): void;
  /** End a streamed answer; `done` runs once it is written. */
  end(done?: () => void): void;
  /** Cut the client off. */
  destroy(): void;
  /** `cb` when the client's connection closes (the caller ignores it once the answer ended). */
  onClose(cb: () => void): void;
}

/** A handler route's entry for requests the fast lane read: the whole body and the reply. */
export type FastRouteFn = (body: Buffer, reply: ClientReply) => void;

/**
 * A hot-path route: the node:http function, and optionally the fast lane's entry with the largest
 * body it takes (bigger bodies go through node:http, which streams them against the route's limit).
 */
export type RouteFn = ((req: IncomingMessage, res: ServerResponse) => void) & { fast?: FastRouteFn; maxBodyBytes?: number };

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/** Fast-lane routes of each listener made by createListener (read by `listen`). */
const FAST_ROUTES = new WeakMap<RequestListener, Map<string, RouteFn>>();

/** One request listener: POSTs to a handler route go to its RouteFn, everything else to hono. */
export function createListener(routes: Map<string, RouteFn>, app: Hono): RequestListener {
  const honoListener = getRequestListener(app.fetch);
  const listener: RequestListener = (req, res) => {
    if (req.method === 'POST') {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const fn = routes.get(q === -1 ? url : url.slice(0, q));
      if (fn) return fn(req, res);
    }
    void honoListener(req, res);
  };
  const fast = new Map<string, RouteFn>();
  routes.forEach((fn, path) => {
    if (fn.fast) fast.set(path, fn);
  });
  if (fast.size > 0) FAST_ROUTES.set(listener, fast);
  return listener;
}

/** The fast lane of each listening server (closed by `closeServer`). */
const LANES = new WeakMap<Server, FastLane>();

/**
 * Listen on `opts.host:opts.port` (0 = ephemeral). Resolves once listening; later server errors and
 * malformed requests never crash the process (a malformed request gets a JSON 400/408/431).
 */
export async function listen(listener: RequestListener, opts: ListenOptions): Promise<{ server: Server; port: number }> {
  const headersTimeout = opts.headersTimeoutMs ?? 10_000;
  const requestTimeout = opts.requestTimeoutMs ?? 60_000;
  const checkEveryMs = Math.max(100, Math.min(1000, headersTimeout / 2, requestTimeout / 2));
  const serverOpts = {
    headersTimeout,
    requestTimeout,
    // node checks both timeouts only this often (30 s by default): without it a slow-drip client
    // holds a connection up to 30 s past either timeout.
    connectionsCheckingInterval: checkEveryMs,
    keepAliveTimeout: KEEP_ALIVE_MS,
    noDelay: true,
  };
  const server: Server = opts.tls
    ? (createHttpsServer({ ...serverOpts, cert: readFileSync(opts.tls.certPath), key: readFileSync(opts.tls.keyPath) }, listener) as unknown as Server)
    : createHttpServer(serverOpts, listener);
  const fastRoutes = opts.tls || opts.fastLane === false ? undefined : FAST_ROUTES.get(listener);
  if (fastRoutes) LANES.set(server, new FastLane(server, fastRoutes, { headersTimeout, requestTimeout, checkEveryMs }));
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  }).catch((err: unknown) => {
    LANES.get(server)?.close();
    throw err;
  });
  // Errors after start (EMFILE, a client's bad TLS hello) must not crash the process.
  server.on('error', () => undefined);
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    socket.end(clientErrorText(err.code));
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** The JSON answer to a request node:http could not parse or did not receive in time. */
function clientErrorAnswer(code: string | undefined): [string, { error: string; field: string }] {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ['408 Request Timeout', { error: 'the request was not received in time', field: 'request' }];
  if (code === 'HPE_HEADER_OVERFLOW') return ['431 Request Header Fields Too Large', { error: 'request headers too large', field: 'headers' }];
  return ['400 Bad Request', { error: `malformed HTTP request${code ? ` (${code})` : ''}`, field: 'request' }];
}

/** The whole HTTP text of a `clientErrorAnswer` (connection closed after it). */
function clientErrorText(code: string | undefined): string {
  const [status, body] = clientErrorAnswer(code);
  const text = JSON.stringify(body);
  return `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`;
}

/** Stop accepting, close idle connections now and every connection after `forceAfterMs`. */
export function closeServer(server: Server, forceAfterMs = 1000): Promise<void> {
  const lane = LANES.get(server);
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections?.();
    lane?.close();
    const t = setTimeout(() => {
      server.closeAllConnections?.();
      lane?.destroyAll();
    }, forceAfterMs);
    t.unref();
  });
}

// ---------------------------------------------------------------------------------------------
// The fast lane.

const KEEP_ALIVE_MS = 65_000;
/** node:http's default limit on a request's head (larger heads go there for their 431). */
const MAX_HEAD_BYTES = 16 * 1024;
/** Larger bodies go through node:http (streamed against the route's limit, 413 past it). */
const FAST_BODY_LIMIT = 1024 * 1024;
/** Bytes a connection may buffer (pipelined requests) while its current request is answered. */
const MAX_BUFFERED = MAX_HEAD_BYTES + FAST_BODY_LIMIT;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const POST_ = Buffer.from('POST ', 'latin1');
const KEEP_ALIVE_LINES = `connection: keep-alive\r\nkeep-alive: timeout=${KEEP_ALIVE_MS / 1000}\r\n`;
const CLOSE_LINE = 'connection: close\r\n';
/** Headers an answer's framing owns: never copied from the caller's headers. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive']);

/** RFC 9110 token characters (header names). */
const TOKEN = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TOKEN[c.charCodeAt(0)] = 1;

const statusLines = new Map<number, string>();
function statusLine(status: number): string {
  let line = statusLines.get(status);
  if (line === undefined) {
    line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    if (statusLines.size < 128) statusLines.set(status, line);
  }
  return line;
}

let dateLine = '';
let dateUntil = 0;
/** The `date` header line, rebuilt at most once a second (what node:http sends). */
function currentDateLine(): string {
  const now = Date.now();
  if (now >= dateUntil) {
    dateLine = `date: ${new Date(now).toUTCString()}\r\n`;
    dateUntil = now - (now % 1000) + 1000;
  }
  return dateLine;
}

/** Header lines for `headers`, minus the framing ones; a `date` line unless the caller gave one. */
function headerLines(headers: OutgoingHeaders): string {
  let out = '';
  let hasDate = false;
  for (const name in headers) {
    const lower = name.toLowerCase();
    if (FRAMING.has(lower)) continue;
    if (lower === 'date') hasDate = true;
    const v = headers[name]!;
    if (Array.isArray(v)) for (const one of v) out += `${name}: ${one}\r\n`;
    else out += `${name}: ${v}\r\n`;
  }
  return hasDate ? out : out + currentDateLine();
}

/** What a well-formed fast-lane request head says; null when the request must go to node:http. */
interface FastHead {
  route: RouteFn;
  contentLength: number;
  /** The client asked to close the connection after this request. */
  close: boolean;
}

/** Token check of header name characters [start, end). */
function isToken(s: string, start: number, end: number): boolean {
  if (end <= start) return false;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TOKEN[c] !== 1) return false;
  }
  return true;
}

/** Field value characters: visible ASCII, space, tab, obs-text (as llhttp accepts); no CR, LF, NUL, DEL. */
function isFieldValue(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return false;
  }
  return true;
}

/**
 * Parse a request head (`text` = everything before the blank line). Strict: anything that is not a
 * plain `POST <fast route> HTTP/1.1` with at most one digits-only Content-Length and a Host gives
 * null, so node:http (llhttp) judges it instead.
 */
function parseFastHead(text: string, routes: Map<string, RouteFn>): FastHead | null {
  let lineEnd = text.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = text.length;
  const route = requestLineRoute(text, lineEnd, routes);
  if (!route) return null;
  let contentLength = -1;
  let close = false;
  let host = false;
  let pos = lineEnd + 2;
  while (pos < text.length) {
    let end = text.indexOf('\r\n', pos);
    if (end < 0) end = text.length;
    const colon = text.indexOf(':', pos);
    if (colon < 0 || colon > end || !isToken(text, pos, colon)) return null;
    let vs = colon + 1;
    let ve = end;
    while (vs < ve && (text.charCodeAt(vs) === 0x20 || text.charCodeAt(vs) === 0x09)) vs++;
    while (ve > vs && (text.charCodeAt(ve - 1) === 0x20 || text.charCodeAt(ve - 1) === 0x09)) ve--;
    if (!isFieldValue(text, vs, ve)) return null;
    const nameLen = colon - pos;
    // Only the headers that change how the request is framed or answered are looked at.
    if (nameLen === 14 || nameLen === 4 || nameLen === 10 || nameLen === 17 || nameLen === 6 || nameLen === 7) {
      const name = text.slice(pos, colon).toLowerCase();
      if (name === 'content-length') {
        if (contentLength >= 0 || ve === vs || ve - vs > 15) return null;
        for (let i = vs; i < ve; i++) {
          const c = text.charCodeAt(i);
          if (c < 0x30 || c > 0x39) return null;
        }
        contentLength = Number(text.slice(vs, ve));
      } else if (name === 'host') {
        if (host) return null;
        host = true;
      } else if (name === 'connection') {
        const v = text.slice(vs, ve).toLowerCase();
        if (v === 'close') close = true;
        else if (v !== 'keep-alive') return null; // upgrade, lists of options: node:http's business
      } else if (name === 'transfer-encoding' || name === 'expect' || name === 'upgrade') {
        return null;
      }
    }
    pos = end + 2;
  }
  if (!host) return null; // node:http answers 400 to an HTTP/1.1 request without Host
  return { route, contentLength: contentLength < 0 ? 0 : contentLength, close };
}

/** The fast route a request line `POST <path> HTTP/1.1` names, or null. */
function requestLineRoute(text: string, lineEnd: number, routes: Map<string, RouteFn>): RouteFn | null {
  if (!text.startsWith('POST /') || !text.startsWith(' HTTP/1.1', lineEnd - 9)) return null;
  const targetEnd = lineEnd - 9;
  let pathEnd = targetEnd;
  for (let i = 5; i < targetEnd; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return null;
    if (c === 0x3f && pathEnd === targetEnd) pathEnd = i; // '?': the query does not choose the route
  }
  return routes.get(text.slice(5, pathEnd)) ?? null;
}

/** The connections a fast lane reads itself, their timeouts, and the hand-over to node:http. */
class FastLane {
  readonly conns = new Set<FastConnection>();
  closing = false;
  private readonly httpConnection: (socket: Socket) => void;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    readonly server: Server,
    readonly routes: Map<string, RouteFn>,
    readonly opts: { headersTimeout: number; requestTimeout: number; checkEveryMs: number },
  ) {
    // node:http's own connection listener: connections the fast lane gives up go there.
    this.httpConnection = server.listeners('connection')[0] as (socket: Socket) => void;
    server.removeListener('connection', this.httpConnection);
    server.on('connection', (socket: Socket) => {
      if (this.closing) return socket.destroy();
      this.conns.add(new FastConnection(this, socket));
    });
    // One timer for every connection's header, request and keep-alive timeouts.
    this.sweeper = setInterval(() => this.sweep(), opts.checkEveryMs);
    this.sweeper.unref();
  }

  /** Give `socket` to node:http with `pending` (unread bytes of the next request) put back first. */
  handOff(conn: FastConnection, pending: Buffer | null): void {
    this.conns.delete(conn);
    const socket = conn.socket;
    if (pending && pending.length > 0) socket.unshift(pending);
    this.httpConnection.call(this.server, socket);
    socket.resume();
  }

  private sweep(): void {
    const now = performance.now();
    const { headersTimeout, requestTimeout } = this.opts;
    for (const c of this.conns) {
      if (c.reply) continue; // answering: the request is in
      if (c.partialSince > 0) {
        const limit = c.headDone ? requestTimeout : Math.min(headersTimeout, requestTimeout);
        if (now - c.partialSince > limit) c.timedOut();
      } else if (now - c.lastActive > KEEP_ALIVE_MS) {
        c.socket.destroy();
      }
    }
  }

  /** Stop: idle connections are closed now, busy ones after their answer. */
  close(): void {
    this.closing = true;
    clearInterval(this.sweeper);
    for (const c of this.conns) if (!c.reply) c.socket.destroy();
  }

  destroyAll(): void {
    for (const c of this.conns) c.socket.destroy();
  }
}

/**
 * One client connection read by the fast lane. Requests are answered one at a time, in order:
 * bytes of a pipelined next request wait in `pending` until the current answer is written.
 */
class FastConnection {
  /** Bytes read and not yet used: the start of the next request. */
  pending: Buffer | null = null;
  /** When the first byte of an incomplete request arrived (0: none). */
  partialSince = 0;
  /** The incomplete request's head is complete (only its body is missing). */
  headDone = false;
  /** While a body is missing: the bytes the request needs in all, and what has come so far. */
  private awaiting = 0;
  private parts: Buffer[] = [];
  private partsLength = 0;
  /** The answer in progress. */
  reply: FastReply | null = null;
  lastActive = performance.now();
  private clientEnded = false;
  private parsing = false;
  private gone = false;
  private readonly onData = (chunk: Buffer): void => this.received(chunk);
  private readonly onEnd = (): void => this.ended();
  private readonly onClose = (): void => this.closed();

  constructor(
    private readonly lane: FastLane,
    readonly socket: Socket,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('error', noop);
  }

  private received(chunk: Buffer): void {
    if (this.gone) return;
    this.lastActive = performance.now();
    if (this.awaiting > 0) {
      // The rest of a body whose head is parsed: collect, join once when it is all here.
      this.parts.push(chunk);
      this.partsLength += chunk.length;
      if (this.partsLength < this.awaiting) return;
      this.pending = Buffer.concat(this.parts, this.partsLength);
      this.parts = [];
      this.awaiting = 0;
      return this.parse();
    }
    if (this.pending === null) {
      this.pending = chunk;
      if (this.partialSince === 0) this.partialSince = this.lastActive;
    } else {
      this.pending = Buffer.concat([this.pending, chunk]);
    }
    if (this.reply) {
      // A pipelined request while answering: keep it, but not without bound.
      if (this.pending.length > MAX_BUFFERED) this.socket.pause();
      return;
    }
    this.parse();
  }

  /** Serve every complete request in `pending`, in order; hand over on the first that is not ours. */
  private parse(): void {
    if (this.parsing) return;
    this.parsing = true;
    try {
      while (this.reply === null && this.pending !== null && !this.gone) {
        const buf = this.pending;
        if (buf.length >= 5 ? buf.compare(POST_, 0, 5, 0, 5) !== 0 : POST_.compare(buf, 0, buf.length, 0, buf.length) !== 0) return this.giveUp();
        const headEnd = buf.indexOf(CRLFCRLF);
        if (headEnd < 0) {
          if (buf.length > MAX_HEAD_BYTES) return this.giveUp();
          // A complete request line that is not ours goes to node:http at once (it may answer 400 now).
          const lineEnd = buf.indexOf(0x0a);
          if (lineEnd >= 0 && !requestLineRoute(buf.toString('latin1', 0, lineEnd), lineEnd - 1, this.lane.routes)) return this.giveUp();
          return;
        }
        if (headEnd > MAX_HEAD_BYTES) return this.giveUp();
        const head = parseFastHead(buf.toString('latin1', 0, headEnd), this.lane.routes);
        if (!head || head.contentLength > Math.min(FAST_BODY_LIMIT, head.route.maxBodyBytes ?? FAST_BODY_LIMIT)) return this.giveUp();
        const total = headEnd + 4 + head.contentLength;
        if (buf.length < total) {
          this.headDone = true;
          this.awaiting = total;
          this.parts = [buf];
          this.partsLength = buf.length;
          this.pending = null;
          return;
        }
        const body = buf.subarray(headEnd + 4, total);
        this.pending = buf.length > total ? buf.subarray(total) : null;
        this.headDone = false;
        this.partialSince = this.pending ? performance.now() : 0;
        this.serve(head, body);
      }
    } finally {
      this.parsing = false;
    }
  }

  private serve(head: FastHead, body: Buffer): void {
    const reply = new FastReply(this, head.close || this.lane.closing);
    this.reply = reply;
    try {
      head.route.fast!(body, reply);
    } catch {
      // The route catches its own errors; this is the last line of defence.
      if (!reply.headersSent) reply.send(500, { 'content-type': 'application/json' }, '{"error":"internal error in the worker","field":"worker"}');
      else this.socket.destroy();
    }
  }

  /** The current answer was written in full. */
  answered(reply: FastReply, close: boolean): void {
    if (this.reply !== reply) return;
    this.reply = null;
    this.lastActive = performance.now();
    if (close || this.lane.closing || (this.clientEnded && this.pending === null)) {
      this.socket.end();
      this.pending = null;
      return;
    }
    if (this.socket.isPaused()) this.socket.resume();
    if (this.pending !== null) this.parse();
  }

  private giveUp(): void {
    const pending = this.pending;
    this.pending = null;
    this.gone = true;
    // A half-closed client's bytes cannot be put back (the stream has ended): close instead.
    if (this.clientEnded) return void this.socket.end();
    const s = this.socket;
    s.removeListener('data', this.onData);
    s.removeListener('end', this.onEnd);
    s.removeListener('close', this.onClose);
    s.removeListener('error', noop);
    this.lane.handOff(this, pending);
  }

  /** The client did not send its request in time: node:http's 408, then close. */
  timedOut(): void {
    this.gone = true;
    this.pending = null;
    this.parts = [];
    this.awaiting = 0;
    this.partialSince = 0;
    this.socket.end(clientErrorText('ERR_HTTP_REQUEST_TIMEOUT'));
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** The client closed its side: as node:http does, that ends the request in progress (client gone). */
  private ended(): void {
    this.clientEnded = true;
    const reply = this.reply;
    this.reply = null;
    this.pending = null;
    this.gone = true;
    reply?.clientGone();
    this.socket.end();
  }

  private closed(): void {
    this.gone = true;
    this.lane.conns.delete(this);
    const reply = this.reply;
    this.reply = null;
    reply?.clientGone();
  }
}

function noop(): void {}

/** The fast lane's `ClientReply`: status line, headers and body built here, written in one write. */
class FastReply implements ClientReply {
  headersSent = false;
  private chunked = false;
  /** Headers not yet written (a streamed answer started without `flush`). */
  private head: string | null = null;
  private finished = false;
  private corked = false;
  private uncork: (() => void) | null = null;
  private closeAfter: boolean;
  private closeCb: (() => void) | null = null;

  constructor(
    private readonly conn: FastConnection,
    close: boolean,
  ) {
    this.closeAfter = close;
  }

  get destroyed(): boolean {
    return this.conn.socket.destroyed;
  }

  private headText(status: number, headers: OutgoingHeaders, framing: string): string {
    if (headers.connection === 'close' || headers.Connection === 'close') this.closeAfter = true;
    return statusLine(status) + headerLines(headers) + framing + (this.closeAfter ? CLOSE_LINE : KEEP_ALIVE_LINES) + '\r\n';
  }

  send(status: number, headers: OutgoingHeaders, body?: string | Buffer, done?: () => void): void {
    if (this.headersSent || this.destroyed) return;
    this.headersSent = true;
    const bodyLength = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    const head = this.headText(status, headers, `content-length: ${bodyLength}\r\n`);
    // Head (latin1, as node:http writes headers) and body in one buffer: one write, one syscall.
    const headLength = head.length;
    const out = Buffer.allocUnsafe(headLength + bodyLength);
    out.write(head, 0, 'latin1');
    if (typeof body === 'string') out.write(body, headLength, 'utf8');
    else if (body !== undefined) body.copy(out, headLength);
    this.finish(out, done);
  }

  start(status: number, headers: OutgoingHeaders, flush: boolean): void {
    if (this.headersSent || this.destroyed) return;
    this.headersSent = true;
    const length = headers['content-length'];
    this.chunked = length === undefined;
    this.head = this.headText(status, headers, this.chunked ? 'transfer-encoding: chunked\r\n' : `content-length: ${length}\r\n`);
    // "Now" means before this turn of the event loop ends: the first piece usually arrives in the
    // same read as the model's headers and then goes out with them in one write.
    if (flush) queueMicrotask(() => this.flushHead());
  }

  private flushHead(): void {
    if (this.head === null || this.finished || this.destroyed) return;
    this.conn.socket.write(this.head, 'latin1');
    this.head = null;
  }

  write(chunk: Buffer): boolean {
    if (this.finished || this.destroyed) return true;
    const socket = this.conn.socket;
    this.coalesce(socket);
    const head = this.head;
    this.head = null;
    if (!this.chunked) {
      if (head !== null) socket.write(head, 'latin1');
      return socket.write(chunk);
    }
    // One buffer per piece: [head] size CRLF data CRLF.
    const size = chunk.length.toString(16);
    const headLength = head === null ? 0 : head.length;
    const out = Buffer.allocUnsafe(headLength + size.length + 2 + chunk.length + 2);
    let at = 0;
    if (head !== null) at += out.write(head, 0, 'latin1');
    at += out.write(size, at, 'latin1');
    out[at++] = 0x0d;
    out[at++] = 0x0a;
    at += chunk.copy(out, at);
    out[at++] = 0x0d;
    out[at] = 0x0a;
    return socket.write(out);
  }

  /**
   * Pieces written in one turn of the event loop (what one read from the model brought: several
   * events, or the last ones and the end) leave in one write: the socket is corked until the
   * microtasks of this turn run.
   */
  private coalesce(socket: Socket): void {
    if (this.corked) return;
    this.corked = true;
    socket.cork();
    queueMicrotask((this.uncork ??= () => {
      this.corked = false;
      socket.uncork();
    }));
  }

  onDrain(cb: () => void): void {
    this.conn.socket.once('drain', cb);
  }

  end(done?: () => void): void {
    if (this.finished || this.destroyed) return;
    const head = this.head ?? '';
    this.head = null;
    this.finish(Buffer.from(this.chunked ? head + '0\r\n\r\n' : head, 'latin1'), done);
  }

  private finish(out: Buffer, done?: () => void): void {
    this.finished = true;
    const socket = this.conn.socket;
    // A write that fails (the client left meanwhile) counts as the client closing, as with node:http.
    if (out.length > 0) socket.write(out, done ? (err) => void (err ? this.closeCb?.() : done()) : undefined);
    else if (done) queueMicrotask(done);
    this.conn.answered(this, this.closeAfter);
  }

  destroy(): void {
    this.conn.socket.destroy();
  }

  onClose(cb: () => void): void {
    this.closeCb = cb;
  }

  /** The connection closed before or while this answer was written. */
  clientGone(): void {
    if (!this.finished) this.closeCb?.();
  }
}

/** A `ClientReply` over node:http's ServerResponse (TLS, and connections handed to node:http). */
export function httpReply(res: ServerResponse): ClientReply {
  return {
    get headersSent() {
      return res.headersSent;
    },
    get destroyed() {
      return res.destroyed;
    },
    send(status, headers, body, done) {
      if (res.headersSent || res.destroyed) return;
      const length = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
      res.writeHead(status, { ...headers, 'content-length': length });
      if (done) res.end(body, done);
      else res.end(body);
    },
    start(status, headers, flush) {
      res.writeHead(status, headers);
      if (flush) res.flushHeaders();
    },
    write: (chunk) => res.write(chunk),
    onDrain: (cb) => void res.once('drain', cb),
    end(done) {
      if (done) res.end(done);
      else res.end();
    },
    destroy: () => void res.destroy(),
    onClose: (cb) => void res.on('close', cb),
  };
}
