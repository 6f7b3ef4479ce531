/**
 * Arrived load per second of one endpoint: the signal the policy scales on. The engine adds
 * the `cost` of every new request at /route/; the policy reads windowed rates from a
 * read-only view.
 */

/** A read-only view of the history: `loads[i]` is the load that arrived in [start + i·bucketMs, start + (i+1)·bucketMs). */
export interface LoadHistoryView {
  readonly start: number;
  readonly bucketMs: number;
  readonly loads: readonly number[];
  /** `squares[i]`: the sum of the squared costs of the requests in bucket i (absent: unknown). */
  readonly squares?: readonly number[];
  /** When recording began (ms): windows never reach before it, so a young history is not diluted by zeros. */
  readonly since: number;
}

/**
 * Mean arrived load per second over the `windowS` seconds before `now`. Buckets that straddle the
 * window edge count in proportion; a window longer than the history is cut to the history.
 */
export function windowRate(h: LoadHistoryView, now: number, windowS: number): number {
  if (!(windowS > 0)) return 0;
  const from = Math.max(now - windowS * 1000, h.since);
  const span = now - from;
  if (span <= 0) {
    return 0;
  }
  let sum = 0;
  const first = Math.max(0, Math.floor((from - h.start) / h.bucketMs));
  const last = Math.min(h.loads.length - 1, Math.floor((now - h.start) / h.bucketMs));
  for (let i = first; i <= last; i++) {
    const b0 = h.start + i * h.bucketMs;
    const b1 = b0 + h.bucketMs;
    const load = h.loads[i]!;
    if (load === 0) continue;
    // Arrivals sit at or before `now`, so the bucket holding `now` counts whole.
    if (b0 >= from || i === last) sum += load;
    else sum += (load * (b1 - from)) / h.bucketMs;
  }
  // Short spans (a young history) are measured over at least one second, so one request is not a huge rate.
  return sum / Math.max(span / 1000, Math.min(windowS, 1));
}

/**
 * Load arrived in the last `windowS` buckets up to `now` (the one holding the instant before `now`
 * and those before it, never before the history began), with the sum of the squared request costs:
 * the compound-Poisson variance estimate of that load is `squares`. `seconds` is the span read.
 */
export function windowSums(h: LoadHistoryView, now: number, windowS: number): { load: number; squares: number; seconds: number } {
  // Buckets after the last arrival are not stored: they are empty.
  const last = Math.floor((now - 1 - h.start) / h.bucketMs);
  const buckets = Math.max(1, Math.round((windowS * 1000) / h.bucketMs));
  const first = Math.max(0, last - buckets + 1, Math.floor((h.since - h.start) / h.bucketMs));
  let load = 0;
  let squares = 0;
  for (let i = first; i <= Math.min(last, h.loads.length - 1); i++) {
    load += h.loads[i]!;
    squares += h.squares?.[i] ?? 0;
  }
  return { load, squares, seconds: (Math.max(1, last - first + 1) * h.bucketMs) / 1000 };
}

/** The mutable history the engine keeps per endpoint; it forgets buckets older than `keepS`. */
export class LoadHistory implements LoadHistoryView {
  start: number;
  readonly bucketMs: number;
  loads: number[] = [];
  squares: number[] = [];
  readonly since: number;

  constructor(
    now: number,
    private keepS: number,
    bucketMs = 1000,
  ) {
    this.bucketMs = bucketMs;
    this.start = Math.floor(now / bucketMs) * bucketMs;
    this.since = now;
  }

  /** Record `load` arriving at `at` (ms). */
  add(at: number, load: number): void {
    const i = Math.floor((at - this.start) / this.bucketMs);
    if (i < 0) return;
    while (this.loads.length <= i) {
      this.loads.push(0);
      this.squares.push(0);
    }
    this.loads[i]! += load;
    this.squares[i]! += load * load;
    this.trim(at);
  }

  /** Change how much history is kept (when `cold_window` changes). */
  setKeep(keepS: number): void {
    this.keepS = keepS;
  }

  /** Drop buckets older than the keep horizon; called on every add and by the engine's tick. */
  trim(now: number): void {
    const keepBuckets = Math.ceil((this.keepS * 1000) / this.bucketMs) + 2;
    const cur = Math.floor((now - this.start) / this.bucketMs);
    const drop = cur + 1 - keepBuckets;
    // Splice in chunks so trimming stays amortised O(1) per bucket.
    if (drop > keepBuckets / 4 && drop > 0) {
      const n = Math.min(drop, this.loads.length);
      this.loads.splice(0, n);
      this.squares.splice(0, n);
      this.start += drop * this.bucketMs;
      if (n < drop) {
        this.loads.length = 0;
        this.squares.length = 0;
      }
    }
  }
}
