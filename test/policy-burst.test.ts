import { describe, expect, it } from 'vitest';
import type { LoadHistoryView } from '../src/autoscaler/load-history.js';
import { PerfBook } from '../src/autoscaler/perf-model.js';
import { decideKpa } from '../src/autoscaler/policy-kpa.js';
import { decide, INITIAL_MEMORY, pushPeak, START_PRIOR_S, surgeLoad, type Decision, type MachineChoice, type PolicyMemory } from '../src/autoscaler/policy.js';
import { gpu, input, kinds, NOW, steadyHistory, worker } from './helpers/policy.js';

/**
 * The behaviours added for bursty traffic (issue 17), each pinned by a test that fails when the
 * behaviour goes: the route queue limit, sizing to queued work, the ski-rental panic hold with a
 * learned start time, the calm scale-down target, release hysteresis, replacement only by a better
 * other type, the sustained-throughput perf estimate, and the KPA baseline.
 */

const ids = (ds: Decision[]) => ds.map((d) => (d as { id: number }).id);

describe('route queue limit', () => {
  const two = () => [worker(1, 'ready'), worker(2, 'inactive')];
  it('a worker holds at most target_queue_time of queue; the rest waits in the global queue', () => {
    expect(decide(input({ workers: two(), params: { max_queue_time: 30, target_queue_time: 10 } })).plan.routeQueueLimit).toBe(10);
    expect(decide(input({ workers: two(), params: { max_queue_time: 5, target_queue_time: 10 } })).plan.routeQueueLimit).toBe(5);
    // target_queue_time 0 turns the queue target off: max_queue_time alone.
    expect(decide(input({ workers: two(), params: { max_queue_time: 30, target_queue_time: 0 } })).plan.routeQueueLimit).toBe(30);
  });

  it('the queue budget is target_queue_time (a request waits that long in all before a worker takes it), off without a target', () => {
    expect(decide(input({ workers: two(), params: { target_queue_time: 10 } })).plan.routeQueueBudget).toBe(10);
    expect(decide(input({ workers: two(), params: { target_queue_time: 0 } })).plan.routeQueueBudget).toBe(0);
    expect(decide(input({ workers: [worker(1, 'ready')], params: { target_queue_time: 10 } })).plan.routeQueueBudget).toBe(0);
    expect(decideKpa(input({ workers: two(), params: { target_queue_time: 10 } })).plan.routeQueueBudget ?? 0).toBe(0);
  });

  it('with a single loaded worker nothing could take a request sooner: max_queue_time stands', () => {
    expect(decide(input({ workers: [worker(1, 'ready')], params: { max_queue_time: 10_000, target_queue_time: 10 } })).plan.routeQueueLimit).toBe(10_000);
  });
});

describe('a significant surge is planned for at once', () => {
  /** The steady history, with `perSecond` requests of `cost` each arriving in each of the last `seconds` seconds. */
  function surgeHistory(base: number, seconds: number, perSecond: number, cost: number): LoadHistoryView {
    const h = steadyHistory(base);
    const loads = [...h.loads];
    // A steady stream of base load/s as requests of 10: squares 10 × base per second.
    const squares = loads.map((l) => 10 * l);
    for (let i = loads.length - seconds; i < loads.length; i++) {
      loads[i] = base + perSecond * cost;
      squares[i] = 10 * base + perSecond * cost * cost;
    }
    return { ...h, loads, squares };
  }
  const fleet = () => [worker(1, 'ready'), worker(2, 'inactive'), worker(3, 'inactive'), worker(4, 'inactive')];
  const params = { cold_workers: 0, cold_mult: 0, target_util: 0.9 };

  it('many requests in two seconds, far above the ready capacity, start workers before panic or the stable load would', () => {
    // 60 load/s steady; then 2 s of 30 requests of 10 per second on top: 360 load/s against a ready 100.
    const out = decide(input({ history: surgeHistory(60, 2, 30, 10), workers: fleet(), params }));
    expect(out.plan.panicking).toBe(false); // the 6 s load (160) is under 2 × 100 / 0.9
    expect(out.plan.surgeLoad).toBeCloseTo(360, 6);
    expect(ids(kinds(out.decisions, 'activate'))).toEqual([2, 3, 4]); // 360 / 0.9 = 400: all four
    // Without the surge the same fleet starts nothing (stable load 66 / 0.9 = 73 < 100).
    const calm = decide(input({ history: surgeHistory(60, 0, 0, 0), workers: fleet(), params }));
    expect(calm.plan.surgeLoad).toBe(0);
    expect(kinds(calm.decisions, 'activate')).toEqual([]);
  });

  it('the same load in a few large requests is not significant: nothing starts', () => {
    // 2 s of one request of 300 per second: 360 load/s again, but two requests could be chance.
    const out = decide(input({ history: surgeHistory(60, 2, 1, 300), workers: fleet(), params }));
    expect(out.plan.surgeLoad).toBe(0);
    expect(kinds(out.decisions, 'activate')).toEqual([]);
  });

  it('a surge below the ready capacity is none, and histories without squared costs never surge', () => {
    expect(surgeLoad(surgeHistory(60, 4, 3, 10), NOW, 60, 100)).toBe(0); // 90 load/s < 100
    const { squares: _dropped, ...plain } = surgeHistory(60, 2, 30, 10);
    // Without squared costs there is no error estimate, so no evidence of a surge.
    expect(surgeLoad(plain, NOW, 60, 100)).toBe(0);
    expect(surgeLoad(surgeHistory(60, 2, 30, 10), NOW, 1, 100)).toBe(0); // stable_window below every surge window
  });
});

