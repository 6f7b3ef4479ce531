import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { bodiless, contentLengthOf, forEachHeader, headerLines, statusLine, type OutgoingHeaders } from './head.js';
import { probeHalfClosed } from './half-close.js';
import type { ClientReply } from './reply.js';

/**
 * The fast lane: the server side of HTTP/1.1 for the hot path, over plain TCP or TLS (the same code
 * reads a TLSSocket's decrypted bytes: TLS ends in OpenSSL before this file). A connection is read
 * here, and a request that is exactly `POST <handler route> HTTP/1.1` with a Content-Length body
 * (no Transfer-Encoding, no Expect, no Upgrade, strictly well-formed by head.ts) goes to the
 * route's `fast` entry with its whole body and a `ClientReply` that writes the answer in one write.
 * Anything else, from the first byte of that request on, is handed to node:http with the bytes
 * already read, and that connection stays there. On a small VM that takes a third off the worker's
 * CPU per request (docs/performance.md).
 */

/** A handler route's entry for requests the fast lane read: the whole body and the reply. */
export type FastRouteFn = (body: Buffer, reply: ClientReply) => void;

/**
 * A hot-path route: the node:http function, and optionally the fast lane's entry with the largest
 * body it takes (bigger bodies go through node:http, which streams them against the route's limit).
 */
export type RouteFn = ((req: IncomingMessage, res: ServerResponse) => void) & { fast?: FastRouteFn; maxBodyBytes?: number };

export interface FastLaneTimeouts {
  headersTimeout: number;
  requestTimeout: number;
  checkEveryMs: number;
}

/** The JSON answer to a request node:http could not parse or did not receive in time. */
function clientErrorAnswer(code: string | undefined): [string, { error: string; field: string }] {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ['408 Request Timeout', { error: 'the request was not received in time', field: 'request' }];
  if (code === 'HPE_HEADER_OVERFLOW') return ['431 Request Header Fields Too Large', { error: 'request headers too large', field: 'headers' }];
  return ['400 Bad Request', { error: `malformed HTTP request${code ? ` (${code})` : ''}`, field: 'request' }];
}

/** The whole HTTP text of a `clientErrorAnswer` (connection closed after it). */
export function clientErrorText(code: string | undefined): string {
  const [status, body] = clientErrorAnswer(code);
  const text = JSON.stringify(body);
  return `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`;
}

export const KEEP_ALIVE_MS = 65_000;
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
/** What a well-formed fast-lane request head says; null when the request must go to node:http. */
interface FastHead {
  route: RouteFn;
  contentLength: number;
  /** The client asked to close the connection after this request. */
  close: boolean;
}

/**
 * Parse a request head (`text` = everything before the blank line). Strict: anything that is not a
 * plain `POST <fast route> HTTP/1.1` with at most one digits-only Content-Length and a Host gives
 * null, so node:http (llhttp) judges it instead.
 */
export function parseFastHead(text: string, routes: Map<string, RouteFn>): FastHead | null {
  let lineEnd = text.indexOf('\r\n');
  if (lineEnd < 0) lineEnd = text.length;
  const route = requestLineRoute(text, lineEnd, routes);
  if (!route) return null;
  let contentLength = -1;
  let close = false;
  let host = false;
  const ok = forEachHeader(text, lineEnd + 2, (t, start, colon, vs, ve, end) => {
    const nameLen = colon - start;
    // Only the headers that change how the request is framed or answered are looked at.
    if (nameLen !== 14 && nameLen !== 4 && nameLen !== 10 && nameLen !== 17 && nameLen !== 6 && nameLen !== 7) return true;
    const name = t.slice(start, colon).toLowerCase();
    if (name === 'content-length') {
      // llhttp refuses whitespace after the digits: so does the fast lane (node:http answers the 400).
      if (contentLength >= 0 || ve !== end) return false;
      contentLength = contentLengthOf(t, vs, ve);
      return contentLength >= 0;
    }
    if (name === 'host') {
      if (host) return false;
      host = true;
      return true;
    }
    if (name === 'connection') {
      const v = t.slice(vs, ve).toLowerCase();
      if (v === 'close') close = true;
      else if (v !== 'keep-alive') return false; // upgrade, lists of options: node:http's business
      return true;
    }
    return name !== 'transfer-encoding' && name !== 'expect' && name !== 'upgrade';
  });
  if (!ok || !host) return null; // node:http answers 400 to an HTTP/1.1 request without Host
  return { route, contentLength: Math.max(contentLength, 0), close };
}

/**
 * The start of a head whose end has not come yet: false when what is there already breaks the
 * grammar (a bare CR or LF, a bad header line) or the request line is not one of ours.
 */
function partialHeadOk(text: string, routes: Map<string, RouteFn>): boolean {
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) if (text.charCodeAt(i - 1) !== 0x0d) return false;
  for (let i = text.indexOf('\r'); i >= 0; i = text.indexOf('\r', i + 1)) if (i + 1 < text.length && text.charCodeAt(i + 1) !== 0x0a) return false;
  const lineEnd = text.indexOf('\r\n');
  if (!requestLineRoute(text, lineEnd, routes)) return false;
  const complete = text.lastIndexOf('\r\n');
  return complete <= lineEnd || forEachHeader(text.slice(0, complete), lineEnd + 2, () => true);
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
export class FastLane {
  readonly conns = new Set<FastConnection>();
  closing = false;
  /** Closing by `drain`: a connection that still comes (accepted before the listener closed) is served, with close. */
  private draining = false;
  private readonly httpConnection: (socket: Socket) => void;
  private sweeper: NodeJS.Timeout;
  /** How long a connection may stay idle between requests (lowered by `drain`). */
  private keepAliveMs = KEEP_ALIVE_MS;

