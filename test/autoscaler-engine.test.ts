import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/autoscaler/clock.js';
import type { Engine } from '../src/autoscaler/engine.js';
import { endpointSchema, type EndpointInput } from '../src/autoscaler/params.js';
import { fakeClockEngine, RecordingProvider } from './helpers/autoscaler.js';

/**
 * The engine on a fake clock, with the test playing the workers through the same methods the
 * HTTP routes call. The provider (test/helpers/autoscaler.ts) records what it was asked and can
 * emit events.
 */

const engines: Engine[] = [];
afterEach(() => {
  for (const e of engines.splice(0)) e.close();
});

function setup(endpoint: Partial<EndpointInput> = {}) {
  const clock = new FakeClock(1_000_000);
  const provider = new RecordingProvider();
  const engine = fakeClockEngine({ provider, clock, logName: 'engine-test' });
  engines.push(engine);
  engine.addEndpoint(
    endpointSchema.parse({
      name: 'ep',
      api_key: 'client-key-1234',
      cold_mult: 0,
      workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }],
      ...endpoint,
    }),
  );
  engine.start();
  /** Let microtasks (provider promises) settle, then advance. */
  const advance = async (ms: number) => {
    clock.advanceBy(ms);
    await new Promise((r) => setImmediate(r));
  };
  const spec = (id: number) => provider.specs.find((s) => s.workerId === id)!;
  const report = (id: number, over: Record<string, unknown> = {}) =>
    engine.workerStatus({ id, mtoken: spec(id).masterToken, loadtime: 2, max_perf: 100, cur_load: 0, url: `http://127.0.0.1:${20000 + id}`, ...over });
  const route = (over: Record<string, unknown> = {}) => engine.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 100, ...over });
  return { clock, provider, engine, advance, report, route, spec };
}

describe('reports', () => {
  it('sums the load each worker refused (rej_load) across reports, for the dashboard', async () => {
    const t = setup({ cold_workers: 1, max_workers: 1 });
    await t.advance(1000);
    t.report(1, { rej_load: 300 });
    t.report(1, { rej_load: 0 });
    t.report(1, { rej_load: 150 });
    expect(t.engine.workers.get(1)!.rejLoad).toBe(450);
  });
});

describe('router', () => {
  it('sends each request to the worker with the lowest expected queue time, counting routed-but-unreported load', async () => {
    const t = setup({ cold_workers: 3, max_workers: 3, min_load: 1 });
    await t.advance(1000);
    expect(t.provider.specs.map((s) => s.workerId)).toEqual([1, 2, 3]);
    // Worker 1: perf 100, 300 queued → 3 s. Worker 2: perf 200, 200 → 1 s. Worker 3: perf 50, idle → 0 s.
    t.report(1, { max_perf: 100, cur_load: 300, num_requests_working: 3 });
    t.report(2, { max_perf: 200, cur_load: 200, num_requests_working: 2 });
    t.report(3, { max_perf: 50, cur_load: 0 });
    const picks: number[] = [];
    const idxs: number[] = [];
    for (let i = 0; i < 4; i++) {
      const out = t.route();
      const body = out.body as { worker_id: number; request_idx: number };
      picks.push(body.worker_id);
      idxs.push(body.request_idx);
    }
    // Earliest expected finish, (load + 100) / perf: 2 (1.5 s); then 2 and 3 tie at 2 s and take
    // turns (2 first); 3 (2 s) beats 2 (2.5 s); then 2 (2.5 s) beats 3 (4 s).
    expect(picks).toEqual([2, 2, 3, 2]);
    // Worker 3 reports the request as working: counted once, through cur_load.
    t.report(3, { max_perf: 50, cur_load: 100, num_requests_working: 1, working_request_idxs: [idxs[2]] });
    const router = t.engine.endpoints.get('ep')!.router;
    expect(router.expectedLoad({ id: 3, url: 'x', perf: 50, reportedLoad: 100, lastReportAt: null })).toBe(100);
  });

  it('queues when every worker is over max_queue_time and routes the queue in arrival order', async () => {
    const t = setup({ cold_workers: 1, max_workers: 1, max_queue_time: 5 });
    await t.advance(1000);
    t.report(1, { cur_load: 600 }); // 6 s > 5 s
    const queued = [t.route(), t.route(), t.route()].map((o) => o.body as { request_idx: number; status: string; url?: string });
    expect(queued.every((q) => q.status === 'queued' && q.url === undefined)).toBe(true);
    t.report(1, { cur_load: 0 });
    // perf 100, max 5 s: the three requests of 100 fit (0, 1, 2 s of queue before each).
    const routed = queued.map((q) => t.route({ request_idx: q.request_idx }).body as { reqnum: number; url: string });
    expect(routed.every((r) => typeof r.url === 'string')).toBe(true);
    expect(routed.map((r) => r.reqnum)).toEqual([1, 2, 3]);
  });

  it('skips a worker that stopped reporting after being sent requests', async () => {
    const t = setup({ cold_workers: 2, max_workers: 2, cold_mult: 0, min_load: 1050 });
    await t.advance(1000);
    t.report(1, { max_perf: 1000 });
    t.report(2, { max_perf: 100 });
    const first = t.route().body as { worker_id: number };
    expect(first.worker_id).toBe(1);
    await t.advance(6000); // worker 2 keeps reporting, worker 1 is silent since it was sent a request
    t.report(2, { max_perf: 100 });
    const next = t.route().body as { worker_id: number };
    expect(next.worker_id).toBe(2);
  });
});

