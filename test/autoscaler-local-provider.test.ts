/**
 * The local provider on its own: real on_start.sh runs (model-sim + worker from dist/) reporting
 * to a recording engine on loopback (test/helpers/engine.ts). Checks how the instance life maps
 * onto processes and files: create, stop (processes end, workspace kept), start (second boot in the
 * same workspace), an unasked exit, destroy (processes and workspace gone), close, leftovers of a
 * dead autoscaler, and what the worker's environment holds (and does not).
 * Needs `npm run build`.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { LocalProvider, localConfigSchema, localProviderFactory } from '../src/autoscaler/providers/local.js';
import type { ProviderEvent, WorkerSpec } from '../src/autoscaler/providers/types.js';
import { createRealClock } from '../src/autoscaler/clock.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { alive, waitForValue } from './helpers/local-fleet.js';

const FAST_ENV = {
  MODEL_SIM_ARGS: '--load-seconds 0.2 --token-rate 100 --capacity 1000 --ttft-ms 10',
  BENCHMARK_MAX_TOKENS: '4',
  BENCHMARK_CONCURRENCY: '4',
  DRAIN_TIMEOUT: '3',
};

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  // Every cleanup runs even when one fails; the first failure is reported after.
  const errors: unknown[] = [];
  for (const fn of cleanups.splice(0).reverse())
    await Promise.resolve()
      .then(fn)
      .catch((err: unknown) => errors.push(err));
  if (errors.length > 0) throw errors[0];
}, 30_000);

const waitFor = <T>(what: string, fn: () => T | undefined | null | false, ms = 20_000) => waitForValue(what, fn, ms, 50);

async function setup(env: Record<string, string> = FAST_ENV) {
  const engine: TestEngine = await startEngine();
  cleanups.push(() => engine.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'local-provider-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const provider = new LocalProvider({
    config: localConfigSchema.parse({ kind: 'local', env, kill_timeout_seconds: 3 }),
    dataDir,
    logger: createLogger('test', { level: 'silent' }),
  });
  const seen = new Set<number>();
  const remember = setInterval(() => {
    for (const p of provider.allPids()) seen.add(p);
  }, 50);
  cleanups.push(async () => {
    clearInterval(remember);
    await provider.close();
    for (const pid of seen) expect(alive(pid), `pid ${pid} outlived close()`).toBe(false);
  });
  const events: ProviderEvent[] = [];
  provider.subscribe((e) => events.push(e));
  const spec = (workerId: number, launch: Record<string, unknown> = {}): WorkerSpec => ({
    workerId,
    masterToken: `token-${workerId}-0123456789abcdef`,
    reportAddrs: [engine.url],
    endpoint: 'ep',
    workergroup: 'wg',
    machineType: 'cpu',
    searchParams: '',
    launch,
    dollarsPerHour: 0.1,
    storageDollarsPerHour: 0.01,
  });
  /** The worker reported itself loaded (loadtime > 0) this many times. */
  const loadedReports = (id: number) => engine.statuses.filter((s) => s.body.id === id && Number(s.body.loadtime) > 0 && Number(s.body.max_perf) > 0).length;
  return { engine, dataDir, provider, events, spec, loadedReports, seen };
}

