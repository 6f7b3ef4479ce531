import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/autoscaler/clock.js';
import type { Engine } from '../src/autoscaler/engine.js';
import { Journal } from '../src/autoscaler/journal.js';
import { endpointSchema } from '../src/autoscaler/params.js';
import type { AdoptResult, AdoptSpec, Provider, WorkerSpec } from '../src/autoscaler/providers/types.js';
import { fakeClockEngine, RecordingProvider } from './helpers/autoscaler.js';

/**
 * The engine's own state across a restart (journal → restore → adopt) and the rolling update of
 * /update_workers/, on a fake clock, with the test playing the workers through the engine's methods.
 */
/** A provider that can take back the workers listed in `adoptable` after a restart. */
class Adopter extends RecordingProvider {
  adoptable: number[] | null = null;
  /** Found intact but parked (stopped on purpose). */
  parked: number[] = [];
  adopted: AdoptSpec[] = [];
  async adopt(specs: AdoptSpec[]): Promise<AdoptResult[]> {
    this.adopted = specs;
    return specs.flatMap((s): AdoptResult[] =>
      this.parked.includes(s.workerId)
        ? [{ id: s.workerId, running: false, stopped: true }]
        : (this.adoptable ?? []).includes(s.workerId)
          ? [{ id: s.workerId, running: true }]
          : [],
    );
  }
}

const dirs: string[] = [];
const engines: Engine[] = [];
afterEach(() => {
  for (const e of engines.splice(0)) e.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function make(provider: Provider, clock: FakeClock, store?: Journal) {
  const engine = fakeClockEngine({ provider, clock, logName: 'engine-state', store });
  engines.push(engine);
  return engine;
}

const EP = {
  name: 'ep',
  api_key: 'client-key-1234',
  cold_workers: 2,
  max_workers: 2,
  min_load: 10_000,
  cold_mult: 0,
  workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }],
};

async function settle() {
  await new Promise((r) => setImmediate(r));
}

/** A first engine on a journal in a fresh dir, with the endpoint added (and `params` applied). */
function firstEngine(params: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'engine-state-'));
  dirs.push(dir);
  const clock = new FakeClock(1_000_000);
  const p1 = new RecordingProvider();
  const e1 = make(p1, clock, new Journal(join(dir, 'state.jsonl')));
  e1.addEndpoint(endpointSchema.parse(EP));
  if (Object.keys(params).length > 0) e1.updateEndpoint('ep', params);
  e1.start();
  return { dir, clock, p1, e1 };
}

