import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { Ledger, type RequestEntry } from '../src/worker/ledger.js';
import { Lifecycle } from '../src/worker/lifecycle.js';
import { buildReport, Reporter, startFailureReporter, type ReporterOptions } from '../src/worker/reporter.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { clientAgent, postJson, silentLogger, startTestModel, startTestWorker, useResources, waitFor, type ModelHandler } from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(64);
afterAll(() => agent.close());

const TOKEN = 'mtok-reporter-Zq81xPL0';

/** The fields of PROTOCOL §4 and the JSON type each must have. */
const STATUS_FIELDS: Record<string, 'int' | 'number' | 'string' | 'int[]'> = {
  id: 'int',
  mtoken: 'string',
  version: 'string',
  loadtime: 'number',
  cur_load: 'number',
  rej_load: 'number',
  new_load: 'number',
  error_msg: 'string',
  max_perf: 'number',
  cur_perf: 'number',
  cur_capacity: 'number',
  max_capacity: 'number',
  num_requests_working: 'int',
  num_requests_recieved: 'int',
  additional_disk_usage: 'number',
  working_request_idxs: 'int[]',
  url: 'string',
};

function checkStatusShape(body: Record<string, unknown>): void {
  expect(Object.keys(body).sort()).toEqual(Object.keys(STATUS_FIELDS).sort());
  for (const [k, type] of Object.entries(STATUS_FIELDS)) {
    const v = body[k];
    const ok =
      type === 'int'
        ? Number.isInteger(v)
        : type === 'number'
          ? typeof v === 'number' && Number.isFinite(v)
          : type === 'string'
            ? typeof v === 'string'
            : Array.isArray(v) && v.every((x) => Number.isInteger(x));
    expect(ok, `${k} should be ${type}, got ${JSON.stringify(v)}`).toBe(true);
  }
}

/** A reporter on a real ledger and lifecycle, posting to real loopback engines. */
function rig(addrs: string[], over: Partial<ReporterOptions> = {}) {
  const ledger = new Ledger();
  const lifecycle = new Lifecycle();
  const reporter = new Reporter({
    addrs,
    containerId: 7,
    masterToken: TOKEN,
    version: '9.9.9',
    publicUrl: 'http://127.0.0.1:40123',
    ledger,
    lifecycle,
    logger: silentLogger(),
    tickMs: 50,
    idleMs: 600,
    retryDelayMs: 20,
    timeoutMs: 2000,
    ...over,
  });
  res.defer(() => reporter.stop());
  return { ledger, lifecycle, reporter };
}

function makeReady(lifecycle: Lifecycle): void {
  lifecycle.to('loading', 'test');
  lifecycle.to('benchmarking', 'test');
  lifecycle.to('ready', 'test');
}

let idx = 5000;
/** A request through the ledger: created, started, and (unless outcome is null) ended. */
function serve(ledger: Ledger, workload: number, outcome: 'success' | 'error' | 'cancelled' | 'rejected' | null): RequestEntry {
  const i = idx++;
  const e = ledger.create({ requestIdx: i, reqnum: i, workload, route: '/x' });
  if (outcome === 'rejected') {
    ledger.reject(e);
    return e;
  }
  ledger.start(e);
  if (outcome) ledger.end(e, outcome);
  return e;
}

const sum = (engine: TestEngine, field: string) => engine.statuses.reduce((a, s) => a + (s.body[field] as number), 0);

