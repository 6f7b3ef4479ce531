import { createPublicKey, createVerify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import type { Provider, ProviderEvent, WorkerHandle, WorkerSpec } from '../src/autoscaler/providers/types.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import { closeServer, listenLoopback } from './helpers/autoscaler.js';

/**
 * The engine over real HTTP on loopback. Workers are played by the test: a provider whose
 * "instances" are tiny HTTP servers answering /healthz, and the test posts their reports to
 * the engine's /worker_status/ with the MASTER_TOKEN the engine issued.
 */

interface Instance {
  spec: WorkerSpec;
  server: Server;
  url: string;
  /** When true the server accepts connections but never answers. */
  hang: boolean;
  healthHits: number;
}

/** A real provider: each worker is an HTTP server on 127.0.0.1. */
class LoopbackProvider implements Provider {
  readonly kind = 'loopback';
  readonly instances: Instance[] = [];
  readonly calls: string[] = [];
  private listeners = new Set<(e: ProviderEvent) => void>();

  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    const inst = { spec, hang: false, healthHits: 0 } as Instance;
    inst.server = createServer((req, res) => {
      if (req.url === '/healthz') inst.healthHits++;
      if (inst.hang) return; // keeps the socket open, never answers
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
    });
    inst.url = await listenLoopback(inst.server);
    this.instances.push(inst);
    this.calls.push(`create ${spec.workerId}`);
    return { id: spec.workerId, url: inst.url };
  }
  async start(id: number): Promise<void> {
    this.calls.push(`start ${id}`);
  }
  async stop(id: number): Promise<void> {
    this.calls.push(`stop ${id}`);
  }
  async destroy(id: number): Promise<void> {
    this.calls.push(`destroy ${id}`);
    const inst = this.instances.find((i) => i.spec.workerId === id);
    if (inst) await closeServer(inst.server);
  }
  subscribe(listener: (e: ProviderEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  async close(): Promise<void> {
    await Promise.all(this.instances.map((i) => closeServer(i.server)));
  }
}

const ADMIN = 'admin-key-for-tests';
const API_KEY = 'client-key-123456';

const tmpDirs: string[] = [];
const running: RunningAutoscaler[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.close()));
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'autoscaler-test-'));
  tmpDirs.push(d);
  return d;
}

