/**
 * Test helpers for the worker's request path: an in-process worker in front of a loopback model,
 * a loopback engine (public key, /worker_status/, /delete_requests/), envelopes, and one place
 * that closes everything a test started. Everything is real HTTP on 127.0.0.1, ephemeral ports.
 *
 * Typical use:
 *   const res = useResources();               // registers afterEach(close all)
 *   const model = await res.add(startTestModel((req, res, body) => { ... }));
 *   const w = await res.add(startTestWorker({ modelUrl: model.url }));
 *   const r = await postJson(w.url + '/echo', envelope({ hello: 1 }));
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterEach } from 'vitest';
import { z } from 'zod';
import tgi, { generate, generateStream } from '../../handlers/tgi.js';
import { createLogger, type Logger } from '../../src/common/log.js';
import { startModelSim, type ModelSim } from '../../src/model-sim/index.js';
import { defineHandler, defineWorker, type HandlerSpec, type WorkerSpec } from '../../src/worker/config.js';
import { parseWorkerEnv } from '../../src/worker/env.js';
import { startWorker, type RunningWorker, type WorkerExtension, type WorkerTimings } from '../../src/worker/worker.js';
import { testCert } from './tls.js';

/** Something a test started and must stop. */
export interface Closable {
  close(): Promise<void> | void;
}

/**
 * Everything a test starts, closed in reverse order after each test (workers before the models
 * they proxy to), so vitest exits on its own.
 */
export function useResources(): { add<T extends Closable>(p: Promise<T> | T): Promise<T>; defer(fn: () => Promise<void> | void): void } {
  let stack: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    const fns = stack.reverse();
    stack = [];
    for (const fn of fns) {
      try {
        await fn();
      } catch {
        /* keep closing the rest */
      }
    }
  });
  return {
    async add(p) {
      const r = await p;
      stack.push(() => r.close());
      return r;
    },
    defer(fn) {
      stack.push(fn);
    },
  };
}

/** A free TCP port on 127.0.0.1 (bound and released), for a process the test starts on a port of its own. */
export { freePort } from '../../benchmarks/lib/procs.js';

/** A logger that writes nothing (set TEST_LOG=debug to see the worker's log lines). */
export function silentLogger(): Logger {
  return createLogger('test', { level: process.env.TEST_LOG ?? 'silent', destination: 2 });
}

// ---------------------------------------------------------------------------------------------
// A loopback model server whose behaviour each test writes.

/** One connection to the model, as the model saw it. */
export interface ModelConnection {
  readonly id: number;
  readonly socket: Socket;
  /** performance.now() when the model saw it close, or null while open. */
  closedAt: number | null;
  /** Resolves with performance.now() of the close. */
  readonly closed: Promise<number>;
}

/** What a test model handler receives. */
export type ModelHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer, conn: ModelConnection) => void | Promise<void>;

export interface TestModel extends Closable {
  url: string;
  port: number;
  server: Server;
  /** Every connection ever accepted, in order. */
  connections: ModelConnection[];
  /** Bodies of every request received, in arrival order. */
  bodies: Buffer[];
  /** Connections open now. */
  openConnections(): number;
}

