import { describe, expect, it } from 'vitest';
import { FifoGate } from '../src/worker/admission.js';

/** Let queued promise callbacks run. */
const flush = () => new Promise<void>((r) => setImmediate(r));

describe('FifoGate', () => {
  it('lets the first caller through at once and holds the rest in order', async () => {
    const gate = new FifoGate();
    const order: number[] = [];
    await gate.acquire();
    expect(gate.busy).toBe(true);
    const waiters = [1, 2, 3].map((i) => gate.acquire().then(() => order.push(i)));
    await flush();
    expect(order).toEqual([]);
    expect(gate.waiting).toBe(3);
    for (let i = 0; i < 3; i++) {
      gate.release();
      await flush();
      expect(order).toEqual([1, 2, 3].slice(0, i + 1));
    }
    await Promise.all(waiters);
    expect(gate.busy).toBe(true); // waiter 3 holds it
    gate.release();
    expect(gate.busy).toBe(false);
    expect(gate.waiting).toBe(0);
  });

  it('skips a waiter whose signal aborted: it never holds the gate', async () => {
    const gate = new FifoGate();
    await gate.acquire();
    const got: string[] = [];
    const acA = new AbortController();
    const a = gate.acquire(acA.signal).then(
      () => got.push('a'),
      (err: unknown) => got.push(`a aborted: ${String(err)}`),
    );
    const b = gate.acquire().then(() => got.push('b'));
    acA.abort('client left');
    await a;
    expect(got).toEqual(['a aborted: client left']);
    expect(gate.waiting).toBe(1);
    gate.release();
    await b;
    expect(got).toEqual(['a aborted: client left', 'b']);
    gate.release();
    expect(gate.busy).toBe(false);
  });

  it('frees the gate when every waiter has gone', async () => {
    const gate = new FifoGate();
    await gate.acquire();
    const acs = [new AbortController(), new AbortController()];
    const ps = acs.map((ac) => gate.acquire(ac.signal).catch(() => 'aborted'));
    for (const ac of acs) ac.abort();
    expect(await Promise.all(ps)).toEqual(['aborted', 'aborted']);
    gate.release();
    expect(gate.busy).toBe(false);
    await gate.acquire(); // free again: resolves at once
    expect(gate.busy).toBe(true);
  });

  it('rejects at once when the signal is already aborted and the gate is busy', async () => {
    const gate = new FifoGate();
    await gate.acquire();
    const ac = new AbortController();
    ac.abort(new Error('gone'));
    await expect(gate.acquire(ac.signal)).rejects.toThrow('gone');
    expect(gate.waiting).toBe(0);
  });

  it('an abort after the waiter got the gate changes nothing', async () => {
    const gate = new FifoGate();
    await gate.acquire();
    const ac = new AbortController();
    const p = gate.acquire(ac.signal);
    gate.release();
    await p;
    ac.abort();
    await flush();
    expect(gate.busy).toBe(true);
    const next = gate.acquire();
    let passed = false;
    void next.then(() => (passed = true));
    await flush();
    expect(passed).toBe(false);
    gate.release();
    await next;
    expect(passed).toBe(true);
  });

  it('keeps strict order over thousands of waiters with every third one aborting', async () => {
    const gate = new FifoGate();
    await gate.acquire();
    const served: number[] = [];
    const all: Promise<unknown>[] = [];
    const acs: AbortController[] = [];
    for (let i = 0; i < 3000; i++) {
      const ac = new AbortController();
      acs.push(ac);
      all.push(
        gate.acquire(ac.signal).then(
          () => {
            served.push(i);
            gate.release();
          },
          () => undefined,
        ),
      );
    }
    for (const [i, ac] of acs.entries()) if (i % 3 === 0) ac.abort();
    gate.release();
    await Promise.all(all);
    const expected = Array.from({ length: 3000 }, (_, i) => i).filter((i) => i % 3 !== 0);
    expect(served).toEqual(expected);
    expect(gate.busy).toBe(false);
  });
});
