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

/** A clairvoyant plan that also meets a queue-time target: what bursts cost with foresight (a greedy plan, not a bound). */
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
 * A greedy foresight plan meeting `targetQueueTime` at `quantile` (p99: 0.99): it knows every
 * minute's requests in advance, starts and stops machines instantly at minute boundaries and serves
 * one global FIFO queue. It starts from the whole-workers plan and adds a worker to the minute with
 * the most requests over the target until the quantile is met. It is a greedy plan, NOT a lower
 * bound: adding workers one minute at a time by a local rule need not find the cheapest plan (a
 * worker added early can clear a backlog that spills into later minutes more cheaply than several
 * added where the late requests are counted), and a controller with per-second moves or size-aware
 * dispatch can do better than its minute grid and FIFO queue. It says what bursts cost with
 * foresight on these terms, not what no policy can beat.
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
  let waits: Float64Array = new Float64Array(0);
  for (let round = 0; round <= 20 * M; round++) {
    const over = new Array<number>(M).fill(0);
    waits = fifoWaits(requests, plan, machine.perf);
    let count = 0;
    for (let i = 0; i < waits.length; i++) {
      if (waits[i]! > targetQueueTime) {
        count++;
        over[Math.min(M - 1, Math.floor(requests[i]!.at / 60))]!++;
      }
    }
    if (count <= allowedOver) break;
    let worst = 0;
    for (let m = 1; m < M; m++) if (over[m]! > over[worst]!) worst = m;
    plan[worst]!++;
  }
  const sorted = waits.slice().sort();
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
function fifoWaits(requests: readonly TraceRequest[], plan: readonly number[], perf: number): Float64Array {
  const M = plan.length;
  const width = Math.max(1, ...plan);
  const freeAt = new Float64Array(width);
  const out = new Float64Array(requests.length);
  for (let k = 0; k < requests.length; k++) {
    const r = requests[k]!;
    let best = Number.POSITIVE_INFINITY;
    let bi = 0;
    for (let i = 0; i < width; i++) {
      let s = Math.max(r.at, freeAt[i]!);
      if (s >= best) continue; // it cannot start sooner here: skip the minute walk
      // Machine i exists in minutes whose plan has more than i machines; after the trace, machine 0 drains the rest.
      let m = Math.floor(s / 60);
      while (m < M && i >= plan[m]!) {
        m++;
        s = m * 60;
      }
      if (m >= M && i > 0) continue;
      if (s < best) {
        best = s;
        bi = i;
      }
    }
    freeAt[bi] = best + r.workload / perf;
    out[k] = best - r.at;
  }
  return out;
}
