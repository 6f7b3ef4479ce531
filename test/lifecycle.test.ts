/**
 * The worker's lifecycle (issue 3): the state machine, GET /healthz, a lifecycle hook that starts
 * the model itself (execa), loading progress from real disk growth, a real worker process drained
 * by SIGTERM with a stream in flight, and a start-up failure reported while the process lives on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { startModelSim, type ModelSim, type ModelSimOptions } from '../src/model-sim/index.js';
import type { LifecycleHook, WorkerSpec } from '../src/worker/config.js';
import { parseWorkerEnv } from '../src/worker/env.js';
import { Ledger } from '../src/worker/ledger.js';
import { Lifecycle, type Transition } from '../src/worker/lifecycle.js';
import { startWorker, type RunningWorker, type WorkerTimings } from '../src/worker/worker.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { freePort, silentLogger, tgiDefinition, useResources, waitFor } from './helpers/worker.js';

const CLI = resolve('dist/cli.js');
const FAST: Partial<WorkerTimings> = {
  noHealthWaitMs: 0,
  healthIntervalMs: 100,
  reportTickMs: 50,
  reportIdleMs: 200,
  reportRetryDelayMs: 50,
  pubkeyBaseDelayMs: 50,
  progressLogMs: 100,
};

const cleanups = useResources();

function tempDir(base = tmpdir()): string {
  const dir = mkdtempSync(join(base, 'lifecycle-'));
  cleanups.defer(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function engine(): Promise<TestEngine> {
  const e = await startEngine();
  cleanups.defer(() => e.close());
  return e;
}

async function sim(opts: Partial<ModelSimOptions> & { flavor?: ModelSimOptions['flavor'] }): Promise<ModelSim> {
  const m = await startModelSim({ flavor: 'tgi', port: 0, loadSeconds: 0, tokenRate: 2000, capacity: 20_000, ttftMs: 2, ...opts });
  cleanups.defer(() => m.close());
  return m;
}

async function inProcessWorker(
  spec: Partial<WorkerSpec>,
  env: Record<string, string>,
  timings: Partial<WorkerTimings> = FAST,
  logger = silentLogger(),
): Promise<RunningWorker> {
  const w = await startWorker({
    definition: tgiDefinition(spec),
    env: parseWorkerEnv({ WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '11', ...env }),
    logger,
    timings,
  });
  cleanups.defer(() => w.close());
  return w;
}

async function getJson(url: string): Promise<{ status: number; headers: Record<string, unknown>; json: any }> {
  const r = await request(url);
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, json: text ? JSON.parse(text) : undefined };
}

/** A CLI process in its own process group, killed (group and all) after the test. */
interface Proc {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

function spawnCli(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-200_000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-200_000)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  cleanups.defer(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      await exited;
    }
  });
  return { child, output: () => out, exited };
}

describe('the state machine', () => {
  it('walks starting → loading → benchmarking → ready, errors from any state, drains for good', () => {
    const l = new Lifecycle();
    const seen: Transition[] = [];
    l.on('transition', (t) => seen.push(t));
    expect(l.state).toBe('starting');
    expect(l.loadtime).toBe(0);
    expect(l.to('ready', 'too early')).toBe(false);
    expect(l.to('loading', 'watching the log')).toBe(true);
    expect(l.to('loading', 'again')).toBe(false);
    expect(l.to('benchmarking', 'ready line')).toBe(true);
    expect(l.to('loading', 'backwards')).toBe(false);
    expect(l.to('ready', 'perf known')).toBe(true);
    expect(l.readyAt).not.toBeNull();
    expect(l.loadtime).toBeGreaterThanOrEqual(0);
    expect(l.to('errored', 'health failed')).toBe(true);
    expect(l.reason).toBe('health failed');
    expect(l.admitting).toBe(true);
    expect(l.to('draining', 'SIGTERM')).toBe(true);
    expect(l.admitting).toBe(false);
    for (const s of ['starting', 'loading', 'benchmarking', 'ready', 'errored'] as const) expect(l.to(s, 'after drain')).toBe(false);
    expect(seen.map((t) => t.to)).toEqual(['loading', 'benchmarking', 'ready', 'errored', 'draining']);
    for (const s of ['starting', 'loading', 'benchmarking'] as const) {
      const m = new Lifecycle();
      if (s !== 'starting') m.to('loading', '');
      if (s === 'benchmarking') m.to('benchmarking', '');
      expect(m.to('errored', `from ${s}`)).toBe(true);
    }
  });

  it('drains by the ledger: waitIdle resolves true when the last request ends (sessions themselves do not hold it), false at the timeout', async () => {
    const ledger = new Ledger();
    expect(await ledger.waitIdle(10)).toBe(true);
    const entry = (isSession = false) => {
      const e = ledger.create({ requestIdx: 1, reqnum: 1, workload: 10, route: '/x', isSession });
      ledger.start(e);
      return e;
    };
    const session = entry(true);
    const [a, b] = [entry(), entry()];
    expect(ledger.inflight).toBe(2);
    expect(await ledger.waitIdle(20)).toBe(false);
    const idle = ledger.waitIdle(5000);
    ledger.end(a, 'success');
    setTimeout(() => ledger.end(b, 'cancelled'), 20);
    expect(await idle).toBe(true);
    expect(ledger.inflight).toBe(0);
    expect(ledger.workingCount).toBe(1);
    ledger.end(session, 'success');
    expect(ledger.inflight).toBe(0);
    expect('inflight' in new Lifecycle()).toBe(false);
  });
});

