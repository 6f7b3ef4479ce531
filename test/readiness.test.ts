/**
 * Readiness at the worker level (issue 3, PROTOCOL §5): a real worker in this process tails a real
 * log file written by model-sim (or by the test), benchmarks a real model-sim over loopback, checks
 * its health, and reports to a recording engine that serves the public key.
 */
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { startModelSim, type ModelSim, type ModelSimOptions } from '../src/model-sim/index.js';
import { BENCHMARK_CACHE_FILE, NO_SUCCESS_ERROR } from '../src/worker/benchmark.js';
import type { WorkerSpec } from '../src/worker/config.js';
import { parseWorkerEnv } from '../src/worker/env.js';
import { startWorker, type RunningWorker, type WorkerTimings } from '../src/worker/worker.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { freePort, silentLogger, startTestEngine, TGI_BENCHMARK, tgiDefinition, useResources, waitFor } from './helpers/worker.js';

const FAST: Partial<WorkerTimings> = {
  noHealthWaitMs: 0,
  healthIntervalMs: 100,
  reportTickMs: 50,
  reportIdleMs: 300,
  reportRetryDelayMs: 50,
  pubkeyBaseDelayMs: 50,
  progressLogMs: 100,
};

/** Benchmark shape of these tests: a warm-up, then 2 rounds of 4 requests of 20 tokens each. */
const { runs: RUNS, concurrency: CONCURRENCY } = TGI_BENCHMARK;

const cleanups = useResources();

interface Setup {
  dir: string;
  log: string;
  engine: TestEngine;
  modelUrl: string;
  modelPort: number;
}

async function setup(): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'readiness-'));
  cleanups.defer(() => rmSync(dir, { recursive: true, force: true }));
  const engine = await startEngine();
  cleanups.defer(() => engine.close());
  const modelPort = await freePort();
  // The log lives in a directory that does not exist yet: the watch must wait for both.
  return { dir, log: join(dir, 'logs', 'model.log'), engine, modelUrl: `http://127.0.0.1:${modelPort}`, modelPort };
}

async function sim(s: Setup, opts: Partial<ModelSimOptions> = {}): Promise<ModelSim> {
  const m = await startModelSim({ flavor: 'tgi', port: s.modelPort, logFile: s.log, loadSeconds: 0.3, tokenRate: 2000, capacity: 20_000, ttftMs: 2, ...opts });
  cleanups.defer(() => m.close());
  return m;
}

async function worker(s: Setup, over: Partial<WorkerSpec> = {}, workspace = s.dir): Promise<RunningWorker> {
  const env = parseWorkerEnv({
    WORKER_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    CONTAINER_ID: '7',
    MASTER_TOKEN: 'secret-token',
    REPORT_ADDR: s.engine.url,
    WORKSPACE_DIR: workspace,
    MODEL_LOG: s.log,
  });
  const w = await startWorker({ definition: tgiDefinition({ modelServerUrl: s.modelUrl, ...over }), env, logger: silentLogger(), timings: FAST });
  cleanups.defer(() => w.close());
  return w;
}

const statusWith = (engine: TestEngine, pred: (b: Record<string, any>) => boolean) => engine.statuses.find((s) => pred(s.body))?.body;

async function waitState(w: RunningWorker, state: string, ms = 10_000): Promise<void> {
  await waitFor(
    () => w.lifecycle.state === state,
    ms,
    () => `state ${state}; now ${w.lifecycle.state} (${w.lifecycle.reason})`,
  );
}

