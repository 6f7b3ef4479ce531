import { connect, type Socket } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { errors as undiciErrors, type Dispatcher } from 'undici';
import { contentLengthOf, forEachHeader, isFieldValue } from './head.js';

/**
 * The request path's HTTP/1.1 client to the model server (plain http on loopback or a LAN):
 * keep-alive connections, one request at a time on each (no pipelining: a long generation must never
 * hold up a short one behind it), as many connections as requests in flight.
 *
 * It speaks undici's dispatch API (`dispatch(opts, handler)`, handler `onRequestStart` /
 * `onResponseStart` / `onResponseData` / `onResponseEnd` / `onResponseError`, the controller's
 * `abort` / `pause` / `resume`), so the request path runs on it or on an undici Pool alike; it does
 * less per request than undici (whose JavaScript takes ~13 µs a request, docs/performance.md): the
 * request goes out in one write, the answer is parsed here (status line, headers, Content-Length,
 * chunked or until-close bodies, 100 and 103 skipped), and every timeout is checked by one shared
 * timer. The head is read with the worker's one head grammar (head.ts, llhttp's strict rules): a
 * control character in a header value, a status under 100 or an unasked-for 1xx, Transfer-Encoding
 * with Content-Length, or differing Content-Lengths make the answer a BadAnswerError.
 *
 * Guarantees: for every dispatch, `onRequestStart` first, then either `onResponseStart` → any
 * `onResponseData` → `onResponseEnd`, or `onResponseError` once (connection failed or closed early,
 * malformed answer, or a timeout: undici's HeadersTimeoutError / BodyTimeoutError), unless the
 * caller aborted, after which nothing more is called. A connection is reused only after a whole,
 * well-framed answer that did not ask to close it; one idle for more than `revalidateAfterMs` is
 * given one event-loop turn to show a close the server sent meanwhile before it is written to.
 */
export interface ModelClientOptions {
  /** Default headers timeout (ms to the answer's head) and body timeout (ms between body bytes); 0 = none. */
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  /** Idle connections are closed after this (default 4 s, less when the server's Keep-Alive says so). */
  idleMs?: number;
  /** A connection idle longer than this is checked for a server-side close before reuse (default 1 s). */
  revalidateAfterMs?: number;
  /**
   * The whole answer, trailers included, must be in within this many ms of the request (0 = no
   * limit; default 0). The body timeout alone lets a model that trickles a byte now and then (a
   * trailer line every few seconds, forever) hold the request and its connection for ever.
   */
  answerTimeoutMs?: number;
}

type DispatchOptions = Pick<Dispatcher.DispatchOptions, 'path' | 'method' | 'headers' | 'body' | 'headersTimeout' | 'bodyTimeout'>;

/** How long a new connection may take to be accepted (undici's default connect timeout). */
const CONNECT_TIMEOUT_MS = 10_000;
/** The largest response head accepted (undici's default maxHeaderSize); trailers get as much. */
const MAX_HEAD_BYTES = 16 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

/** The model's answer breaks HTTP/1.1 (the worker answers 502; the connection is dropped). */
export class BadAnswerError extends Error {
  readonly code = 'NW_BAD_ANSWER';
}

export class ModelClient {
  private readonly host: string;
  private readonly port: number;
  private readonly hostHeader: string;
  private readonly idle: ModelConnection[] = [];
  private readonly active = new Set<ModelConnection>();
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;
  readonly opts: Required<ModelClientOptions>;