describe('GET /healthz', () => {
  it('answers JSON with state, perf, load and loading progress, and 503 once errored', async () => {
    const dir = tempDir();
    const log = join(dir, 'model.log');
    const m = await sim({ logFile: join(dir, 'sim.log') });
    await m.ready;
    const w = await inProcessWorker({ modelServerUrl: m.url }, { UNSECURED: 'true', WORKSPACE_DIR: dir, MODEL_LOG: log, MODEL_SIZE_GB: '100' });
    const loading = await getJson(`${w.url}/healthz`);
    expect(loading.status).toBe(200);
    expect(loading.headers['content-type']).toMatch(/application\/json/);
    expect(loading.json).toMatchObject({ state: 'loading', perf: 0, loadtime: 0, error_msg: '', load: { cur_load: 0, working: 0, inflight: 0 } });
    expect(typeof loading.json.loading_progress).toBe('number');

    writeFileSync(log, '"message":"Connected","target":"text_generation_router"\n');
    await waitFor(
      () => w.lifecycle.state === 'ready',
      10_000,
      () => w.lifecycle.state,
    );
    const ready = await getJson(`${w.url}/healthz`);
    expect(ready.json.state).toBe('ready');
    expect(ready.json.perf).toBe(w.ledger.maxPerf);
    expect(ready.json.perf).toBeGreaterThan(0);
    expect(ready.json.loadtime).toBeGreaterThan(0);

    m.control({ health: false });
    await waitFor(() => w.lifecycle.state === 'errored', 5000);
    const errored = await getJson(`${w.url}/healthz`);
    expect(errored.status).toBe(503);
    expect(errored.json.state).toBe('errored');
    expect(errored.json.error_msg).toContain('health check failed');
  });
});

/**
 * The example hook of docs/lifecycle-hook.md: start model-sim (as a real model server would be
 * started) with execa, echo its output, say ready at TGI's "Connected" line, fail if it exits.
 */
function modelSimHook(port: number, extraArgs: string[] = []): LifecycleHook & { pid(): number | undefined } {
  let child: ReturnType<typeof execa> | undefined;
  let stopping = false;
  return {
    pid: () => child?.pid,
    start({ ready, fail, info, signal }) {
      child = execa(
        process.execPath,
        [
          CLI,
          'model-sim',
          '--flavor',
          'tgi',
          '--port',
          String(port),
          '--load-seconds',
          '0.3',
          '--token-rate',
          '2000',
          '--capacity',
          '20000',
          '--ttft-ms',
          '2',
          ...extraArgs,
        ],
        {
          cancelSignal: signal,
          forceKillAfterDelay: 2000,
          reject: false,
          stdin: 'ignore',
        },
      );
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        info(line);
        if (line.includes('"message":"Connected"')) ready();
      });
      void child.then((r) => {
        if (!stopping) fail(`model server exited with code ${r.exitCode ?? r.signal}`);
      });
    },
    async stop() {
      stopping = true;
      child?.kill('SIGTERM');
      await child;
    },
  };
}

