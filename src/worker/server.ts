import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { errorBody } from '../common/protocol.js';
import { FastLane, KEEP_ALIVE_MS, type RouteFn } from './http1/fast-lane.js';
import { answerClientErrors } from './http1/client-errors.js';
import { probeHalfClosed } from './http1/half-close.js';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';

/**
 * The worker's listener: listening, routing and closing. Handler routes (the hot path) go straight
 * to their own function; every other path goes to the hono app. Header and body timeouts stop
 * slow-drip clients, and a cap on open connections keeps a flood of clients from taking every
 * file descriptor (the model client and the health check need some too).
 *
 * The HTTP/1.1 the worker speaks itself lives in ./http1/: the hot path has a fast lane
 * (http1/fast-lane.ts) that reads plain `POST <handler route> HTTP/1.1` requests itself and hands
 * every other request to node:http. Over HTTPS the same lane reads the TLS sockets once their
 * handshake is done ('secureConnection'), so production (USE_SSL) runs the same code as plain HTTP.
 */
export interface ListenOptions {
  host: string;
  port: number;
  tls?: { certPath: string; keyPath: string };
  /** ms to receive all headers (default 10 s). */
  headersTimeoutMs?: number;
  /** ms to receive the whole request, body included (default 60 s). */
  requestTimeoutMs?: number;
  /** Serve handler routes on the fast lane (HTTP and HTTPS; default true). */
  fastLane?: boolean;
  /**
   * Open client connections at most (default 10 000, and never more than the process's open-file
   * limit leaves room for); connections beyond it are closed as they arrive.
   */
  maxConnections?: number;
}

export type { ClientReply } from './http1/reply.js';
export { httpReply } from './http1/reply.js';
export type { OutgoingHeaders } from './http1/head.js';
export type { FastRouteFn, RouteFn } from './http1/fast-lane.js';

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/** Fast-lane routes of each listener made by createListener (read by `listen`). */
const FAST_ROUTES = new WeakMap<RequestListener, Map<string, RouteFn>>();

/** One request listener: POSTs to a handler route go to its RouteFn, everything else to hono. */
export function createListener(routes: Map<string, RouteFn>, app: Hono): RequestListener {
  const honoListener = getRequestListener(app.fetch);
  const listener: RequestListener = (req, res) => {
    if (req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor === 1) return missingHost(req, res);
    // Absolute form (`POST http://host/path`, RFC 9112 §3.2.2: a server must accept it): served as
    // its path, like the origin form every client sends.
    if (req.url !== undefined && req.url.charCodeAt(0) !== 0x2f) req.url = originForm(req.url);
    watchHalfClose(req.socket);
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

/** Sockets of node:http connections whose FIN is watched (half-close.ts). */
const WATCHED = new WeakSet<object>();

/**
 * On a client's FIN while its HTTP/1.1 request waits for its answer, probe whether the client is
 * still there (the answer is still written to a half-closed client; a gone one cancels it).
 */
function watchHalfClose(socket: Socket): void {
  if (WATCHED.has(socket)) return;
  WATCHED.add(socket);
  socket.once('end', () => {
    const res = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!res || res.headersSent || res.req?.httpVersion !== '1.1') return;
    probeHalfClosed(
      socket,
      () => !res.headersSent && !res.writableEnded,
      () => res.writeContinue(),
    );
  });
}

/** The path and query of an absolute-form target (`http://host:port/p?q` → `/p?q`); others as they are. */
export function originForm(target: string): string {
  const m = /^https?:\/\/[^/?#]*/i.exec(target);
  if (!m) return target;
  const rest = target.slice(m[0].length);
  return rest === '' ? '/' : rest.charCodeAt(0) === 0x3f ? `/${rest}` : rest;
}

/** node:http's own answer to this is an empty 400 (requireHostHeader): this one says what is wrong. */
function missingHost(req: IncomingMessage, res: ServerResponse): void {
  const text = JSON.stringify(errorBody('malformed HTTP request: an HTTP/1.1 request needs a Host header', 'host'));
  res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), connection: 'close' });
  res.end(text);
  req.resume();
}

/** The fast lane of each listening server (closed by `closeServer`). */
const LANES = new WeakMap<Server, FastLane>();