async function start(engine: Record<string, number> = {}, logFile?: string) {
  const provider = new LoopbackProvider();
  const dataDir = tmp();
  const as = await startAutoscaler({
    config: {
      admin_key: ADMIN,
      engine: { tick_seconds: 0.05, ...engine },
      endpoints: [
        {
          name: 'ep',
          api_key: API_KEY,
          max_workers: 1,
          cold_workers: 1,
          cold_mult: 0,
          workergroups: [{ name: 'wg', machine_types: [{ name: 'local', dollars_per_hour: 0 }] }],
        },
      ],
    },
    port: 0,
    dataDir,
    provider,
    adminKey: ADMIN,
    logger: createLogger('autoscaler-test', logFile ? { destination: logFile } : { level: 'silent' }),
  });
  running.push(as);
  return { as, provider, dataDir };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 5000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Report as the worker: ready with perf 100 and the given load. */
function report(_as: RunningAutoscaler, inst: Instance, over: Record<string, unknown> = {}) {
  return post(`${inst.spec.reportAddrs[0]}/worker_status/`, {
    id: inst.spec.workerId,
    mtoken: inst.spec.masterToken,
    version: 'test',
    loadtime: 3.5,
    cur_load: 0,
    rej_load: 0,
    new_load: 0,
    error_msg: '',
    max_perf: 100,
    cur_perf: 0,
    cur_capacity: 0,
    max_capacity: 0,
    num_requests_working: 0,
    num_requests_recieved: 0,
    additional_disk_usage: 0,
    working_request_idxs: [],
    url: inst.url,
    ...over,
  });
}

async function readyWorker(as: RunningAutoscaler, provider: LoopbackProvider): Promise<Instance> {
  const inst = await waitFor('a worker to be created', () => provider.instances[0]);
  expect(inst.spec.reportAddrs).toEqual([as.url]);
  expect(inst.spec.masterToken.length).toBeGreaterThanOrEqual(32);
  const r = await report(as, inst);
  expect(r.status).toBe(200);
  await waitFor('the worker to be ready', () => as.engine.workers.get(inst.spec.workerId)?.state === 'ready');
  return inst;
}

describe('autoscaler HTTP API', () => {
  it('serves the public key kept in the data dir, and signs /route/ answers in the Python message format', async () => {
    const { as, provider, dataDir } = await start();
    const keyFile = join(dataDir, 'engine_key.pem');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const pubRes = await fetch(`${as.url}/pubkey/`);
    expect(pubRes.status).toBe(200);
    const pem = await pubRes.text();
    expect(pem).toContain('BEGIN PUBLIC KEY');
    expect(pem).toBe(createPublicKey(readFileSync(keyFile, 'utf8')).export({ type: 'spki', format: 'pem' }).toString());

    const inst = await readyWorker(as, provider);
    const a = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 50, request_idx: 0, replay_timeout: 10 });
    expect(a.status).toBe(200);
    for (const key of ['url', 'request_idx', 'reqnum', 'cost', 'endpoint', 'signature']) expect(a.body).toHaveProperty(key);
    expect(a.body.url).toBe(inst.url);
    expect(a.body.cost).toBe(50);
    expect(a.body.endpoint).toBe('ep');
    // Verified independently: node:crypto over the literal Python json.dumps(indent=4) string.
    const message = `{\n    "url": "${a.body.url}"\n}`;
    const ok = createVerify('sha256').update(message).verify(createPublicKey(pem), Buffer.from(a.body.signature, 'base64'));
    expect(ok).toBe(true);
    const tampered = createVerify('sha256')
      .update(`{\n    "url": "http://127.0.0.1:1"\n}`)
      .verify(createPublicKey(pem), Buffer.from(a.body.signature, 'base64'));
    expect(tampered).toBe(false);

    const b = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 50 });
    expect(b.body.reqnum).toBe(a.body.reqnum + 1);
    expect(b.body.request_idx).not.toBe(a.body.request_idx);
  });

  it('refuses bad /route/ calls with JSON naming the field', async () => {
    const { as } = await start();
    const wrongKey = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: 'not-the-key', cost: 1 });
    expect(wrongKey.status).toBe(401);
    expect(wrongKey.body.fields).toHaveProperty('api_key');
    const unknown = await post(`${as.url}/route/`, { endpoint: 'nope', api_key: API_KEY, cost: 1 });
    expect(unknown.status).toBe(404);
    expect(unknown.body.fields).toHaveProperty('endpoint');
    const badCost = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 'lots' });
    expect(badCost.status).toBe(400);
    expect(badCost.body.fields).toHaveProperty('cost');
    const notJson = await post(`${as.url}/route/`, '{"endpoint": ');
    expect(notJson.status).toBe(400);
    expect(notJson.body.fields).toHaveProperty('body');
    const unknownIdx = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 1, request_idx: 424242 });
    expect(unknownIdx.status).toBe(404);
    expect(unknownIdx.body.fields).toHaveProperty('request_idx');
  });

  it('refuses reports with a wrong mtoken or an unknown worker id', async () => {
    const { as, provider } = await start();
    const inst = await waitFor('a worker', () => provider.instances[0]);
    const wrong = await report(as, inst, { mtoken: 'f'.repeat(48) });
    expect(wrong.status).toBe(401);
    expect(wrong.body.fields).toHaveProperty('mtoken');
    expect(as.engine.workers.get(inst.spec.workerId)?.state).not.toBe('ready');
    const unknown = await report(as, inst, { id: 9999 });
    expect(unknown.status).toBe(404);
    expect(unknown.body.fields).toHaveProperty('id');
    const del = await post(`${as.url}/delete_requests/`, { worker_id: inst.spec.workerId, mtoken: 'wrong', request_idxs: [1], success: true });
    expect(del.status).toBe(401);
    const badBody = await post(`${as.url}/worker_status/`, { id: 'seven', mtoken: inst.spec.masterToken });
    expect(badBody.status).toBe(400);
    expect(badBody.body.fields).toHaveProperty('id');
  });

  it('queues requests while the worker is full, routes them once it frees up, and times out after replay_timeout', async () => {
    const { as, provider } = await start();
    const inst = await readyWorker(as, provider);
    // 5000 load at perf 100 = 50 s of queue > max_queue_time 30: the worker takes nothing more.
    await report(as, inst, { cur_load: 5000, num_requests_working: 10 });
    const first = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, replay_timeout: 30 });
    expect(first.status).toBe(200);
    expect(first.body.url).toBeUndefined();
    expect(first.body.status).toBe('queued');
    const idx = first.body.request_idx as number;
    expect(idx).toBeGreaterThan(0);
    const second = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, replay_timeout: 30 });
    expect(second.body.queue_position).toBe(1);

    const poll = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, request_idx: idx });
    expect(poll.body.url).toBeUndefined();
    expect(poll.body.request_idx).toBe(idx);

    await report(as, inst, { cur_load: 0 });
    const routed = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, request_idx: idx });
    expect(routed.status).toBe(200);
    expect(routed.body.url).toBe(inst.url);
    expect(routed.body.request_idx).toBe(idx);
    // FIFO: the second one went after the first.
    const secondRouted = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, request_idx: second.body.request_idx });
    expect(secondRouted.body.reqnum).toBe(routed.body.reqnum + 1);

    // Asking again for an id whose url was handed out is the client's failover: the only worker
    // just failed it, so it waits for another (never a 404 for an id the engine issued).
    const again = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, request_idx: idx });
    expect(again.status).toBe(200);
    expect(again.body.url).toBeUndefined();
    expect(again.body).toMatchObject({ status: 'queued', request_idx: idx });
    const del = await post(`${as.url}/delete_requests/`, {
      worker_id: inst.spec.workerId,
      mtoken: inst.spec.masterToken,
      request_idxs: [second.body.request_idx],
      success: true,
    });
    expect(del.status).toBe(200);
    expect(del.body.deleted).toBe(1);
    const never = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, request_idx: 10_000_000 });
    expect(never.status).toBe(404);
    expect(never.body.fields).toHaveProperty('request_idx');

    // Full again, and a short replay_timeout: the poll gets an error naming replay_timeout.
    await report(as, inst, { cur_load: 9000 });
    const late = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, replay_timeout: 0.2 });
    expect(late.body.status).toBe('queued');
    // Each poll renews the wait; a client that stops polling for replay_timeout loses its place.
    const router = as.engine.endpoints.get('ep')!.router;
    await waitFor('the request to time out', () => router.get(late.body.request_idx)?.state === 'timed_out');
    const timedOut = await post(`${as.url}/route/`, { endpoint: 'ep', api_key: API_KEY, cost: 100, request_idx: late.body.request_idx });
    expect(timedOut.status).toBe(408);
    expect(timedOut.body.fields).toHaveProperty('replay_timeout');
    expect(timedOut.body.status).toBe('timed_out');
  });

  it('lists endpoint workers with the fields of PROTOCOL §9', async () => {
    const { as, provider } = await start();
    const inst = await readyWorker(as, provider);
    const ep = as.engine.endpoints.get('ep')!;
    const wrong = await post(`${as.url}/get_endpoint_workers/`, { id: ep.id, api_key: 'nope-nope' });
    expect(wrong.status).toBe(401);
    const res = await fetch(`${as.url}/get_endpoint_workers/`, { method: 'POST', body: JSON.stringify({ id: ep.id, api_key: API_KEY }) });
    const list = (await res.json()) as Array<Record<string, unknown>>;
    expect(res.status).toBe(200);
    expect(list).toHaveLength(1);
    const w = list[0]!;
    for (const key of [
      'id',
      'status',
      'cur_load',
      'new_load',
      'cur_load_rolling_avg',
      'cur_perf',
      'perf',
      'measured_perf',
      'dlperf',
      'reliability',
      'reqs_working',
      'disk_usage',
      'loaded_at',
      'started_at',
    ]) {
      expect(w).toHaveProperty(key);
    }
    expect(w.id).toBe(inst.spec.workerId);
    expect(w.status).toBe('ready');
    expect(w.perf).toBe(100);
  });

  it('probes a silent worker on /healthz, keeps it while it answers, errors and replaces it when it stops answering', async () => {
    const logFile = join(tmp(), 'engine.log');
    const { as, provider } = await start({ stale_after_seconds: 0.5, probe_timeout_seconds: 0.3 }, logFile);
    const inst = await readyWorker(as, provider);
    const id = inst.spec.workerId;
    // No more reports. The probe finds /healthz answering: the worker stays ready.
    await waitFor('a /healthz probe', () => inst.healthHits >= 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(as.engine.workers.get(id)?.state).toBe('ready');
    // Now it stops answering: errored, destroyed, replaced by a new worker.
    inst.hang = true;
    await waitFor('the worker to be errored', () => ['errored', 'destroyed'].includes(as.engine.workers.get(id)?.state ?? ''), 5000);
    await waitFor('its replacement', () => provider.instances.length >= 2, 5000);
    expect(provider.calls).toContain(`destroy ${id}`);
    const replacement = provider.instances[1]!;
    expect(replacement.spec.workerId).not.toBe(id);
    expect(replacement.spec.masterToken).not.toBe(inst.spec.masterToken);
    expect(as.engine.workers.get(id)?.stateReason ?? '').toMatch(/replace|errored/);

    // Every transition was logged with its reason, and no token made it into the log.
    await as.close();
    await new Promise((r) => setTimeout(r, 100));
    const log = readFileSync(logFile, 'utf8');
    const transitions = log
      .split('\n')
      .filter((l) => l.includes('"event":"worker_state"'))
      .map((l) => JSON.parse(l));
    const mine = transitions.filter((t) => t.worker === id).map((t) => `${t.from}->${t.to}`);
    expect(mine).toEqual(['null->created', 'created->ready', 'ready->errored', 'errored->destroyed']);
    expect(transitions.find((t) => t.worker === id && t.to === 'errored').reason).toMatch(/healthz/);
    expect(log).not.toContain(inst.spec.masterToken);
    expect(log).not.toContain(API_KEY);
  });
});

