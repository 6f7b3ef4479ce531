import { describe, expect, it } from 'vitest';
import type { LoadHistoryView } from '../src/autoscaler/load-history.js';
import { burstReserve, decide, INITIAL_MEMORY, START_PRIOR_S, SURGE_WINDOWS_S, type Decision } from '../src/autoscaler/policy.js';
import { input, kinds, NOW, steadyHistory, worker } from './helpers/policy.js';

/**
 * The burst reserve (issue 22): after a burst the fleet did not absorb, ready capacity
 * (1 − target_queue_time / D) × the burst's rate is kept for `release_delay`, D being the start time
 * plus the surge test's shortest window; a step the fleet caught up with, or steady load, keeps none.
 */

const ids = (ds: Decision[]) => ds.map((d) => (d as { id: number }).id);
/** The burst window with no start time learned yet: the prior start time plus the surge test's shortest window. */
const D = START_PRIOR_S + SURGE_WINDOWS_S[0];

/** `base` load/s for an hour, the last `seconds` of them at `base + perSecond × cost` (requests of `cost`). */
function burstHistory(base: number, seconds: number, perSecond: number, cost: number, now = NOW): LoadHistoryView {
  const h = steadyHistory(base, 4000, now);
  const loads = [...h.loads];
  const squares = loads.map((l) => 10 * l); // the base load as requests of 10
  for (let i = loads.length - seconds; i < loads.length; i++) {
    loads[i] = base + perSecond * cost;
    squares[i] = 10 * base + perSecond * cost * cost;
  }
  return { ...h, loads, squares };
}

describe('burstReserve', () => {
  it('is (1 − T/D) of the burst rate, D = start time + the shortest surge window', () => {
    // T 10 s, start 15 s: D 17 s, a request arriving 17·C/λ s into the burst waits 17(1 − C/λ) s.
    expect(burstReserve(10, 15, 1700)).toBeCloseTo(700, 9);
    expect(burstReserve(5, 18, 1000)).toBeCloseTo(1000 * (1 - 5 / 20), 9);
  });

  it('is nothing when a start (with detection) takes no longer than the target, or without a target', () => {
    expect(burstReserve(10, 8, 5000)).toBe(0);
    expect(burstReserve(10, 5, 5000)).toBe(0);
    expect(burstReserve(0, 15, 5000)).toBe(0);
  });
});

