import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PolicyName } from '../policies.js';
import type { SimulationConfig } from './config.js';
import { IDLE_SECONDS, IDLE_TIMEOUT, syntheticPatterns, traceVariants, type Workload } from './patterns.js';
import { runSimulation, type SimulationResult } from './run.js';
import type { TraceRequest } from './trace.js';

/**
 * `simulate --compare`: every policy on every workload, one row each, so a policy change is
 * judged on traffic it was not tuned on (variants of the trace, synthetic patterns) and against
 * the baseline at once.
 */

export interface CompareRow {
  workload: string;
  policy: PolicyName;
  requests: number;
  dollars: number;
  vsFluid: number;
  vsWholeWorkers: number;
  /** What the clairvoyant plan meeting the queue target costs, × the whole-workers oracle. */
  foresightVsWholeWorkers: number;
  p50: number;
  p99: number;
  /** Share of requests whose queue time exceeded target_queue_time. */
  overTarget: number;
  lost: number;
  retried: number;
  activations: number;
  /** The idle hour only: seconds with zero active workers, and the wake-up request's queue time. */
  idle?: { zeroActiveSeconds: number; wakeQueueTime: number | null };
  wallSeconds: number;
}

/** The shipped/given traces, each with its variants, then the synthetic patterns. */
export function defaultWorkloads(traces: ReadonlyArray<{ name: string; requests: TraceRequest[] }>): Workload[] {
  return [...traces.flatMap((t) => [{ name: t.name, requests: t.requests }, ...traceVariants(t.name, t.requests)]), ...syntheticPatterns()];
}

/** Seconds of the idle hour's silence (after the inactivity timeout) with no worker ready or starting. */
function zeroActiveSeconds(result: SimulationResult, sampleSeconds: number): number {
  const from = 300 + IDLE_TIMEOUT;
  const to = 300 + IDLE_SECONDS;
  return result.timeline.filter((r) => r.t >= from && r.t < to && r.states.ready + r.states.starting === 0).length * sampleSeconds;
}

export function rowOf(workload: Workload, policy: PolicyName, result: SimulationResult, sampleSeconds: number): CompareRow {
  const r = result.report;
  return {
    workload: workload.name,
    policy,
    requests: r.trace.requests,
    dollars: r.cost.dollars,
    vsFluid: r.costRatio.vsFluid,
    vsWholeWorkers: r.costRatio.vsWholeWorkers,
    foresightVsWholeWorkers: r.costRatio.latencyOracleVsWholeWorkers,
    p50: r.queueTime.p50,
    p99: r.queueTime.p99,
    overTarget: r.queueTime.overTargetShare,
    lost: r.requests.lost,
    retried: r.requests.retried,
    activations: r.workers.activations,
    ...(workload.name === 'idle-hour' ? { idle: { zeroActiveSeconds: zeroActiveSeconds(result, sampleSeconds), wakeQueueTime: r.queueTime.last } } : {}),
    wallSeconds: r.wallSeconds,
  };
}

export async function runCompare(opts: {
  config: SimulationConfig;
  workloads: readonly Workload[];
  policies: readonly PolicyName[];
  panic?: boolean;
}): Promise<CompareRow[]> {
  const rows: CompareRow[] = [];
  for (const w of opts.workloads) {
    for (const policy of opts.policies) {
      const result = await runSimulation({ config: opts.config, requests: w.requests, params: w.params, policy, panic: opts.panic });
      rows.push(rowOf(w, policy, result, opts.config.sample_seconds));
    }
  }
  return rows;
}

/** The table as Markdown (also written to DIR/compare.md, with the rows in DIR/compare.json). */
export function compareTable(rows: readonly CompareRow[], outDir: string): { markdown: string; path: string } {
  const lines = [
    '| workload | policy | requests | $ | × fluid oracle | × whole-workers oracle | foresight at p99 target (× whole) | queue p50 s | queue p99 s | over target | lost | retried | activations | note |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const note = r.idle ? `zero active ${r.idle.zeroActiveSeconds} s, wake-up queue ${r.idle.wakeQueueTime ?? '-'} s` : '';
    lines.push(
      `| ${r.workload} | ${r.policy} | ${r.requests} | ${r.dollars.toFixed(3)} | ${r.vsFluid} | ${r.vsWholeWorkers} | ${r.foresightVsWholeWorkers} | ${r.p50} | ${r.p99} | ${(r.overTarget * 100).toFixed(1)}% | ${r.lost} | ${r.retried} | ${r.activations} | ${note} |`,
    );
  }
  const markdown = lines.join('\n') + '\n';
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(rows, null, 2) + '\n');
  const path = join(outDir, 'compare.md');
  writeFileSync(path, markdown);
  return { markdown, path };
}
