/**
 * The simulator at scale (issue 22): one simulated hour of the shipped code trace overlaid `--rate`
 * times (default 100: about 880k requests, max_workers 1600) through the real engine, default policy.
 * Measures wall time, CPU time, the main thread's time in garbage collection and peak RSS of this
 * process; targets ≤ 60 s (CPU and wall) and ≤ 1.5 GB. Prints one JSON line (the suite's `simulate`
 * section parses it).
 *
 *   npm run build && node build/benchmarks/simulate-scale.js [--rate 100] [--policy default|kpa]
 *
 * Run it on a quiet machine: wall time on shared cores measures the neighbours too (CPU time does not).
 */
import { resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { loadSimulationConfig } from '#nodeworker/autoscaler/simulate/config.js';
import { overlaid } from '#nodeworker/autoscaler/simulate/patterns.js';
import { runSimulation } from '#nodeworker/autoscaler/simulate/run.js';
import { loadTrace } from '#nodeworker/autoscaler/simulate/trace.js';
import type { PolicyName } from '#nodeworker/autoscaler/policies.js';
import { benchArgs } from './lib/args.js';

export const SIMULATE_TARGETS = { seconds: 60, rssMb: 1536 } as const;

export interface SimulateScaleResult {
  rate: number;
  policy: PolicyName;
  requests: number;
  wallSeconds: number;
  cpuSeconds: number;
  /** Main-thread pauses for garbage collection (PerformanceObserver `gc` entries), part of the wall time. */
  gcSeconds: number;
  maxRssMb: number;
  timedOut: number;
  queueP99: number;
  overTargetShare: number;
  vsWholeWorkers: number;
  maxLive: number;
}

/** The repository's shipped trace, from build/benchmarks/ or benchmarks/. */
function tracePath(): string {
  return resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'data', 'azure-llm-2023-code.csv');
}

export async function runSimulateScale(rate: number, policy: PolicyName = 'default'): Promise<SimulateScaleResult> {
  let gcMs = 0;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  gc.observe({ entryTypes: ['gc'] });
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const base = loadSimulationConfig();
  const config = { ...base, endpoint: { ...base.endpoint, max_workers: Math.ceil(base.endpoint.max_workers * Math.max(1, rate)) } };
  const trace = loadTrace(tracePath(), { promptShare: config.workload.prompt_share });
  const requests = overlaid(trace.requests, rate);
  const { report } = await runSimulation({ config, requests, policy });
  const cpu = process.cpuUsage(cpu0);
  // The last entries are delivered asynchronously.
  await new Promise((r) => setImmediate(r));
  gc.disconnect();
  return {
    rate,
    policy,
    requests: report.trace.requests,
    wallSeconds: +((performance.now() - t0) / 1000).toFixed(2),
    cpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2),
    gcSeconds: +(gcMs / 1000).toFixed(2),
    // ru_maxrss is in KiB on Linux.
    maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    timedOut: report.requests.timedOut,
    queueP99: report.queueTime.p99,
    overTargetShare: report.queueTime.overTargetShare,
    vsWholeWorkers: report.costRatio.vsWholeWorkers,
    maxLive: report.workers.maxLive,
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs('simulate-scale', '[--rate K] [--policy default|kpa]', { rate: 'string', policy: 'string' });
  const rate = Number(args.rate ?? 100);
  const policy = (args.policy ?? 'default') as PolicyName;
  if (!(rate > 0)) {
    process.stderr.write(`simulate-scale: --rate must be > 0, got ${String(args.rate)}\n`);
    process.exit(2);
  }
  const r = await runSimulateScale(rate, policy);
  process.stderr.write(
    `simulate ×${r.rate} (${r.requests} requests, ${r.policy}): ${r.wallSeconds} s wall, ${r.cpuSeconds} s CPU (${r.gcSeconds} s GC), peak RSS ${r.maxRssMb} MB ` +
      `(targets ≤ ${SIMULATE_TARGETS.seconds} s, ≤ ${SIMULATE_TARGETS.rssMb} MB); timed out ${r.timedOut}, queue p99 ${r.queueP99} s, ` +
      `${(r.overTargetShare * 100).toFixed(1)}% over target, ${r.vsWholeWorkers}× whole-workers oracle, max live ${r.maxLive}\n`,
  );
  process.stdout.write(JSON.stringify(r) + '\n');
}