  /**
   * `event` is where node:http takes its connections: 'connection' on an http.Server,
   * 'secureConnection' (a TLSSocket whose handshake is done) on an https.Server.
   */
  constructor(
    readonly server: Server,
    readonly routes: Map<string, RouteFn>,
    readonly opts: { headersTimeout: number; requestTimeout: number; checkEveryMs: number },
    event: 'connection' | 'secureConnection' = 'connection',
  ) {
    // node:http's own connection listener: connections the fast lane gives up go there.
    this.httpConnection = server.listeners(event)[0] as (socket: Socket) => void;
    server.removeListener(event, this.httpConnection);
    server.on(event, (socket: Socket) => {
      if (this.closing && !this.draining) return socket.destroy();
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
      } else if (now - c.lastActive > this.keepAliveMs) {
        c.socket.destroy();
      }
    }
  }

  /** Stop: idle connections are closed now, busy ones after their answer. */
  close(): void {
    this.closing = true;
    this.draining = false;
    clearInterval(this.sweeper);
    for (const c of this.conns) if (!c.reply) c.socket.destroy();
  }

  /**
   * A hand-over: every answer from now on closes its connection, and a connection idle between two
   * requests for `idleMs` ends (as node:http's keepAliveTimeout lowered to it does): not at once,
   * since a client may be sending its next request on it right now, which is answered (with close).
   */
  drain(idleMs = 50): void {
    this.closing = true;
    this.draining = true;
    this.keepAliveMs = idleMs;
    clearInterval(this.sweeper);
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, idleMs / 2));
    this.sweeper.unref();
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
  // Nothing a client sends may throw out of a socket callback: a throw cuts this connection only.
  private readonly onData = (chunk: Buffer): void => {
    try {
      this.received(chunk);
    } catch {
      this.socket.destroy();
    }
  };
  private readonly onEnd = (): void => this.guarded(() => this.ended());
  private readonly onClose = (): void => this.guarded(() => this.closed());

  constructor(
    private readonly lane: FastLane,
    readonly socket: Socket,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('error', noop);
  }

  private guarded(fn: () => void): void {
    try {
      fn();
    } catch {
      this.socket.destroy();
    }
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
          // A head that is already broken, or a complete request line that is not ours, goes to
          // node:http at once: it answers its 400 now, not when the client gives up.
          if (buf.indexOf(0x0a) >= 0 && !partialHeadOk(buf.toString('latin1'), this.lane.routes)) return this.giveUp();
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
    // A half-closed client: what is left after the requests it sent whole can never complete.
    if (this.clientEnded && this.reply === null && !this.gone) this.endInput();
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

  /**
   * The client closed its sending side (half-close). A request that came whole is still answered
   * (the socket stays writable: the server allows half-open connections, as node:http does with
   * httpAllowHalfOpen), then the connection closes; a request cut short gets node:http's 400.
   */
  private ended(): void {
    this.clientEnded = true;
    const reply = this.reply;
    if (reply) {
      // answered() closes once the answer (and complete pipelined ones) are out; meanwhile, find
      // out whether the client is still there to read it (half-close.ts).
      probeHalfClosed(this.socket, () => this.reply === reply && !reply.headersSent);
      return;
    }
    this.endInput();
  }

  /** No more bytes will come: close, with a 400 when part of a request was read. */
  private endInput(): void {
    const cut = this.pending !== null || this.awaiting > 0;
    this.pending = null;
    this.parts = [];
    this.awaiting = 0;
    this.gone = true;
    if (cut) {
      this.socket.end(clientErrorText('HPE_INVALID_EOF_STATE'));
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else this.socket.end();
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
    const noBody = bodiless(status);
    const bodyLength = body === undefined || noBody ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    // Built (and checked) before anything is marked sent: a header it refuses leaves the reply unused.
    const head = this.headText(status, headers, noBody ? '' : `content-length: ${bodyLength}\r\n`);
    this.headersSent = true;
    // Head (latin1, as node:http writes headers) and body in one buffer: one write, one syscall.
    const headLength = head.length;
    const out = Buffer.allocUnsafe(headLength + bodyLength);
    out.write(head, 0, 'latin1');
    if (bodyLength > 0) {
      if (typeof body === 'string') out.write(body, headLength, 'utf8');
      else body!.copy(out, headLength);
    }
    this.finish(out, done);
  }

  start(status: number, headers: OutgoingHeaders, flush: boolean, length?: number): void {
    if (this.headersSent || this.destroyed) return;
    const noBody = bodiless(status);
    const chunked = length === undefined && !noBody;
    this.head = this.headText(status, headers, noBody ? '' : chunked ? 'transfer-encoding: chunked\r\n' : `content-length: ${length}\r\n`);
    this.chunked = chunked;
    this.headersSent = true;
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
    this.uncork ??= () => {
      this.corked = false;
      socket.uncork();
    };
    queueMicrotask(this.uncork);
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