describe('worker_status from a running worker', () => {
  it('carries exactly the PROTOCOL §4 fields, with their types and the values of what happened', async () => {
    const engine = await res.add(startEngine());
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const handler: ModelHandler = async (_req, r, body) => {
      const p = JSON.parse(body.toString('utf8')) as { mode?: string };
      if (p.mode === 'hold') await held;
      const status = p.mode === 'fail' ? 500 : 200;
      r.writeHead(status, { 'content-type': 'application/json' }).end('{"ok":true}');
    };
    const model = await res.add(startTestModel(handler));
    const w = await res.add(
      startTestWorker({
        modelUrl: model.url,
        unsecured: false,
        reportAddr: engine.url,
        perf: 250,
        env: { MASTER_TOKEN: TOKEN, CONTAINER_ID: '42', PUBLIC_IPADDR: '127.0.0.1', VAST_TCP_PORT_0: '40123' },
        timings: { reportTickMs: 50, reportIdleMs: 400 },
      }),
    );
    const send = (payload: unknown, auth = engine.authData({ url: w.url, cost: 100 })) =>
      postJson(w.url + '/echo', { auth_data: auth, payload }, { dispatcher: agent });
    expect(engine.statuses.length).toBeGreaterThan(0);

    // One request held at the model: the report lists it as working.
    const holding = engine.authData({ url: w.url });
    const heldReq = send({ mode: 'hold' }, holding);
    await engine.waitFor(() => engine.statuses.some((s) => (s.body.working_request_idxs as number[]).includes(holding.request_idx)));
    const during = engine.statuses.find((s) => (s.body.working_request_idxs as number[]).includes(holding.request_idx))!.body;
    expect(during.num_requests_working).toBe(1);
    expect(during.cur_load).toBe(100);
    release();
    expect((await heldReq).status).toBe(200);

    expect((await send({ mode: 'ok' })).status).toBe(200);
    expect((await send({ mode: 'ok' })).status).toBe(200);
    expect((await send({ mode: 'fail' })).status).toBe(500);
    const forged = { ...engine.authData({ url: w.url }), signature: engine.sign('http://127.0.0.1:9/other') };
    expect((await send({ mode: 'ok' }, forged)).status).toBe(401);

    // Wait for a report taken after the last change (nothing working, everything counted).
    await waitFor(
      () => w.ledger.snapshot().counters.received === 0 && w.ledger.snapshot().counters.rejected === 0,
      5000,
      () => 'counters committed by a report',
    );
    const last = engine.statuses.at(-1)!.body;
    for (const s of engine.statuses) checkStatusShape(s.body);
    expect(last.id).toBe(42);
    expect(last.mtoken).toBe(TOKEN);
    expect(last.url).toBe('http://127.0.0.1:40123');
    expect(last.error_msg).toBe('');
    expect(last.max_perf).toBe(250);
    expect(last.loadtime).toBeGreaterThan(0);
    expect(last.loadtime).toBeCloseTo(w.lifecycle.loadtime, 6);
    // loadtime is 0 until ready, then fixed.
    for (const s of engine.statuses) expect([0, w.lifecycle.loadtime]).toContain(s.body.loadtime);
    expect(last.cur_capacity).toBe(0);
    expect(last.max_capacity).toBe(0);
    expect(last.num_requests_working).toBe(0);
    expect(last.working_request_idxs).toEqual([]);
    // Counters reset after each delivered report, so over all reports they add up to what happened.
    expect(sum(engine, 'cur_perf')).toBe(300); // 3 served × 100
    expect(sum(engine, 'rej_load')).toBe(100); // the forged signature
    expect(sum(engine, 'new_load')).toBe(400); // 4 started, none cancelled
    expect(sum(engine, 'num_requests_recieved')).toBe(4);
  });
});

