/**
 * A seeded pseudo-random source (mulberry32): the same seed gives the same
 * sequence, so error and hang choices replay exactly in tests.
 */
export type Random = () => number;

/** A generator of floats in [0, 1) determined entirely by `seed` (any integer). */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