  constructor(origin: string, opts: ModelClientOptions = {}) {
    const u = new URL(origin);
    if (u.protocol !== 'http:') throw new Error(`ModelClient speaks plain http, not ${u.protocol} (${origin})`);
    this.host = u.hostname.replace(/^\[|\]$/g, '');
    this.port = u.port ? Number(u.port) : 80;
    this.hostHeader = u.host;
    this.opts = {
      headersTimeoutMs: opts.headersTimeoutMs ?? 300_000,
      bodyTimeoutMs: opts.bodyTimeoutMs ?? 300_000,
      idleMs: opts.idleMs ?? 4000,
      revalidateAfterMs: opts.revalidateAfterMs ?? 1000,
      answerTimeoutMs: opts.answerTimeoutMs ?? 0,
    };
    // One timer for every connection's timeouts; its precision is a quarter of the shortest.
    const shortest = Math.min(...[this.opts.headersTimeoutMs, this.opts.bodyTimeoutMs, this.opts.idleMs].filter((t) => t > 0));
    this.sweeper = setInterval(() => this.sweep(), Math.max(25, Math.min(1000, shortest / 4)));
    this.sweeper.unref();
  }

  /** Connections open now (in use and idle). */
  get connections(): number {
    return this.active.size + this.idle.length;
  }

  /** Send one request; the handler hears about it as described on the class. */
  dispatch(opts: DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const call = new ModelCallState(this, opts, handler);
    handler.onRequestStart?.(call, {});
    if (call.aborted) return true;
    if (this.closed) {
      call.fail(new undiciErrors.ClientDestroyedError());
      return true;
    }
    this.assign(call, true);
    return true;
  }

  /** Put `call` on an idle connection (checked first when it idled long) or a new one. */
  assign(call: ModelCallState, mayReuse: boolean): void {
    const now = performance.now();
    while (mayReuse && this.idle.length > 0) {
      const conn = this.idle.pop()!;
      if (conn.socket.destroyed) continue;
      this.active.add(conn);
      if (now - conn.idleSince > this.opts.revalidateAfterMs) {
        // Let a FIN or RST the server sent while the connection slept arrive first.
        conn.reserve(call);
        setImmediate(() => conn.startIfAlive());
      } else {
        conn.start(call);
      }
      return;
    }
    const conn = new ModelConnection(this, connect({ host: this.host, port: this.port, noDelay: true }));
    this.active.add(conn);
    conn.start(call);
  }

  /** The request bytes: head and body in one buffer (one write). */
  encode(opts: DispatchOptions): Buffer {
    const body = opts.body as string | Buffer | null | undefined;
    const length = body == null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    let head = `${opts.method} ${opts.path} HTTP/1.1\r\nhost: ${this.hostHeader}\r\nconnection: keep-alive\r\n`;
    const h = opts.headers as Record<string, string> | null | undefined;
    if (h) for (const k in h) head += `${k}: ${h[k]}\r\n`;
    head += `content-length: ${length}\r\n\r\n`;
    const out = Buffer.allocUnsafe(head.length + length);
    const at = out.write(head, 0, 'latin1');
    if (typeof body === 'string') out.write(body, at, 'utf8');
    else if (body) body.copy(out, at);
    return out;
  }

  /** A connection finished its answer cleanly: back to the idle stack (most recent on top). */
  release(conn: ModelConnection): void {
    this.active.delete(conn);
    if (this.closed || conn.socket.destroyed) return void conn.socket.destroy();
    conn.idleSince = performance.now();
    conn.socket.unref();
    this.idle.push(conn);
  }

