import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ContinuousBatch, type BatchJob } from '../src/model-sim/batching.js';

/**
 * The continuous batch against a fake clock: every check here is exact arithmetic of
 * processor sharing, with no dependence on real timing. Completions are delivered on
 * add/cancel/flush (the batch's own timers never get to run: nothing here awaits).
 */

let clock = 0;
const batches: ContinuousBatch[] = [];
afterEach(() => {
  for (const b of batches.splice(0)) b.close();
});

function batch(tokenRate: number, capacity: number): ContinuousBatch {
  const b = new ContinuousBatch({ tokenRate, capacity }, () => clock);
  batches.push(b);
  return b;
}

interface Probe extends BatchJob {
  completedAt: number | undefined;
  progress: number[];
}

function job(work: number, streaming = false): Probe {
  const probe: Probe = {
    work,
    streaming,
    completedAt: undefined,
    progress: [],
    onProgress: (n) => probe.progress.push(n),
    onComplete: () => (probe.completedAt = clock),
  };
  return probe;
}

function at(t: number, b: ContinuousBatch): void {
  clock = t;
  b.flush();
}

describe('ContinuousBatch (fake clock)', () => {
  it('runs a lone job at token-rate', () => {
    clock = 0;
    const b = batch(1000, 1e6);
    const a = job(100);
    b.add(a);
    at(99.99, b);
    expect(a.completedAt).toBeUndefined();
    at(100, b);
    expect(a.completedAt).toBe(100);
    expect(b.size).toBe(0);
  });

  it('shares capacity exactly as jobs come and go', () => {
    clock = 0;
    const b = batch(1000, 1000);
    const a = job(100);
    const c = job(100);
    b.add(a);
    clock = 50; // a alone: 50 tokens done
    b.add(c);
    // From 50 ms each gets 500 tokens/s: a needs 50 more → done at 150.
    at(149.99, b);
    expect(a.completedAt).toBeUndefined();
    at(160, b); // delivered late, but the batch knows a left at 150
    expect(a.completedAt).toBe(160);
    // c: 50 tokens by 150, then alone at 1000/s → 50 more → due at 200, not later.
    at(199.99, b);
    expect(c.completedAt).toBeUndefined();
    at(200, b);
    expect(c.completedAt).toBe(200);
  });

  it("frees a cancelled job's share and reports its tokens", () => {
    clock = 0;
    const b = batch(1000, 1000);
    const a = job(100);
    const c = job(100);
    b.add(a);
    const ticket = b.add(c);
    clock = 40; // 500/s each: 20 tokens each
    expect(b.cancel(ticket)).toBe(20);
    expect(b.size).toBe(1);
    at(119.99, b);
    expect(a.completedAt).toBeUndefined();
    at(120, b); // 80 more at 1000/s
    expect(a.completedAt).toBe(120);
    expect(c.completedAt).toBeUndefined();
  });

  it('reports whole tokens to streaming jobs, ending with all of them', () => {
    clock = 0;
    const b = batch(100, 1e6);
    const s = job(10, true);
    b.add(s);
    at(35, b);
    expect(s.progress).toEqual([3]);
    at(36, b);
    expect(s.progress).toEqual([3]); // no new whole token
    at(1000, b);
    expect(s.progress).toEqual([3, 10]);
    expect(s.completedAt).toBe(1000);
  });

  it('changes speed from the instant the rates change', () => {
    clock = 0;
    const b = batch(100, 100);
    const a = job(100);
    b.add(a);
    clock = 500; // 50 done
    b.setRates({ tokenRate: 1000, capacity: 1000 });
    at(549.99, b);
    expect(a.completedAt).toBeUndefined();
    at(550, b);
    expect(a.completedAt).toBe(550);

    // A job that finished before a rate change is delivered by it.
    const c = job(10);
    b.add(c);
    clock = 600;
    b.setRates({ tokenRate: 1, capacity: 1 });
    expect(c.completedAt).toBe(600);
  });

  it('property: a saturated batch finishes all work at total / capacity', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 40 }), fc.integer({ min: 10, max: 100_000 }), (works, capacity) => {
        clock = 0;
        // token-rate >= capacity: any one job saturates the batch.
        const b = batch(capacity * 2, capacity);
        const jobs = works.map((w) => job(w));
        for (const j of jobs) b.add(j);
        const total = works.reduce((x, y) => x + y, 0);
        const end = (total / capacity) * 1000;
        clock = end * (1 - 1e-9) - 1e-6;
        b.flush();
        const early = jobs.filter((j) => j.completedAt === undefined).length;
        clock = end + 1e-6;
        b.flush();
        b.close();
        // The biggest job is still running just before the end, and everything is done at it.
        return early >= 1 && jobs.every((j) => j.completedAt !== undefined);
      }),
      { numRuns: 200 },
    );
  });

  it('property: smaller jobs added together finish no later than bigger ones', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 2, maxLength: 30 }), (works) => {
        clock = 0;
        const b = batch(100, 1000);
        const jobs = works.map((w) => job(w));
        for (const j of jobs) b.add(j);
        for (let t = 1; jobs.some((j) => j.completedAt === undefined); t += 7) {
          clock = t;
          b.flush();
        }
        b.close();
        return jobs.every((x) => jobs.every((y) => x.work >= y.work || x.completedAt! <= y.completedAt!));
      }),
      { numRuns: 100 },
    );
  });
});