describe('engine state across a restart', () => {
  it('restores endpoints, workers, learned perf and open requests; adopted workers keep serving, the others are replaced', async () => {
    const { dir, clock, p1, e1 } = firstEngine({ max_queue_time: 7 });
    clock.advanceBy(1000);
    await settle();
    for (const s of p1.specs)
      e1.workerStatus({ id: s.workerId, mtoken: s.masterToken, loadtime: 2, max_perf: 100, url: `http://127.0.0.1:${20000 + s.workerId}` });
    const routed = e1.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 50 }).body as { request_idx: number; worker_id: number; signature: string };
    // Fill both workers past max_queue_time: the next request waits.
    for (const s of p1.specs) e1.workerStatus({ id: s.workerId, mtoken: s.masterToken, loadtime: 2, max_perf: 100, cur_load: 5000 });
    const queued = e1.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 60 }).body as { request_idx: number; status: string };
    expect(queued.status).toBe('queued');
    clock.advanceBy(1000);
    e1.close();

    const p2 = new Adopter();
    p2.adoptable = [p1.specs[0]!.workerId];
    const e2 = make(p2, clock, new Journal(join(dir, 'state.jsonl')));
    const got = e2.restore();
    expect(got).toEqual({ endpoints: 1, workers: 2, requests: 2 });
    const ep = e2.endpoints.get('ep')!;
    expect(ep.params.max_queue_time).toBe(7); // admin change kept
    expect(ep.apiKey).toBe('client-key-1234');
    expect(e2.perf.get('wg/gpu')).toMatchObject({ benchmarks: 2, benchmarkMean: 100 });
    expect(ep.router.get(queued.request_idx)?.state).toBe('queued');
    expect(ep.router.get(routed.request_idx)).toMatchObject({ state: 'routed', workerId: routed.worker_id });
    // Saved without its signature, signed again at restore: the same (url-only) signature.
    expect(ep.router.get(routed.request_idx)!.answer!.signature).toBe(routed.signature);
    await e2.adoptWorkers();
    expect(p2.adopted.map((s) => [s.workerId, s.masterToken])).toEqual(p1.specs.map((s) => [s.workerId, s.masterToken]));
    expect(e2.workers.get(p1.specs[0]!.workerId)!.state).toBe('ready');
    expect(e2.workers.get(p1.specs[1]!.workerId)!.state).toBe('errored');
    // New ids never collide with remembered ones; request ids are not reused.
    e2.start();
    clock.advanceBy(1000);
    await settle();
    expect(p2.specs.length).toBeGreaterThan(0);
    expect(p2.specs.every((s) => s.workerId > p1.specs[1]!.workerId)).toBe(true);
    const fresh = e2.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 10 }).body as { request_idx: number };
    expect(fresh.request_idx).toBeGreaterThan(queued.request_idx);
  });

  it('a worker remembered ready whose instance was found parked (the park outran its journal record) becomes inactive, not errored', async () => {
    const { dir, clock, p1, e1 } = firstEngine();
    clock.advanceBy(1000);
    await settle();
    for (const s of p1.specs)
      e1.workerStatus({ id: s.workerId, mtoken: s.masterToken, loadtime: 2, max_perf: 100, url: `http://127.0.0.1:${20000 + s.workerId}` });
    clock.advanceBy(1000);
    const [a, b] = p1.specs.map((s) => s.workerId) as [number, number];
    expect([e1.workers.get(a)!.state, e1.workers.get(b)!.state]).toEqual(['ready', 'ready']);
    e1.close();

    const p2 = new Adopter();
    p2.adoptable = [a];
    p2.parked = [b];
    const e2 = make(p2, clock, new Journal(join(dir, 'state.jsonl')));
    e2.restore();
    await e2.adoptWorkers();
    expect(e2.workers.get(a)!.state).toBe('ready');
    expect(e2.workers.get(b)!.state).toBe('inactive');
    // A parked worker keeps its learned perf: it can be activated, never replaced for this.
    e2.start();
    clock.advanceBy(1000);
    await settle();
    expect(p2.specs).toEqual([]);
    expect(e2.workers.get(b)!.state).not.toBe('errored');
  });

  it('a provider that cannot adopt: every remembered worker is errored and replaced; a remembered endpoint that no longer parses is skipped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'engine-state-'));
    dirs.push(dir);
    const path = join(dir, 'state.jsonl');
    const clock = new FakeClock(1_000_000);
    const p1 = new RecordingProvider();
    const e1 = make(p1, clock, new Journal(path));
    e1.addEndpoint(endpointSchema.parse(EP));
    e1.start();
    clock.advanceBy(1000);
    await settle();
    e1.close();
    const j = new Journal(path);
    j.put('endpoint', 'broken', { id: 9, createdAt: 0, lastActivityAt: null, config: { name: 'broken', max_workers: 'many' }, wgIds: [] });
    j.close();
    const e2 = make(new RecordingProvider(), clock, new Journal(path));
    expect(e2.restore().endpoints).toBe(1);
    expect(e2.endpoints.has('broken')).toBe(false);
    await e2.adoptWorkers();
    expect([...e2.workers.values()].map((w) => w.state)).toEqual(['errored', 'errored']);
  });
});

