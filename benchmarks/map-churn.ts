/**
 * A large Map under steady churn (issue 22 point 4, fifth round): `--size` integer keys live,
 * each step one added and the oldest deleted, `--steps` times; a Map against the ShardedMap that
 * the router keeps its 100,000 finished requests in. Prints the steps that held the loop over
 * 1 ms and the longest ones: a Map is rehashed whole when its deleted slots fill its table.
 *
 *   npm run build && node build/benchmarks/map-churn.js [--size 100000] [--steps 2000000] [--rounds 2]
 */
import { performance } from 'node:perf_hooks';
import { ShardedMap } from '#nodeworker/common/sharded-map.js';
import { benchArgs } from './lib/args.js';

interface IntMap {
  set(k: number, v: number): unknown;
  delete(k: number): boolean;
}

function churn(m: IntMap, size: number, steps: number): number[] {
  let i = 0;
  for (; i < size; i++) m.set(i, i);
  const slow: number[] = [];
  for (let s = 0; s < steps; s++) {
    const t = performance.now();
    m.set(i, i);
    m.delete(i - size);
    i++;
    const d = performance.now() - t;
    if (d > 1) slow.push(d);
  }
  return slow.sort((a, b) => b - a);
}

function main(): void {
  const args = benchArgs('map-churn', '[--size N] [--steps N] [--rounds N]', { size: 'string', steps: 'string', rounds: 'string' });
  const size = Number(args.size ?? 100_000);
  const steps = Number(args.steps ?? 2_000_000);
  const rounds = Number(args.rounds ?? 2);
  process.stdout.write(`map churn: ${size} live keys, ${steps} steps (one set, one delete) a round\n`);
  for (let r = 0; r < rounds; r++) {
    for (const [name, make] of [
      ['Map', () => new Map<number, number>()],
      ['ShardedMap', () => new ShardedMap<number>()],
    ] as const) {
      const slow = churn(make(), size, steps);
      const top = slow
        .slice(0, 5)
        .map((d) => d.toFixed(1))
        .join(', ');
      process.stdout.write(`round ${r + 1}, ${name.padEnd(10)}: ${slow.length} steps over 1 ms, longest ${top || '-'} ms\n`);
    }
  }
}

main();
