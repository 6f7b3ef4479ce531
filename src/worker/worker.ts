import type { Server } from 'node:http';
import { Hono } from 'hono';
import { Pool } from 'undici';
import { createLogger, type Logger } from '../common/log.js';
import { FifoGate } from './admission.js';
import { AuthChecker, fetchPublicKey } from './auth.js';
import { runBenchmark, progressLine, NO_SUCCESS_ERROR } from './benchmark.js';
import type { WorkerDefinition } from './config.js';
import { createDiskProgress, formatProgressBar, type DiskProgress } from './disk-progress.js';
import type { WorkerEnv } from './env.js';
import { startHealthcheck, type Healthcheck } from './healthcheck.js';
import { Ledger } from './ledger.js';
import { Lifecycle } from './lifecycle.js';
import { ModelClient } from './model-client.js';
import { watchLog, type LogWatch } from './logwatch.js';
import { createHandlerRoute, type RequestObserver, type SessionAccess } from './proxy.js';
import { Reporter } from './reporter.js';
import { closeServer, createListener, listen, type RouteFn } from './server.js';
import { WORKER_VERSION } from './version.js';

/**
 * The composition root: builds every part of a worker and wires them together. Logic lives in the
 * parts; this file only decides who talks to whom and in which order things start and stop.
 */
export interface WorkerOptions {
  definition: WorkerDefinition;
  env: WorkerEnv;
  logger?: Logger;
  /** Test knobs: delays of the readiness sequence (PROTOCOL defaults otherwise). */
  timings?: Partial<WorkerTimings>;
  /** Extra routes/observers contributed by optional parts (sessions, metrics, management). */
  extensions?: WorkerExtension[];
  /**
   * Benchmark and diagnosis knobs of the request path, both on by default: the listener's fast
   * lane (server.ts) and the lean model client (model-client.ts); off, node:http and the undici pool
   * serve instead (benchmarks/ablation-bench.ts measures what each buys).
   */
  requestPath?: { fastLane?: boolean; modelClient?: boolean };
}

export interface WorkerTimings {
  /** Wait after the benchmark when no health path is set (10 s). */
  noHealthWaitMs: number;
  /** Deadline for the first good healthcheck (300 s). */
  healthDeadlineMs: number;
  /** Healthcheck period (10 s). */
  healthIntervalMs: number;
  /** Reporter: check period (1 s), idle/not-loaded period (10 s), retry pause (2 s). */
  reportTickMs: number;
  reportIdleMs: number;
  reportRetryDelayMs: number;
  /** Public key fetch: first back-off step (1 s; then 2, 4, 8). */
  pubkeyBaseDelayMs: number;
  /** How often loading progress is logged (5 s). */
  progressLogMs: number;
  /** Clients must send all request headers within this (10 s), the whole request within requestTimeoutMs (60 s). */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
}

const DEFAULT_TIMINGS: WorkerTimings = {
  noHealthWaitMs: 10_000,
  healthDeadlineMs: 300_000,
  healthIntervalMs: 10_000,
  reportTickMs: 1000,
  reportIdleMs: 10_000,
  reportRetryDelayMs: 2000,
  pubkeyBaseDelayMs: 1000,
  progressLogMs: 5000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
};

/**
 * A model log line containing this is an error whatever the handler's patterns say: on_start.sh
 * appends it to MODEL_LOG when the model server process exits, so the worker reports the failure
 * on its own cadence instead of reporting "loading" forever.
 */
export const SUPERVISOR_ERROR_MARKER = '[nodeworker on_start] ERROR:';

/** What an optional part receives and may contribute. */
export interface WorkerContext {
  definition: WorkerDefinition;
  env: WorkerEnv;
  ledger: Ledger;
  lifecycle: Lifecycle;
  auth: AuthChecker;
  gate: FifoGate;
  logger: Logger;
  app: Hono;
  reporter: Reporter;
  loadingProgress: () => number | null;
}