describe('rolling update (/update_workers/)', () => {
  it('replaces ready workers one at a time: each drains, goes, and the next waits until the replacement is ready', async () => {
    const clock = new FakeClock(1_000_000);
    const p = new RecordingProvider();
    const e = make(p, clock);
    e.addEndpoint(endpointSchema.parse(EP));
    e.start();
    clock.advanceBy(1000);
    await settle();
    const report = (s: WorkerSpec, over: Record<string, unknown> = {}) =>
      e.workerStatus({ id: s.workerId, mtoken: s.masterToken, loadtime: 2, max_perf: 100, url: `http://127.0.0.1:${20000 + s.workerId}`, ...over });
    for (const s of p.specs) report(s);
    const [a, b] = p.specs as [WorkerSpec, WorkerSpec];
    // a has a request in flight.
    const busy = e.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 50 }).body as { worker_id: number; request_idx: number };
    const first = busy.worker_id === a.workerId ? a : b;
    const wgId = e.workergroupId('ep', 'wg')!;
    expect(e.updateWorkers(wgId)).toBe(2);
    expect(() => e.updateWorkers(999)).toThrow(/no such workergroup/);
    clock.advanceBy(1000);
    await settle();
    // One at a time: one worker goes (drained first if busy), the other keeps serving.
    const states = () => [e.workers.get(a.workerId)!.state, e.workers.get(b.workerId)!.state];
    expect(states().filter((s) => s === 'ready').length).toBeGreaterThanOrEqual(1);
    expect([e.workers.get(a.workerId)!.draining, e.workers.get(b.workerId)!.draining].filter(Boolean).length).toBeLessThanOrEqual(1);
    // Finish the busy request, let the ticks run: a replacement is recruited for the first one gone.
    e.deleteRequests({ worker_id: first.workerId, mtoken: first.masterToken, request_idxs: [busy.request_idx], success: true });
    clock.advanceBy(2000);
    await settle();
    expect(states().filter((s) => s === 'destroyed')).toHaveLength(1);
    const replacement = p.specs[2]!;
    expect(replacement).toBeDefined();
    // The second waits while the replacement loads...
    clock.advanceBy(3000);
    await settle();
    expect(states().filter((s) => s === 'ready')).toHaveLength(1);
    // ...and goes once it is ready.
    report(replacement);
    clock.advanceBy(2000);
    await settle();
    expect(states()).toEqual(['destroyed', 'destroyed']);
    expect(p.calls.filter((c) => c.startsWith('destroy'))).toHaveLength(2);
  });
});

describe('requests whose worker goes away', () => {
  it('a request routed from the queue to a worker that dies before the client polls goes to another, and its id is never a 404', async () => {
    const clock = new FakeClock(1_000_000);
    const p = new RecordingProvider();
    const e = make(p, clock);
    e.addEndpoint(endpointSchema.parse({ ...EP, max_queue_time: 5 }));
    e.start();
    clock.advanceBy(1000);
    await settle();
    const [a, b] = p.specs as [WorkerSpec, WorkerSpec];
    const report = (s: WorkerSpec, load: number) =>
      e.workerStatus({ id: s.workerId, mtoken: s.masterToken, loadtime: 2, max_perf: 100, cur_load: load, url: `http://127.0.0.1:${20000 + s.workerId}` });
    report(a, 900);
    report(b, 900);
    const q = e.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 100 }).body as { request_idx: number; status: string };
    expect(q.status).toBe('queued');
    report(a, 0); // a takes it from the queue; the client has not polled yet
    const router = e.endpoints.get('ep')!.router;
    expect(router.get(q.request_idx)).toMatchObject({ state: 'routed', workerId: a.workerId, delivered: false });
    // a's instance dies: its requests are orphaned, not forgotten.
    p.emit({ workerId: a.workerId, kind: 'exited', reason: 'host lost' });
    expect(e.workers.get(a.workerId)!.state).toBe('errored');
    report(b, 0);
    const polled = e.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 100, request_idx: q.request_idx });
    expect(polled.status).toBe(200);
    expect(polled.body).toMatchObject({ request_idx: q.request_idx, worker_id: b.workerId });
    expect(router.failureScore(b.workerId)).toBe(0); // nobody failed it
    // Finished (b's /delete_requests/), then re-routed late: routed afresh, not a 404.
    e.deleteRequests({ worker_id: b.workerId, mtoken: b.masterToken, request_idxs: [q.request_idx], success: false });
    expect(router.failureScore(b.workerId)).toBeGreaterThan(0.5);
    const late = e.route({ endpoint: 'ep', api_key: 'client-key-1234', cost: 100, request_idx: q.request_idx });
    expect(late.status).toBe(200);
    expect((late.body as { request_idx: number }).request_idx).toBe(q.request_idx);
  });
});
