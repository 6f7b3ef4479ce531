/**
 * Bad input, generated (issue 8.3): property-based tests (fast-check) against a real, secured worker
 * on loopback (the openai handlers, the default extensions, model-sim behind it). Random and
 * malformed envelopes, random bytes, huge and deeply nested JSON, wrong content types, invalid
 * UTF-8, malformed HTTP, and slow-dripping headers and bodies. For every input: no crash, no
 * unhandled rejection, no 5xx; every 4xx (but the protocol's bodiless 401) is JSON naming what was
 * wrong; after all of it the ledger's invariant still holds.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatCompletions, completions } from '../handlers/openai.js';
import type { ModelSim } from '../src/model-sim/index.js';
import { defaultExtensions } from '../src/worker/extensions.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { clientAgent, ledgerAudit, startInstantOpenaiSim, startTestWorker, type TestWorker } from './helpers/worker.js';
import { totalsFromLedger } from '../benchmarks/lib/invariants.js';

const MAX_BODY = 256 * 1024;
const AUTH_FIELDS = ['cost', 'endpoint', 'reqnum', 'request_idx', 'signature', 'url'] as const;

let engine: TestEngine;
let logDir: string;
let sim: ModelSim;
let worker: TestWorker;
let defaultsWorker: TestWorker;
let defaultsDrip: Promise<{ answer: string; ms: number; sent: number; parts: number }>;
let signature: string;
const agent = clientAgent(32);
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  process.on('uncaughtException', onUnhandled);
  engine = await startEngine();
  logDir = mkdtempSync(join(tmpdir(), 'fuzz-'));
  sim = await startInstantOpenaiSim(logDir);
  worker = await startTestWorker({
    modelUrl: sim.url,
    handlers: [completions, chatCompletions],
    spec: { maxBodyBytes: MAX_BODY },
    unsecured: false,
    reportAddr: engine.url,
    extensions: defaultExtensions(),
    // Short client timeouts so the drip properties run in seconds (production: 10 s and 60 s).
    timings: { headersTimeoutMs: 1000, requestTimeoutMs: 2000 },
  });
  signature = engine.sign(worker.url);
  // A second worker with the production timeouts: a header drip started now is checked at the end.
  defaultsWorker = await startTestWorker({ modelUrl: sim.url, handlers: [completions], unsecured: true });
  const { port } = new URL(defaultsWorker.url);
  const started = performance.now();
  const parts = 'POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n'.split('');
  const progress = { sent: 0 };
  defaultsDrip = rawExchange(Number(port), parts, 250, 20_000, progress).then((answer) => ({
    answer,
    ms: performance.now() - started,
    sent: progress.sent,
    parts: parts.length,
  }));
});

afterAll(async () => {
  await worker?.close();
  await defaultsWorker?.close();
  await sim?.close();
  await engine?.close();
  await agent.close();
  rmSync(logDir, { recursive: true, force: true });
  process.off('unhandledRejection', onUnhandled);
  process.off('uncaughtException', onUnhandled);
});

let nextIdx = 50_000_000;
function validEnvelope(): { auth_data: Record<string, unknown>; payload: Record<string, unknown> } {
  const idx = nextIdx++;
  return {
    auth_data: { cost: 20, endpoint: 'fuzz', reqnum: idx, request_idx: idx, signature, url: worker.url },
    payload: { prompt: 'fuzz me', max_tokens: 2 },
  };
}

interface Answer {
  status: number;
  text: string;
  json: any;
  contentType: string;
}

async function post(body: string | Buffer, opts: { path?: string; contentType?: string | null } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.contentType !== null) headers['content-type'] = opts.contentType ?? 'application/json';
  const r = await request(`${worker.url}${opts.path ?? '/v1/completions'}`, { method: 'POST', headers, body, dispatcher: agent });
  const text = await r.body.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, text, json, contentType: String(r.headers['content-type'] ?? '') };
}

/** The shape every refusal must have: a 4xx, JSON, an object naming at least one thing that was wrong. */
function expectNamedRefusal(a: Answer): void {
  expect(a.status, a.text).toBeGreaterThanOrEqual(400);
  expect(a.status, a.text).toBeLessThan(500);
  if (a.status === 401 || a.status === 429) return; // the protocol's bodiless answers
  expect(a.contentType).toMatch(/application\/json/);
  expect(typeof a.json).toBe('object');
  expect(Object.keys(a.json ?? {}).length).toBeGreaterThan(0);
}

