import { describe, expect, it } from 'vitest';
import { engineTimingSchema } from '../src/autoscaler/config.js';
import { capacity, decide, fleetOf, typeEstimates, type Decision, type PolicyInput, type PolicyWorker } from '../src/autoscaler/policy.js';
import { seededRandom } from '../src/common/random.js';
import { Scaler } from '../src/autoscaler/scaler.js';
import { RecordingProvider } from './helpers/autoscaler.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/** The scaling loop alone: a registry, a recording provider, a policy whose decisions the test sets. */

function setup(timing: Record<string, unknown> = {}) {
  const { reg, clock } = testRegistry();
  const ep = reg.addEndpoint(endpointCfg('a', { max_workers: 10 }));
  const provider = new RecordingProvider();
  let next: Decision[] = [];
  const inputs: PolicyInput[] = [];
  let ticks = 0;
  const scaler = new Scaler(reg, {
    clock,
    provider,
    timing: engineTimingSchema.parse({ tick_seconds: 1, ...timing }),
    reportAddrs: () => ['http://127.0.0.1:1'],
    // The real policy's plan and memory, with the decisions the test wants.
    policy: (input) => {
      inputs.push(input);
      const out = decide(input);
      const decisions = next;
      next = [];
      return { ...out, decisions };
    },
    afterTick: () => ticks++,
  });
  provider.subscribe((e) => scaler.onProviderEvent(e));
  const settle = () => new Promise((r) => setImmediate(r));
  return { reg, clock, ep, provider, scaler, inputs, decide: (d: Decision[]) => (next = d), ticks: () => ticks, settle };
}

