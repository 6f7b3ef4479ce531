/**
 * What the engine has learned about each machine type: perf from benchmarks (`max_perf` of
 * the first ready report) and throughput measured while workers were saturated (`cur_perf`
 * per second over an interval `saturatedInterval` accepts). Recruitment ranks types by the learned perf per dollar.
 */

/** Benchmarks and measurements of one machine type (keyed `workergroup/machine_type`). */
export interface TypeKnowledge {
  benchmarks: number;
  benchmarkMean: number;
  measured: number;
  /** Exponential moving average of saturated throughput, load/s; 0 until measured. */
  measuredEwma: number;
  /** The last MEASURED_KEEP measurements, oldest first. */
  recent: number[];
}

/** Measured samples needed before measured throughput corrects the benchmark. */
export const MEASURED_SAMPLES_TO_TRUST = 5;
const EWMA_ALPHA = 0.2;
/** Measurements kept per type for the sustained-throughput quantile. */
export const MEASURED_KEEP = 64;
/** The quantile of recent measurements taken as sustained throughput. */
export const MEASURED_QUANTILE = 0.9;
/** Measured throughput raises a type's estimate by at most this factor over its benchmark. */
export const MAX_UPWARD = 1.1;

/** One report interval of a worker, as the engine saw it (PROTOCOL §4 fields, load units). */
export interface ReportInterval {
  /** Seconds between the two reports. */
  dt: number;
  /** `cur_perf`: load served in the interval. */
  served: number;
  /** `cur_load` of the previous report and of this one: load in flight at each end. */
  loadBefore: number;
  loadAfter: number;
  /** `num_requests_working` at each end. */
  workingBefore: number;
  workingAfter: number;
  /** `rej_load`: load the worker refused in the interval (its own queue was over its limit). */
  rejected: number;
  /** The perf the engine believes the worker has (its type's estimate, else its benchmark); 0 if unknown. */
  believed: number;
}

/**
 * Whether an interval measured the worker's capacity rather than its demand. Busy is not saturated:
 * a continuous-batching model with one request in flight is busy all the time and serves a fraction
 * of what it can. Evidence of saturation the reports carry: the worker refused load (`rej_load`), or
 * at BOTH ends it held at least an interval's worth of work at the believed perf, so it could not
 * have run out of work in between: what it served then is what it can do. A worker with less waiting
 * than that was limited by demand, and its throughput says nothing about its capacity.
 * (Limitation: `cur_load` counts whole requests, so a model whose single requests take longer than
 * the interval (long streams) can hold that much load without a queue; the quantile in `sustained`
 * and the ×0.25 floor of `estimate` bound what such intervals can do.)
 */
export function saturatedInterval(i: ReportInterval): boolean {
  if (!(i.dt >= 1) || !(i.served > 0) || i.workingBefore <= 0 || i.workingAfter <= 0) return false;
  if (i.rejected > 0) return true;
  if (!(i.believed > 0)) return true; // nothing believed yet: nothing a low sample could drag down
  return Math.min(i.loadBefore, i.loadAfter) >= i.believed * i.dt;
}

/** The perf book: learns per type, answers estimates. */
export class PerfBook {
  private types = new Map<string, TypeKnowledge>();
  /**
   * `sustained` per type until its next measurement: it is read on every report and every tick,
   * and sorting the recent samples each time was most of what a ×100 simulation allocated.
   */
  private sustainedCache = new Map<string, number | null>();

  private entry(key: string): TypeKnowledge {
    let k = this.types.get(key);
    if (!k) {
      k = { benchmarks: 0, benchmarkMean: 0, measured: 0, measuredEwma: 0, recent: [] };
      this.types.set(key, k);
    }
    return k;
  }

  /** A benchmark result of a worker of type `key`. Non-positive values are ignored. */
  addBenchmark(key: string, perf: number): void {
    if (!(perf > 0) || !Number.isFinite(perf)) return;
    const k = this.entry(key);
    k.benchmarks++;
    k.benchmarkMean += (perf - k.benchmarkMean) / k.benchmarks;
  }

  /** Throughput (load/s) measured while a worker of type `key` had work waiting the whole time. */
  addMeasured(key: string, throughput: number): void {
    if (!(throughput > 0) || !Number.isFinite(throughput)) return;
    const k = this.entry(key);
    k.measured++;
    k.measuredEwma = k.measured === 1 ? throughput : k.measuredEwma + EWMA_ALPHA * (throughput - k.measuredEwma);
    k.recent.push(throughput);
    if (k.recent.length > MEASURED_KEEP) k.recent.shift();
    this.sustainedCache.delete(key);
  }

  /**
   * Sustained throughput of a type: the MEASURED_QUANTILE of its recent measurements. An interval
   * that began and ended busy may still have idled in between (low samples) or counted a request
   * served over two intervals whole (high samples); the upper quantile is what a saturated worker does.
   */
  sustained(key: string): number | null {
    const cached = this.sustainedCache.get(key);
    if (cached !== undefined) return cached;
    const k = this.types.get(key);
    if (!k || k.recent.length < MEASURED_SAMPLES_TO_TRUST) return null;
    const sorted = Float64Array.from(k.recent).sort();
    const out = sorted[Math.min(sorted.length - 1, Math.floor(MEASURED_QUANTILE * sorted.length))]!;
    this.sustainedCache.set(key, out);
    return out;
  }

  /** What is known of `key`, or undefined. */
  get(key: string): Readonly<TypeKnowledge> | undefined {
    return this.types.get(key);
  }

  /**
   * The perf to plan with for a type: the benchmark mean, scaled toward sustained measured
   * throughput once enough samples exist, null when nothing is known. The correction is bounded to
   * ×0.25…×MAX_UPWARD: measured throughput below the benchmark is real (throttling, a slower model
   * path), while above it it is mostly an artefact of completions landing in one report interval
   * (a request served over two intervals counts whole in the second).
   */
  estimate(key: string): number | null {
    const k = this.types.get(key);
    const sustained = this.sustained(key);
    if (!k || k.benchmarks === 0) return sustained;
    if (sustained === null) return k.benchmarkMean;
    const ratio = Math.min(MAX_UPWARD, Math.max(0.25, sustained / k.benchmarkMean));
    return k.benchmarkMean * ratio;
  }

  /** Everything known, for the admin API and the simulation report. */
  snapshot(): Record<string, Omit<TypeKnowledge, 'recent'> & { sustained: number | null; estimate: number | null }> {
    const out: Record<string, Omit<TypeKnowledge, 'recent'> & { sustained: number | null; estimate: number | null }> = {};
    for (const [key, { recent: _r, ...k }] of this.types) out[key] = { ...k, sustained: this.sustained(key), estimate: this.estimate(key) };
    return out;
  }
}
