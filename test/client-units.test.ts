import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { namedFields } from '../src/client/errors.js';
import { backoffDelay, DEFAULT_RETRY, isConnectionError, isRetryableStatus, retryAfterMs } from '../src/client/retry.js';
import { decoderFor, LineSplitter, SseDecoder, streamFormat, type StreamEvent } from '../src/client/stream.js';
import type { SseEvent } from '../src/client/index.js';

/** The client's pure parts: stream decoding, back-off, error fields. */

function feedAll(chunks: string[]): SseEvent[] {
  const d = new SseDecoder();
  const out = chunks.flatMap((c) => d.push(c));
  return [...out, ...d.end()];
}

describe('server-sent events', () => {
  it('parses vLLM (data: ) and TGI (data:) events, comments, multi-line data, event and id', () => {
    const text = ': keep-alive\n\ndata: {"a":1}\n\ndata:{"b":2}\r\n\r\nevent: done\nid: 7\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n';
    const events = feedAll([text]);
    expect(events.map((e) => e.data)).toEqual(['{"a":1}', '{"b":2}', 'line one\nline two', '[DONE]']);
    expect(events[0]!.json).toEqual({ a: 1 });
    expect(events[1]!.json).toEqual({ b: 2 });
    expect(events[2]).toMatchObject({ event: 'done', id: '7', json: undefined });
    expect(events[3]!.event).toBe('message');
    expect(events[3]!.id).toBe('7'); // the last event id carries over, as in the HTML standard
  });

  it('gives the same events however the bytes are split (property)', () => {
    const events = ['data: {"n":1}', 'data: é ü 漢字', 'event: x\ndata: a\ndata: b', 'data: [DONE]'];
    const text = events.join('\r\n\r\n') + '\r\n\r\n';
    const whole = feedAll([text]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: text.length }), { maxLength: 12 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const chunks: string[] = [];
        let prev = 0;
        for (const p of points) {
          chunks.push(text.slice(prev, p));
          prev = p;
        }
        chunks.push(text.slice(prev));
        expect(feedAll(chunks)).toEqual(whole);
      }),
    );
  });

  it('decodes UTF-8 split inside a character, and a last event without its blank line', () => {
    const bytes = Buffer.from('data: 漢字\n\ndata: tail', 'utf8');
    const d = decoderFor('sse');
    const out: StreamEvent[] = [];
    for (let i = 0; i < bytes.length; i++) out.push(...d.push(bytes.subarray(i, i + 1)));
    out.push(...d.end());
    expect(out.map((e) => (e as SseEvent).data)).toEqual(['漢字', 'tail']);
  });
});

describe('lines and formats', () => {
  it('splits on \\n, \\r\\n and \\r, holding a trailing \\r for the next chunk', () => {
    const s = new LineSplitter();
    expect(s.push('a\r')).toEqual([]);
    expect(s.push('\nb\rc\n')).toEqual(['a', 'b', 'c']);
    expect(s.push('d')).toEqual([]);
    expect(s.end()).toEqual(['d']);
  });

  it('chooses the format from the content type', () => {
    expect(streamFormat('text/event-stream; charset=utf-8')).toBe('sse');
    expect(streamFormat('application/x-ndjson')).toBe('ndjson');
    expect(streamFormat('application/jsonl')).toBe('ndjson');
    expect(streamFormat('application/octet-stream')).toBe('raw');
    const nd = decoderFor('ndjson');
    const out = [...nd.push(Buffer.from('{"x":1}\n\nnot json\n{"y"')), ...nd.push(Buffer.from(':2}')), ...nd.end()];
    expect(out).toEqual([
      { type: 'json', line: '{"x":1}', json: { x: 1 } },
      { type: 'json', line: 'not json', json: undefined },
      { type: 'json', line: '{"y":2}', json: { y: 2 } },
    ]);
  });
});

describe('retry policy', () => {
  it('back-off doubles from the base, is capped, and jitters within [step/2, step]', () => {
    const opts = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(1, opts, () => 0)).toBe(50);
    expect(backoffDelay(1, opts, () => 1)).toBe(100);
    expect(backoffDelay(3, opts, () => 1)).toBe(400);
    expect(backoffDelay(10, opts, () => 1)).toBe(1000);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.double({ min: 0, max: 1, noNaN: true }), (attempt, r) => {
        const step = Math.min(1000, 100 * 2 ** (attempt - 1));
        const d = backoffDelay(attempt, opts, () => r);
        return d >= step / 2 && d <= step;
      }),
    );
  });

  it('retries 408, 429 and 5xx only', () => {
    expect([408, 429, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 404, 410, 413, 422].some(isRetryableStatus)).toBe(false);
  });

  it('reads Retry-After as seconds or a date', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs(new Date(Date.UTC(2030, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2030, 0, 1, 0, 0, 0))).toBe(10_000);
    expect(retryAfterMs(undefined)).toBeNull();
    expect(retryAfterMs('soon')).toBeNull();
  });

  it('recognises connection errors through undici cause chains', () => {
    expect(isConnectionError(Object.assign(new Error('fetch failed'), { cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) }))).toBe(true);
    expect(isConnectionError(new Error('bad'))).toBe(false);
  });
});

describe('error fields', () => {
  it("flattens the worker's and the autoscaler's 4xx bodies into named fields", () => {
    expect(namedFields({ payload: { prompt: 'must be a string', 'parameters.max_new_tokens': 'too big' } })).toEqual({
      'payload.prompt': 'must be a string',
      'payload.parameters.max_new_tokens': 'too big',
    });
    expect(namedFields({ error: 'invalid', fields: { api_key: 'does not match' } })).toEqual({ api_key: 'does not match' });
    expect(namedFields({ auth_data: { signature: 'missing parameter' } })).toEqual({ 'auth_data.signature': 'missing parameter' });
    expect(namedFields({ error: 'invalid session', field: 'session_id' })).toEqual({ session_id: 'invalid session' });
    expect(namedFields(null)).toEqual({});
  });
});