/** Start a model on loopback that answers with `handler` (after reading each request body whole). */
export async function startTestModel(handler: ModelHandler): Promise<TestModel> {
  const connections: ModelConnection[] = [];
  const bySocket = new WeakMap<Socket, ModelConnection>();
  const bodies: Buffer[] = [];
  const server = createServer({ keepAliveTimeout: 60_000, noDelay: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      bodies.push(body);
      Promise.resolve(handler(req, res, body, bySocket.get(req.socket)!)).catch((err: Error) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: `test model handler threw: ${err.message}` }));
        } else res.destroy();
      });
    });
  });
  server.on('connection', (socket) => {
    let resolve!: (t: number) => void;
    const conn: ModelConnection = { id: connections.length + 1, socket, closedAt: null, closed: new Promise<number>((r) => (resolve = r)) };
    socket.on('close', () => {
      conn.closedAt = performance.now();
      resolve(conn.closedAt);
    });
    connections.push(conn);
    bySocket.set(socket, conn);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    connections,
    bodies,
    openConnections: () => connections.filter((c) => c.closedAt === null).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A model handler that answers 200 with `{"echo": <the request body as JSON>}`. */
export const echoModel: ModelHandler = (_req, res, body) => {
  const text = `{"echo":${body.length ? body.toString('utf8') : 'null'}}`;
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

/** model-sim with the openai routes, answering at once at any load (its log in `logDir`); resolves once it is ready. The caller closes it. */
export async function startInstantOpenaiSim(logDir: string): Promise<ModelSim> {
  const sim = await startModelSim({
    flavor: 'openai',
    port: 0,
    loadSeconds: 0,
    tokenRate: 100_000,
    capacity: 1_000_000,
    ttftMs: 0,
    logFile: join(logDir, 'model.log'),
  });
  await sim.ready;
  return sim;
}

// ---------------------------------------------------------------------------------------------
// A loopback engine: the public key and the two report routes.

export interface TestEngine extends Closable {
  url: string;
  /** GET /pubkey/ calls so far. */
  pubkeyHits: number;
  /** Bodies of POST /worker_status/. */
  statusReports: Array<Record<string, unknown>>;
  /** Bodies of POST /delete_requests/. */
  deleteRequests: Array<{ worker_id: number; request_idxs: number[]; success: boolean }>;
}

/**
 * An engine that serves `publicKeyPem` at /pubkey/ (503 while null, and for the first
 * `pubkeyFailures` calls) and accepts every report.
 */
export async function startTestEngine(publicKeyPem: string | null, opts: { pubkeyFailures?: number } = {}): Promise<TestEngine> {
  const engine: Omit<TestEngine, 'close' | 'url'> = { pubkeyHits: 0, statusReports: [], deleteRequests: [] };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (req.method === 'GET' && req.url === '/pubkey/') {
        engine.pubkeyHits++;
        if (publicKeyPem === null || engine.pubkeyHits <= (opts.pubkeyFailures ?? 0)) {
          res.writeHead(503).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain' }).end(publicKeyPem);
        return;
      }
      if (req.method === 'POST' && (req.url === '/worker_status/' || req.url === '/delete_requests/')) {
        try {
          const body = JSON.parse(text) as never;
          if (req.url === '/worker_status/') engine.statusReports.push(body);
          else engine.deleteRequests.push(body);
        } catch {
          res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"invalid JSON"}');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: `no route ${req.method} ${req.url}` }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(engine, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
}

// ---------------------------------------------------------------------------------------------
// The worker.

/** A handler that accepts any object payload and forwards it to the model at `/echo`. */
export function echoHandler(overrides: Partial<HandlerSpec> = {}): HandlerSpec {
  return defineHandler({
    route: '/echo',
    payload: z.looseObject({}),
    workload: (p: Record<string, unknown>) => (typeof p.workload === 'number' ? p.workload : 100),
    allowParallelRequests: true,
    maxQueueTime: null,
    benchmark: { dataset: [{ prompt: 'benchmark' }] },
    ...overrides,
  });
}

/** Benchmark shape of `tgiDefinition()`: a warm-up, then `runs` rounds of `concurrency` requests of `tokens` tokens each. */
export const TGI_BENCHMARK = { runs: 2, concurrency: 4, tokens: 20 } as const;

/** The built-in TGI worker (its real log patterns and health path) with the short `TGI_BENCHMARK`. */
export function tgiDefinition(over: Partial<WorkerSpec> = {}) {
  const { runs, concurrency, tokens } = TGI_BENCHMARK;
  return defineWorker({
    ...tgi,
    handlers: [
      { ...generate, benchmark: { generator: (i: number) => ({ inputs: `benchmark ${i}`, parameters: { max_new_tokens: tokens } }), runs, concurrency } },
      generateStream,
    ],
    ...over,
  });
}

export interface TestWorkerOptions {
  modelUrl: string;
  /** Default: one `echoHandler()`. Exactly one handler must carry a benchmark. */
  handlers?: HandlerSpec[];
  /** Other WorkerSpec fields (maxBodyBytes, modelTimeoutMs, ...). */
  spec?: Omit<Partial<WorkerSpec>, 'handlers' | 'modelServerUrl'>;
  /** Perf written to `.has_benchmark` so no benchmark runs (default 1000); null: write no cache file. */
  perf?: number | null;
  /** Default true; false requires `reportAddr` (a TestEngine serving the public key). */
  unsecured?: boolean;
  reportAddr?: string;
  /** Extra environment (strings, as process.env would hold them). */
  env?: Record<string, string>;
  timings?: Partial<WorkerTimings>;
  extensions?: WorkerExtension[];
  logger?: Logger;
  /** Wait until the worker is ready (default true); needs the key when secured. */
  waitReady?: boolean;
  /** The request path's fast lane and own model client (both on by default). */
  requestPath?: { fastLane?: boolean; modelClient?: boolean };
  /** Serve HTTPS (USE_SSL) with the shared test certificate (helpers/tls.ts); `url` is then https. */
  tls?: boolean;
}

export interface TestWorker extends RunningWorker {
  /** The worker's WORKSPACE_DIR (holds `.has_benchmark`); removed by close(). */
  workspaceDir: string;
}

/** Start a worker in this process; `close()` stops it and removes its workspace. */
export async function startTestWorker(opts: TestWorkerOptions): Promise<TestWorker> {
  const workspaceDir = mkdtempSync(join(tmpdir(), 'nodeworker-test-'));
  const perf = opts.perf === undefined ? 1000 : opts.perf;
  if (perf !== null) writeFileSync(join(workspaceDir, '.has_benchmark'), String(perf));
  const env = parseWorkerEnv({
    WORKER_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    CONTAINER_ID: '1',
    WORKSPACE_DIR: workspaceDir,
    ...(opts.unsecured === false ? {} : { UNSECURED: 'true' }),
    ...(opts.reportAddr ? { REPORT_ADDR: opts.reportAddr } : {}),
    ...(opts.tls ? { USE_SSL: 'true', SSL_CERT_PATH: testCert().cert, SSL_KEY_PATH: testCert().key } : {}),
    ...opts.env,
  });
  const definition = defineWorker({ ...opts.spec, modelServerUrl: opts.modelUrl, handlers: opts.handlers ?? [echoHandler()] });
  let worker: RunningWorker;
  try {
    worker = await startWorker({
      definition,
      env,
      logger: opts.logger ?? silentLogger(),
      timings: { noHealthWaitMs: 0, pubkeyBaseDelayMs: 50, reportTickMs: 100, reportRetryDelayMs: 50, ...opts.timings },
      extensions: opts.extensions,
      requestPath: opts.requestPath,
      // The tests audit every ended id (ledgerAudit), engine or not.
      auditDeletes: true,
    });
  } catch (err) {
    rmSync(workspaceDir, { recursive: true, force: true });
    throw err;
  }
  if (opts.waitReady !== false)
    await waitFor(
      () => worker.lifecycle.state === 'ready',
      10_000,
      () => `worker not ready: ${worker.lifecycle.state} (${worker.lifecycle.reason})`,
    );
  const close = worker.close;
  return Object.assign(worker, {
    workspaceDir,
    close: async () => {
      await close();
      rmSync(workspaceDir, { recursive: true, force: true });
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Envelopes and requests.

let nextRequestIdx = 1_000;

/** auth_data as the engine's /route/ returns it (unsigned unless `signature` is given). */
export function authData(
  over: Partial<Record<'cost' | 'reqnum' | 'request_idx', number> & Record<'endpoint' | 'signature' | 'url', string>> & Record<string, unknown> = {},
) {
  const idx = over.request_idx ?? nextRequestIdx++;
  return { cost: 100, endpoint: 'test-endpoint', reqnum: idx, request_idx: idx, signature: 'unsigned', url: 'http://127.0.0.1:1', ...over };
}

/** A client request body: `{auth_data, payload}` (plus session_id when given). */
export function envelope(payload: unknown, auth: Record<string, unknown> = authData(), sessionId?: string | null): Record<string, unknown> {
  return sessionId === undefined ? { auth_data: auth, payload } : { auth_data: auth, payload, session_id: sessionId };
}

/** A dispatcher for the test's client side (trusting the shared test certificate for https); close it in afterAll/afterEach. */
export function clientAgent(connections = 128, opts: { tls?: boolean } = {}): Agent {
  return new Agent({ connections, keepAliveTimeout: 10_000, pipelining: 1, ...(opts.tls ? { connect: { ca: testCert().ca } } : {}) });
}

export interface JsonAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** Parsed body, or undefined when empty / not JSON. */
  json: any;
}

/** POST a JSON body (an object, or a raw string/Buffer sent as is) and read the whole answer. */
export async function postJson(
  url: string,
  body: unknown,
  opts: { dispatcher?: Agent; signal?: AbortSignal; headers?: Record<string, string> } = {},
): Promise<JsonAnswer> {
  const raw = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const r = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...opts.headers },
    body: raw,
    dispatcher: opts.dispatcher,
    signal: opts.signal,
  });
  const text = await r.body.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, headers: r.headers, text, json };
}

/** Poll `cond` every 5 ms until it holds; throws `what()` after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs = 5000, what: () => string = () => 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Check the ledger's invariant (for a worker without sessions): every request that entered
 * ended once, and the totals add up. Returns the request_idxs queued for /delete_requests/.
 */
export function ledgerAudit(worker: Pick<RunningWorker, 'ledger'>): { succeeded: number[]; failed: number[] } {
  const { ledger } = worker;
  const t = ledger.totals;
  const s = ledger.snapshot();
  const succeeded = ledger.deleteSucceeded.peek(Infinity);
  const failed = ledger.deleteFailed.peek(Infinity);
  const problems: string[] = [];
  if (t.received !== t.served + t.errored + t.cancelled + s.workloadPending) {
    problems.push(`received ${t.received} != served ${t.served} + errored ${t.errored} + cancelled ${t.cancelled} + pending ${s.workloadPending}`);
  }
  if (t.requests !== t.ended + s.numRequestsWorking) problems.push(`requests ${t.requests} != ended ${t.ended} + working ${s.numRequestsWorking}`);
  if (problems.length) throw new Error(`ledger invariant broken: ${problems.join('; ')}`);
  return { succeeded, failed };
}
