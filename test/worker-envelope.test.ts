import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkAuthData, parseEnvelope, payloadSpan } from '../src/worker/envelope.js';
import {
  authData,
  clientAgent,
  echoHandler,
  echoModel,
  envelope,
  ledgerAudit,
  postJson,
  startTestModel,
  startTestWorker,
  waitFor,
  type TestModel,
  type TestWorker,
} from './helpers/worker.js';

describe('parseEnvelope', () => {
  it('returns the envelope with numbers from numeric strings and extra auth keys kept', () => {
    const r = parseEnvelope(JSON.stringify({ auth_data: authData({ cost: '12' as never, request_idx: 5, extra: 'x' }), payload: { a: 1 } }));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.envelope.auth_data.cost).toBe(12);
    expect(r.envelope.auth_data.request_idx).toBe(5);
    expect(r.envelope.auth_data.extra).toBe('x');
    expect(r.envelope.payload).toEqual({ a: 1 });
    expect(r.envelope.session_id).toBeNull();
  });

  it('answers {"error": "invalid JSON"} for a body that is not JSON', () => {
    for (const text of ['', '{', 'nope', '{"auth_data": }', '\u0000']) {
      expect(parseEnvelope(text)).toEqual({ ok: false, status: 422, body: { error: 'invalid JSON' } });
    }
  });

  it('names auth_data "field missing" when absent', () => {
    expect(parseEnvelope('{"payload": {}}')).toEqual({ ok: false, status: 422, body: { auth_data: 'field missing' } });
  });

  it('names each missing auth_data key with "missing parameter"', () => {
    const { signature: _s, url: _u, ...rest } = authData();
    const r = parseEnvelope(JSON.stringify({ auth_data: rest, payload: {} }));
    expect(r).toEqual({ ok: false, status: 422, body: { auth_data: { signature: 'missing parameter', url: 'missing parameter' } } });
  });

  it('names payload "field missing" together with auth_data problems', () => {
    const r = parseEnvelope(JSON.stringify({ auth_data: { ...authData(), reqnum: 'x' } }));
    expect(r).toEqual({ ok: false, status: 422, body: { auth_data: { reqnum: 'must be an integer' }, payload: 'field missing' } });
  });

  it('checks the type of every auth_data key', () => {
    const { problems } = checkAuthData({ cost: -1, endpoint: 3, reqnum: 1.5, request_idx: 'a', signature: [], url: {} });
    expect(problems).toEqual({
      cost: 'must be a non-negative number',
      endpoint: 'must be a string',
      reqnum: 'must be an integer',
      request_idx: 'must be an integer',
      signature: 'must be a string',
      url: 'must be a string',
    });
  });

  it('refuses a body that is JSON but not an object, naming the body', () => {
    for (const text of ['[]', '1', '"s"', 'null', 'true']) {
      const r = parseEnvelope(text);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.status).toBe(422);
        expect(String(r.body.error)).toMatch(/invalid JSON/);
      }
    }
  });

  it('refuses a session_id that is neither a string nor null', () => {
    const r = parseEnvelope(JSON.stringify({ auth_data: authData(), payload: {}, session_id: { a: 1 } }));
    expect(r).toEqual({ ok: false, status: 422, body: { session_id: 'must be a string or null' } });
  });
});