const notNumeric = fc.oneof(
  fc.string().filter((s) => s.trim() === '' || !Number.isFinite(Number(s))),
  fc.boolean(),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 3 }),
  fc.array(fc.integer(), { maxLength: 3 }),
);
const notString = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.array(fc.string(), { maxLength: 2 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.string(), { maxKeys: 2 }),
);

/** One way to break a valid envelope, and what the worker must say about it. */
type Breakage = { name: string; apply(e: any): void; expect(a: Answer): void };

const field422 = (path: string[]) => (a: Answer) => {
  expect(a.status, a.text).toBe(422);
  let v = a.json;
  for (const p of path) v = v?.[p];
  expect(v, `${path.join('.')} in ${a.text}`).toBeDefined();
};

const breakages: fc.Arbitrary<Breakage> = fc.oneof(
  fc.constantFrom(...AUTH_FIELDS).map((f) => ({
    name: `auth_data.${f} removed`,
    apply: (e: any) => delete e.auth_data[f],
    expect: (a: Answer) => {
      field422(['auth_data', f])(a);
      expect(a.json.auth_data[f]).toBe('missing parameter');
    },
  })),
  fc
    .tuple(fc.constantFrom('cost', 'reqnum', 'request_idx'), notNumeric)
    .map(([f, v]) => ({ name: `auth_data.${f} = ${JSON.stringify(v)}`, apply: (e: any) => (e.auth_data[f] = v), expect: field422(['auth_data', f]) })),
  fc
    .tuple(
      fc.constantFrom('reqnum', 'request_idx'),
      fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)),
    )
    .map(([f, v]) => ({ name: `auth_data.${f} = ${v}`, apply: (e: any) => (e.auth_data[f] = v), expect: field422(['auth_data', f]) })),
  fc
    .integer({ min: -1e9, max: -1 })
    .map((v) => ({ name: `auth_data.cost = ${v}`, apply: (e: any) => (e.auth_data.cost = v), expect: field422(['auth_data', 'cost']) })),
  fc
    .tuple(fc.constantFrom('endpoint', 'signature', 'url'), notString)
    .map(([f, v]) => ({ name: `auth_data.${f} = ${JSON.stringify(v)}`, apply: (e: any) => (e.auth_data[f] = v), expect: field422(['auth_data', f]) })),
  fc
    .oneof(fc.string(), fc.integer(), fc.array(fc.integer()), fc.constant(null))
    .map((v) => ({ name: `auth_data = ${JSON.stringify(v)}`, apply: (e: any) => (e.auth_data = v), expect: field422(['auth_data']) })),
  fc.constant({ name: 'auth_data removed', apply: (e: any) => delete e.auth_data, expect: (a: Answer) => expect(a.json?.auth_data).toBe('field missing') }),
  fc.constant({ name: 'payload removed', apply: (e: any) => delete e.payload, expect: (a: Answer) => expect(a.json?.payload).toBe('field missing') }),
  fc
    .tuple(
      fc.constantFrom('prompt', 'max_tokens'),
      fc.oneof(
        fc.integer({ max: 0 }),
        fc.double().filter((d) => !Number.isInteger(d)),
        fc.boolean(),
        fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }),
      ),
    )
    .map(([f, v]) => ({
      name: `payload.${f} = ${JSON.stringify(v)}`,
      apply: (e: any) => (e.payload[f] = v),
      expect: field422(['payload', f]),
    })),
  fc
    .oneof(fc.boolean(), fc.array(fc.integer(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }))
    .map((v) => ({ name: `session_id = ${JSON.stringify(v)}`, apply: (e: any) => (e.session_id = v), expect: field422(['session_id']) })),
  fc.string({ minLength: 1, maxLength: 40 }).map((v) => ({
    name: `session_id = ${JSON.stringify(v)} (no such session)`,
    apply: (e: any) => (e.session_id = v),
    expect: (a: Answer) => {
      expect(a.status).toBe(410);
      expect(a.json).toEqual({ error: 'invalid session', field: 'session_id', fields: { session_id: 'invalid session' } });
    },
  })),
  fc.string({ maxLength: 400 }).map((v) => ({
    name: `signature = ${JSON.stringify(v.slice(0, 20))}`,
    apply: (e: any) => (e.auth_data.signature = v),
    expect: (a: Answer) => expect([a.status, a.text]).toEqual([401, '']),
  })),
  fc
    .webUrl()
    .map((v) => ({ name: `url = ${v}`, apply: (e: any) => (e.auth_data.url = v), expect: (a: Answer) => expect([a.status, a.text]).toEqual([401, '']) })),
  // Changing what the compatible signature does not cover is not a refusal (strict mode: test/security.test.ts).
  fc.tuple(fc.constantFrom('cost', 'reqnum', 'request_idx'), fc.integer({ min: 0, max: 1e9 })).map(([f, v]) => ({
    name: `auth_data.${f} = ${v} (valid)`,
    apply: (e: any) => (e.auth_data[f] = f === 'request_idx' ? nextIdx++ : v),
    expect: (a: Answer) => expect(a.status, a.text).toBe(200),
  })),
);

