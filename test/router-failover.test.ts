import { describe, expect, it } from 'vitest';
import { AVOID_HARD_MS, AVOID_MS, EndpointRouter, type RoutableWorker } from '../src/autoscaler/router.js';

/**
 * Failover to a standby, the router's half (issue 22 point 5): a worker that failed a request is
 * "unproven" (not ready capacity for the scaler) until it serves one well; while a standby is on
 * its way, a re-routed request waits for it instead of going back to the worker that failed it;
 * once the standby is ready, the waiting request goes to it at the next drain.
 */

function setup() {
  let now = 0;
  let standby = false;
  const workers: RoutableWorker[] = [{ id: 1, url: 'http://w1.invalid', perf: 100, reportedLoad: 0, lastReportAt: 0 }];
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => now,
    sign: (url) => `sig:${url}`,
    readyWorkers: () => workers,
    maxQueueTime: () => 30,
    standbyComing: () => standby,
    unreportedTtlMs: 60_000,
    requestTtlMs: 3_600_000,
  });
  return {
    router,
    workers,
    at: (ms: number) => {
      now = ms;
    },
    setStandby: (v: boolean) => {
      standby = v;
    },
  };
}

/** Route a new request and hand its answer to the client (what /route/ does). */
function routeAndDeliver(router: EndpointRouter, idx: number) {
  const e = router.submit(idx, 100, 60);
  e.delivered = e.state === 'routed';
  return e;
}

describe('router: a worker that failed a request', () => {
  it('is unproven after a client re-routes away from it, and again proven only by a request it served well', () => {
    const { router } = setup();
    const e = routeAndDeliver(router, 1);
    expect(e.workerId).toBe(1);
    expect(router.unproven(1)).toBe(false);
    const out = router.reroute(1, 100, 60);
    expect(out.failed).toBe(1);
    expect(router.unproven(1)).toBe(true);
    // A request that ended badly does not prove it...
    const e2 = routeAndDeliver(router, 2);
    router.complete(1, [e2.idx], false);
    expect(router.unproven(1)).toBe(true);
    // ...one that it served does.
    const e3 = routeAndDeliver(router, 3);
    expect(e3.workerId).toBe(1);
    router.complete(1, [e3.idx], true);
    expect(router.unproven(1)).toBe(false);
  });

  it('is unproven after it reports a request failed (a 5xx of its model)', () => {
    const { router } = setup();
    const e = routeAndDeliver(router, 1);
    router.complete(1, [e.idx], false);
    expect(router.unproven(1)).toBe(true);
  });

  it('is forgotten as unproven once its failure score has faded and nothing failed since', () => {
    const { router, at } = setup();
    routeAndDeliver(router, 1);
    router.reroute(1, 100, 60);
    at(60_000);
    router.expire();
    expect(router.unproven(1)).toBe(true);
    at(200_000);
    router.expire();
    expect(router.unproven(1)).toBe(false);
  });

  it('a departing worker (errored, stopped) is no longer unproven', () => {
    const { router } = setup();
    routeAndDeliver(router, 1);
    router.reroute(1, 100, 60);
    router.dropWorker(1);
    expect(router.unproven(1)).toBe(false);
  });
});

