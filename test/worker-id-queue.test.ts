import { describe, expect, it } from 'vitest';
import { IdQueue } from '../src/worker/id-queue.js';

const CHUNK = 4096; // the queue's chunk size: the boundaries these tests cross

function range(from: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

function filled(n: number, from = 0): IdQueue {
  const q = new IdQueue();
  for (let i = 0; i < n; i++) q.push(from + i);
  return q;
}

describe('IdQueue', () => {
  it('is empty at first', () => {
    const q = new IdQueue();
    expect(q.size).toBe(0);
    expect(q.peek(10)).toEqual([]);
    q.drop(5);
    expect(q.size).toBe(0);
    expect(q.bytes()).toBe(0);
  });

  it('peeks the oldest ids without removing them', () => {
    const q = filled(5, 100);
    expect(q.peek(3)).toEqual([100, 101, 102]);
    expect(q.peek(3)).toEqual([100, 101, 102]);
    expect(q.peek(99)).toEqual([100, 101, 102, 103, 104]);
    expect(q.size).toBe(5);
  });

  it('peeks and drops across chunk boundaries', () => {
    const n = CHUNK * 2 + 10;
    const q = filled(n);
    expect(q.peek(CHUNK + 3)).toEqual(range(0, CHUNK + 3));
    q.drop(CHUNK - 2); // head sits 2 before the first boundary
    expect(q.size).toBe(n - (CHUNK - 2));
    expect(q.peek(5)).toEqual(range(CHUNK - 2, 5));
    q.drop(4); // crosses into the second chunk
    expect(q.peek(3)).toEqual(range(CHUNK + 2, 3));
    q.drop(CHUNK); // crosses into the third chunk
    expect(q.peek(100)).toEqual(range(2 * CHUNK + 2, 8));
    expect(q.size).toBe(8);
  });

  it('drops exactly one whole chunk and keeps the rest in order', () => {
    const q = filled(CHUNK + 1);
    q.drop(CHUNK);
    expect(q.size).toBe(1);
    expect(q.peek(5)).toEqual([CHUNK]);
    q.push(-1);
    expect(q.peek(5)).toEqual([CHUNK, -1]);
  });

  it('drops a full single chunk, then grows again from empty', () => {
    const q = filled(CHUNK);
    q.drop(CHUNK);
    expect(q.size).toBe(0);
    expect(q.bytes()).toBe(0);
    q.push(42);
    q.push(43);
    expect(q.peek(10)).toEqual([42, 43]);
  });

  it('keeps FIFO order while pushes and drops interleave over many chunks', () => {
    const q = new IdQueue();
    const model: number[] = [];
    let next = 0;
    for (let round = 0; round < 40; round++) {
      const pushes = (round * 997) % 3000;
      for (let i = 0; i < pushes; i++) {
        q.push(next);
        model.push(next++);
      }
      const drops = (round * 613) % 2500;
      q.drop(drops);
      model.splice(0, drops);
      expect(q.size).toBe(model.length);
      expect(q.peek(50)).toEqual(model.slice(0, 50));
    }
    expect(q.peek(Infinity)).toEqual(model);
  });

  it('holds ids beyond 32 bits exactly (request_idx values are large integers)', () => {
    const q = new IdQueue();
    const big = [2 ** 40 + 1, Number.MAX_SAFE_INTEGER, 0, -5];
    for (const id of big) q.push(id);
    expect(q.peek(10)).toEqual(big);
  });

  it('ignores a drop of zero, a negative or a non-number count', () => {
    const q = filled(3);
    q.drop(0);
    q.drop(-2);
    q.drop(Number.NaN);
    expect(q.size).toBe(3);
    expect(q.peek(10)).toEqual([0, 1, 2]);
    expect(q.peek(-1)).toEqual([]);
  });

  it('drops more than it holds as "everything"', () => {
    const q = filled(CHUNK + 5);
    q.drop(10 * CHUNK);
    expect(q.size).toBe(0);
    q.push(1);
    expect(q.peek(2)).toEqual([1]);
  });
});
