import { describe, expect, it } from 'vitest';
import { EndpointRouter, type RoutableWorker } from '../src/autoscaler/router.js';

/**
 * The router remembers how routed requests ended (for a late re-route of the id: which worker
 * failed it) for 10 minutes and at most 100,000 of them, oldest forgotten first. The memory is
 * evicted from a side array, not by walking the Map from its front (quadratic once it is full).
 */

function setup() {
  let now = 0;
  const workers: RoutableWorker[] = [
    { id: 1, url: 'http://w1.invalid', perf: 1e9, reportedLoad: 0, lastReportAt: 0 },
    { id: 2, url: 'http://w2.invalid', perf: 1e9, reportedLoad: 0, lastReportAt: 0 },
  ];
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => now,
    sign: () => 'sig',
    readyWorkers: () => workers,
    maxQueueTime: () => 30,
    unreportedTtlMs: 60_000,
    requestTtlMs: 3_600_000,
  });
  return {
    router,
    at: (ms: number) => {
      now = ms;
    },
  };
}

/** Route `idx` and finish it at its worker; returns that worker. */
function serve(router: EndpointRouter, idx: number, success = true): number {
  const e = router.submit(idx, 1, 60);
  expect(e.state).toBe('routed');
  const worker = e.workerId!;
  expect(router.complete(worker, [idx], success)).toBe(1);
  return worker;
}

describe('router: the memory of finished requests', () => {
  it('a late re-route of a finished id avoids the worker that had it', () => {
    const { router } = setup();
    const first = serve(router, 1);
    const { entry, failed } = router.reroute(1, 1, 60);
    expect(failed).toBe(first);
    expect(entry.state).toBe('routed');
    expect(entry.workerId).not.toBe(first);
  });

  it('keeps the newest 100,000 ends: the oldest is forgotten first, a re-finished id counts by its last end', () => {
    const { router } = setup();
    serve(router, 1);
    // id 2 ends, is re-routed (its end forgotten) and ends again later: its record is the newer one.
    serve(router, 2);
    router.reroute(2, 1, 60);
    const again = router.get(2)!;
    router.complete(again.workerId!, [2], true);
    for (let idx = 3; idx <= 100_001; idx++) serve(router, idx);
    // 100,001 ends recorded (1, 3..100,001, and 2's second): the oldest, id 1's, is gone.
    expect(router.reroute(1, 1, 60).failed).toBeNull();
    expect(router.reroute(2, 1, 60).failed).toBe(again.workerId);
    expect(router.reroute(100_001, 1, 60).failed).not.toBeNull();
  });

  it('forgets ends older than 10 minutes at expire()', () => {
    const { router, at } = setup();
    serve(router, 1);
    at(5 * 60_000);
    serve(router, 2);
    at(10 * 60_000 + 1);
    router.expire();
    expect(router.reroute(1, 1, 60).failed).toBeNull();
    expect(router.reroute(2, 1, 60).failed).not.toBeNull();
  });
});
