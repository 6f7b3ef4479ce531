/**
 * The stage of every fault scenario (issue 8): real processes on loopback and a load of real
 * clients, then the accounting invariants (test/invariants.ts) and a leak check.
 *
 * - the model: `node dist/cli.js model-sim` (openai flavor), its log in the scenario's temp dir;
 * - the worker: test/faults/worker-process.mjs, i.e. the CLI's worker with test timings, which after
 *   SIGTERM must exit *by itself* (no process.exit): a leaked socket, timer or listener keeps it
 *   alive and fails the scenario with the handles named;
 * - the engine: the recording test engine (test/helpers/engine.ts) in the test process, optionally
 *   behind a front whose /pubkey/ can be turned off;
 * - the clients: undici requests with unique request_idxs, each ending in one `ClientRecord`.
 *
 * `useStage()` registers an afterEach that kills every process still alive (by its own pid) and
 * removes every temp dir, so vitest exits by itself even when a scenario fails half way.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Agent, errors as undiciErrors, request } from 'undici';
import { expect } from 'vitest';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { useResources } from '../helpers/worker.js';
import { testCert } from '../helpers/tls.js';
import {
  checkAccounting,
  totalsFromMetrics,
  type ClientOutcome,
  type ClientRecord,
  type DeliveryOptions,
  type StatusReport,
} from '../../benchmarks/lib/invariants.js';

const CLI = resolve('dist/cli.js');
const WORKER_PROCESS = resolve('test/faults/worker-process.mjs');

/** Test cadence for the worker process: reports every 100 ms, retries after 50 ms. */
export const FAST_TIMINGS = {
  noHealthWaitMs: 0,
  healthIntervalMs: 200,
  reportTickMs: 100,
  reportIdleMs: 1000,
  reportRetryDelayMs: 50,
  pubkeyBaseDelayMs: 50,
  progressLogMs: 1000,
};

export interface Stage {
  /** A fresh temp dir, removed after the test. */
  dir(): string;
  engine(): Promise<TestEngine>;
  sim(opts?: SimOptions): Promise<SimProcess>;
  worker(opts: WorkerProcessOptions): Promise<WorkerProcess>;
  /** Run `fn` after the test (reverse order). */
  defer(fn: () => Promise<void> | void): void;
}

/** Everything a test starts, stopped after it even when it fails. */
export function useStage(): Stage {
  const cleanups = useResources();
  const stage: Stage = {
    dir() {
      const d = mkdtempSync(join(tmpdir(), 'faults-'));
      cleanups.defer(() => rmSync(d, { recursive: true, force: true }));
      return d;
    },
    async engine() {
      const e = await startEngine();
      cleanups.defer(() => e.close());
      return e;
    },
    sim: (opts = {}) => startSim(stage, opts),
    worker: (opts) => startWorkerProcess(stage, opts),
    defer(fn) {
      cleanups.defer(fn);
    },
  };
  return stage;
}

// ---------------------------------------------------------------------------------------------
// Processes

interface Proc {
  child: ChildProcess;
  /** stdout + stderr so far (the tail). */
  output(): string;
  /** Exit code, or the signal name. */
  exited: Promise<number | string>;
  /** Resolves with the first capture group once the output matches. */
  waitFor(re: RegExp, timeoutMs: number): Promise<string>;
}

function spawnProc(stage: Stage, args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-256 * 1024);
    for (const w of [...waiters]) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | string>((r) => child.once('exit', (code, signal) => r(code ?? signal ?? 'unknown')));
  stage.defer(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    child,
    output: () => out,
    exited,
    waitFor(re, timeoutMs) {
      return new Promise<string>((resolveWait, reject) => {
        const check = () => {
          const m = re.exec(out);
          if (!m) return false;
          cleanup();
          resolveWait(m[1] ?? m[0]);
          return true;
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${re} within ${timeoutMs} ms; output:\n${out.slice(-3000)}`));
        }, timeoutMs);
        const onExit = () => {
          if (check()) return;
          cleanup();
          reject(new Error(`process exited before ${re}; output:\n${out.slice(-3000)}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          child.off('exit', onExit);
        };
        const waiter = () => void check();
        if (check()) return;
        waiters.push(waiter);
        child.once('exit', onExit);
      });
    },
  };
}