describe('a worker that goes silent with requests', () => {
  it('is probed as soon as the router suspects it, long before stale_after_seconds: dead, it is errored; alive, it stays and is probed once per silence', async () => {
    const t = setup({ cold_workers: 2, max_workers: 2, cold_mult: 0, min_load: 150 });
    const alive = new Map<number, boolean>();
    const probed: number[] = [];
    t.provider.probe = async (id: number) => {
      probed.push(id);
      return alive.get(id) ?? true;
    };
    await t.advance(1000);
    t.report(1);
    t.report(2);
    // One worker takes a request and says nothing more; the other keeps reporting.
    const first = t.route({ cost: 10 }).body as { worker_id: number; request_idx: number };
    const silent = first.worker_id;
    const other = silent === 1 ? 2 : 1;
    const tickFor = async (ms: number) => {
      for (let at = 0; at < ms; at += 1000) {
        await t.advance(1000);
        t.report(other);
      }
    };
    // It answers its probe: kept, and probed once for this silence.
    await tickFor(10_000);
    expect(probed.filter((id) => id === silent)).toEqual([silent]);
    expect(t.engine.workers.get(silent)!.state).toBe('ready');
    // It finishes that request and reports again (a new silence may be probed again), takes a
    // request, and dies.
    expect(t.engine.deleteRequests({ worker_id: silent, mtoken: t.spec(silent).masterToken, request_idxs: [first.request_idx], success: true }).status).toBe(
      200,
    );
    t.report(silent, { cur_load: 0 });
    alive.set(silent, false);
    let r = t.route({ cost: 10 }).body as { worker_id: number };
    while (r.worker_id !== silent) r = t.route({ cost: 10 }).body as { worker_id: number };
    await tickFor(8000);
    expect(probed.filter((id) => id === silent)).toEqual([silent, silent]);
    // Errored within seconds (stale_after_seconds is 30), not after half a minute.
    expect(t.engine.workers.get(silent)!.state).not.toBe('ready');
    expect(probed).not.toContain(other);
  });
});

