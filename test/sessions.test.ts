import { afterAll, describe, expect, it } from 'vitest';
import { sessionsExtension, parseCreatePayload, sameAuth, canonicalJson, SessionStore } from '../src/worker/sessions.js';
import { Ledger } from '../src/worker/ledger.js';
import { silentLogger } from './helpers/worker.js';
import { createHash } from 'node:crypto';
import { type TestEngine, useFileEngine } from './helpers/engine.js';
import { clientAgent, postJson, startTestModel, startTestWorker, useResources, waitFor, type TestModel, type TestWorker } from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(32);
afterAll(() => agent.close());

let engine: TestEngine;
useFileEngine((e) => (engine = e));

/** A model that echoes, hangs on `{mode: "hang"}` until its connection closes, and records /on_close posts. */
async function sessionModel(): Promise<TestModel & { onClose: unknown[] }> {
  const onClose: unknown[] = [];
  const model = await startTestModel((req, r, body) => {
    if (req.url === '/on_close') {
      onClose.push(JSON.parse(body.toString('utf8')));
      r.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const p = body.length ? (JSON.parse(body.toString('utf8')) as { mode?: string }) : {};
    if (p.mode === 'hang') return;
    r.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  return Object.assign(model, { onClose });
}

async function setup(
  opts: { maxSessions?: number; gcIntervalMs?: number; ext?: ReturnType<typeof sessionsExtension> } = {},
): Promise<{ w: TestWorker; model: TestModel & { onClose: unknown[] } }> {
  const model = await res.add(sessionModel());
  const w = await res.add(
    startTestWorker({
      modelUrl: model.url,
      unsecured: false,
      reportAddr: engine.url,
      spec: { maxSessions: opts.maxSessions ?? 3 },
      extensions: [opts.ext ?? sessionsExtension({ gcIntervalMs: opts.gcIntervalMs ?? 50 })],
      timings: { reportTickMs: 50, reportIdleMs: 500 },
    }),
  );
  return { w, model };
}

const post = (url: string, body: unknown) => postJson(url, body, { dispatcher: agent });

async function create(w: TestWorker, payload: unknown = {}, auth = engine.authData({ url: w.url, cost: 40 })) {
  const r = await post(w.url + '/session/create', { auth_data: auth, payload });
  return { r, auth, id: r.json?.session_id as string };
}

describe('/session/create', () => {
  it('opens a session (201) that counts as one working request of load auth_data.cost', async () => {
    const { w } = await setup();
    const before = Date.now() / 1000;
    const { r, auth, id } = await create(w, { lifetime: 30 });
    expect(r.status).toBe(201);
    expect(Object.keys(r.json).sort()).toEqual(['expiration', 'session_id']);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.json.expiration).toBeGreaterThanOrEqual(before + 30 - 0.01);
    expect(r.json.expiration).toBeLessThanOrEqual(Date.now() / 1000 + 30 + 0.01);
    expect(w.ledger.workingCount).toBe(1);
    expect(w.ledger.curLoad).toBe(40);
    // A session does not count against the queue-time check (only the working set and cur_load).
    expect(w.ledger.expectedQueueTime()).toBe(0);
    await engine.waitFor(() => engine.statuses.some((s) => (s.body.working_request_idxs as number[]).includes(auth.request_idx) && s.body.cur_load === 40));
  });

  it('answers 422 naming the field for bad bodies', async () => {
    const { w } = await setup();
    const url = w.url + '/session/create';
    const good = engine.authData({ url: w.url });
    const cases: Array<[unknown, unknown]> = [
      ['{not json', { error: 'invalid JSON', field: 'body', fields: { body: 'invalid JSON' } }],
      [[1, 2], { error: expect.stringContaining('object'), field: 'body', fields: { body: expect.stringContaining('object') } }],
      [{ payload: {} }, { auth_data: 'field missing' }],
      [{ auth_data: { ...good, signature: undefined }, payload: {} }, { auth_data: { signature: 'missing parameter' } }],
      [{ auth_data: good, payload: { lifetime: -1 } }, { payload: { lifetime: expect.any(String) } }],
      [{ auth_data: good, payload: { lifetime: 'soon' } }, { payload: { lifetime: expect.any(String) } }],
      [{ auth_data: good, payload: { on_close_route: 'http://127.0.0.1:1/x' } }, { payload: { on_close_route: expect.any(String) } }],
      [{ auth_data: good, payload: { on_close_route: '//127.0.0.1:1/x' } }, { payload: { on_close_route: expect.any(String) } }],
      [{ auth_data: good, payload: { on_close_payload: [1] } }, { payload: { on_close_payload: expect.any(String) } }],
      [{ auth_data: good, payload: 'x' }, { payload: 'must be an object' }],
    ];
    for (const [body, want] of cases) {
      const r = await post(url, typeof body === 'string' ? body : body);
      expect(r.status, JSON.stringify(body)).toBe(422);
      expect(r.json).toEqual(want);
    }
    const huge = await post(url, { auth_data: good, payload: { on_close_payload: { pad: 'x'.repeat(2 * 1024 * 1024) } } });
    expect(huge).toMatchObject({ status: 413, json: { field: 'body' } });
    expect(w.ledger.workingCount).toBe(0);
    expect(w.ledger.totals.requests).toBe(0);
  });

  it('answers 401 JSON for a signature that does not verify, and counts the session as rejected', async () => {
    const { w } = await setup();
    const auth = { ...engine.authData({ url: w.url, cost: 25 }), signature: engine.sign('http://127.0.0.1:9/elsewhere') };
    const r = await post(w.url + '/session/create', { auth_data: auth, payload: {} });
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ error: expect.any(String), field: 'auth_data.signature', fields: { 'auth_data.signature': expect.any(String) } });
    expect(w.ledger.totals.rejected).toBe(25);
    expect(w.ledger.workingCount).toBe(0);
    await engine.waitFor(() => engine.delivered().some((d) => d.idx === auth.request_idx));
    expect(engine.delivered().filter((d) => d.idx === auth.request_idx)).toEqual([{ idx: auth.request_idx, success: false }]);
  });

  it('answers 429 once max_sessions are open, and admits again after one closes', async () => {
    const { w } = await setup({ maxSessions: 2 });
    const a = await create(w);
    const b = await create(w);
    expect([a.r.status, b.r.status]).toEqual([201, 201]);
    const c = await create(w);
    expect(c.r.status).toBe(429);
    expect(c.r.json).toEqual({ error: expect.stringContaining('2'), field: 'max_sessions', fields: { max_sessions: expect.stringContaining('2') } });
    expect(w.ledger.workingCount).toBe(2);
    const end = await post(w.url + '/session/end', { session_id: a.id, session_auth: a.auth });
    expect(end.status).toBe(200);
    expect((await create(w)).r.status).toBe(201);
  });

  it('defaults max_sessions to 10', async () => {
    const model = await res.add(sessionModel());
    const w = await res.add(startTestWorker({ modelUrl: model.url, extensions: [sessionsExtension()] }));
    const statuses: number[] = [];
    for (let i = 0; i < 11; i++) statuses.push((await post(w.url + '/session/create', { auth_data: engine.authData({ url: w.url }), payload: {} })).status);
    expect(statuses).toEqual([...Array(10).fill(201), 429]);
  });
});

