/**
 * The Vast provider's parts against the emulator on loopback, with no worker processes (every
 * instance here is made to stay loading): the query language, the API client's handling of 429,
 * 5xx and `success: false`, the emulator's answers to hostile calls, and the provider's create
 * journal, label reconciliation, spend guard, dry run and key hygiene.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { VastApi, VastApiError } from '../src/autoscaler/providers/vast/api.js';
import { vastConfigSchema } from '../src/autoscaler/providers/vast/config.js';
import { emulatorOptionsSchema, VastEmulator } from '../src/autoscaler/providers/vast/emulator.js';
import { CreateLedger } from '../src/autoscaler/providers/vast/ledger.js';
import { VastProvider, vastProviderFactory } from '../src/autoscaler/providers/vast/provider.js';
import { marketSchema } from '../src/autoscaler/providers/vast/market.js';
import { loadAutoscalerConfig, readConfigFile } from '../src/autoscaler/config.js';
import { matchesQuery, parseQuery, QueryError } from '../src/autoscaler/providers/vast/query.js';
import type { WorkerSpec } from '../src/autoscaler/providers/types.js';
import { waitFor } from './helpers/worker.js';

const KEY = 'vast-test-secret-key-0123';
const FAST = { search: 0.02, list: 0.02, show: 0.02, manage: 0.02, destroy: 0.02, create: 0.02 };
const MARKET = {
  machine_types: [
    { gpu_name: 'RTX 3090', count: 2, dph_base: 0.2 },
    { gpu_name: 'RTX 4090', count: 3, dph_base: 0.4, reliability: 0.995 },
  ],
};

describe('query language', () => {
  it('turns the CLI syntax into the JSON query with the CLI conversions', () => {
    expect(parseQuery('gpu_name=RTX_4090 num_gpus=1 reliability>0.98')).toEqual({
      gpu_name: { eq: 'RTX 4090' },
      num_gpus: { eq: '1' },
      reliability: { gt: '0.98' },
    });
    expect(parseQuery('gpu_ram>=24 verified=true rentable!=false driver_version>=535.86.05 duration>2')).toEqual({
      gpu_ram: { gte: 24_000 },
      verified: { eq: true },
      rentable: { neq: false },
      driver_version: { gte: 535_086_005 },
      duration: { gt: 172_800 },
    });
    expect(parseQuery('gpu_name in [RTX_3090,RTX_4090] geolocation notin [CN] num_gpus=any')).toEqual({
      gpu_name: { in: ['RTX 3090', 'RTX 4090'] },
      geolocation: { notin: ['CN'] },
    });
    expect(parseQuery('num_gpus>=1 num_gpus<=2')).toEqual({ num_gpus: { gte: '1', lte: '2' } });
    expect(parseQuery('')).toEqual({});
  });

  it('names the term it cannot read', () => {
    for (const [q, field] of [
      ['gpu_name=RTX_4090 ???', '???'],
      ['gpu_ram>lots', 'gpu_ram'],
      ['num_gpus in 2', 'num_gpus'],
      ['reliability', 'reliability'],
    ] as const) {
      let err: unknown;
      try {
        parseQuery(q);
      } catch (e) {
        err = e;
      }
      expect(err, q).toBeInstanceOf(QueryError);
      expect((err as QueryError).field, q).toBe(field);
    }
  });

  it('matches records the way the API filters offers (numbers compared as numbers)', () => {
    const offer = { gpu_name: 'RTX 4090', num_gpus: 1, reliability: 0.99, verified: true };
    expect(matchesQuery(offer, parseQuery('gpu_name=RTX_4090 num_gpus=1 reliability>0.98 verified=true'))).toBe(true);
    expect(matchesQuery(offer, parseQuery('reliability>0.995'))).toBe(false);
    expect(matchesQuery(offer, parseQuery('gpu_name in [RTX_3090,A100]'))).toBe(false);
    expect(matchesQuery(offer, parseQuery('gpu_name notin [RTX_3090]'))).toBe(true);
    expect(matchesQuery(offer, parseQuery('cpu_cores>4'))).toBe(false); // a field the offer lacks fails
  });
});

describe('shipped examples', () => {
  it('the example autoscaler config and market parse, with the provider section valid for kind vast', () => {
    const cfg = loadAutoscalerConfig('src/autoscaler/autoscaler.vast.yaml');
    const provider = vastConfigSchema.parse(cfg.provider);
    expect(provider.base_url).toBe('http://127.0.0.1:8900');
    expect(cfg.endpoints[0]!.workergroups[0]!.machine_types.map((m) => m.name)).toEqual(['RTX_3090', 'RTX_4090', 'A100_SXM4']);
    const { emulator, ...market } = readConfigFile('src/autoscaler/vast-market.example.yaml') as Record<string, unknown>;
    expect(marketSchema.parse(market).machine_types.map((m) => m.gpu_name)).toEqual(['RTX 3090', 'RTX 4090', 'A100 SXM4']);
    expect(emulatorOptionsSchema.safeParse({ ...(emulator as object), api_key: KEY }).success).toBe(true);
  });

  it('a bad provider section names each bad field, and no key is no start', () => {
    const bad = vastConfigSchema.safeParse({ kind: 'vast', base_url: 'not a url', max_dollars_per_hour: -1, bogus: 1 });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues.map((i) => i.path.join('.') || (i as { keys?: string[] }).keys?.join(',')).sort()).toEqual([
      'base_url',
      'bogus',
      'max_dollars_per_hour',
    ]);
    const saved = process.env.VAST_API_KEY;
    delete process.env.VAST_API_KEY;
    try {
      expect(() => vastProviderFactory({ config: { kind: 'vast' }, clock: undefined as never, logger: pino({ level: 'silent' }), dataDir: tmpdir() })).toThrow(
        /VAST_API_KEY/,
      );
    } finally {
      if (saved !== undefined) process.env.VAST_API_KEY = saved;
    }
  });
});

describe('against the emulator (no worker processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vast-prov-'));
  const logPath = join(dir, 'provider.log');
  // Synchronous, so the test reads every line written so far (no redaction config: the provider's own hygiene is under test).
  const logger = pino({ level: 'debug' }, pino.destination({ dest: logPath, sync: true }));
  let emu: VastEmulator;
  const providers: VastProvider[] = [];

  beforeAll(async () => {
    emu = new VastEmulator({
      options: { api_key: KEY, rate_limits: FAST, create_seconds: 0.05, loading_seconds: 0.05, foreign_instances: 1 },
      market: MARKET,
      dataDir: join(dir, 'emu'),
      logger: createLogger('emu', { level: 'silent' }),
    });
    await emu.listen();
  });
  afterAll(async () => {
    for (const p of providers) await p.close();
    await emu.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const api = (key = KEY, limits = FAST) => new VastApi({ baseUrl: emu.url, apiKey: key, limits, timeoutMs: 5000, maxAttempts: 6, logger });
  const provider = (over: Record<string, unknown> = {}, dataDir = join(dir, 'as')) => {
    const p = new VastProvider({
      config: vastConfigSchema.parse({
        kind: 'vast',
        base_url: emu.url,
        rate_limits: FAST,
        poll_seconds: 60,
        launch: { image: 'nodeworker/test' },
        ...over,
      }),
      dataDir,
      logger,
      apiKey: KEY,
    });
    providers.push(p);
    return p;
  };
  const spec = (o: Partial<WorkerSpec> = {}): WorkerSpec => ({
    workerId: 1,
    masterToken: 'mtoken-never-logged-42',
    reportAddrs: ['http://127.0.0.1:1'],
    endpoint: 'ep',
    workergroup: 'wg',
    machineType: 'RTX_4090',
    searchParams: 'num_gpus=1',
    launch: {},
    dollarsPerHour: 1,
    storageDollarsPerHour: 0,
    ...o,
  });
  const ours = () => emu.list().filter((i) => String(i.label).startsWith('nw.'));

  it('answers hostile calls with JSON that names what is wrong', async () => {
    const get = (path: string, init: RequestInit = {}) =>
      fetch(`${emu.url}${path}`, init).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
    const auth = { authorization: `Bearer ${KEY}` };
    expect(await get('/api/v0/instances?owner=me')).toMatchObject({ status: 401, body: { success: false, error: 'auth_error' } });
    expect(await get('/api/v0/instances', { headers: auth })).toMatchObject({ status: 400, body: { msg: expect.stringContaining('owner') } });
    await new Promise((r) => setTimeout(r, 30));
    const put = (body: unknown) => get('/api/v0/asks/1/', { method: 'PUT', headers: auth, body: typeof body === 'string' ? body : JSON.stringify(body) });
    expect(await put('{not json')).toMatchObject({ status: 400, body: { msg: expect.stringContaining('body') } });
    await new Promise((r) => setTimeout(r, 30));
    expect(await put({ image: 'x' })).toMatchObject({ status: 404, body: { error: 'no_such_ask' } });
    const offers = (await api().call<{ offers: Array<{ id: number }> }>('search', 'POST', '/bundles/', { gpu_name: { eq: 'RTX 3090' } }, { idempotent: true }))
      .offers;
    expect(offers).toHaveLength(2);
    await new Promise((r) => setTimeout(r, 30));
    const bad = await get(`/api/v0/asks/${offers[0]!.id}/`, { method: 'PUT', headers: auth, body: JSON.stringify({ image: 'x', disk: 2 }) });
    expect(bad).toMatchObject({ status: 400, body: { error: 'invalid_args', msg: expect.stringContaining('disk') } });
    const faults = await get('/admin/faults', { method: 'POST', headers: auth, body: JSON.stringify({ offer_gone: -1, bogus: 1 }) });
    expect(faults.status).toBe(400);
    expect(Object.keys(faults.body.fields as object).sort()).toEqual(['bogus', 'offer_gone']);
  });

  it('an instance whose container errored stays dead when stopped: a start cannot revive it', async () => {
    const a = api();
    emu.inject({ stuck_loading: 1 }); // no processes: the instance stays loading until the fault
    const offers = (await a.call<{ offers: Array<{ id: number }> }>('search', 'POST', '/bundles/', { gpu_name: { eq: 'RTX 3090' } }, { idempotent: true }))
      .offers;
    const made = await a.call<{ new_contract: number }>('create', 'PUT', `/asks/${offers[0]!.id}/`, { image: 'x', label: 'test.dead' }, { idempotent: false });
    const id = made.new_contract;
    const view = () => emu.list().find((i) => i.id === id)!;
    await waitFor(() => view().actual_status === 'loading');
    emu.inject({ error: [id] });
    expect(view()).toMatchObject({ actual_status: 'exited', status_msg: expect.stringContaining('Error') });
    await a.call('manage', 'PUT', `/instances/${id}/`, { state: 'stopped' }, { idempotent: true });
    // The stop's continuation (no processes to end) ran before the answer left this process.
    expect(view()).toMatchObject({ actual_status: 'exited', intended_status: 'stopped' });
    await expect(a.call('manage', 'PUT', `/instances/${id}/`, { state: 'running' }, { idempotent: true })).rejects.toThrow(/exited: cannot start/);
    expect(view().actual_status).toBe('exited');
    await a.call('destroy', 'DELETE', `/instances/${id}/`, undefined, { idempotent: true });
  });

  it('spaces calls, waits past a 429 (no Retry-After), retries 5xx, and turns success:false into an error', async () => {
    const a = api();
    emu.inject({ rate_limit_burst: 2 });
    const before = emu.stats.throttled;
    const list = await a.call<{ instances: unknown[] }>('list', 'GET', '/instances?owner=me', undefined, { idempotent: true });
    expect(Array.isArray(list.instances)).toBe(true);
    expect(emu.stats.throttled - before).toBe(2);
    expect(a.counters.throttled).toBe(2);
    emu.inject({ server_errors: 2 });
    await a.call('list', 'GET', '/instances?owner=me', undefined, { idempotent: true });
    expect(a.counters.serverErrors).toBe(2);
    // A call that is not safe to repeat is not repeated on 5xx.
    emu.inject({ server_errors: 1 });
    await expect(a.call('search', 'POST', '/bundles/', {}, { idempotent: false })).rejects.toMatchObject({ status: 500 });
    const id = Number(foreignId());
    emu.inject({ success_false: 1 });
    const err = await a.call('manage', 'PUT', `/instances/${id}/`, { state: 'stopped' }, { idempotent: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VastApiError);
    expect((err as VastApiError).code).toBe('success_false');
    // No call hit the emulator's threshold by itself: 429s came only from the bursts.
    expect(emu.stats.throttled - before).toBe(2);
  });

  it('never puts the key in an error or a log line', async () => {
    const wrong = api(`${KEY}-wrong`);
    const err = (await wrong
      .call('list', 'GET', `/instances?owner=me&api_key=${KEY}-wrong`, undefined, { idempotent: true })
      .catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(VastApiError);
    expect((err as VastApiError).status).toBe(401);
    expect(err.message).not.toContain(KEY);
    const dead = new VastApi({ baseUrl: 'http://127.0.0.1:1', apiKey: KEY, limits: FAST, timeoutMs: 500, maxAttempts: 2, logger });
    const e2 = (await dead.call('list', 'GET', `/instances?owner=me&api_key=${KEY}`, undefined, { idempotent: true }).catch((e: unknown) => e)) as Error;
    expect(e2.message).not.toContain(KEY);
  });

  it('journals each create before it is sent, labels it for this engine, and takes the cheapest offer within the price', async () => {
    const p = provider();
    emu.inject({ stuck_loading: 1 });
    const h = await p.create(spec({ machineType: 'RTX_4090', dollarsPerHour: 1 }));
    const inst = emu.list().find((i) => i.id === h.id)!;
    expect(inst.gpu_name).toBe('RTX 4090');
    expect(String(inst.label)).toMatch(new RegExp(`^nw\\.${p.engineId}\\.ep\\.wg\\.[0-9a-f]{8}$`));
    const entries = new CreateLedger(join(dir, 'as', 'vast', 'creates.jsonl')).read();
    const i = entries.findIndex((e) => e.op === 'create' && e.label === inst.label);
    expect(i).toBeGreaterThanOrEqual(0);
    expect(entries[i + 1]).toMatchObject({ op: 'created', id: h.id });
    // No offer under the type's price: refused, nothing created.
    const n = emu.stats.created;
    await expect(p.create(spec({ machineType: 'RTX_4090', dollarsPerHour: 0.1 }))).rejects.toThrow(/no offer/);
    expect(emu.stats.created).toBe(n);
    await p.destroy(h.id);
    expect(emu.list().some((x) => x.id === h.id)).toBe(false);
  });

  it('searches again when the offer is gone, and finds by its label an instance whose create answer was lost', async () => {
    const p = provider();
    emu.inject({ offer_gone: 1, stuck_loading: 2 });
    const a = await p.create(spec());
    expect(emu.stats.offers_gone).toBeGreaterThanOrEqual(1);
    emu.inject({ lost_answers: 1 });
    const created = emu.stats.created;
    const b = await p.create(spec());
    expect(emu.stats.created).toBe(created + 1); // found, not created twice
    expect(p.instanceIds()).toEqual([a.id, b.id].sort((x, y) => x - y));
    await p.destroy(a.id);
    await p.destroy(b.id);
    expect(ours()).toEqual([]);
  });

  it('avoids the machine of a worker released while running; destroys an instance whose worker was released while it was being created', async () => {
    const p = provider();
    emu.inject({ stuck_loading: 3 });
    const a = await p.create(spec({ workerId: 70 }));
    const machine = emu.list().find((i) => i.id === a.id)!.machine_id as number;
    await p.destroy(a.id);
    expect(p.avoidedMachines()).toEqual([machine]);
    const b = await p.create(spec({ workerId: 71 }));
    expect(emu.list().find((i) => i.id === b.id)!.machine_id).not.toBe(machine);
    await p.stop(b.id);
    await p.destroy(b.id); // parked, released for cost: its machine is fine
    expect(p.avoidedMachines()).toEqual([machine]);
    // A stop refused by the API (200 success:false): the release that follows is not the machine's fault.
    const d = await p.create(spec({ workerId: 73 }));
    emu.inject({ success_false: 1 });
    await expect(p.stop(d.id)).rejects.toThrow(/success_false/);
    await p.destroy(d.id);
    expect(p.avoidedMachines()).toEqual([machine]);
    emu.inject({ stuck_loading: 1 });
    const created = emu.stats.created;
    const pending = p.create(spec({ workerId: 72 }));
    await p.destroy(72); // the engine's proposed id, before the create answered
    const c = await pending;
    expect(emu.stats.created).toBe(created + 1);
    expect(emu.list().some((i) => i.id === c.id)).toBe(false);
    expect(p.instanceIds()).toEqual([]);
  });

  it('refuses a create past max_dollars_per_hour', async () => {
    const p = provider({ max_dollars_per_hour: 0.5 });
    emu.inject({ stuck_loading: 2 });
    const a = await p.create(spec({ machineType: 'RTX_3090' }));
    await expect(p.create(spec({ machineType: 'RTX_4090' }))).rejects.toThrow(/spend guard/);
    expect(p.hourlyCost('ep')).toBeGreaterThan(0.2);
    await p.destroy(a.id);
  });

  it('in dry run makes no call at all', async () => {
    const p = provider({ dry_run: true }, join(dir, 'dry'));
    const calls = emu.stats.calls;
    const h = await p.create(spec());
    await p.stop(h.id);
    await p.start(h.id);
    await p.destroy(h.id);
    expect(await p.adopt([])).toEqual([]);
    expect(emu.stats.calls).toBe(calls);
    const log = readFileSync(logPath, 'utf8');
    expect(log).toContain('"event":"vast_dry_run"');
    expect(log).not.toContain('mtoken-never-logged-42');
    expect(log).not.toContain(KEY);
  });

  it('at start adopts the remembered instances, destroys its other labelled ones, and leaves other labels alone', async () => {
    const dataDir = join(dir, 'restart');
    const first = provider({}, dataDir);
    emu.inject({ stuck_loading: 3 });
    const keep = await first.create(spec({ workerId: 10 }));
    const orphan = await first.create(spec({ workerId: 11 }));
    const other = provider({ engine_id: 'another-engine' }, join(dir, 'other'));
    const theirs = await other.create(spec({ workerId: 12 }));
    await first.close();
    const second = provider({}, dataDir);
    expect(second.engineId).toBe(first.engineId);
    const got = await second.adopt([{ ...spec({ workerId: keep.id }), running: true }]);
    expect(got).toEqual([{ id: keep.id, running: true }]);
    // Every create settled: the journal starts afresh.
    expect(new CreateLedger(join(dataDir, 'vast', 'creates.jsonl')).read()).toEqual([]);
    const ids = emu.list().map((i) => i.id);
    expect(ids).toContain(keep.id);
    expect(ids).not.toContain(orphan.id);
    expect(ids).toContain(theirs.id);
    expect(ids).toContain(Number(foreignId()));
    await second.destroy(keep.id);
    await other.destroy(theirs.id);
    expect(ours()).toEqual([]);
    expect(readFileSync(logPath, 'utf8')).not.toContain(KEY);
  });

  it('at start, an instance remembered running but found parked is handed back as parked: kept, neither waited for nor started', async () => {
    const dataDir = join(dir, 'restart-parked');
    const first = provider({}, dataDir);
    emu.inject({ stuck_loading: 1 });
    const h = await first.create(spec({ workerId: 20 }));
    await first.stop(h.id); // the park went through; the engine was killed before it journaled it
    await first.close();
    const second = provider({ start_timeout_seconds: 1, boot_timeout_seconds: 1 }, dataDir);
    const manages = emu.stats.calls;
    expect(await second.adopt([{ ...spec({ workerId: h.id }), running: true }])).toEqual([{ id: h.id, running: false, stopped: true }]);
    expect(emu.stats.calls).toBe(manages + 1); // the list only: no start behind the engine's back
    // Past every boot/start timeout, a poll keeps it (a waited-for instance would be destroyed).
    await new Promise((r) => setTimeout(r, 1100));
    await second.poll();
    expect(emu.list().find((i) => i.id === h.id)).toMatchObject({ intended_status: 'stopped' });
    await second.destroy(h.id);
    expect(ours()).toEqual([]);
  });

  const foreignId = () => emu.list().find((i) => String(i.label).startsWith('someone-else'))!.id;
});
