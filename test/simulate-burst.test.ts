import { describe, expect, it } from 'vitest';
import { simulationConfigSchema } from '../src/autoscaler/simulate/config.js';
import { runSimulation, type TimelineRow } from '../src/autoscaler/simulate/run.js';
import type { TraceRequest } from '../src/autoscaler/simulate/trace.js';

/**
 * A 3x surge on the fake clock: a steady 600 load/s served by one worker of 800, then 1800 load/s
 * for 3 minutes, then back. Runs the real engine, policy and router, with and without the panic
 * window (the surge test answers it either way; panic holds what it started).
 */

const SURGE_AT = 300;
const SURGE_END = 480;
const END = 900;

function syntheticTrace(): TraceRequest[] {
  const out: TraceRequest[] = [];
  // Requests of 60 load: 10/s (600 load/s) normally, 30/s (1800 load/s) during the surge.
  for (let t = 0; t < END; t++) {
    const perSecond = t >= SURGE_AT && t < SURGE_END ? 30 : 10;
    for (let k = 0; k < perSecond; k++) out.push({ at: t + k / perSecond, contextTokens: 0, generatedTokens: 60, workload: 60 });
  }
  return out;
}

const config = (panicWindow?: number) =>
  simulationConfigSchema.parse({
    warmup_seconds: 400,
    drain_seconds: 60,
    sample_seconds: 1,
    endpoint: {
      name: 'burst',
      api_key: 'burst-test-key',
      ...(panicWindow === undefined ? {} : { panic_window: panicWindow }),
      workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }],
    },
    provider: {
      kind: 'simulated',
      seed: 3,
      defaults: { perf: 800, boot_time: 1, load_time: 60, start_time: 5, failure_rate: 0, crash_rate_per_hour: 0, perf_noise: 0 },
    },
  });

/** First sample time at or after `from` when ready capacity covers `load`. */
function answeredAt(rows: readonly TimelineRow[], from: number, load: number): number {
  const row = rows.find((r) => r.t >= from && r.readyCapacity >= load);
  return row ? row.t : Number.POSITIVE_INFINITY;
}

/** How often the ready count went down and then up again within [from, to). */
function reversals(rows: readonly TimelineRow[], from: number, to: number): number {
  let n = 0;
  let wentDown = false;
  let prev: number | null = null;
  for (const r of rows) {
    if (r.t < from || r.t >= to) continue;
    const ready = r.states.ready;
    if (prev !== null && ready < prev) wentDown = true;
    if (prev !== null && ready > prev && wentDown) {
      n++;
      wentDown = false;
    }
    prev = ready;
  }
  return n;
}

describe('panic window on a 3x surge', () => {
  it('answers a 3x surge within seconds and does not flap afterwards', async () => {
    const requests = syntheticTrace();
    const withPanic = await runSimulation({ config: config(), requests });
    const noPanic = await runSimulation({ config: config(0), requests, panic: false });

    const rows = withPanic.timeline;
    // Before the surge one worker serves 600 load/s.
    const before = rows.filter((r) => r.t > SURGE_AT - 30 && r.t < SURGE_AT);
    expect(before.every((r) => r.states.ready === 1)).toBe(true);

    const fast = answeredAt(rows, SURGE_AT, 1800) - SURGE_AT;
    const withoutPanic = answeredAt(noPanic.timeline, SURGE_AT, 1800) - SURGE_AT;
    // 30 requests a second against one worker is a significant surge within two seconds, planned for
    // at once with or without the panic window; inactive workers start in 5 s.
    expect(fast).toBeLessThanOrEqual(10);
    expect(withoutPanic).toBeLessThanOrEqual(10);
    expect(withPanic.report.panicEpisodes).toBeGreaterThanOrEqual(1);
    expect(noPanic.report.panicEpisodes).toBe(0);

    // No flapping: from the surge to the end the ready count rises, then falls, never up again.
    expect(reversals(rows, SURGE_AT, END)).toBe(0);
    // And capacity went back down after the surge.
    const last = rows.filter((r) => r.t >= END - 30 && r.t < END);
    expect(Math.max(...last.map((r) => r.states.ready))).toBeLessThan(Math.max(...rows.map((r) => r.states.ready)));
    expect(withPanic.report.requests.served).toBe(requests.length);
  });
});
