import { describe, expect, it } from 'vitest';
import { engineTimingSchema } from '../src/autoscaler/config.js';
import { decide, type Decision, type PolicyInput } from '../src/autoscaler/policy.js';
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
});