describe('sizing to queued work', () => {
  const fleet = () => [worker(1, 'ready'), worker(2, 'inactive'), worker(3, 'inactive')];
  const params = { cold_workers: 0, cold_mult: 0, target_util: 0.9 };

  it('queued at workers beyond a second each, before the queue time shows it, starts capacity', () => {
    // 90 load/s arrive: one worker of 100 covers them; 1,100 load queued at it is 1,000 beyond the pipeline.
    const out = decide(
      input({ history: steadyHistory(90), workers: fleet(), params, queue: { waiting: 0, waitingLoad: 0, queueTime: 0, workerBacklog: 1100 } }),
    );
    expect(out.plan.activeTarget).toBeCloseTo((90 + 1000 / 10) / 0.9, 6);
    expect(kinds(out.decisions, 'activate').length).toBe(2); // 211 of target: three workers of 100
  });

  it('a second of work per ready worker is the pipeline, not a backlog', () => {
    const out = decide(
      input({ history: steadyHistory(90), workers: fleet(), params, queue: { waiting: 0, waitingLoad: 0, queueTime: 0, workerBacklog: 100 } }),
    );
    expect(out.plan.activeTarget).toBeCloseTo(100, 6);
    expect(kinds(out.decisions, 'activate')).toEqual([]);
  });
});