describe('lifecycle hook', () => {
  it('user code starts the model (execa) and says when it is ready; benchmark and health follow; stop() ends it', async () => {
    const e = await engine();
    const port = await freePort();
    const hook = modelSimHook(port);
    const dir = tempDir();
    const w = await inProcessWorker({ modelServerUrl: `http://127.0.0.1:${port}`, lifecycle: hook }, { REPORT_ADDR: e.url, WORKSPACE_DIR: dir });
    expect(w.lifecycle.state).toBe('loading');
    await waitFor(
      () => w.lifecycle.state === 'ready',
      15_000,
      () => `${w.lifecycle.state} ${w.lifecycle.reason}`,
    );
    const stats = await getJson(`http://127.0.0.1:${port}/sim/stats`);
    // Warm-up + 2 rounds of 4: the benchmark ran against the hook's model.
    expect(stats.json.started).toBe(9);
    await e.waitFor(() => e.statuses.some((s) => Number(s.body.loadtime) > 0 && Number(s.body.max_perf) > 0), 5000);
    const pid = hook.pid()!;
    await w.close();
    // stop() ended the model process.
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it('a hook whose model dies reports the failure through the worker', async () => {
    const e = await engine();
    const port = await freePort();
    const w = await inProcessWorker(
      { modelServerUrl: `http://127.0.0.1:${port}`, lifecycle: modelSimHook(port) },
      { REPORT_ADDR: e.url, WORKSPACE_DIR: tempDir() },
      // Health checks every 10 s: the hook, not the health check, is what notices here.
      { ...FAST, healthIntervalMs: 10_000 },
    );
    await waitFor(
      () => w.lifecycle.state === 'ready',
      15_000,
      () => w.lifecycle.state,
    );
    // A simulated crash: model-sim exits with code 1, the hook sees it and calls fail().
    await request(`http://127.0.0.1:${port}/sim/control`, { method: 'POST', body: '{"crash":true}' }).then((r) => r.body.dump());
    await waitFor(
      () => w.lifecycle.state === 'errored',
      10_000,
      () => w.lifecycle.state,
    );
    expect(w.ledger.errorMsg).toBe('model server exited with code 1');
    await e.waitFor(
      () => e.statuses.some((s) => s.body.error_msg === 'model server exited with code 1'),
      5000,
      () => JSON.stringify(e.statuses.map((s) => s.body.error_msg)),
    );
  });
});

describe('loading progress', () => {
  it('disk growth / model size shows in /healthz, as a log bar, and as additional_disk_usage in reports', async () => {
    // tmpfs: a quiet filesystem whose usage grows exactly with what model-sim writes.
    const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
    const ws = tempDir(base);
    const e = await engine();
    const logFile = join(ws, 'worker.log');
    const logger = createLogger('progress-test', { level: 'info', destination: logFile });
    const port = await freePort();
    const downloadBytes = 64 * 2 ** 20;
    const w = await inProcessWorker(
      { modelServerUrl: `http://127.0.0.1:${port}` },
      { REPORT_ADDR: e.url, WORKSPACE_DIR: ws, MODEL_LOG: join(ws, 'model.log'), MODEL_SIZE_GB: String(downloadBytes / 2 ** 30) },
      FAST,
      logger,
    );
    await sim({ port, logFile: join(ws, 'model.log'), loadSeconds: 2, downloadDir: join(ws, 'models'), downloadBytes });
    // Read /healthz while the model "downloads" until it shows progress.
    let seen = 0;
    const until = Date.now() + 10_000;
    while (seen === 0 && Date.now() < until) {
      const h = await getJson(`${w.url}/healthz`);
      if (h.json.state === 'loading' && h.json.loading_progress > 0) seen = h.json.loading_progress;
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(1);
    await e.waitFor(
      () => e.statuses.some((s) => Number(s.body.additional_disk_usage) > 0),
      10_000,
      () => 'additional_disk_usage > 0',
    );
    await waitFor(() => w.lifecycle.state === 'ready', 10_000);
    logger.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(readFileSync(logFile, 'utf8')).toMatch(/model loading \[#+\.*\]\s+\d+%/);
  });
});

describe('a worker process', () => {
  it('SIGTERM with a stream in flight: the stream ends with [DONE], new requests get 503 JSON with Retry-After, a last report, exit 0', async () => {
    const e = await engine();
    const dir = tempDir();
    const m = await sim({ flavor: 'openai', logFile: join(dir, 'model.log'), loadSeconds: 0.2, tokenRate: 5000, capacity: 100_000 });
    const port = await freePort();
    const proc = spawnCli(['worker', '--handler', 'openai'], {
      WORKER_PORT: String(port),
      WORKER_HTTP_PORT: String(await freePort()),
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '21',
      MASTER_TOKEN: 'drain-token',
      REPORT_ADDR: e.url,
      WORKSPACE_DIR: dir,
      MODEL_LOG: join(dir, 'model.log'),
      MODEL_SERVER_URL: m.url,
      BENCHMARK_MAX_TOKENS: '4',
      DRAIN_TIMEOUT: '20',
    });
    const url = `http://127.0.0.1:${port}`;
    await e.waitFor(
      () => e.statuses.some((s) => s.body.id === 21 && Number(s.body.loadtime) > 0),
      20_000,
      () => `a ready report; worker output:\n${proc.output().slice(-3000)}`,
    );

    // Slow the model down so the stream lasts about 2 s: 100 tokens at 50 tokens/s.
    m.control({ tokenRate: 50 });
    const auth = e.authData({ url, cost: 120 });
    const res = await request(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth_data: auth, payload: { prompt: 'tell me a long story', max_tokens: 100, stream: true } }),
    });
    expect(res.statusCode).toBe(200);
    const chunks: string[] = [];
    const body = (async () => {
      for await (const c of res.body) chunks.push(Buffer.from(c as Uint8Array).toString('utf8'));
      return chunks.join('');
    })();
    await waitFor(() => chunks.length > 0, 5000);
    const statusesBefore = e.statuses.length;
    const sigtermAt = Date.now();
    proc.child.kill('SIGTERM');
    // Draining: the listener still answers, but refuses new work.
    let refused: Awaited<ReturnType<typeof request>> | null = null;
    for (let i = 0; i < 50 && !refused; i++) {
      const r = await request(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ auth_data: e.authData({ url }), payload: { prompt: 'new', max_tokens: 2 } }),
      });
      if (r.statusCode === 503) refused = r;
      else await r.body.dump();
      if (!refused) await new Promise((r2) => setTimeout(r2, 20));
    }
    expect(refused).not.toBeNull();
    expect(refused!.headers['retry-after']).toBeDefined();
    expect(refused!.headers['content-type']).toMatch(/application\/json/);
    expect(JSON.parse(await refused!.body.text()).error).toMatch(/draining/);

    const text = await body;
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    // Every one of the 100 tokens came through (one SSE event each, plus [DONE]).
    expect(text.split('\n\n').filter((ev) => ev.startsWith('data: {')).length).toBeGreaterThanOrEqual(100);
    expect(await proc.exited).toBe(0);
    const last = e.statuses.slice(statusesBefore).filter((s) => s.at >= sigtermAt);
    expect(last.length).toBeGreaterThan(0);
    expect(last.at(-1)!.body.error_msg).toBe('');
    expect(m.stats().aborted).toBe(0);
  });

  it('start-up failures (port taken, bad config) are reported to the engine while the process stays alive', async () => {
    const e = await engine();
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    cleanups.defer(() => new Promise<void>((r) => holder.close(() => r())));
    const taken = (holder.address() as { port: number }).port;
    const dir = tempDir();
    const common = {
      WORKER_HOST: '127.0.0.1',
      REPORT_ADDR: e.url,
      MASTER_TOKEN: 'fail-token',
      WORKSPACE_DIR: dir,
      UNSECURED: 'true',
      MODEL_SERVER_URL: 'http://127.0.0.1:9',
    };
    const portTaken = spawnCli(['worker', '--handler', 'tgi'], {
      ...common,
      WORKER_PORT: String(taken),
      WORKER_HTTP_PORT: String(await freePort()),
      CONTAINER_ID: '31',
    });
    const badConfig = spawnCli(['worker', '--handler', 'tgi'], { ...common, WORKER_PORT: String(await freePort()), CONTAINER_ID: 'not-a-number' });
    await e.waitFor(
      () => e.statuses.some((s) => s.body.id === 31 && /EADDRINUSE/.test(s.body.error_msg as string)),
      10_000,
      () => portTaken.output(),
    );
    await e.waitFor(
      () => e.statuses.some((s) => /CONTAINER_ID/.test(s.body.error_msg as string)),
      10_000,
      () => badConfig.output(),
    );
    const report = e.statuses.find((s) => s.body.id === 31)!.body;
    expect(report).toMatchObject({ mtoken: 'fail-token', loadtime: 0, max_perf: 0, url: `http://127.0.0.1:${taken}` });
    await new Promise((r) => setTimeout(r, 300));
    // Still alive: it keeps reporting every 10 s until stopped.
    expect(portTaken.child.exitCode).toBeNull();
    expect(badConfig.child.exitCode).toBeNull();
    portTaken.child.kill('SIGTERM');
    badConfig.child.kill('SIGTERM');
    expect(await portTaken.exited).toBe(1);
    expect(await badConfig.exited).toBe(1);
  });
});
