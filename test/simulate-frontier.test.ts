import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import {
  DEFAULT_FRONTIER_FLOORS,
  describePoint,
  type FrontierPoint,
  paretoFrontier,
  prepareTrace,
  reactiveFrontier,
  runReactive,
  scaledSizes,
} from '../src/autoscaler/simulate/frontier.js';
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

  it("headroom sizes for a multiple of the rate; the memory of peaks holds a burst's fleet for `hold` s", () => {
    // 400 load/s steady (half a worker) for 10 min, with a 5 s burst of 6,400 load/s at t = 100.
    const requests: TraceRequest[] = [];
    for (let t = 0; t < 600; t += 0.5) requests.push(req(t, 200));
    for (let t = 100; t < 105; t += 0.05) requests.push(req(t, 320));
    requests.sort((a, b) => a.at - b.at);
    const trace = prepareTrace(requests);
    const model = { perf: 800, startSeconds: 15, targetQueueTime: 10, billedSteps: 6000 };
    const base = { win: 2, horizon: 5, fore: 0 };
    const plain = runReactive(trace, model, { ...base, hold: 10, headroom: 1 }, 0, 32);
    const doubled = runReactive(trace, model, { ...base, hold: 10, headroom: 2 }, 0, 32);
    // Steady 400 load/s: one worker at headroom 1 (ceil 0.5), still one at 2 (ceil 1.0); the burst's
    // 6,800 load/s asks ceil(8.5) = 9 workers at 1, ceil(17) = 17 at 2.
    expect(plain.maxWorkers).toBeGreaterThanOrEqual(9);
    expect(doubled.maxWorkers).toBeGreaterThan(plain.maxWorkers);
    expect(doubled.workerSeconds).toBeGreaterThan(plain.workerSeconds);
    // A longer memory keeps the burst's workers longer: it costs more and never waits longer.
    const long = runReactive(trace, model, { ...base, hold: 300, headroom: 1 }, 0, 32);
    expect(long.workerSeconds).toBeGreaterThan(plain.workerSeconds + 8 * 150);
    for (let i = 0; i < long.waits.length; i++) expect(long.waits[i]).toBeLessThanOrEqual(plain.waits[i]! + 1e-9);
  });

  it('size-aware dispatch: a free worker takes the smallest waiting request, so short ones pass a long one', () => {
    // One worker: a request of 800 load (1 s) at 0, one of 8,000 (10 s) at 0.2, ten of 80 (0.1 s) at 0.3.
    const model = { perf: 800, startSeconds: 15, targetQueueTime: 10, billedSteps: 600 };
    const later = [req(0, 800), req(0.2, 8000), ...Array.from({ length: 10 }, () => req(0.3, 80))];
    const t2 = prepareTrace(later);
    const f2 = runReactive(t2, { ...model, serving: 'workers' }, null, 1, 1);
    const s2 = runReactive(t2, { ...model, serving: 'smallest' }, null, 1, 1);
    // The first request (1 s) runs until t = 1; then FIFO starts the long one and the short ones wait
    // 10 s more; smallest-first serves the ten short ones (1 s in all) and then the long one.
    for (let j = 2; j < 12; j++) {
      expect(f2.waits[j]).toBeGreaterThan(10);
      expect(s2.waits[j]).toBeLessThan(2);
    }
    expect(s2.waits[1]).toBeGreaterThan(f2.waits[1]!);
    expect(s2.workerSeconds).toBeCloseTo(f2.workerSeconds, 6);
  });

  it('sizes scale with the rate: floors, always-on sizes and cap ×K', () => {
    expect(scaledSizes(DEFAULT_FRONTIER_FLOORS, 1)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(scaledSizes(DEFAULT_FRONTIER_FLOORS, 10)).toEqual([0, 10, 20, 30, 40, 50, 60]);
    expect(scaledSizes([1, 2, 3], 0.4)).toEqual([0, 1]);
    const requests = Array.from({ length: 600 }, (_, i) => req(i, 4000));
    const r = reactiveFrontier(requests, { machines: [RTX], rate: 10, grid: { win: [2], horizon: [5], hold: [10], fore: [0] } });
    expect(r.rate).toBe(10);
    expect(r.cap).toBe(160);
    expect(r.floors).toEqual([0, 10, 20, 30, 40, 50, 60]);
    expect(r.alwaysOn).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    expect(r.points).toHaveLength(7 + 10);
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
  const config = loadSimulationConfig();
  const { requests } = loadTrace(CODE_TRACE, { promptShare: config.workload.prompt_share });
  const machines = [
    { name: 'rtx4090', perf: 800, dollarsPerHour: 0.4 },
    { name: 'a100', perf: 1600, dollarsPerHour: 1.1 },
    { name: 'h100', perf: 3000, dollarsPerHour: 2.0 },
  ];
  // A slice of the default grid (every dimension, two values each) keeps this file quick.
  const grid = { win: [2, 10], horizon: [5, 30], hold: [10, 60], fore: [0, 1], headroom: [1, 1.5] };

  it('no causal controller of the family meets p99 ≤ 10 s at ≤ 1.5× the whole-workers oracle; the cheapest that does is reactive', () => {
    const started = performance.now();
    const r = reactiveFrontier(requests, { machines, startSeconds: 15, targetQueueTime: 10, cap: 16, grid });
    const seconds = (performance.now() - started) / 1000;
    const c = r.cheapestMeetingTarget;
    const b = r.bestWithinBudget;
    console.log(
      `reactive frontier on the code trace (pooled): ${r.points.length} points in ${seconds.toFixed(2)} s; ` +
        `cheapest p99 ≤ 10 s: ${c ? `${c.vsWholeWorkers}× (p99 ${c.p99} s, ${describePoint(c)})` : 'none'}; ` +
        `best p99 at ≤ 1.5×: ${b ? `${b.p99} s at ${b.vsWholeWorkers}× (${(b.lateShare * 100).toFixed(1)}% over 10 s, ${describePoint(b)})` : 'none'}`,
    );
    expect(r.machine).toBe('rtx4090');
    expect(r.oracle.wholeWorkerMinutes).toBe(69);
    expect(r.floors).toEqual([0, 1, 2, 3, 4, 5, 6]);
    // The property: meeting the target costs more than the goal's budget.
    expect(c).not.toBeNull();
    expect(c!.vsWholeWorkers).toBeGreaterThan(1.5);
    for (const p of r.points) if (p.vsWholeWorkers <= 1.5) expect(p.p99).toBeGreaterThan(10);
    expect(b!.p99).toBeGreaterThan(10);
    // Not asserted: that each floor's best p99 falls with the floor. It need not, for one controller
    // or a slice of the grid: a floor changes the controller's state (a smaller backlog starts fewer
    // workers before the next burst), not just its capacity (docs/autoscaler.md). What must be
    // monotone is: more always-on workers (below) and the Pareto frontier (here).
    expect(c!.kind).toBe('reactive');
    expect(c!.vsWholeWorkers).toBeLessThan(r.points.find((p) => p.kind === 'always-on' && p.p99 <= 10)!.vsWholeWorkers);
    // The frontier's own shape.
    for (let i = 1; i < r.frontier.length; i++) {
      expect(r.frontier[i]!.workerSeconds).toBeGreaterThanOrEqual(r.frontier[i - 1]!.workerSeconds);
      expect(r.frontier[i]!.p99).toBeLessThan(r.frontier[i - 1]!.p99);
    }
  });

  it('always-on: more workers never raise p99; smallest-first meets p99 ≤ 10 s with 5 workers where FIFO needs 6', () => {
    const alwaysOn = (serving: 'pooled' | 'workers' | 'smallest') =>
      reactiveFrontier(requests, { machines, floors: [], grid: { win: [], horizon: [], hold: [], fore: [] }, serving }).points;
    for (const serving of ['pooled', 'workers', 'smallest'] as const) {
      const on = alwaysOn(serving);
      expect(on.map((p) => p.floor)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      on.forEach((p, i) => {
        expect(p.workerSeconds).toBeCloseTo(p.floor * 58 * 60, 3);
        if (i > 0) expect(p.p99, `${serving} always-on ${p.floor}`).toBeLessThanOrEqual(on[i - 1]!.p99);
      });
    }
    const fifo = alwaysOn('workers');
    const smallest = alwaysOn('smallest');
    const p99 = (points: FrontierPoint[], k: number) => points.find((p) => p.floor === k)!.p99;
    expect(p99(fifo, 5)).toBeGreaterThan(10);
    expect(p99(fifo, 6)).toBeLessThanOrEqual(10);
    expect(p99(smallest, 5)).toBeLessThanOrEqual(10);
    expect(p99(smallest, 4)).toBeGreaterThan(10);
  });
});

describe('simulate --frontier (CLI)', () => {
  it('writes frontier.json and frontier.md; takes --pattern and --rate; exclusive with --compare', async () => {
    const out = mkdtempSync(join(tmpdir(), 'simulate-frontier-'));
    dirs.push(out);
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      // The trace's first five minutes at ×2 keep the full default sweep quick.
      const lines = readFileSync(CODE_TRACE, 'utf8').trim().split('\n');
      const short = join(out, 'short.csv');
      writeFileSync(short, lines.slice(0, 800).join('\n') + '\n');
      expect(await runSimulateCli(['--frontier', '--trace', short, '--rate', '2', '--out', out])).toBe(0);
      const printed = stdout.mock.calls.map((c) => String(c[0])).join('');
      expect(printed).toContain('cheapest p99 ≤ 10 s');
      expect(printed).toContain('best p99 at ≤ 1.5×');
      const json = JSON.parse(readFileSync(join(out, 'frontier.json'), 'utf8'));
      expect(json.points.length).toBeGreaterThan(100);
      // ×2: the floors, always-on sizes and cap are the ×1 ones doubled; the requests overlaid twice.
      expect(json.rate).toBe(2);
      expect(json.cap).toBe(32);
      expect(json.floors).toEqual([0, 1, 2, 4, 6, 8, 10, 12]); // 1: the config's own floor (min_load)
      expect(json.requests).toBe(2 * 799);
      expect(json.frontier.length).toBeGreaterThan(1);
      expect(existsSync(join(out, 'frontier.md'))).toBe(true);

      stderr.mockClear();
      expect(await runSimulateCli(['--frontier', '--compare'])).toBe(2);
      const message = stderr.mock.calls.map((c) => String(c[0])).join('');
      expect(message).toContain('--frontier');
      expect(message).toContain('--compare');
      stderr.mockClear();
      expect(await runSimulateCli(['--frontier', '--pattern', 'step-x4', '--trace', CODE_TRACE])).toBe(2);
      expect(stderr.mock.calls.map((c) => String(c[0])).join('')).toMatch(/--frontier takes one --trace or --pattern/);
      expect(await runSimulateCli(['--frontier', '--trace', CODE_TRACE, '--trace', CODE_TRACE])).toBe(2);
      expect(await runSimulateCli(['--frontier', '--rate', '0'])).toBe(2);
      expect(await runSimulateCli(['--frontier', '--pattern', 'nope'])).toBe(2);
      expect(await runSimulateCli(['--frontier', '--serving', 'fifo'])).toBe(2);
      expect(await runSimulateCli(['--trace', CODE_TRACE, '--serving', 'workers'])).toBe(2);
    } finally {
      stdout.mockRestore();
      stderr.mockRestore();
    }
  });
});
