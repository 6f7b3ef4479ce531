import { sortedQuantile } from '../../common/util.js';
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
  const best = [...usable].sort((a, b) => perfPerDollar(b) - perfPerDollar(a))[0]!;
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

function perfPerDollar(m: OracleMachine): number {
  return m.dollarsPerHour > 0 ? m.perf / m.dollarsPerHour : Number.POSITIVE_INFINITY;
}

/** The clairvoyant plan that also meets a queue-time target: what bursts cost even with foresight. */
export interface LatencyOracleResult {
  /** Queue time target met at the quantile, s. */
  targetQueueTime: number;
  quantile: number;
  /** Workers each minute (of the best perf-per-dollar machine). */
  workersPerMinute: number[];
  gpuHours: number;
  dollars: number;
  /** The plan's queue time at the quantile (≤ the target unless `met` is false). */
  queueTimeAtQuantile: number;
  met: boolean;
}

/**
 * A lower bound on the cost of meeting `targetQueueTime` at `quantile` (p99: 0.99): knows every
 * minute's requests in advance, starts and stops machines instantly at minute boundaries, serves
 * one global FIFO queue. It starts from the whole-workers plan and adds a worker to the minute
 * with the most requests over the target until the quantile is met. No policy that learns the load
 * as it arrives and waits for machines to start can meet the target for less.
 */
export function latencyOracle(
  requests: readonly TraceRequest[],
  machine: OracleMachine,
  minutes: number,
  targetQueueTime: number,
  quantile = 0.99,
): LatencyOracleResult {
  const M = Math.max(1, minutes);
  const perMinute = new Array<number>(M).fill(0);
  for (const r of requests) {
    const m = Math.floor(r.at / 60);
    if (m >= 0 && m < M) perMinute[m]! += r.workload;
  }
  const plan = perMinute.map((load) => Math.ceil(load / 60 / machine.perf - 1e-12));
  const allowedOver = requests.length - Math.ceil(quantile * requests.length);
  let waits: number[] = [];
  for (let round = 0; round <= 20 * M; round++) {
    const over = new Array<number>(M).fill(0);
    waits = fifoWaits(requests, plan, machine.perf);
    let count = 0;
    waits.forEach((w, i) => {
      if (w > targetQueueTime) {
        count++;
        over[Math.min(M - 1, Math.floor(requests[i]!.at / 60))]!++;
      }
    });
    if (count <= allowedOver) break;
    let worst = 0;
    for (let m = 1; m < M; m++) if (over[m]! > over[worst]!) worst = m;
    plan[worst]!++;
  }
  const sorted = [...waits].sort((a, b) => a - b);
  const atQuantile = sorted.length > 0 ? sortedQuantile(sorted, quantile) : 0;
  const gpuHours = plan.reduce((a, b) => a + b, 0) / 60;
  return {
    targetQueueTime,
    quantile,
    workersPerMinute: plan,
    gpuHours,
    dollars: gpuHours * machine.dollarsPerHour,
    queueTimeAtQuantile: atQuantile,
    met: atQuantile <= targetQueueTime,
  };
}

/** Queue time of each request on a FIFO queue served by `plan[minute]` identical machines. */
function fifoWaits(requests: readonly TraceRequest[], plan: readonly number[], perf: number): number[] {
  const M = plan.length;
  const width = Math.max(1, ...plan);
  const freeAt = new Array<number>(width).fill(0);
  const minuteOf = (s: number) => Math.floor(s / 60);
  return requests.map((r) => {
    let best = Number.POSITIVE_INFINITY;
    let bi = 0;
    for (let i = 0; i < width; i++) {
      let s = Math.max(r.at, freeAt[i]!);
      // Machine i exists in minutes whose plan has more than i machines; after the trace, machine 0 drains the rest.
      while (minuteOf(s) < M && i >= plan[minuteOf(s)]!) s = (minuteOf(s) + 1) * 60;
      if (minuteOf(s) >= M && i > 0) continue;
      if (s < best) {
        best = s;
        bi = i;
      }
    }
    freeAt[bi] = best + r.workload / perf;
    return best - r.at;
  });
}