describe('/session/get and /session/health', () => {
  it('get returns the session; session_auth is compared canonically (key order does not matter)', async () => {
    const { w } = await setup();
    const { auth, id, r: created } = await create(w, { lifetime: 12, on_close_route: '/on_close', on_close_payload: { job: 7 } });
    const reordered = Object.fromEntries(Object.entries(auth).reverse());
    const r = await post(w.url + '/session/get', { session_id: id, session_auth: reordered });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      session_id: id,
      auth_data: auth,
      lifetime: 12,
      expiration: created.json.expiration,
      created_at: expect.any(Number),
      on_close_route: '/on_close',
      on_close_payload: { job: 7 },
    });
    expect(r.json.expiration - r.json.created_at).toBeCloseTo(12, 3);
  });

  it('get: 400 unknown, 401 when session_auth differs in any value, 422 for a bad body', async () => {
    const { w } = await setup();
    const { auth, id } = await create(w);
    const url = w.url + '/session/get';
    expect(await post(url, { session_id: 'nope', session_auth: auth })).toMatchObject({ status: 400, json: { error: 'unknown session', field: 'session_id' } });
    for (const wrong of [{ ...auth, cost: 41 }, { ...auth, signature: auth.signature.slice(0, -4) + 'AAAA' }, { ...auth, extra: 1 }, { cost: auth.cost }]) {
      expect(await post(url, { session_id: id, session_auth: wrong })).toMatchObject({ status: 401, json: { field: 'session_auth' } });
    }
    expect(await post(url, { session_id: id })).toMatchObject({ status: 422, json: { session_auth: 'field missing' } });
    expect(await post(url, { session_auth: auth })).toMatchObject({ status: 422, json: { session_id: 'field missing' } });
    expect(await post(url, { session_id: id, session_auth: 'x' })).toMatchObject({ status: 422, json: { session_auth: expect.any(String) } });
    expect(await post(url, 'nope')).toMatchObject({ status: 422, json: { error: 'invalid JSON', field: 'body' } });
  });

  it('health: ok true while open, ok false when unknown or closed, 401 when session_auth differs', async () => {
    const { w } = await setup();
    const { auth, id } = await create(w);
    const url = w.url + '/session/health';
    expect(await post(url, { session_id: id, session_auth: auth })).toMatchObject({ status: 200, json: { ok: true } });
    expect(await post(url, { session_id: 'unknown', session_auth: auth })).toMatchObject({ status: 200, json: { ok: false } });
    expect(await post(url, { session_id: id, session_auth: { ...auth, cost: 1 } })).toMatchObject({ status: 401, json: { field: 'session_auth' } });
    expect(await post(url, { session_id: id })).toMatchObject({ status: 422 });
    expect((await post(w.url + '/session/end', { session_id: id, session_auth: auth })).status).toBe(200);
    expect(await post(url, { session_id: id, session_auth: auth })).toMatchObject({ status: 200, json: { ok: false } });
  });
});

