import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import type { RequestEntry } from '../src/worker/ledger.js';
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
  useResources,
  waitFor,
  type ModelConnection,
} from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(128);
afterAll(() => agent.close());

/** A promise with its resolve exposed: a model handler waits on it until the test says go. */
function gate<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

/** Records the order in which the worker admitted requests (an observer, as the metrics part uses). */
function admissionOrder() {
  const order: number[] = [];
  return {
    order,
    extension: {
      name: 'test-admission-order',
      setup: () => ({ observer: { onAdmitted: (e: RequestEntry) => void order.push(e.requestIdx) } }),
    },
  };
}

describe('forwarding', () => {
  it('passes the payload to the model byte for byte and the answer back with its status and headers', async () => {
    const model = await res.add(
      startTestModel((req, r, body) => {
        r.writeHead(201, { 'content-type': 'application/json', 'x-model': 'yes', 'x-path': req.url ?? '' });
        r.end(JSON.stringify({ got: JSON.parse(body.toString('utf8')) }));
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: [echoHandler({ upstreamPath: '/v1/echo' })] }));
    // biome-ignore lint/correctness/noPrecisionLoss: a number past 2^53 must reach the model as the client wrote it
    const payload = { prompt: 'héllo 😀', n: 12345678901234567890, nested: { a: [1, 2.5, null, true] } };
    const r = await postJson(w.url + '/echo', envelope(payload), { dispatcher: agent });
    expect(r.status).toBe(201);
    expect(r.headers['x-model']).toBe('yes');
    expect(r.headers['x-path']).toBe('/v1/echo');
    expect(r.json).toEqual({ got: payload });
    expect(JSON.parse(model.bodies[0]!.toString('utf8'))).toEqual(payload);
    ledgerAudit(w);
    expect(w.ledger.totals.served).toBe(100);
  });

  it('forwards the payload exactly as the client wrote it: whitespace, key order and number spelling kept', async () => {
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const payloadText = '{ "b" : 1.50, "a":[ 1e2 ,"\\u00e9\\"}"], "big": 123456789012345678901234567890 }';
    const body = `{"payload": ${payloadText}, "auth_data": ${JSON.stringify(authData())}}`;
    const r = await postJson(w.url + '/echo', body, { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(model.bodies[0]!.toString('utf8')).toBe(payloadText);
  });

  it('uses toModelRequest / toClientResponse when the handler has them', async () => {
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(
      startTestWorker({
        modelUrl: model.url,
        handlers: [
          echoHandler({
            toModelRequest: (p: Record<string, unknown>) => ({ wrapped: p }),
            toClientResponse: (body: unknown, status: number) => ({ status, body }),
          }),
        ],
      }),
    );
    const r = await postJson(w.url + '/echo', envelope({ x: 1 }), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: 200, body: { echo: { wrapped: { x: 1 } } } });
  });

  it('serves requests from the moment it starts, before the model is known to be loaded', async () => {
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(
      startTestWorker({ modelUrl: model.url, perf: null, waitReady: false, env: { MODEL_LOG: join('/nonexistent-dir-for-test', 'model.log') } }),
    );
    expect(w.lifecycle.state).not.toBe('ready');
    const r = await postJson(w.url + '/echo', envelope({ early: true }), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ echo: { early: true } });
  });

  it('keeps one model connection alive across sequential requests', async () => {
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    for (let i = 0; i < 20; i++) expect((await postJson(w.url + '/echo', envelope({ i }), { dispatcher: agent })).status).toBe(200);
    expect(model.connections.length).toBe(1);
  });
});

