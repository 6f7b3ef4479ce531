import { describe, expect, it } from 'vitest';
import { seededRandom } from '../src/common/random.js';
import { RecentEnds } from '../src/autoscaler/recent-ends.js';

/** The memory as the router kept it before: one record per end in a list, the id's last end in a map. */
class Reference {
  private order: Array<{ idx: number; workerId: number | null; at: number }> = [];
  private last = new Map<number, { idx: number; workerId: number | null; at: number }>();
  constructor(private readonly max: number) {}
  get size(): number {
    return this.last.size;
  }
  record(idx: number, workerId: number | null, at: number): void {
    const rec = { idx, workerId, at };
    this.last.set(idx, rec);
    this.order.push(rec);
    while (this.last.size > this.max) {
      for (;;) {
        const r = this.order.shift()!;
        if (this.last.get(r.idx) === r) {
          this.last.delete(r.idx);
          break;
        }
      }
    }
  }
  take(idx: number): number | null | undefined {
    const r = this.last.get(idx);
    this.last.delete(idx);
    return r?.workerId;
  }
  expire(now: number, keepMs: number): void {
    while (this.order.length > 0 && now - this.order[0]!.at > keepMs) {
      const r = this.order.shift()!;
      if (this.last.get(r.idx) === r) this.last.delete(r.idx);
    }
  }
}

describe('RecentEnds', () => {
  it('answers as a list of records and a map over 300,000 random steps (ends again, take-backs, the cap, expiry, growth and wrap-around)', () => {
    for (const [seed, max] of [
      [1, 50],
      [2, 700],
      [3, 5_000],
    ] as const) {
      const rnd = seededRandom(seed);
      const ends = new RecentEnds(max, 16);
      const ref = new Reference(max);
      let now = 0;
      let nextIdx = 1;
      for (let i = 0; i < 100_000; i++) {
        const r = rnd();
        now += Math.floor(rnd() * 20);
        // Ids near the newest (ends again, take-backs of known ids) and unknown ones.
        const someIdx = Math.max(1, nextIdx - Math.floor(rnd() * max * 2));
        if (r < 0.7) {
          // A new id's end, or an id that ended before ending again.
          const idx = r < 0.55 ? nextIdx++ : someIdx;
          const w = rnd() < 0.1 ? null : Math.floor(rnd() * 40);
          ends.record(idx, w, now);
          ref.record(idx, w, now);
        } else if (r < 0.95) expect(ends.take(someIdx), `step ${i}: take ${someIdx}`).toBe(ref.take(someIdx));
        else {
          const keep = Math.floor(rnd() * 3_000);
          ends.expire(now, keep);
          ref.expire(now, keep);
        }
        expect(ends.size, `step ${i}`).toBe(ref.size);
      }
      for (let idx = 1; idx < nextIdx; idx++) expect(ends.take(idx), `id ${idx}`).toBe(ref.take(idx));
      expect(ends.size).toBe(0);
    }
  });

  it('keeps the newest ends up to its cap, and the ring does not grow past what it holds', () => {
    const ends = new RecentEnds(1_000, 16);
    for (let idx = 1; idx <= 50_000; idx++) ends.record(idx, idx % 7, idx);
    expect(ends.size).toBe(1_000);
    expect(ends.held).toBe(1_000);
    expect(ends.take(49_000)).toBeUndefined();
    expect(ends.take(49_001)).toBe(49_001 % 7);
    expect(ends.take(50_000)).toBe(50_000 % 7);
    expect((ends as unknown as { ids: Float64Array }).ids.length).toBe(1_024);
    ends.expire(50_000, 100);
    expect(ends.size).toBe(100);
    ends.clear();
    expect([ends.size, ends.held, ends.take(49_999)]).toEqual([0, 0, undefined]);
  });
});
