import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { FakeClock } from '../src/autoscaler/clock.js';
import type { Provider, ProviderEvent, WorkerHandle, WorkerSpec } from '../src/autoscaler/providers/types.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import { closeServer, listenLoopback } from './helpers/autoscaler.js';
import { SdkError, VastSdk, type SdkTrace } from './helpers/vast-sdk.js';

/**
 * The Vast SDK's exact call sequence (test/helpers/vast-sdk.ts) against the autoscaler over
 * real HTTP on loopback: console calls with the account key, a cold start polled with
 * replay_timeout 60 while the worker loads for 200 s (on a fake clock the SDK's sleeps advance),
 * get_workers while loading, and failover: a worker answering 500, then a dead one.
 * Workers are real HTTP servers played by the test; their reports go over HTTP too.
 */

const ACCOUNT = 'account-key-for-sdk-tests';
const API_KEY = 'endpoint-key-for-sdk-tests';

interface TestWorker {
  spec: WorkerSpec;
  server: Server;
  url: string;
  /** Status /generate answers with. */
  answer: number;
  calls: number;
}

class TestWorkers implements Provider {
  readonly kind = 'test-workers';
  readonly all: TestWorker[] = [];
  private listeners = new Set<(e: ProviderEvent) => void>();
  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    const w = { spec, answer: 200, calls: 0 } as TestWorker;
    w.server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        if (req.url === '/generate') {
          w.calls++;
          res.statusCode = w.answer;
          res.end(JSON.stringify(w.answer === 200 ? { worker: spec.workerId, echo: JSON.parse(body).payload } : { error: 'model failed' }));
          return;
        }
        res.end('{"ok":true}');
      });
    });
    w.url = await listenLoopback(w.server);
    this.all.push(w);
    return { id: spec.workerId, url: w.url };
  }
  async start() {}
  async stop() {}
  async destroy(id: number) {
    const w = this.all.find((x) => x.spec.workerId === id);
    if (w) await kill(w);
  }
  subscribe(l: (e: ProviderEvent) => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  async close() {
    await Promise.all(this.all.map(kill));
  }
}

/** Stop a worker's server: what is in flight is cut, new connections are refused. */
const kill = (w: TestWorker): Promise<void> => closeServer(w.server);

const running: RunningAutoscaler[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.close()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const realSleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await realSleep(20);
  }
}

