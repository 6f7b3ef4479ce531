import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { bodiless, FRAMING_HEADERS, type OutgoingHeaders } from './head.js';

/**
 * The answer side of one request, whoever read it (the fast lane or node:http). An answer is either
 * whole (`send`) or streamed (`start`, `write`..., `end`); after either ends, the reply is done.
 * Framing (Content-Length, Transfer-Encoding, Connection) is always the reply's own: framing
 * headers in `headers` are ignored. `send` and `start` throw (InvalidHeaderError or node's
 * ERR_INVALID_CHAR) on a header they will not write, before writing anything.
 */
export interface ClientReply {
  /** An answer has started (its headers are sent or queued). */
  readonly headersSent: boolean;
  /** The client's connection is gone (or was cut). */
  readonly destroyed: boolean;
  /** A whole answer in one write (content-length set here); `done` runs once it is written. */
  send(status: number, headers: OutgoingHeaders, body?: string | Buffer, done?: () => void): void;
  /**
   * Start a streamed answer: `length` bytes exactly when known (Content-Length), else chunked;
   * `flush` sends the headers now.
   */
  start(status: number, headers: OutgoingHeaders, flush: boolean, length?: number): void;
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

/** `headers` without the framing ones (node:http would otherwise write them as given). */
function ownFraming(headers: OutgoingHeaders): OutgoingHeaders {
  let out: OutgoingHeaders | null = null;
  for (const name in headers) {
    const lower = name.toLowerCase();
    // `connection: close` is the one framing wish a caller may state (a draining worker's answers).
    if (FRAMING_HEADERS.has(lower) && !(lower === 'connection' && headers[name] === 'close')) {
      out ??= { ...headers };
      delete out[name];
    }
  }
  return out ?? headers;
}

/**
 * A `ClientReply` over node:http's ServerResponse (TLS, and connections handed to node:http).
 * `onClose` also fires when the connection closes while the answer still waits its turn behind
 * an earlier pipelined one: node:http never emits 'close' on such a queued response, and without
 * this the request would never end.
 */
export function httpReply(res: ServerResponse): ClientReply {
  return {
    get headersSent() {
      return res.headersSent;
    },
    get destroyed() {
      return res.destroyed || (res.req?.socket?.destroyed ?? false);
    },
    send(status, headers, body, done) {
      if (res.headersSent || res.destroyed) return;
      const length = body === undefined || bodiless(status) ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
      const own = ownFraming(headers);
      res.writeHead(status, bodiless(status) ? own : { ...own, 'content-length': length });
      const out = length === 0 ? undefined : body;
      if (done) res.end(out, done);
      else res.end(out);
    },
    start(status, headers, flush, length) {
      const own = ownFraming(headers);
      res.writeHead(status, length === undefined || bodiless(status) ? own : { ...own, 'content-length': length });
      if (flush) res.flushHeaders();
    },
    write: (chunk) => res.write(chunk),
    onDrain: (cb) => void res.once('drain', cb),
    end(done) {
      if (done) res.end(done);
      else res.end();
    },
    destroy: () => {
      res.destroy();
      res.req?.socket?.destroy();
    },
    onClose(cb) {
      res.once('close', cb);
      const socket: Socket | undefined = res.req?.socket;
      if (!socket) return;
      if (socket.destroyed) return void queueMicrotask(cb);
      socket.once('close', cb);
      // A keep-alive connection serves many requests: drop the listener once this answer is done.
      res.once('close', () => socket.off('close', cb));
    },
  };
}