describe('model failures', () => {
  it('a model 500 is passed on and counted errored, queued for delete with success=false', async () => {
    const model = await res.add(
      startTestModel((_q, r) => {
        r.writeHead(500, { 'content-type': 'application/json' });
        r.end('{"error":"CUDA out of memory"}');
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const auth = authData({ request_idx: 4242 });
    const r = await postJson(w.url + '/echo', envelope({ workload: 30 }, auth), { dispatcher: agent });
    expect(r.status).toBe(500);
    expect(w.ledger.totals.errored).toBe(30);
    expect(w.ledger.totals.served).toBe(0);
    expect(ledgerAudit(w)).toEqual({ succeeded: [], failed: [4242] });
  });

  it('a model that cannot be reached is an empty 500, counted errored', async () => {
    const model = await startTestModel(echoModel);
    const url = model.url;
    await model.close(); // nothing listens there any more
    const w = await res.add(startTestWorker({ modelUrl: url }));
    const r = await postJson(w.url + '/echo', envelope({ workload: 7 }), { dispatcher: agent });
    expect(r.status).toBe(500);
    expect(r.text).toBe('');
    expect(w.ledger.totals.errored).toBe(7);
    ledgerAudit(w);
  });

  it('a model that dies in the middle of a stream cuts the client off and is counted errored', async () => {
    const model = await res.add(
      startTestModel((_q, r) => {
        r.writeHead(200, { 'content-type': 'text/event-stream' });
        r.write('data: first\n\n');
        setTimeout(() => r.socket?.destroy(), 20);
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const r = await request(w.url + '/echo', { method: 'POST', body: JSON.stringify(envelope({ workload: 9 })), dispatcher: agent });
    expect(r.statusCode).toBe(200);
    await expect(r.body.text()).rejects.toThrow();
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.errored).toBe(9);
    ledgerAudit(w);
  });

  it('a model that does not answer within modelTimeoutMs gets a JSON 504, counted errored', async () => {
    const model = await res.add(startTestModel(() => undefined /* never answers */));
    const w = await res.add(startTestWorker({ modelUrl: model.url, spec: { modelTimeoutMs: 300 } }));
    const r = await postJson(w.url + '/echo', envelope({}), { dispatcher: agent });
    expect(r.status).toBe(504);
    expect(r.json.error).toMatch(/300 ms/);
    expect(w.ledger.totals.errored).toBe(100);
    await waitFor(
      () => model.openConnections() === 0,
      2000,
      () => 'the timed-out model connection to close',
    );
  });
});

describe('admission', () => {
  it('serves a non-parallel handler one at a time, in the order requests were admitted, under 50 concurrent requests', async () => {
    let inModel = 0;
    let maxInModel = 0;
    const model = await res.add(
      startTestModel(async (_q, r, body) => {
        inModel++;
        maxInModel = Math.max(maxInModel, inModel);
        await new Promise((d) => setTimeout(d, 2));
        inModel--;
        r.writeHead(200, { 'content-type': 'application/json' });
        r.end(body);
      }),
    );
    const seen = admissionOrder();
    const w = await res.add(
      startTestWorker({ modelUrl: model.url, handlers: [echoHandler({ allowParallelRequests: false })], extensions: [seen.extension], perf: 1e9 }),
    );
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => postJson(w.url + '/echo', envelope({ i }, authData({ request_idx: 10_000 + i })), { dispatcher: agent })),
    );
    answers.forEach((a, i) => {
      expect(a.status).toBe(200);
      expect(a.json).toEqual({ i });
    });
    const modelOrder = model.bodies.map((b) => 10_000 + (JSON.parse(b.toString('utf8')) as { i: number }).i);
    expect(seen.order).toHaveLength(50);
    expect(modelOrder).toEqual(seen.order);
    expect(maxInModel).toBe(1);
    ledgerAudit(w);
  });

  it('a queued request whose client leaves never reaches the model and the line moves on', async () => {
    const first = gate();
    const model = await res.add(
      startTestModel(async (_q, r, body) => {
        if ((JSON.parse(body.toString('utf8')) as { n: number }).n === 1) await first.promise;
        r.writeHead(200, { 'content-type': 'application/json' });
        r.end(body);
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: [echoHandler({ allowParallelRequests: false })], perf: 1e9 }));
    const p1 = postJson(w.url + '/echo', envelope({ n: 1 }, authData({ request_idx: 1 })), { dispatcher: agent });
    await waitFor(() => model.bodies.length === 1);
    const ac = new AbortController();
    const p2 = postJson(w.url + '/echo', envelope({ n: 2 }, authData({ request_idx: 2 })), { dispatcher: agent, signal: ac.signal });
    await waitFor(() => w.ledger.workingCount === 2);
    const p3 = postJson(w.url + '/echo', envelope({ n: 3 }, authData({ request_idx: 3 })), { dispatcher: agent });
    await waitFor(() => w.ledger.workingCount === 3);
    ac.abort();
    await expect(p2).rejects.toThrow();
    await waitFor(() => w.ledger.totals.cancelled === 100);
    first.open();
    expect((await p1).json).toEqual({ n: 1 });
    expect((await p3).json).toEqual({ n: 3 });
    expect(model.bodies.map((b) => JSON.parse(b.toString('utf8')).n)).toEqual([1, 3]);
    const audit = ledgerAudit(w);
    expect(audit.succeeded.sort()).toEqual([1, 2, 3]);
  });

  it('answers an empty 429 once the expected queue time passes max_queue_time, and counts it rejected', async () => {
    const release = gate();
    const model = await res.add(
      startTestModel(async (_q, r, body) => {
        await release.promise;
        r.writeHead(200, { 'content-type': 'application/json' });
        r.end(body);
      }),
    );
    // perf 100 load/s, 60 load a request: 0 s, then 0.6 s queued (admitted), then 1.2 s > 1 s (429).
    const w = await res.add(startTestWorker({ modelUrl: model.url, perf: 100, handlers: [echoHandler({ maxQueueTime: 1 })] }));
    const post = (idx: number) => postJson(w.url + '/echo', envelope({ workload: 60 }, authData({ request_idx: idx })), { dispatcher: agent });
    const a = post(1);
    await waitFor(() => model.bodies.length === 1);
    const b = post(2);
    await waitFor(() => model.bodies.length === 2);
    expect(w.ledger.expectedQueueTime()).toBeCloseTo(1.2, 6);
    const c = await post(3);
    expect(c.status).toBe(429);
    expect(c.text).toBe('');
    expect(w.ledger.totals.rejected).toBe(60);
    release.open();
    expect((await a).status).toBe(200);
    expect((await b).status).toBe(200);
    const d = await post(4);
    expect(d.status).toBe(200);
    const audit = ledgerAudit(w);
    expect(audit.failed).toEqual([3]);
    expect(audit.succeeded.sort()).toEqual([1, 2, 4]);
  });

  it('does not check the queue time when max_queue_time is unset', async () => {
    const release = gate();
    const model = await res.add(
      startTestModel(async (_q, r, body) => {
        await release.promise;
        r.end(body);
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url, perf: 1, handlers: [echoHandler({ maxQueueTime: null })] }));
    const all = Array.from({ length: 5 }, () => postJson(w.url + '/echo', envelope({ workload: 1000 }), { dispatcher: agent }));
    await waitFor(() => model.bodies.length === 5);
    release.open();
    for (const a of await Promise.all(all)) expect(a.status).toBe(200);
  });
});

describe('streaming', () => {
  it('passes the first chunks to the client before the model has finished', async () => {
    const finish = gate();
    let modelEnded = false;
    const model = await res.add(
      startTestModel(async (_q, r) => {
        r.writeHead(200, { 'content-type': 'text/event-stream' });
        r.write('data: {"token":"a"}\n\n');
        r.write('data: {"token":"b"}\n\n');
        await finish.promise; // the test opens this only after the client saw the first chunks
        r.end('data: [DONE]\n\n');
        modelEnded = true;
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const r = await request(w.url + '/echo', { method: 'POST', body: JSON.stringify(envelope({ stream: true })), dispatcher: agent });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('text/event-stream');
    let got = '';
    for await (const chunk of r.body) {
      got += chunk.toString();
      if (got.includes('"b"') && !modelEnded) {
        expect(got).toBe('data: {"token":"a"}\n\ndata: {"token":"b"}\n\n');
        finish.open();
      }
    }
    expect(modelEnded).toBe(true);
    expect(got).toBe('data: {"token":"a"}\n\ndata: {"token":"b"}\n\ndata: [DONE]\n\n');
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.served).toBe(100);
  });

  it('applies back-pressure: a client that does not read stalls the model instead of filling the worker', async () => {
    const CAP = 64 * 1024 * 1024;
    let written = 0;
    let stalledAt = -1;
    const stalled = gate<number>();
    const model = await res.add(
      startTestModel(async (_q, r) => {
        r.writeHead(200, { 'content-type': 'application/x-ndjson' });
        const piece = Buffer.alloc(64 * 1024, 0x61);
        while (written < CAP) {
          written += piece.length;
          if (!r.write(piece)) {
            // A drain that does not come within 500 ms means the pipe is full end to end.
            const drained = await Promise.race([
              new Promise<boolean>((d) => r.once('drain', () => d(true))),
              new Promise<boolean>((d) => setTimeout(() => d(false), 500)),
            ]);
            if (!drained && stalledAt < 0) {
              stalledAt = written;
              stalled.open(written);
              await new Promise((d) => r.once('drain', d));
            }
          }
        }
        r.end();
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const r = await request(w.url + '/echo', { method: 'POST', body: JSON.stringify(envelope({})), dispatcher: agent });
    const at = await stalled.promise; // the client has not read a byte yet
    expect(at).toBeLessThan(16 * 1024 * 1024);
    let total = 0;
    for await (const c of r.body) total += (c as Buffer).length;
    expect(total).toBe(CAP);
    await waitFor(() => w.ledger.totals.served === 100);
  }, 30_000);
});

describe('client aborts', () => {
  /** The time from the client's abort to the model seeing its connection close. */
  async function abortDelay(conn: ModelConnection, abort: () => void): Promise<number> {
    const t0 = performance.now();
    abort();
    const closedAt = await Promise.race([
      conn.closed,
      // A hang guard, not a speed bound: the model never answers, so only the abort can close it.
      new Promise<number>((_, rej) => setTimeout(() => rej(new Error('the model connection was not closed within 10 s')), 10_000)),
    ]);
    return closedAt - t0;
  }

  it('closes the model connection when the client leaves while the model thinks', async () => {
    const reached = gate<ModelConnection>();
    const model = await res.add(startTestModel((_q, _r, _b, conn) => reached.open(conn) /* never answers */));
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const ac = new AbortController();
    const p = postJson(w.url + '/echo', envelope({ workload: 11 }, authData({ request_idx: 77 })), { dispatcher: agent, signal: ac.signal });
    p.catch(() => undefined);
    const conn = await reached.promise;
    await abortDelay(conn, () => ac.abort());
    await expect(p).rejects.toThrow();
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.cancelled).toBe(11);
    expect(ledgerAudit(w)).toEqual({ succeeded: [77], failed: [] });
  });

  it('closes the model connection when the client leaves in the middle of a stream', async () => {
    const reached = gate<ModelConnection>();
    const model = await res.add(
      startTestModel((_q, r, _b, conn) => {
        r.writeHead(200, { 'content-type': 'text/event-stream' });
        r.write('data: 1\n\n');
        reached.open(conn);
        const t = setInterval(() => r.write('data: more\n\n'), 10);
        r.on('close', () => clearInterval(t));
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const ac = new AbortController();
    const r = await request(w.url + '/echo', { method: 'POST', body: JSON.stringify(envelope({})), dispatcher: agent, signal: ac.signal });
    const it = r.body[Symbol.asyncIterator]();
    expect(String((await it.next()).value)).toContain('data: 1');
    const conn = await reached.promise;
    await abortDelay(conn, () => ac.abort());
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.cancelled).toBe(100);
    ledgerAudit(w);
  });

  it('the next request opens a fresh model connection and is served', async () => {
    const reached = gate<ModelConnection>();
    let n = 0;
    const model = await res.add(
      startTestModel((_q, r, body, conn) => {
        if (++n === 1) return reached.open(conn);
        r.end(body);
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const ac = new AbortController();
    postJson(w.url + '/echo', envelope({}), { dispatcher: agent, signal: ac.signal }).catch(() => undefined);
    const conn = await reached.promise;
    ac.abort();
    await conn.closed;
    const r = await postJson(w.url + '/echo', envelope({ again: 1 }), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ again: 1 });
  });
});