function environOf(pid: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

describe('local provider', () => {
  it('creates a worker that reports to the engine, with its own ports and env, and no UNSECURED', async () => {
    process.env.NODEWORKER_TEST_PARENT_SECRET = 'must-not-leak';
    cleanups.push(() => delete process.env.NODEWORKER_TEST_PARENT_SECRET);
    const { provider, events, spec, loadedReports, engine } = await setup({ ...FAST_ENV, UNSECURED: 'true' });
    const handle = await provider.create(spec(4, { env: { LOG_LEVEL: 'debug' } }));
    expect(handle.id).toBe(4);
    const ports = provider.portsOf(4)!;
    expect(new Set([ports.worker, ports.http, ports.model]).size).toBe(3);
    expect(handle.url).toBe(`http://127.0.0.1:${ports.worker}`);
    await waitFor('running event', () => events.some((e) => e.workerId === 4 && e.kind === 'running'));
    await waitFor('a loaded report', () => loadedReports(4) > 0, 30_000);
    const report = engine.statuses.find((s) => s.body.id === 4)!.body;
    expect(report.mtoken).toBe('token-4-0123456789abcdef');
    expect(report.url).toBe(handle.url);

    const [script, ...children] = await waitFor('three pids', () => (provider.pidsOf(4).length === 3 ? provider.pidsOf(4) : null));
    for (const pid of [script!, ...children]) {
      const env = environOf(pid);
      expect(env.CONTAINER_ID).toBe('4');
      expect(env.WORKSPACE_DIR).toBe(provider.workspaceOf(4));
      expect(env.REPORT_ADDR).toBe(engine.url);
      expect(env.LOG_LEVEL).toBe('debug');
      expect(env).not.toHaveProperty('UNSECURED');
      expect(env).not.toHaveProperty('NODEWORKER_TEST_PARENT_SECRET');
      // Every variable a Vast instance has (PROTOCOL §8); the Python PyWorker reads VAST_TCP_PORT_<WORKER_PORT>.
      expect(env[`VAST_TCP_PORT_${ports.worker}`]).toBe(String(ports.worker));
      expect(env[`VAST_TCP_PORT_${ports.http}`]).toBe(String(ports.http));
      for (const k of ['WORKER_PORT', 'WORKER_HTTP_PORT', 'MASTER_TOKEN', 'PUBLIC_IPADDR', 'USE_SSL', 'BACKEND', 'VAST_CONTAINERLABEL'])
        expect(env, k).toHaveProperty(k);
    }
    // The worker really verifies: its /healthz says the engine key is loaded.
    const health = (await (await fetch(`${handle.url}/healthz`)).json()) as { auth: string; state: string };
    expect(health.auth).toBe('key loaded');
    expect(health.state).toBe('ready');
  }, 60_000);

  it('stop ends the processes and keeps the workspace; start boots again there, warm', async () => {
    const { provider, events, spec, loadedReports } = await setup();
    await provider.create(spec(1));
    await waitFor('loaded', () => loadedReports(1) > 0, 30_000);
    const pids = await waitFor('three pids', () => (provider.pidsOf(1).length === 3 ? provider.pidsOf(1) : null));
    const ws = provider.workspaceOf(1)!;
    const perf = readFileSync(join(ws, '.has_benchmark'), 'utf8');

    await provider.stop(1);
    expect(events.filter((e) => e.workerId === 1).map((e) => e.kind)).toEqual(['running', 'stopped']);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(provider.pidsOf(1)).toEqual([]);
    expect(existsSync(join(ws, '.has_benchmark'))).toBe(true);
    expect(existsSync(join(ws, '.worker.pid'))).toBe(false);

    const before = loadedReports(1);
    await provider.start(1);
    await waitFor('loaded again', () => loadedReports(1) > before, 30_000);
    expect(provider.workspaceOf(1)).toBe(ws);
    expect(readFileSync(join(ws, '.has_benchmark'), 'utf8')).toBe(perf);
    expect(existsSync(join(ws, 'model.log.old'))).toBe(true);
    const log = readFileSync(join(ws, 'on_start.log'), 'utf8');
    expect(log.match(/benchmark round 1\//g)).toHaveLength(1); // the second boot used the cache
    for (const pid of provider.pidsOf(1)) expect(pids).not.toContain(pid);
    expect(events.some((e) => e.kind === 'exited')).toBe(false);
  }, 60_000);

  it('reports an exit nobody asked for, ends what is left, and destroy removes everything', async () => {
    const { provider, events, spec, loadedReports } = await setup();
    await provider.create(spec(2));
    await waitFor('loaded', () => loadedReports(2) > 0, 30_000);
    const [script, model, worker] = await waitFor('three pids', () => (provider.pidsOf(2).length === 3 ? provider.pidsOf(2) : null));
    const workerPid = readFileSync(join(provider.workspaceOf(2)!, '.worker.pid'), 'utf8').trim();
    process.kill(Number(workerPid), 'SIGKILL');
    const exited = await waitFor('exited event', () => events.find((e) => e.workerId === 2 && e.kind === 'exited'));
    expect(exited.reason).toMatch(/on_start\.sh exited with code \d+: worker exited with code/);
    await waitFor('all its processes gone', () => [script!, model!, worker!].every((p) => !alive(p)), 10_000);

    const ws = provider.workspaceOf(2)!;
    await provider.destroy(2);
    expect(existsSync(ws)).toBe(false);
    expect(events.at(-1)).toMatchObject({ workerId: 2, kind: 'destroyed' });
    await provider.destroy(2); // idempotent
    await provider.destroy(999); // unknown ids too
    await expect(provider.start(2)).rejects.toThrow(/no local worker 2/);
  }, 60_000);

  it('destroy while a create is under way leaves nothing running', async () => {
    const { provider, spec, dataDir } = await setup();
    const creating = provider.create(spec(3));
    const destroying = provider.destroy(3);
    await expect(creating).rejects.toThrow(/destroyed before it started/);
    await destroying;
    expect(provider.pidsOf(3)).toEqual([]);
    expect(existsSync(join(dataDir, 'workers', 'worker-3'))).toBe(false);
  }, 30_000);

  it('close ends every worker; nothing is created after it', async () => {
    const { provider, spec, dataDir, seen } = await setup();
    await provider.create(spec(5));
    await provider.create(spec(6));
    await waitFor('six pids', () => provider.allPids().length === 6);
    for (const p of provider.allPids()) seen.add(p);
    await provider.close();
    for (const pid of seen) expect(alive(pid)).toBe(false);
    expect(existsSync(join(dataDir, 'workers', 'worker-5'))).toBe(false);
    await expect(provider.create(spec(7))).rejects.toThrow(/closed/);
  }, 30_000);

  it('kills its workers when its process crashes without close()', async () => {
    const engine = await startEngine();
    cleanups.push(() => engine.close());
    const dataDir = mkdtempSync(join(tmpdir(), 'local-provider-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // A process that owns a provider with a running worker, then dies of an uncaught exception.
    const code = `
      const { LocalProvider, localConfigSchema } = await import(${JSON.stringify(resolve('dist/autoscaler/providers/local.js'))});
      const { createLogger } = await import(${JSON.stringify(resolve('dist/common/log.js'))});
      const p = new LocalProvider({ config: localConfigSchema.parse({ kind: 'local', env: ${JSON.stringify(FAST_ENV)} }), dataDir: ${JSON.stringify(dataDir)}, logger: createLogger('t', { level: 'silent' }) });
      await p.create({ workerId: 1, masterToken: 'crash-token', reportAddrs: [${JSON.stringify(engine.url)}], endpoint: 'e', workergroup: 'w', machineType: 'm', searchParams: '', launch: {}, dollarsPerHour: 0, storageDollarsPerHour: 0 });
      while (p.pidsOf(1).length < 3) await new Promise((r) => setTimeout(r, 50));
      console.log('PIDS ' + p.pidsOf(1).join(' '));
      setTimeout(() => { throw new Error('boom'); }, 100);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    const line = await waitFor('the pids', () => /PIDS ([\d ]+)/.exec(out), 20_000);
    const pids = line[1]!.trim().split(' ').map(Number);
    expect(pids).toHaveLength(3);
    cleanups.push(() => {
      for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    });
    expect(await exited).not.toBe(0);
    expect(out).toContain('boom');
    await waitFor('every worker process gone', () => pids.every((pid) => !alive(pid)), 5000);
  }, 30_000);

  it('ends the leftovers of an autoscaler that died, and refuses bad config', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'local-provider-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // A "supervisor" left running by a killed autoscaler, named like one.
    const ws = join(dataDir, 'workers', 'worker-9');
    mkdirSync(ws, { recursive: true });
    const orphan = spawn('bash', ['-c', 'exec -a on_start.sh-leftover sleep 60'], { detached: true, stdio: 'ignore' });
    cleanups.push(() => void (alive(orphan.pid!) && process.kill(orphan.pid!, 'SIGKILL')));
    await waitFor('the orphan renamed', () => readFileSync(`/proc/${orphan.pid}/cmdline`, 'utf8').startsWith('on_start.sh-leftover'), 5000);
    writeFileSync(join(ws, '.on_start.pid'), `${orphan.pid}\n`);

    const ctx = { clock: createRealClock(), logger: createLogger('test', { level: 'silent' }), dataDir };
    const provider = localProviderFactory({ ...ctx, config: { kind: 'local' } });
    cleanups.push(() => provider.close());
    await waitFor('the orphan ended', () => !alive(orphan.pid!), 5000);
    expect(existsSync(ws)).toBe(false);

    // One provider per workspaces dir.
    expect(() => localProviderFactory({ ...ctx, config: { kind: 'local' } })).toThrow(/already used/);
    expect(() => localProviderFactory({ ...ctx, config: { kind: 'local', stop_timout_seconds: 3 } })).toThrow(/provider\.stop_timout_seconds: unknown field/);
    expect(() => localProviderFactory({ ...ctx, config: { kind: 'local', script: '/nonexistent/on_start.sh' } })).toThrow(/provider\.script/);
    await expect(
      provider.create({
        workerId: 1,
        masterToken: 't',
        reportAddrs: ['http://127.0.0.1:9'],
        endpoint: 'e',
        workergroup: 'w',
        machineType: 'm',
        searchParams: '',
        launch: { env: { A: 1 } },
        dollarsPerHour: 0,
        storageDollarsPerHour: 0,
      }),
    ).rejects.toThrow(/launch\.env\.A/);
  }, 30_000);
});