describe('the policy keeps a reserve after a burst it did not absorb', () => {
  // One ready worker of 100; a burst of 29 requests of 10 a second on 10 load/s: 300 load/s for D s.
  const params = { cold_workers: 0, cold_mult: 0, target_util: 0.9, scale_down_delay: 30, release_delay: 600 };
  const burst = () =>
    decide(input({ history: burstHistory(10, D, 29, 10), workers: [worker(1, 'ready'), ...[2, 3, 4, 5].map((i) => worker(i, 'inactive'))], params }));
  // A minute later: the burst is over, four workers ready, load back at 10 load/s.
  const later = (memory: typeof INITIAL_MEMORY, seconds: number) =>
    decide(
      input({
        now: NOW + seconds * 1000,
        history: steadyHistory(10, 4000, NOW + seconds * 1000),
        workers: [1, 2, 3, 4].map((i) => worker(i, 'ready')),
        memory,
        lastActivityAt: NOW + seconds * 1000 - 1000,
        params,
      }),
    );

  it('the burst is a surge: workers start, and its rate over D s is remembered', () => {
    const out = burst();
    expect(out.plan.surgeLoad).toBeGreaterThan(100);
    expect(ids(kinds(out.decisions, 'activate')).length).toBeGreaterThan(0);
    expect(out.memory.recentSurges?.[0]?.need).toBeCloseTo(300, 6);
    expect(out.plan.burstReserve).toBeCloseTo((1 - 10 / D) * 300, 6); // 123.5: two workers of 100
  });

  it('a minute later two workers stay ready (the reserve), not the one the stable load needs', () => {
    const out = later(burst().memory, 60);
    expect(out.plan.panicking).toBe(false);
    expect(out.plan.burstReserve).toBeCloseTo((1 - 10 / D) * 300, 6);
    expect(out.plan.activeTarget).toBeGreaterThanOrEqual(out.plan.burstReserve!);
    expect(kinds(out.decisions, 'stop').length).toBe(2);
    // Without the memory of the burst the same fleet keeps one worker.
    expect(kinds(later(INITIAL_MEMORY, 60).decisions, 'stop').length).toBe(3);
  });

  it('once release_delay passed without another surge, the reserve is gone', () => {
    let memory = burst().memory;
    // The memory is carried tick by tick (here every 100 s) as the engine does.
    for (let t = 100; t <= 600; t += 100) memory = later(memory, t).memory;
    const out = later(memory, 601);
    expect(out.plan.burstReserve).toBe(0);
    expect(kinds(out.decisions, 'stop').length).toBe(3);
  });

  it('once the scale-to-zero gate opened on idleness, the reserve yields: zero active workers', () => {
    const memory = burst().memory;
    const idle = { ...params, min_load: 0, inactivity_timeout: 30 };
    const out = decide(
      input({
        now: NOW + 60_000,
        history: steadyHistory(0, 4000, NOW + 60_000),
        workers: [1, 2, 3, 4].map((i) => worker(i, 'ready')),
        memory,
        lastActivityAt: NOW,
        params: idle,
      }),
    );
    expect(out.plan.zeroAllowed).toBe(true);
    expect(out.plan.burstReserve).toBe(0);
    expect(kinds(out.decisions, 'stop').length).toBe(4);
    // Still within inactivity_timeout, the reserve holds.
    const early = decide(
      input({
        now: NOW + 60_000,
        history: steadyHistory(0, 4000, NOW + 60_000),
        workers: [1, 2, 3, 4].map((i) => worker(i, 'ready')),
        memory,
        lastActivityAt: NOW + 50_000,
        params: idle,
      }),
    );
    expect(early.plan.burstReserve).toBeGreaterThan(100);
    expect(kinds(early.decisions, 'stop').length).toBe(2);
  });

  it('steady load the ready fleet covers, however high, is no surge and leaves no reserve', () => {
    const out = decide(input({ history: burstHistory(300, D, 0, 0), workers: [1, 2, 3, 4].map((i) => worker(i, 'ready')), params }));
    expect(out.plan.surgeLoad).toBe(0);
    expect(out.plan.burstReserve).toBe(0);
    expect(out.memory.recentSurges?.[0]?.need ?? 0).toBe(0);
  });

  it('a target queue time at least as long as a start keeps no reserve: the started workers come in time', () => {
    const out = decide(
      input({
        history: burstHistory(10, D, 29, 10),
        workers: [worker(1, 'ready'), worker(2, 'inactive')],
        params: { ...params, target_queue_time: 30 },
      }),
    );
    expect(out.plan.surgeLoad).toBeGreaterThan(100);
    expect(out.plan.burstReserve).toBe(0);
  });
});

describe('on bursty traffic the reserve remembers the largest burst of the cold window, in the signal share', () => {
  // A steady history (no surge now), a surge of 2000 load/s 2000 s ago: older than release_delay
  // (600 s), within cold_window (3600 s).
  const longAgo = [{ at: NOW - 2_000_000, need: 2000 }];
  const params = { cold_workers: 0, cold_mult: 0, release_delay: 600, cold_window: 3600, target_queue_time: 10 };
  const run = (shares: number[], longSurges = longAgo) =>
    decide(
      input({
        history: steadyHistory(50),
        workers: [
          worker(1, 'ready'),
          worker(2, 'inactive'),
          worker(3, 'inactive'),
          worker(4, 'inactive'),
          worker(5, 'inactive'),
          worker(6, 'inactive'),
          worker(7, 'inactive'),
          worker(8, 'inactive'),
        ],
        params,
        // Signal shares estimated just now (reused for SIGNAL_REFRESH_S).
        memory: { ...INITIAL_MEMORY, signal: { at: NOW, shares }, longSurges },
      }),
    );

  it('κ 0.8: (1 − T/D) × 0.8 × 2000 of ready capacity, and the inactive workers it needs are started', () => {
    const out = run([0.8, 0.6, 0.5]);
    expect(out.plan.burstReserve).toBeCloseTo((1 - 10 / D) * 0.8 * 2000, 6);
    // 658.8 of perf-100 workers: seven ready.
    expect(kinds(out.decisions, 'activate')).toHaveLength(6);
    expect(out.memory.longSurges![0]!.need).toBe(2000);
  });

  it('κ 0 (a step, or independent arrivals): only the last release_delay counts, as before', () => {
    const out = run([0, 0, 0]);
    expect(out.plan.burstReserve).toBe(0);
    expect(ids(kinds(out.decisions, 'activate'))).toEqual([]);
  });

  it('a burst older than cold_window is forgotten', () => {
    const out = run([0.8, 0.6, 0.5], [{ at: NOW - 3_700_000, need: 2000 }]);
    expect(out.plan.burstReserve).toBe(0);
    expect(out.memory.longSurges!.every((p) => p.at >= NOW - 3_600_000)).toBe(true);
  });
});
