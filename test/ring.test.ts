import { describe, expect, it } from 'vitest';
import { seededRandom } from '../src/common/random.js';
import { Ring } from '../src/common/ring.js';

describe('Ring', () => {
  it('answers as an array used as a queue over 200,000 random pushes and shifts (growing past its capacity, wrapping around)', () => {
    const rnd = seededRandom(5);
    const ring = new Ring<number>(4);
    const ref: number[] = [];
    let next = 0;
    for (let i = 0; i < 200_000; i++) {
      const r = rnd();
      // Phases that mostly push, then mostly shift: the ring grows, empties and wraps many times.
      const pushBias = Math.floor(i / 20_000) % 2 === 0 ? 0.7 : 0.3;
      if (r < pushBias) {
        ring.push(next);
        ref.push(next++);
      } else if (r < 0.95) expect(ring.shift()).toBe(ref.shift());
      else if (r < 0.999) expect([ring.front(), ring.back()]).toEqual([ref[0], ref[ref.length - 1]]);
      else {
        ring.clear();
        ref.length = 0;
      }
      expect(ring.length).toBe(ref.length);
    }
    while (ref.length > 0) expect(ring.shift()).toBe(ref.shift());
    expect([ring.shift(), ring.front(), ring.back(), ring.length]).toEqual([undefined, undefined, undefined, 0]);
  });

  it('keeps nothing alive once shifted or cleared', () => {
    const ring = new Ring<object>();
    for (let i = 0; i < 40; i++) ring.push({ i });
    for (let i = 0; i < 30; i++) ring.shift();
    const slots = (ring as unknown as { buf: (object | undefined)[] }).buf;
    expect(slots.filter((v) => v !== undefined).length).toBe(10);
    ring.clear();
    expect((ring as unknown as { buf: (object | undefined)[] }).buf.every((v) => v === undefined)).toBe(true);
  });
});