export interface SimOptions {
  tokenRate?: number;
  capacity?: number;
  ttftMs?: number;
  crashAfter?: number;
  hangRate?: number;
  errorRate?: number;
  seed?: number;
  loadSeconds?: number;
  /** Model log file (default `<dir>/model.log`). */
  logFile?: string;
  dir?: string;
}

export interface SimProcess {
  url: string;
  logFile: string;
  proc: Proc;
  stats(): Promise<Record<string, number | boolean | string>>;
  control(patch: Record<string, unknown>): Promise<void>;
}

/** `node dist/cli.js model-sim --flavor openai --port 0 ...`, resolved once it listens. */
export async function startSim(stage: Stage, o: SimOptions = {}): Promise<SimProcess> {
  const dir = o.dir ?? stage.dir();
  const logFile = o.logFile ?? join(dir, 'model.log');
  const args = [
    CLI,
    'model-sim',
    '--flavor',
    'openai',
    '--port',
    '0',
    '--log-file',
    logFile,
    '--load-seconds',
    String(o.loadSeconds ?? 0.2),
    '--token-rate',
    String(o.tokenRate ?? 2000),
    '--capacity',
    String(o.capacity ?? 50_000),
    '--ttft-ms',
    String(o.ttftMs ?? 5),
  ];
  if (o.crashAfter !== undefined) args.push('--crash-after', String(o.crashAfter));
  if (o.hangRate !== undefined) args.push('--hang-rate', String(o.hangRate));
  if (o.errorRate !== undefined) args.push('--error-rate', String(o.errorRate));
  args.push('--seed', String(o.seed ?? 7));
  const proc = spawnProc(stage, args, {});
  const url = await proc.waitFor(/model-sim listening on (http:\/\/\S+)/, 15_000);
  return {
    url,
    logFile,
    proc,
    async stats() {
      const r = await request(`${url}/sim/stats`);
      return (await r.body.json()) as Record<string, number>;
    },
    async control(patch) {
      const r = await request(`${url}/sim/control`, { method: 'POST', body: JSON.stringify(patch), headers: { 'content-type': 'application/json' } });
      expect(r.statusCode).toBe(200);
      await r.body.dump();
    },
  };
}

export interface WorkerProcessOptions {
  sim: SimProcess;
  /** REPORT_ADDR (the test engine, or a front before it). */
  reportAddr: string;
  containerId?: number;
  masterToken?: string;
  /** Perf written to `.has_benchmark` (default 100 000: no benchmark, no 429); null runs the benchmark. */
  perf?: number | null;
  /** WORKSPACE_DIR (default a fresh temp dir). */
  workspace?: string;
  env?: Record<string, string>;
  timings?: Record<string, number>;
  spec?: Record<string, unknown>;
  /** Wait for state ready (default true). */
  waitReady?: boolean;
  /** USE_SSL with the shared test certificate (helpers/tls.ts): the worker serves HTTPS. */
  tls?: boolean;
}

export interface WorkerProcess {
  url: string;
  id: number;
  logFile: string;
  proc: Proc;
  healthz(): Promise<any>;
  metrics(): Promise<string>;
  /** SIGTERM, then wait for the process to end by itself: resolves with its exit code; fails on a leak. */
  terminate(timeoutMs?: number): Promise<number | string>;
}

let nextContainerId = 700;
/**
 * How long a worker process may take to listen and to be ready: generous, because a machine shared
 * by many test processes can take many seconds to start several at once (a bound, not a measure).
 */
const START_TIMEOUT_MS = 45_000;

let tlsAgent: Agent | null = null;
/** undici's global dispatcher for http:, one trusting the test certificate for https: (USE_SSL workers). */
export function dispatcherFor(url: string): Agent | undefined {
  if (!url.startsWith('https:')) return undefined;
  tlsAgent ??= new Agent({ connect: { ca: testCert().ca } });
  return tlsAgent;
}