describe('payloadSpan', () => {
  const cut = (text: string): string | null => {
    JSON.parse(text); // payloadSpan's precondition: the body already parsed
    const b = Buffer.from(text, 'utf8');
    const span = payloadSpan(b);
    return span === null ? null : b.subarray(span[0], span[1]).toString('utf8');
  };

  it('cuts the payload value out exactly as written, wherever it sits', () => {
    expect(cut('{"auth_data": {"a": 1}, "payload": {"x" : [1, 2]}}')).toBe('{"x" : [1, 2]}');
    expect(cut('{"payload":{"x":1},"auth_data":{}}')).toBe('{"x":1}');
    expect(cut(' \n{ "payload" :\t"text" \n} ')).toBe('"text"');
    expect(cut('{"payload": 12.50e3}')).toBe('12.50e3');
    expect(cut('{"payload": null}')).toBe('null');
    expect(cut('{"payload": []}')).toBe('[]');
  });

  it('is not fooled by strings that look like keys, escaped quotes, or nested payload keys', () => {
    expect(cut(String.raw`{"auth_data": {"payload": 1, "s": "\\"}, "payload": 2}`)).toBe('2');
    expect(cut(String.raw`{"a": "\"payload\": 3 \\\"", "payload": {"payload": 4}}`)).toBe('{"payload": 4}');
    expect(cut(String.raw`{"a": "}{][", "payload": "}\\"}`)).toBe(String.raw`"}\\"`);
    expect(cut('{"a": {"payload": 1}}')).toBeNull();
  });

  it('takes the last payload key, as JSON.parse does, and understands an escaped key', () => {
    expect(cut('{"payload": 1, "payload": {"b": 2}}')).toBe('{"b": 2}');
    expect(cut(String.raw`{"pay\u006coad": [3]}`)).toBe('[3]');
  });

  it('gives null for a body that is not an object or has no payload', () => {
    for (const text of ['[]', '"payload"', '1', '{}', '{"auth_data": {}}']) expect(cut(text)).toBeNull();
  });

  it('matches JSON.parse on any envelope, whitespace and key order varied', () => {
    const ws = fc.constantFrom('', ' ', '\n', '\t ', '\r\n  ');
    fc.assert(
      fc.property(fc.jsonValue(), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }), ws, ws, fc.boolean(), (payload, other, w1, w2, first) => {
        const entries = Object.entries(other)
          .filter(([k]) => k !== 'payload')
          .map(([k, v]) => `${w1}${JSON.stringify(k)}${w2}:${w1}${JSON.stringify(v)}`);
        const p = `${w1}"payload"${w2}:${w2}${JSON.stringify(payload, null, w1 ? 2 : 0)}${w1}`;
        const text = `${w2}{${(first ? [p, ...entries] : [...entries, p]).join(',')}}${w1}`;
        const got = cut(text);
        expect(got).not.toBeNull();
        expect(JSON.parse(got!)).toEqual(JSON.parse(text).payload);
      }),
      { numRuns: 300 },
    );
  });
});

