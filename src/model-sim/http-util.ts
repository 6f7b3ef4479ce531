import type { IncomingMessage, ServerResponse } from 'node:http';

/** Largest request body accepted (bytes); larger ones get 413. */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** A JSON answer with an exact content-length (keep-alive friendly). */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendRawJson(res, status, JSON.stringify(body));
}

/** Like sendJson for a body that is already JSON text. */
export function sendRawJson(res: ServerResponse, status: number, json: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

/** An answer with no body. */
export function sendEmpty(res: ServerResponse, status: number): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-length': 0 });
  res.end();
}

/** Start a server-sent-events answer. */
export function startEventStream(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
}

/** Outcome of reading a body: its text, or why it was refused. */
export type BodyResult = { ok: true; text: string } | { ok: false; status: 413; message: string };

/** Read the whole request body as UTF-8, refusing bodies over MAX_BODY_BYTES. */
export function readBody(req: IncomingMessage, done: (result: BodyResult) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let finished = false;
  req.on('data', (chunk: Buffer) => {
    if (finished) return;
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      finished = true;
      done({ ok: false, status: 413, message: `request body is larger than ${MAX_BODY_BYTES} bytes` });
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (finished) return;
    finished = true;
    const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
    done({ ok: true, text });
  });
  req.on('error', () => {
    finished = true; // the client is gone; nothing to answer
  });
}
