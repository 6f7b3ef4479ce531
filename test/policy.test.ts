import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LoadHistoryView } from '../src/autoscaler/load-history.js';
import type { EndpointParams } from '../src/autoscaler/params.js';
import { decide, INITIAL_MEMORY, type Decision, type MachineChoice } from '../src/autoscaler/policy.js';
import { WORKER_STATES } from '../src/autoscaler/states.js';
import { input, kinds, NOW, steadyHistory, worker } from './helpers/policy.js';

const recruited = (ds: Decision[]) => kinds(ds, 'recruit').reduce((n, d) => n + (d as { count: number }).count, 0);

describe('policy: documented examples', () => {
  it('target_util 0.9 with 900 load/s anticipated plans 1000 active capacity', () => {
    const out = decide(input({ history: steadyHistory(900), params: { target_util: 0.9 } }));
    expect(out.plan.anticipatedLoad).toBeCloseTo(900, 6);
    expect(out.plan.activeTarget).toBeCloseTo(1000, 6);
  });

  it('target_util 0.5 doubles the capacity (100% headroom)', () => {
    const out = decide(input({ history: steadyHistory(900), params: { target_util: 0.5 } }));
    expect(out.plan.activeTarget).toBeCloseTo(1800, 6);
  });

  it('cold_mult 2 with active load 100 asks 200 inactive capacity', () => {
    const out = decide(input({ history: steadyHistory(100), params: { cold_mult: 2, min_cold_load: 0 } }));
    expect(out.plan.inactiveTarget).toBeCloseTo(200, 6);
  });

  it('min_cold_load 300 sets the inactive capacity directly when it is larger', () => {
    const out = decide(input({ history: steadyHistory(100), params: { cold_mult: 2, min_cold_load: 300 } }));
    expect(out.plan.inactiveTarget).toBeCloseTo(300, 6);
    const bigger = decide(input({ history: steadyHistory(200), params: { cold_mult: 2, min_cold_load: 300 } }));
    expect(bigger.plan.inactiveTarget).toBeCloseTo(400, 6);
  });

  it('the largest inactive target wins: cold_workers (count) against cold_mult/min_cold_load (capacity)', () => {
    // Load 90/s → 1 active worker of 100. cold_workers 5 asks 4 more loaded workers; cold_mult 1 asks 90 (1 worker).
    const byCount = decide(input({ history: steadyHistory(90), workers: [worker(1, 'ready')], params: { cold_mult: 1, cold_workers: 5 } }));
    expect(recruited(byCount.decisions)).toBe(4);
    // cold_mult 8 asks 720 inactive capacity: 8 workers beat the count's 4.
    const byCapacity = decide(input({ history: steadyHistory(90), workers: [worker(1, 'ready')], params: { cold_mult: 8, cold_workers: 5 } }));
    expect(recruited(byCapacity.decisions)).toBe(8);
    // min_cold_load 1000 asks 10.
    const byMinCold = decide(
      input({ history: steadyHistory(90), workers: [worker(1, 'ready')], params: { cold_mult: 1, cold_workers: 5, min_cold_load: 1000 } }),
    );
    expect(recruited(byMinCold.decisions)).toBe(10);
  });

  it('max_workers caps recruitment', () => {
    const out = decide(input({ history: steadyHistory(2000), params: { max_workers: 6, cold_workers: 0 } }));
    expect(recruited(out.decisions)).toBe(6);
  });
});

describe('policy: scale to zero', () => {
  const idle = (params: Partial<EndpointParams>, lastActivityAt: number | null, workers = [worker(1, 'ready'), worker(2, 'inactive')]) =>
    decide(input({ history: steadyHistory(0), lastActivityAt, workers, params: { cold_workers: 0, ...params } }));

  it('min_load 0 with inactivity_timeout elapsed → zero active workers', () => {
    const out = idle({ min_load: 0, inactivity_timeout: 300 }, NOW - 301_000);
    expect(out.plan.zeroAllowed).toBe(true);
    expect(kinds(out.decisions, 'stop').map((d) => (d as { id: number }).id)).toEqual([1]);
  });

  it('min_load 0 before inactivity_timeout elapses → one worker stays active', () => {
    const out = idle({ min_load: 0, inactivity_timeout: 300 }, NOW - 100_000);
    expect(out.plan.zeroAllowed).toBe(false);
    expect(kinds(out.decisions, 'stop')).toEqual([]);
  });

  it('a negative inactivity_timeout never allows zero, however long the idle', () => {
    const out = idle({ min_load: 0, inactivity_timeout: -1 }, NOW - 86_400_000);
    expect(out.plan.zeroAllowed).toBe(false);
    expect(kinds(out.decisions, 'stop')).toEqual([]);
    // And from zero active it starts one.
    const fromZero = idle({ min_load: 0, inactivity_timeout: -1 }, null, [worker(2, 'inactive')]);
    expect(kinds(fromZero.decisions, 'activate').length).toBe(1);
  });

  it('inactivity_timeout 0 disables the gate: zero as soon as no load arrives', () => {
    const out = idle({ min_load: 0, inactivity_timeout: 0 }, NOW - 1000);
    expect(out.plan.zeroAllowed).toBe(true);
    expect(kinds(out.decisions, 'stop').length).toBe(1);
  });

  it('min_load 1 (default) always keeps an active worker', () => {
    const out = idle({ min_load: 1, inactivity_timeout: 0 }, null);
    expect(kinds(out.decisions, 'stop')).toEqual([]);
  });
});

