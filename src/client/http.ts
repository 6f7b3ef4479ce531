import { request, type Dispatcher } from 'undici';

/** One HTTP answer with its body still unread (so a stream can be handed on as is). */
export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

/** POST a JSON body with undici. Rejects on connection errors and aborts; any status resolves. */
export async function postJson(
  dispatcher: Dispatcher,
  url: string,
  body: unknown,
  opts: { signal?: AbortSignal; headersTimeout?: number; bodyTimeout?: number } = {},
): Promise<RawAnswer> {
  const r = await request(url, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream, */*' },
    body: JSON.stringify(body),
    signal: opts.signal,
    headersTimeout: opts.headersTimeout,
    bodyTimeout: opts.bodyTimeout,
  });
  return { status: r.statusCode, headers: r.headers, body: r.body };
}

/** Read a whole body: parsed JSON when it is JSON, the text otherwise, null when empty. */
export async function readBody(answer: RawAnswer): Promise<unknown> {
  const text = await answer.body.text();
  if (text === '') return null;
  const ct = String(answer.headers['content-type'] ?? '');
  if (ct.includes('json') || /^\s*[[{"]/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** Drop a body we do not need, without waiting for it. */
export function discard(answer: RawAnswer): void {
  answer.body.resume();
  answer.body.on('error', () => {});
}