describe('cadence', () => {
  it('reports a change without waiting for the idle period', async () => {
    const engine = await res.add(startEngine());
    // An idle period far beyond the wait below: a report that arrives was sent because of the change.
    const { ledger, lifecycle, reporter } = rig([engine.url], { tickMs: 50, idleMs: 600_000 });
    makeReady(lifecycle);
    reporter.start();
    await engine.waitFor(() => engine.statuses.length >= 1, 5000);
    const before = engine.statuses.length;
    serve(ledger, 10, 'success');
    await engine.waitFor(() => engine.statuses.length > before, 10_000);
    expect(engine.statuses[before]!.body.cur_perf).toBe(10);
  });

  it('nothing more often than the idle period when nothing changes', async () => {
    const engine = await res.add(startEngine());
    const { lifecycle, reporter } = rig([engine.url], { tickMs: 50, idleMs: 700 });
    makeReady(lifecycle);
    reporter.start();
    await engine.waitFor(() => engine.statuses.length >= 3, 5000);
    const idleGaps = engine.statuses.slice(1).map((s, i) => s.at - engine.statuses[i]!.at);
    // Arrival gaps jitter with scheduling on a busy machine; a per-tick sender would show ~50 ms gaps.
    for (const g of idleGaps) expect(g).toBeGreaterThanOrEqual(450);
  });

  it('while the model is not loaded, reports only every idle period, changes or not', async () => {
    const engine = await res.add(startEngine());
    const { ledger, lifecycle, reporter } = rig([engine.url], { tickMs: 50, idleMs: 600 });
    lifecycle.to('loading', 'test');
    reporter.start();
    await engine.waitFor(() => engine.statuses.length >= 1);
    // Changes every 50 ms for 1.5 s: a loaded worker would report each tick.
    for (let i = 0; i < 30; i++) {
      serve(ledger, 1, 'success');
      await new Promise((r) => setTimeout(r, 50));
    }
    const gaps = engine.statuses.slice(1).map((s, i) => s.at - engine.statuses[i]!.at);
    expect(gaps.length).toBeGreaterThanOrEqual(1);
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(350); // far above the 50 ms tick: not sent per change
    expect(engine.statuses.length).toBeLessThanOrEqual(4);
  });

  it('with the default timings: one report every 10 s when idle, and a change within about 1 s', async () => {
    const engine = await res.add(startEngine());
    const { ledger, lifecycle, reporter } = rig([engine.url], { tickMs: undefined, idleMs: undefined });
    makeReady(lifecycle);
    reporter.start();
    await engine.waitFor(() => engine.statuses.length >= 2, 14_000);
    const gap = engine.statuses[1]!.at - engine.statuses[0]!.at;
    expect(gap).toBeGreaterThanOrEqual(9500);
    expect(gap).toBeLessThan(12_000);
    const changedAt = Date.now();
    serve(ledger, 5, 'success');
    await engine.waitFor(() => engine.statuses.length >= 3, 5000);
    expect(engine.statuses[2]!.at - changedAt).toBeLessThan(1600);
  }, 30_000);
});

describe('REPORT_ADDR failover', () => {
  it('tries the first address 3 times, then the second; the next round starts at the first again', async () => {
    const first = await res.add(startEngine());
    const second = await res.add(startEngine());
    first.answer(500);
    const { lifecycle, reporter } = rig([first.url, second.url], { idleMs: 60_000 });
    makeReady(lifecycle);
    expect(await reporter.sendStatus()).toBe(true);
    expect(first.posts.filter((p) => p.path === '/worker_status/').map((p) => p.answered)).toEqual([500, 500, 500]);
    expect(second.statuses.length).toBe(1);
    first.answer(200);
    expect(await reporter.sendStatus()).toBe(true);
    expect(first.statuses.length).toBe(1);
    expect(second.statuses.length).toBe(1);
  });

  it('moves on when the first address refuses connections', async () => {
    const first = await res.add(startEngine());
    const second = await res.add(startEngine());
    await first.refuse();
    const { lifecycle, reporter } = rig([first.url, second.url]);
    makeReady(lifecycle);
    reporter.start();
    await second.waitFor(() => second.statuses.length >= 1, 5000);
    expect(second.statuses[0]!.body.id).toBe(7);
    expect(first.posts.length).toBe(0);
  });

  it('gives up on an address that does not answer within the timeout', async () => {
    const first = await res.add(startEngine());
    const second = await res.add(startEngine());
    // The first never answers within the test's life: without the 200 ms timeout sendStatus would
    // hang until the test times out, so returning at all shows the timeout (no wall-clock bound).
    first.slow(600_000);
    const { lifecycle, reporter } = rig([first.url, second.url], { timeoutMs: 200, idleMs: 60_000 });
    makeReady(lifecycle);
    expect(await reporter.sendStatus()).toBe(true);
    expect(first.posts.length).toBe(3);
    expect(first.statuses.length).toBe(0); // never acknowledged: the client had left
    expect(second.statuses.length).toBe(1);
  });

  it('reports failure when no address accepts, and keeps the counters', async () => {
    const a = await res.add(startEngine());
    const b = await res.add(startEngine());
    a.answer(503);
    await b.refuse();
    const { ledger, lifecycle, reporter } = rig([a.url, b.url], { idleMs: 60_000 });
    makeReady(lifecycle);
    serve(ledger, 30, 'success');
    serve(ledger, 7, 'rejected');
    expect(await reporter.sendStatus()).toBe(false);
    expect(a.posts.length).toBe(3);
    const snap = ledger.snapshot();
    expect(snap.counters.served).toBe(30);
    expect(snap.counters.rejected).toBe(7);
    expect(snap.numRequestsReceived).toBe(1);
    expect(reporter.stats.statusFailed).toBe(1);
  });
});

