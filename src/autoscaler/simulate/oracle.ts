import type { TraceRequest } from './trace.js';

/**
 * The oracle: a lower bound on what serving the trace can cost. It knows each minute's load in
 * advance, needs no load time, and buys exactly the capacity that minute needs from the machine
 * type with the best true perf per dollar:
 * - `fluid`: fractional machines (GPU-seconds = the minute's workload / perf), the true floor;
 * - `wholeWorkers`: whole machines per minute (ceil of the minute's mean load / perf), closer to
 *   what any real fleet can do.
 */

export interface OracleMachine {
  name: string;
  perf: number;
  dollarsPerHour: number;
}

export interface OracleResult {
  machine: string;
  perf: number;
  dollarsPerHour: number;
  fluid: { gpuHours: number; dollars: number };
  wholeWorkers: { gpuHours: number; dollars: number; peakWorkers: number };
  /** Workload arriving per minute, load units. */
  loadPerMinute: number[];
}

/** Oracle cost over `minutes` minutes of the trace (requests with `at` in [0, minutes·60)). */
export function oracleCost(requests: readonly TraceRequest[], machines: readonly OracleMachine[], minutes: number): OracleResult {
  const usable = machines.filter((m) => m.perf > 0);
  if (usable.length === 0) throw new Error('the oracle needs at least one machine type with a perf');
  const best = [...usable].sort((a, b) => valueOf(b) - valueOf(a))[0]!;
  const perMinute = new Array<number>(Math.max(0, minutes)).fill(0);
  for (const r of requests) {
    const m = Math.floor(r.at / 60);
    if (m >= 0 && m < perMinute.length) perMinute[m]! += r.workload;
  }
  let fluidSeconds = 0;
  let wholeMinutes = 0;
  let peak = 0;
  for (const load of perMinute) {
    fluidSeconds += load / best.perf;
    const workers = Math.ceil(load / 60 / best.perf - 1e-12);
    wholeMinutes += workers;
    peak = Math.max(peak, workers);
  }
  const fluidHours = fluidSeconds / 3600;
  const wholeHours = wholeMinutes / 60;
  return {
    machine: best.name,
    perf: best.perf,
    dollarsPerHour: best.dollarsPerHour,
    fluid: { gpuHours: fluidHours, dollars: fluidHours * best.dollarsPerHour },
    wholeWorkers: { gpuHours: wholeHours, dollars: wholeHours * best.dollarsPerHour, peakWorkers: peak },
    loadPerMinute: perMinute,
  };
}

function valueOf(m: OracleMachine): number {
  return m.dollarsPerHour > 0 ? m.perf / m.dollarsPerHour : Number.POSITIVE_INFINITY;
}
