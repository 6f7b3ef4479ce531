import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import { describePoint, type FrontierPoint, paretoFrontier, prepareTrace, reactiveFrontier, runReactive } from '../src/autoscaler/simulate/frontier.js';
import type { OracleMachine } from '../src/autoscaler/simulate/oracle.js';
import { loadTrace, type TraceRequest } from '../src/autoscaler/simulate/trace.js';
import { runSimulateCli } from '../src/autoscaler/simulate-cli.js';
import { CODE_TRACE } from './helpers/trace.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const RTX: OracleMachine = { name: 'rtx4090', perf: 800, dollarsPerHour: 0.4 };
const SMALL_GRID = { win: [2, 5], horizon: [1, 10], hold: [5, 30], fore: [0, 1] };

function req(at: number, workload: number): TraceRequest {
  return { at, contextTokens: 0, generatedTokens: workload, workload };
}

/** `count` requests of `workload` arriving together at `at`. */
function burst(at: number, count: number, workload: number): TraceRequest[] {
  return Array.from({ length: count }, () => req(at, workload));
}

describe('reactive frontier: the model', () => {
  it('a constant rate below one worker: floor 1 queues nothing and costs exactly the floor', () => {
    // 300 load every 0.5 s = 600 load/s against 800 load/s; 10 minutes.
    const requests = Array.from({ length: 1200 }, (_, i) => req(i * 0.5, 300));
    const r = reactiveFrontier(requests, { machines: [RTX], floors: [1], grid: SMALL_GRID, alwaysOn: [1, 2] });
    expect(r.minutes).toBe(10);
    // The whole-workers oracle: ceil(0.75) = 1 worker each minute.
    expect(r.oracle.wholeWorkerMinutes).toBe(10);
    const floorOne = r.points.filter((p) => p.floor === 1);
    expect(floorOne.length).toBe(16 + 1);
    for (const p of floorOne) {
      expect(p.p99).toBeLessThanOrEqual(0.1);
      expect(p.late).toBe(0);
      expect(p.activations).toBe(0);
      expect(p.workerSeconds).toBeCloseTo(600, 6);
      expect(p.vsWholeWorkers).toBe(1);
    }
    expect(r.cheapestMeetingTarget?.workerSeconds).toBeCloseTo(600, 6);
    expect(r.bestWithinBudget?.p99).toBeLessThanOrEqual(0.1);
  });

  it('a step burst: the always-on late share matches the hand computation', () => {
    // 60 requests of 700 load at t = 5 s. With k always-on workers of 800 load/s the pooled queue
    // gets k × 80 load per 0.1 s step; request j (0-based) first gets capacity floor(700 j / (80 k))
    // steps after the burst, so it waits that many tenths of a second.
    // k = 3: j = 34 waits 9.9 s (700·34/240 = 99.2 steps), j = 35 waits 10.2 s (102.1 steps):
    //        j = 35..59 are late, 25 of 60.
    // k = 5: 700 j / 400 = 1.75 j steps > 100 from j = 58 (101.5 steps, 10.1 s): 2 of 60.
    const requests = burst(5, 60, 700);
    const r = reactiveFrontier(requests, { machines: [RTX], floors: [1], grid: SMALL_GRID, alwaysOn: [1, 2, 3, 4, 5, 6, 7, 8] });
    const on = (k: number) => r.points.find((p) => p.kind === 'always-on' && p.floor === k)!;
    expect(on(3).late).toBe(25);
    expect(on(3).lateShare).toBeCloseTo(25 / 60, 4);
    expect(on(3).max).toBeCloseTo(Math.floor((700 * 59) / 240) / 10, 6);
    expect(on(5).late).toBe(2);
    expect(on(5).lateShare).toBeCloseTo(2 / 60, 4);
    // One worker: the j-th request waits floor(700 j / 80) / 10 s; late from j = 12 (105 steps).
    expect(on(1).late).toBe(60 - 12);
    // Always-on cost is k workers over the billed minute, whatever the queue.
    for (let k = 1; k <= 8; k++) expect(on(k).workerSeconds).toBeCloseTo(60 * k, 6);
    // More workers never raise the p99 nor the late share.
    for (let k = 2; k <= 8; k++) {
      expect(on(k).p99).toBeLessThanOrEqual(on(k - 1).p99);
      expect(on(k).late).toBeLessThanOrEqual(on(k - 1).late);
    }
  });

  it('the same burst on separate workers: each takes a request of 0.875 s, three at a time', () => {
    // Three workers take requests in rounds: round r = floor(j / 3) starts after 700 r load per
    // worker, in step floor(700 r / 80) = floor(8.75 r): round 11 waits 9.6 s, round 12 10.5 s, so
    // j = 36..59 are late, 24 of 60 (one fewer than the pooled server).
    const requests = burst(5, 60, 700);
    const r = reactiveFrontier(requests, { machines: [RTX], floors: [1], grid: SMALL_GRID, alwaysOn: [1, 2, 3, 4, 5, 6, 7, 8], serving: 'workers' });
    expect(r.serving).toBe('workers');
    const on = (k: number) => r.points.find((p) => p.kind === 'always-on' && p.floor === k)!;
    expect(on(3).late).toBe(24);
    expect(on(3).max).toBeCloseTo(Math.floor(8.75 * 19) / 10, 6);
    for (let k = 2; k <= 8; k++) expect(on(k).p99).toBeLessThanOrEqual(on(k - 1).p99);
    for (let k = 1; k <= 8; k++) expect(on(k).workerSeconds).toBeCloseTo(60 * k, 6);
  });

  it('a reactive controller sees the burst at once but serves it only a start time later', () => {
    const requests = burst(5, 60, 700);
    const trace = prepareTrace(requests);
    const model = { perf: 800, startSeconds: 15, targetQueueTime: 10, billedSteps: 600 };
    const run = runReactive(trace, model, { win: 2, horizon: 1, hold: 5, fore: 0 }, 1, 16);
    // Detected in the step it arrives (t = 5.0, a whole second): the 15 workers started then are ready
    // at 20 s. Until then the one worker serves alone, 80 load per step: request j waits
    // floor(700 j / 80) / 10 s, j = 0..17 (700·17/80 = 148.75 < 150 steps).
    expect(run.activations).toBeGreaterThanOrEqual(15);
    expect(run.maxWorkers).toBe(16);
    const waits = Array.from(run.waits);
    for (let j = 0; j <= 17; j++) expect(waits[j]).toBeCloseTo(Math.floor((700 * j) / 80) / 10, 6);
    // Then 16 × 800 load/s drain the rest (60 × 700 − 15 s × 800 = 30,000 load in about 2.3 s),
    // shrinking only to what drains the backlog within a second: everything starts within ~1 s of that.
    const drain = (60 * 700 - 15 * 800) / (16 * 800);
    expect(Math.max(...waits)).toBeGreaterThan(15);
    expect(Math.max(...waits)).toBeLessThanOrEqual(15 + drain + 1);
  });

  it('scale to zero drains requests of zero work too (no endless wait)', () => {
    const requests = [req(1, 0), req(100.5, 0), req(101, 50)];
    const trace = prepareTrace(requests);
    for (const serving of ['pooled', 'workers'] as const) {
      const model = { perf: 800, startSeconds: 15, targetQueueTime: 10, billedSteps: 1200, serving };
      const run = runReactive(trace, model, { win: 2, horizon: 5, hold: 5, fore: 0 }, 0, 4);
      expect(run.activations).toBeGreaterThanOrEqual(1);
      for (const w of run.waits) expect(w).toBeLessThanOrEqual(16);
    }
  });

  it('the Pareto frontier is cheapest first with strictly falling p99', () => {
    const mk = (workerSeconds: number, p99: number): FrontierPoint => ({
      kind: 'always-on',
      floor: 1,
      cap: 1,
      workerSeconds,
      dollars: 0,
      vsWholeWorkers: 0,
      vsFluid: 0,
      p50: 0,
      p99,
      max: p99,
      late: 0,
      lateShare: 0,
      activations: 0,
      maxWorkers: 1,
    });
    const f = paretoFrontier([mk(3, 5), mk(1, 20), mk(2, 25), mk(2, 10), mk(4, 5)]);
    expect(f.map((p) => [p.workerSeconds, p.p99])).toEqual([
      [1, 20],
      [2, 10],
      [3, 5],
    ]);
  });

  it('rejects nonsense options with the field named', () => {
    expect(() => reactiveFrontier([req(0, 1)], { machines: [RTX], dt: 0.3 })).toThrow(/dt/);
    expect(() => reactiveFrontier([req(0, 1)], { machines: [RTX], floors: [-1] })).toThrow(/floors/);
    expect(() => reactiveFrontier([req(0, 1)], { machines: [RTX], alwaysOn: [0] })).toThrow(/alwaysOn/);
    expect(() => reactiveFrontier([req(0, 1)], { machines: [RTX], grid: { ...SMALL_GRID, horizon: [0] } })).toThrow(/horizon/);
    expect(() => reactiveFrontier([req(2, 1), req(1, 1)], { machines: [RTX] })).toThrow(/sorted/);
    expect(() => reactiveFrontier([req(0, 1)], { machines: [RTX], serving: 'fast' as never })).toThrow(/serving/);
  });
});