  /** A connection is gone. */
  forget(conn: ModelConnection): void {
    this.active.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  private sweep(): void {
    const now = performance.now();
    for (const conn of this.active) conn.checkTimeouts(now);
    // Idle connections: the oldest are at the bottom of the stack.
    while (this.idle.length > 0 && now - this.idle[0]!.idleSince > Math.min(this.opts.idleMs, this.idle[0]!.keepAliveMs)) {
      this.idle.shift()!.socket.destroy();
    }
  }

  /** Close idle connections and refuse new requests; requests in flight are cut (the worker drains first). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const conn of this.idle.splice(0)) conn.socket.destroy();
    for (const conn of [...this.active]) conn.socket.destroy();
  }
}

/** One dispatched request: its handler, timeouts, and the controller handed to the handler. */
class ModelCallState implements Dispatcher.DispatchController {
  aborted = false;
  paused = false;
  reason: Error | null = null;
  conn: ModelConnection | null = null;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  /** performance.now() by which the whole answer must be in (Infinity: no limit). */
  readonly deadline: number;

  constructor(
    readonly client: ModelClient,
    readonly opts: DispatchOptions,
    readonly handler: Dispatcher.DispatchHandler,
  ) {
    this.headersTimeoutMs = opts.headersTimeout ?? client.opts.headersTimeoutMs;
    this.bodyTimeoutMs = opts.bodyTimeout ?? client.opts.bodyTimeoutMs;
    const total = client.opts.answerTimeoutMs;
    this.deadline = total > 0 ? performance.now() + total : Number.POSITIVE_INFINITY;
  }

  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    // The model must see the request end: its connection is closed (never reused mid-answer).
    this.conn?.socket.destroy();
  }

  pause(): void {
    this.paused = true;
    this.conn?.socket.pause();
  }

  resume(): void {
    this.paused = false;
    this.conn?.socket.resume();
  }

  /** Report a failure once (nothing after an abort). */
  fail(err: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.handler.onResponseError?.(this, err);
  }
}

// biome-ignore lint/suspicious/noConstEnum: inlined to numbers in the parser; tsc compiles the whole project
const enum Body {
  None,
  Length,
  Chunked,
  UntilClose,
}

// biome-ignore lint/suspicious/noConstEnum: as Body
const enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailers,
}

/** One keep-alive connection to the model and the parser of the answers on it. */
class ModelConnection {
  /** The call whose request is on this connection. */
  call: ModelCallState | null = null;
  /** A call waiting for the revalidation turn (nothing written yet). */
  private reserved: ModelCallState | null = null;
  /** A call whose answer just completed, handed back once the bytes after it are checked. */
  private finished: ModelCallState | null = null;
  idleSince = 0;
  /** The server's Keep-Alive timeout hint minus a second (Infinity without one). */
  keepAliveMs = Infinity;
  // Parser state of the current answer.
  private head: Buffer | null = null;
  private inHead = true;
  private body = Body.None;
  private remaining = 0;
  private chunkState = Chunk.Size;
  private line = '';
  /** Bytes of trailer lines read so far (bounded like a head). */
  private trailerBytes = 0;
  private keepAlive = true;
  private headers: IncomingHttpHeaders | null = null;
  private statusMessage = '';
  /** When the request was written (headers timeout) or the last body byte came (body timeout). */
  private since = 0;

