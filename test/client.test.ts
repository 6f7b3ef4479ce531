import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import type { Provider, ProviderEvent, WorkerHandle, WorkerSpec } from '../src/autoscaler/providers/types.js';
import {
  QueueTimeoutError,
  RequestAbortedError,
  RequestTimeoutError,
  RetriesExhaustedError,
  RouteError,
  Serverless,
  SessionClosedError,
  StreamInterruptedError,
  WorkerError,
  type RetryInfo,
  type SseEvent,
} from '../src/client/index.js';
import { startModelSim, type ModelSim } from '../src/model-sim/index.js';
import { freePort, silentLogger } from './helpers/worker.js';

/**
 * The client against the reference autoscaler and real workers on loopback. The autoscaler's
 * provider here starts each worker it asks for as a real `nodeworker worker --handler openai`
 * process (signatures checked: not UNSECURED) beside its own model-sim, so a worker can be
 * killed with SIGKILL mid-request exactly as an instance dies.
 */
const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const LOAD = resolve(__dirname, '..', 'build', 'scripts', 'load.js');
const run = promisify(execFile);

interface FleetWorker {
  id: number;
  endpoint: string;
  url: string;
  sim: ModelSim;
  child: ChildProcess;
  dir: string;
  /** Set when we end it on purpose (stop/destroy/close), so its exit is not reported as a crash. */
  ending: boolean;
  exited: Promise<void>;
}

/** A provider that runs each worker as a process next to an in-process model-sim. */
class LoopbackFleet implements Provider {
  readonly kind = 'loopback';
  readonly workers = new Map<number, FleetWorker>();
  private listeners = new Set<(e: ProviderEvent) => void>();