describe('reactive frontier: the shipped trace', () => {
  it.each(['pooled', 'workers'] as const)('no causal controller of the family meets p99 ≤ 10 s at ≤ 1.5× the whole-workers oracle (%s)', (serving) => {
    const config = loadSimulationConfig();
    const { requests } = loadTrace(CODE_TRACE, { promptShare: config.workload.prompt_share });
    const machines = [
      { name: 'rtx4090', perf: 800, dollarsPerHour: 0.4 },
      { name: 'a100', perf: 1600, dollarsPerHour: 1.1 },
      { name: 'h100', perf: 3000, dollarsPerHour: 2.0 },
    ];
    const started = performance.now();
    const r = reactiveFrontier(requests, { machines, startSeconds: 15, targetQueueTime: 10, cap: 16, serving });
    const seconds = (performance.now() - started) / 1000;
    const c = r.cheapestMeetingTarget;
    const b = r.bestWithinBudget;
    console.log(
      `reactive frontier on the code trace (${serving}): ${r.points.length} points in ${seconds.toFixed(2)} s; ` +
        `cheapest p99 ≤ 10 s: ${c ? `${c.vsWholeWorkers}× (p99 ${c.p99} s, ${describePoint(c)})` : 'none'}; ` +
        `best p99 at ≤ 1.5×: ${b ? `${b.p99} s at ${b.vsWholeWorkers}× (${(b.lateShare * 100).toFixed(1)}% over 10 s, ${describePoint(b)})` : 'none'}`,
    );
    expect(r.machine).toBe('rtx4090');
    expect(r.oracle.wholeWorkerMinutes).toBe(69);
    // The property: meeting the target costs more than the goal's budget (or is never met).
    if (c) expect(c.vsWholeWorkers).toBeGreaterThan(1.5);
    for (const p of r.points) if (p.vsWholeWorkers <= 1.5) expect(p.p99).toBeGreaterThan(10);
    expect(b).not.toBeNull();
    expect(b!.p99).toBeGreaterThan(10);
    // Always-on: k workers cost k × 58 minutes, and more of them never raise p99.
    const on = r.points.filter((p) => p.kind === 'always-on');
    expect(on.map((p) => p.floor)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    on.forEach((p, i) => {
      expect(p.workerSeconds).toBeCloseTo(p.floor * 58 * 60, 3);
      if (i > 0) expect(p.p99).toBeLessThanOrEqual(on[i - 1]!.p99);
    });
    // The frontier's own shape.
    for (let i = 1; i < r.frontier.length; i++) {
      expect(r.frontier[i]!.workerSeconds).toBeGreaterThanOrEqual(r.frontier[i - 1]!.workerSeconds);
      expect(r.frontier[i]!.p99).toBeLessThan(r.frontier[i - 1]!.p99);
    }
  });
});

describe('simulate --frontier (CLI)', () => {
  it('writes frontier.json and frontier.md; exclusive with --compare and --pattern', async () => {
    const out = mkdtempSync(join(tmpdir(), 'simulate-frontier-'));
    dirs.push(out);
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await runSimulateCli(['--frontier', '--trace', CODE_TRACE, '--out', out])).toBe(0);
      const printed = stdout.mock.calls.map((c) => String(c[0])).join('');
      expect(printed).toContain('cheapest p99 ≤ 10 s');
      expect(printed).toContain('best p99 at ≤ 1.5×');
      const json = JSON.parse(readFileSync(join(out, 'frontier.json'), 'utf8'));
      expect(json.points.length).toBeGreaterThan(100);
      expect(json.frontier.length).toBeGreaterThan(1);
      expect(existsSync(join(out, 'frontier.md'))).toBe(true);

      stderr.mockClear();
      expect(await runSimulateCli(['--frontier', '--compare'])).toBe(2);
      const message = stderr.mock.calls.map((c) => String(c[0])).join('');
      expect(message).toContain('--frontier');
      expect(message).toContain('--compare');
      stderr.mockClear();
      expect(await runSimulateCli(['--frontier', '--pattern', 'step-x4'])).toBe(2);
      expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toMatch(/--frontier.*--pattern/);
      expect(await runSimulateCli(['--frontier', '--trace', CODE_TRACE, '--trace', CODE_TRACE])).toBe(2);
      expect(await runSimulateCli(['--frontier', '--serving', 'fifo'])).toBe(2);
      expect(await runSimulateCli(['--trace', CODE_TRACE, '--serving', 'workers'])).toBe(2);
    } finally {
      stdout.mockRestore();
      stderr.mockRestore();
    }
  });
});
