/// <reference lib="dom" />
import { createParser, type EventSourceParser } from 'eventsource-parser';

/**
 * Server-sent events read with `fetch`, because EventSource cannot send the
 * `Authorization` header the admin API wants (and a key in the URL would end up in logs and
 * history). Parsing is `eventsource-parser`'s, the same parser the TS client uses; the page gets
 * it through its import map (served from node_modules like uPlot).
 */

/** One event of the stream. */
export interface SseEvent {
  event: string;
  data: string;
}

/** Incremental text/event-stream parser: feed it chunks as they arrive, get whole events back. */
export class SseParser {
  private out: SseEvent[] = [];
  private readonly parser: EventSourceParser = createParser({
    onEvent: (e) => this.out.push({ event: e.event ?? 'message', data: e.data }),
  });

  /** Add a chunk; returns the events it completed, in order. */
  push(chunk: string): SseEvent[] {
    this.parser.feed(chunk);
    const done = this.out;
    this.out = [];
    return done;
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
