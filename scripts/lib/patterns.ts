/**
 * Load patterns as rate functions (requests/s over time) and the arrival times they produce.
 *
 * first-day: what to run on an endpoint's first day so the engine meets a variety of load and
 * learns each machine type's perf: `cycles` times (3 by default), climb from a floor to twice the
 * expected load (what the expected number of workers serve), hold, and come back down. Each
 * cycle: 40 % climbing, 20 % at the peak, 40 % descending.
 */
export const PATTERNS = ['constant', 'ramp', 'first-day'] as const;
export type PatternName = (typeof PATTERNS)[number];

export interface PatternOptions {
  pattern: PatternName;
  durationS: number;
  /** constant: the rate; first-day: the expected rate (the peak is twice this). */
  rate: number;
  /** ramp: start and end rates. */
  from?: number;
  to?: number;
  /** first-day: number of up-and-down cycles (3). */
  cycles?: number;
  /** first-day: the low point, as a fraction of the expected rate (0.1). */
  floor?: number;
}

/** The rate at time `t` (s) of a pattern. */
export function rateAt(o: PatternOptions, t: number): number {
  switch (o.pattern) {
    case 'constant':
      return o.rate;
    case 'ramp': {
      const from = o.from ?? 0;
      const to = o.to ?? o.rate;
      return from + (to - from) * Math.min(1, Math.max(0, t / o.durationS));
    }
    case 'first-day': {
      const cycles = Math.max(1, Math.round(o.cycles ?? 3));
      const low = o.rate * (o.floor ?? 0.1);
      const peak = 2 * o.rate;
      const cycle = o.durationS / cycles;
      const phase = (t % cycle) / cycle;
      if (phase < 0.4) return low + (peak - low) * (phase / 0.4);
      if (phase < 0.6) return peak;
      return peak - (peak - low) * ((phase - 0.6) / 0.4);
    }
  }
}

/** A small deterministic PRNG (mulberry32), shared with model-sim: a seed replays the same sequence. */
import { seededRandom as seeded } from '#nodeworker/common/random.js';
export { seeded };

/**
 * Arrival times (s) over [0, durationS): `uniform` spaces them evenly along the integrated rate
 * (request k at the time the cumulative rate reaches k + 0.5); `poisson` draws a non-homogeneous
 * Poisson process by thinning (random gaps, the same mean rate), seeded.
 */
export function arrivals(o: PatternOptions, mode: 'uniform' | 'poisson', seed = 1): number[] {
  const out: number[] = [];
  const stepS = 0.001;
  if (mode === 'uniform') {
    let acc = 0.5;
    for (let t = 0; t < o.durationS; t += stepS) {
      acc += rateAt(o, t) * stepS;
      while (acc >= 1) {
        out.push(t);
        acc -= 1;
      }
    }
    return out;
  }
  const rand = seeded(seed);
  let maxRate = 0;
  for (let t = 0; t < o.durationS; t += o.durationS / 1000) maxRate = Math.max(maxRate, rateAt(o, t));
  maxRate = Math.max(maxRate, rateAt(o, o.durationS));
  if (!(maxRate > 0)) return out;
  for (let t = 0; ; ) {
    t += -Math.log(1 - rand()) / maxRate;
    if (t >= o.durationS) break;
    if (rand() * maxRate <= rateAt(o, t)) out.push(t);
  }
  return out;
}