  constructor(private readonly root: string) {}

  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    const id = spec.workerId;
    const dir = join(this.root, `worker-${id}`);
    mkdirSync(dir, { recursive: true });
    const launch = spec.launch as { perf?: number; tokenRate?: number };
    const logFile = join(dir, 'model.log');
    const sim = await startModelSim({
      flavor: 'openai',
      port: 0,
      loadSeconds: 0,
      tokenRate: launch.tokenRate ?? 2000,
      capacity: 1_000_000,
      ttftMs: 1,
      logFile,
    });
    // The benchmark cache: the worker takes this perf instead of measuring (PROTOCOL §5).
    writeFileSync(join(dir, '.has_benchmark'), String(launch.perf ?? 1000));
    const [port, httpPort] = [await freePort(), await freePort()];
    const out = createWriteStream(join(dir, 'worker.out'));
    const child = spawn(process.execPath, [CLI, 'worker', '--handler', 'openai'], {
      env: {
        PATH: process.env.PATH,
        WORKER_PORT: String(port),
        WORKER_HTTP_PORT: String(httpPort),
        WORKER_HOST: '127.0.0.1',
        PUBLIC_IPADDR: '127.0.0.1',
        CONTAINER_ID: String(id),
        MASTER_TOKEN: spec.masterToken,
        REPORT_ADDR: spec.reportAddrs.join(','),
        MODEL_SERVER_URL: sim.url,
        MODEL_LOG: logFile,
        WORKSPACE_DIR: dir,
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    const w: FleetWorker = {
      id,
      endpoint: spec.endpoint,
      url: `http://127.0.0.1:${port}`,
      sim,
      child,
      dir,
      ending: false,
      exited: new Promise((r) => child.once('exit', () => r())),
    };
    child.once('exit', (code, signal) => {
      void sim.close();
      if (!w.ending) this.emit({ workerId: id, kind: 'exited', reason: `process ended (${signal ?? code})` });
    });
    this.workers.set(id, w);
    this.emit({ workerId: id, kind: 'running', url: w.url });
    return { id, url: w.url };
  }

  async start(): Promise<void> {
    throw new Error('the loopback fleet does not stop and start workers');
  }

  async stop(id: number): Promise<void> {
    await this.end(id);
  }

  async destroy(id: number): Promise<void> {
    await this.end(id);
  }

  /** SIGKILL the worker, as when its instance dies: no drain, no last report. */
  kill(id: number): void {
    this.workers.get(id)?.child.kill('SIGKILL');
  }

  subscribe(listener: (e: ProviderEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers.keys()].map((id) => this.end(id)));
  }

  private async end(id: number): Promise<void> {
    const w = this.workers.get(id);
    if (!w) return;
    w.ending = true;
    if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await w.exited;
    await w.sim.close();
  }

  private emit(e: ProviderEvent): void {
    // Asynchronously, as a real provider's events arrive.
    setImmediate(() => {
      for (const l of this.listeners) l(e);
    });
  }
}

let root: string;
let fleet: LoopbackFleet;
let autoscaler: RunningAutoscaler;
let client: Serverless;
const API_KEY = 'client-test-api-key';

async function waitForReady(endpoint: string, count: number, timeoutMs = 75_000): Promise<void> {
  const ep = client.endpoint(endpoint);
  const until = Date.now() + timeoutMs;
  for (;;) {
    const workers = await ep.workers();
    if (workers.filter((w) => w.status === 'ready').length >= count) return;
    if (Date.now() > until)
      throw new Error(`endpoint ${endpoint}: ${count} ready workers not reached: ${JSON.stringify(workers.map((w) => [w.id, w.status]))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'client-test-'));
  fleet = new LoopbackFleet(root);
  autoscaler = await startAutoscaler({
    config: {
      engine: { tick_seconds: 0.2, stale_after_seconds: 3, probe_timeout_seconds: 0.5 },
      endpoints: [
        {
          name: 'llm',
          api_key: API_KEY,
          cold_workers: 2,
          max_workers: 2,
          // Active capacity of more than one worker: both stay ready (not parked inactive).
          min_load: 3000,
          scale_down_delay: 3600,
          release_delay: 3600,
          workergroups: [{ name: 'fast', launch: { perf: 2000, tokenRate: 50 }, machine_types: [{ name: 'sim', dollars_per_hour: 1, expected_perf: 2000 }] }],
        },
        {
          // No workers at all: every request waits in the engine's queue.
          name: 'empty',
          api_key: API_KEY,
          cold_workers: 0,
          max_workers: 0,
          min_load: 0,
        },
        {
          // One slow worker whose own queue limit (30 s, the handler's) is far below the engine's.
          name: 'tight',
          api_key: API_KEY,
          cold_workers: 1,
          max_workers: 1,
          min_load: 1,
          max_queue_time: 10_000,
          scale_down_delay: 3600,
          release_delay: 3600,
          workergroups: [{ name: 'slow', launch: { perf: 2, tokenRate: 40 }, machine_types: [{ name: 'sim', dollars_per_hour: 1, expected_perf: 2 }] }],
        },
      ],
    },
    port: 0,
    dataDir: join(root, 'autoscaler'),
    provider: fleet,
    logger: silentLogger(),
  });
  client = new Serverless({ autoscalerUrl: autoscaler.url, apiKey: API_KEY, retry: { baseDelayMs: 150, maxDelayMs: 1000, maxAttempts: 20 }, timeout: 20_000 });
  await Promise.all([waitForReady('llm', 2), waitForReady('tight', 1)]);
}, 90_000); // a hang guard: real worker processes start in seconds alone, far slower on a loaded machine

afterAll(async () => {
  await client?.close();
  await autoscaler?.close();
  await fleet?.close();
  if (root) rmSync(root, { recursive: true, force: true });
}, 30_000);

describe('client → autoscaler → worker', () => {
  it("routes a request and returns the worker's answer", async () => {
    const ep = client.endpoint('llm');
    const r = await ep.request<{ choices: Array<{ text: string }>; usage: { completion_tokens: number } }>(
      '/v1/completions',
      { prompt: 'Hello there', max_tokens: 4 },
      { cost: 10 },
    );
    expect(r.status).toBe(200);
    expect(r.body.usage.completion_tokens).toBe(4);
    expect(r.attempts).toBe(1);
    expect(r.requestIdx).toBeGreaterThan(0);
    expect([...fleet.workers.values()].map((w) => w.url)).toContain(r.url);
  });

  it('consumes a stream as parsed server-sent events', async () => {
    const ep = client.endpoint('llm');
    const stream = await ep.request('/v1/completions', { prompt: 'Count', max_tokens: 6, stream: true }, { stream: true, cost: 10 });
    expect(stream.format).toBe('sse');
    const events: SseEvent[] = [];
    for await (const e of stream) if (e.type === 'sse') events.push(e);
    expect(events.at(-1)!.data).toBe('[DONE]');
    const tokens = events.filter((e) => e.json !== undefined).map((e) => (e.json as { choices: Array<{ text: string }> }).choices[0]!.text);
    expect(tokens).toHaveLength(6);
    expect(tokens.every((t) => t.length > 0)).toBe(true);
  });

  it('opens a session, sends requests in it to its worker, and ends it', async () => {
    const ep = client.endpoint('llm');
    const session = await ep.session({ cost: 20, lifetime: 30 });
    expect(session.id).toBeTruthy();
    const a = await session.request<{ usage: { completion_tokens: number } }>('/v1/completions', { prompt: 'in a session', max_tokens: 3 });
    const b = await session.request('/v1/completions', { prompt: 'again', max_tokens: 2 });
    expect(a.body.usage.completion_tokens).toBe(3);
    expect(a.url).toBe(session.url);
    expect(b.url).toBe(session.url);
    expect(await session.isOpen()).toBe(true);
    const info = await session.info();
    expect(info.lifetime).toBe(30);
    expect(info).not.toHaveProperty('auth_data');

    // Another handle on the same session (as another process would reattach) ends it...
    const again = await ep.getSession(session.id, session.authData);
    expect(await again.end()).toEqual({ ended: true });
    expect(await again.end()).toEqual({ ended: false });
    // ...and the first handle learns it from the worker (410) on its next request.
    await expect(session.request('/v1/completions', { prompt: 'late', max_tokens: 1 })).rejects.toBeInstanceOf(SessionClosedError);
    expect(session.closed).toBe(true);
    expect(await session.isOpen()).toBe(false);
    expect(await session.end()).toEqual({ ended: false });
  });

  it('names the fields of a payload the worker refused (422), without retrying', async () => {
    const ep = client.endpoint('llm');
    const retries: RetryInfo[] = [];
    const err = await ep.request('/v1/completions', { prompt: 7 }, { cost: 5, onRetry: (r) => retries.push(r) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerError);
    expect((err as WorkerError).status).toBe(422);
    expect((err as WorkerError).fields).toHaveProperty('payload.prompt');
    expect((err as Error).message).toMatch(/payload\.prompt/);
    expect(retries).toEqual([]);
  });

  it('says what is wrong when the api key is wrong, and never shows the key', async () => {
    const bad = new Serverless({ autoscalerUrl: autoscaler.url, apiKey: 'not-the-key-4242' });
    try {
      const err = await bad
        .endpoint('llm')
        .request('/v1/completions', { prompt: 'x' })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RouteError);
      expect((err as RouteError).status).toBe(401);
      expect((err as Error).message).toMatch(/api key/);
      expect((err as Error).message).not.toContain('not-the-key-4242');
      const unknown = await bad
        .endpoint('nope')
        .request('/v1/completions', {})
        .catch((e: unknown) => e);
      expect((unknown as RouteError).status).toBe(404);
      expect((unknown as Error).message).toMatch(/endpoint name "nope"/);
    } finally {
      await bad.close();
    }
  });

  it("polls while the request waits in the engine's queue, then says no worker took it", async () => {
    const ep = client.endpoint('empty');
    const t0 = Date.now();
    const err = await ep.request('/v1/completions', { prompt: 'x' }, { timeout: 800 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueueTimeoutError);
    expect((err as Error).message).toMatch(/no worker of endpoint "empty" could take the request/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(700);
    // One request, polled with its request_idx: not a new request per poll.
    expect(autoscaler.engine.endpoints.get('empty')!.router.stats.queued).toBe(1);
  });

  it('stops at its timeout, or when its signal aborts, with a typed error', async () => {
    const ep = client.endpoint('llm');
    const slow = { prompt: 'slow', max_tokens: 100 };
    const timedOut = await ep.request('/v1/completions', slow, { cost: 100, timeout: 300 }).catch((e: unknown) => e);
    expect(timedOut).toBeInstanceOf(RequestTimeoutError);
    expect((timedOut as Error).message).toMatch(/longer than its timeout \(300 ms\) while waiting for the worker/);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const aborted = await ep.request('/v1/completions', slow, { cost: 100, signal: ac.signal }).catch((e: unknown) => e);
    expect(aborted).toBeInstanceOf(RequestAbortedError);
  });

  it('retries a 429 from a full worker with back-off until it has room', async () => {
    const ep = client.endpoint('tight');
    // ~100 load at perf 2: 50 s of expected queue, over the handler's 30 s, for about 2.5 s.
    const long = ep.request('/v1/completions', { prompt: 'a long one', max_tokens: 100 }, { cost: 100 });
    await waitUntil(() => [...fleet.workers.values()].some((w) => w.endpoint === 'tight' && w.sim.stats().inFlight === 1), 5000);
    const retries: RetryInfo[] = [];
    const second = await ep.request('/v1/completions', { prompt: 'short', max_tokens: 2 }, { cost: 5, onRetry: (r) => retries.push(r) });
    expect(second.status).toBe(200);
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every((r) => r.status === 429 && r.stage === 'worker')).toBe(true);
    expect(second.attempts).toBe(retries.length + 1);
    // Back-off grows (equal jitter keeps each delay within [step/2, step]).
    for (const [i, r] of retries.entries()) expect(r.delayMs).toBeLessThanOrEqual(Math.min(1000, 150 * 2 ** i));
    expect((await long).status).toBe(200);
  });

  it('gives up with RetriesExhaustedError listing the tries when the worker is full; a retry waits for it instead of a second 429', async () => {
    const ep = client.endpoint('tight');
    const long = ep.request('/v1/completions', { prompt: 'another long one', max_tokens: 100 }, { cost: 100 });
    await waitUntil(() => [...fleet.workers.values()].some((w) => w.endpoint === 'tight' && w.sim.stats().inFlight === 1), 5000);
    const err = await ep.request('/v1/completions', { prompt: 'x', max_tokens: 1 }, { retry: { maxAttempts: 1, baseDelayMs: 10 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetriesExhaustedError);
    expect((err as RetriesExhaustedError).attempts.map((a) => a.status)).toEqual([429]);
    expect((err as Error).message).toMatch(/gave up after 1 tr.*HTTP 429/);
    // With a second try, the retry routes the same request_idx again: the engine keeps it from the
    // worker that just refused it, so it waits in the queue rather than collecting a second 429.
    const retried = await ep.request('/v1/completions', { prompt: 'x', max_tokens: 1 }, { retry: { maxAttempts: 2, baseDelayMs: 10 } });
    expect(retried.status).toBe(200);
    expect(retried.attempts).toBe(2);
    await long;
  });

  it('drives the endpoint from scripts/load.js (the client inside a load generator)', async () => {
    const out = join(root, 'load');
    const r = await run(
      process.execPath,
      [
        LOAD,
        '--autoscaler',
        autoscaler.url,
        '--endpoint',
        'llm',
        '--rate',
        '6',
        '--duration',
        '1.5',
        '--arrivals',
        'uniform',
        '--max-tokens',
        '3',
        '--prompt-tokens',
        '4',
        '--out',
        out,
      ],
      {
        env: { ...process.env, API_KEY },
      },
    );
    expect(r.stdout).toMatch(/sent 9, ok 9, errors 0/);
    const rows = readFileSync(join(out, 'requests.csv'), 'utf8').trim().split('\n').slice(1);
    expect(rows).toHaveLength(9);
    // cost column: the openai handler's workload of each payload (4 prompt tokens + 3).
    expect(rows.every((row) => row.split(',')[9] === '7')).toBe(true);
  });

  it('a stream whose model dies mid-way delivers what arrived, then throws StreamInterruptedError', async () => {
    const ep = client.endpoint('tight');
    const stream = await ep.request('/v1/completions', { prompt: 'doomed', max_tokens: 100, stream: true }, { stream: true, cost: 100 });
    const worker = [...fleet.workers.values()].find((w) => w.url === stream.url)!;
    const texts: string[] = [];
    const err = await (async () => {
      for await (const e of stream) {
        if (e.type === 'sse' && e.json) texts.push((e.json as { choices: Array<{ text: string }> }).choices[0]!.text);
        // The model server crashes after the first tokens: the worker can only cut the stream.
        if (texts.length === 2) worker.sim.control({ crash: true });
      }
    })().catch((e: unknown) => e);
    expect(texts.length).toBeGreaterThanOrEqual(2);
    expect(texts.length).toBeLessThan(100);
    expect(err).toBeInstanceOf(StreamInterruptedError);
    expect((err as Error).message).toMatch(/broke after it started/);
  });

  it('re-routes to another worker when its worker is killed mid-request', async () => {
    const ep = client.endpoint('llm');
    const retries: RetryInfo[] = [];
    // 150 tokens at 50 tokens/s: 3 s on the model; the worker dies a moment in.
    const pending = ep.request<{ usage: { completion_tokens: number } }>(
      '/v1/completions',
      { prompt: 'survive this', max_tokens: 150 },
      { cost: 150, onRetry: (r) => retries.push(r) },
    );
    let victim: FleetWorker | undefined;
    await waitUntil(() => {
      victim = [...fleet.workers.values()].find((w) => w.endpoint === 'llm' && w.sim.stats().inFlight === 1 && w.child.exitCode === null);
      return victim !== undefined;
    }, 5000);
    fleet.kill(victim!.id);
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.body.usage.completion_tokens).toBe(150);
    expect(r.url).not.toBe(victim!.url);
    expect(retries[0]).toMatchObject({ stage: 'worker', status: null, url: victim!.url });
    expect(retries[0]!.reason).toMatch(/closed|reset|refused/);
  }, 30_000);
});

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('timed out waiting for a condition');
    await new Promise((r) => setTimeout(r, 10));
  }
}
