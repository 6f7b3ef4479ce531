import type { Server } from 'node:http';
import { Hono } from 'hono';
import { Pool } from 'undici';
import { createLogger, type Logger } from '../common/log.js';
import { errorBody } from '../common/protocol.js';
import { FifoGate } from './admission.js';
import { AuthChecker } from './auth.js';
import { NO_SUCCESS_ERROR } from './benchmark.js';
import type { WorkerDefinition } from './config.js';
import { createDiskProgress, type DiskProgress } from './disk-progress.js';
import type { WorkerEnv } from './env.js';
import { Ledger } from './ledger.js';
import { Lifecycle } from './lifecycle.js';
import { ModelClient } from './model-client.js';
import { createHandlerRoute, type RequestObserver, type SessionAccess } from './proxy.js';
import { startReadiness, SUPERVISOR_ERROR_MARKER } from './readiness.js';
import { Reporter } from './reporter.js';
import { addStatusRoute, startLoadingProgress } from './status-route.js';
import { closeServer, createListener, listen, type RouteFn } from './server.js';
import { readUnreported, UnreportedFile } from './unreported.js';
import { resolveWorkerConfig, type WorkerConfig } from './worker-config.js';

/**
 * The composition root: builds every part of a worker and wires them together. Logic lives in the
 * parts; this file only decides who talks to whom and in which order things start and stop.
 */
export interface WorkerOptions {
  definition: WorkerDefinition;
  /** The resolved configuration (resolveWorkerConfig); built from `env` when not given. */
  config?: WorkerConfig;
  /** The parsed environment; needed only without `config`. */
  env?: WorkerEnv;
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
  /**
   * Keep ended request_idxs in the ledger's delete queues even without REPORT_ADDR (an audit of
   * the accounting: tests, the invariant checker). Off by default: with no engine to report to,
   * nothing is kept (issue 21 row 17).
   */
  auditDeletes?: boolean;
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
  /**
   * Clients must send all request headers within this, the whole request within requestTimeoutMs
   * (default: WORKER_HEADERS_TIMEOUT 10 s, WORKER_REQUEST_TIMEOUT 60 s; a value here wins).
   */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** While loading: how often the worker logs what it waits for (30 s). */
  waitingLogMs: number;
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
  waitingLogMs: 30_000,
};

export { SUPERVISOR_ERROR_MARKER };

/** What an optional part receives and may contribute. */
export interface WorkerContext {
  definition: WorkerDefinition;
  config: WorkerConfig;
  /** The parsed variables (the same as `config.env`), for a part that reads one of its own. */
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
  config: WorkerConfig;
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
  const { definition } = opts;
  if (!opts.config && !opts.env) throw new TypeError('startWorker needs `config` (resolveWorkerConfig) or `env` (parseWorkerEnv)');
  const config = opts.config ?? resolveWorkerConfig(definition, opts.env!);
  const env = config.env;
  const t: WorkerTimings = { ...DEFAULT_TIMINGS, ...opts.timings };
  const logger = opts.logger ?? createLogger('nodeworker', { level: config.log.level, destination: config.log.file ?? undefined });
  const reporting = config.report.addrs.length > 0;
  const ledger = new Ledger({ keepDeletes: reporting || opts.auditDeletes === true });
  const unreported = reporting && config.unreportedFile ? openUnreported(ledger, config.unreportedFile, logger) : null;
  const lifecycle = new Lifecycle();
  const auth = new AuthChecker({ ...config.auth, ownUrl: config.report.publicUrl });
  const gate = new FifoGate();
  const modelUrl = config.model.url;
  const modelTimeoutMs = config.model.timeoutMs;
  const pool = new Pool(modelUrl, { connections: 512, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: modelTimeoutMs, bodyTimeout: modelTimeoutMs });
  // The request path's own client (plain http; cheaper per request than undici, docs/performance.md);
  // the pool stays for the benchmark, and serves the request path for an https model.
  const model =
    modelUrl.startsWith('http:') && opts.requestPath?.modelClient !== false
      ? new ModelClient(modelUrl, { headersTimeoutMs: modelTimeoutMs, bodyTimeoutMs: modelTimeoutMs, answerTimeoutMs: config.model.answerTimeoutMs })
      : undefined;
  const ac = new AbortController();
  const closers: Array<() => Promise<void> | void> = [];

