/// <reference lib="dom" />
/**
 * Server-sent events read with `fetch`, because EventSource cannot send the
 * `Authorization` header the admin API wants (and a key in the URL would end up in logs and
 * history). The parser follows the text/event-stream format: `event:` and `data:` lines,
 * blank line ends an event, `:` starts a comment.
 */

/** One event of the stream. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Incremental text/event-stream parser: feed it chunks as they arrive, get whole events back. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];

  /** Add a chunk; returns the events it completed, in order. */
  push(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const out: SseEvent[] = [];
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      // A lone trailing \r may be the first half of \r\n: wait for the next chunk.
      if (nl < 0 || (this.buffer[nl] === '\r' && nl === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (this.data.length > 0) out.push({ event: this.event || 'message', data: this.data.join('\n') });
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
    }
    return out;
  }
}

/** How a stream ended: the HTTP status, and the JSON error body when it was refused. */
export interface StreamEnd {
  status: number;
  error?: { error?: string; fields?: Record<string, string> } | null;
}

/**
 * GET `url` with the admin key and hand each event to `onEvent` until the server or `signal`
 * ends it. Resolves with the status (200 for a stream that ran and ended); rejects only on a
 * network error or abort.
 */
export async function readEventStream(url: string, adminKey: string, onEvent: (e: SseEvent) => void, signal: AbortSignal): Promise<StreamEnd> {
  const res = await fetch(url, {
    headers: { authorization: `Bearer ${adminKey}`, accept: 'text/event-stream' },
    cache: 'no-store',
    signal,
  });
  if (!res.ok || !res.body) {
    const error = (await res.json().catch(() => null)) as StreamEnd['error'];
    return { status: res.status, error };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const e of parser.push(decoder.decode(value, { stream: true }))) onEvent(e);
  }
  return { status: res.status };
}
