import { describe, expect, it } from 'vitest';
import { LoadHistory, windowRate, windowSums } from '../src/autoscaler/load-history.js';

/** The per-second history of arrived load the policies read: rates, sums and squared costs, trimming. */
describe('LoadHistory', () => {
  it('keeps per-second load and squared request costs; windows read whole seconds', () => {
    const h = new LoadHistory(0, 3600);
    h.add(100, 10); // second 0
    h.add(1500, 20); // second 1
    h.add(1900, 30); // second 1
    h.add(2500, 40); // second 2
    expect(h.loads).toEqual([10, 50, 40]);
    expect(h.squares).toEqual([100, 400 + 900, 1600]);
    // The last two seconds before 2.9 s: buckets 1 and 2.
    expect(windowSums(h, 2900, 2)).toEqual({ load: 90, squares: 2900, seconds: 2 });
    // A window reaching before the first request is cut to the history (three whole seconds here).
    expect(windowSums(h, 2900, 10)).toEqual({ load: 100, squares: 3000, seconds: 3 });
    expect(windowRate(h, 3000, 3)).toBeCloseTo(100 / 3, 9);
    // At a second's boundary the window is the seconds before it, not the one just begun.
    expect(windowSums(h, 3000, 2)).toEqual({ load: 90, squares: 2900, seconds: 2 });
    // Long after the last arrival the window is empty (its buckets were never stored).
    expect(windowSums(h, 60_000, 4)).toEqual({ load: 0, squares: 0, seconds: 4 });
  });

  it('trimming drops loads and squares together, so they stay aligned', () => {
    const h = new LoadHistory(0, 10);
    for (let t = 0; t < 60_000; t += 1000) h.add(t + 10, t / 1000 + 1);
    expect(h.loads.length).toBe(h.squares.length);
    expect(h.loads.length).toBeLessThan(60);
    const last = h.loads.length - 1;
    expect(h.loads[last]).toBe(60);
    expect(h.squares[last]).toBe(3600);
    // The last 5 s: costs 56…60.
    const w = windowSums(h, 59_999, 5);
    expect(w.load).toBe(56 + 57 + 58 + 59 + 60);
    expect(w.squares).toBe(56 ** 2 + 57 ** 2 + 58 ** 2 + 59 ** 2 + 60 ** 2);
  });
});
