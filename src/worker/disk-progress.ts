/**
 * Disk usage while the model loads: the GB added to a filesystem since the worker started, the
 * `additional_disk_usage` deltas PyWorker reports (PROTOCOL §4), and from them a loading progress
 * (used since start / model size) when the model's size is known.
 *
 * Units follow PyWorker: "GB" is 2^30 bytes (psutil's used / 2**30). Used bytes are
 * (blocks - bfree) * bsize from statfs, as psutil computes them.
 */
import { promises as fsp } from 'node:fs';

export interface DiskProgressOptions {
  /** Filesystem to measure (any path on it); default '/'. */
  path?: string;
  /** The model's size in GB (MODEL_SIZE_GB); without it (or when <= 0) progress is null. */
  modelSizeGb?: number;
}

/** Disk growth since start, read on demand (each call is one statfs). */
export interface DiskProgress {
  /** A model size is known, so progress is a number (0 at the baseline, before any sample). */
  readonly sized: boolean;
  /** GB used since start (never negative) and progress in [0, 1] (null without a model size). */
  sample(): Promise<{ usedSinceStartGb: number; progress: number | null }>;
  /**
   * GB added since the previous call (the first call: since start). Never negative: a drop in
   * usage reports 0, and growth back up to the previous high is not reported again, so the sum
   * of all deltas is the peak growth since start.
   */
  takeDeltaGb(): Promise<number>;
}

const BYTES_PER_GB = 2 ** 30;

async function usedBytes(path: string): Promise<number> {
  const s = await fsp.statfs(path);
  return (s.blocks - s.bfree) * s.bsize;
}

/**
 * Measure the filesystem holding `path` now (the baseline) and return a reader of growth since.
 * Rejects when the path cannot be statfs'd (missing, or a platform without statfs).
 */
export async function createDiskProgress(opts: DiskProgressOptions): Promise<DiskProgress> {
  const path = opts.path ?? '/';
  const modelSizeGb = opts.modelSizeGb !== undefined && Number.isFinite(opts.modelSizeGb) && opts.modelSizeGb > 0 ? opts.modelSizeGb : null;
  const baseline = await usedBytes(path);
  // High-water mark of what takeDeltaGb has reported, so deltas are never negative nor repeated.
  let reportedUpTo = baseline;

  return {
    sized: modelSizeGb !== null,
    async sample() {
      const usedSinceStartGb = Math.max(0, (await usedBytes(path)) - baseline) / BYTES_PER_GB;
      const progress = modelSizeGb === null ? null : clamp01(usedSinceStartGb / modelSizeGb);
      return { usedSinceStartGb, progress };
    },
    async takeDeltaGb() {
      const used = await usedBytes(path);
      const delta = Math.max(0, used - reportedUpTo);
      reportedUpTo = Math.max(reportedUpTo, used);
      return delta / BYTES_PER_GB;
    },
  };
}

function clamp01(x: number): number {
  if (!Number.isFinite(x) || x < 0) return 0;
  return Math.min(x, 1);
}

/**
 * A text bar for log lines: `formatProgressBar(0.5)` is `"[#####.....]  50%"`. Progress is
 * clamped to [0, 1] (NaN counts as 0); the bar and the percentage round down, so 100% means done.
 */
export function formatProgressBar(progress: number, width = 10): string {
  const p = clamp01(progress);
  const w = Number.isFinite(width) && width >= 1 ? Math.floor(width) : 10;
  const filled = Math.floor(p * w + 1e-9);
  const pct = Math.floor(p * 100 + 1e-9);
  return `[${'#'.repeat(filled)}${'.'.repeat(w - filled)}] ${String(pct).padStart(3)}%`;
}