describe('bad input over HTTP', () => {
  let model: TestModel;
  let worker: TestWorker;
  const agent = clientAgent(16);
  const strictPayload = z.object({ prompt: z.string(), max_tokens: z.number().int().positive() });

  beforeAll(async () => {
    model = await startTestModel(echoModel);
    worker = await startTestWorker({
      modelUrl: model.url,
      spec: { maxBodyBytes: 64 * 1024 },
      handlers: [
        echoHandler(),
        echoHandler({ route: '/strict', payload: strictPayload, benchmark: undefined, workload: (p: { max_tokens: number }) => p.max_tokens }),
        echoHandler({
          route: '/bad-workload',
          benchmark: undefined,
          workload: (p: Record<string, unknown>) => {
            if (p.boom) throw new Error('cannot compute the workload');
            return -1;
          },
        }),
      ],
    });
  });
  afterAll(async () => {
    await worker?.close();
    await model?.close();
    await agent.close();
  });

  const post = (path: string, body: unknown) => postJson(worker.url + path, body, { dispatcher: agent });

  it('422 {"error": "invalid JSON"} for a body that is not JSON', async () => {
    const r = await post('/echo', '{"auth_data": {');
    expect(r.status).toBe(422);
    expect(r.headers['content-type']).toMatch(/application\/json/);
    expect(r.json).toEqual({ error: 'invalid JSON' });
  });

  it('422 {"auth_data": "field missing"}', async () => {
    const r = await post('/echo', { payload: {} });
    expect(r.status).toBe(422);
    expect(r.json).toEqual({ auth_data: 'field missing' });
  });

  it('422 {"auth_data": {"signature": "missing parameter"}}', async () => {
    const { signature: _omit, ...auth } = authData();
    const r = await post('/echo', { auth_data: auth, payload: {} });
    expect(r.status).toBe(422);
    expect(r.json).toEqual({ auth_data: { signature: 'missing parameter' } });
  });

  it('422 {"payload": "field missing"}', async () => {
    const r = await post('/echo', { auth_data: authData() });
    expect(r.status).toBe(422);
    expect(r.json).toEqual({ payload: 'field missing' });
  });

  it('422 {"payload": {field: message}} when the payload fails the handler schema', async () => {
    const r = await post('/strict', envelope({ prompt: 5, max_tokens: -3 }));
    expect(r.status).toBe(422);
    expect(Object.keys(r.json)).toEqual(['payload']);
    expect(Object.keys(r.json.payload).sort()).toEqual(['max_tokens', 'prompt']);
    const missing = await post('/strict', envelope({}));
    expect(missing.status).toBe(422);
    expect(Object.keys(missing.json.payload).sort()).toEqual(['max_tokens', 'prompt']);
    const notObject = await post('/strict', envelope('a string'));
    expect(notObject.status).toBe(422);
    expect(notObject.json.payload['(payload)']).toBeTypeOf('string');
  });

  it('422 naming the workload when the handler cannot compute it', async () => {
    const thrown = await post('/bad-workload', envelope({ boom: true }));
    expect(thrown.status).toBe(422);
    expect(thrown.json).toEqual({ payload: { '(workload)': 'cannot compute the workload' } });
    const negative = await post('/bad-workload', envelope({}));
    expect(negative.status).toBe(422);
    expect(negative.json.payload['(workload)']).toMatch(/non-negative/);
  });

  it('413 with a JSON error naming the body when the declared length is over the limit', async () => {
    const big = JSON.stringify(envelope({ prompt: 'x'.repeat(100 * 1024) }));
    const r = await post('/echo', big);
    expect(r.status).toBe(413);
    expect(r.json.field).toBe('body');
    expect(r.json.error).toMatch(/65536/);
  });

  it('413 when a chunked body (no content-length) grows over the limit', async () => {
    const r = await rawRequest(worker.port, [
      'POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n',
      chunk('{"auth_data": {}, "payload": "' + 'y'.repeat(40 * 1024)),
      chunk('y'.repeat(40 * 1024) + '"}'),
      '0\r\n\r\n',
    ]);
    expect(r).toMatch(/^HTTP\/1\.1 413 /);
    expect(
      JSON.parse(
        r
          .slice(r.indexOf('\r\n\r\n') + 4)
          .trim()
          .split('\r\n')
          .find((l) => l.startsWith('{'))!,
      ),
    ).toMatchObject({ field: 'body' });
  });

  it('answers JSON 404 naming the path for an unknown route, and a GET on a handler route', async () => {
    const r = await post('/nope', envelope({}));
    expect(r.status).toBe(404);
    expect(r.json.field).toBe('path');
    const g = await fetch(worker.url + '/echo');
    expect(g.status).toBe(404);
    expect(((await g.json()) as { field: string }).field).toBe('path');
  });

  it('answers a malformed HTTP request with a JSON 400 and keeps serving', async () => {
    const r = await rawRequest(worker.port, ['NOT HTTP AT ALL\r\n\r\n']);
    expect(r).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(r.slice(r.indexOf('\r\n\r\n') + 4))).toMatchObject({ field: 'request' });
    const ok = await post('/echo', envelope({ still: 'alive' }));
    expect(ok.status).toBe(200);
  });

  it('answers oversized headers with a JSON 431 naming the headers', async () => {
    const r = await rawRequest(worker.port, [`POST /echo HTTP/1.1\r\nhost: x\r\nx-big: ${'h'.repeat(20 * 1024)}\r\ncontent-length: 2\r\n\r\n{}`]);
    expect(r).toMatch(/^HTTP\/1\.1 431 /);
    expect(JSON.parse(r.slice(r.indexOf('\r\n\r\n') + 4))).toEqual({ error: 'request headers too large', field: 'headers' });
  });

  it('survives a storm of bad bodies and leaves the ledger untouched by them', async () => {
    const before = worker.ledger.totals.requests;
    const bad: unknown[] = [
      '',
      'null',
      '[]',
      '{"auth_data": null, "payload": {}}',
      '{"auth_data": [], "payload": {}}',
      { auth_data: { ...authData(), cost: 'lots' }, payload: {} },
      // biome-ignore lint/correctness/noPrecisionLoss: the case is a number JSON turns into Infinity
      { auth_data: { ...authData(), request_idx: 1e400 }, payload: {} },
      { auth_data: authData(), payload: {}, session_id: [] },
      '\xff\xfe{}',
      '{"a":' + '['.repeat(5000) + ']'.repeat(5000) + '}',
    ];
    const answers = await Promise.all(bad.map((b) => post('/echo', b)));
    for (const a of answers) {
      expect(a.status).toBe(422);
      expect(a.json).toBeTypeOf('object');
      expect(Object.keys(a.json).length).toBeGreaterThan(0);
    }
    expect(worker.ledger.totals.requests).toBe(before);
    const ok = await post('/echo', envelope({ after: 'storm' }));
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ echo: { after: 'storm' } });
    ledgerAudit(worker);
  });
});

