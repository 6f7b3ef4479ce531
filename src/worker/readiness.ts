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

  /** Resolves true once the model answers its health path (or the fixed wait passed); false when it failed or closed. */
  const healthy = async (): Promise<boolean> => {
    const path = config.model.healthPath;
    if (path === null) return waitOrAbort(t.noHealthWaitMs, signal);
    health = startHealthcheck({
      url: config.model.url + path,
      intervalMs: t.healthIntervalMs,
      onFailure: (message, { transient }) => (transient ? failTransient(message) : fail(message)),
      onRecovery: recoverTransient,
    });
    const ok = await health.waitForFirstSuccess(t.healthDeadlineMs, signal).catch(() => false);
    if (!ok && !signal.aborted) fail(`model health check did not succeed within ${Math.round(t.healthDeadlineMs / 1000)} s: GET ${config.model.url}${path}`);
    return ok;
  };

  const onModelLoaded = async (why: string) => {
    // A model that already failed is not benchmarked: its error stands (see modelError).
    if (benchmarkStarted || modelError !== null || signal.aborted) return;
    benchmarkStarted = true;
    lifecycle.to('benchmarking', why);
    const perf = await benchmark();
    if (perf === null) return;
    ledger.setMaxPerf(perf);
    if (!(await healthy())) return;
    if (!(await keyReady)) return;
    if (modelError !== null || signal.aborted) return;
    lifecycle.to('ready', `model loaded, perf ${perf.toFixed(1)} load/s`);
  };

  // Readiness source: a lifecycle hook, the model's log, or (neither) at once.
  const spec = d.definition.spec;
  const logFile = config.model.logFile;
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
  } else {
    logger.warn('no MODEL_LOG and no lifecycle hook: assuming the model is loaded now');
    void onModelLoaded('no model log configured');
  }

  return {
    fail,
    async close() {
      (health as Healthcheck | null)?.stop();
      await logWatch?.close();
      await spec.lifecycle?.stop?.();
    },
  };
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
