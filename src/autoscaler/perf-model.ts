/**
 * What the engine has learned about each machine type: perf from benchmarks (`max_perf` of
 * the first ready report) and throughput measured while workers were saturated (`cur_perf`
 * per second between two busy reports). Recruitment ranks types by the learned perf per dollar.
 */

/** Benchmarks and measurements of one machine type (keyed `workergroup/machine_type`). */
export interface TypeKnowledge {
  benchmarks: number;
  benchmarkMean: number;
  measured: number;
  /** Exponential moving average of saturated throughput, load/s; 0 until measured. */
  measuredEwma: number;
}

/** Measured samples needed before measured throughput corrects the benchmark. */
export const MEASURED_SAMPLES_TO_TRUST = 5;
const EWMA_ALPHA = 0.2;

/** The perf book: learns per type, answers estimates. */
export class PerfBook {
  private types = new Map<string, TypeKnowledge>();

  private entry(key: string): TypeKnowledge {
    let k = this.types.get(key);
    if (!k) {
      k = { benchmarks: 0, benchmarkMean: 0, measured: 0, measuredEwma: 0 };
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
  }

  /** What is known of `key`, or undefined. */
  get(key: string): Readonly<TypeKnowledge> | undefined {
    return this.types.get(key);
  }

  /**
   * The perf to plan with for a type: the benchmark mean, scaled toward measured throughput
   * once enough saturated samples exist (bounded to ×0.25…×2 so one odd window cannot swing it);
   * null when nothing is known.
   */
  estimate(key: string): number | null {
    const k = this.types.get(key);
    if (!k || k.benchmarks === 0) return k && k.measured >= MEASURED_SAMPLES_TO_TRUST ? k.measuredEwma : null;
    if (k.measured < MEASURED_SAMPLES_TO_TRUST) return k.benchmarkMean;
    const ratio = Math.min(2, Math.max(0.25, k.measuredEwma / k.benchmarkMean));
    return k.benchmarkMean * ratio;
  }

  /** Everything known, for the admin API and the simulation report. */
  snapshot(): Record<string, TypeKnowledge & { estimate: number | null }> {
    const out: Record<string, TypeKnowledge & { estimate: number | null }> = {};
    for (const [key, k] of this.types) out[key] = { ...k, estimate: this.estimate(key) };
    return out;
  }
}
