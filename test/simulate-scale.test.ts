import { describe, expect, it } from 'vitest';
import { withMaxWorkers } from '../src/autoscaler/simulate-cli.js';
import { COMPARE_RATES, defaultWorkloads } from '../src/autoscaler/simulate/compare.js';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import { overlaid, slice, stepPattern } from '../src/autoscaler/simulate/patterns.js';
import { runSimulation } from '../src/autoscaler/simulate/run.js';
import { loadTrace, type TraceRequest } from '../src/autoscaler/simulate/trace.js';
import { CODE_TRACE } from './helpers/trace.js';

/**
 * `simulate --rate K` (issue 22): K time-shifted copies of a trace overlaid, and what the default
 * policy does with ten times the code trace against the Knative-style baseline.
 */

function req(at: number, workload: number): TraceRequest {
  return { at, contextTokens: 0, generatedTokens: workload, workload };
}

describe('overlaid copies (--rate K)', () => {
  const base = Array.from({ length: 600 }, (_, i) => req(i * 0.5 + 0.25, 100 + (i % 7)));

  it('K whole copies: K× the requests and the load, sorted, inside the billed minutes, copy 0 the trace itself', () => {
    const x3 = overlaid(base, 3);
    expect(x3).toHaveLength(3 * base.length);
    const load = (rs: readonly TraceRequest[]) => rs.reduce((s, r) => s + r.workload, 0);
    expect(load(x3)).toBeCloseTo(3 * load(base), 6);
    for (let i = 1; i < x3.length; i++) expect(x3[i]!.at).toBeGreaterThanOrEqual(x3[i - 1]!.at);
    expect(x3[0]!.at).toBe(0);
    // The span stays within the trace's billed minutes (5 min here): copies wrap, they do not extend it.
    expect(x3[x3.length - 1]!.at).toBeLessThan(300);
    // The copies are shifted, not stacked: more distinct arrival times than the trace has.
    expect(new Set(x3.map((r) => r.at.toFixed(6))).size).toBeGreaterThan(base.length);
  });

  it('is deterministic for a seed and differs across seeds; ×1 is the trace', () => {
    expect(overlaid(base, 4)).toEqual(overlaid(base, 4));
    expect(overlaid(base, 4, 1)).not.toEqual(overlaid(base, 4, 2));
    expect(overlaid(base, 1)).toEqual(base);
  });

  it('a fractional K thins: the last copy keeps about frac(K) of its requests', () => {
    const x = overlaid(base, 2.5);
    expect(x.length).toBeGreaterThan(base.length * 2 + base.length * 0.4);
    expect(x.length).toBeLessThan(base.length * 2 + base.length * 0.6);
    const half = overlaid(base, 0.5);
    expect(half.length).toBeGreaterThan(base.length * 0.4);
    expect(half.length).toBeLessThan(base.length * 0.6);
  });

  it('rejects a rate that is not a number > 0', () => {
    expect(() => overlaid(base, 0)).toThrow(/rate/);
    expect(() => overlaid(base, Number.NaN)).toThrow(/rate/);
  });

  it('works for patterns alike', () => {
    const step = stepPattern();
    const x10 = overlaid(step.requests, 10);
    expect(x10).toHaveLength(10 * step.requests.length);
  });

  it('max_workers scales with K unless given; --compare has a ×10 and a ×100 row per trace, max_workers scaled', () => {
    const config = loadSimulationConfig();
    expect(config.endpoint.max_workers).toBe(16);
    expect(withMaxWorkers(config, 10, undefined).endpoint.max_workers).toBe(160);
    expect(withMaxWorkers(config, 2.5, undefined).endpoint.max_workers).toBe(40);
    expect(withMaxWorkers(config, 10, 50).endpoint.max_workers).toBe(50);
    expect(withMaxWorkers(config, 0.5, undefined).endpoint.max_workers).toBe(16);
    expect(COMPARE_RATES).toEqual([10, 100]);
    const groups = defaultWorkloads([{ name: 'code', requests: base }], 1, { maxWorkers: 16 });
    const rows = groups.map((g) => g[0]!);
    const x10 = rows.find((w) => w.name === 'code ×10')!;
    const x100 = rows.find((w) => w.name === 'code ×100')!;
    expect(x10.requests).toHaveLength(10 * base.length);
    expect(x10.params?.max_workers).toBe(160);
    expect(x100.params?.max_workers).toBe(1600);
    expect(defaultWorkloads([{ name: 'code', requests: base }], 1, { rates: [] }).some((g) => g[0]!.name.includes('×'))).toBe(false);
  });
});

describe('the code trace ×10: the default policy against the baseline', () => {
  // The trace's first 20 minutes keep the file quick (the whole hour: docs/autoscaler.md's table).
  it('serves every request, costs less than KPA with fewer over target, and its cost ratio is no worse than at ×1', async () => {
    const config = loadSimulationConfig();
    const requests = slice(loadTrace(CODE_TRACE, { promptShare: config.workload.prompt_share }).requests, 0, 1200);
    const x10 = overlaid(requests, 10);
    const scaled = withMaxWorkers(config, 10, undefined);
    const run = async (reqs: TraceRequest[], policy: 'default' | 'kpa', cfg = scaled) => (await runSimulation({ config: cfg, requests: reqs, policy })).report;
    const ours = await run(x10, 'default');
    const kpa = await run(x10, 'kpa');
    const one = await run(requests, 'default', config);
    console.log(
      `code (first 20 min) ×10: default ${ours.costRatio.vsWholeWorkers}× whole workers, ${(ours.queueTime.overTargetShare * 100).toFixed(2)}% over, p99 ${ours.queueTime.p99} s, timed out ${ours.requests.timedOut}; ` +
        `kpa ${kpa.costRatio.vsWholeWorkers}×, ${(kpa.queueTime.overTargetShare * 100).toFixed(2)}%, p99 ${kpa.queueTime.p99} s; default ×1 ${one.costRatio.vsWholeWorkers}×`,
    );
    expect(ours.trace.requests).toBe(10 * requests.length);
    expect(requests.length).toBeGreaterThan(2500);
    expect(ours.requests.timedOut).toBe(0);
    expect(ours.queueTime.p99).toBeLessThanOrEqual(ours.queueTime.target);
    expect(ours.requests.lost).toBe(0);
    expect(ours.requests.served).toBe(ours.trace.requests);
    expect(ours.cost.dollars).toBeLessThanOrEqual(kpa.cost.dollars);
    expect(ours.queueTime.overTargetShare).toBeLessThanOrEqual(kpa.queueTime.overTargetShare);
    expect(ours.costRatio.vsWholeWorkers).toBeLessThanOrEqual(one.costRatio.vsWholeWorkers);
    // Recruiting keeps up: the fleet grew to several times the ×1 fleet within max_workers.
    expect(ours.workers.maxLive).toBeGreaterThan(3 * one.workers.maxLive);
    expect(ours.workers.maxLive).toBeLessThanOrEqual(160);
  }, 300_000);
});
