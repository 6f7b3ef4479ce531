import type { Hono } from 'hono';
import type { AuthChecker } from './auth.js';
import { formatProgressBar, type DiskProgress } from './disk-progress.js';
import type { Ledger } from './ledger.js';
import type { Lifecycle } from './lifecycle.js';
import type { Logger } from '../common/log.js';
import type { WorkerConfig } from './worker-config.js';

/**
 * What the worker says about itself: `GET /healthz` (state, perf, load, auth, version; 503 once
 * errored) and the loading progress it logs while the model loads (disk used since start / model
 * size). Reads the lifecycle and the ledger; keeps nothing of its own but the last progress sample.
 */
export interface LoadingProgress {
  /** The last sampled progress in [0, 1], or null (no model size, or not measurable). */
  last(): number | null;
  stop(): void;
}

/** Sample the disk every `everyMs` and log the progress until the model is loaded. */
export function startLoadingProgress(o: { disk: DiskProgress | null; lifecycle: Lifecycle; logger: Logger; everyMs: number }): LoadingProgress {
  const disk = o.disk;
  if (!disk) return { last: () => null, stop: () => undefined };
  // The baseline was just measured: nothing loaded since, so 0 until the first sample lands (a
  // /healthz answered before that statfs returns says 0, not "unknown").
  let last: number | null = disk.sized ? 0 : null;
  const sample = async () => {
    const s = await disk.sample().catch(() => null);
    if (!s) return;
    last = s.progress;
    if (s.progress !== null && (o.lifecycle.state === 'starting' || o.lifecycle.state === 'loading')) {
      o.logger.info({ progress: s.progress, used_gb: s.usedSinceStartGb }, `model loading ${formatProgressBar(s.progress)}`);
    }
  };
  const timer = setInterval(() => void sample(), o.everyMs);
  timer.unref();
  void sample();
  return { last: () => last, stop: () => clearInterval(timer) };
}

export function addStatusRoute(
  app: Hono,
  s: { lifecycle: Lifecycle; ledger: Ledger; auth: AuthChecker; config: WorkerConfig; progress: () => number | null },
): void {
  const { lifecycle, ledger, auth, config } = s;
  app.get('/healthz', (c) =>
    c.json(
      {
        state: lifecycle.state,
        reason: lifecycle.reason,
        perf: ledger.maxPerf,
        loadtime: lifecycle.loadtime,
        error_msg: ledger.errorMsg,
        load: { cur_load: ledger.curLoad, working: ledger.workingCount, inflight: ledger.inflight, expected_queue_time: ledger.expectedQueueTime() },
        loading_progress: s.progress(),
        auth: config.auth.unsecured ? 'unsecured' : auth.hasKey ? 'key loaded' : 'waiting for the engine key',
        version: config.report.version,
      },
      lifecycle.state === 'errored' ? 503 : 200,
    ),
  );
}