/** The worker (test/faults/worker-process.mjs), resolved once it listens (and is ready, by default). */
export async function startWorkerProcess(stage: Stage, o: WorkerProcessOptions): Promise<WorkerProcess> {
  const workspace = o.workspace ?? stage.dir();
  const perf = o.perf === undefined ? 100_000 : o.perf;
  if (perf !== null) writeFileSync(join(workspace, '.has_benchmark'), String(perf));
  const id = o.containerId ?? nextContainerId++;
  const logFile = join(stage.dir(), 'worker.log');
  const proc = spawnProc(stage, [WORKER_PROCESS], {
    BACKEND: 'openai',
    WORKER_PORT: '0',
    WORKER_HTTP_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    CONTAINER_ID: String(id),
    MASTER_TOKEN: o.masterToken ?? `mtoken-${id}-secret`,
    REPORT_ADDR: o.reportAddr,
    WORKSPACE_DIR: workspace,
    MODEL_LOG: o.sim.logFile,
    MODEL_SERVER_URL: o.sim.url,
    LOG_FILE: logFile,
    LOG_LEVEL: 'debug',
    DRAIN_TIMEOUT: '20',
    BENCHMARK_MAX_TOKENS: '8',
    BENCHMARK_CONCURRENCY: '8',
    FAULT_TIMINGS: JSON.stringify({ ...FAST_TIMINGS, ...o.timings }),
    FAULT_SPEC: JSON.stringify(o.spec ?? {}),
    ...(o.tls ? { USE_SSL: 'true', SSL_CERT_PATH: testCert().cert, SSL_KEY_PATH: testCert().key } : {}),
    ...o.env,
  });
  const url = await proc.waitFor(/FAULT_WORKER_LISTENING (\S+)/, START_TIMEOUT_MS);
  const w: WorkerProcess = {
    url,
    id,
    logFile,
    proc,
    async healthz() {
      const r = await request(`${url}/healthz`, { dispatcher: dispatcherFor(url) });
      return r.body.json();
    },
    async metrics() {
      const r = await request(`${url}/metrics`, { dispatcher: dispatcherFor(url) });
      return r.body.text();
    },
    async terminate(timeoutMs = 30_000) {
      proc.child.kill('SIGTERM');
      const code = await Promise.race([proc.exited, new Promise<string>((r) => setTimeout(() => r('timeout'), timeoutMs).unref())]);
      const leak = /FAULT_WORKER_LEAK (.*)/.exec(proc.output());
      if (leak) throw new Error(`the worker did not exit by itself after draining; alive: ${leak[1]}`);
      if (code !== 0) throw new Error(`the worker exited with ${code}; output:\n${proc.output().slice(-3000)}`);
      return code;
    },
  };
  if (o.waitReady !== false)
    await waitUntil(
      async () => (await w.healthz()).state === 'ready',
      START_TIMEOUT_MS,
      async () => `worker ready: ${JSON.stringify(await w.healthz())}`,
    );
  return w;
}

// ---------------------------------------------------------------------------------------------
// A front before the engine whose /pubkey/ can be switched off (the rest is passed through).

export interface KeyFront {
  url: string;
  /** false: GET /pubkey/ answers 503. */
  serveKey(on: boolean): void;
  pubkeyHits: number;
  close(): Promise<void>;
}

export async function startKeyFront(stage: Stage, engine: TestEngine): Promise<KeyFront> {
  let on = true;
  const front = { pubkeyHits: 0 } as KeyFront;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/pubkey/') {
        front.pubkeyHits++;
        if (!on) return void res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"key service down (test)"}');
        return void res.writeHead(200, { 'content-type': 'text/plain' }).end(engine.keys.publicKeyPem);
      }
      request(`${engine.url}${req.url}`, { method: req.method as 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) }).then(
        async (r) => {
          const text = await r.body.text();
          res.writeHead(r.statusCode, { 'content-type': 'application/json' }).end(text);
        },
        () => res.writeHead(502).end(),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  front.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  front.serveKey = (v) => (on = v);
  front.close = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    });
  stage.defer(() => front.close());
  return front;
}

// ---------------------------------------------------------------------------------------------
// Clients

/** auth_data for `url`, signed once per url as the engine's router does. */
export function authMaker(engine: TestEngine, url: string): (cost: number) => Record<string, unknown> & { request_idx: number } {
  const signature = engine.sign(url);
  return (cost) => {
    const idx = nextRequestIdx++;
    return { cost, endpoint: 'faults', reqnum: idx, request_idx: idx, signature, url };
  };
}

