import { describe, expect, it } from 'vitest';
import { LoadHistory } from '../src/autoscaler/load-history.js';
import { burstSignalShare, decide, PERSIST_WINDOWS_S, SIGNAL_REFRESH_S, signalShares } from '../src/autoscaler/policy.js';
import { seededRandom, type Random } from '../src/common/random.js';
import type { Decision } from '../src/autoscaler/policy.js';
import { input, kinds, NOW, worker } from './helpers/policy.js';

const ids = (ds: Decision[]) => ds.map((d) => (d as { id: number }).id);

/**
 * Persistent bursts (issue 22): the share of a short window's swings that is signal, estimated from
 * the endpoint's own history, decides how much of a short window's rise above the stable load is
 * planned for. Independent arrivals must give about 0 (their noise starts nothing), bursty arrivals
 * near 1, and a step or a trend must not pass for bursts.
 */

const HOUR_S = 3600;
const STABLE_S = 60;

/** Exponential gap with mean `mean`. */
const expo = (rnd: Random, mean: number) => -Math.log(1 - rnd()) * mean;
/** Heavy-tailed request cost (Pareto, α 2.5, minimum 90: mean 150): LLM-like sizes. */
const cost = (rnd: Random) => 90 / (1 - rnd()) ** (1 / 2.5);

/** A history ending at NOW filled by `rateAt(t)` requests per second (t: seconds since its start), Poisson arrivals. */
function poissonHistory(seed: number, rateAt: (t: number) => number, seconds = HOUR_S): LoadHistory {
  const rnd = seededRandom(seed);
  const start = NOW - seconds * 1000;
  const h = new LoadHistory(start, seconds + 60);
  // Thinning: candidates at the highest rate, each kept with rate(t) / max.
  const max = Math.max(...Array.from({ length: seconds }, (_, t) => rateAt(t)));
  for (let t = expo(rnd, 1 / max); t < seconds; t += expo(rnd, 1 / max)) {
    if (rnd() * max < rateAt(t)) h.add(start + t * 1000, cost(rnd));
  }
  return h;
}

/** A history of bursts: quiet Poisson traffic, and bursts of 5–20 s at ten times the rate every minute or two, none in its last two minutes. */
function burstyHistory(seed: number, seconds = HOUR_S): LoadHistory {
  const rnd = seededRandom(seed);
  const bursts: Array<[number, number]> = [];
  for (let t = 30 + rnd() * 60; t < seconds - 140; t += 60 + rnd() * 60) bursts.push([t, t + 5 + rnd() * 15]);
  return poissonHistory(seed + 1, (t) => (bursts.some(([a, b]) => t >= a && t < b) ? 10 : 1), seconds);
}

describe('burstSignalShare', () => {
  it('independent arrivals, however heavy-tailed their costs, give about 0 in every window (five seeds)', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const h = poissonHistory(seed, () => 3);
      for (const W of PERSIST_WINDOWS_S) expect(burstSignalShare(h, NOW, W, STABLE_S, HOUR_S)).toBeLessThan(0.05);
    }
  });

  it('bursts that last longer than the window give most of the swings as signal', () => {
    for (let seed = 1; seed <= 3; seed++) {
      const h = burstyHistory(seed * 10);
      for (const W of PERSIST_WINDOWS_S) expect(burstSignalShare(h, NOW, W, STABLE_S, HOUR_S)).toBeGreaterThan(0.6);
    }
  });

  it('a step ×4 or a slow trend is not taken for bursts (the windows are centred)', () => {
    const step = poissonHistory(7, (t) => (t < HOUR_S / 2 ? 2 : 8));
    const trend = poissonHistory(8, (t) => 1 + (6 * t) / HOUR_S);
    for (const W of PERSIST_WINDOWS_S) {
      expect(burstSignalShare(step, NOW, W, STABLE_S, HOUR_S)).toBeLessThan(0.05);
      expect(burstSignalShare(trend, NOW, W, STABLE_S, HOUR_S)).toBeLessThan(0.05);
    }
  });

  it('needs evidence: a young history, one without squared costs, or no arrivals give 0', () => {
    const bursty = burstyHistory(3);
    // Only the last 100 s: too few windows for their share to clear its standard error… or to be read at all.
    const young = { ...bursty, since: NOW - 100_000 };
    expect(burstSignalShare(young, NOW, 2, STABLE_S, HOUR_S)).toBeLessThan(burstSignalShare(bursty, NOW, 2, STABLE_S, HOUR_S));
    expect(burstSignalShare({ ...bursty, since: NOW - 30_000 }, NOW, 2, STABLE_S, HOUR_S)).toBe(0);
    expect(burstSignalShare({ start: bursty.start, bucketMs: 1000, loads: bursty.loads, since: bursty.since }, NOW, 2, STABLE_S, HOUR_S)).toBe(0);
    expect(burstSignalShare(new LoadHistory(NOW - HOUR_S * 1000, HOUR_S), NOW, 2, STABLE_S, HOUR_S)).toBe(0);
  });

  it('reads only the last keepS seconds: bursts an hour ago do not count once the traffic turned smooth', () => {
    const rnd = seededRandom(5);
    const bursts: Array<[number, number]> = [];
    for (let t = 30; t < HOUR_S; t += 60 + rnd() * 60) bursts.push([t, t + 10]);
    // Bursts in the first hour, smooth Poisson in the second.
    const h = poissonHistory(6, (t) => (t < HOUR_S && bursts.some(([a, b]) => t >= a && t < b) ? 10 : 1), 2 * HOUR_S);
    expect(burstSignalShare(h, NOW, 2, STABLE_S, 2 * HOUR_S)).toBeGreaterThan(0.5);
    expect(burstSignalShare(h, NOW, 2, STABLE_S, HOUR_S)).toBeLessThan(0.05);
  });
});