describe('/session/end', () => {
  it('200 then 400 (as the PyWorker); 400 unknown; 401 wrong auth leaves it open; the session is listed in /delete_requests/ once, when it closes', async () => {
    const { w, model } = await setup();
    const { auth, id } = await create(w, { on_close_route: '/on_close', on_close_payload: { a: 1 } });
    const url = w.url + '/session/end';
    expect(await post(url, { session_id: 'unknown', session_auth: auth })).toMatchObject({ status: 400, json: { field: 'session_id' } });
    expect(await post(url, { session_id: id, session_auth: { ...auth, reqnum: 0 } })).toMatchObject({ status: 401, json: { field: 'session_auth' } });
    expect(w.ledger.workingCount).toBe(1);
    expect(await post(url, { session_id: id })).toMatchObject({ status: 422 });
    // A request inside the session: counted as workload, not listed for deletion.
    const inner = engine.authData({ url: w.url });
    expect((await post(w.url + '/echo', { auth_data: inner, payload: {}, session_id: id })).status).toBe(200);
    expect(engine.delivered().some((d) => d.idx === auth.request_idx)).toBe(false);

    const r = await post(url, { session_id: id, session_auth: auth });
    expect(r.status).toBe(200);
    // The id alone, as the PyWorker answers: never the auth_data and its signature.
    expect(r.json).toEqual({ ended: true, removed_session: id });
    expect(w.ledger.workingCount).toBe(0);
    expect(await post(url, { session_id: id, session_auth: auth })).toMatchObject({
      status: 400,
      json: { error: 'session already closed', field: 'session_id' },
    });
    expect(await post(url, { session_id: id, session_auth: { ...auth, cost: 0 } })).toMatchObject({ status: 401 });
    // Requests with the closed session's id are refused.
    expect(await post(w.url + '/echo', { auth_data: engine.authData({ url: w.url }), payload: {}, session_id: id })).toMatchObject({
      status: 410,
      json: { error: 'invalid session' },
    });

    await engine.waitFor(() => engine.delivered().some((d) => d.idx === auth.request_idx));
    await waitFor(() => model.onClose.length === 1);
    expect(model.onClose[0]).toEqual({ a: 1, session_id: id });
    await new Promise((r) => setTimeout(r, 200)); // a few more report ticks
    expect(engine.delivered().filter((d) => d.idx === auth.request_idx)).toEqual([{ idx: auth.request_idx, success: true }]);
    expect(engine.delivered().some((d) => d.idx === inner.request_idx)).toBe(false);
    expect(w.ledger.totals.served).toBe(100 + 40); // the inner request's workload and the session's cost
  });

  it('is also served on the plain-HTTP internal listener (WORKER_HTTP_PORT), which serves nothing else', async () => {
    const { w } = await setup();
    expect(w.internalPort).toBeGreaterThan(0);
    expect(w.internalPort).not.toBe(w.port);
    const internal = `http://127.0.0.1:${w.internalPort}`;
    const { auth, id } = await create(w);
    expect(await post(internal + '/session/create', { auth_data: engine.authData({ url: w.url }), payload: {} })).toMatchObject({
      status: 404,
      json: { field: 'path' },
    });
    expect(await post(internal + '/session/get', { session_id: id, session_auth: auth })).toMatchObject({ status: 404 });
    expect(await post(internal + '/echo', { auth_data: auth, payload: {} })).toMatchObject({ status: 404 });
    expect(await post(internal + '/session/end', { session_id: id, session_auth: { ...auth, cost: 2 } })).toMatchObject({ status: 401 });
    expect(await post(internal + '/session/end', { session_id: id, session_auth: auth })).toMatchObject({ status: 200, json: { ended: true } });
    expect(await post(internal + '/session/end', { session_id: id, session_auth: auth })).toMatchObject({ status: 400 });
  });
});