describe('policy: moves', () => {
  it('destroys errored workers and recruits their replacement', () => {
    const out = decide(input({ history: steadyHistory(50), workers: [worker(1, 'errored')], params: { cold_workers: 1, cold_mult: 0 } }));
    expect(kinds(out.decisions, 'destroy').map((d) => (d as { id: number }).id)).toEqual([1]);
    expect(recruited(out.decisions)).toBe(1);
  });

  it('starts inactive workers before recruiting when short of active capacity', () => {
    const workers = [worker(1, 'ready'), worker(2, 'inactive'), worker(3, 'inactive'), worker(4, 'inactive')];
    const out = decide(input({ history: steadyHistory(250), workers, params: { cold_workers: 0, cold_mult: 0 } }));
    // 250/0.9 = 278 → 3 workers of 100: two started, none recruited.
    expect(kinds(out.decisions, 'activate').length).toBe(2);
    expect(recruited(out.decisions)).toBe(0);
  });

  it('stops idle workers first; a busy one is named last (the engine drains it before stopping)', () => {
    const workers = [worker(1, 'ready', { busy: true }), worker(2, 'ready', { busy: true }), worker(3, 'ready'), worker(4, 'ready')];
    const out = decide(input({ history: steadyHistory(50), workers, params: { cold_workers: 0, cold_mult: 0, scale_down_delay: 0 } }));
    const stopped = kinds(out.decisions, 'stop').map((d) => (d as { id: number }).id);
    // Target 55.6: one worker stays, and a busy one is kept over an idle twin.
    expect(stopped.slice(0, 2).sort()).toEqual([3, 4]);
    expect(stopped.length).toBe(3);
    expect(stopped).not.toContain(1);
  });

  it('keeps what the scale-down delay remembers', () => {
    const workers = [1, 2, 3].map((id) => worker(id, 'ready'));
    const memory = { ...INITIAL_MEMORY, recentTargets: [{ at: NOW - 10_000, target: 250 }] };
    const out = decide(input({ history: steadyHistory(50), workers, memory, params: { cold_workers: 0, cold_mult: 0, scale_down_delay: 30 } }));
    expect(kinds(out.decisions, 'stop')).toEqual([]);
    const later = decide(
      input({
        history: steadyHistory(50),
        workers,
        memory: { ...memory, recentTargets: [{ at: NOW - 31_000, target: 250 }] },
        params: { cold_workers: 0, cold_mult: 0, scale_down_delay: 30 },
      }),
    );
    expect(kinds(later.decisions, 'stop').length).toBe(2);
  });

  it('suspended endpoints get no decisions; stopped endpoints stop every serving worker', () => {
    const workers = [worker(1, 'ready'), worker(2, 'starting'), worker(3, 'errored')];
    expect(decide(input({ state: 'suspended', history: steadyHistory(500), workers })).decisions).toEqual([]);
    const stopped = decide(input({ state: 'stopped', history: steadyHistory(500), workers }));
    expect(
      kinds(stopped.decisions, 'stop')
        .map((d) => (d as { id: number }).id)
        .sort(),
    ).toEqual([1, 2]);
    expect(recruited(stopped.decisions)).toBe(0);
  });

  it('recruits a variety of machine types first, then the best perf per dollar once learned', () => {
    const machines: MachineChoice[] = [
      { key: 'wg/cheap', workergroup: 'wg', machineType: 'cheap', dollarsPerHour: 0.4, perf: null, samples: 0 },
      { key: 'wg/fast', workergroup: 'wg', machineType: 'fast', dollarsPerHour: 2, perf: null, samples: 0 },
    ];
    const first = decide(input({ machines, history: steadyHistory(0), params: { cold_workers: 3 } }));
    const firstTypes = kinds(first.decisions, 'recruit').map((d) => (d as { typeKey: string }).typeKey);
    expect(new Set(firstTypes)).toEqual(new Set(['wg/cheap', 'wg/fast']));
    // Learned: cheap = 800/0.4 = 2000 per $, fast = 3000/2 = 1500 per $ → cheap wins.
    const learned: MachineChoice[] = [
      { ...machines[0]!, perf: 800, samples: 2 },
      { ...machines[1]!, perf: 3000, samples: 2 },
    ];
    const later = decide(input({ machines: learned, history: steadyHistory(2000), params: { cold_workers: 0, cold_mult: 0 } }));
    const types = kinds(later.decisions, 'recruit').map((d) => (d as { typeKey: string }).typeKey);
    expect(types).toEqual(['wg/cheap']);
    expect(recruited(later.decisions)).toBe(3); // 2000/0.9 = 2222 → 3 × 800
  });

  it('trades a serving worker for a better-value inactive one, and not for an equal one', () => {
    const h100 = worker(1, 'ready', { typeKey: 'wg/h100', perf: 3000, dollarsPerHour: 2 });
    const cheapA = worker(2, 'inactive', { typeKey: 'wg/4090', perf: 800, dollarsPerHour: 0.4 });
    const out = decide(input({ history: steadyHistory(500), workers: [h100, cheapA], params: { cold_workers: 0, cold_mult: 0 } }));
    expect(kinds(out.decisions, 'activate').map((d) => (d as { id: number }).id)).toEqual([2]);
    const twin = worker(3, 'inactive', { perf: 101 });
    const same = decide(input({ history: steadyHistory(50), workers: [worker(1, 'ready'), twin], params: { cold_workers: 0, cold_mult: 0 } }));
    expect(kinds(same.decisions, 'activate')).toEqual([]);
  });
});