let nextRequestIdx = 1_000_000 + Math.floor(Math.random() * 1_000_000) * 100;

/** The openai handler's workload: prompt tokens (4 characters each) + max_tokens. */
export function completionWorkload(prompt: string, maxTokens: number): number {
  return Math.ceil(prompt.length / 4) + maxTokens;
}

export interface CompletionOptions {
  dispatcher: Agent;
  stream?: boolean;
  maxTokens?: number;
  prompt?: string;
  /** Abort the request this many ms after it was sent. */
  abortAfterMs?: number;
  /** Abort once this many body bytes have arrived. */
  abortAfterBytes?: number;
  /** Give up (as an error of the test) after this long; default 30 s. */
  timeoutMs?: number;
  /** Called once, when the first body bytes arrive (a stream is under way). */
  onFirstChunk?: () => void;
}

export interface CompletionRecord extends ClientRecord {
  stream: boolean;
  ms: number;
  detail?: string;
}

/**
 * One /v1/completions request, classified from the client's side: a complete answer (JSON, or a
 * stream ending in `data: [DONE]`) is a success; a 5xx or a cut answer an error; our own abort
 * before the end is aborted; 401/429 rejected; other 4xx and 503 refused.
 */
export async function completion(
  workerUrl: string,
  auth: (cost: number) => Record<string, unknown> & { request_idx: number },
  o: CompletionOptions,
): Promise<CompletionRecord> {
  const prompt = o.prompt ?? 'tell me about the sea';
  const maxTokens = o.maxTokens ?? 16;
  const stream = o.stream ?? false;
  const workload = completionWorkload(prompt, maxTokens);
  const a = auth(workload);
  const ac = new AbortController();
  let aborted = false;
  const abort = () => {
    aborted = true;
    ac.abort();
  };
  const abortTimer = o.abortAfterMs !== undefined ? setTimeout(abort, o.abortAfterMs) : null;
  const t0 = performance.now();
  const rec = (outcome: ClientOutcome, status?: number, detail?: string): CompletionRecord => {
    if (abortTimer) clearTimeout(abortTimer);
    return { requestIdx: a.request_idx, workload, outcome, status, stream, ms: performance.now() - t0, detail };
  };
  const deadline = setTimeout(() => ac.abort(new Error('test client timeout')), o.timeoutMs ?? 30_000);
  let status: number | undefined;
  try {
    const res = await request(`${workerUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth_data: a, payload: { prompt, max_tokens: maxTokens, stream } }),
      dispatcher: o.dispatcher,
      signal: ac.signal,
    });
    status = res.statusCode;
    let text = '';
    let bytes = 0;
    for await (const chunk of res.body) {
      const b = chunk as Buffer;
      if (bytes === 0) o.onFirstChunk?.();
      bytes += b.length;
      text += b.toString('utf8');
      if (o.abortAfterBytes !== undefined && bytes >= o.abortAfterBytes && !aborted) abort();
    }
    const s = res.statusCode;
    if (s === 401 || s === 429) return rec('rejected', s);
    // A draining worker's own 503 comes before admission; a model's 503 passed through is an error.
    if (s === 503 && /draining/.test(text)) return rec('refused', s, text.slice(0, 200));
    if (s >= 500) return rec('error', s, text.slice(0, 200));
    if (s >= 400) return rec('refused', s, text.slice(0, 200));
    if (stream) return text.includes('data: [DONE]') ? rec('success', s) : rec('error', s, `stream ended without [DONE]: ${text.slice(-200)}`);
    try {
      JSON.parse(text);
      return rec('success', s);
    } catch {
      return rec('error', s, `incomplete JSON answer: ${text.slice(-200)}`);
    }
  } catch (err) {
    if (aborted) return rec('aborted');
    if (ac.signal.aborted) throw new Error(`request_idx ${a.request_idx} hung: no answer within ${o.timeoutMs ?? 30_000} ms`);
    // The connection was cut part way: what a client sees when the worker gives up on the model.
    const e = err as Error;
    if (
      e instanceof undiciErrors.SocketError ||
      e instanceof undiciErrors.RequestAbortedError ||
      /other side closed|terminated|ECONNRESET|socket/i.test(e.message)
    )
      return rec('error', status, e.message);
    throw err;
  } finally {
    clearTimeout(deadline);
    if (abortTimer) clearTimeout(abortTimer);
  }
}

/** Run `count` calls of `one(i)`, `concurrency` at a time; resolves with every result in order. */
export async function runLoad<T>(count: number, concurrency: number, one: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(count);
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, count) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= count) return;
      out[i] = await one(i);
    }
  });
  await Promise.all(lanes);
  return out;
}

/** A client agent for the load; closed after the test. */
export function clientAgent(stage: Stage, connections = 64): Agent {
  const agent = new Agent({ connections, keepAliveTimeout: 5000, pipelining: 1 });
  stage.defer(() => agent.destroy());
  return agent;
}

// ---------------------------------------------------------------------------------------------
// Checks

/** Poll `cond` every 50 ms until it holds; fails with `what()` after `timeoutMs`. */
export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string | Promise<string>): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await cond();
    } catch {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${await what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Acknowledged worker_status bodies of one worker, in order. */
export function reportsOf(engine: TestEngine, id: number): StatusReport[] {
  return engine.statuses.filter((s) => s.body.id === id).map((s) => s.body as unknown as StatusReport);
}

/** What the end of a scenario checks: the engine, the worker, the clients' records (and the model, for leaked requests). */
export interface ScenarioEnd {
  engine: TestEngine;
  worker: WorkerProcess;
  records: readonly ClientRecord[];
  sim?: SimProcess;
  options?: DeliveryOptions;
  /** How long the invariants may take to hold (default 15 s). */
  timeoutMs?: number;
}

/**
 * The invariants after a scenario, while the worker still runs: waits (up to `timeoutMs`) until the
 * worker has nothing in flight and every invariant holds, then asserts them, listing every problem.
 * Also checks the model has no request left open (no leaked model connection).
 */
export async function expectAccounting(o: ScenarioEnd): Promise<void> {
  let problems: string[] = ['not checked yet'];
  const check = async () => {
    const totals = totalsFromMetrics(await o.worker.metrics());
    problems = checkAccounting({ records: o.records, delivered: o.engine.delivered(), reports: reportsOf(o.engine, o.worker.id), totals, options: o.options });
    return problems.length === 0;
  };
  await waitUntil(check, o.timeoutMs ?? 15_000, () => `accounting invariants:\n  ${problems.join('\n  ')}`).catch(() => undefined);
  expect(problems).toEqual([]);
  if (o.sim) {
    let inFlight = -1;
    await waitUntil(
      async () => {
        inFlight = Number((await o.sim!.stats()).inFlight);
        return inFlight === 0;
      },
      5000,
      () => `model requests still open: ${inFlight}`,
    );
  }
}

/** After the worker process ended: the final flush left the invariants intact (nothing counted twice). */
export function expectAccountingAfterExit(o: {
  engine: TestEngine;
  worker: WorkerProcess;
  records: readonly ClientRecord[];
  totals: ReturnType<typeof totalsFromMetrics>;
  options?: DeliveryOptions;
}): void {
  expect(
    checkAccounting({ records: o.records, delivered: o.engine.delivered(), reports: reportsOf(o.engine, o.worker.id), totals: o.totals, options: o.options }),
  ).toEqual([]);
}

/** Count of each outcome, for assertions and messages. */
export function tally(records: readonly { outcome: ClientOutcome }[]): Record<ClientOutcome, number> {
  const t: Record<ClientOutcome, number> = { success: 0, error: 0, aborted: 0, rejected: 0, refused: 0 };
  for (const r of records) t[r.outcome]++;
  return t;
}

/**
 * The end of every scenario: the invariants while the worker runs, then SIGTERM; the worker must
 * exit 0 by itself (no leaked handle), and its last flush must leave the invariants intact.
 */
export async function finishScenario(o: ScenarioEnd): Promise<void> {
  await expectAccounting(o);
  const totals = totalsFromMetrics(await o.worker.metrics());
  await o.worker.terminate();
  expectAccountingAfterExit({ ...o, totals });
}