describe('admin API', () => {
  const auth = { authorization: `Bearer ${ADMIN}` };
  const validEndpoint = {
    name: 'chat',
    api_key: 'chat-key-12345',
    max_workers: 4,
    workergroups: [{ name: 'a', machine_types: [{ name: 'gpu', dollars_per_hour: 1.2 }] }],
  };

  it('needs the admin key', async () => {
    const { as } = await start();
    const none = await fetch(`${as.url}/admin/endpoints`);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { fields: object }).fields).toHaveProperty('authorization');
    const wrong = await fetch(`${as.url}/admin/endpoints`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const ok = await fetch(`${as.url}/admin/endpoints`, { headers: auth });
    expect(ok.status).toBe(200);
    const list = (await ok.json()) as Array<Record<string, unknown>>;
    expect(list.map((e) => e.name)).toEqual(['ep']);
    expect(list[0]).not.toHaveProperty('api_key');
  });

  it('validates endpoint and workergroup bodies, naming every bad field', async () => {
    const { as } = await start();
    const bad = await post(`${as.url}/admin/endpoints`, { name: 'x y', target_util: 2, max_worker: 3, workergroups: [{ name: 'a' }] }, auth);
    expect(bad.status).toBe(400);
    expect(Object.keys(bad.body.fields).sort()).toEqual(['max_worker', 'name', 'target_util', 'workergroups.0.machine_types'].sort());
    expect(bad.body.fields.max_worker).toBe('unknown field');

    const created = await post(`${as.url}/admin/endpoints`, validEndpoint, auth);
    expect(created.status).toBe(201);
    expect(created.body.api_key).toBe('chat-key-12345');
    expect(created.body.max_workers).toBe(4);
    expect(created.body.target_util).toBe(0.9);
    expect(created.body.cold_workers).toBe(5);

    const dup = await post(`${as.url}/admin/endpoints`, validEndpoint, auth);
    expect(dup.status).toBe(409);
    expect(dup.body.fields).toHaveProperty('name');

    const patchBad = await fetch(`${as.url}/admin/endpoints/chat`, {
      method: 'PATCH',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ min_load: -1, state: 'asleep' }),
    });
    expect(patchBad.status).toBe(400);
    const patchBody = (await patchBad.json()) as { fields: Record<string, string> };
    expect(Object.keys(patchBody.fields).sort()).toEqual(['min_load', 'state']);

    const patched = await fetch(`${as.url}/admin/endpoints/chat`, {
      method: 'PATCH',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ min_workers: 2, state: 'suspended', panic_window: 0 }),
    });
    expect(patched.status).toBe(200);
    const view = (await patched.json()) as Record<string, unknown>;
    expect(view.cold_workers).toBe(2);
    expect(view.state).toBe('suspended');
    expect(view.panic_window).toBe(0);

    const wgBad = await post(`${as.url}/admin/endpoints/chat/workergroups`, { name: 'b', machine_types: [{ name: 'gpu', dollars_per_hour: 'cheap' }] }, auth);
    expect(wgBad.status).toBe(400);
    expect(wgBad.body.fields).toHaveProperty('machine_types.0.dollars_per_hour');
    const wgOk = await post(
      `${as.url}/admin/endpoints/chat/workergroups`,
      { name: 'b', search_params: 'gpu_ram>=24', machine_types: [{ name: 'gpu2', dollars_per_hour: 0.5 }] },
      auth,
    );
    expect(wgOk.status).toBe(201);
    const wgUnknown = await post(`${as.url}/admin/endpoints/nope/workergroups`, { name: 'b', machine_types: [{ name: 'gpu2', dollars_per_hour: 0.5 }] }, auth);
    expect(wgUnknown.status).toBe(404);
    expect(wgUnknown.body.fields).toHaveProperty('endpoint');

    const delWg = await fetch(`${as.url}/admin/endpoints/chat/workergroups/b`, { method: 'DELETE', headers: auth });
    expect(delWg.status).toBe(200);
    const del = await fetch(`${as.url}/admin/endpoints/chat`, { method: 'DELETE', headers: auth });
    expect(del.status).toBe(200);
    const after = await fetch(`${as.url}/admin/endpoints/chat`, { headers: auth });
    expect(after.status).toBe(404);
  });
});