describe('scaler', () => {
  it('turns a recruit decision into provider creates with fresh ids and tokens, then calls afterTick', async () => {
    const t = setup();
    t.decide([{ kind: 'recruit', typeKey: 'wg/gpu', count: 2, reason: 'test' }]);
    t.scaler.tick();
    await t.settle();
    expect(t.provider.calls).toEqual(['create 1 gpu', 'create 2 gpu']);
    expect([...t.reg.workers.values()].map((w) => [w.id, w.state])).toEqual([
      [1, 'created'],
      [2, 'created'],
    ]);
    expect(t.provider.specs[0]!.masterToken).not.toBe(t.provider.specs[1]!.masterToken);
    expect(t.reg.workers.get(1)!.url).toBe('http://127.0.0.1:20001');
    expect(t.ticks()).toBe(1);
    expect(t.inputs[0]!.workers).toEqual([]);
  });

  it('a stop of a busy worker drains it; it stops when its last request ends', async () => {
    const t = setup();
    const w = addTestWorker(t.reg, 'a');
    t.reg.transition(w, 'ready', 'test');
    w.reqsWorking = 1;
    t.decide([{ kind: 'stop', id: w.id, reason: 'not needed' }]);
    t.scaler.tick();
    expect([w.state, w.draining]).toEqual(['ready', true]);
    w.reqsWorking = 0;
    t.scaler.finishDrain(w);
    await t.settle();
    expect(w.state).toBe('inactive');
    expect(t.provider.calls).toEqual([`stop ${w.id}`]);
  });

  it('a provider "exited" errors the worker; activate and destroy reach the provider', async () => {
    const t = setup();
    const a = addTestWorker(t.reg, 'a');
    const b = addTestWorker(t.reg, 'a');
    t.reg.transition(b, 'ready', 'test');
    t.reg.transition(b, 'inactive', 'test');
    t.provider.emit({ kind: 'exited', workerId: a.id, reason: 'oom' });
    expect(a.state).toBe('errored');
    t.decide([
      { kind: 'destroy', id: a.id, reason: 'errored' },
      { kind: 'activate', id: b.id, reason: 'needed' },
    ]);
    t.scaler.tick();
    await t.settle();
    expect([a.state, b.state]).toEqual(['destroyed', 'starting']);
    expect(t.provider.calls).toEqual([`destroy ${a.id}`, `start ${b.id}`]);
  });

  it('a worker not ready within load_timeout_seconds is errored at a tick', () => {
    const t = setup({ load_timeout_seconds: 60 });
    const w = addTestWorker(t.reg, 'a');
    t.clock.advanceBy(59_000);
    t.scaler.tick();
    expect(w.state).toBe('created');
    t.clock.advanceBy(2_000);
    t.scaler.tick();
    expect(w.state).toBe('errored');
  });

  it('a rolling update replaces idle workers of the workergroup', () => {
    const t = setup();
    const w = addTestWorker(t.reg, 'a');
    t.reg.transition(w, 'ready', 'test');
    expect(t.scaler.markForUpdate(t.ep, 'wg')).toBe(1);
    t.scaler.tick();
    expect(w.state).toBe('destroyed');
  });

  it('the stale and load-timeout check skips its pass only when the old full pass would find nothing (random steps, the old pass as reference)', async () => {
    let a = 7;
    const r = () => {
      a = (a * 1103515245 + 12345) % 2147483648;
      return a / 2147483648;
    };
    const t = setup({ load_timeout_seconds: 60, stale_after_seconds: 30 });
    const staleMs = 30_000;
    const loadMs = 60_000;
    let expectedProbes = 0;
    let expectedErrors = 0;
    for (let step = 0; step < 1500; step++) {
      const x = r();
      const live = [...t.reg.workers.values()].filter((w) => w.state !== 'destroyed' && w.state !== 'errored');
      const w = live[Math.floor(r() * live.length)];
      if (x < 0.08 || !w) addTestWorker(t.reg, 'a');
      else if (x < 0.2) t.reg.transition(w, r() < 0.5 ? 'loading' : 'ready', 'test');
      else if (x < 0.3) w.url = r() < 0.9 ? `http://w${w.id}.invalid` : null;
      else if (x < 0.55) w.lastReportAt = t.clock.now();
      else if (x < 0.6) t.reg.transition(w, 'inactive', 'test');
      else {
        t.clock.advanceBy(Math.floor(r() * (r() < 0.1 ? 70_000 : 8_000)));
        const now = t.clock.now();
        // The old pass, as it was: which workers time out, which are probed.
        const errored = new Set<number>();
        const probed = new Set<number>();
        for (const v of t.reg.workers.values()) {
          if (
            (v.state === 'created' || v.state === 'loading' || v.state === 'starting') &&
            now - v.stateSince > loadMs &&
            (v.state !== 'created' || now - v.createdAt > loadMs)
          ) {
            errored.add(v.id);
            continue;
          }
          if (v.state !== 'loading' && v.state !== 'ready' && v.state !== 'starting') continue;
          if (v.probing || !v.url) continue;
          if (now - Math.max(v.lastReportAt ?? 0, v.stateSince, v.lastProbeOkAt ?? 0) > staleMs) probed.add(v.id);
        }
        const probingBefore = new Set([...t.reg.workers.values()].filter((v) => v.probing).map((v) => v.id));
        t.scaler.tick();
        for (const v of t.reg.workers.values()) {
          if (errored.has(v.id)) expect([v.id, v.state]).toEqual([v.id, 'errored']);
          if (!probingBefore.has(v.id)) expect([v.id, v.probing]).toEqual([v.id, probed.has(v.id)]);
        }
        expectedErrors += errored.size;
        expectedProbes += probed.size;
        // Probes answer (alive) before the next step, as a real one would within probe_timeout.
        await t.settle();
        await t.settle();
      }
    }
    // Both kinds of finding happened, so skipping a pass that had work would have been caught.
    expect(expectedProbes).toBeGreaterThan(20);
    expect(expectedErrors).toBeGreaterThan(5);
  });

  it("the policy's workers, reused across ticks while unchanged, equal a fresh build at every tick (random steps, the old build as reference)", () => {
    const t = setup({ load_timeout_seconds: 100_000, stale_after_seconds: 100_000 });
    t.reg.addEndpoint(endpointCfg('b', { max_workers: 10 }));
    const r = seededRandom(22);
    const states = ['loading', 'ready', 'inactive', 'starting', 'errored', 'destroyed'] as const;
    let previous = new Map<number, PolicyWorker>();
    let reused = 0;
    let rebuilt = 0;
    for (let step = 0; step < 3000; step++) {
      const x = r();
      const all = [...t.reg.workers.values()].filter((w) => w.state !== 'destroyed');
      const w = all[Math.floor(r() * all.length)];
      if (x < 0.1 || !w) {
        const n = addTestWorker(t.reg, r() < 0.8 ? 'a' : 'b');
        n.url = `http://w${n.id}.invalid`;
      } else if (x < 0.25) t.reg.transition(w, states[Math.floor(r() * states.length)]!, 'test');
      else if (x < 0.35) w.maxPerf = r() < 0.3 ? 0 : Math.floor(r() * 4) * 50;
      else if (x < 0.45) w.reqsWorking = r() < 0.5 ? 0 : 1;
      else if (x < 0.5) w.dollarsPerHour = r() < 0.5 ? 1 : 2;
      else if (x < 0.55) t.ep.router.noteFailure(w.id);
      else if (x < 0.6) t.ep.router.noteSuccess(w.id);
      else if (x < 0.65) t.reg.routableChanged(w.endpoint);
      else {
        t.clock.advanceBy(Math.floor(r() * 3000));
        const before = t.inputs.length;
        t.scaler.tick();
        const input = t.inputs.find((i, k) => k >= before && i.workers.every((pw) => t.reg.workers.get(pw.id)?.endpoint === 'a'));
        expect(input).toBeDefined();
        // The old build, as it was, from the state the policy was given (read now: nothing moved since).
        const estimates = typeEstimates(input!.machines);
        const fallback = [...estimates.values()].reduce((s, v) => s + v, 0) / Math.max(1, estimates.size) || 100;
        const routableIds = new Set(t.reg.routable('a').map((rw) => rw.id));
        const reference = t.reg
          .workersOf('a')
          .filter((v) => v.state !== 'destroyed')
          .map((v) => ({
            id: v.id,
            state: v.state,
            typeKey: v.typeKey,
            perf: v.maxPerf > 0 ? v.maxPerf : (estimates.get(v.typeKey) ?? t.reg.perf.estimate(v.typeKey) ?? fallback),
            dollarsPerHour: v.dollarsPerHour,
            busy: t.ep.router.outstanding(v.id) > 0 || v.reqsWorking > 0,
            stateSince: v.stateSince,
            ...(routableIds.has(v.id) && t.ep.router.unproven(v.id) ? { suspect: true } : {}),
          }));
        expect(input!.workers).toStrictEqual(reference);
        const now = new Map<number, PolicyWorker>();
        for (const pw of input!.workers) {
          expect(Object.isFrozen(pw)).toBe(true);
          const prev = previous.get(pw.id);
          if (prev === pw) reused++;
          else if (prev) rebuilt++;
          now.set(pw.id, pw);
        }
        previous = now;
      }
    }
    // Both paths were taken: objects kept across ticks, and rebuilt after a change.
    expect(reused).toBeGreaterThan(1000);
    expect(rebuilt).toBeGreaterThan(100);
  });

  it("a timer's tick saves in a slice of its own right after (one pending save at most); a direct tick saves before it returns; stop cancels", () => {
    const t = setup();
    let savedAtPolicy = -1;
    t.scaler.tick();
    expect(t.ticks()).toBe(1);
    // The timer path: the policy runs, the save does not, until the clock runs the next macrotask.
    const n = t.inputs.length;
    t.scaler.tick(true);
    expect(t.inputs.length).toBeGreaterThan(n);
    expect(t.ticks()).toBe(1);
    t.scaler.tick(true);
    expect(t.ticks()).toBe(1);
    t.clock.advanceBy(0);
    expect(t.ticks()).toBe(2);
    // Started: each interval runs a tick, then its save.
    t.scaler.start();
    t.clock.advanceBy(1000);
    expect(t.ticks()).toBe(3);
    savedAtPolicy = t.ticks();
    t.scaler.tick(true);
    t.scaler.stop();
    t.clock.advanceBy(5000);
    expect(t.ticks()).toBe(savedAtPolicy);
  });

  it('fleetOf and capacity (one pass) equal the filter-per-state build on random fleets', () => {
    const r = seededRandom(9);
    const states = ['created', 'loading', 'ready', 'inactive', 'starting', 'errored', 'destroyed'] as const;
    for (let round = 0; round < 300; round++) {
      const workers: PolicyWorker[] = Array.from({ length: Math.floor(r() * 40) }, (_, i) => ({
        id: i + 1,
        state: states[Math.floor(r() * states.length)]!,
        typeKey: 'wg/gpu',
        perf: Math.floor(r() * 300) / 7,
        dollarsPerHour: 1,
        busy: r() < 0.5,
        stateSince: 0,
        ...(r() < 0.2 ? { suspect: true } : {}),
      }));
      for (const withoutSuspects of [false, true]) {
        // The old build, as it was.
        const live = workers.filter((w) => w.state !== 'destroyed');
        const by = (...ss: string[]) => live.filter((w) => ss.includes(w.state));
        const reference = {
          live,
          ready: by('ready').filter((w) => !(withoutSuspects && w.suspect)),
          starting: by('starting'),
          loading: by('created', 'loading'),
          inactive: by('inactive'),
          errored: by('errored'),
        };
        const fleet = fleetOf(workers, withoutSuspects);
        expect(fleet).toEqual(reference);
        for (const k of Object.keys(reference) as Array<keyof typeof reference>) expect(capacity(fleet[k])).toBe(reference[k].reduce((a, w) => a + w.perf, 0));
      }
    }
  });
});
