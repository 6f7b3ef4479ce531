import { statSync } from 'node:fs';
import type { Dispatcher } from 'undici';
import type { Logger } from '../common/log.js';
import { fetchPublicKey, type AuthChecker } from './auth.js';
import { benchmarkProgressPrinter, runBenchmark } from './benchmark.js';
import type { WorkerDefinition } from './config.js';
import { startHealthcheck, type Healthcheck } from './healthcheck.js';
import type { Ledger } from './ledger.js';
import type { Lifecycle, WorkerState } from './lifecycle.js';
import { watchLog, type LogWatch } from './logwatch.js';
import type { WorkerConfig } from './worker-config.js';

/**
 * The readiness sequence (PROTOCOL §5): the model says it is loaded (its log, a lifecycle hook, or
 * at once when neither is configured) → benchmark → first good healthcheck (or a fixed wait) →
 * the engine's public key → ready. Any model-side failure on the way errors the worker, and the
 * first one stays reported; a key failure clears when the key arrives.
 */

/**
 * A model log line containing this is an error whatever the handler's patterns say: on_start.sh
 * appends it to MODEL_LOG when the model server process exits, so the worker reports the failure
 * on its own cadence instead of reporting "loading" forever.
 */
export const SUPERVISOR_ERROR_MARKER = '[nodeworker on_start] ERROR:';

export interface ReadinessTimings {
  /** Wait after the benchmark when no health path is set. */
  noHealthWaitMs: number;
  /** Deadline for the first good healthcheck. */
  healthDeadlineMs: number;
  /** Healthcheck period. */
  healthIntervalMs: number;
  /** Public key fetch: first back-off step. */
  pubkeyBaseDelayMs: number;
  /** While loading: how often to log what the worker waits for (a missing MODEL_LOG, a silent health path). */
  waitingLogMs?: number;
}

export interface ReadinessDeps {
  definition: WorkerDefinition;
  config: WorkerConfig;
  ledger: Ledger;
  lifecycle: Lifecycle;
  auth: AuthChecker;
  /** Bound to the model server: the benchmark's requests go through it. */
  benchmarkModel: Dispatcher;
  logger: Logger;
  timings: ReadinessTimings;
  /** Aborted when the worker closes: every wait of the sequence ends. */
  signal: AbortSignal;
  /** A terminal to draw the benchmark's progress on (the log lines stay the record); none: no drawing. */
  terminal?: { write(s: string): unknown } | null;
}

export interface Readiness {
  /** Report a model-side failure (also what a lifecycle hook's `fail` calls). */
  fail(message: string): void;
  /** Stop watching and checking; runs the lifecycle hook's `stop`. */
  close(): Promise<void>;
}

