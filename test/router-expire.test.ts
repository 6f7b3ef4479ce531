import { describe, expect, it } from 'vitest';
import { EndpointRouter, type PendingRequest, type RoutableWorker } from '../src/autoscaler/router.js';
import { seededRandom } from '../src/common/random.js';

/**
 * `expire` visits only what can expire: the timed-out requests (not every request), and each
 * worker's routed requests from the oldest until the first too young (they are in routing order).
 * Checked against an oracle kept by the test over thousands of random steps, and with books whose
 * order a restore broke (the visit must then go through the whole book).
 */

const UNREPORTED_TTL = 60_000;
const REQUEST_TTL = 300_000;

function setup() {
  let now = 1_000_000;
  const workers: RoutableWorker[] = [1, 2, 3].map((id) => ({ id, url: `http://w${id}.invalid`, perf: 100, reportedLoad: 0, lastReportAt: 0 }));
  let ready = workers;
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => now,
    sign: () => 'sig',
    readyWorkers: () => ready,
    maxQueueTime: () => 1e9,
    unreportedTtlMs: UNREPORTED_TTL,
    requestTtlMs: REQUEST_TTL,
  });
  return {
    router,
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    setReady: (on: boolean) => {
      ready = on ? workers : [];
    },
  };
}

describe('router: expire visits only what can expire', () => {
  it('routed requests leave after request_ttl, timed-out ones are forgotten after the keep, exactly as an oracle says', () => {
    for (const seed of [1, 2, 3]) {
      const r = seededRandom(seed);
      const { router, now, advance, setReady } = setup();
      /** idx → routing time, for routed requests not completed. */
      const routed = new Map<number, number>();
      /** idx → last seen, for queued requests. */
      const queued = new Map<number, { seen: number; timeout: number }>();
      const timedOutAt = new Map<number, number>();
      let idx = 0;
      for (let step = 0; step < 3000; step++) {
        const x = r();
        if (x < 0.4) {
          setReady(r() < 0.8);
          const timeout = 10_000 + Math.floor(r() * 50_000);
          const e = router.submit(++idx, 1, timeout / 1000);
          if (e.state === 'routed') routed.set(idx, now());
          else queued.set(idx, { seen: now(), timeout });
        } else if (x < 0.55 && routed.size > 0) {
          const ids = [...routed.keys()];
          const id = ids[Math.floor(r() * ids.length)]!;
          expect(router.complete(router.get(id)!.workerId!, [id], true)).toBe(1);
          routed.delete(id);
        } else {
          advance(Math.floor(r() * 20_000));
          router.expire();
          const t = now();
          for (const [id, at] of routed) if (t - at > REQUEST_TTL) routed.delete(id);
          for (const [id, q] of queued) {
            const e = router.get(id);
            if (e?.state === 'routed') {
              // Routed from the queue by a later submit's drain.
              routed.set(id, e.routedAt!);
              queued.delete(id);
            } else if (t - q.seen > q.timeout) {
              queued.delete(id);
              timedOutAt.set(id, q.seen + q.timeout);
            }
          }
          for (const [id, at] of timedOutAt) if (t - at > 60_000 + 1) timedOutAt.delete(id);
          const open = router
            .exportPending()
            .filter((p) => p.state === 'routed')
            .map((p) => p.idx)
            .sort((a, b) => a - b);
          const known = [...routed.keys()].filter((id) => router.get(id)?.state === 'routed').sort((a, b) => a - b);
          expect(open).toEqual(known);
          for (const id of routed.keys()) expect(router.get(id)?.state).toBe('routed');
          for (const id of timedOutAt.keys()) expect(['timed_out', undefined]).toContain(router.get(id)?.state);
          // Gone some time after the keep: never kept for ever.
          for (let id = 1; id <= idx; id++) {
            const e = router.get(id);
            if (e?.state === 'timed_out') expect(t - e.lastSeenAt).toBeLessThanOrEqual(e.replayTimeoutMs + 60_000 + 20_000);
          }
        }
      }
      expect(idx).toBeGreaterThan(1000);
    }
  });

  it('a book restored out of routing order: its oldest request still leaves after request_ttl', () => {
    const { router, now, advance } = setup();
    const t0 = now();
    const pending = (idx: number, routedAt: number): PendingRequest => ({
      idx,
      cost: 1,
      createdAt: routedAt - 10,
      replayTimeoutMs: 60_000,
      state: 'routed',
      workerId: 1,
      routedAt,
      answer: { url: 'http://w1.invalid' } as PendingRequest['answer'],
      reported: true,
      expectedQueueTime: 0,
      lastSeenAt: routedAt,
      avoid: [],
      attempts: 1,
      delivered: true,
    });
    // The young one first, the old one after it (a restore takes them in creation order).
    router.importPending([pending(1, t0 - 1000), pending(2, t0 - REQUEST_TTL + 5_000)], 0);
    // And one routed now, after them, to the same worker's book.
    const e = router.submit(3, 1, 60);
    expect(e.state).toBe('routed');
    advance(10_000);
    router.expire();
    expect(router.get(2)).toBeUndefined();
    expect(router.get(1)?.state).toBe('routed');
    expect(router.get(3)?.state).toBe('routed');
  });
});