describe('panic hold: ski rental over a learned start time', () => {
  it('learns the start time from workers seen starting that turned ready', () => {
    const memory: PolicyMemory = { ...INITIAL_MEMORY, starting: [{ id: 2, since: NOW - 30_000 }] };
    const out = decide(input({ workers: [worker(1, 'ready'), worker(2, 'ready', { stateSince: NOW - 8_000 })], memory }));
    expect(out.memory.startSeconds).toBeCloseTo(22, 6);
    // Workers starting now are remembered for the next tick.
    const next = decide(input({ workers: [worker(1, 'ready'), worker(3, 'starting', { stateSince: NOW - 1000 })] }));
    expect(next.memory.starting).toEqual([{ id: 3, since: NOW - 1000 }]);
  });

  const ready = () => [1, 2, 3, 4].map((id) => worker(id, 'ready'));
  const panicMemory = (quietS: number, startSeconds: number | null): PolicyMemory => ({
    ...INITIAL_MEMORY,
    panicking: true,
    panicSince: NOW - 100_000,
    lastTriggerAt: NOW - quietS * 1000,
    panicTarget: 400,
    startSeconds,
  });
  const params = { cold_workers: 0, scale_down_delay: 0 };

  it('leaves panic once the backlog is drained and a start time passed without trigger', () => {
    const calm = decide(input({ history: steadyHistory(10), workers: ready(), memory: panicMemory(25, 20), params }));
    expect(calm.memory.panicking).toBe(false);
    expect(kinds(calm.decisions, 'stop').length).toBe(3);
    // Within the learned start time: surge capacity is held.
    const held = decide(input({ history: steadyHistory(10), workers: ready(), memory: panicMemory(15, 20), params }));
    expect(held.memory.panicking).toBe(true);
    expect(kinds(held.decisions, 'stop')).toEqual([]);
    // Nothing learned yet: the prior start time.
    expect(decide(input({ history: steadyHistory(10), workers: ready(), memory: panicMemory(START_PRIOR_S - 1, null), params })).memory.panicking).toBe(true);
    expect(decide(input({ history: steadyHistory(10), workers: ready(), memory: panicMemory(START_PRIOR_S + 1, null), params })).memory.panicking).toBe(false);
  });

  it('stays in panic while queued work is not drained, however long ago the last trigger', () => {
    const queue = { waiting: 0, waitingLoad: 0, queueTime: 2, workerBacklog: 1000 };
    const out = decide(input({ history: steadyHistory(10), workers: ready(), memory: panicMemory(120, 20), params, queue }));
    expect(out.memory.panicking).toBe(true);
    expect(kinds(out.decisions, 'stop')).toEqual([]);
  });

  it('the scale-down delay holds the calm target, not the panic peak', () => {
    // Tick 1: panicking at a 400 target; tick 2, 30 s later, panic is over: with scale_down_delay 60
    // the old behaviour kept 400 (the panic target was remembered); now the calm target rules.
    const t1 = decide(input({ history: steadyHistory(10), workers: ready(), memory: panicMemory(0, 15), params: { cold_workers: 0, scale_down_delay: 60 } }));
    expect(t1.memory.panicking).toBe(true);
    const t2 = decide(
      input({
        now: NOW + 30_000,
        history: steadyHistory(10, 4000, NOW + 30_000),
        workers: ready(),
        memory: t1.memory,
        lastActivityAt: NOW,
        params: { cold_workers: 0, scale_down_delay: 60 },
      }),
    );
    expect(t2.memory.panicking).toBe(false);
    expect(kinds(t2.decisions, 'stop').length).toBe(3);
  });
});

describe('keeping loaded workers', () => {
  it('pushPeak keeps the window maximum first and forgets older smaller entries', () => {
    let peaks = pushPeak([], 0, 500, 10_000);
    peaks = pushPeak(peaks, 1000, 300, 10_000);
    expect(peaks[0]!.need).toBe(500);
    peaks = pushPeak(peaks, 10_500, 100, 10_000);
    expect(peaks[0]!.need).toBe(300); // the 500 left the window
    peaks = pushPeak(peaks, 10_800, 400, 10_000);
    expect(peaks.map((p) => p.need)).toEqual([400]);
  });

  it('an inactive worker is released only if its capacity was not needed during release_delay', () => {
    const workers = [worker(1, 'ready'), worker(2, 'inactive'), worker(3, 'inactive')];
    const params = { cold_workers: 0, cold_mult: 0, release_delay: 600 };
    const quiet = decide(input({ history: steadyHistory(50), workers, params }));
    expect(ids(kinds(quiet.decisions, 'destroy')).length).toBe(2);
    // 300 of capacity was needed 5 minutes ago: all three are kept.
    const memory: PolicyMemory = { ...INITIAL_MEMORY, recentNeeds: [{ at: NOW - 300_000, need: 300 }] };
    const recent = decide(input({ history: steadyHistory(50), workers, params, memory }));
    expect(kinds(recent.decisions, 'destroy')).toEqual([]);
  });

  it('replaces a worker only by a better other type, never by copies of its own type', () => {
    // The type's learned estimate (150) is above this worker's own benchmark (100): no replacement.
    const learnedHigh: MachineChoice = { ...gpu, perf: 150, samples: 5 };
    const other: MachineChoice = { key: 'wg/big', workergroup: 'wg', machineType: 'big', dollarsPerHour: 2, perf: 150, samples: 1 };
    const workers = [worker(1, 'ready'), worker(2, 'inactive')];
    const params = { cold_workers: 2, cold_mult: 0 };
    const same = decide(input({ history: steadyHistory(50), workers, machines: [learnedHigh, other], params }));
    expect(kinds(same.decisions, 'destroy')).toEqual([]);
    // Another type 2× better per dollar: the inactive worker of the worse type goes.
    const better: MachineChoice = { ...other, dollarsPerHour: 0.5, perf: 200 };
    const out = decide(input({ history: steadyHistory(50), workers, machines: [gpu, better], params }));
    expect(ids(kinds(out.decisions, 'destroy'))).toEqual([2]);
  });
});