describe('lifetime and expiry', () => {
  it('each request in the session pushes the expiration out by lifetime', async () => {
    const { w } = await setup();
    const { auth, id, r } = await create(w, { lifetime: 2 });
    await new Promise((res) => setTimeout(res, 300));
    const t = Date.now() / 1000;
    expect((await post(w.url + '/echo', { auth_data: engine.authData({ url: w.url }), payload: {}, session_id: id })).status).toBe(200);
    const got = await post(w.url + '/session/get', { session_id: id, session_auth: auth });
    expect(got.json.expiration).toBeGreaterThan(r.json.expiration + 0.2);
    expect(got.json.expiration).toBeGreaterThanOrEqual(t + 2 - 0.01);
  });

  it('an expired session is closed by the GC: its running request is aborted, then on_close_route gets the payload plus session_id', async () => {
    const { w, model } = await setup({ gcIntervalMs: 50 });
    const { auth, id } = await create(w, { lifetime: 0.6, on_close_route: '/on_close', on_close_payload: { job: 'x1', nested: { k: [1] } } });
    const inner = engine.authData({ url: w.url, cost: 5 });
    const hanging = post(w.url + '/echo', { auth_data: inner, payload: { mode: 'hang' }, session_id: id }).then(
      (r) => ({ status: r.status }),
      (err: Error) => ({ error: err.message }),
    );
    await waitFor(() => model.bodies.some((b) => b.includes('hang')));
    const modelConn = model.connections.at(-1)!;
    await waitFor(
      () => model.onClose.length === 1,
      5000,
      () => 'on_close call',
    );
    expect(model.onClose[0]).toEqual({ job: 'x1', nested: { k: [1] }, session_id: id });
    // The request running in the session was aborted: the client's answer ended, the model's connection closed.
    const outcome = await hanging;
    expect('error' in outcome || outcome.status >= 500).toBe(true);
    await modelConn.closed;
    expect(w.ledger.totals.cancelled).toBe(100);
    expect(w.ledger.workingCount).toBe(0);
    expect(w.ledger.inflight).toBe(0);
    expect(await post(w.url + '/session/get', { session_id: id, session_auth: auth })).toMatchObject({ status: 400 });
    expect(await post(w.url + '/session/end', { session_id: id, session_auth: auth })).toMatchObject({ status: 400 });
    await engine.waitFor(() => engine.delivered().some((d) => d.idx === auth.request_idx));
    expect(engine.delivered().filter((d) => d.idx === auth.request_idx || d.idx === inner.request_idx)).toEqual([{ idx: auth.request_idx, success: true }]);
  });

  it('an expired session refuses requests (410) even before the GC runs, and a failing on_close_route does not matter', async () => {
    const ext = sessionsExtension({ gcIntervalMs: 60_000, closeTimeoutMs: 500 });
    const { w, model } = await setup({ ext });
    const { id } = await create(w, { lifetime: 0.2, on_close_route: '/on_close' });
    await new Promise((r) => setTimeout(r, 300));
    expect(await post(w.url + '/echo', { auth_data: engine.authData({ url: w.url }), payload: {}, session_id: id })).toMatchObject({ status: 410 });
    expect(w.ledger.workingCount).toBe(1); // not collected yet
    await model.close(); // the on_close POST will be refused
    expect(ext.store()!.collectExpired()).toBe(1);
    await ext.store()!.settled();
    expect(model.onClose).toEqual([]);
    expect(w.ledger.workingCount).toBe(0);
    expect(ext.store()!.closedTotal.expired).toBe(1);
  });
});

