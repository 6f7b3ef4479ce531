import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PolicyName } from '../policies.js';
import type { SimulationConfig } from './config.js';
import { IDLE_SECONDS, IDLE_TIMEOUT, overlaid, syntheticPatterns, traceVariants, type Workload } from './patterns.js';
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
  /** Draws averaged in this row (a synthetic pattern drawn with that many seeds; 1 for a trace). */
  draws: number;
  /** This engine's policy only: draws where it cost less than the baseline at an equal or better p99. */
  beatsBaseline?: number;
}

/** The rates `--compare` runs each given trace at besides ×1 (`simulate --rate`). */
export const COMPARE_RATES: readonly number[] = [10, 100];

/** A trace at `rate` times its traffic (`simulate --rate`), with max_workers scaled alike. */
export function ratedWorkload(name: string, requests: readonly TraceRequest[], rate: number, maxWorkers: number): Workload {
  return { name: `${name} ×${rate}`, requests: overlaid(requests, rate), params: { max_workers: Math.ceil(maxWorkers * rate) } };
}

/**
 * The shipped/given traces, each with its variants and its ×10 and ×100 overlays, then the
 * synthetic patterns: one group per workload, holding its draws (a trace is one draw; a pattern
 * `draws` draws with other seeds). `maxWorkers` is the config's, scaled for the overlays.
 */
export function defaultWorkloads(
  traces: ReadonlyArray<{ name: string; requests: TraceRequest[] }>,
  draws = 1,
  opts: { rates?: readonly number[]; maxWorkers?: number } = {},
): Workload[][] {
  const patternDraws = Array.from({ length: Math.max(1, draws) }, (_, k) => syntheticPatterns(k));
  const rates = opts.rates ?? COMPARE_RATES;
  const maxWorkers = opts.maxWorkers ?? 16;
  return [
    ...traces.flatMap((t) =>
      [{ name: t.name, requests: t.requests }, ...traceVariants(t.name, t.requests), ...rates.map((k) => ratedWorkload(t.name, t.requests, k, maxWorkers))].map(
        (w) => [w],
      ),
    ),
    ...patternDraws[0]!.map((_, i) => patternDraws.map((d) => d[i]!)),
  ];
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
    draws: 1,
  };
}

/** The mean of one policy's rows over the draws of a workload (lost and retried summed, wall time summed). */
export function meanRow(rows: readonly CompareRow[]): CompareRow {
  const first = rows[0]!;
  if (rows.length === 1) return first;
  const mean = (f: (r: CompareRow) => number, d = 4) => Math.round((rows.reduce((s, r) => s + f(r), 0) / rows.length) * 10 ** d) / 10 ** d;
  const sum = (f: (r: CompareRow) => number) => rows.reduce((s, r) => s + f(r), 0);
  const idle = rows.every((r) => r.idle)
    ? {
        zeroActiveSeconds: mean((r) => r.idle!.zeroActiveSeconds, 1),
        wakeQueueTime: rows.every((r) => r.idle!.wakeQueueTime !== null) ? mean((r) => r.idle!.wakeQueueTime!, 3) : null,
      }
    : undefined;
  return {
    workload: first.workload,
    policy: first.policy,
    requests: mean((r) => r.requests, 0),
    dollars: mean((r) => r.dollars),
    vsFluid: mean((r) => r.vsFluid, 2),
    vsWholeWorkers: mean((r) => r.vsWholeWorkers, 2),
    foresightVsWholeWorkers: mean((r) => r.foresightVsWholeWorkers, 2),
    p50: mean((r) => r.p50, 3),
    p99: mean((r) => r.p99, 3),
    overTarget: mean((r) => r.overTarget),
    lost: sum((r) => r.lost),
    retried: sum((r) => r.retried),
    activations: mean((r) => r.activations, 1),
    ...(idle ? { idle } : {}),
    wallSeconds: sum((r) => r.wallSeconds),
    draws: rows.length,
  };
}

/** True when `a` cost less than `b` at an equal or better queue p99: what the default must do against the baseline. */
export function beats(a: CompareRow, b: CompareRow): boolean {
  return a.dollars < b.dollars && a.p99 <= b.p99;
}

/**
 * Every policy on every draw of every workload; one row per workload and policy (the mean over its
 * draws). The default policy's row counts the draws where it beat the baseline (`kpa`).
 */
export async function runCompare(opts: {
  config: SimulationConfig;
  workloads: ReadonlyArray<readonly Workload[]>;
  policies: readonly PolicyName[];
  panic?: boolean;
  /** Called after each run (progress). */
  onRun?: (done: number, total: number, label: string) => void;
}): Promise<CompareRow[]> {
  const rows: CompareRow[] = [];
  const total = opts.workloads.reduce((n, g) => n + g.length, 0) * opts.policies.length;
  let done = 0;
  for (const group of opts.workloads) {
    const perPolicy = new Map<PolicyName, CompareRow[]>(opts.policies.map((p) => [p, []]));
    for (const w of group) {
      for (const policy of opts.policies) {
        const result = await runSimulation({ config: opts.config, requests: w.requests, params: w.params, policy, panic: opts.panic });
        perPolicy.get(policy)!.push(rowOf(w, policy, result, opts.config.sample_seconds));
        opts.onRun?.(++done, total, `${w.name} ${policy}`);
      }
    }
    const ours = perPolicy.get('default');
    const base = perPolicy.get('kpa');
    for (const [policy, draws] of perPolicy) {
      const row = meanRow(draws);
      if (policy === 'default' && ours && base) row.beatsBaseline = ours.filter((r, i) => beats(r, base[i]!)).length;
      rows.push(row);
    }
  }
  return rows;
}

/** The table as Markdown (also written to DIR/compare.md, with the rows in DIR/compare.json). */
export function compareTable(rows: readonly CompareRow[], outDir: string): { markdown: string; path: string } {
  const lines = [
    '| workload | policy | draws | requests | $ | × fluid oracle | × whole-workers oracle | foresight at p99 target (× whole) | queue p50 s | queue p99 s | over target | lost | retried | activations | cheaper than kpa at ≤ p99 | note |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const note = r.idle ? `zero active ${r.idle.zeroActiveSeconds} s, wake-up queue ${r.idle.wakeQueueTime ?? '-'} s` : '';
    const base = r.policy === 'default' ? rows.find((x) => x.workload === r.workload && x.policy === 'kpa') : undefined;
    const verdict = base ? `${beats(r, base) ? 'yes' : 'no'}${r.draws > 1 ? ` (${r.beatsBaseline ?? 0} of ${r.draws} draws)` : ''}` : '';
    lines.push(
      `| ${r.workload} | ${r.policy} | ${r.draws} | ${r.requests} | ${r.dollars.toFixed(3)} | ${r.vsFluid} | ${r.vsWholeWorkers} | ${r.foresightVsWholeWorkers} | ${r.p50} | ${r.p99} | ${(r.overTarget * 100).toFixed(1)}% | ${r.lost} | ${r.retried} | ${r.activations} | ${verdict} | ${note} |`,
    );
  }
  const markdown = lines.join('\n') + '\n';
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(rows, null, 2) + '\n');
  const path = join(outDir, 'compare.md');
  writeFileSync(path, markdown);
  return { markdown, path };
}