describe('signalShares', () => {
  it(`is estimated again only after ${SIGNAL_REFRESH_S} s (an hour of history moves slowly)`, () => {
    const h = burstyHistory(2);
    const first = signalShares(undefined, h, NOW, STABLE_S, HOUR_S);
    expect(first.at).toBe(NOW);
    expect(first.shares).toHaveLength(PERSIST_WINDOWS_S.length);
    expect(signalShares(first, h, NOW + (SIGNAL_REFRESH_S - 1) * 1000, STABLE_S, HOUR_S)).toBe(first);
    const again = signalShares(first, h, NOW + SIGNAL_REFRESH_S * 1000, STABLE_S, HOUR_S);
    expect(again).not.toBe(first);
    expect(again.at).toBe(NOW + SIGNAL_REFRESH_S * 1000);
    // A clock that went back (a restored engine) estimates again.
    expect(signalShares(first, h, NOW - 1000, STABLE_S, HOUR_S)).not.toBe(first);
  });
});

describe('a rise of the short window on bursty traffic starts workers; the same rise on smooth traffic does not', () => {
  /** `h` with one request of `extra` in each of the last 2 s. */
  function withRise(h: LoadHistory, extra: number): LoadHistory {
    h.add(NOW - 1500, extra);
    h.add(NOW - 500, extra);
    return h;
  }
  // Workers of perf 1000: the quiet load (1 request/s of mean cost 150) fits the ready one. The rise
  // is two requests of 1500: a 2 s rate of about 1600, above the ready capacity, and too few requests
  // for the compound-Poisson surge test.
  const big = { perf: 1000 };
  const fleet = () => [worker(1, 'ready', big), worker(2, 'inactive', big), worker(3, 'inactive', big)];
  const params = { cold_workers: 0, cold_mult: 0, target_util: 0.9, stable_window: STABLE_S, cold_window: HOUR_S };

  it('bursty history: the rise is planned for in its signal share, and without the rise nothing starts', () => {
    const calm = decide(input({ history: burstyHistory(4), workers: fleet(), params }));
    expect(calm.memory.signal!.shares[0]).toBeGreaterThan(0.6);
    expect(calm.plan.activeTarget).toBeLessThan(1000);
    expect(ids(kinds(calm.decisions, 'activate'))).toEqual([]);

    const out = decide(input({ history: withRise(burstyHistory(4), 1500), workers: fleet(), params }));
    expect(out.plan.surgeLoad).toBe(0);
    expect(out.plan.panicking).toBe(false);
    expect(out.plan.persistentLoad!).toBeGreaterThan(out.plan.stableLoad + 500);
    expect(out.plan.activeTarget).toBeGreaterThan(1000);
    expect(ids(kinds(out.decisions, 'activate'))).toEqual([2]);
  });

  it('smooth history: the same rise starts nothing', () => {
    const out = decide(
      input({
        history: withRise(
          poissonHistory(4, () => 1),
          1500,
        ),
        workers: fleet(),
        params,
      }),
    );
    expect(out.plan.surgeLoad).toBe(0);
    expect(out.memory.signal!.shares.every((k) => k < 0.05)).toBe(true);
    expect(out.plan.activeTarget).toBeLessThan(1000);
    expect(ids(kinds(out.decisions, 'activate'))).toEqual([]);
  });
});