describe('readiness from the model log', () => {
  it('waits for a log created late, benchmarks on the ready line, reports loadtime and max_perf; a restart reuses the cached perf', async () => {
    const s = await setup();
    const w1 = await worker(s);
    expect(existsSync(s.log)).toBe(false);
    // Nothing in the log yet: the worker waits (and reports "not loaded" on its slow cadence).
    await new Promise((r) => setTimeout(r, 200));
    expect(w1.lifecycle.state).toBe('loading');

    const m = await sim(s);
    await waitState(w1, 'ready');
    // PROTOCOL §5: one warm-up request, then RUNS rounds of CONCURRENCY requests.
    expect(m.stats().started).toBe(1 + RUNS * CONCURRENCY);
    const perf = w1.ledger.maxPerf;
    expect(perf).toBeGreaterThan(0);
    expect(Number(readFileSync(join(s.dir, BENCHMARK_CACHE_FILE), 'utf8'))).toBe(perf);

    await s.engine.waitFor(
      () => !!statusWith(s.engine, (b) => b.loadtime > 0),
      5000,
      () => 'a ready report',
    );
    const ready = statusWith(s.engine, (b) => b.loadtime > 0)!;
    expect(ready.max_perf).toBe(perf);
    expect(ready.error_msg).toBe('');
    expect(ready.id).toBe(7);
    expect(ready.mtoken).toBe('secret-token');
    // Reports before the model was loaded said so: loadtime 0.
    expect(s.engine.statuses[0]!.body.loadtime).toBe(0);
    await w1.close();

    // Same workspace, same log (still holding the ready line): the cache file is the perf.
    const before = m.stats().started;
    const reportsBefore = s.engine.statuses.length;
    const w2 = await worker(s);
    await waitState(w2, 'ready');
    expect(w2.ledger.maxPerf).toBe(perf);
    await s.engine.waitFor(
      () => s.engine.statuses.slice(reportsBefore).some((r) => Number(r.body.loadtime) > 0),
      5000,
      () => "the restarted worker's ready report",
    );
    expect(s.engine.statuses.slice(reportsBefore).find((r) => Number(r.body.loadtime) > 0)!.body.max_perf).toBe(perf);
    expect(m.stats().started).toBe(before);
  });

  it('an error line in the model log errors the worker and the engine receives error_msg', async () => {
    const s = await setup();
    const m = await sim(s);
    const w = await worker(s);
    await waitState(w, 'ready');
    // A simulated CUDA crash: TGI's crash lines (with "Error: ShardCannotStart") go to the log.
    m.control({ crash: true });
    await waitState(w, 'errored');
    expect(w.ledger.errorMsg).toContain('Error: ShardCannotStart');
    await s.engine.waitFor(
      () => !!statusWith(s.engine, (b) => b.error_msg.includes('ShardCannotStart')),
      5000,
      () => 'an error report',
    );
  });

  it('an error line before the ready line: no benchmark, the error is kept', async () => {
    const s = await setup();
    const w = await worker(s);
    const m = await sim(s, { loadSeconds: 1 });
    await waitFor(() => existsSync(s.log), 5000);
    appendFileSync(s.log, 'Error: DownloadError\n');
    await waitState(w, 'errored');
    await m.ready;
    // The ready line arrives after the error: the failed model is not benchmarked nor made ready.
    await new Promise((r) => setTimeout(r, 300));
    expect(m.stats().started).toBe(0);
    expect(w.lifecycle.state).toBe('errored');
    await s.engine.waitFor(() => !!statusWith(s.engine, (b) => b.error_msg.includes('DownloadError')), 5000);
  });

  it('rename rotation during a run: the error line in the new file errors the worker', async () => {
    const s = await setup();
    // The model serves but logs elsewhere: this test writes the watched log itself.
    await sim(s, { logFile: join(s.dir, 'sim.log'), loadSeconds: 0 });
    const w = await worker(s);
    await new Promise((r) => setTimeout(r, 100));
    mkdirSync(dirname(s.log), { recursive: true });
    writeFileSync(s.log, 'starting\n');
    appendFileSync(s.log, '2024-01-01T00:00:00Z INFO text_generation_router: "message":"Connected","target":"text_generation_router"\n');
    await waitState(w, 'ready');

    renameSync(s.log, `${s.log}.1`);
    // The old writer may still append to the renamed file: that must not matter.
    appendFileSync(`${s.log}.1`, 'late line in the old file\n');
    writeFileSync(s.log, 'new boot line\n');
    appendFileSync(s.log, 'Error: WebserverFailed after rotation\n');
    await waitState(w, 'errored');
    expect(w.ledger.errorMsg).toContain('WebserverFailed after rotation');
    await s.engine.waitFor(() => !!statusWith(s.engine, (b) => b.error_msg.includes('WebserverFailed after rotation')), 5000);
  });

  it('copy-truncate rotation during a run: the error line written after the truncation errors the worker', async () => {
    const s = await setup();
    await sim(s, { logFile: join(s.dir, 'sim.log'), loadSeconds: 0 });
    const w = await worker(s);
    await new Promise((r) => setTimeout(r, 100));
    mkdirSync(dirname(s.log), { recursive: true });
    writeFileSync(s.log, `${'padding line before the ready line\n'.repeat(50)}"message":"Connected","target":"text_generation_router"\n`, { flag: 'a' });
    await waitState(w, 'ready');

    copyFileSync(s.log, `${s.log}.1`);
    truncateSync(s.log, 0);
    // Let the watch see the shrink before the file grows again (a tailer cannot see a truncation
    // that is overtaken by growth past its old position: the known limit of copytruncate).
    await new Promise((r) => setTimeout(r, 250));
    appendFileSync(s.log, 'Error: ShardCannotStart after copytruncate\n');
    await waitState(w, 'errored');
    expect(w.ledger.errorMsg).toContain('ShardCannotStart after copytruncate');
  });
  it('partial lines, a very long line and invalid UTF-8 before the ready line do not stop readiness', async () => {
    const s = await setup();
    await sim(s, { logFile: join(s.dir, 'sim.log'), loadSeconds: 0 });
    mkdirSync(dirname(s.log), { recursive: true });
    writeFileSync(s.log, '');
    const w = await worker(s);
    appendFileSync(s.log, Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0xc3, 0x0a])); // "bad" + invalid bytes + newline
    appendFileSync(s.log, `${'x'.repeat(3 * 1024 * 1024)}\n`);
    // The ready line in three writes, the split falling inside the pattern.
    appendFileSync(s.log, '2024 INFO "message":"Conn');
    await new Promise((r) => setTimeout(r, 50));
    expect(w.lifecycle.state).toBe('loading');
    appendFileSync(s.log, 'ected","target":"text_generation_');
    appendFileSync(s.log, 'router"\n');
    await waitState(w, 'ready');
  });
});