describe('router: re-routes while a standby is coming', () => {
  it('the re-routed request waits for the standby instead of going back to the worker that failed it, and takes the standby once it is ready', () => {
    const { router, workers, at, setStandby } = setup();
    routeAndDeliver(router, 1);
    setStandby(true);
    const { entry } = router.reroute(1, 100, 60);
    expect(entry.state).toBe('queued');
    // Past the hard avoidance window, and past the soft one: still not sent back to worker 1.
    for (const t of [AVOID_HARD_MS + 1, AVOID_MS + 1, 25_000]) {
      at(t);
      router.drain();
      expect(entry.state).toBe('queued');
    }
    // A new request does not go to the failing worker either while the standby comes.
    const fresh = router.submit(2, 100, 60);
    expect(fresh.state).toBe('queued');
    // The standby is ready: both go to it at the next drain, the failover first.
    workers.push({ id: 2, url: 'http://w2.invalid', perf: 100, reportedLoad: 0, lastReportAt: 25_000 });
    setStandby(false);
    router.drain();
    expect(entry.state).toBe('routed');
    expect(entry.workerId).toBe(2);
    expect(entry.answer?.url).toBe('http://w2.invalid');
    expect(entry.answer?.signature).toBe('sig:http://w2.invalid');
    // The new one is routed too (to either: worker 1's failure has faded by now), after the failover.
    expect(fresh.state).toBe('routed');
    expect(entry.answer!.reqnum).toBeLessThan(fresh.answer!.reqnum);
  });

  it('without a standby coming, the only worker gets the re-route back once the hard avoidance window has passed (as before)', () => {
    const { router, at } = setup();
    routeAndDeliver(router, 1);
    const { entry } = router.reroute(1, 100, 60);
    expect(entry.state).toBe('queued');
    at(AVOID_HARD_MS + 1);
    router.drain();
    expect(entry.state).toBe('routed');
    expect(entry.workerId).toBe(1);
  });

  it('a healthy ready worker takes a re-route at once, standby or not', () => {
    const { router, workers, setStandby } = setup();
    workers.push({ id: 2, url: 'http://w2.invalid', perf: 100, reportedLoad: 500, lastReportAt: 0 });
    const e = routeAndDeliver(router, 1);
    expect(e.workerId).toBe(1);
    setStandby(true);
    const { entry } = router.reroute(1, 100, 60);
    expect(entry.state).toBe('routed');
    expect(entry.workerId).toBe(2);
  });
});

describe('router: picking among many workers', () => {
  it('spreads requests over tied workers in turn, and takes a strictly better one first', () => {
    const { router, workers } = setup();
    workers.length = 0;
    for (let id = 1; id <= 5; id++) workers.push({ id, url: `http://w${id}.invalid`, perf: 100, reportedLoad: 0, lastReportAt: 0 });
    const picks: number[] = [];
    for (let i = 1; i <= 7; i++) {
      // Each routed request stays unreported, so a chosen worker is no longer tied with the idle ones.
      picks.push(router.submit(i, 100, 60).workerId!);
    }
    // Every idle worker gets one before any gets a second, and the next two go to two of them.
    expect([...picks.slice(0, 5)].sort()).toEqual([1, 2, 3, 4, 5]);
    expect(new Set(picks.slice(5)).size).toBe(2);
    // A faster worker wins outright.
    workers.push({ id: 9, url: 'http://w9.invalid', perf: 1000, reportedLoad: 0, lastReportAt: 0 });
    expect(router.submit(8, 100, 60).workerId).toBe(9);
  });
});

describe('router: signatures off the request path', () => {
  it('a url signed ahead (presign) is not signed again when a request is routed to it; strict mode signs every answer', () => {
    const signed: string[] = [];
    const workers: RoutableWorker[] = [{ id: 1, url: 'http://w1.invalid', perf: 100, reportedLoad: 0, lastReportAt: 0 }];
    const base = { endpoint: 'e', now: () => 0, readyWorkers: () => workers, maxQueueTime: () => 30, unreportedTtlMs: 60_000, requestTtlMs: 3_600_000 };
    const router = new EndpointRouter({
      ...base,
      sign: (url) => {
        signed.push(url);
        return `sig:${url}`;
      },
    });
    router.presign('http://w1.invalid');
    router.presign('http://w1.invalid');
    expect(signed).toEqual(['http://w1.invalid']);
    const e = router.submit(1, 10, 60);
    expect(e.answer?.signature).toBe('sig:http://w1.invalid');
    expect(signed).toEqual(['http://w1.invalid']);
    // Strict mode: presign does nothing, each answer is signed whole.
    let strictCalls = 0;
    const strict = new EndpointRouter({
      ...base,
      sign: () => {
        throw new Error('the url alone is never signed in strict mode');
      },
      strictAuth: { sign: () => `strict${++strictCalls}`, ttlSeconds: 60, wallClock: () => 0 },
    });
    strict.presign('http://w1.invalid');
    expect(strict.submit(1, 10, 60).answer?.signature).toBe('strict1');
    expect(strict.submit(2, 10, 60).answer?.signature).toBe('strict2');
  });
});
