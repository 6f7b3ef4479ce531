import { describe, expect, it } from 'vitest';
import { engineTimingSchema } from '../src/autoscaler/config.js';
import { decide, type PolicyInput } from '../src/autoscaler/policy.js';
import { Scaler } from '../src/autoscaler/scaler.js';
import { RecordingProvider } from './helpers/autoscaler.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/**
 * Failover to a standby, the scaler's half (issue 22 point 5), with the real policy: one ready
 * worker and one inactive standby; the ready one fails a request (its client re-routes it). It is
 * then no ready capacity, so the standby is started, kept once ready while the failing worker is
 * unproven, and the re-routed request goes to the standby when it becomes ready.
 */

function setup() {
  const { reg, clock } = testRegistry();
  // One active worker's worth of floor, two loaded workers, no scale-down delay: a standby started
  // for nothing would be stopped at the very next tick.
  const ep = reg.addEndpoint(endpointCfg('a', { max_workers: 2, cold_workers: 2, min_load: 1, scale_down_delay: 0 }));
  const provider = new RecordingProvider();
  const inputs: PolicyInput[] = [];
  const scaler = new Scaler(reg, {
    clock,
    provider,
    timing: engineTimingSchema.parse({ tick_seconds: 1 }),
    reportAddrs: () => ['http://127.0.0.1:1'],
    policy: (input) => {
      inputs.push(input);
      return decide(input);
    },
  });
  const serving = addTestWorker(reg, 'a');
  const standby = addTestWorker(reg, 'a');
  for (const [w, port] of [
    [serving, 9001],
    [standby, 9002],
  ] as const) {
    w.url = `http://127.0.0.1:${port}`;
    w.maxPerf = 100;
    w.lastReportAt = clock.now();
    reg.transition(w, 'ready', 'test');
  }
  reg.transition(standby, 'inactive', 'test: the standby');
  const tick = async (ms = 1000) => {
    clock.advanceBy(ms);
    scaler.tick();
    await new Promise((r) => setImmediate(r));
  };
  return { reg, clock, ep, provider, scaler, inputs, serving, standby, tick };
}

describe('scaler: failover to a standby', () => {
  it('without a failure, the one ready worker is enough: the standby stays inactive', async () => {
    const t = setup();
    for (let i = 0; i < 3; i++) await t.tick();
    expect(t.standby.state).toBe('inactive');
    expect(t.serving.state).toBe('ready');
    expect(t.provider.calls).toEqual([]);
  });

  it('a re-route away from the ready worker starts the standby, keeps it, and the failover goes to it once ready', async () => {
    const t = setup();
    await t.tick();
    const router = t.ep.router;
    // A request routed to the serving worker, handed to the client...
    const e = router.submit(t.reg.allocRequestIdx(), 100, 60);
    expect(e.workerId).toBe(t.serving.id);
    e.delivered = true;
    // ...which re-routes the same request_idx after the worker answered 500.
    const { entry, failed } = router.reroute(e.idx, 100, 60);
    expect(failed).toBe(t.serving.id);
    expect(router.unproven(t.serving.id)).toBe(true);
    await t.tick();
    // The failing worker is no ready capacity: the policy saw it suspect and started the standby.
    const input = t.inputs.at(-1)!;
    expect(input.workers.find((w) => w.id === t.serving.id)!.suspect).toBe(true);
    expect(t.standby.state).toBe('starting');
    expect(t.provider.calls).toEqual([`start ${t.standby.id}`]);
    // While it starts, the failover waits for it (never back to the worker that failed it).
    for (let i = 0; i < 5; i++) await t.tick();
    expect(entry.state).toBe('queued');
    // The standby reports ready: the failover goes to it at once.
    t.standby.lastReportAt = t.clock.now();
    t.reg.transition(t.standby, 'ready', 'test: started again');
    expect(entry.state).toBe('routed');
    expect(entry.workerId).toBe(t.standby.id);
    // Kept while the failing worker is unproven: ticks go by and nothing is stopped.
    for (let i = 0; i < 5; i++) await t.tick();
    expect(t.standby.state).toBe('ready');
    expect(t.provider.calls).toEqual([`start ${t.standby.id}`]);
  });

  it('a request the failing worker reports failed (its model answered 500) counts the same; one it serves well makes it capacity again', async () => {
    const t = setup();
    await t.tick();
    const router = t.ep.router;
    // Two requests at the serving worker; its model fails the first.
    const bad = router.submit(t.reg.allocRequestIdx(), 100, 60);
    const good = router.submit(t.reg.allocRequestIdx(), 100, 60);
    expect([bad.workerId, good.workerId]).toEqual([t.serving.id, t.serving.id]);
    router.complete(t.serving.id, [bad.idx], false);
    await t.tick();
    expect(t.inputs.at(-1)!.workers.find((w) => w.id === t.serving.id)!.suspect).toBe(true);
    expect(t.standby.state).toBe('starting');
    t.reg.transition(t.standby, 'ready', 'test: started again');
    // It serves the second one well: proven again, and capacity at the next tick.
    router.complete(t.serving.id, [good.idx], true);
    expect(router.unproven(t.serving.id)).toBe(false);
    await t.tick();
    expect(t.inputs.at(-1)!.workers.every((w) => !w.suspect)).toBe(true);
  });
});
