/**
 * End to end on the Vast provider: the autoscaler as a real process (`nodeworker autoscaler`,
 * provider vast) renting from the Vast API emulator, whose instances are real on_start.sh runs
 * (model-sim at each machine type's speed + the worker), and requests from the TS client.
 * One file, one fleet, in order: the learning phase (three machine types measured, the best perf
 * per dollar kept), park / reactivate / scale up / release, every injected fault with requests
 * flowing, and a SIGKILLed autoscaler restarted. At each step the emulator's instances labelled
 * for this engine are exactly the engine's fleet: no instance leaked.
 * Needs `npm run build` (the autoscaler and on_start.sh run dist/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Serverless } from '../src/client/index.js';
import { createLogger } from '../src/common/log.js';
import { VastEmulator } from '../src/autoscaler/providers/vast/emulator.js';

const VAST_KEY = 'vast-e2e-account-key';
const ADMIN_KEY = 'vast-e2e-admin-key';
const CLIENT_KEY = 'vast-e2e-client-key';
const FAST = { search: 0.02, list: 0.02, show: 0.02, manage: 0.02, destroy: 0.02, create: 0.02 };
const TYPES = ['RTX_3090', 'RTX_4090', 'A100_SXM4'];
const BEST = 'RTX_4090';
const waitFor = <T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, ms = 90_000) => waitAsync(what, fn, ms);

let lastSeen = '';
async function waitAsync<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, ms: number): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}; ${lastSeen}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface EngineWorker {
  id: number;
  state: string;
  machineType: string;
  url: string | null;
}

describe('vast provider end to end (autoscaler process, emulator, real workers)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vast-e2e-'));
  const configPath = join(dir, 'autoscaler.json');
  let emu: VastEmulator;
  let proc: ChildProcess | null = null;
  let url = '';
  let port = 0;
  const figures: Record<string, unknown> = {};

  beforeAll(async () => {
    emu = new VastEmulator({
      options: {
        api_key: VAST_KEY,
        rate_limits: FAST,
        create_seconds: 0.2,
        loading_seconds: 0.3,
        start_seconds: 0.2,
        foreign_instances: 1,
        instance_env: { BENCHMARK_MAX_TOKENS: '16', BENCHMARK_CONCURRENCY: '8', DRAIN_TIMEOUT: '3' },
      },
      market: {
        machine_types: [
          { gpu_name: 'RTX 3090', count: 3, dph_base: 0.2, model_sim_args: '--load-seconds 0.3 --token-rate 1000 --capacity 100 --ttft-ms 5' },
          { gpu_name: 'RTX 4090', count: 12, dph_base: 0.4, model_sim_args: '--load-seconds 0.3 --token-rate 1000 --capacity 400 --ttft-ms 5' },
          { gpu_name: 'A100 SXM4', count: 2, dph_base: 1.0, model_sim_args: '--load-seconds 0.3 --token-rate 1000 --capacity 600 --ttft-ms 5' },
        ],
      },
      dataDir: join(dir, 'emulator'),
      logger: createLogger('vast-emulator', { destination: join(dir, 'emulator.log') }),
    });
    await emu.listen();
    writeFileSync(
      configPath,
      JSON.stringify({
        engine: { tick_seconds: 0.5, stale_after_seconds: 15, probe_timeout_seconds: 2, load_timeout_seconds: 60 },
        provider: {
          kind: 'vast',
          base_url: emu.url,
          poll_seconds: 0.3,
          boot_timeout_seconds: 5,
          start_timeout_seconds: 30,
          request_timeout_seconds: 5,
          rate_limits: FAST,
          max_dollars_per_hour: 4,
          launch: { image: 'nodeworker/e2e', disk: 10 },
        },
        endpoints: [
          {
            name: 'vast',
            api_key: CLIENT_KEY,
            cold_workers: 3,
            max_workers: 4,
            min_load: 1,
            cold_mult: 0,
            scale_down_delay: 1,
            release_delay: 2,
            workergroups: [
              {
                name: 'gpu',
                search_params: 'num_gpus=1 reliability>0.9',
                launch: { backend: 'openai' },
                machine_types: [
                  { name: 'RTX_3090', dollars_per_hour: 0.25, storage_dollars_per_hour: 0.01 },
                  { name: 'RTX_4090', dollars_per_hour: 0.45, storage_dollars_per_hour: 0.01 },
                  { name: 'A100_SXM4', dollars_per_hour: 1.1, storage_dollars_per_hour: 0.01 },
                ],
              },
            ],
          },
        ],
      }),
    );
  });

  afterAll(async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await new Promise((r) => proc!.once('exit', r));
    }
    await emu.close();
    console.log(`vast e2e figures: ${JSON.stringify(figures)}`);
    if (!process.env.KEEP_VAST_E2E) rmSync(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  }, 60_000);

  const startAutoscaler = async (p: number) => {
    const child = spawn(process.execPath, ['dist/cli.js', 'autoscaler', '--config', configPath, '--port', String(p), '--data-dir', join(dir, 'as')], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, VAST_API_KEY: VAST_KEY, AUTOSCALER_ADMIN_KEY: ADMIN_KEY, LOG_FILE: join(dir, `autoscaler-${Date.now()}.log`), LOG_FORMAT: 'json' },
    });
    proc = child;
    const got = await new Promise<string>((resolve, reject) => {
      let err = '';
      child.stderr!.on('data', (c: Buffer) => {
        err += c.toString();
        const m = /autoscaler listening on (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`autoscaler exited (${code}) before listening: ${err}`)));
    });
    url = got;
    port = Number(new URL(got).port);
  };

  const admin = async <T>(path: string, init: RequestInit = {}): Promise<T> => {
    const r = await fetch(`${url}${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' } });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
  const fleet = async () => (await admin<EngineWorker[]>('/admin/endpoints/vast/workers')).filter((w) => w.state !== 'destroyed');
  const ours = () => emu.list().filter((i) => String(i.label).startsWith('nw.'));
  const patch = (body: Record<string, unknown>) => admin('/admin/endpoints/vast', { method: 'PATCH', body: JSON.stringify(body) });
  /** The fleet is `n` workers, all ready or inactive, and the emulator's labelled instances are exactly it. */
  const settled = async (n: number, type?: string) => {
    const f = await fleet();
    const ids = f.map((w) => w.id).sort();
    const inst = ours()
      .map((i) => Number(i.id))
      .sort();
    lastSeen = `engine: ${f.map((w) => `${w.id} ${w.machineType} ${w.state}`).join(', ')}; emulator: ${ours()
      .map((i) => `${i.id} ${i.gpu_name} ${i.actual_status}/${i.intended_status} ${i.status_msg}`)
      .join(', ')}`;
    const ok =
      f.length === n &&
      f.every((w) => (w.state === 'ready' || w.state === 'inactive') && (!type || w.machineType === type)) &&
      JSON.stringify(ids) === JSON.stringify(inst);
    return ok ? f : null;
  };
  /** Learned perf per dollar of each machine type, from the engine's perf book. */
  const perfPerDollar = (perf: Record<string, { estimate: number | null }>) =>
    Object.fromEntries(TYPES.map((t, i) => [t, Math.round((perf[`gpu/${t}`]?.estimate ?? 0) / [0.25, 0.45, 1.1][i]!)]));
  const learned = async () => (await admin<{ perf: Record<string, { estimate: number | null }> }>('/admin/status')).perf;
  const leaked = async () => {
    const ids = new Set((await fleet()).map((w) => w.id));
    return ours().filter((i) => !ids.has(Number(i.id))).length;
  };

  it('learns three machine types and settles on the best perf per dollar; parks and releases', async () => {
    const t0 = Date.now();
    await startAutoscaler(0);
    const perf = await waitFor('benchmarks of all three types', async () => {
      const s = await admin<{ perf: Record<string, { benchmarks: number; estimate: number | null }> }>('/admin/status');
      return TYPES.every((t) => (s.perf[`gpu/${t}`]?.benchmarks ?? 0) >= 1) ? s.perf : null;
    });
    figures.learned_at_s = (Date.now() - t0) / 1000;
    const value = perfPerDollar(perf);
    figures.perf_per_dollar = value;
    expect(Object.entries(value).sort((a, b) => b[1] - a[1])[0]![0]).toBe(BEST); // the market's intended ranking
    const f = await waitFor('three RTX_4090 workers, nothing else', () => settled(3, BEST));
    figures.converged_at_s = (Date.now() - t0) / 1000;
    expect(f.filter((w) => w.state === 'inactive').length).toBeGreaterThanOrEqual(1); // parked: not needed for min_load 1
    // Released: the explored types' instances are gone from the account.
    expect(ours().every((i) => i.gpu_name === 'RTX 4090')).toBe(true);
    expect(emu.stats.destroyed).toBeGreaterThanOrEqual(2);
    expect(emu.stats.stopped).toBeGreaterThanOrEqual(1);
    // The worker URL is public_ipaddr + the HostPort (a string) of the worker port.
    const ready = f.find((w) => w.state === 'ready')!;
    const inst = ours().find((i) => Number(i.id) === ready.id)!;
    const hostPort = (inst.ports as Record<string, Array<{ HostPort: unknown }>>)['3000/tcp']![0]!.HostPort;
    expect(typeof hostPort).toBe('string');
    expect(ready.url).toBe(`http://127.0.0.1:${hostPort}`);
    // Someone else's instance of the account was never touched.
    expect(emu.list().filter((i) => String(i.label).startsWith('someone-else'))).toHaveLength(1);
    expect(await leaked()).toBe(0);
  }, 150_000);

  it('reactivates parked workers, scales up, parks again', async () => {
    const started = emu.stats.started;
    const created = emu.stats.created;
    await patch({ min_load: 5000 }); // more than one worker's capacity: inactive ones start
    await waitFor('parked workers started', async () => emu.stats.started > started && (await fleet()).filter((w) => w.state === 'ready').length >= 2);
    await patch({ cold_workers: 4 });
    await waitFor('a fourth worker', () => settled(4, BEST));
    expect(emu.stats.created).toBe(created + 1);
    const stopped = emu.stats.stopped;
    await patch({ min_load: 1 });
    await waitFor('workers parked again', async () => emu.stats.stopped > stopped && (await settled(4, BEST)));
    expect(await leaked()).toBe(0);
  }, 120_000);

  it('survives every injected fault with requests flowing: none lost, none leaked', async () => {
    const client = new Serverless({ autoscalerUrl: url, apiKey: CLIENT_KEY, timeout: 60_000, retry: { maxAttempts: 30, baseDelayMs: 100, maxDelayMs: 1000 } });
    const ep = client.endpoint('vast');
    const results: Array<{ ok: boolean; why?: string }> = [];
    let stop = false;
    const one = async () => {
      while (!stop) {
        try {
          const r = await ep.request('/v1/completions', { prompt: 'through the faults', max_tokens: 8 }, { cost: 8 });
          results.push({ ok: r.status === 200, why: String(r.status) });
        } catch (err) {
          results.push({ ok: false, why: String(err) });
        }
      }
    };
    const load = Promise.all([one(), one(), one()]);
    const survived: Record<string, number> = {};
    const readyId = async () => (await waitFor('a ready worker', async () => (await fleet()).find((w) => w.state === 'ready'))).id;
    /** Inject a fault on one instance, wait until the engine has let it go (and `also`), then for the fleet to settle. */
    const hit = async (fault: string, f: Parameters<VastEmulator['inject']>[0], also: () => boolean = () => true) => {
      const victim = (f.kill ?? f.offline ?? f.error)![0]!;
      emu.inject(f);
      await waitFor(
        `instance ${victim} gone after ${fault}`,
        async () => also() && !(await fleet()).some((w) => w.id === victim) && !ours().some((i) => Number(i.id) === victim),
      );
      await settle(fault);
    };
    const settle = async (fault: string) => {
      await waitFor(`the fleet settled after ${fault}`, () => settled(4, BEST));
      expect(await leaked(), fault).toBe(0);
      survived[fault] = (survived[fault] ?? 0) + 1;
    };
    try {
      await waitFor('requests served', () => results.filter((r) => r.ok).length >= 5);
      // An instance dies; its replacement's first offer is gone.
      emu.inject({ offer_gone: 1 });
      const gone = emu.stats.offers_gone;
      await hit('instance killed', { kill: [await readyId()] });
      expect(emu.stats.offers_gone).toBe(gone + 1);
      survived['offer gone'] = 1;
      await hit('host offline', { offline: [await readyId()] });
      await hit('container error', { error: [await readyId()] });
      // The next instance stays loading: destroyed after boot_timeout_seconds, replaced.
      emu.inject({ stuck_loading: 1 });
      const destroyed = emu.stats.destroyed;
      await hit('stuck loading', { kill: [await readyId()] }, () => emu.stats.destroyed >= destroyed + 2);
      for (const [fault, f] of [
        ['429 burst', { rate_limit_burst: 8 }],
        ['5xx', { server_errors: 4 }],
      ] as const) {
        const before = fault === '429 burst' ? emu.stats.throttled : emu.stats.server_errors;
        emu.inject(f);
        await waitFor(`${fault} served`, () => (fault === '429 burst' ? emu.stats.throttled : emu.stats.server_errors) >= before + Object.values(f)[0]!);
        await settle(fault);
      }
      // success:false on the next manage calls (the start and stop of a reactivation).
      const sf = emu.stats.success_false;
      emu.inject({ success_false: 2 });
      await patch({ min_load: 5000 });
      await waitFor('success:false answered', () => emu.stats.success_false >= sf + 2);
      await patch({ min_load: 1 });
      await settle('200 with success:false');
      await waitFor('requests after the faults', () => results.filter((r) => r.ok).length >= 60);
    } finally {
      stop = true;
      await load;
      await client.close();
    }
    figures.requests = results.length;
    figures.lost = results.filter((r) => !r.ok).length;
    figures.faults_survived = survived;
    // Busy but never saturated (three clients on workers that batch hundreds): what the workers
    // served was demand, not capacity, so the learned values stand and the winner stays the winner.
    const after = perfPerDollar(await learned());
    figures.perf_per_dollar_after_faults = after;
    expect(Object.entries(after).sort((a, b) => b[1] - a[1])[0]![0]).toBe(BEST);
    // More 4090s were benchmarked since (their mean moves a little); the defect took it to ~0.27×.
    expect(after[BEST]).toBeGreaterThan(0.6 * (figures.perf_per_dollar as Record<string, number>)[BEST]!);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(Object.keys(survived)).toHaveLength(8);
  }, 240_000);

  it('a SIGKILLed autoscaler restarted adopts its labelled instances and creates no duplicate', async () => {
    const before = await waitFor('a settled fleet', () => settled(4, BEST));
    const created = emu.stats.created;
    proc!.kill('SIGKILL');
    await new Promise((r) => proc!.once('exit', r));
    // Its instances live on: the emulator still runs them.
    expect(
      ours()
        .map((i) => Number(i.id))
        .sort(),
    ).toEqual(before.map((w) => w.id).sort());
    await startAutoscaler(port);
    const after = await waitFor('the same fleet taken back', () => settled(4, BEST));
    expect(after.map((w) => w.id).sort()).toEqual(before.map((w) => w.id).sort());
    expect(emu.stats.created).toBe(created);
    // Requests are served by the adopted workers.
    const client = new Serverless({ autoscalerUrl: url, apiKey: CLIENT_KEY, timeout: 30_000 });
    const r = await client.endpoint('vast').request('/v1/completions', { prompt: 'after the restart', max_tokens: 4 }, { cost: 4 });
    expect(r.status).toBe(200);
    await client.close();
    expect(await leaked()).toBe(0);
    figures.leaked_at_end = await leaked();
    // The account key was never written to a log, in either run.
    const logs = readdirSync(dir).filter((f) => f.startsWith('autoscaler-'));
    expect(logs).toHaveLength(2);
    for (const f of logs) expect(readFileSync(join(dir, f), 'utf8')).not.toContain(VAST_KEY);
  }, 120_000);
});