export function startReadiness(d: ReadinessDeps): Readiness {
  const { config, ledger, lifecycle, logger, signal } = d;
  const t = d.timings;
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

  /**
   * A health check failing for a reason of this process (out of file descriptors, resets), not of
   * the model: reported while it lasts, cleared as soon as the check passes again.
   */
  let transientError: string | null = null;
  let stateBeforeTransient: WorkerState = 'ready';
  const failTransient = (message: string) => {
    if (lifecycle.state === 'draining' || modelError !== null) return;
    if (transientError === null) stateBeforeTransient = lifecycle.state;
    transientError = message;
    ledger.setErrorMsg(message);
    if (lifecycle.state !== 'errored') lifecycle.to('errored', message);
  };
  const recoverTransient = () => {
    if (transientError === null || modelError !== null || lifecycle.state !== 'errored') return;
    if (ledger.errorMsg === transientError) ledger.setErrorMsg('');
    transientError = null;
    lifecycle.to(stateBeforeTransient, 'model health check passes again');
  };

  const keyReady = fetchKeyInBackground();

  // The engine's public key: without it nothing verifies and the worker is not ready. Unlike a
  // model failure, a key failure clears when the key arrives.
  function fetchKeyInBackground(): Promise<boolean> {
    if (config.auth.unsecured) return Promise.resolve(true);
    const addr = config.report.addrs[0];
    let keyError: string | null = null;
    if (addr === undefined) {
      keyError = 'REPORT_ADDR is empty: no engine to get the public key from (set UNSECURED=true for local runs)';
      ledger.setErrorMsg(keyError);
      lifecycle.to('errored', keyError);
      return Promise.resolve(false);
    }
    return (async () => {
      for (;;) {
        try {
          const pem = await fetchPublicKey(addr, { logger, signal, baseDelayMs: t.pubkeyBaseDelayMs });
          d.auth.setPublicKey(pem);
          logger.info({ addr }, 'engine public key loaded');
          if (keyError !== null && modelError === null) {
            if (ledger.errorMsg === keyError) ledger.setErrorMsg('');
            // Back to the phase the worker is really in; onModelLoaded moves on to ready.
            if (lifecycle.state === 'errored') lifecycle.to(benchmarkStarted ? 'benchmarking' : 'loading', 'engine public key loaded');
          }
          return true;
        } catch (err) {
          if (signal.aborted) return false;
          keyError = (err as Error).message;
          if (modelError === null) {
            ledger.setErrorMsg(keyError);
            lifecycle.to('errored', keyError);
          }
          // Keep trying (slowly): the worker recovers when the engine's key endpoint comes back.
        }
      }
    })();
  }

  /** Benchmark; perf, or null after reporting why it failed. */
  const benchmark = async (): Promise<number | null> => {
    const printer = d.terminal ? benchmarkProgressPrinter(d.terminal, { tty: true }) : null;
    try {
      const result = await runBenchmark({
        handler: d.definition.benchmarkHandler,
        model: d.benchmarkModel,
        workspaceDir: config.workspaceDir,
        logger,
        signal,
        onProgress: printer?.onProgress,
        onRound: (r, total) =>
          logger.info(
            { round: r.round, total, ok: r.ok, requests: r.requests, throughput: r.throughput, seconds: r.seconds },
            `benchmark round ${r.round}/${total}: ${r.throughput.toFixed(1)} load/s`,
          ),
      });
      if (result.error) {
        fail(result.error);
        return null;
      }
      return result.perf;
    } catch (err) {
      if (!signal.aborted) fail(`benchmark failed: ${(err as Error).message}`);
      return null;
    } finally {
      printer?.stop();
    }
  };

  // Without a model log or hook the health path is all the worker knows of the model: it waits for
  // it before benchmarking, and a model that fails and comes back (health failing, then passing)
  // is taken back: benchmarked again and ready, instead of errored for good.
  const logFile = config.model.logFile;
  const spec = d.definition.spec;
  const healthOnly = !spec.lifecycle && !logFile && config.model.healthPath !== null;
  let benchmarkRunning = false;
  let recoverAfterBenchmark = false;
  const recoverModel = () => {
    if (!healthOnly || modelError === null || lifecycle.state === 'draining' || signal.aborted) return;
    // Never two benchmarks at once: take the model back when the running one has ended.
    if (benchmarkRunning) {
      recoverAfterBenchmark = true;
      return;
    }
    logger.info({ cleared: modelError }, 'model health path answers again: benchmarking it again');
    if (ledger.errorMsg === modelError) ledger.setErrorMsg('');
    modelError = null;
    benchmarkStarted = false;
    lifecycle.to('loading', 'model health path answers again');
    void onModelLoaded('model health path answers again');
  };

  const startHealth = (): Healthcheck => {
    health ??= startHealthcheck({
      url: config.model.url + config.model.healthPath,
      intervalMs: t.healthIntervalMs,
      onFailure: (message, { transient }) => (transient ? failTransient(message) : fail(message)),
      onRecovery: () => {
        recoverTransient();
        recoverModel();
      },
    });
    return health;
  };

  /** Resolves true once the model answers its health path (or the fixed wait passed); false when it failed or closed. */
  const healthy = async (): Promise<boolean> => {
    const path = config.model.healthPath;
    if (path === null) return waitOrAbort(t.noHealthWaitMs, signal);
    const health = startHealth();
    const ok = await health.waitForFirstSuccess(t.healthDeadlineMs, signal).catch(() => false);
    if (!ok && !signal.aborted) fail(`model health check did not succeed within ${Math.round(t.healthDeadlineMs / 1000)} s: GET ${config.model.url}${path}`);
    return ok;
  };

  const onModelLoaded = async (why: string) => {
    // A model that already failed is not benchmarked: its error stands (see modelError).
    if (benchmarkStarted || modelError !== null || signal.aborted) return;
    benchmarkStarted = true;
    lifecycle.to('benchmarking', why);
    benchmarkRunning = true;
    recoverAfterBenchmark = false;
    const perf = await benchmark().finally(() => {
      benchmarkRunning = false;
    });
    if (perf === null) {
      // Health-only: the health check goes on, so a model that went away during the benchmark
      // and comes back is benchmarked again (recoverModel).
      if (healthOnly && recoverAfterBenchmark) recoverModel();
      return;
    }
    ledger.setMaxPerf(perf);
    if (!(await healthy())) return;
    if (!(await keyReady)) return;
    if (modelError !== null || signal.aborted) return;
    lifecycle.to('ready', `model loaded, perf ${perf.toFixed(1)} load/s`);
  };

  // Readiness source: a lifecycle hook, the model's log, its health path, or (none) at once.
  let logWatch: LogWatch | null = null;
  lifecycle.to('loading', spec.lifecycle ? 'starting the model through the lifecycle hook' : logFile ? `watching ${logFile}` : 'no model log configured');
  if (spec.lifecycle) {
    const hook = spec.lifecycle;
    Promise.resolve()
      .then(() =>
        hook.start({ ready: () => void onModelLoaded('lifecycle hook: model ready'), fail, info: (m) => logger.info({ source: 'model' }, m), signal }),
      )
      .catch((err: Error) => fail(`lifecycle hook failed: ${err.message}`));
  } else if (logFile) {
    const actions = { ...config.model.logActions, onError: [...config.model.logActions.onError, SUPERVISOR_ERROR_MARKER] };
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
  } else if (healthOnly) {
    const url = config.model.url + config.model.healthPath;
    logger.info({ url: redactedUrl(url) }, 'no MODEL_LOG and no lifecycle hook: waiting for the model health path to answer 200 before benchmarking');
    const check = startHealth();
    void check.waitForFirstSuccess(MAX_TIMER_MS, signal).then((ok) => {
      if (ok) void onModelLoaded(`model health path answers 200: GET ${redactedUrl(url)}`);
    });
  } else {
    logger.warn('no MODEL_LOG, no lifecycle hook and no health path: assuming the model is loaded now');
    void onModelLoaded('no model log configured');
  }

  // While loading, say every so often what the worker is waiting for: a silent "loading" for
  // ever (a MODEL_LOG path that never appears, a model that never answers) looks like a hang.
  const waitingSince = Date.now();
  const waitingLog = setInterval(() => {
    if (lifecycle.state !== 'loading') return;
    const seconds = Math.round((Date.now() - waitingSince) / 1000);
    if (logFile && !spec.lifecycle) {
      let size: number | null = null;
      try {
        size = statSync(logFile).size;
      } catch {
        // missing (or unreadable): said below
      }
      const onLoad = config.model.logActions.onLoad.map((p) => JSON.stringify(p)).join(' or ');
      logger.info(
        { path: logFile, exists: size !== null, seconds },
        size === null
          ? `still loading after ${seconds} s: waiting for the model log ${logFile}, which does not exist yet (MODEL_LOG; the model server writes it), for a line containing ${onLoad}`
          : `still loading after ${seconds} s: waiting in ${logFile} (${size} bytes) for a line containing ${onLoad}`,
      );
    } else if (healthOnly) {
      logger.info(
        { url: redactedUrl(config.model.url + config.model.healthPath), seconds },
        `still loading after ${seconds} s: waiting for GET ${redactedUrl(config.model.url + config.model.healthPath)} to answer 200 (no MODEL_LOG)`,
      );
    } else logger.info({ seconds }, `still loading after ${seconds} s: waiting for the lifecycle hook to call ready()`);
  }, t.waitingLogMs ?? 30_000);
  waitingLog.unref();

  return {
    fail,
    async close() {
      clearInterval(waitingLog);
      (health as Healthcheck | null)?.stop();
      await logWatch?.close();
      await spec.lifecycle?.stop?.();
    },
  };
}

/** The longest delay a Node timer takes (about 24.8 days): "no deadline" for a wait. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A URL for the log: any user:password part removed. */
function redactedUrl(raw: string): string {
  try {
    const u = new URL(raw);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return raw;
  }
}

/** True after `ms`, false when `signal` aborts first. */
function waitOrAbort(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