  lifecycle.on('transition', (tr) => logger.info({ from: tr.from, to: tr.to, reason: tr.reason }, `state ${tr.from} → ${tr.to}`));

  let disk: DiskProgress | null = null;
  try {
    disk = await createDiskProgress({ path: config.workspaceDir, modelSizeGb: config.model.sizeGb ?? undefined });
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'disk usage cannot be measured; loading progress and additional_disk_usage stay 0');
  }
  const progress = startLoadingProgress({ disk, lifecycle, logger, everyMs: t.progressLogMs });

  const reporter = new Reporter({
    ...config.report,
    ledger,
    lifecycle,
    logger,
    takeDiskDeltaGb: disk ? () => disk!.takeDeltaGb() : undefined,
    tickMs: t.reportTickMs,
    idleMs: t.reportIdleMs,
    retryDelayMs: t.reportRetryDelayMs,
  });

  const app = new Hono();
  const ctx: WorkerContext = { definition, config, env, ledger, lifecycle, auth, gate, logger, app, reporter, loadingProgress: () => progress.last() };

  addStatusRoute(app, { lifecycle, ledger, auth, config, progress: () => progress.last() });

  let sessions: SessionAccess | undefined;
  const observers: RequestObserver[] = [];
  const internalRoutes = new Map<string, RouteFn>();
  let internalApp: Hono | undefined;
  for (const ext of opts.extensions ?? []) {
    const out = ext.setup(ctx);
    if (out.sessions) sessions = out.sessions;
    if (out.observer) observers.push(out.observer);
    for (const [path, fn] of out.internalRoutes ?? []) internalRoutes.set(path, fn);
    if (out.internalApp) internalApp = out.internalApp;
    if (out.close) closers.push(out.close);
  }
  const observer = combineObservers(observers);

  const routes = new Map<string, RouteFn>();
  for (const h of definition.handlers) {
    routes.set(
      h.route,
      createHandlerRoute(
        { ledger, auth, lifecycle, pool, model, gate, logger, sessions, observer, maxBodyBytes: config.listen.maxBodyBytes, modelTimeoutMs },
        h,
      ),
    );
  }
  app.notFound((c) => c.json(errorBody(`no route ${c.req.method} ${c.req.path}`, 'path'), 404));
  app.onError((err, c) => {
    logger.error({ err: err.message, path: c.req.path }, 'unhandled error in a route');
    return c.json(errorBody('internal error'), 500);
  });

  const { host } = config.listen;
  const tls = config.listen.tls ?? undefined;
  // A failed listen (port taken, unreadable cert) must leave nothing running: the CLI then reports
  // the failure, and an in-process caller gets a clean rejection.
  const abandon = async (err: unknown, servers: Server[]): Promise<never> => {
    progress.stop();
    unreported?.close();
    await Promise.all(servers.map((srv) => closeServer(srv, 0)));
    for (const c of closers)
      await Promise.resolve()
        .then(c)
        .catch(() => undefined);
    await pool.destroy().catch(() => undefined);
    await model?.close();
    throw err;
  };
  let main: { server: Server; port: number };
  try {
    main = await listen(createListener(routes, app), {
      host,
      port: config.listen.port,
      tls,
      headersTimeoutMs: t.headersTimeoutMs ?? config.listen.headersTimeoutMs,
      requestTimeoutMs: t.requestTimeoutMs ?? config.listen.requestTimeoutMs,
      fastLane: opts.requestPath?.fastLane,
      maxConnections: config.listen.maxConnections,
    });
  } catch (err) {
    return abandon(err, []);
  }
  let internal: { server: Server; port: number } | null = null;
  if (internalApp || internalRoutes.size > 0) {
    const iapp = internalApp ?? new Hono();
    iapp.notFound((c) => c.json(errorBody(`the internal listener serves only /session/end, not ${c.req.path}`, 'path'), 404));
    try {
      internal = await listen(createListener(internalRoutes, iapp), {
        host,
        port: config.listen.internalPort,
        headersTimeoutMs: t.headersTimeoutMs ?? config.listen.headersTimeoutMs,
        requestTimeoutMs: t.requestTimeoutMs ?? config.listen.requestTimeoutMs,
      });
    } catch (err) {
      return abandon(err, [main.server]);
    }
  }
  const scheme = tls ? 'https' : 'http';
  const url = `${scheme}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${main.port}`;
  logger.info({ url, internal_port: internal?.port ?? null, model: modelUrl, handlers: definition.handlers.map((h) => h.route) }, 'worker listening');
  if (config.report.addrs.length === 0 && config.auth.unsecured) {
    logger.warn('REPORT_ADDR is not set: nothing will be reported to an engine (no worker_status, no delete_requests); fine for a local run');
  }
  reporter.start();

  const readiness = startReadiness({
    definition,
    config,
    ledger,
    lifecycle,
    auth,
    benchmarkModel: pool,
    logger,
    timings: t,
    signal: ac.signal,
    // On a terminal, the benchmark draws its progress as well (the log lines stay the record).
    terminal: process.stderr.isTTY === true ? process.stderr : null,
  });

  let closed = false;
  const shutdown = async (drainMs: number | null) => {
    if (closed) return;
    closed = true;
    lifecycle.to('draining', drainMs === null ? 'closing' : 'signal received');
    if (drainMs !== null) {
      const drained = await ledger.waitIdle(drainMs);
      if (!drained) logger.warn({ inflight: ledger.inflight }, 'drain timeout: closing with requests in flight');
    }
    ac.abort();
    progress.stop();
    await readiness.close();
    if (drainMs !== null) await reporter.flush();
    reporter.stop();
    unreported?.close();
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
    config,
    ledger,
    lifecycle,
    auth,
    reporter,
    logger,
    drain: (timeoutMs = config.drainTimeoutMs) => shutdown(timeoutMs),
    close: () => shutdown(null),
  };
}