describe('counters', () => {
  it('are not reset by failed reports: the first report that gets through carries everything since the last one', async () => {
    const engine = await res.add(startEngine());
    const { ledger, lifecycle, reporter } = rig([engine.url], { tickMs: 50, idleMs: 300 });
    makeReady(lifecycle);
    reporter.start();
    await engine.waitFor(() => engine.statuses.length >= 1);
    serve(ledger, 10, 'success');
    await engine.waitFor(() => sumOf(engine, 'cur_perf') === 10);
    engine.answer(500);
    const failedBefore = engine.posts.filter((p) => p.answered === 500).length;
    serve(ledger, 20, 'success');
    serve(ledger, 3, 'cancelled');
    serve(ledger, 4, 'error');
    serve(ledger, 5, 'rejected');
    const working = serve(ledger, 6, null);
    await engine.waitFor(() => engine.posts.filter((p) => p.answered === 500 && p.path === '/worker_status/').length >= failedBefore + 4);
    const delivered = engine.statuses.length;
    engine.answer(200);
    await engine.waitFor(() => engine.statuses.length > delivered);
    const r = engine.statuses[delivered]!.body;
    expect(r.cur_perf).toBe(20);
    expect(r.rej_load).toBe(5);
    expect(r.new_load).toBe(20 + 3 + 4 + 6 - 3); // received − cancelled
    expect(r.num_requests_recieved).toBe(4);
    expect(r.cur_load).toBe(6);
    expect(r.working_request_idxs).toEqual([working.requestIdx]);
    await engine.waitFor(() => ledger.snapshot().counters.received === 0);
    expect(sumOf(engine, 'cur_perf')).toBe(30);
  });

  it('buildReport derives new_load = max(received − cancelled, 0) and cur_perf = served', () => {
    const ledger = new Ledger();
    serve(ledger, 5, 'cancelled');
    const snap = ledger.snapshot();
    const r = buildReport({ containerId: 1, masterToken: 't', version: 'v', publicUrl: 'u' }, snap, 0, 0);
    expect(r.new_load).toBe(0);
    expect(r.cur_perf).toBe(0);
  });
});

const sumOf = sum;

