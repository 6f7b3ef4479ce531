import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import { errorBody } from '../common/protocol.js';
import type { Logger } from '../common/log.js';
import { FastLane, type RouteFn } from '../worker/http1/fast-lane.js';
import type { ClientReply } from '../worker/http1/reply.js';
import type { Outcome } from './wire.js';

/**
 * The protocol's hot routes (`POST /route/`, `/worker_status/`, `/delete_requests/`) answered
 * without the hono app: at 10k+ calls a second the Request/Response objects hono builds for each
 * call cost more than the engine's work. Two readers share one answer (`protocolAnswer`):
 * - `protocolLaneRoutes`: the fast lane (src/worker/http1/fast-lane.ts, the worker's own) reads
 *   a well-formed `POST <route> HTTP/1.1` with a Content-Length body straight off the socket and
 *   writes the answer in one write, with no IncomingMessage or ServerResponse;
 * - `withProtocolFastPath`: node:http's request listener, for what the lane hands over (chunked
 *   bodies, `Expect`, HTTP/1.0, anything it does not parse itself).
 * The answers are the app's, byte for byte in status, content-type and JSON body (http.ts stays
 * the reference and serves everything else, these paths' other methods included):
 * - with and without the trailing slash, any query string ignored;
 * - a body over `maxBodyBytes` is a 413 naming `body`; a body that is not JSON a 400 naming
 *   `body`; an empty body is `{}`;
 * - an exception in the engine is logged and answered 500 `{"error": "internal error"}`.
 */

export type ProtocolOp = (raw: unknown) => Outcome;

export interface FastPathOptions {
  /** Path without trailing slash → operation, e.g. `/route` → engine.route. */
  routes: Record<string, ProtocolOp>;
  maxBodyBytes: number;
  logger: Logger;
}

/** The status and JSON text of `op`'s answer to a request body (`text`: the body as UTF-8). */
export function protocolAnswer(op: ProtocolOp, text: string, path: string, logger: Logger): { status: number; text: string } {
  let value: unknown = {};
  if (text.trim() !== '') {
    try {
      value = JSON.parse(text);
    } catch {
      return { status: 400, text: JSON.stringify(errorBody('invalid JSON', { body: 'not valid JSON' })) };
    }
  }
  let out: Outcome;
  try {
    out = op(value);
  } catch (err) {
    const e = err as Error;
    logger.error({ event: 'http_error', method: 'POST', path, error: e.message, stack: e.stack }, 'unexpected error');
    return { status: 500, text: '{"error":"internal error"}' };
  }
  return { status: out.status, text: JSON.stringify(out.body) };
}

function sendJson(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * The fast lane's routes: each path with and without its trailing slash. A body larger than
 * `maxBodyBytes` is not read by the lane (it hands the request to node:http, whose listener
 * answers the 413).
 */
export function protocolLaneRoutes(o: FastPathOptions): Map<string, RouteFn> {
  const out = new Map<string, RouteFn>();
  for (const [path, op] of Object.entries(o.routes)) {
    const fast = (body: Buffer, reply: ClientReply) => {
      const a = protocolAnswer(op, body.toString('utf8'), path, o.logger);
      reply.send(a.status, JSON_HEADERS, a.text);
    };
    // The lane calls `fast` only; the function itself stands for node:http's way, which the
    // server's request listener (withProtocolFastPath) is.
    const route: RouteFn = Object.assign(() => undefined, { fast, maxBodyBytes: o.maxBodyBytes });
    out.set(path, route);
    out.set(`${path}/`, route);
  }
  return out;
}

/**
 * Put the fast lane in front of `server` (an http.Server whose listener is `withProtocolFastPath`):
 * from now on it reads every new connection first. Its timeouts are the server's own.
 */
export function attachProtocolLane(server: Server, o: FastPathOptions): FastLane {
  const requestTimeout = server.requestTimeout > 0 ? server.requestTimeout : 300_000;
  return new FastLane(server, protocolLaneRoutes(o), {
    headersTimeout: Math.min(server.headersTimeout, requestTimeout),
    requestTimeout,
    checkEveryMs: 1000,
  });
}

/** A request listener that answers the fast routes itself and hands every other request to `fallback`. */
export function withProtocolFastPath(fallback: RequestListener, o: FastPathOptions): RequestListener {
  const routes = new Map(Object.entries(o.routes));
  const tooLarge = () => JSON.stringify(errorBody('body too large', { body: `larger than ${o.maxBodyBytes} bytes` }));
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q < 0 ? url : url.slice(0, q);
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
    const op = req.method === 'POST' ? routes.get(path) : undefined;
    if (!op) return fallback(req, res);
    const declared = req.headers['content-length'];
    if (declared !== undefined && req.headers['transfer-encoding'] === undefined && Number.parseInt(declared, 10) > o.maxBodyBytes) {
      sendJson(res, 413, tooLarge());
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > o.maxBodyBytes) {
        refused = true;
        sendJson(res, 413, tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', () => {
      if (refused || res.headersSent) return;
      refused = true;
      sendJson(res, 400, JSON.stringify(errorBody('unreadable body', { body: 'could not be read' })));
    });
    req.on('end', () => {
      if (refused) return;
      const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
      const a = protocolAnswer(op, text, path, o.logger);
      sendJson(res, a.status, a.text);
    });
  };
}