describe('policy: panic window', () => {
  // 60 s of 60 load/s, then the last 6 s at 300 load/s: panic load ≥ 2 × the 100 capacity serving.
  function surgeHistory(): LoadHistoryView {
    const h = steadyHistory(60, 120);
    const loads = [...h.loads];
    for (let i = loads.length - 6; i < loads.length; i++) loads[i] = 300;
    return { ...h, loads };
  }
  const fleet = () => [worker(1, 'ready'), ...[2, 3, 4, 5].map((id) => worker(id, 'inactive'))];

  it('enters panic on a surge and plans for the panic-window load', () => {
    const out = decide(input({ history: surgeHistory(), workers: fleet(), params: { cold_workers: 0 } }));
    expect(out.memory.panicking).toBe(true);
    expect(out.plan.activeTarget).toBeGreaterThanOrEqual(300 / 0.9 - 1e-6);
    expect(kinds(out.decisions, 'activate').length).toBe(3);
  });

  it('with panic_window 0 it follows the stable window only', () => {
    const out = decide(input({ history: surgeHistory(), workers: fleet(), params: { cold_workers: 0, panic_window: 0 } }));
    expect(out.memory.panicking).toBe(false);
    expect(out.plan.activeTarget).toBeLessThan(200);
  });

  it('never scales down while panicking, and leaves panic once drained and a start time passed without trigger', () => {
    const memory = { ...INITIAL_MEMORY, panicking: true, panicSince: NOW - 10_000, lastTriggerAt: NOW - 10_000, panicTarget: 400 };
    const ready = [1, 2, 3, 4].map((id) => worker(id, 'ready'));
    const calm = decide(input({ history: steadyHistory(10), workers: ready, memory, params: { cold_workers: 0, scale_down_delay: 0 } }));
    expect(calm.memory.panicking).toBe(true);
    expect(kinds(calm.decisions, 'stop')).toEqual([]);
    const later = decide(
      input({
        history: steadyHistory(10),
        workers: ready,
        memory: { ...memory, lastTriggerAt: NOW - 61_000 },
        params: { cold_workers: 0, scale_down_delay: 0 },
      }),
    );
    expect(later.memory.panicking).toBe(false);
    expect(kinds(later.decisions, 'stop').length).toBe(3);
  });
});

describe('policy: invariants', () => {
  const stateArb = fc.constantFrom(...WORKER_STATES.filter((s) => s !== 'destroyed'));
  it('never plans more than max_workers live workers, whatever the load and fleet', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20 }),
        fc.array(fc.tuple(stateArb, fc.integer({ min: 10, max: 3000 }), fc.boolean()), { maxLength: 20 }),
        fc.double({ min: 0, max: 50_000, noNaN: true }),
        fc.integer({ min: 0, max: 10 }),
        fc.double({ min: 0, max: 5, noNaN: true }),
        (maxWorkers, fleetSpec, load, coldWorkers, coldMult) => {
          const workers = fleetSpec.map(([state, perf, busy], i) => worker(i + 1, state, { perf, busy }));
          const out = decide(
            input({ history: steadyHistory(load), workers, params: { max_workers: maxWorkers, cold_workers: coldWorkers, cold_mult: coldMult } }),
          );
          const destroyed = new Set(kinds(out.decisions, 'destroy').map((d) => (d as { id: number }).id));
          const liveAfter = workers.filter((w) => !destroyed.has(w.id)).length + recruited(out.decisions);
          // Recruiting never pushes past the cap; a fleet already above it is shed down to it.
          expect(liveAfter).toBeLessThanOrEqual(maxWorkers);
          // No decision names a worker twice.
          const ids = out.decisions.filter((d) => d.kind !== 'recruit').map((d) => (d as { id: number }).id);
          expect(new Set(ids).size).toBe(ids.length);
        },
      ),
      { numRuns: 300 },
    );
  });
});
