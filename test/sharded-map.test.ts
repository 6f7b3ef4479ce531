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

  it('with string keys: answers as a Map, iterates every entry once (also while deleting), spreads ids over its shards, clears', () => {
    const rnd = seededRandom(11);
    const ref = new Map<string, number>();
    const m = new ShardedMap<number, string>();
    const keyOf = () => {
      const r = rnd();
      if (r < 0.8) return String(Math.floor(rnd() * 20_000)); // request ids, as the journal keys them
      if (r < 0.95) return `w-${Math.floor(rnd() * 50)}`;
      return `a-very-long-key-with-a-common-prefix-${Math.floor(rnd() * 40)}`;
    };
    for (let i = 0; i < 100_000; i++) {
      const k = keyOf();
      const op = rnd();
      if (op < 0.5) {
        m.set(k, i);
        ref.set(k, i);
      } else if (op < 0.75) expect(m.delete(k)).toBe(ref.delete(k));
      else expect([m.get(k), m.has(k)]).toEqual([ref.get(k), ref.has(k)]);
    }
    expect(m.size).toBe(ref.size);
    const sorted = (it: Iterable<[string, number]>) => [...it].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    expect(sorted(m)).toEqual(sorted(ref));
    expect(sorted(m.entries())).toEqual(sorted(ref.entries()));
    expect(new Set(m.keys())).toEqual(new Set(ref.keys()));
    expect([...m.values()].sort((a, b) => a - b)).toEqual([...ref.values()].sort((a, b) => a - b));
    const seen: string[] = [];
    m.forEach((v, k, map) => {
      expect(map).toBe(m);
      expect(v).toBe(ref.get(k));
      seen.push(k);
    });
    expect(seen.length).toBe(ref.size);
    // The shards are used evenly enough: consecutive numeric ids (what the journal holds most).
    const counts = new Map<unknown, number>();
    const spread = new ShardedMap<number, string>();
    for (let i = 0; i < 64_000; i++) spread.set(String(1_000_000 + i), i);
    for (const shard of (spread as unknown as { shards: Map<string, number>[] }).shards) counts.set(shard, shard.size);
    expect(Math.max(...counts.values())).toBeLessThan(2 * 1000);
    expect(Math.min(...counts.values())).toBeGreaterThan(1000 / 2);
    // Deleting during iteration (as a cleanup pass does): every entry visited, all gone.
    let visited = 0;
    for (const [k] of m) {
      m.delete(k);
      visited++;
    }
    expect([visited, m.size]).toEqual([ref.size, 0]);
    m.set('x', 1);
    m.clear();
    expect([m.size, m.get('x'), [...m]]).toEqual([0, undefined, []]);
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
