import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Hono } from 'hono';

/**
 * The worker's listener: handler routes (the hot path) go straight to their node:http function;
 * every other path goes to the hono app. Header and body timeouts stop slow-drip clients.
 */
export interface ListenOptions {
  host: string;
  port: number;
  tls?: { certPath: string; keyPath: string };
  /** ms to receive all headers (default 10 s). */
  headersTimeoutMs?: number;
  /** ms to receive the whole request, body included (default 60 s). */
  requestTimeoutMs?: number;
}

/** A hot-path route: plain node:http, no framework. */
export type RouteFn = (req: IncomingMessage, res: ServerResponse) => void;

/** One request listener: POSTs to a handler route go to its RouteFn, everything else to hono. */
export function createListener(routes: Map<string, RouteFn>, app: Hono): (req: IncomingMessage, res: ServerResponse) => void {
  const honoListener = getRequestListener(app.fetch);
  return (req, res) => {
    if (req.method === 'POST') {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const fn = routes.get(q === -1 ? url : url.slice(0, q));
      if (fn) return fn(req, res);
    }
    void honoListener(req, res);
  };
}

/**
 * Listen on `opts.host:opts.port` (0 = ephemeral). Resolves once listening; later server errors and
 * malformed requests never crash the process (a malformed request gets a JSON 400/408/431).
 */
export async function listen(listener: (req: IncomingMessage, res: ServerResponse) => void, opts: ListenOptions): Promise<{ server: Server; port: number }> {
  const serverOpts = {
    headersTimeout: opts.headersTimeoutMs ?? 10_000,
    requestTimeout: opts.requestTimeoutMs ?? 60_000,
    keepAliveTimeout: 65_000,
    noDelay: true,
  };
  const server: Server = opts.tls
    ? (createHttpsServer({ ...serverOpts, cert: readFileSync(opts.tls.certPath), key: readFileSync(opts.tls.keyPath) }, listener) as unknown as Server)
    : createHttpServer(serverOpts, listener);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // Errors after start (EMFILE, a client's bad TLS hello) must not crash the process.
  server.on('error', () => undefined);
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const [status, body] = clientErrorAnswer(err.code);
    const text = JSON.stringify(body);
    socket.end(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** The JSON answer to a request node:http could not parse or did not receive in time. */
function clientErrorAnswer(code: string | undefined): [string, { error: string; field: string }] {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ['408 Request Timeout', { error: 'the request was not received in time', field: 'request' }];
  if (code === 'HPE_HEADER_OVERFLOW') return ['431 Request Header Fields Too Large', { error: 'request headers too large', field: 'headers' }];
  return ['400 Bad Request', { error: `malformed HTTP request${code ? ` (${code})` : ''}`, field: 'request' }];
}

/** Stop accepting, close idle connections now and every connection after `forceAfterMs`. */
export function closeServer(server: Server, forceAfterMs = 1000): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections?.();
    const t = setTimeout(() => server.closeAllConnections?.(), forceAfterMs);
    t.unref();
  });
}