function chunk(s: string): string {
  return `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;
}

/** Write raw bytes to the worker and collect what comes back until the server closes or 2 s pass. */
function rawRequest(port: number, parts: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let out = '';
    const timer = setTimeout(() => sock.destroy(), 2000);
    sock.on('data', (d) => {
      out += d.toString('utf8');
      if (/\r\n\r\n/.test(out) && /"}\s*$|0\r\n\r\n$/.test(out)) sock.end();
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      out ? resolve(out) : reject(new Error('no answer'));
    });
    sock.on('connect', () => {
      for (const p of parts) if (!sock.destroyed) sock.write(p);
    });
  });
}

describe('handler and extension code that throws', () => {
  let model: TestModel;
  let worker: TestWorker;
  const agent = clientAgent(4);
  let observerThrows = false;

  beforeAll(async () => {
    model = await startTestModel(echoModel);
    worker = await startTestWorker({
      modelUrl: model.url,
      handlers: [
        echoHandler(),
        echoHandler({
          route: '/to-model-throws',
          benchmark: undefined,
          toModelRequest: (p: Record<string, unknown>) => {
            if (p.nothing) return undefined;
            throw new Error('cannot build the model request');
          },
        }),
        echoHandler({
          route: '/refine-throws',
          benchmark: undefined,
          payload: z.looseObject({}).refine(() => {
            throw new Error('refinement blew up');
          }),
        }),
      ],
      extensions: [
        {
          name: 'test-throwing-observer',
          setup: () => ({
            observer: {
              onAdmitted: () => {
                if (observerThrows) throw new Error('observer bug');
              },
            },
          }),
        },
      ],
    });
  });
  afterAll(async () => {
    await worker?.close();
    await model?.close();
    await agent.close();
  });

  const post = (path: string, body: unknown) => postJson(worker.url + path, body, { dispatcher: agent });

  it('a toModelRequest that throws or returns nothing is a 422 naming it; nothing enters the ledger', async () => {
    const before = worker.ledger.totals.requests;
    const thrown = await post('/to-model-throws', envelope({}));
    expect(thrown.status).toBe(422);
    expect(thrown.json).toEqual({ payload: { '(toModelRequest)': 'cannot build the model request' } });
    const nothing = await post('/to-model-throws', envelope({ nothing: true }));
    expect(nothing.status).toBe(422);
    expect(nothing.json.payload['(toModelRequest)']).toMatch(/nothing/);
    expect(worker.ledger.totals.requests).toBe(before);
  });

  it('a schema refinement that throws is a 422 naming the payload', async () => {
    const r = await post('/refine-throws', envelope({}));
    expect(r.status).toBe(422);
    expect(r.json).toEqual({ payload: { '(payload)': 'refinement blew up' } });
  });

  it('an extension that throws on admission costs that request a 500, not the process; the ledger stays whole', async () => {
    observerThrows = true;
    try {
      const r = await post('/echo', envelope({ workload: 13 }, authData({ request_idx: 313 })));
      expect(r.status).toBe(500);
      await waitFor(() => worker.ledger.inflight === 0);
      expect(worker.ledger.deleteFailed.peek(Infinity)).toContain(313);
      ledgerAudit(worker);
    } finally {
      observerThrows = false;
    }
    const ok = await post('/echo', envelope({ fine: 1 }));
    expect(ok.status).toBe(200);
    ledgerAudit(worker);
  });
});
