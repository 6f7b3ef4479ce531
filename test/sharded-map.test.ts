import { describe, expect, it } from 'vitest';
import { seededRandom } from '../src/common/random.js';
import { ShardedMap } from '../src/common/sharded-map.js';

describe('ShardedMap', () => {
  it('answers as a Map over 200,000 random sets, deletes and gets (small, large and negative ids)', () => {
    const rnd = seededRandom(7);
    const ref = new Map<number, number>();
    const m = new ShardedMap<number>();
    const keyOf = () => {
      const r = rnd();
      if (r < 0.7) return Math.floor(rnd() * 5_000);
      if (r < 0.9) return 2 ** 31 + Math.floor(rnd() * 1_000); // past int32: the shard index wraps
      return -Math.floor(rnd() * 100);
    };
    for (let i = 0; i < 200_000; i++) {
      const k = keyOf();
      const op = rnd();
      if (op < 0.45) {
        expect(m.set(k, i)).toBe(m);
        ref.set(k, i);
      } else if (op < 0.75) expect(m.delete(k)).toBe(ref.delete(k));
      else {
        expect(m.get(k)).toBe(ref.get(k));
        expect(m.has(k)).toBe(ref.has(k));
      }
      if (i % 1000 === 0) expect(m.size).toBe(ref.size);
    }
    expect(m.size).toBe(ref.size);
    for (const [k, v] of ref) expect(m.get(k)).toBe(v);
  });

  it('keeps the size right when a key is set again or deleted twice', () => {
    const m = new ShardedMap<string>();
    m.set(5, 'a').set(5, 'b').set(69, 'c');
    expect(m.size).toBe(2);
    expect(m.get(5)).toBe('b');
    expect(m.delete(5)).toBe(true);
    expect(m.delete(5)).toBe(false);
    expect(m.size).toBe(1);
    expect(m.get(69)).toBe('c');
  });
});