describe('/delete_requests/ delivery', () => {
  it('delivers every ended request_idx exactly once, with its success flag, across an engine outage and 5xx answers', async () => {
    const engine = await res.add(startEngine());
    const model = await res.add(
      startTestModel((_req, r, body) => {
        const p = JSON.parse(body.toString('utf8')) as { mode: string };
        if (p.mode === 'hang') return; // answered only by the connection closing
        r.writeHead(p.mode === 'fail' ? 500 : 200, { 'content-type': 'application/json' }).end('{}');
      }),
    );
    const w = await res.add(
      startTestWorker({
        modelUrl: model.url,
        unsecured: false,
        reportAddr: engine.url,
        timings: { reportTickMs: 50, reportIdleMs: 500, reportRetryDelayMs: 20 },
      }),
    );
    const expected = new Map<number, boolean>();
    let n = 0;
    const one = async (): Promise<void> => {
      const i = n++;
      const auth = engine.authData({ url: w.url, cost: 10 });
      let mode = 'ok';
      let success = true;
      let sendAuth: Record<string, unknown> = auth;
      if (i % 10 === 3) {
        sendAuth = { ...auth, signature: engine.sign('http://127.0.0.1:9/forged') };
        success = false; // rejected
      } else if (i % 10 === 7) {
        mode = 'fail';
        success = false; // error
      } else if (i % 50 === 11) {
        mode = 'hang'; // cancelled by the client: counts as success
      }
      expected.set(auth.request_idx, success);
      if (mode === 'hang') {
        const ac = new AbortController();
        const p = postJson(w.url + '/echo', { auth_data: sendAuth, payload: { mode, i } }, { dispatcher: agent, signal: ac.signal }).catch(() => null);
        await waitFor(() => model.bodies.some((b) => b.toString('utf8').includes(`"i":${i}}`)), 5000);
        ac.abort();
        await p;
        return;
      }
      const r = await postJson(w.url + '/echo', { auth_data: sendAuth, payload: { mode, i } }, { dispatcher: agent });
      expect(r.status).toBe(i % 10 === 3 ? 401 : mode === 'fail' ? 500 : 200);
    };
    const batch = async (count: number) => {
      const target = n + count;
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          while (n < target) await one();
        }),
      );
    };
    const queued = () => w.ledger.deleteSucceeded.size + w.ledger.deleteFailed.size;

    await batch(150);
    await engine.refuse();
    const deliveredAtOutage = engine.delivered().length;
    await batch(150);
    await new Promise((r) => setTimeout(r, 300)); // several ticks with the engine down
    expect(engine.delivered().length).toBe(deliveredAtOutage);
    expect(queued()).toBeGreaterThanOrEqual(150);
    await engine.accept();
    engine.answer(500);
    await batch(100);
    await engine.waitFor(() => engine.posts.filter((p) => p.path === '/delete_requests/' && p.answered === 500).length >= 3);
    expect(engine.delivered().length).toBe(deliveredAtOutage);
    engine.answer(200);
    await batch(100);
    await waitFor(
      () => w.ledger.inflight === 0 && queued() === 0 && engine.delivered().length >= expected.size,
      10_000,
      () => `delivered ${engine.delivered().length}/${expected.size}, queued ${queued()}`,
    );

    expect(expected.size).toBe(500);
    const seen = new Map<number, boolean>();
    for (const d of engine.delivered()) {
      expect(seen.has(d.idx), `request_idx ${d.idx} delivered twice`).toBe(false);
      seen.set(d.idx, d.success);
    }
    expect(seen.size).toBe(500);
    for (const [i, success] of expected) expect(seen.get(i), `request_idx ${i}`).toBe(success);
    for (const d of engine.deletes) {
      expect(d.worker_id).toBe(1);
      expect(typeof d.mtoken).toBe('string');
    }
  }, 45_000);

  it('never drops an id that ended while its queue was being posted, and never posts an id twice', async () => {
    const engine = await res.add(startEngine());
    engine.slow(200);
    const { ledger, reporter } = rig([engine.url], { idleMs: 60_000 });
    const first = serve(ledger, 1, 'success');
    const sending = reporter.sendDeletes();
    await new Promise((r) => setTimeout(r, 50));
    const later = [serve(ledger, 1, 'success'), serve(ledger, 1, 'error'), serve(ledger, 1, 'rejected')];
    expect(await sending).toBe(true);
    // The post carried only the id that had ended before it; the later ones wait for the next tick.
    expect(engine.deletes).toEqual([{ worker_id: 7, mtoken: TOKEN, request_idxs: [first.requestIdx], success: true }]);
    expect(ledger.deleteSucceeded.peek(10)).toEqual([later[0]!.requestIdx]);
    expect(ledger.deleteFailed.peek(10)).toEqual([later[1]!.requestIdx, later[2]!.requestIdx]);
    engine.slow(0);
    expect(await reporter.sendDeletes()).toBe(true);
    // One post per success flag.
    expect(engine.deletes.slice(1)).toEqual([
      { worker_id: 7, mtoken: TOKEN, request_idxs: [later[0]!.requestIdx], success: true },
      { worker_id: 7, mtoken: TOKEN, request_idxs: [later[1]!.requestIdx, later[2]!.requestIdx], success: false },
    ]);
    expect(ledger.deleteSucceeded.size + ledger.deleteFailed.size).toBe(0);
    // Two calls at once: the second waits for the first, so the same ids are never posted twice.
    const more = [serve(ledger, 1, 'success'), serve(ledger, 1, 'cancelled')];
    expect(await Promise.all([reporter.sendDeletes(), reporter.sendDeletes()])).toEqual([true, true]);
    const all = engine.delivered().map((d) => d.idx);
    expect(new Set(all).size).toBe(all.length);
    expect(all.slice(4)).toEqual(more.map((e) => e.requestIdx));
  });

  it('splits a large backlog into posts of deleteBatch ids, oldest first', async () => {
    const engine = await res.add(startEngine());
    const { ledger, reporter } = rig([engine.url], { deleteBatch: 3 });
    const ids = Array.from({ length: 7 }, () => serve(ledger, 1, 'success').requestIdx);
    expect(await reporter.sendDeletes()).toBe(true);
    expect(engine.deletes.map((d) => d.request_idxs)).toEqual([ids.slice(0, 3), ids.slice(3, 6), ids.slice(6)]);
  });

  it('a draining worker sends its last report and every pending delete', async () => {
    const engine = await res.add(startEngine());
    const model = await res.add(startTestModel((_q, r) => void r.writeHead(200).end('{}')));
    const w = await res.add(startTestWorker({ modelUrl: model.url, reportAddr: engine.url, timings: { reportTickMs: 60_000, reportIdleMs: 60_000 } }));
    const auth = engine.authData({ url: w.url });
    expect((await postJson(w.url + '/echo', { auth_data: auth, payload: {} }, { dispatcher: agent })).status).toBe(200);
    const statusesBefore = engine.statuses.length;
    await w.drain(2000);
    expect(engine.statuses.length).toBe(statusesBefore + 1);
    expect(engine.statuses.at(-1)!.body.cur_perf).toBe(100);
    expect(engine.delivered()).toEqual([{ idx: auth.request_idx, success: true }]);
  });
});

