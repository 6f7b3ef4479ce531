import { describe, expect, it } from 'vitest';
import { EndpointRouter, MIN_ROUTE_QUEUE_S, type RoutableWorker } from '../src/autoscaler/router.js';

/**
 * The queue budget (the default policy's routeQueueBudget = target_queue_time): a request that
 * waited in the global queue is placed at a worker only within what is left of its budget, so it
 * is not queued a second time behind a full worker while capacity is coming.
 */

function setup(budget: number) {
  let now = 0;
  const workers: RoutableWorker[] = [
    { id: 1, url: 'http://w1.invalid', perf: 100, reportedLoad: 1200, lastReportAt: 0 },
    { id: 2, url: 'http://w2.invalid', perf: 100, reportedLoad: 1200, lastReportAt: 0 },
  ];
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => now,
    sign: () => 'sig',
    readyWorkers: () => workers,
    maxQueueTime: () => 30,
    queueBudget: () => budget,
    unreportedTtlMs: 60_000,
    requestTtlMs: 3_600_000,
  });
  return {
    router,
    workers,
    at: (ms: number) => {
      now = ms;
    },
  };
}

describe('router queue budget', () => {
  it('a fresh request may take a worker with up to the budget of queue', () => {
    const { router, workers } = setup(10);
    workers[0]!.reportedLoad = 500; // 5 s of queue
    router.workerChanged(workers[0]!.id);
    const e = router.submit(1, 10, 60);
    expect(e.state).toBe('routed');
    expect(e.workerId).toBe(1);
  });

  it('a request that waited 8 s takes only a worker with at most 2 s of queue; without a budget it takes the 5 s one', () => {
    for (const budget of [10, 0]) {
      const { router, workers, at } = setup(budget);
      // Both workers hold 12 s: over a budget of 10, within max_queue_time (30) alone.
      const e = router.submit(1, 10, 60);
      if (budget === 0) {
        expect(e.state).toBe('routed');
        continue;
      }
      expect(e.state).toBe('queued');
      at(8_000);
      workers[0]!.reportedLoad = 500; // 5 s: more than the 2 s left of its budget
      router.workerChanged(workers[0]!.id);
      router.drain();
      expect(e.state).toBe('queued');
      workers[1]!.reportedLoad = 150; // 1.5 s
      router.workerChanged(workers[1]!.id);
      router.drain();
      expect(e.state).toBe('routed');
      expect(e.workerId).toBe(2);
    }
  });

  it('a request past its budget still takes a worker holding under MIN_ROUTE_QUEUE_S, oldest first', () => {
    const { router, workers, at } = setup(10);
    const old = router.submit(1, 10, 60);
    at(5_000);
    const young = router.submit(2, 10, 60);
    at(15_000);
    // Both are past their budget (15 s and 10 s waited): only a queue under MIN_ROUTE_QUEUE_S takes them.
    workers[0]!.reportedLoad = (MIN_ROUTE_QUEUE_S + 1) * 100; // 3 s
    router.workerChanged(workers[0]!.id);
    router.drain();
    expect(old.state).toBe('queued');
    expect(young.state).toBe('queued');
    workers[0]!.reportedLoad = (MIN_ROUTE_QUEUE_S - 0.5) * 100; // 1.5 s
    router.workerChanged(workers[0]!.id);
    router.drain();
    expect(old.state).toBe('routed');
    expect(old.workerId).toBe(1);
  });
});
