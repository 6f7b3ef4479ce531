import { describe, expect, it } from 'vitest';
import { EndpointRouter, type RoutableWorker, waitMicros } from '../src/autoscaler/router.js';
import { seededRandom } from '../src/common/random.js';

/**
 * The router's incremental structures against the computations they replaced, kept here as the
 * reference: the queue signal's running sum of recent waits (a fresh float sum over the last 10 s
 * of routings), and `anySuspect` (false only when `suspect` is false of every worker).
 */

const RECENT_WAIT_MS = 10_000;
const SUSPECT_AFTER_MS = 5_000;

function setup() {
  let now = 1_000_000;
  // Odd perfs and fractional loads: waits are floats with long mantissas, as in the engine.
  const workers: RoutableWorker[] = [3, 7, 11, 13].map((perf, i) => ({
    id: i + 1,
    url: `http://w${i + 1}.invalid`,
    perf,
    reportedLoad: 0,
    lastReportAt: 0,
  }));
  const router = new EndpointRouter({
    endpoint: 'e',
    now: () => now,
    sign: () => 'sig',
    readyWorkers: () => workers,
    maxQueueTime: () => 1e9,
    unreportedTtlMs: 60_000,
    requestTtlMs: 300_000,
  });
  return {
    router,
    workers,
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe('router: incremental structures match the old computations', () => {
  it('the queue signal (running sum of recent waits in µs) equals a fresh sum over the last 10 s of routings', () => {
    for (const seed of [1, 2, 3, 4]) {
      const r = seededRandom(seed);
      const { router, workers, now, advance } = setup();
      /** Every routing: time and expected queue time, the reference's input. */
      const routings: Array<{ at: number; wait: number }> = [];
      const open: Array<[number, number]> = [];
      let idx = 0;
      let nonZero = 0;
      for (let step = 0; step < 4000; step++) {
        const x = r();
        if (x < 0.5) {
          const e = router.submit(++idx, 1 + r() * 50, 1e6);
          expect(e.state).toBe('routed');
          routings.push({ at: now(), wait: e.expectedQueueTime! });
          open.push([e.workerId!, idx]);
        } else if (x < 0.6) {
          const w = workers[Math.floor(r() * workers.length)]!;
          w.reportedLoad = r() * 200;
        } else if (x < 0.7 && open.length > 0) {
          const [wid, id] = open.splice(Math.floor(r() * open.length), 1)[0]!;
          router.complete(wid, [id], true);
        } else {
          advance(Math.floor(r() * (r() < 0.05 ? 15_000 : 400)));
          // Every worker reports (no suspect, so every request routes at once: the signal is the waits alone).
          for (const w of workers) {
            router.markReported(
              w.id,
              open.filter(([wid]) => wid === w.id).map(([, id]) => id),
            );
            w.lastReportAt = now();
          }
          if (r() < 0.3) router.expire();
        }
        const t = now();
        // The old computation: a float sum front to back over the routings of the last 10 s.
        let sum = 0;
        let kept = 0;
        for (const g of routings) {
          if (t - g.at > RECENT_WAIT_MS) continue;
          sum += g.wait;
          kept++;
        }
        const reference = kept > 0 ? sum / kept : 0;
        const got = router.signal().queueTime;
        // Each wait is rounded to 1 µs: the mean is within 0.5 µs (float noise aside).
        expect(Math.abs(got - reference)).toBeLessThan(1e-6);
        if (reference > 0) nonZero++;
      }
      expect(nonZero).toBeGreaterThan(1000);
    }
  });

  it('waitMicros: integer µs, clamped, NaN counted as 0 (it would poison the running sum for good)', () => {
    expect(waitMicros(1.2345674)).toBe(1_234_567);
    expect(waitMicros(0.0000005)).toBe(1);
    expect(waitMicros(-2)).toBe(-2_000_000);
    expect(waitMicros(Number.POSITIVE_INFINITY)).toBe(10_000 * 1e6);
    expect(waitMicros(Number.NEGATIVE_INFINITY)).toBe(-10_000 * 1e6);
    expect(waitMicros(Number.NaN)).toBe(0);
    // 900,000 waits at the clamp (90k routings a second for 10 s) still sum exactly.
    expect(Number.isSafeInteger(waitMicros(10_000) * 900_000)).toBe(true);
  });

  it('anySuspect is false only when no worker is suspect (the scaler then skips the per-worker check)', () => {
    for (const seed of [11, 12, 13]) {
      const r = seededRandom(seed);
      const { router, workers, now, advance } = setup();
      const open: Array<[number, number]> = [];
      let idx = 0;
      let sawSuspect = 0;
      let sawNone = 0;
      for (let step = 0; step < 3000; step++) {
        const x = r();
        if (x < 0.4) {
          const e = router.submit(++idx, 1 + r() * 5, 1e6);
          if (e.state === 'routed') open.push([e.workerId!, idx]);
        } else if (x < 0.6) {
          // A worker reports: its open requests are shown, its report time moves.
          const w = workers[Math.floor(r() * workers.length)]!;
          if (r() < 0.8) {
            router.markReported(
              w.id,
              open.filter(([wid]) => wid === w.id).map(([, id]) => id),
            );
            w.lastReportAt = now();
          }
        } else if (x < 0.7 && open.length > 0) {
          const [wid, id] = open.splice(Math.floor(r() * open.length), 1)[0]!;
          router.complete(wid, [id], true);
        } else {
          advance(Math.floor(r() * (r() < 0.2 ? SUSPECT_AFTER_MS * 2 : 800)));
          if (r() < 0.3) router.expire();
        }
        const t = now();
        const suspects = workers.filter((w) => router.suspect(w, t)).length;
        const any = router.anySuspect(t);
        if (!any) expect(suspects).toBe(0);
        if (suspects > 0) sawSuspect++;
        else if (!any) sawNone++;
      }
      // Both sides were exercised.
      expect(sawSuspect).toBeGreaterThan(50);
      expect(sawNone).toBeGreaterThan(50);
    }
  });
});