describe('the engine public key', () => {
  it('a key that cannot be fetched errors the worker; when it arrives the error clears and the worker becomes ready', async () => {
    const s = await setup();
    // Serves the key only from the 11th call: the worker's first two rounds of 5 attempts fail.
    const keyed = await startTestEngine(s.engine.keys.publicKeyPem, { pubkeyFailures: 10 });
    cleanups.defer(() => keyed.close());
    await sim(s, { loadSeconds: 0 });
    const env = parseWorkerEnv({
      WORKER_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '8',
      REPORT_ADDR: keyed.url,
      WORKSPACE_DIR: s.dir,
      MODEL_LOG: s.log,
    });
    const w = await startWorker({
      definition: tgiDefinition({ modelServerUrl: s.modelUrl }),
      env,
      logger: silentLogger(),
      timings: { ...FAST, pubkeyBaseDelayMs: 20 },
    });
    cleanups.defer(() => w.close());
    const states: string[] = [];
    w.lifecycle.on('transition', (t) => states.push(t.to));
    await waitState(w, 'ready');
    expect(states).toContain('errored');
    expect(w.ledger.errorMsg).toBe('');
    await waitFor(
      () => keyed.statusReports.some((r) => String(r.error_msg).includes('public key')),
      5000,
      () => 'an error report about the key',
    );
    await waitFor(
      () => keyed.statusReports.some((r) => (r.loadtime as number) > 0 && r.error_msg === ''),
      5000,
      () => 'a clean ready report',
    );
  });
});