async function start(workers: number) {
  const clock = new FakeClock(Date.parse('2026-01-01T00:00:00Z'));
  const provider = new TestWorkers();
  const dataDir = mkdtempSync(join(tmpdir(), 'sdk-contract-'));
  dirs.push(dataDir);
  const as = await startAutoscaler({
    config: {
      account_key: ACCOUNT,
      persist: false,
      engine: { tick_seconds: 1 },
      endpoints: [
        {
          name: 'sdk-ep',
          api_key: API_KEY,
          max_workers: workers,
          cold_workers: workers,
          // Enough floor that the policy keeps every worker active (none is stopped as surplus).
          min_load: 10_000,
          cold_mult: 0,
          workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1, dlperf: 12.5 }] }],
        },
      ],
    },
    dataDir,
    provider,
    clock,
    dashboard: false,
    logger: createLogger('sdk-contract', { level: 'silent' }),
  });
  running.push(as);
  const advance = async (ms: number) => {
    clock.advanceBy(ms);
    await realSleep(2);
  };
  await advance(1000);
  await waitFor('workers created', () => provider.all.length === workers);
  const report = async (w: TestWorker, over: Record<string, unknown> = {}) => {
    const res = await fetch(`${as.url}/worker_status/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: w.spec.workerId, mtoken: w.spec.masterToken, loadtime: 3, max_perf: 100, cur_load: 0, url: w.url, ...over }),
    });
    expect(res.status).toBe(200);
  };
  const sdk = (onSleep?: (s: number) => Promise<void>) =>
    new VastSdk({
      apiKey: ACCOUNT,
      webUrl: as.url,
      autoscalerUrl: as.url,
      sleep: async (s) => {
        await advance(s * 1000);
        await onSleep?.(s);
      },
      random: () => 0.5,
    });
  return { as, clock, provider, advance, report, sdk };
}

describe('the Vast SDK against the autoscaler', () => {
  it('console calls: endpoints by account key, workergroups, update_workers; get_workers with every field a number while workers load', async () => {
    const t = await start(2);
    const sdk = t.sdk();
    const wrong = new VastSdk({ apiKey: 'not-the-account-key', webUrl: t.as.url, autoscalerUrl: t.as.url, sleep: async () => {} });
    await expect(wrong.getEndpoints()).rejects.toThrow(/HTTP 401/);
    const listed = await (await fetch(`${t.as.url}/api/v0/endptjobs/?client_id=me`, { headers: { authorization: 'Bearer nope-nope-nope' } })).json();
    expect(listed).toMatchObject({ fields: { authorization: expect.any(String) } });

    const ep = await sdk.getEndpoint('sdk-ep');
    expect(ep.apiKey).toBe(API_KEY);
    expect(typeof ep.id).toBe('number');
    await expect(sdk.getEndpoint('nope')).rejects.toThrow('Endpoint nope could not be found');
    const one = (await (await fetch(`${t.as.url}/api/v0/endptjobs/${ep.id}/?api_key=${ACCOUNT}`)).json()) as { result: Record<string, unknown> };
    expect(one.result).toMatchObject({ id: ep.id, endpoint_name: 'sdk-ep', endpoint_state: 'active', max_workers: 2, cold_workers: 2 });

    // Created, not reported yet: the SDK float()s every field, so no null anywhere.
    const created = await sdk.getWorkers(ep);
    expect(created.map((w) => w.status)).toEqual(['created', 'created']);
    for (const w of created) {
      expect(w.loaded_at).toBe(0);
      expect(w.started_at).toBe(0);
      expect(w.dlperf).toBe(12.5);
    }
    // Loading (first report, model not loaded yet).
    await t.report(t.provider.all[0]!, { loadtime: 0, max_perf: 0 });
    const loading = await sdk.getWorkers(ep);
    expect(loading.map((w) => w.status).sort()).toEqual(['created', 'loading']);
    // The raw answer: every field but status is a number.
    const raw = (await (
      await fetch(`${t.as.url}/get_endpoint_workers/`, { method: 'POST', body: JSON.stringify({ id: ep.id, api_key: API_KEY }) })
    ).json()) as Array<Record<string, unknown>>;
    for (const w of raw) for (const [k, v] of Object.entries(w)) if (k !== 'status') expect(typeof v, k).toBe('number');
    const refused = await fetch(`${t.as.url}/get_endpoint_workers/`, { method: 'POST', body: JSON.stringify({ id: ep.id, api_key: 'nope-nope' }) });
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { fields: object }).fields).toHaveProperty('api_key');

    // update_workers: the workergroup id comes from GET /api/v0/workergroups/.
    const wgs = (await (await fetch(`${t.as.url}/api/v0/workergroups/`, { headers: { authorization: `Bearer ${ACCOUNT}` } })).json()) as {
      results: Array<{ id: number; endpoint_id: number }>;
    };
    const wg = wgs.results.find((g) => g.endpoint_id === ep.id)!;
    expect(typeof wg.id).toBe('number');
    expect(await sdk.updateWorkers(wg.id)).toMatchObject({ success: true, workergroup_id: wg.id, workers: 2 });
    await expect(wrong.updateWorkers(wg.id)).rejects.toThrow(/HTTP 401/);
    await expect(sdk.updateWorkers(9999)).rejects.toThrow(/HTTP 404/);
    // Garbage is a 400 naming what is wrong; the process carries on.
    const post = (body: string) => fetch(`${t.as.url}/update_workers/`, { method: 'POST', headers: { authorization: `Bearer ${ACCOUNT}` }, body });
    const garbage = await post('{"workergroup_id": ');
    expect(garbage.status).toBe(400);
    expect(((await garbage.json()) as { fields: object }).fields).toHaveProperty('body');
    const badId = await post(JSON.stringify({ workergroup_id: 'first' }));
    expect(badId.status).toBe(400);
    expect(((await badId.json()) as { fields: object }).fields).toHaveProperty('workergroup_id');
    // The rolling update replaces the workers that serve nothing at once: new ids appear.
    const before = new Set(t.provider.all.slice(0, 2).map((w) => w.spec.workerId));
    for (const w of t.provider.all.slice(0, 2)) await t.report(w, { loadtime: 0, max_perf: 0, error_msg: 'model download failed' });
    await t.advance(2000);
    await waitFor('replacements', () => t.provider.all.filter((w) => !before.has(w.spec.workerId)).length === 2);
  });

  it('a cold start longer than replay_timeout: every poll renews the wait, and the request is served once the model loads (200 s)', async () => {
    const t = await start(1);
    const w = t.provider.all[0]!;
    const t0 = t.clock.now();
    let ready = false;
    const sdk = t.sdk(async () => {
      if (!ready && t.clock.now() - t0 >= 200_000) {
        ready = true;
        await t.report(w);
      } else if (!ready) await t.report(w, { loadtime: 0, max_perf: 0 });
    });
    const ep = await sdk.getEndpoint('sdk-ep');
    const res = await sdk.request(ep, '/generate', { prompt: 'hi' });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ worker: w.spec.workerId, echo: { prompt: 'hi' } });
    const routes = res.trace.routes;
    expect(routes.every((r) => r.status === 200)).toBe(true);
    const idx = routes[0]!.idx!;
    expect(routes.slice(1).every((r) => r.sent === idx && r.idx === idx)).toBe(true);
    expect(t.clock.now() - t0).toBeGreaterThan(200_000); // over three times replay_timeout
    expect(routes.at(-1)!.url).toBe(w.url);
    expect(res.trace.calls).toEqual([{ url: w.url, status: 200 }]);
  });

  it('failover: a worker answering 500 is left for another with a new routing of the same request_idx, a dead one at once; no 404 for an issued id', async () => {
    const t = await start(2);
    const [a, b] = t.provider.all as [TestWorker, TestWorker];
    // a is faster, so it is chosen first; its model fails everything.
    await t.report(a, { max_perf: 200 });
    await t.report(b, { max_perf: 100 });
    a.answer = 500;
    const sdk = t.sdk();
    const ep = await sdk.getEndpoint('sdk-ep');
    const router = t.as.engine.endpoints.get('sdk-ep')!.router;

    const first = await sdk.request(ep, '/generate', { n: 1 });
    expect(first.status).toBe(200);
    expect(first.trace.calls).toEqual([
      { url: a.url, status: 500 },
      { url: b.url, status: 200 },
    ]);
    const [r1, r2] = first.trace.routes as [SdkTrace['routes'][0], SdkTrace['routes'][0]];
    expect(r2.sent).toBe(r1.idx); // the SDK re-routes the same request_idx...
    expect(r2.idx).toBe(r1.idx);
    expect(r2.url).toBe(b.url); // ...and gets a fresh routing: another worker, signature and reqnum
    expect(r2.signature).not.toBe(r1.signature);
    expect(r2.reqnum).toBeGreaterThan(r1.reqnum!);
    expect(first.trace.sleeps.length).toBe(1); // one back-off after the 500
    // The first routing's load left a; b carries the request once.
    expect(router.expectedLoad({ id: a.spec.workerId, url: a.url, perf: 200, reportedLoad: 0, lastReportAt: null })).toBe(0);
    expect(router.expectedLoad({ id: b.spec.workerId, url: b.url, perf: 100, reportedLoad: 0, lastReportAt: null })).toBe(100);

    // a failed recently: a new request goes to b although a is faster.
    a.answer = 200;
    const second = await sdk.request(ep, '/generate', { n: 2 });
    expect(second.trace.calls).toEqual([{ url: b.url, status: 200 }]);

    // b dies: the SDK re-routes at once (no sleep) with the same id and lands on a.
    await kill(b);
    const third = await sdk.request(ep, '/generate', { n: 3 });
    expect(third.status).toBe(200);
    expect(third.trace.calls).toEqual([
      { url: b.url, status: null },
      { url: a.url, status: 200 },
    ]);
    expect(third.trace.sleeps).toEqual([]);
    expect(third.trace.routes).toHaveLength(2);
    // The engine probed b on the failover and took it out at once.
    await waitFor('b errored', () => t.as.engine.workers.get(b.spec.workerId)?.state === 'errored');

    // b's /delete_requests/ may still name the first request; a late re-route of that id is routed
    // afresh, never 404: it waits while both workers that failed it are avoided, then goes to a.
    const del = await fetch(`${t.as.url}/delete_requests/`, {
      method: 'POST',
      body: JSON.stringify({ worker_id: b.spec.workerId, mtoken: b.spec.masterToken, request_idxs: [r1.idx], success: true }),
    });
    expect([200, 404]).toContain(del.status); // b may already be gone from the books
    const routeAgain = () =>
      fetch(`${t.as.url}/route/`, {
        method: 'POST',
        body: JSON.stringify({ endpoint: 'sdk-ep', api_key: API_KEY, cost: 100, request_idx: r1.idx, replay_timeout: 60 }),
      });
    const held = await routeAgain();
    expect(held.status).toBe(200);
    expect(await held.json()).toMatchObject({ status: 'queued', request_idx: r1.idx });
    await t.advance(11_000);
    await t.report(a); // a live worker reports at least every 10 s
    const late = await routeAgain();
    expect(late.status).toBe(200);
    const lateBody = await late.json();
    expect((lateBody as { url: string }).url).toBe(a.url);
    const never = await fetch(`${t.as.url}/route/`, {
      method: 'POST',
      body: JSON.stringify({ endpoint: 'sdk-ep', api_key: API_KEY, cost: 100, request_idx: 99_999_999, replay_timeout: 60 }),
    });
    expect(never.status).toBe(404);
    await expect(sdk.request({ ...ep, apiKey: 'wrong-key' }, '/generate', {})).rejects.toBeInstanceOf(SdkError);
  });

  it('spreads requests over idle workers of equal speed', async () => {
    const t = await start(3);
    for (const w of t.provider.all) await t.report(w);
    const sdk = t.sdk();
    const ep = await sdk.getEndpoint('sdk-ep');
    const urls: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await sdk.request(ep, '/generate', { i });
      urls.push(r.trace.calls[0]!.url);
      // The worker's /delete_requests/: the request is over, the worker idle again.
      const w = t.provider.all.find((x) => x.url === urls.at(-1))!;
      await fetch(`${t.as.url}/delete_requests/`, {
        method: 'POST',
        body: JSON.stringify({ worker_id: w.spec.workerId, mtoken: w.spec.masterToken, request_idxs: [r.trace.routes.at(-1)!.idx], success: true }),
      });
    }
    const counts = t.provider.all.map((w) => urls.filter((u) => u === w.url).length);
    expect(counts).toEqual([2, 2, 2]);
  });
});
