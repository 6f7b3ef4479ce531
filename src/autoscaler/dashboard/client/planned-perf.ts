import { fmt } from './dom.js';
import type { MachineSummary } from './frames.js';

/**
 * What a machine type's planned perf is, in words, for the machine types table. The planned
 * figure is a per-type estimate, not a worker's perf: without saying so, "perf planned 980" beside
 * workers benchmarked at 1,042 reads like a bug (issue 25 item 9). Kept free of the DOM so it can
 * be tested in Node.
 */
export function plannedPerfNote(m: Pick<MachineSummary, 'perf' | 'perf_basis' | 'expected_perf'>): string {
  const b = m.perf_basis;
  const workers = (n: number) => `${n} worker${n === 1 ? '' : 's'}`;
  const samples = (n: number) => `${n} sample${n === 1 ? '' : 's'}`;
  switch (b.source) {
    case 'benchmarks':
      return `mean benchmark of ${workers(b.benchmarks)}`;
    case 'benchmarks+measured': {
      const ratio = m.perf !== null && b.benchmark_mean ? m.perf / b.benchmark_mean : null;
      return `mean benchmark ${fmt(b.benchmark_mean, 0)} of ${workers(b.benchmarks)} × ${fmt(ratio, 2)}, from the throughput measured while saturated (${fmt(b.sustained, 0)}, ${samples(b.measured)})`;
    }
    case 'measured':
      return `throughput measured while saturated (${samples(b.measured)}); no benchmark yet`;
    case 'expected_perf':
      return 'expected_perf from the config; no worker benchmarked yet';
    default:
      return 'unknown until a worker of this type benchmarks';
  }
}
