import { createParser, type EventSourceParser } from 'eventsource-parser';
import { StreamInterruptedError } from './errors.js';

/**
 * Streamed answers. The worker passes the model's stream through chunk by chunk; the client
 * turns it into events by content type:
 * - `text/event-stream` (vLLM, TGI): one `SseEvent` per server-sent event;
 * - `application/x-ndjson`, `application/jsonl`: one `JsonLine` per non-empty line;
 * - anything else: `RawChunk`s as they arrive.
 */

/** One server-sent event. `json` is `data` parsed as JSON, or undefined (e.g. `[DONE]`). */
export interface SseEvent {
  type: 'sse';
  /** The `event:` field; "message" when absent. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  id?: string;
  json: unknown;
}

/** One line of an NDJSON / JSON-lines stream. `json` is undefined when the line is not JSON. */
export interface JsonLine {
  type: 'json';
  line: string;
  json: unknown;
}

/** A chunk of a stream of another type, as received. */
export interface RawChunk {
  type: 'chunk';
  chunk: Buffer;
}

export type StreamEvent = SseEvent | JsonLine | RawChunk;
export type StreamFormat = 'sse' | 'ndjson' | 'raw';

/** The format a content type is read as. */
export function streamFormat(contentType: string | undefined): StreamFormat {
  const ct = (contentType ?? '').toLowerCase();
  if (ct.includes('text/event-stream')) return 'sse';
  if (ct.includes('ndjson') || ct.includes('jsonl') || ct.includes('json-seq')) return 'ndjson';
  return 'raw';
}

function tryJson(text: string): unknown {
  const t = text.trim();
  if (t === '' || (t[0] !== '{' && t[0] !== '[' && t[0] !== '"' && !/^-?\d/.test(t) && t !== 'true' && t !== 'false' && t !== 'null')) return undefined;
  try {
    return JSON.parse(t);
  } catch {
    return undefined;
  }
}

/**
 * Splits text into lines across chunk boundaries; a line ends at "\n", "\r\n" or "\r" (a "\r" at
 * the very end of a chunk waits for the next one, in case "\n" follows).
 */
export class LineSplitter {
  private rest = '';

  push(text: string): string[] {
    const s = this.rest + text;
    const lines: string[] = [];
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 10) {
        lines.push(s.slice(start, i));
        start = i + 1;
      } else if (c === 13) {
        if (i + 1 === s.length) break; // maybe "\r\n" split over two chunks
        lines.push(s.slice(start, i));
        if (s.charCodeAt(i + 1) === 10) i++;
        start = i + 1;
      }
    }
    this.rest = s.slice(start);
    return lines;
  }

  /** The last line when the stream ended without a line break. */
  end(): string[] {
    const r = this.rest.endsWith('\r') ? this.rest.slice(0, -1) : this.rest;
    this.rest = '';
    return r === '' ? [] : [r];
  }
}

/**
 * Server-sent events, incremental. The parsing is `eventsource-parser`'s (the dashboard page uses
 * the same parser); this adds what the client promises on top: `event` defaults to "message",
 * `id` is the last event id seen so far (as in the HTML standard), `data` is parsed as JSON when
 * it is JSON, and a last event without its blank line is still delivered when the stream ends.
 */
export class SseDecoder {
  private out: SseEvent[] = [];
  private id: string | undefined;
  private readonly parser: EventSourceParser = createParser({
    onEvent: (m) => {
      if (m.id !== undefined) this.id = m.id;
      const e: SseEvent = { type: 'sse', event: m.event ?? 'message', data: m.data, json: tryJson(m.data) };
      if (this.id !== undefined) e.id = this.id;
      this.out.push(e);
    },
    // "retry" and unknown fields are ignored, as browsers do.
  });

  push(text: string): SseEvent[] {
    this.parser.feed(text);
    return this.take();
  }

