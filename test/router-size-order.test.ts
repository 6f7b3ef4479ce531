import { describe, expect, it } from 'vitest';
import { endpointParamsSchema } from '../src/autoscaler/params.js';
import { EndpointRouter, type RoutableWorker } from '../src/autoscaler/router.js';

/**
 * `queue_order`: waiting requests take a freed worker smallest first (a request that waited
 * `agingMs`, or came back from a worker, before them), or in arrival order.
 */
function setup(order: 'smallest' | 'arrival', agingMs = 20_000) {
  let now = 0;
  // One worker of 10 load/s that takes at most 1 s of expected queue: one request of cost ≥ 10 fills it.
  const workers: RoutableWorker[] = [{ id: 1, url: 'http://w1.invalid', perf: 10, reportedLoad: 0, lastReportAt: 0 }];
  const routed: number[] = [];
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => now,
    sign: () => 'sig',
    readyWorkers: () => workers,
    maxQueueTime: () => 1,
    unreportedTtlMs: 60_000,
    requestTtlMs: 3_600_000,
    smallestFirst: () => order === 'smallest',
    agingMs: () => agingMs,
    onRouted: (e) => routed.push(e.idx),
  });
  return {
    router,
    routed,
    at: (ms: number) => {
      now = ms;
    },
  };
}

/** Worker 1 ends these requests (as its /delete_requests/ does), and the queue moves. */
function finishAll(router: EndpointRouter, routed: number[]): void {
  for (const idx of [...routed]) router.complete(1, [idx], true);
  router.drain();
}

describe('queue order', () => {
  it('smallest: a freed worker takes the smallest waiting request, then the next smallest', () => {
    const { router, routed } = setup('smallest');
    router.submit(1, 50, 60);
    expect(routed).toEqual([1]);
    router.submit(2, 50, 60);
    router.submit(3, 10, 60);
    router.submit(4, 30, 60);
    expect(routed).toEqual([1]);
    for (let round = 0; round < 3; round++) finishAll(router, routed.slice(-1));
    expect(routed).toEqual([1, 3, 4, 2]);
  });

  it('arrival: the same requests in the order they came', () => {
    const { router, routed } = setup('arrival');
    router.submit(1, 50, 60);
    router.submit(2, 50, 60);
    router.submit(3, 10, 60);
    router.submit(4, 30, 60);
    for (let round = 0; round < 3; round++) finishAll(router, routed.slice(-1));
    expect(routed).toEqual([1, 2, 3, 4]);
  });

  it('smallest: a request that waited agingMs goes before smaller ones (none waits forever)', () => {
    const { router, routed, at } = setup('smallest', 20_000);
    router.submit(1, 50, 600);
    router.submit(2, 50, 600); // waits from t = 0
    at(25_000);
    router.submit(3, 10, 600);
    router.submit(4, 5, 600);
    finishAll(router, routed.slice(-1));
    expect(routed).toEqual([1, 2]);
    // Then the smaller first: 4 (5), and 3 (10) fits beside it within the worker's 1 s of queue.
    finishAll(router, routed.slice(-1));
    expect(routed).toEqual([1, 2, 4, 3]);
  });

  it('the parameter: smallest by default, arrival accepted, anything else refused naming it', () => {
    expect(endpointParamsSchema.parse({}).queue_order).toBe('smallest');
    expect(endpointParamsSchema.parse({ queue_order: 'arrival' }).queue_order).toBe('arrival');
    const bad = endpointParamsSchema.safeParse({ queue_order: 'random' });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.path).toEqual(['queue_order']);
  });
});
