import { describe, expect, it } from 'vitest';
import { saturatedInterval } from '../src/autoscaler/perf-model.js';
import { Protocol } from '../src/autoscaler/protocol.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/**
 * The learned perf of a machine type comes from saturated intervals only (issue 23 follow-up): a
 * worker that is always busy but demand-limited must leave its type at the benchmark, a saturated
 * one must correct it. Reports go through the real Protocol into a real Registry and PerfBook.
 */

const BENCH = 2160; // an RTX 4090's benchmark in the Vast e2e market

function setup() {
  const { reg, clock } = testRegistry();
  reg.addEndpoint(endpointCfg('a'));
  const proto = new Protocol(reg, { finishDrain: () => {}, checkFailedWorker: () => {} });
  const w = addTestWorker(reg, 'a');
  const report = (over: Record<string, unknown> = {}) => {
    const res = proto.workerStatus({ id: w.id, mtoken: w.mtoken, loadtime: 2, max_perf: BENCH, cur_load: 0, url: 'http://127.0.0.1:9', ...over });
    expect(res.status).toBe(200);
  };
  report(); // ready: the benchmark enters the perf book
  expect(w.state).toBe('ready');
  /** `n` reports one `dt` apart, each with these fields. */
  const run = (n: number, dtMs: number, fields: Record<string, unknown>) => {
    for (let i = 0; i < n; i++) {
      clock.advanceBy(dtMs);
      report(fields);
    }
  };
  return { reg, w, report, run };
}

describe('perf learning: only saturated intervals correct a type', () => {
  it('a busy but lightly loaded worker (one request in flight) leaves the type at its benchmark', () => {
    const t = setup();
    // One 8-load request always in flight, ≈590 load/s served: busy at every report, far from full.
    t.run(120, 1000, { cur_load: 8, num_requests_working: 1, working_request_idxs: [1], cur_perf: 590, new_load: 590 });
    // Also with longer intervals (the 10 s heartbeat) and a few requests of more load.
    t.run(30, 10_000, { cur_load: 1500, num_requests_working: 6, working_request_idxs: [1, 2, 3, 4, 5, 6], cur_perf: 5900, new_load: 5900 });
    expect(t.reg.perf.get(t.w.typeKey)).toMatchObject({ benchmarks: 1, measured: 0 });
    expect(t.reg.perf.estimate(t.w.typeKey)).toBe(BENCH);
    expect(t.w.measuredPerf).toBe(0);
    // The live throughput is still reported as such.
    expect(t.w.curPerf).toBeCloseTo(590, 5);
  });

  it('a burst that lands at the end of an interval does not count: work must wait at both ends', () => {
    const t = setup();
    for (let i = 0; i < 40; i++) {
      t.run(1, 1000, { cur_load: 8, num_requests_working: 1, cur_perf: 500 });
      t.run(1, 1000, { cur_load: 50_000, num_requests_working: 200, cur_perf: 500 });
    }
    expect(t.reg.perf.get(t.w.typeKey)!.measured).toBe(0);
    expect(t.reg.perf.estimate(t.w.typeKey)).toBe(BENCH);
  });

  it('a saturated worker (work waiting at both ends) corrects the type to what it serves', () => {
    const t = setup();
    // The router keeps ~30 s of work queued on it; it serves 1000 load/s, not the benchmarked 2160.
    t.run(40, 1000, { cur_load: 60_000, num_requests_working: 300, cur_perf: 1000, new_load: 1000 });
    const k = t.reg.perf.get(t.w.typeKey)!;
    expect(k.measured).toBe(39); // the first interval began at the idle ready report
    expect(t.reg.perf.estimate(t.w.typeKey)).toBeCloseTo(1000, 5);
    expect(t.w.measuredPerf).toBeCloseTo(1000, 5);
  });

  it('rejections are evidence of saturation even with little load in flight', () => {
    const t = setup();
    t.run(20, 1000, { cur_load: 64, num_requests_working: 8, cur_perf: 1200, rej_load: 400 });
    expect(t.reg.perf.get(t.w.typeKey)!.measured).toBe(19);
    expect(t.reg.perf.estimate(t.w.typeKey)).toBeCloseTo(1200, 5);
  });

  it('a saturated worker faster than its benchmark raises the type by at most ×1.1', () => {
    const t = setup();
    t.run(20, 1000, { cur_load: 80_000, num_requests_working: 400, cur_perf: 4000 });
    expect(t.reg.perf.estimate(t.w.typeKey)).toBeCloseTo(BENCH * 1.1, 5);
  });

  it('idle at either end, a sub-second interval or nothing served is never a measurement', () => {
    const base = { dt: 1, served: 1000, loadBefore: 5000, loadAfter: 5000, workingBefore: 10, workingAfter: 10, rejected: 0, believed: 2000 };
    expect(saturatedInterval(base)).toBe(true);
    expect(saturatedInterval({ ...base, workingBefore: 0 })).toBe(false);
    expect(saturatedInterval({ ...base, workingAfter: 0, rejected: 100 })).toBe(false);
    expect(saturatedInterval({ ...base, dt: 0.5 })).toBe(false);
    expect(saturatedInterval({ ...base, served: 0 })).toBe(false);
    expect(saturatedInterval({ ...base, dt: Number.NaN })).toBe(false);
    // Less waiting than an interval's worth at the believed perf: demand-limited.
    expect(saturatedInterval({ ...base, loadBefore: 1999 })).toBe(false);
    expect(saturatedInterval({ ...base, loadAfter: 1999 })).toBe(false);
    expect(saturatedInterval({ ...base, dt: 3 })).toBe(false);
    // Nothing believed yet: busy at both ends is all there is to go on.
    expect(saturatedInterval({ ...base, loadBefore: 1, believed: 0 })).toBe(true);
  });
});