describe('perf book: sustained throughput', () => {
  it('measurement artefacts neither halve nor double a type; a sustained slowdown lowers it', () => {
    const book = new PerfBook();
    book.addBenchmark('t', 800);
    // Intervals that idled in between (low) and completions landing together (high), around a true 800.
    const samples = [300, 800, 1600, 450, 790, 810, 200, 1500, 805, 600, 795, 780, 820, 350, 800];
    for (const s of samples) book.addMeasured('t', s);
    const est = book.estimate('t')!;
    expect(est).toBeGreaterThanOrEqual(800);
    expect(est).toBeLessThanOrEqual(880 + 1e-6);
    const slow = new PerfBook();
    slow.addBenchmark('t', 800);
    for (let i = 0; i < 20; i++) slow.addMeasured('t', 400 + (i % 3));
    expect(slow.estimate('t')!).toBeCloseTo(402, 0);
  });
});

describe('KPA baseline', () => {
  const fleet = () => [worker(1, 'ready'), ...[2, 3, 4, 5].map((id) => worker(id, 'inactive'))];
  function surge(): LoadHistoryView {
    const h = steadyHistory(60, 120);
    const loads = [...h.loads];
    for (let i = loads.length - 6; i < loads.length; i++) loads[i] = 300;
    return { ...h, loads };
  }

  it('panics at panic_threshold × ready capacity and starts inactive workers for the panic load', () => {
    const out = decideKpa(input({ history: surge(), workers: fleet(), params: { cold_workers: 0 } }));
    expect(out.memory.panicking).toBe(true);
    expect(out.plan.activeTarget).toBeGreaterThanOrEqual(300 / 0.9 - 1e-6);
    expect(kinds(out.decisions, 'activate').length).toBe(3);
    expect(kinds(out.decisions, 'recruit')).toEqual([]);
  });

  it('never scales down in panic; after it, only to the highest target of scale_down_delay', () => {
    const ready = [1, 2, 3, 4].map((id) => worker(id, 'ready'));
    const memory: PolicyMemory = { ...INITIAL_MEMORY, panicking: true, lastTriggerAt: NOW - 10_000, panicTarget: 400 };
    const inPanic = decideKpa(input({ history: steadyHistory(10), workers: ready, memory, params: { cold_workers: 0 } }));
    expect(kinds(inPanic.decisions, 'stop')).toEqual([]);
    const held: PolicyMemory = { ...INITIAL_MEMORY, recentTargets: [{ at: NOW - 10_000, target: 250 }] };
    const out = decideKpa(input({ history: steadyHistory(10), workers: ready, memory: held, params: { cold_workers: 0, scale_down_delay: 30 } }));
    expect(kinds(out.decisions, 'stop').length).toBe(1); // 300 of ready capacity covers the remembered 250
  });

  it('scales to zero when min_load 0 and inactivity_timeout allow it', () => {
    const out = decideKpa(
      input({ workers: [worker(1, 'ready')], lastActivityAt: NOW - 400_000, params: { min_load: 0, inactivity_timeout: 300, cold_workers: 0 } }),
    );
    expect(ids(kinds(out.decisions, 'stop'))).toEqual([1]);
  });
});

describe('suspect workers', () => {
  // One ready worker carrying 50 load/s of 100; one inactive behind it.
  const fleet = (suspect: boolean) => [worker(1, 'ready', { busy: true, ...(suspect ? { suspect: true } : {}) }), worker(2, 'inactive')];
  it('a ready worker silent on its requests is no capacity: a loaded worker is started in its place', () => {
    const out = decide(input({ workers: fleet(true), history: steadyHistory(50) }));
    expect(ids(kinds(out.decisions, 'activate'))).toEqual([2]);
    expect(out.plan.readyCapacity).toBe(0);
  });
  it('the same worker answering is capacity enough: nothing is started', () => {
    const out = decide(input({ workers: fleet(false), history: steadyHistory(50) }));
    expect(kinds(out.decisions, 'activate')).toEqual([]);
    expect(out.plan.readyCapacity).toBe(100);
  });
  it('a suspect worker is not stopped for capacity (the engine errors it or it answers again)', () => {
    const out = decide(input({ workers: [worker(1, 'ready', { suspect: true }), worker(3, 'ready'), worker(2, 'ready')], history: steadyHistory(10) }));
    expect(ids(kinds(out.decisions, 'stop'))).not.toContain(1);
  });
});