  constructor(
    private readonly client: ModelClient,
    readonly socket: Socket,
  ) {
    // Nothing the model sends may throw out of a socket callback: a throw fails the call in flight.
    socket.on('data', (chunk: Buffer) => {
      try {
        this.received(chunk);
      } catch (err) {
        this.failAfterThrow(err);
      }
    });
    socket.on('error', (err) => this.guarded(() => this.lost(err)));
    socket.on('close', () => this.guarded(() => this.lost(null)));
    socket.on('end', () => this.guarded(() => this.ended()));
  }

  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.failAfterThrow(err);
    }
  }

  /** Something threw inside a socket callback: the call in flight fails, the connection goes. */
  private failAfterThrow(err: unknown): void {
    const call = this.call ?? this.finished;
    this.call = null;
    this.finished = null;
    this.socket.destroy();
    call?.fail(err instanceof Error ? err : new Error(String(err)));
  }

  /** Hold the connection for `call` without writing yet (see ModelClient.assign). */
  reserve(call: ModelCallState): void {
    this.reserved = call;
  }

  /** After the revalidation turn: write if the connection survived, else use a new one. */
  startIfAlive(): void {
    const call = this.reserved!;
    this.reserved = null;
    const dead = this.socket.destroyed || this.socket.readableEnded;
    if (call.aborted) {
      // The caller left during the turn: nothing was written, the connection is as it was.
      return dead ? void this.socket.destroy() : this.client.release(this);
    }
    if (dead) {
      this.socket.destroy();
      return this.client.assign(call, false);
    }
    this.start(call);
  }

  start(call: ModelCallState): void {
    this.call = call;
    call.conn = this;
    this.inHead = true;
    this.head = null;
    this.body = Body.None;
    this.keepAlive = true;
    this.since = performance.now();
    this.socket.ref();
    if (call.paused) this.socket.pause();
    // While still connecting, node queues the write until the connection is up.
    this.socket.write(this.client.encode(call.opts));
  }

  checkTimeouts(now: number): void {
    const call = this.call;
    if (!call || call.aborted) return;
    if (this.socket.connecting && now - this.since > CONNECT_TIMEOUT_MS) {
      // undici's default: a model that does not accept the connection within 10 s is an error.
      this.call = null;
      this.socket.destroy();
      return call.fail(new undiciErrors.ConnectTimeoutError());
    }
    if (now > call.deadline) {
      // The total deadline holds even while the client is slow to read (paused).
      this.call = null;
      this.socket.destroy();
      return call.fail(this.inHead ? new undiciErrors.HeadersTimeoutError() : new undiciErrors.BodyTimeoutError());
    }
    if (call.paused) return;
    const limit = this.inHead ? call.headersTimeoutMs : call.bodyTimeoutMs;
    if (limit > 0 && now - this.since > limit) {
      this.call = null;
      this.socket.destroy();
      call.fail(this.inHead ? new undiciErrors.HeadersTimeoutError() : new undiciErrors.BodyTimeoutError());
    }
  }

  private received(chunk: Buffer): void {
    const call = this.call;
    if (!call || call.aborted) {
      // Bytes nobody asked for (or for an aborted call): this connection cannot be trusted.
      this.socket.destroy();
      return;
    }
    this.since = performance.now();
    let at = 0;
    while (at >= 0 && at < chunk.length && this.call === call && !call.aborted) {
      at = this.inHead ? this.readHead(chunk, at) : this.readBody(chunk, at);
    }
    // Bytes after a complete answer mean the server answered more than was asked: do not reuse.
    if (this.finished) this.handBack(at >= 0 && at < chunk.length);
  }

  /** Consume head bytes from chunk[at..]; returns where the body starts, or -1 to wait/stop. */
  private readHead(chunk: Buffer, at: number): number {
    const prev = this.head;
    const buf = prev === null ? chunk : Buffer.concat([prev, chunk.subarray(at)]);
    const base = prev === null ? at : 0;
    const end = buf.indexOf(CRLFCRLF, base);
    if (end < 0) {
      if (buf.length - base > MAX_HEAD_BYTES) return this.broken('the model sent a response head larger than 16 KiB');
      this.head = prev === null ? chunk.subarray(at) : buf;
      return -1;
    }
    this.head = null;
    if (end - base > MAX_HEAD_BYTES) return this.broken('the model sent a response head larger than 16 KiB');
    // Where the body starts in `chunk` (the head may have begun in an earlier chunk).
    const next = prev === null ? end + 4 : end + 4 - prev.length + at;
    const status = this.parseHead(buf.toString('latin1', base, end));
    if (status < 0) return -1;
    // 100 Continue and 103 Early Hints precede the real answer (parseHead refused other 1xx).
    if (status < 200) return next;
    this.inHead = false;
    const call = this.call!;
    const headers = this.headers!;
    this.headers = null;
    call.handler.onResponseStart?.(call, status, headers, this.statusMessage);
    if (this.call !== call || call.aborted) return -1;
    if (this.body === Body.None) this.complete();
    return next;
  }

  /** Parse status line and headers; sets framing. Returns the status, or -1 after failing the call. */
  private parseHead(text: string): number {
    let lineEnd = text.indexOf('\r\n');
    if (lineEnd < 0) lineEnd = text.length;
    // "HTTP/1.1 200 OK"
    const minor = text.charCodeAt(7) - 0x30;
    if (
      !text.startsWith('HTTP/1.') ||
      text.charCodeAt(8) !== 0x20 ||
      !(minor === 0 || minor === 1) ||
      !/^\d{3}$/.test(text.slice(9, 12)) ||
      (lineEnd > 12 && text.charCodeAt(12) !== 0x20)
    ) {
      return this.broken('the model sent a malformed status line');
    }
    if (!isFieldValue(text, 12, lineEnd)) return this.broken('the model sent a control character in its status line');
    const status = Number(text.slice(9, 12));
    if (status < 100) return this.broken(`the model answered status ${text.slice(9, 12)}`);
    if (status < 200 && status !== 100 && status !== 103) return this.broken(`the model answered ${status}, an interim answer nobody asked for`);
    this.statusMessage = text.slice(13, lineEnd);
    const headers: IncomingHttpHeaders = {};
    let contentLength = -1;
    let badLength = '';
    let chunked = false;
    let otherCoding = false;
    let connection = '';
    const ok = forEachHeader(text, lineEnd + 2, (t, start, colon, vs, ve) => {
      const name = t.slice(start, colon).toLowerCase();
      const value = t.slice(vs, ve);
      if (name === 'content-length') {
        const n = contentLengthOf(t, vs, ve);
        if (n < 0 || (contentLength >= 0 && contentLength !== n)) badLength = value;
        // Equal repeats are one Content-Length (RFC 9110 §8.6): kept once.
        if (contentLength >= 0) return true;
        contentLength = n;
      } else if (name === 'transfer-encoding') {
        const codings = value.toLowerCase().split(',');
        chunked = codings[codings.length - 1]!.trim() === 'chunked';
        otherCoding = !chunked;
      } else if (name === 'connection') {
        connection += `,${value.toLowerCase()},`;
      } else if (name === 'keep-alive') {
        const m = /timeout=(\d+)/i.exec(value);
        if (m) this.keepAliveMs = Math.max(0, Number(m[1]) * 1000 - 1000);
      }
      const prev = headers[name];
      if (prev === undefined) headers[name] = value;
      else if (Array.isArray(prev)) prev.push(value);
      else headers[name] = [prev, value];
      return true;
    });
    if (!ok) return this.broken('the model sent a malformed header line (or a control character in a value)');
    if (badLength !== '') return this.broken(`the model sent an invalid Content-Length (${JSON.stringify(badLength.slice(0, 32))})`);
    if (contentLength >= 0 && (chunked || otherCoding)) return this.broken('the model sent both Transfer-Encoding and Content-Length');
    this.headers = headers;
    this.keepAlive = minor === 1 ? !/,\s*close\s*,/.test(connection) : /,\s*keep-alive\s*,/.test(connection);
    if (status < 200) return status;
    if (status === 204 || status === 304 || this.call!.opts.method === 'HEAD') {
      this.body = Body.None;
    } else if (chunked) {
      this.body = Body.Chunked;
      this.chunkState = Chunk.Size;
      this.line = '';
    } else if (otherCoding || contentLength < 0) {
      // No length: the answer ends when the server closes the connection.
      this.body = Body.UntilClose;
      this.keepAlive = false;
    } else if (contentLength === 0) {
      this.body = Body.None;
    } else {
      this.body = Body.Length;
      this.remaining = contentLength;
    }
    return status;
  }

  /** Consume body bytes from chunk[at..]; returns the next position, or -1 to stop. */
  private readBody(chunk: Buffer, at: number): number {
    const call = this.call!;
    if (this.body === Body.Chunked) return this.readChunked(chunk, at);
    if (this.body === Body.UntilClose) {
      call.handler.onResponseData?.(call, at === 0 ? chunk : chunk.subarray(at));
      return chunk.length;
    }
    const n = Math.min(this.remaining, chunk.length - at);
    this.remaining -= n;
    call.handler.onResponseData?.(call, at === 0 && n === chunk.length ? chunk : chunk.subarray(at, at + n));
    if (this.remaining === 0 && this.call === call && !call.aborted) this.complete();
    return at + n;
  }

  private readChunked(chunk: Buffer, at: number): number {
    const call = this.call!;
    while (at < chunk.length && this.call === call && !call.aborted) {
      if (this.chunkState === Chunk.Data) {
        const n = Math.min(this.remaining, chunk.length - at);
        this.remaining -= n;
        call.handler.onResponseData?.(call, chunk.subarray(at, at + n));
        at += n;
        if (this.remaining === 0) this.chunkState = Chunk.DataEnd;
        continue;
      }
      // Size lines, the CRLF after data, and trailer lines: a line at a time.
      const nl = chunk.indexOf(0x0a, at);
      if (nl < 0) {
        this.line += chunk.toString('latin1', at);
        if (this.line.length > 4096) return this.broken('the model sent an overlong chunk line');
        return chunk.length;
      }
      const line = this.line + chunk.toString('latin1', at, nl);
      this.line = '';
      at = nl + 1;
      if (!line.endsWith('\r')) return this.broken('the model sent a malformed chunk line');
      const text = line.slice(0, -1);
      if (this.chunkState === Chunk.DataEnd) {
        if (text !== '') return this.broken('the model sent a chunk longer than its size');
        this.chunkState = Chunk.Size;
      } else if (this.chunkState === Chunk.Size) {
        const semi = text.indexOf(';');
        const hex = (semi < 0 ? text : text.slice(0, semi)).trim();
        if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) return this.broken('the model sent an invalid chunk size');
        const size = parseInt(hex, 16);
        if (size === 0) {
          this.chunkState = Chunk.Trailers;
          this.trailerBytes = 0;
        } else {
          this.remaining = size;
          this.chunkState = Chunk.Data;
        }
      } else if (text === '') {
        // The blank line after the (ignored) trailers: the answer is complete.
        this.complete();
        return at;
      } else {
        this.trailerBytes += line.length + 1;
        if (this.trailerBytes > MAX_HEAD_BYTES) return this.broken('the model sent trailers over 16 KiB');
      }
    }
    return at;
  }

  /** The answer is complete; `handBack` finishes the job once the rest of the read is checked. */
  private complete(): void {
    const call = this.call!;
    this.call = null;
    call.conn = null;
    this.inHead = true;
    this.finished = call;
  }

  /**
   * Free the connection first (so a request the handler sends from onResponseEnd can take it),
   * then tell the handler.
   */
  private handBack(extraBytes: boolean): void {
    const call = this.finished!;
    this.finished = null;
    if (this.keepAlive && !extraBytes) {
      if (this.socket.isPaused()) this.socket.resume();
      this.client.release(this);
    } else {
      this.socket.destroy();
    }
    if (!call.aborted) {
      call.aborted = true; // nothing more for this call
      call.handler.onResponseEnd?.(call, {});
    }
  }

  /** A framing error: fail the call and drop the connection. */
  private broken(message: string): -1 {
    const call = this.call;
    this.call = null;
    this.socket.destroy();
    call?.fail(new BadAnswerError(message));
    return -1;
  }

  /** The server closed its side: an until-close answer is complete; anything else in flight failed. */
  private ended(): void {
    if (this.call && !this.inHead && this.body === Body.UntilClose) {
      this.keepAlive = false;
      this.complete();
      this.handBack(false);
      return;
    }
    this.socket.destroy();
  }

  private lost(err: Error | null): void {
    this.client.forget(this);
    const call = this.call;
    this.call = null;
    if (!call || call.aborted) return;
    call.fail(err ?? new Error('the model closed the connection before the answer was complete'));
  }
}
