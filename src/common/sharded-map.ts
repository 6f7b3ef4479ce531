/**
 * A Map with integer keys split over 64 small Maps. A large Map under steady churn (an entry added
 * and the oldest deleted, at thousands a second) is rehashed whole each time its deleted slots fill
 * its table: 10–25 ms for 100,000 entries on a small VM, one stall of the event loop every few
 * seconds. Split, each rehash moves a 64th of the entries, and they fall at different times.
 * The same get/set/delete/has/size as a Map (iteration order is not kept: none is offered).
 */
const SHARDS = 64;

export class ShardedMap<V> {
  private readonly shards: Map<number, V>[] = Array.from({ length: SHARDS }, () => new Map<number, V>());
  private count = 0;

  private shard(key: number): Map<number, V> {
    // Any number maps to one shard, always the same (ToInt32 of a large id wraps, deterministically).
    return this.shards[key & (SHARDS - 1)]!;
  }

  get size(): number {
    return this.count;
  }

  get(key: number): V | undefined {
    return this.shard(key).get(key);
  }

  has(key: number): boolean {
    return this.shard(key).has(key);
  }

  set(key: number, value: V): this {
    const m = this.shard(key);
    const before = m.size;
    m.set(key, value);
    this.count += m.size - before;
    return this;
  }

  delete(key: number): boolean {
    const m = this.shard(key);
    const had = m.delete(key);
    if (had) this.count--;
    return had;
  }
}
