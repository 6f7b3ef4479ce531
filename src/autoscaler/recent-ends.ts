import { ShardedMap } from '../common/sharded-map.js';

/** Sequence numbers are kept modulo this (a small integer stays a Smi in the map; no live window comes near it). */
const SEQ_MASK = 0x3fff_ffff;

/**
 * The router's memory of how requests ended (for a late re-route of an id: which worker had it),
 * the newest `max` ends within the time the caller keeps them, oldest forgotten first.
 *
 * Kept as columns of numbers in a ring (id, worker, time), with a map from id to the sequence
 * number of its last end, instead of one object per end: at 1,000 workers and 12,000 ends a
 * second the router remembers 100,000 ends, and as objects they were 100,000 objects (and as many
 * boxed times) in the old generation for every major collection to mark. A record whose id ended
 * again later, or was taken back, stays in the ring until it reaches the front and is skipped.
 */
export class RecentEnds {
  private ids: Float64Array;
  /** The worker that had it, NaN for none. */
  private workers: Float64Array;
  private times: Float64Array;
  private head = 0;
  private count = 0;
  /** Sequence number (modulo SEQ_MASK + 1) of the record at the front. */
  private frontSeq = 0;
  private readonly seqOf = new ShardedMap<number>();

  constructor(
    private readonly max: number,
    capacity = 1024,
  ) {
    let cap = 16;
    while (cap < capacity) cap *= 2;
    this.ids = new Float64Array(cap);
    this.workers = new Float64Array(cap);
    this.times = new Float64Array(cap);
  }

  /** Ids remembered now. */
  get size(): number {
    return this.seqOf.size;
  }

  /** Records held, stale ones (ended again, taken back) included. */
  get held(): number {
    return this.count;
  }

  /** `idx` ended at `at` on `workerId`; its earlier end, if any, is superseded. The oldest go past `max`. */
  record(idx: number, workerId: number | null, at: number): void {
    if (this.count === this.ids.length) this.grow();
    const slot = (this.head + this.count) & (this.ids.length - 1);
    this.ids[slot] = idx;
    this.workers[slot] = workerId ?? Number.NaN;
    this.times[slot] = at;
    this.seqOf.set(idx, (this.frontSeq + this.count) & SEQ_MASK);
    this.count++;
    while (this.seqOf.size > this.max) this.forgetOldest();
  }

  /** The worker `idx` last ended on (null: none), or undefined when its end is not remembered; forgets it. */
  take(idx: number): number | null | undefined {
    const seq = this.seqOf.get(idx);
    if (seq === undefined) return undefined;
    this.seqOf.delete(idx);
    const w = this.workers[(this.head + ((seq - this.frontSeq) & SEQ_MASK)) & (this.ids.length - 1)]!;
    return Number.isNaN(w) ? null : w;
  }

  /** Forget the ends recorded more than `keepMs` before `now`. */
  expire(now: number, keepMs: number): void {
    while (this.count > 0 && now - this.times[this.head]! > keepMs) this.shift();
  }

  clear(): void {
    this.seqOf.clear();
    this.head = 0;
    this.count = 0;
    this.frontSeq = 0;
  }

  /** Forget the oldest end still remembered (skipping records superseded or taken). */
  private forgetOldest(): void {
    while (this.count > 0) if (this.shift()) return;
  }

  /** Drop the front record; true when it was its id's remembered end (now forgotten). */
  private shift(): boolean {
    const idx = this.ids[this.head]!;
    const live = this.seqOf.get(idx) === this.frontSeq;
    if (live) this.seqOf.delete(idx);
    this.head = (this.head + 1) & (this.ids.length - 1);
    this.count--;
    this.frontSeq = (this.frontSeq + 1) & SEQ_MASK;
    return live;
  }

  private grow(): void {
    const cap = this.ids.length;
    const copy = (old: Float64Array) => {
      const next = new Float64Array(cap * 2);
      // The ring in order from its front: the part up to the buffer's end, then the wrapped part.
      next.set(old.subarray(this.head));
      next.set(old.subarray(0, this.head), cap - this.head);
      return next;
    };
    this.ids = copy(this.ids);
    this.workers = copy(this.workers);
    this.times = copy(this.times);
    this.head = 0;
  }
}