describe('SessionStore', () => {
  it('closing aborts the running requests before the on_close POST is made, and ends the ledger entry once', async () => {
    let aborted = 0;
    const seenAtClose: number[] = [];
    const model = await res.add(
      startTestModel((_req, r, body) => {
        seenAtClose.push(aborted);
        r.writeHead(200).end(JSON.stringify(JSON.parse(body.toString('utf8'))));
      }),
    );
    const ledger = new Ledger();
    const store = new SessionStore({ ledger, logger: silentLogger(), modelUrl: model.url + '/', maxSessions: 1 });
    const auth = engine.authData({ url: 'http://127.0.0.1:1', cost: 9 });
    const s = store.create(auth, auth, { lifetime: 60, onCloseRoute: '/closed', onClosePayload: null })!;
    expect(store.create(auth, auth, { lifetime: 60, onCloseRoute: null, onClosePayload: null })).toBeNull();
    const untrack = store.track(s.id, () => aborted++);
    store.track(s.id, () => aborted++);
    untrack(); // that request finished on its own
    expect(store.close(s, 'ended')).toBe(true);
    expect(store.close(s, 'ended')).toBe(false);
    expect(aborted).toBe(1);
    await store.settled();
    expect(seenAtClose).toEqual([1]);
    expect(model.bodies[0]!.toString('utf8')).toBe(JSON.stringify({ session_id: s.id }));
    expect(ledger.totals.served).toBe(9);
    expect(ledger.deleteSucceeded.peek(10)).toEqual([auth.request_idx]);
    // Tracking a request of a session that is gone aborts it at once.
    let late = false;
    store.track(s.id, () => (late = true));
    await new Promise((r) => setImmediate(r));
    expect(late).toBe(true);
    await store.stop();
  });
});

describe('helpers', () => {
  it('sameAuth compares canonical JSON in constant time', () => {
    const a = { url: 'http://x', cost: 1, nested: { b: 2, a: [1, 'é'] } };
    const d = createHash('sha256').update(canonicalJson(a)).digest();
    expect(sameAuth(d, { nested: { a: [1, 'é'], b: 2 }, cost: 1, url: 'http://x' })).toBe(true);
    expect(sameAuth(d, { ...a, cost: 2 })).toBe(false);
    expect(sameAuth(d, { ...a, nested: { b: 2, a: [1, 'e'] } })).toBe(false);
    expect(sameAuth(d, null)).toBe(false);
  });

  it('parseCreatePayload applies the defaults', () => {
    expect(parseCreatePayload(undefined)).toEqual({ ok: true, value: { lifetime: 60, onCloseRoute: null, onClosePayload: null } });
    expect(parseCreatePayload({ lifetime: 5, on_close_route: '/x/y', on_close_payload: { a: 1 } })).toEqual({
      ok: true,
      value: { lifetime: 5, onCloseRoute: '/x/y', onClosePayload: { a: 1 } },
    });
  });
});