describe('benchmark and health in the readiness sequence', () => {
  it('health failure after a good first check errors the worker', async () => {
    const s = await setup();
    const m = await sim(s);
    const w = await worker(s);
    await waitState(w, 'ready');
    m.control({ health: false });
    await waitState(w, 'errored');
    expect(w.ledger.errorMsg).toMatch(/health check failed: GET http:\/\/127\.0\.0\.1:\d+\/health answered 503/);
    await s.engine.waitFor(() => !!statusWith(s.engine, (b) => b.error_msg.includes('health check failed')), 5000);
  });

  it('no successful benchmark response: error "No successful responses from benchmark", perf 0, nothing cached', async () => {
    const s = await setup();
    await sim(s, { errorRate: 1 });
    const w = await worker(s);
    await waitState(w, 'errored');
    // The error says why: the model's status and the start of its answer.
    expect(w.ledger.errorMsg.startsWith(`${NO_SUCCESS_ERROR}: `)).toBe(true);
    expect(w.ledger.errorMsg).toMatch(/first: POST \/generate answered 500: .*simulated error/);
    expect(w.ledger.maxPerf).toBe(0);
    expect(existsSync(join(s.dir, BENCHMARK_CACHE_FILE))).toBe(false);
    await s.engine.waitFor(() => !!statusWith(s.engine, (b) => b.error_msg === w.ledger.errorMsg && b.max_perf === 0), 5000);
  });

  it('without a health path the worker holds the no-health wait after the benchmark, and closes cleanly during it', async () => {
    const s = await setup();
    const m = await sim(s, { loadSeconds: 0 });
    const env = parseWorkerEnv({ WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '7', UNSECURED: 'true', WORKSPACE_DIR: s.dir, MODEL_LOG: s.log });
    const definition = tgiDefinition({ modelServerUrl: s.modelUrl, healthPath: undefined });
    const w = await startWorker({ definition, env, logger: silentLogger(), timings: { ...FAST, noHealthWaitMs: 60_000 } });
    // The benchmark is done (perf known) but the 60 s wait holds the worker out of ready.
    await waitFor(
      () => w.ledger.maxPerf > 0,
      10_000,
      () => `benchmark; state ${w.lifecycle.state}`,
    );
    expect(m.stats().started).toBe(1 + RUNS * CONCURRENCY);
    expect(w.lifecycle.state).toBe('benchmarking');
    await w.close();
    expect(w.lifecycle.state).toBe('draining');
    expect(w.ledger.errorMsg).toBe('');
  });
});

describe('readiness without a model log (issue 25 items 4 and 5)', () => {
  /** A worker whose JSON log goes to a file the test reads. */
  async function loggedWorker(s: Setup, env: Record<string, string>) {
    const logPath = join(s.dir, 'worker.jsonl');
    const logger = createLogger('worker', { destination: logPath, format: 'json', level: 'info' });
    const w = await startWorker({
      definition: tgiDefinition({ modelServerUrl: s.modelUrl }),
      env: parseWorkerEnv({ WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '7', UNSECURED: 'true', WORKSPACE_DIR: s.dir, ...env }),
      logger,
      timings: { ...FAST, waitingLogMs: 100 },
    });
    cleanups.defer(() => w.close());
    const lines = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
    return { w, lines };
  }

  it('waits for the health path before benchmarking a model that comes up later, saying what it waits for', async () => {
    const s = await setup();
    const { w, lines } = await loggedWorker(s, {});
    // Nothing listens on the model's port yet: the worker waits (and says so) instead of benchmarking.
    await waitFor(
      () => /still loading after \d+ s: waiting for GET http:\/\/127\.0\.0\.1:\d+\/health to answer 200 \(no MODEL_LOG\)/.test(lines()),
      10_000,
      () => `the waiting line; log:\n${lines()}`,
    );
    expect(w.lifecycle.state).toBe('loading');
    expect(w.ledger.errorMsg).toBe('');
    const m = await sim(s);
    await waitState(w, 'ready');
    // Every benchmark request reached the model: a warm-up and the rounds, none refused.
    expect(m.stats().started).toBe(1 + RUNS * CONCURRENCY);
    expect(w.ledger.errorMsg).toBe('');
    expect(w.ledger.maxPerf).toBeGreaterThan(0);
  });

  it('a model that goes away errors the worker; when it answers again the worker is ready again', async () => {
    const s = await setup();
    const m = await sim(s, { loadSeconds: 0 });
    const { w } = await loggedWorker(s, {});
    await waitState(w, 'ready');
    await m.close();
    await waitState(w, 'errored');
    expect(w.ledger.errorMsg).toMatch(/model health check failed/);
    await sim(s, { loadSeconds: 0 });
    await waitState(w, 'ready');
    expect(w.ledger.errorMsg).toBe('');
  });

  it('a MODEL_LOG that never appears: the worker says every so often that the file does not exist yet', async () => {
    const s = await setup();
    const { w, lines } = await loggedWorker(s, { MODEL_LOG: s.log });
    await waitFor(
      () => lines().includes(`waiting for the model log ${s.log}, which does not exist yet`),
      10_000,
      () => `the waiting line; log:\n${lines()}`,
    );
    expect(w.lifecycle.state).toBe('loading');
  });
});