describe('logging', () => {
  it('never writes the master token, even at debug level', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reporter-log-'));
    res.defer(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'worker.log');
    const logger = createLogger('test', { level: 'debug', destination: file });
    const engine = await res.add(startEngine());
    const down = await res.add(startEngine());
    down.answer(500);
    const { ledger, lifecycle, reporter } = rig([down.url, engine.url], { logger, idleMs: 60_000 });
    makeReady(lifecycle);
    serve(ledger, 1, 'success');
    expect(await reporter.sendStatus()).toBe(true);
    expect(await reporter.sendDeletes()).toBe(true);
    logger.flush();
    await waitFor(
      () => {
        try {
          return readFileSync(file, 'utf8').includes('worker_status sent');
        } catch {
          return false;
        }
      },
      3000,
      () => 'log line',
    );
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('engine answered 500');
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(TOKEN.slice(2)); // not even most of it
  });
});

describe('logging during an outage', () => {
  it('logs the first failed round per attempt, later ones at debug, and the recovery once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reporter-outage-'));
    res.defer(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'worker.log');
    const logger = createLogger('test', { level: 'info', destination: file });
    const engine = await res.add(startEngine());
    await engine.refuse();
    const { ledger, lifecycle, reporter } = rig([engine.url], { logger, tickMs: 20, idleMs: 40 });
    makeReady(lifecycle);
    reporter.start();
    for (let i = 0; i < 10; i++) {
      serve(ledger, 1, 'success');
      await new Promise((r) => setTimeout(r, 30));
    }
    expect(reporter.stats.statusFailed + reporter.stats.deleteFailed).toBeGreaterThan(5);
    await engine.accept();
    await engine.waitFor(() => engine.statuses.length > 0 && ledger.deleteSucceeded.size === 0);
    logger.flush();
    await waitFor(
      () => readFileSync(file, 'utf8').includes('engine reachable again'),
      3000,
      () => 'recovery line',
    );
    const lines = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: string; msg: string });
    const warns = lines.filter((l) => l.level === 'warn');
    // The first status round (3 attempts) and delete round (1 attempt) run at once, plus one summary.
    expect(warns.length).toBeLessThanOrEqual(5);
    expect(lines.filter((l) => l.msg === 'engine reachable again').length).toBe(1);
  });
});

describe('startFailureReporter', () => {
  it('keeps sending the start-up error every interval until stopped', async () => {
    const engine = await res.add(startEngine());
    const r = startFailureReporter({
      addrs: [engine.url],
      containerId: 3,
      masterToken: TOKEN,
      version: '1.2.3',
      publicUrl: 'http://127.0.0.1:1',
      errorMsg: 'port taken',
      intervalMs: 100,
    });
    res.defer(() => r.stop());
    await engine.waitFor(() => engine.statuses.length >= 3);
    r.stop();
    const b = engine.statuses[0]!.body;
    expect(b).toMatchObject({ id: 3, mtoken: TOKEN, version: '1.2.3', error_msg: 'port taken', url: 'http://127.0.0.1:1' });
    checkStatusShape(b);
    const count = engine.statuses.length;
    await new Promise((res) => setTimeout(res, 300));
    expect(engine.statuses.length).toBe(count);
  });
});
