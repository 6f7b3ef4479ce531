import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { errorBody } from '../common/protocol.js';
import type { Logger } from '../common/log.js';
import type { Outcome } from './wire.js';

/**
 * The protocol's hot routes (`POST /route/`, `/worker_status/`, `/delete_requests/`) answered
 * straight on node:http, in front of the hono app: at 10k+ calls a second the Request/Response
 * objects hono builds for each call cost more than the engine's work. The answers are the app's,
 * byte for byte in status, content-type and JSON body (http.ts stays the reference and serves
 * everything else, these paths' other methods included):
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

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A request listener that answers the fast routes itself and hands every other request to `fallback`. */
export function withProtocolFastPath(fallback: RequestListener, o: FastPathOptions): RequestListener {
  const routes = new Map(Object.entries(o.routes));
  const tooLarge = () => errorBody('body too large', { body: `larger than ${o.maxBodyBytes} bytes` });
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
      sendJson(res, 400, errorBody('unreadable body', { body: 'could not be read' }));
    });
    req.on('end', () => {
      if (refused) return;
      const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
      let value: unknown = {};
      if (text.trim() !== '') {
        try {
          value = JSON.parse(text);
        } catch {
          return sendJson(res, 400, errorBody('invalid JSON', { body: 'not valid JSON' }));
        }
      }
      let out: Outcome;
      try {
        out = op(value);
      } catch (err) {
        const e = err as Error;
        o.logger.error({ event: 'http_error', method: req.method, path, error: e.message, stack: e.stack }, 'unexpected error');
        return sendJson(res, 500, { error: 'internal error' });
      }
      sendJson(res, out.status, out.body);
    });
  };
}