describe('simulated provider behind the server', () => {
  it('creates in-process workers that report, become ready and get routed', async () => {
    const dataDir = tmp();
    const as = await startAutoscaler({
      config: {
        admin_key: ADMIN,
        provider: { kind: 'simulated', seed: 1, defaults: { perf: 500, boot_time: 0.05, load_time: 0.1, start_time: 0.05, failure_rate: 0 } },
        engine: { tick_seconds: 0.05 },
        endpoints: [{ name: 'sim', api_key: API_KEY, cold_workers: 2, workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }] }],
      },
      port: 0,
      dataDir,
      logger: createLogger('autoscaler-test', { level: 'silent' }),
    });
    running.push(as);
    // cold_workers 2: both are recruited and load; one stays ready, the other is stopped into the
    // inactive pool. Routed only once that settled: a request that arrives while both are still
    // starting is demand, and the policy then keeps both ready for its release delay.
    await waitFor('one ready and one inactive worker', () => {
      const states = [...as.engine.workers.values()].map((w) => w.state).sort();
      return states.length === 2 && states[0] === 'inactive' && states[1] === 'ready';
    });
    const r = await post(`${as.url}/route/`, { endpoint: 'sim', api_key: API_KEY, cost: 10 });
    expect(r.status).toBe(200);
    expect(r.body.url).toMatch(/^http:\/\/sim-worker\.invalid\/\d+$/);
    const pem = await (await fetch(`${as.url}/pubkey/`)).text();
    const ok = createVerify('sha256').update(`{\n    "url": "${r.body.url}"\n}`).verify(createPublicKey(pem), Buffer.from(r.body.signature, 'base64'));
    expect(ok).toBe(true);
    // The request went to the ready worker.
    const ready = [...as.engine.workers.values()].find((w) => w.state === 'ready')!;
    expect(r.body.url).toBe(`http://sim-worker.invalid/${ready.id}`);
  });
});