/**
 * Listen on `opts.host:opts.port` (0 = ephemeral). Resolves once listening; later server errors and
 * malformed requests never crash the process (a malformed request gets a JSON 400/408/431).
 */
export async function listen(listener: RequestListener, opts: ListenOptions): Promise<{ server: Server; port: number }> {
  const requestTimeout = opts.requestTimeoutMs ?? 60_000;
  // node:http refuses a head timeout longer than the request's (the whole request bounds its head).
  const headersTimeout = Math.min(opts.headersTimeoutMs ?? 10_000, requestTimeout);
  const checkEveryMs = Math.max(100, Math.min(1000, headersTimeout / 2, requestTimeout / 2));
  const serverOpts = {
    headersTimeout,
    requestTimeout,
    // node checks both timeouts only this often (30 s by default): without it a slow-drip client
    // holds a connection up to 30 s past either timeout.
    connectionsCheckingInterval: checkEveryMs,
    keepAliveTimeout: KEEP_ALIVE_MS,
    noDelay: true,
    // The listener answers a missing Host itself, with a JSON 400 (see missingHost).
    requireHostHeader: false,
  };
  const server: Server = opts.tls ? createTlsServer(opts.tls, serverOpts, headersTimeout, listener) : createHttpServer(serverOpts, listener);
  const fastRoutes = opts.fastLane === false ? undefined : FAST_ROUTES.get(listener);
  // A client that sends its whole request and then half-closes (shutdown(SHUT_WR)) still gets its
  // answer, and the connection closes after it (node's default closes at once and loses it).
  (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  server.maxConnections = connectionCap(opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
  if (fastRoutes)
    LANES.set(server, new FastLane(server, fastRoutes, { headersTimeout, requestTimeout, checkEveryMs }, opts.tls ? 'secureConnection' : 'connection'));
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
  // A TLS handshake that failed or timed out: https.Server passes it on to 'clientError', whose
  // HTTP answer a socket without a session cannot carry (it would stay open): close it first.
  if (opts.tls) server.prependListener('tlsClientError' as 'error', (_err: Error, socket: Duplex) => void socket.destroy());
  answerClientErrors(server);
  return { server, port: (server.address() as AddressInfo).port };
}

/**
 * The HTTPS listener, set up as nginx serves TLS by default: TLS 1.2 and 1.3, ALPN http/1.1,
 * stateless session tickets (node's default: a random ticket key per process, so a client that
 * reconnects resumes without a full handshake) and a 300 s session lifetime (nginx's
 * ssl_session_timeout). A client that opens a connection and never finishes its handshake is
 * dropped after the header timeout: the handshake is part of sending the request's head.
 */
function createTlsServer(tls: { certPath: string; keyPath: string }, serverOpts: object, headersTimeout: number, listener: RequestListener): Server {
  return createHttpsServer(
    {
      ...serverOpts,
      cert: readFileSync(tls.certPath),
      key: readFileSync(tls.keyPath),
      minVersion: 'TLSv1.2',
      sessionTimeout: 300,
      handshakeTimeout: headersTimeout,
      // A client's FIN (after its close_notify) must not close our side: a half-closed client with a
      // whole request still reads its answer (issue 21 row 10). http.Server's sockets are half-open
      // always; https.Server's are not unless asked, which ended every such request unanswered.
      allowHalfOpen: true,
    },
    listener,
  ) as unknown as Server;
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

/** Open client connections at most, unless configured otherwise (WORKER_MAX_CONNECTIONS). */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
/** File descriptors kept free of client connections: model connections, the health check, logs, reports. */
const FD_RESERVE = 256;

/**
 * `wanted`, lowered to what the open-file limit leaves: FD_RESERVE, then half of the rest (a client
 * connection with a request in flight holds a model connection too). Above that, a flood would
 * still starve the model client and the health check (EMFILE).
 */
export function connectionCap(wanted: number, fdLimit = openFileLimit()): number {
  if (!Number.isFinite(fdLimit)) return wanted;
  return Math.max(1, Math.min(wanted, Math.floor((fdLimit - FD_RESERVE) / 2)));
}

/** The process's soft limit on open files (Linux; Infinity where it cannot be read). */
function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}