/**
 * Take over what a previous run in this workspace left unreported (queued for the next delete
 * posts) and keep this run's ids in the file from now on (unreported.ts). A workspace that cannot
 * hold the file costs durability, not the worker: it runs on from memory and says so.
 */
function openUnreported(ledger: Ledger, path: string, logger: Logger): UnreportedFile | null {
  try {
    const left = readUnreported(path);
    ledger.carryOver(left.succeeded, left.failed);
    if (left.succeeded.length + left.failed.length > 0 || left.skipped > 0)
      logger.warn(
        { succeeded: left.succeeded.length, failed: left.failed.length, dropped: left.dropped, skipped_lines: left.skipped, file: path },
        'requests a previous run did not report to the engine: reporting them now (those in flight then as failed)',
      );
    const file = new UnreportedFile(path, {
      *working() {
        for (const e of ledger.workingEntries()) yield e.requestIdx;
      },
      succeeded: () => ledger.deleteSucceeded.peek(Number.POSITIVE_INFINITY),
      failed: () => ledger.deleteFailed.peek(Number.POSITIVE_INFINITY),
    });
    file.onFailure = (err) =>
      logger.warn({ file: path, err: err.message }, 'cannot write the unreported-requests file: a kill -9 now loses unreported ids (the worker runs on)');
    ledger.journal = file;
    return file;
  } catch (err) {
    logger.warn({ file: path, err: (err as Error).message }, 'cannot keep unreported requests on disk (read-only workspace?): kept in memory only');
    return null;
  }
}

function combineObservers(list: RequestObserver[]): RequestObserver | undefined {
  if (list.length === 0) return undefined;
  if (list.length === 1) return list[0];
  return {
    onAdmitted: (e) => {
      for (const o of list) o.onAdmitted?.(e);
    },
    onFirstByte: (e, ms) => {
      for (const o of list) o.onFirstByte?.(e, ms);
    },
    onFinished: (e, s, ms) => {
      for (const o of list) o.onFinished?.(e, s, ms);
    },
    onRefused: (r, s) => {
      for (const o of list) o.onRefused?.(r, s);
    },
  };
}

export { NO_SUCCESS_ERROR };