describe('engine states', () => {
  it('drains a busy worker before stopping it, and stops it once its requests are deleted', async () => {
    const t = setup({ cold_workers: 2, max_workers: 2, min_load: 150, scale_down_delay: 0, inactivity_timeout: 0 });
    await t.advance(1000);
    t.report(1);
    t.report(2);
    const a = t.route({ cost: 10 }).body as { worker_id: number; request_idx: number };
    const b = t.route({ cost: 10 }).body as { worker_id: number; request_idx: number };
    expect(new Set([a.worker_id, b.worker_id])).toEqual(new Set([1, 2]));
    // Demand falls to the floor of 1: one worker is surplus but busy.
    t.engine.updateEndpoint('ep', { min_load: 1 });
    await t.advance(1000);
    const drainingId = [...t.engine.workers.values()].find((w) => w.draining)?.id;
    expect(drainingId).toBeDefined();
    expect(t.engine.workers.get(drainingId!)!.state).toBe('ready');
    expect(t.provider.calls).not.toContain(`stop ${drainingId}`);
    // No new request goes to the draining worker.
    for (let i = 0; i < 3; i++) expect((t.route({ cost: 1 }).body as { worker_id: number }).worker_id).not.toBe(drainingId);
    const idx = a.worker_id === drainingId ? a.request_idx : b.request_idx;
    const out = t.engine.deleteRequests({ worker_id: drainingId, mtoken: t.spec(drainingId!).masterToken, request_idxs: [idx], success: true });
    expect(out.status).toBe(200);
    expect(t.engine.workers.get(drainingId!)!.state).toBe('inactive');
    await t.advance(10);
    expect(t.provider.calls).toContain(`stop ${drainingId}`);
  });

  it('moves created → loading → ready from reports; an error report or an exited instance errors the worker, which is replaced', async () => {
    const t = setup({ cold_workers: 2, max_workers: 3 });
    await t.advance(1000);
    expect(t.engine.workers.get(1)!.state).toBe('created');
    t.report(1, { loadtime: 0, max_perf: 0 });
    expect(t.engine.workers.get(1)!.state).toBe('loading');
    t.report(1);
    expect(t.engine.workers.get(1)!.state).toBe('ready');
    t.report(2, { loadtime: 0, max_perf: 0, error_msg: 'CUDA out of memory' });
    expect(t.engine.workers.get(2)!.state).toBe('errored');
    t.provider.emit({ workerId: 1, kind: 'exited', reason: 'host lost' });
    expect(t.engine.workers.get(1)!.state).toBe('errored');
    await t.advance(1000);
    expect(t.engine.workers.get(1)!.state).toBe('destroyed');
    expect(t.engine.workers.get(2)!.state).toBe('destroyed');
    expect(t.provider.calls).toEqual(expect.arrayContaining(['destroy 1', 'destroy 2']));
    // Two replacements recruited (cold_workers 2).
    expect(t.provider.specs.map((s) => s.workerId)).toEqual([1, 2, 3, 4]);
    // A report from a destroyed worker is refused.
    expect(t.report(1).status).toBe(404);
  });

  it('suspended endpoints are left alone; stopped endpoints make every worker inactive and refuse new requests', async () => {
    const t = setup({ cold_workers: 1, max_workers: 1 });
    await t.advance(1000);
    t.report(1);
    t.engine.updateEndpoint('ep', { state: 'suspended' });
    t.report(1, { error_msg: 'boom' });
    await t.advance(3000);
    expect(t.engine.workers.get(1)!.state).toBe('errored'); // not destroyed: the engine does not manage it
    t.engine.updateEndpoint('ep', { state: 'active' });
    await t.advance(1000);
    expect(t.engine.workers.get(1)!.state).toBe('destroyed');
    await t.advance(1000);
    t.report(2);
    expect(t.engine.workers.get(2)!.state).toBe('ready');
    t.engine.updateEndpoint('ep', { state: 'stopped' });
    await t.advance(1000);
    expect(t.engine.workers.get(2)!.state).toBe('inactive');
    expect(t.route().status).toBe(503);
  });

  it('errors a worker that never finishes loading', async () => {
    const clockStart = setup({ cold_workers: 1, max_workers: 1 });
    await clockStart.advance(1000);
    clockStart.report(1, { loadtime: 0, max_perf: 0 });
    await clockStart.advance(1_801_000);
    expect(clockStart.engine.workers.get(1)?.state ?? 'destroyed').toMatch(/errored|destroyed/);
    expect(clockStart.provider.calls).toContain('destroy 1');
  });
});