describe('fuzzing the request path', () => {
  it('a valid envelope is served (the baseline every property breaks)', async () => {
    const a = await post(JSON.stringify(validEnvelope()));
    expect(a.status, a.text).toBe(200);
    expect(a.json.choices).toHaveLength(1);
  });

  it('one broken field of an envelope: the answer names exactly that problem', async () => {
    await fc.assert(
      fc.asyncProperty(breakages, async (b) => {
        const e = validEnvelope();
        b.apply(e);
        const a = await post(JSON.stringify(e));
        if (a.status !== 200) expectNamedRefusal(a);
        b.expect(a);
      }),
      { numRuns: 400 },
    );
  });

  it('several broken fields at once are all named in one 422', async () => {
    await fc.assert(
      fc.asyncProperty(fc.subarray([...AUTH_FIELDS], { minLength: 2 }), fc.boolean(), async (removed, noPayload) => {
        const e: any = validEnvelope();
        for (const f of removed) delete e.auth_data[f];
        if (noPayload) delete e.payload;
        const a = await post(JSON.stringify(e));
        expect(a.status).toBe(422);
        expect(Object.keys(a.json.auth_data).sort()).toEqual([...removed].sort());
        expect(a.json.payload).toBe(noPayload ? 'field missing' : undefined);
      }),
      { numRuns: 60 },
    );
  });

  it('any JSON value that is not an envelope is a 422 naming the problem', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (v) => {
        const a = await post(JSON.stringify(v));
        expectNamedRefusal(a);
        expect(a.status).toBe(422);
        expect(Object.keys(a.json).every((k) => ['error', 'auth_data', 'payload', 'session_id'].includes(k))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('random bytes, whatever the content type, are a JSON 4xx', async () => {
    const contentType = fc.constantFrom(
      'application/json',
      'text/plain',
      'application/octet-stream',
      'multipart/form-data; boundary=x',
      'application/x-www-form-urlencoded',
      'application/json; charset=utf-16',
      '*/*',
      'garbage',
    );
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), contentType, async (bytes, ct) => {
        const a = await post(Buffer.from(bytes), { contentType: ct });
        expectNamedRefusal(a);
      }),
      { numRuns: 200 },
    );
  });

  it('the content type does not matter: a valid JSON envelope is served, a form body is a 422 "invalid JSON"', async () => {
    const contentType = fc.option(
      fc.constantFrom(
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/octet-stream',
        'application/xml',
        'application/json; charset=latin1',
      ),
      { nil: null },
    );
    await fc.assert(
      fc.asyncProperty(contentType, async (ct) => {
        const ok = await post(JSON.stringify(validEnvelope()), { contentType: ct });
        expect(ok.status, ok.text).toBe(200);
        const form = await post('auth_data=1&payload=2', { contentType: ct });
        expect([form.status, form.json]).toEqual([422, { error: 'invalid JSON' }]);
      }),
      { numRuns: 30 },
    );
  });

  it('invalid UTF-8 inside a valid envelope never reaches the model as invalid JSON and never breaks the worker', async () => {
    const invalid = fc.constantFrom([0xff], [0xc0, 0x80], [0x80], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]);
    await fc.assert(
      fc.asyncProperty(invalid, fc.constantFrom('prompt', 'url', 'structure'), async (bad, where) => {
        const e = validEnvelope();
        const marker = 'MARKER';
        if (where === 'prompt') e.payload.prompt = `a${marker}b`;
        if (where === 'url') e.auth_data.url = `${worker.url}/${marker}`;
        let text = JSON.stringify(e);
        if (where === 'structure') text = text.replace('"payload"', `"payload"${marker}`);
        const i = text.indexOf(marker);
        const body = Buffer.concat([Buffer.from(text.slice(0, i)), Buffer.from(bad), Buffer.from(text.slice(i + marker.length))]);
        const a = await post(body);
        if (where === 'prompt') expect(a.status, a.text).toBe(200); // replaced by U+FFFD, re-serialized for the model
        if (where === 'url') expect(a.status).toBe(401); // not the url the engine signed
        if (where === 'structure') expect([a.status, a.json]).toEqual([422, { error: 'invalid JSON' }]);
      }),
      { numRuns: 60 },
    );
  });

  it('deeply nested JSON anywhere in the envelope is served or refused with a 4xx naming the field, never a 5xx', async () => {
    const nest = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    const place = fc.constantFrom('payload', 'payload.extra', 'auth_data.extra', 'auth_data', 'session_id', 'top.extra');
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1_000, max: 100_000 }), place, async (depth, where) => {
        const e: any = validEnvelope();
        const token = '"__DEEP__"';
        if (where === 'payload') e.payload = '__DEEP__';
        if (where === 'payload.extra') e.payload.extra = '__DEEP__';
        if (where === 'auth_data.extra') e.auth_data.extra = '__DEEP__';
        if (where === 'auth_data') e.auth_data = '__DEEP__';
        if (where === 'session_id') e.session_id = '__DEEP__';
        if (where === 'top.extra') e.extra = '__DEEP__';
        const a = await post(JSON.stringify(e).replace(token, nest(depth)));
        if (a.status !== 200) expectNamedRefusal(a);
        // auth_data is hashed and signed by recursive code, so it may nest 32 levels at most.
        const expected: Record<string, number> = {
          payload: 422,
          'payload.extra': 200,
          'auth_data.extra': 422,
          auth_data: 422,
          session_id: 422,
          'top.extra': 200,
        };
        expect(a.status, `${where} at depth ${depth}: ${a.text.slice(0, 200)}`).toBe(expected[where]);
        if (where === 'auth_data.extra') expect(a.json.auth_data.extra).toMatch(/nested deeper than 32 levels/);
      }),
      { numRuns: 40 },
    );
  });

  it('bodies over the size limit are a 413 naming the body, declared or streamed', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: MAX_BODY + 1, max: MAX_BODY * 4 }), async (size) => {
        const e = validEnvelope();
        e.payload.prompt = 'x'.repeat(size);
        const a = await post(JSON.stringify(e));
        expect([a.status, a.json?.field]).toEqual([413, 'body']);
      }),
      { numRuns: 10 },
    );
    // A body just under the limit is served.
    const e = validEnvelope();
    e.payload.prompt = 'y'.repeat(MAX_BODY - 2000);
    const ok = await post(JSON.stringify(e));
    expect(ok.status, ok.text.slice(0, 200)).toBe(200);
    // Streamed without a length (chunked): cut at the limit all the same.
    const r = await request(`${worker.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: Readable.from(
        (function* () {
          for (let i = 0; i < 40; i++) yield Buffer.alloc(16 * 1024, 0x20);
        })(),
      ),
      dispatcher: agent,
    }).catch((err: Error) => err);
    if (!(r instanceof Error)) {
      expect(r.statusCode).toBe(413);
      expect(JSON.parse(await r.body.text()).field).toBe('body');
    }
  });

  it('random junk on the session routes is a JSON 4xx naming the field', async () => {
    const path = fc.constantFrom('/session/create', '/session/get', '/session/health', '/session/end');
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc
        .record({ session_id: fc.oneof(fc.string(), fc.integer(), fc.constant(null)), session_auth: fc.jsonValue({ maxDepth: 2 }) }, { requiredKeys: [] })
        .map((v) => JSON.stringify(v)),
      fc
        .record({
          auth_data: fc.jsonValue({ maxDepth: 2 }),
          payload: fc.record({ lifetime: fc.jsonValue({ maxDepth: 1 }), on_close_route: fc.jsonValue({ maxDepth: 1 }) }, { requiredKeys: [] }),
        })
        .map((v) => JSON.stringify(v)),
      fc.string(),
    );
    await fc.assert(
      fc.asyncProperty(path, body, async (p, b) => {
        const a = await post(b, { path: p });
        if (p === '/session/health' && a.status === 200) expect(a.json).toEqual({ ok: false });
        else expectNamedRefusal(a);
      }),
      { numRuns: 200 },
    );
  });

  it('deeply nested session auth or auth_data on the session routes is a 4xx naming it, never a 5xx', async () => {
    const nest = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    const auth = `{"cost":1,"endpoint":"fuzz","reqnum":1,"request_idx":${nextIdx++},"signature":"${signature}","url":"${worker.url}"}`;
    const open = await post(`{"auth_data":${auth},"payload":{"lifetime":30}}`, { path: '/session/create' });
    expect(open.status, open.text).toBe(201);
    for (const depth of [100, 5_000, 50_000]) {
      const deepAuth = auth.replace(/}$/, `,"extra":${nest(depth)}}`);
      const create = await post(`{"auth_data":${deepAuth},"payload":{"lifetime":5}}`, { path: '/session/create' });
      expectNamedRefusal(create);
      expect(create.json.auth_data.extra).toMatch(/nested deeper/);
      for (const p of ['/session/get', '/session/health', '/session/end']) {
        for (const id of [open.json.session_id, 'no-such-session']) {
          const a = await post(`{"session_id":"${id}","session_auth":${deepAuth}}`, { path: p });
          expectNamedRefusal(a);
          expect(a.json.session_auth).toMatch(/nested deeper/);
        }
      }
    }
    const end = await post(`{"session_id":"${open.json.session_id}","session_auth":${auth}}`, { path: '/session/end' });
    expect(end.status, end.text).toBe(200);
  });

  it('malformed HTTP is answered 400 JSON and closed, never crashes the worker', async () => {
    const { port } = new URL(worker.url);
    const junk = fc.oneof(
      fc.string({ minLength: 1, maxLength: 200 }).map((s) => `${s}\r\n\r\n`),
      fc.constantFrom(
        'POST /v1/completions HTTP/1.1\r\ncontent-length: abc\r\n\r\n',
        'POST /v1/completions HTTP/9.9\r\n\r\n',
        'POST /v1/completions HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
        'GET / HTTP/1.1\r\nbad header\r\n\r\n',
      ),
    );
    await fc.assert(
      fc.asyncProperty(junk, async (text) => {
        const answer = await rawExchange(Number(port), [text], 0);
        // Either the parser refused it (400 JSON naming the request, or its missing Host) or it happened to be a valid request.
        if (answer.startsWith('HTTP/1.1 400')) expect(answer).toMatch(/"field":"(request|host)"/);
        else expect(answer === '' || /^HTTP\/1\.1 \d{3}/.test(answer)).toBe(true);
      }),
      { numRuns: 60 },
    );
    expect((await post(JSON.stringify(validEnvelope()))).status).toBe(200);
  });

  it('slow-dripping headers and bodies are cut by the header and request timeouts with a 408 JSON, while others are served', async () => {
    const { port } = new URL(worker.url);
    const e = JSON.stringify(validEnvelope());
    const head = `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(e)}\r\n\r\n`;
    const headerParts = head.split('');
    const bodyParts = [head, ...e.split('')];
    const headerSent = { sent: 0 };
    const bodySent = { sent: 0 };
    const [headerDrip, bodyDrip] = await Promise.all([
      // One header byte every 50 ms: the 1 s header timeout ends it long before the headers do.
      rawExchange(Number(port), headerParts, 50, 6000, headerSent),
      // Headers at once, then one body byte every 20 ms: the 2 s request timeout ends it.
      rawExchange(Number(port), bodyParts, 20, 6000, bodySent),
      // Meanwhile a normal client is served.
      post(e.replace(/"request_idx":\d+/, `"request_idx":${nextIdx++}`)).then((a) => expect(a.status).toBe(200)),
    ]);
    expect(headerDrip).toMatch(/^HTTP\/1\.1 408/);
    expect(headerDrip).toMatch(/"field":"request"/);
    expect(bodyDrip).toMatch(/^HTTP\/1\.1 408/);
    // Both ended by the timeouts (1 s, 2 s), not by the drip finishing (~5 s, ~9 s): counted in
    // bytes the client had sent when it was cut, not in wall-clock time (no machine-speed bound).
    expect(headerSent.sent).toBeLessThan(headerParts.length);
    expect(bodySent.sent).toBeLessThan(bodyParts.length);
  });

  it('with the production defaults, a client dripping its headers is cut at the 10 s header timeout', async () => {
    const { answer, ms, sent, parts } = await defaultsDrip;
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    // The drip would take ~14 s to send its headers; the default 10 s timeout ends it first: cut
    // before its last byte. A timer never fires early, so the lower bound holds on any machine.
    expect(sent).toBeLessThan(parts);
    expect(ms).toBeGreaterThan(9_000);
  }, 20_000);

  it('after all of it: no crash, no unhandled rejection, and the ledger adds up', async () => {
    expect((await post(JSON.stringify(validEnvelope()))).status).toBe(200);
    expect(unhandled).toEqual([]);
    const t = totalsFromLedger(worker.ledger);
    expect(t.received).toBeCloseTo(t.served + t.errored + t.cancelled + t.pending, 6);
    ledgerAudit(worker);
    expect(worker.lifecycle.state).toBe('ready');
  });
});

/** Write `parts` to a raw connection, `gapMs` apart; resolve with everything the server sent before it closed. */
function rawExchange(port: number, parts: string[], gapMs: number, giveUpMs = 6000, progress: { sent: number } = { sent: 0 }): Promise<string> {
  return new Promise((resolve) => {
    let answer = '';
    const s = connect(port, '127.0.0.1');
    let i = 0;
    const timer = setInterval(
      () => {
        if (s.destroyed || i >= parts.length) return clearInterval(timer);
        s.write(parts[i++]!);
        progress.sent = i;
      },
      Math.max(gapMs, 1),
    );
    s.on('data', (d) => (answer += d.toString('latin1')));
    const done = () => {
      clearInterval(timer);
      resolve(answer);
    };
    s.on('close', done);
    s.on('error', () => undefined);
    // A request that happened to be complete and valid keeps the connection alive: stop listening.
    setTimeout(() => s.destroy(), giveUpMs).unref();
  });
}
