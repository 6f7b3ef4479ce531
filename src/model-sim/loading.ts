import { closeSync, openSync, writeSync } from 'node:fs';
import type { LogContext, LogScript } from './flavors/types.js';

/**
 * The loading phase of a model server, on a timeline of `loadMs`:
 * boot lines at 0; downloading with progress lines every 10% until 50%; loading
 * weights until 85%; warm-up at 90%; ready at 100%. When a download file is given it
 * really grows to its size over the download phase, so disk usage tracks progress.
 */
export interface LoadingPlan {
  loadMs: number;
  script: LogScript;
  ctx: LogContext;
  log(lines: readonly string[]): void;
  /** Called at the end, before the ready lines are written (so the server answers when they appear). */
  onReady(): void;
  /** File to grow to `download.bytes` during the download phase (truncated first). */
  download?: { path: string; bytes: number };
}

/** A running loading phase. */
export interface Loading {
  /** Stop: no more lines, no more bytes. */
  cancel(): void;
}

interface Step {
  at: number;
  run(): void;
}

const DOWNLOAD_END = 0.5;
const WEIGHTS_START = 0.5;
const WEIGHTS_END = 0.85;
const WARMUP_AT = 0.9;
/** Bytes per write while growing the download file. */
const CHUNK = 1 << 20;

/** Start the loading phase now. */
export function startLoading(plan: LoadingPlan): Loading {
  const { loadMs, script, ctx } = plan;
  const steps: Step[] = [];
  const at = (fraction: number, run: () => void) => steps.push({ at: fraction * loadMs, run });

  let fd: number | undefined;
  let written = 0;
  let chunk: Buffer | undefined;
  const growTo = (fraction: number): void => {
    const download = plan.download;
    if (!download || fd === undefined) return;
    const target = Math.round(download.bytes * fraction);
    chunk ??= Buffer.alloc(Math.min(CHUNK, Math.max(1, download.bytes)), 0x5a);
    while (written < target) {
      const n = Math.min(chunk.length, target - written);
      writeSync(fd, chunk, 0, n);
      written += n;
    }
    if (fraction >= 1) {
      closeSync(fd);
      fd = undefined;
    }
  };

  at(0, () => {
    if (plan.download) fd = openSync(plan.download.path, 'w');
    plan.log(script.boot(ctx));
  });
  const downloadMs = loadMs * DOWNLOAD_END;
  if (plan.download) {
    // The file grows in up to 50 steps, no closer than 50 ms apart.
    const fileSteps = Math.max(10, Math.min(50, Math.floor(downloadMs / 50)));
    for (let k = 0; k <= fileSteps; k++) at((k / fileSteps) * DOWNLOAD_END, () => growTo(k / fileSteps));
  }
  for (let k = 0; k <= 10; k++) {
    const f = k / 10;
    at(f * DOWNLOAD_END, () => {
      growTo(f);
      plan.log(script.download(ctx, f, Math.round(ctx.downloadBytes * f), (downloadMs * (1 - f)) / 1000));
    });
  }
  at(DOWNLOAD_END, () => plan.log(script.downloaded(ctx)));
  for (let k = 0; k <= 4; k++) {
    at(WEIGHTS_START + ((WEIGHTS_END - WEIGHTS_START) * k) / 4, () => plan.log(script.weights(ctx, k / 4)));
  }
  at(WARMUP_AT, () => plan.log(script.warmup(ctx)));
  at(1, () => {
    plan.onReady();
    plan.log(script.ready(ctx));
  });
  // Stable: steps at the same instant keep their order above.
  steps.sort((a, b) => a.at - b.at);

  const t0 = performance.now();
  let next = 0;
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  let cancelled = false;
  const run = (): void => {
    timer = undefined;
    immediate = undefined;
    if (cancelled) return;
    const elapsed = performance.now() - t0;
    while (next < steps.length && steps[next]!.at <= elapsed) {
      const step = steps[next++]!;
      try {
        step.run();
      } catch (err) {
        // A full disk or a bad path must not kill the simulator: report and stop growing.
        process.stderr.write(`model-sim: loading step failed: ${err instanceof Error ? err.message : String(err)}\n`);
        if (fd !== undefined) closeSync(fd);
        fd = undefined;
      }
    }
    if (next < steps.length) timer = setTimeout(run, Math.max(1, steps[next]!.at - elapsed));
  };
  // After the current turn, so a CLI prints its "listening" line before the first log line.
  immediate = setImmediate(run);

  return {
    cancel() {
      cancelled = true;
      if (timer) clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