  /** Events still buffered when the stream ends (a last event without its blank line). */
  end(): SseEvent[] {
    // Ending the pending line, then a blank line, dispatches whatever event was still open.
    this.parser.feed('\n\n');
    this.parser.reset();
    return this.take();
  }

  private take(): SseEvent[] {
    const done = this.out;
    this.out = [];
    return done;
  }
}

/** Decodes a byte stream into events of one format. */
export function decoderFor(format: StreamFormat): { push(chunk: Buffer): StreamEvent[]; end(): StreamEvent[] } {
  const text = new TextDecoder('utf-8');
  if (format === 'sse') {
    const sse = new SseDecoder();
    return { push: (c) => sse.push(text.decode(c, { stream: true })), end: () => [...sse.push(text.decode()), ...sse.end()] };
  }
  if (format === 'ndjson') {
    const lines = new LineSplitter();
    const toEvents = (ls: string[]): JsonLine[] => ls.filter((l) => l.trim() !== '').map((line) => ({ type: 'json', line, json: tryJson(line) }));
    return { push: (c) => toEvents(lines.push(text.decode(c, { stream: true }))), end: () => toEvents([...lines.push(text.decode()), ...lines.end()]) };
  }
  return { push: (chunk) => [{ type: 'chunk', chunk }], end: () => [] };
}

/** What a `ServerlessStream` reads from: an undici body (async iterable of Buffers) that can be destroyed. */
export interface StreamBody extends AsyncIterable<Buffer | Uint8Array> {
  destroy(err?: Error): unknown;
}

/**
 * A streamed answer. Iterate it (`for await (const ev of stream)`) for parsed events, or read
 * `chunks()` for the raw bytes, or `text()` for everything; only one of these, once. Breaking
 * out of the loop or calling `cancel()` closes the connection, which cancels the request at
 * the worker and the model. A connection lost mid-stream throws `StreamInterruptedError`.
 */
export class ServerlessStream implements AsyncIterable<StreamEvent> {
  /** How the body is decoded, from its content type. */
  readonly format: StreamFormat;
  private consumed = false;
  private finished = false;

  constructor(
    private readonly body: StreamBody,
    /** The worker's status (2xx). */
    readonly status: number,
    readonly headers: Record<string, string | string[] | undefined>,
    /** The worker that answers. */
    readonly url: string,
    /** The engine's request_idx (0 when sent straight to a worker). */
    readonly requestIdx: number,
    private readonly onEnd?: (ok: boolean) => void,
  ) {
    const ct = headers['content-type'];
    this.format = streamFormat(Array.isArray(ct) ? ct[0] : ct);
  }

  /** The raw bytes as they arrive. */
  async *chunks(): AsyncGenerator<Buffer> {
    this.claim();
    let ok = false;
    try {
      for await (const c of this.body) yield Buffer.isBuffer(c) ? c : Buffer.from(c);
      ok = true;
    } catch (err) {
      throw new StreamInterruptedError(this.url, { cause: err });
    } finally {
      if (!ok) this.body.destroy();
      this.done(ok);
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<StreamEvent> {
    const decoder = decoderFor(this.format);
    for await (const chunk of this.chunks()) yield* decoder.push(chunk);
    yield* decoder.end();
  }

  /** The whole body as text. */
  async text(): Promise<string> {
    const parts: Buffer[] = [];
    for await (const c of this.chunks()) parts.push(c);
    return Buffer.concat(parts).toString('utf8');
  }

  /** Stop reading and close the connection (the worker cancels the model request). */
  cancel(): void {
    if (this.finished) return;
    this.body.destroy();
    this.done(false);
  }

  private claim(): void {
    if (this.consumed) throw new Error('this stream is already being read: iterate it, or call chunks() or text(), once');
    this.consumed = true;
  }

  private done(ok: boolean): void {
    if (this.finished) return;
    this.finished = true;
    this.onEnd?.(ok);
  }
}
