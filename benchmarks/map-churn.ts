/**
 * Large structures under steady churn (issue 22 point 4, fifth and sixth rounds). Each case keeps
 * `--size` entries live, each step adds one and removes the oldest, `--steps` times, and prints
 * the steps that held the loop over 1 ms and the longest ones:
 * - integer keys: a Map against the ShardedMap the router keeps its finished requests in (a Map is
 *   rehashed whole when its deleted slots fill its table);
 * - string keys (`--size` / 6 live, as the journal holds its open requests' records by id): a Map
 *   against ShardedMap<V, string>;
 * - a first-in first-out queue: an array with a head index, cut down with `slice` when half of it
 *   is taken (the router's routing list and its record of finished requests before the sixth
 *   round), against the Ring that holds them now.
 *
 *   npm run build && node build/benchmarks/map-churn.js [--size 100000] [--steps 2000000] [--rounds 2]
 */
import { performance } from 'node:perf_hooks';
import { Ring } from '#nodeworker/common/ring.js';
import { ShardedMap } from '#nodeworker/common/sharded-map.js';
import { benchArgs } from './lib/args.js';

interface ChurnMap<K> {
  set(k: K, v: number): unknown;
  delete(k: K): boolean;
}

/** `size` live entries; each step adds key `i` and removes key `i - size` (keys made by `key`). */
function churn<K>(m: ChurnMap<K>, key: (i: number) => K, size: number, steps: number): number[] {
  let i = 0;
  for (; i < size; i++) m.set(key(i), i);
  const slow: number[] = [];
  for (let s = 0; s < steps; s++) {
    const t = performance.now();
    m.set(key(i), i);
    m.delete(key(i - size));
    i++;
    const d = performance.now() - t;
    if (d > 1) slow.push(d);
  }
  return slow.sort((a, b) => b - a);
}

/** The same churn through a queue: push one, take the oldest (objects made beforehand, so no step allocates one). */
function churnQueue(q: { push(v: object): void; take(): void }, size: number, steps: number): number[] {
  const objs = Array.from({ length: size * 2 }, (_, k) => ({ k }));
  for (let i = 0; i < size; i++) q.push(objs[i]!);
  const slow: number[] = [];
  for (let s = 0; s < steps; s++) {
    const t = performance.now();
    q.push(objs[s % objs.length]!);
    q.take();
    const d = performance.now() - t;
    if (d > 1) slow.push(d);
  }
  return slow.sort((a, b) => b - a);
}

/** The array-with-a-head queue the router used, cut down as it was (head past 1,024 and past half). */
function arrayQueue(): { push(v: object): void; take(): void } {
  let list: object[] = [];
  let head = 0;
  return {
    push: (v) => {
      if (head > 1024 && head * 2 > list.length) {
        list = list.slice(head);
        head = 0;
      }
      list.push(v);
    },
    take: () => {
      list[head++] = undefined as unknown as object;
    },
  };
}

function ringQueue(): { push(v: object): void; take(): void } {
  const ring = new Ring<object>();
  return { push: (v) => ring.push(v), take: () => void ring.shift() };
}

function main(): void {
  const args = benchArgs('map-churn', '[--size N] [--steps N] [--rounds N]', { size: 'string', steps: 'string', rounds: 'string' });
  const size = Number(args.size ?? 100_000);
  const steps = Number(args.steps ?? 2_000_000);
  const rounds = Number(args.rounds ?? 2);
  process.stdout.write(`churn: ${size} live entries (string keys: a sixth), ${steps} steps (one added, the oldest removed) a round\n`);
  for (let r = 0; r < rounds; r++) {
    const strSize = Math.max(1, Math.round(size / 6));
    const cases: Array<[string, () => number[]]> = [
      ['Map, integer keys', () => churn(new Map<number, number>(), (i) => i, size, steps)],
      ['ShardedMap, integer keys', () => churn(new ShardedMap<number>(), (i) => i, size, steps)],
      [`Map, ${strSize} string keys`, () => churn(new Map<string, number>(), String, strSize, steps)],
      [`ShardedMap, ${strSize} string keys`, () => churn(new ShardedMap<number, string>(), String, strSize, steps)],
      ['array queue', () => churnQueue(arrayQueue(), size, steps)],
      ['Ring queue', () => churnQueue(ringQueue(), size, steps)],
    ];
    for (const [name, run] of cases) {
      const slow = run();
      const top = slow
        .slice(0, 5)
        .map((d) => d.toFixed(1))
        .join(', ');
      process.stdout.write(`round ${r + 1}, ${name.padEnd(34)}: ${slow.length} steps over 1 ms, longest ${top || '-'} ms\n`);
    }
  }
}

main();