export interface WorkerExtension {
  name: string;
  setup(ctx: WorkerContext): {
    sessions?: SessionAccess;
    observer?: RequestObserver;
    /** Routes for the second plain-HTTP listener (e.g. /session/end). */
    internalRoutes?: Map<string, RouteFn>;
    internalApp?: Hono;
    close?: () => Promise<void> | void;
  };
}

export interface RunningWorker {
  url: string;
  port: number;
  internalPort: number | null;
  ledger: Ledger;
  lifecycle: Lifecycle;
  auth: AuthChecker;
  reporter: Reporter;
  logger: Logger;
  /** Stop admitting, let in-flight requests end (up to the drain timeout), send a last report, close. */
  drain(timeoutMs?: number): Promise<void>;
  /** Close at once (tests). */
  close(): Promise<void>;
}

export async function startWorker(opts: WorkerOptions): Promise<RunningWorker> {
  const { definition, env } = opts;
  const spec = definition.spec;
  const t: WorkerTimings = { ...DEFAULT_TIMINGS, ...opts.timings };
  const logger = opts.logger ?? createLogger('nodeworker');
  const ledger = new Ledger();
  const lifecycle = new Lifecycle();
  const auth = new AuthChecker({ unsecured: env.UNSECURED, strict: env.STRICT_AUTH });
  const gate = new FifoGate();
  const modelUrl = spec.modelServerUrl ?? env.MODEL_SERVER_URL ?? 'http://127.0.0.1:8000';
  const modelTimeoutMs = spec.modelTimeoutMs ?? 300_000;
  const pool = new Pool(modelUrl, { connections: 512, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: modelTimeoutMs, bodyTimeout: modelTimeoutMs });
  // The request path's own client (plain http; cheaper per request than undici, docs/performance.md);
  // the pool stays for the benchmark, and serves the request path for an https model.
  const model = modelUrl.startsWith('http:') && opts.requestPath?.modelClient !== false ? new ModelClient(modelUrl, { headersTimeoutMs: modelTimeoutMs, bodyTimeoutMs: modelTimeoutMs }) : undefined;
  const ac = new AbortController();
  const closers: Array<() => Promise<void> | void> = [];

  lifecycle.on('transition', (tr) => logger.info({ from: tr.from, to: tr.to, reason: tr.reason }, `state ${tr.from} → ${tr.to}`));

  let disk: DiskProgress | null = null;
  const modelSizeGb = spec.modelSizeGb ?? env.MODEL_SIZE_GB;
  let lastProgress: number | null = null;
  try {
    disk = await createDiskProgress({ path: env.WORKSPACE_DIR, modelSizeGb });
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'disk usage cannot be measured; loading progress and additional_disk_usage stay 0');
  }

  const reporter = new Reporter({
    addrs: env.REPORT_ADDR,
    containerId: env.CONTAINER_ID,
    masterToken: env.MASTER_TOKEN,
    version: env.WORKER_VERSION ?? WORKER_VERSION,
    publicUrl: env.publicUrl,
    ledger,
    lifecycle,
    logger,
    takeDiskDeltaGb: disk ? () => disk!.takeDeltaGb() : undefined,
    tickMs: t.reportTickMs,
    idleMs: t.reportIdleMs,
    retryDelayMs: t.reportRetryDelayMs,
  });

  const app = new Hono();
  const ctx: WorkerContext = { definition, env, ledger, lifecycle, auth, gate, logger, app, reporter, loadingProgress: () => lastProgress };

  app.get('/healthz', (c) =>
    c.json({
      state: lifecycle.state,
      reason: lifecycle.reason,
      perf: ledger.maxPerf,
      loadtime: lifecycle.loadtime,
      error_msg: ledger.errorMsg,
      load: { cur_load: ledger.curLoad, working: ledger.workingCount, inflight: lifecycle.inflight, expected_queue_time: ledger.expectedQueueTime() },
      loading_progress: lastProgress,
      auth: env.UNSECURED ? 'unsecured' : auth.hasKey ? 'key loaded' : 'waiting for the engine key',
      version: env.WORKER_VERSION ?? WORKER_VERSION,
    }, lifecycle.state === 'errored' ? 503 : 200),
  );

  let sessions: SessionAccess | undefined;
  const observers: RequestObserver[] = [];
  const internalRoutes = new Map<string, RouteFn>();
  let internalApp: Hono | undefined;
  for (const ext of opts.extensions ?? []) {
    const out = ext.setup(ctx);
    if (out.sessions) sessions = out.sessions;
    if (out.observer) observers.push(out.observer);
    out.internalRoutes?.forEach((fn, path) => internalRoutes.set(path, fn));
    if (out.internalApp) internalApp = out.internalApp;
    if (out.close) closers.push(out.close);
  }
  const observer = combineObservers(observers);

  const routes = new Map<string, RouteFn>();
  for (const h of definition.handlers) {
    routes.set(h.route, createHandlerRoute({ ledger, auth, lifecycle, pool, model, gate, logger, sessions, observer, maxBodyBytes: spec.maxBodyBytes ?? 10 * 1024 * 1024, modelTimeoutMs }, h));
  }
  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}`, field: 'path' }, 404));
  app.onError((err, c) => {
    logger.error({ err: err.message, path: c.req.path }, 'unhandled error in a route');
    return c.json({ error: 'internal error' }, 500);
  });

  const tls = env.USE_SSL ? { certPath: env.SSL_CERT_PATH, keyPath: env.SSL_KEY_PATH } : undefined;
  // A failed listen (port taken, unreadable cert) must leave nothing running: the CLI then reports
  // the failure, and an in-process caller gets a clean rejection.
  const abandon = async (err: unknown, servers: Server[]): Promise<never> => {
    await Promise.all(servers.map((srv) => closeServer(srv, 0)));
    for (const c of closers) await Promise.resolve().then(c).catch(() => undefined);
    await pool.destroy().catch(() => undefined);
    await model?.close();
    throw err;
  };
  let main: { server: Server; port: number };
  try {
    main = await listen(createListener(routes, app), { host: env.WORKER_HOST, port: env.WORKER_PORT, tls, headersTimeoutMs: t.headersTimeoutMs, requestTimeoutMs: t.requestTimeoutMs, fastLane: opts.requestPath?.fastLane, maxConnections: env.WORKER_MAX_CONNECTIONS });
  } catch (err) {
    return abandon(err, []);
  }
  let internal: { server: Server; port: number } | null = null;
  if (internalApp || internalRoutes.size > 0) {
    const iapp = internalApp ?? new Hono();
    iapp.notFound((c) => c.json({ error: `the internal listener serves only /session/end, not ${c.req.path}`, field: 'path' }, 404));
    try {
      internal = await listen(createListener(internalRoutes, iapp), { host: env.WORKER_HOST, port: env.workerHttpPort, headersTimeoutMs: t.headersTimeoutMs, requestTimeoutMs: t.requestTimeoutMs });
    } catch (err) {
      return abandon(err, [main.server]);
    }
  }
  const scheme = tls ? 'https' : 'http';
  const url = `${scheme}://${env.WORKER_HOST === '0.0.0.0' ? '127.0.0.1' : env.WORKER_HOST}:${main.port}`;
  logger.info({ url, internal_port: internal?.port ?? null, model: modelUrl, handlers: definition.handlers.map((h) => h.route) }, 'worker listening');
  reporter.start();

  // Loading progress: disk used since start / model size, logged until the model is loaded.
  let progressTimer: NodeJS.Timeout | null = null;
  if (disk) {
    const sampleProgress = async () => {
      const s = await disk!.sample().catch(() => null);
      if (!s) return;
      lastProgress = s.progress;
      if (s.progress !== null && (lifecycle.state === 'starting' || lifecycle.state === 'loading')) {
        logger.info({ progress: s.progress, used_gb: s.usedSinceStartGb }, `model loading ${formatProgressBar(s.progress)}`);
      }
    };
    progressTimer = setInterval(() => void sampleProgress(), t.progressLogMs);
    progressTimer.unref();
    void sampleProgress();
  }

  let health: Healthcheck | null = null;
  let benchmarkStarted = false;
  /**
   * The first model-side failure (error line, hook, benchmark, health). Sticky: error_msg is kept
   * across reports (PROTOCOL §3), so the engine sees this worker errored until it is replaced.
   */
  let modelError: string | null = null;
  const fail = (message: string) => {
    // A worker on its way out reports no new error: the model may complain about being stopped.
    if (lifecycle.state === 'draining') return void logger.warn({ err: message }, 'model error while draining (not reported)');
    // The first failure is the root cause (a crash line, then failing health checks): keep it.
    if (modelError !== null) return void logger.warn({ err: message, first: modelError }, 'model error (the first one stays reported)');
    modelError = message;
    ledger.setErrorMsg(message);
    lifecycle.to('errored', message);
  };

  // The engine's public key, in the background: without it nothing verifies and the worker is not
  // ready. Unlike a model failure, a key failure clears when the key arrives.
  let keyError: string | null = null;
  const keyReady: Promise<boolean> = env.UNSECURED
    ? Promise.resolve(true)
    : (async () => {
        if (env.REPORT_ADDR.length === 0) {
          keyError = 'REPORT_ADDR is empty: no engine to get the public key from (set UNSECURED=true for local runs)';
          ledger.setErrorMsg(keyError);
          lifecycle.to('errored', keyError);
          return false;
        }
        for (;;) {
          try {
            const pem = await fetchPublicKey(env.REPORT_ADDR[0]!, { logger, signal: ac.signal, baseDelayMs: t.pubkeyBaseDelayMs });
            auth.setPublicKey(pem);
            logger.info({ addr: env.REPORT_ADDR[0] }, 'engine public key loaded');
            if (keyError !== null && modelError === null) {
              if (ledger.errorMsg === keyError) ledger.setErrorMsg('');
              // Back to the phase the worker is really in; onModelLoaded moves on to ready.
              if (lifecycle.state === 'errored') lifecycle.to(benchmarkStarted ? 'benchmarking' : 'loading', 'engine public key loaded');
            }
            keyError = null;
            return true;
          } catch (err) {
            if (ac.signal.aborted) return false;
            keyError = (err as Error).message;
            if (modelError === null) {
              ledger.setErrorMsg(keyError);
              lifecycle.to('errored', keyError);
            }
            // Keep trying (slowly): the worker recovers when the engine's key endpoint comes back.
          }
        }
      })();

  const onModelLoaded = async (why: string) => {
    // A model that already failed is not benchmarked: its error stands (see modelError).
    if (benchmarkStarted || modelError !== null || ac.signal.aborted) return;
    benchmarkStarted = true;
    lifecycle.to('benchmarking', why);
    let perf = 0;
    const bar = process.stderr.isTTY === true;
    let best = 0;
    try {
      const result = await runBenchmark({
        handler: definition.benchmarkHandler,
        model: pool,
        workspaceDir: env.WORKSPACE_DIR,
        logger,
        signal: ac.signal,
        onRound: (r, total) => {
          best = Math.max(best, r.throughput);
          logger.info({ round: r.round, total, ok: r.ok, requests: r.requests, throughput: r.throughput, seconds: r.seconds }, `benchmark round ${r.round}/${total}: ${r.throughput.toFixed(1)} load/s`);
          // On a terminal, a bar as well (the log line stays the record).
          if (bar) process.stderr.write(`\r${progressLine(r.round, total, best)}${r.round === total ? '\n' : ''}`);
        },
      });
      if (result.error) return fail(result.error);
      perf = result.perf;
    } catch (err) {
      if (ac.signal.aborted) return;
      return fail(`benchmark failed: ${(err as Error).message}`);
    }
    ledger.setMaxPerf(perf);
    const healthPath = spec.healthPath ?? env.MODEL_HEALTH_ENDPOINT;
    if (healthPath) {
      health = startHealthcheck({
        url: modelUrl + healthPath,
        intervalMs: t.healthIntervalMs,
        onFailure: (message) => fail(message),
      });
      const ok = await health.waitForFirstSuccess(t.healthDeadlineMs, ac.signal).catch(() => false);
      if (!ok && ac.signal.aborted) return;
      if (!ok) return fail(`model health check did not succeed within ${Math.round(t.healthDeadlineMs / 1000)} s: GET ${modelUrl}${healthPath}`);
    } else {
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, t.noHealthWaitMs);
          ac.signal.addEventListener('abort', () => { clearTimeout(timer); reject(new Error('closed')); }, { once: true });
        });
      } catch {
        return;
      }
    }
    if (!(await keyReady)) return;
    if (modelError !== null || ac.signal.aborted) return;
    lifecycle.to('ready', `model loaded, perf ${perf.toFixed(1)} load/s`);
  };

  // Readiness source: a lifecycle hook, the model's log, or (neither) the health path / nothing.
  let logWatch: LogWatch | null = null;
  const logFile = spec.modelLogFile ?? env.MODEL_LOG;
  const actions = { onLoad: spec.logActions?.onLoad ?? [], onError: [...(spec.logActions?.onError ?? []), SUPERVISOR_ERROR_MARKER], onInfo: spec.logActions?.onInfo ?? [] };
  lifecycle.to('loading', spec.lifecycle ? 'starting the model through the lifecycle hook' : logFile ? `watching ${logFile}` : 'no model log configured');
  if (spec.lifecycle) {
    const hook = spec.lifecycle;
    closers.push(async () => {
      await hook.stop?.();
    });
    Promise.resolve()
      .then(() => hook.start({ ready: () => void onModelLoaded('lifecycle hook: model ready'), fail, info: (m) => logger.info({ source: 'model' }, m), signal: ac.signal }))
      .catch((err: Error) => fail(`lifecycle hook failed: ${err.message}`));
  } else if (logFile) {
    logWatch = watchLog({
      path: logFile,
      actions,
      logger,
      onEvent: (e) => {
        if (e.kind === 'load') void onModelLoaded(`model log: ${e.pattern}`);
        else if (e.kind === 'error') fail(`model error: ${e.line.slice(0, 500)}`);
        else logger.info({ source: 'model' }, e.line.slice(0, 2000));
      },
    });
  } else {
    logger.warn('no MODEL_LOG and no lifecycle hook: assuming the model is loaded now');
    void onModelLoaded('no model log configured');
  }

  let closed = false;
  const shutdown = async (drainMs: number | null) => {
    if (closed) return;
    closed = true;
    lifecycle.to('draining', drainMs === null ? 'closing' : 'signal received');
    if (drainMs !== null) {
      const drained = await lifecycle.waitIdle(drainMs);
      if (!drained) logger.warn({ inflight: lifecycle.inflight }, 'drain timeout: closing with requests in flight');
    }
    ac.abort();
    if (progressTimer) clearInterval(progressTimer);
    health?.stop();
    await logWatch?.close();
    if (drainMs !== null) await reporter.flush();
    reporter.stop();
    for (const c of closers) await c();
    await Promise.all([closeServer(main.server, drainMs === null ? 0 : 1000), internal ? closeServer(internal.server, 0) : undefined]);
    await pool.destroy();
    await model?.close();
    logger.info('worker stopped');
    logger.flush();
  };

  return {
    url,
    port: main.port,
    internalPort: internal?.port ?? null,
    ledger,
    lifecycle,
    auth,
    reporter,
    logger,
    drain: (timeoutMs = env.DRAIN_TIMEOUT * 1000) => shutdown(timeoutMs),
    close: () => shutdown(null),
  };
}

function combineObservers(list: RequestObserver[]): RequestObserver | undefined {
  if (list.length === 0) return undefined;
  if (list.length === 1) return list[0];
  return {
    onAdmitted: (e) => list.forEach((o) => o.onAdmitted?.(e)),
    onFirstByte: (e, ms) => list.forEach((o) => o.onFirstByte?.(e, ms)),
    onFinished: (e, s, ms) => list.forEach((o) => o.onFinished?.(e, s, ms)),
    onRefused: (r, s) => list.forEach((o) => o.onRefused?.(r, s)),
  };
}

export { NO_SUCCESS_ERROR };
