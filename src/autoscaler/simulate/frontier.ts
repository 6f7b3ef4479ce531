import { sortedQuantile } from '../../common/util.js';
import { oracleCost, type OracleMachine } from './oracle.js';
import type { TraceRequest } from './trace.js';

/**
 * The reactive frontier (`simulate --frontier`): what the best *causal* controller could reach on a
 * trace, as evidence for or against a cost/latency goal. A causal controller learns the load only as
 * it arrives and waits `startSeconds` for a stopped worker to serve. The model below idealises
 * everything else in the controller's favour:
 * - one global FIFO queue served by the ready capacity (ready workers × perf, load/s) in steps of
 *   `dt`, either as one pooled fluid server or as separate workers (`Serving`); a request starts the
 *   first step it receives capacity, queue time = that step's start − its arrival (never below 0);
 * - instant detection: each second the controller sees every arrival so far and the exact backlog;
 * - an unlimited pool of stopped workers, up to `cap` ready + starting, each ready exactly
 *   `startSeconds` after its start: no failures, no load time, no benchmark, no routing;
 * - every worker is the machine with the best perf per dollar; billing = (ready + starting) workers
 *   × time × its $/h over the trace's minutes (what the whole-workers oracle covers);
 * - at least `floor` workers always ready.
 * The controller is a family swept over its parameters, plus the always-on family (k workers, never
 * scaled); the sweep reports each point's cost (× the whole-workers oracle), queue p99 and share of
 * requests over the target, the Pareto frontier, the cheapest point meeting the target and the best
 * p99 within the budget. Pure: no I/O.
 */

/** Parameters of one reactive controller. */
export interface ReactiveParams {
  /** Seconds of arrivals the rate is measured over. */
  win: number;
  /** Seconds the backlog beyond one second of ready work is sized to drain in (the backlog-drain term). */
  horizon: number;
  /** Memory of recent peaks, s: the fleet is not cut below the highest rate-based need of the last `hold` s. */
  hold: number;
  /** Weight of the backlog the shortfall (rate − ready capacity) builds during a start, 0..1. */
  fore: number;
  /** Headroom multiplier on the measured rate (1: size for the rate exactly). Absent: 1. */
  headroom?: number;
}

/** One swept controller and what it reached. */
export interface FrontierPoint {
  kind: 'reactive' | 'always-on';
  /** The reactive controller's parameters (absent for always-on). */
  params?: ReactiveParams;
  /** Workers always ready (always-on: the whole fleet). */
  floor: number;
  /** Most workers ready + starting. */
  cap: number;
  /** Billed worker-seconds (ready + starting) over the trace's minutes. */
  workerSeconds: number;
  dollars: number;
  /** Cost × the whole-workers oracle. */
  vsWholeWorkers: number;
  /** Cost × the fluid oracle. */
  vsFluid: number;
  /** Queue time percentiles, s. */
  p50: number;
  p99: number;
  max: number;
  /** Requests with queue time > the target, and their share of all requests. */
  late: number;
  lateShare: number;
  /** Workers started (from stopped). */
  activations: number;
  /** Most workers ready + starting at once. */
  maxWorkers: number;
}

/** The swept grid of the reactive family. */
export interface FrontierGrid {
  win: readonly number[];
  horizon: readonly number[];
  hold: readonly number[];
  fore: readonly number[];
  /** Headroom multipliers (absent: [1]). */
  headroom?: readonly number[];
}

/** The default grid: 3 × 4 × 5 × 2 × 4 = 480 controllers per floor. */
export const DEFAULT_FRONTIER_GRID: FrontierGrid = {
  win: [2, 5, 10],
  horizon: [2, 5, 10, 30],
  hold: [10, 30, 60, 120, 300],
  fore: [0, 1],
  headroom: [1, 1.25, 1.5, 2],
};

/** The default floors at ×1: scale to zero (`min_load: 0`) up to six workers always ready (scaled with the rate). */
export const DEFAULT_FRONTIER_FLOORS: readonly number[] = [0, 1, 2, 3, 4, 5, 6];

/** The default always-on sizes at ×1 (scaled with the rate). */
export const DEFAULT_ALWAYS_ON: readonly number[] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

/** The default cap of the reactive family at ×1 (scaled with the rate). */
export const DEFAULT_FRONTIER_CAP = 16;

/**
 * Sizes swept at ×1 (`base`) for `rate` times the traffic: each scaled by the rate and rounded (×10
 * floors are 0, 10, 20…, not every integer: the sweep's length does not grow with the rate).
 */
export function scaledSizes(base: readonly number[], rate: number): number[] {
  return [...new Set(base.map((b) => Math.round(b * rate)))].sort((a, b) => a - b);
}

export interface FrontierOptions {
  /** Machine types (true perf and price); the model uses the best perf per dollar, like the oracle. */
  machines: readonly OracleMachine[];
  /** Billed minutes (default: ceil(last arrival / 60), at least 1, as `simulate` bills). */
  minutes?: number;
  /** Seconds from starting a stopped worker to it serving (default 15). */
  startSeconds?: number;
  /** Queue time target, s (default 10). */
  targetQueueTime?: number;
  /** Cost budget, × the whole-workers oracle (default 1.5). */
  budget?: number;
  /** Workers always ready, each swept with the whole grid (default DEFAULT_FRONTIER_FLOORS; `min_load: 1` implies 1). */
  floors?: readonly number[];
  /** Most workers ready + starting for the reactive family (default 16). */
  cap?: number;
  /** Time step, s; 1/dt must be a whole number (default 0.1). */
  dt?: number;
  grid?: FrontierGrid;
  /** How ready workers serve the queue (default pooled). */
  serving?: Serving;
  /** Fleet sizes of the always-on family (default DEFAULT_ALWAYS_ON scaled by `rate`). */
  alwaysOn?: readonly number[];
  /**
   * The traffic's multiple of the ×1 trace (`simulate --rate`): the default floors, always-on sizes
   * and cap are the ×1 ones scaled by it (default 1).
   */
  rate?: number;
  /** Called every few points with (done, total): the sweep at ×100 takes minutes. */
  onProgress?: (done: number, total: number) => void;
}

/** The sweep, its Pareto frontier and the two headline points. */
export interface FrontierResult {
  machine: string;
  perf: number;
  dollarsPerHour: number;
  requests: number;
  minutes: number;
  startSeconds: number;
  targetQueueTime: number;
  budget: number;
  floors: number[];
  cap: number;
  /** The traffic's multiple of the ×1 trace the sizes were scaled by. */
  rate: number;
  dt: number;
  serving: Serving;
  oracle: { fluidDollars: number; wholeWorkersDollars: number; wholeWorkerMinutes: number };
  grid: FrontierGrid;
  alwaysOn: number[];
  points: FrontierPoint[];
  /** Points no other point beats on both cost and p99, cheapest first. */
  frontier: FrontierPoint[];
  /** The cheapest point with p99 ≤ the target, or null when none reaches it. */
  cheapestMeetingTarget: FrontierPoint | null;
  /** The lowest p99 at cost ≤ budget × the whole-workers oracle (ties: the cheaper), or null. */
  bestWithinBudget: FrontierPoint | null;
}

/** A trace in the arrays the model runs on, shared by every point of a sweep. */
export interface PreparedTrace {
  dt: number;
  /** Steps per second (1/dt). */
  stepsPerSecond: number;
  at: Float64Array;
  work: Float64Array;
  /** The step each request arrives in (arrivals in [k·dt, (k+1)·dt) join at step k). */
  step: Int32Array;
  /** cum[k] = load arrived in steps < k (length: last arrival step + 2). */
  cum: Float64Array;
}

/** Requests (sorted by `at`) as typed arrays with per-step arrival sums. */
export function prepareTrace(requests: readonly TraceRequest[], dt = 0.1): PreparedTrace {
  const stepsPerSecond = Math.round(1 / dt);
  if (!(dt > 0) || Math.abs(stepsPerSecond * dt - 1) > 1e-9) throw new Error(`dt must divide one second (1/dt a whole number), got ${dt}`);
  const n = requests.length;
  const at = new Float64Array(n);
  const work = new Float64Array(n);
  const step = new Int32Array(n);
  let prev = 0;
  for (let i = 0; i < n; i++) {
    const r = requests[i]!;
    if (!(r.at >= prev) || !(r.workload >= 0))
      throw new Error(`requests must be sorted by time with workload ≥ 0 (request ${i}: at ${r.at}, workload ${r.workload})`);
    prev = r.at;
    at[i] = r.at;
    work[i] = r.workload;
    step[i] = Math.floor(r.at * stepsPerSecond + 1e-9);
  }
  const last = n > 0 ? step[n - 1]! : 0;
  const cum = new Float64Array(last + 2);
  for (let i = 0; i < n; i++) cum[step[i]! + 1]! += work[i]!;
  for (let k = 1; k < cum.length; k++) cum[k]! += cum[k - 1]!;
  return { dt, stepsPerSecond, at, work, step, cum };
}

/**
 * How the ready capacity serves the queue:
 * - `pooled`: the whole ready capacity flows to the oldest unfinished request (one fluid server);
 * - `workers`: each ready worker serves one request at a time at `perf` and takes the oldest
 *   waiting request when free (n separate servers, one global FIFO queue); a worker stopped while
 *   busy finishes its request first (billed) and takes no other.
 * - `smallest`: separate workers with size-aware dispatch: a free worker takes the smallest waiting
 *   request (shortest job first), so a long request no longer holds up the short ones behind it.
 * None starts every request no later than the others: pooled finishes the head sooner, separate
 * workers start the next request without waiting for the head, smallest-first trades the wait of
 * the largest requests for everyone else's; the sweep can run any.
 */
export type Serving = 'pooled' | 'workers' | 'smallest';
export const SERVINGS: readonly Serving[] = ['pooled', 'workers', 'smallest'];

/** The machine and timings a run is priced and paced by. */
export interface ReactiveModel {
  perf: number;
  startSeconds: number;
  targetQueueTime: number;
  /** Steps billed (the trace's minutes). */
  billedSteps: number;
  /** How ready workers take requests (default pooled); see `Serving`. */
  serving?: Serving;
}

/** What one controller reached (before pricing). */
export interface ReactiveRun {
  workerSeconds: number;
  /** Queue time of each request, s, in arrival order. */
  waits: Float64Array;
  activations: number;
  maxWorkers: number;
}

/**
 * One controller on the model: `params` null = always-on (`floor` workers, never scaled).
 * Each second (before serving that step): rate = load arrived over the last `win` s / win;
 * forecast backlog fb = backlog + fore × max(0, rate − ready capacity) × startSeconds; need =
 * ceil((headroom × rate + max(0, fb − 1 s of ready capacity) / horizon) / perf) within [floor, cap];
 * if fewer than need are ready + starting, start the difference; otherwise, with at most one second
 * of ready work queued, scale down to max(floor, need, the highest ceil(headroom × rate / perf) of
 * the last `hold` s (memory of recent peaks), the workers that drain the backlog within a second),
 * cancelling starting workers first.
 */
export function runReactive(trace: PreparedTrace, model: ReactiveModel, params: ReactiveParams | null, floor: number, cap: number): ReactiveRun {
  const { at, work, step, cum, dt, stepsPerSecond: sps } = trace;
  const { perf, startSeconds, billedSteps } = model;
  const serving = model.serving ?? 'pooled';
  const pooled = serving === 'pooled';
  const smallest = serving === 'smallest';
  const n = at.length;
  if (params === null) cap = floor;
  if (!(perf > 0)) throw new Error(`perf must be > 0, got ${perf}`);
  if (!Number.isInteger(floor) || floor < 0) throw new Error(`floor must be a whole number ≥ 0, got ${floor}`);
  if (!Number.isInteger(cap) || cap < Math.max(1, floor)) throw new Error(`cap must be a whole number ≥ max(1, floor ${floor}), got ${cap}`);
  const headroom = params?.headroom ?? 1;
  if (params) {
    for (const key of ['win', 'horizon', 'hold'] as const) {
      if (!(params[key] > 0)) throw new Error(`${key} must be > 0, got ${params[key]}`);
    }
    if (!(params.fore >= 0)) throw new Error(`fore must be ≥ 0, got ${params.fore}`);
    if (!(headroom >= 1)) throw new Error(`headroom must be ≥ 1, got ${headroom}`);
  }
  const startSteps = Math.max(0, Math.round(startSeconds * sps));
  const winSteps = params ? Math.max(1, Math.round(params.win * sps)) : 1;
  const holdSeconds = params ? Math.max(1, Math.round(params.hold)) : 1;
  const lastCum = cum.length - 1;
  /** Load arrived in the `span` steps up to and including step k. */
  const arrived = (k: number, span: number): number => {
    const hi = Math.min(k + 1, lastCum);
    const lo = Math.min(Math.max(k + 1 - span, 0), lastCum);
    return cum[hi]! - cum[lo]!;
  };

  const waits = new Float64Array(n);
  // Starting workers: the step each becomes ready, in start order (all wait the same time).
  const starts: number[] = [];
  let startHead = 0;
  let ready = floor;
  let activations = 0;
  let maxWorkers = floor;
  let workerSteps = 0;
  // Memory of recent peaks: (second, rate need) pairs with falling needs (a sliding-window maximum).
  const peakAt: number[] = [];
  const peakNeed: number[] = [];
  let peakHead = 0;
  // Queue: requests [head, next) have arrived and are unfinished; only the head can be part-served.
  let next = 0;
  let head = 0;
  let headLeft = n > 0 ? work[0]! : 0;
  let headStarted = false;
  let backlog = 0;
  // Separate workers: remaining work of each ready worker's request, the next request to start
  // (FIFO) or the waiting requests by size (smallest first), and the requests stopped workers finish
  // before they go.
  const left = new Float64Array(Math.max(cap, floor));
  let nextStart = 0;
  const heap = smallest ? new SizeHeap(work) : null;
  const draining: number[] = [];

  // With at least one worker whenever a request waits, everything is served by then.
  const lastStep = n > 0 ? step[n - 1]! : 0;
  const bound = Math.max(billedSteps, lastStep) + Math.ceil((cum[lastCum]! / perf + startSeconds + 2) * sps) + 10;
  for (let k = 0; ; k++) {
    if (k > bound) throw new Error(`the reactive model did not drain its queue by step ${bound} (a bug)`);
    while (next < n && step[next]! <= k) {
      if (heap) heap.push(next);
      backlog += work[next++]!;
    }
    while (startHead < starts.length && starts[startHead]! <= k) {
      ready++;
      startHead++;
    }
    if (params && k % sps === 0) {
      const second = k / sps;
      const rate = arrived(k, winSteps) / params.win;
      const readyCap = ready * perf;
      const forecast = backlog + params.fore * Math.max(0, rate - readyCap) * startSeconds;
      const rateNeed = Math.ceil((headroom * rate) / perf - 1e-9);
      let need = Math.ceil((headroom * rate + Math.max(0, forecast - readyCap) / params.horizon) / perf - 1e-9);
      // A waiting request needs a worker even when its work is zero or lost to rounding.
      const waiting = pooled ? head < next : heap ? heap.size > 0 : nextStart < next;
      need = Math.min(cap, Math.max(floor, need, waiting ? 1 : 0));
      while (peakAt.length > peakHead && peakNeed[peakNeed.length - 1]! <= rateNeed) {
        peakAt.pop();
        peakNeed.pop();
      }
      peakAt.push(second);
      peakNeed.push(rateNeed);
      while (peakAt[peakHead]! <= second - holdSeconds) peakHead++;
      if (peakHead > 64 && peakHead * 2 > peakAt.length) {
        peakAt.splice(0, peakHead);
        peakNeed.splice(0, peakHead);
        peakHead = 0;
      }
      const starting = starts.length - startHead;
      if (ready + starting < need) {
        for (let j = ready + starting; j < need; j++) starts.push(k + startSteps);
        activations += need - ready - starting;
      } else if (backlog <= readyCap) {
        // Never below the workers that drain the backlog within a second (cutting to `need` alone
        // would leave up to a second of the whole fleet's work to the few that remain).
        const keep = Math.min(cap, Math.max(floor, need, peakNeed[peakHead]!, Math.ceil(backlog / perf - 1e-9)));
        while (starts.length > startHead && ready + starts.length - startHead > keep) starts.pop();
        if (ready > keep) {
          if (!pooled) stopWorkers(left, ready, keep, draining);
          ready = keep;
        }
      }
      if (startHead > 64 && startHead * 2 > starts.length) {
        starts.splice(0, startHead);
        startHead = 0;
      }
    }
    if (!pooled) {
      // Serve: each ready worker its own request; a free one takes the oldest (or smallest) waiting one.
      const perStep = perf * dt;
      let busy = 0;
      for (let w = 0; w < ready; w++) {
        let c = perStep;
        while (c > 0) {
          if (left[w]! <= 1e-9) {
            backlog -= left[w]!;
            left[w] = 0;
            let r: number;
            if (heap) {
              if (heap.size === 0) break;
              r = heap.pop();
            } else {
              if (nextStart >= next) break;
              r = nextStart++;
            }
            waits[r] = Math.max(0, k * dt - at[r]!);
            left[w] = work[r]!;
            continue;
          }
          const use = Math.min(c, left[w]!);
          left[w]! -= use;
          c -= use;
          backlog -= use;
        }
        if (left[w]! > 1e-9) busy++;
      }
      for (let d = draining.length - 1; d >= 0; d--) {
        const use = Math.min(perStep, draining[d]!);
        draining[d]! -= use;
        backlog -= use;
        if (draining[d]! <= 1e-9) {
          backlog -= draining[d]!;
          draining.splice(d, 1);
        }
      }
      const queued = heap ? heap.size > 0 : nextStart < next;
      if ((!queued && busy === 0 && draining.length === 0) || backlog < 0) backlog = 0;
      const live = ready + starts.length - startHead + draining.length;
      if (k < billedSteps) workerSteps += live;
      if (live > maxWorkers) maxWorkers = live;
      const allStarted = next >= n && !queued;
      if (allStarted && busy === 0 && draining.length === 0 && k + 1 >= billedSteps) break;
      continue;
    }
    // Serve: the ready capacity of this step flows to the queue head first.
    let capacity = ready * perf * dt;
    while (capacity > 0 && head < next) {
      if (!headStarted) {
        waits[head] = Math.max(0, k * dt - at[head]!);
        headStarted = true;
      }
      const use = Math.min(capacity, headLeft);
      headLeft -= use;
      capacity -= use;
      backlog -= use;
      if (headLeft <= 1e-9) {
        backlog -= headLeft;
        head++;
        headLeft = head < n ? work[head]! : 0;
        headStarted = false;
      }
    }
    if (head === next || backlog < 0) backlog = 0;
    const live = ready + starts.length - startHead;
    if (k < billedSteps) workerSteps += live;
    if (live > maxWorkers) maxWorkers = live;
    if (head >= n && k + 1 >= billedSteps) break;
  }
  return { workerSeconds: workerSteps * dt, waits, activations, maxWorkers };
}

/** Waiting requests by size (their workload; ties: the earlier first): a binary min-heap of indices. */
class SizeHeap {
  private readonly items: number[] = [];
  constructor(private readonly work: Float64Array) {}
  get size(): number {
    return this.items.length;
  }
  private less(a: number, b: number): boolean {
    const wa = this.work[a]!;
    const wb = this.work[b]!;
    return wa < wb || (wa === wb && a < b);
  }
  push(i: number): void {
    const h = this.items;
    h.push(i);
    let c = h.length - 1;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (!this.less(h[c]!, h[p]!)) break;
      [h[c], h[p]] = [h[p]!, h[c]!];
      c = p;
    }
  }
  pop(): number {
    const h = this.items;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let p = 0;
      for (;;) {
        const l = 2 * p + 1;
        const r = l + 1;
        let m = p;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === p) break;
        [h[m], h[p]] = [h[p]!, h[m]!];
        p = m;
      }
    }
    return top;
  }
}

/**
 * Separate workers: shrink the ready workers `left[0..ready)` to `keep`, stopping idle ones first;
 * a busy one stopped moves its request's remaining work to `draining` (finished before it goes).
 */
function stopWorkers(left: Float64Array, ready: number, keep: number, draining: number[]): void {
  let idle = 0;
  for (let w = 0; w < ready; w++) if (left[w]! <= 1e-9) idle++;
  let stopBusy = Math.max(0, ready - keep - idle);
  let keepIdle = Math.max(0, idle - (ready - keep));
  let out = 0;
  for (let w = 0; w < ready; w++) {
    const v = left[w]!;
    if (v > 1e-9) {
      if (stopBusy > 0) {
        draining.push(v);
        stopBusy--;
      } else left[out++] = v;
    } else if (keepIdle > 0) {
      left[out++] = 0;
      keepIdle--;
    }
  }
  for (let w = out; w < ready; w++) left[w] = 0;
}

/** The value at quantile q (0..1) of an ascending array (0 when empty). */
function quantileOf(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? 0 : sortedQuantile(sorted, q);
}

/** Points no other point beats on both cost and p99: ascending cost, strictly falling p99. */
export function paretoFrontier(points: readonly FrontierPoint[]): FrontierPoint[] {
  const sorted = [...points].sort((a, b) => a.workerSeconds - b.workerSeconds || a.p99 - b.p99);
  const out: FrontierPoint[] = [];
  let best = Number.POSITIVE_INFINITY;
  for (const p of sorted) {
    if (p.p99 < best) {
      out.push(p);
      best = p.p99;
    }
  }
  return out;
}

/** Sweep the reactive family over `opts.grid` and the always-on family over `opts.alwaysOn` on `requests`. */
export function reactiveFrontier(requests: readonly TraceRequest[], opts: FrontierOptions): FrontierResult {
  const dt = opts.dt ?? 0.1;
  const span = requests.length > 0 ? requests[requests.length - 1]!.at : 0;
  const minutes = opts.minutes ?? Math.max(1, Math.ceil(span / 60));
  const startSeconds = opts.startSeconds ?? 15;
  const targetQueueTime = opts.targetQueueTime ?? 10;
  const budget = opts.budget ?? 1.5;
  const rate = opts.rate ?? 1;
  if (!(rate > 0)) throw new Error(`rate must be > 0, got ${rate}`);
  const floors = [...(opts.floors ?? scaledSizes(DEFAULT_FRONTIER_FLOORS, rate))];
  const cap = opts.cap ?? Math.max(1, Math.round(DEFAULT_FRONTIER_CAP * rate));
  const grid = opts.grid ?? DEFAULT_FRONTIER_GRID;
  const serving = opts.serving ?? 'pooled';
  if (!SERVINGS.includes(serving)) throw new Error(`serving must be one of ${SERVINGS.join(', ')}, got ${JSON.stringify(serving)}`);
  const alwaysOn = [...(opts.alwaysOn ?? scaledSizes(DEFAULT_ALWAYS_ON, rate).filter((k) => k >= 1))];
  if (!(startSeconds >= 0)) throw new Error(`startSeconds must be ≥ 0, got ${startSeconds}`);
  if (!(targetQueueTime >= 0)) throw new Error(`targetQueueTime must be ≥ 0, got ${targetQueueTime}`);
  if (!Number.isInteger(minutes) || minutes < 1) throw new Error(`minutes must be a whole number ≥ 1, got ${minutes}`);
  for (const f of floors) if (!Number.isInteger(f) || f < 0 || f > cap) throw new Error(`floors must be whole numbers in 0..cap (${cap}), got ${f}`);
  for (const k of alwaysOn) if (!Number.isInteger(k) || k < 1) throw new Error(`alwaysOn sizes must be whole numbers ≥ 1, got ${k}`);

  const oracle = oracleCost(requests, opts.machines, minutes);
  const wholeWorkerMinutes = Math.round(oracle.wholeWorkers.gpuHours * 60);
  const trace = prepareTrace(requests, dt);
  const model: ReactiveModel = { perf: oracle.perf, startSeconds, targetQueueTime, billedSteps: Math.round(minutes * 60 * trace.stepsPerSecond), serving };
  const sorted = new Float64Array(requests.length);

  const point = (kind: FrontierPoint['kind'], params: ReactiveParams | undefined, pFloor: number, pCap: number): FrontierPoint => {
    const run = runReactive(trace, model, params ?? null, pFloor, pCap);
    sorted.set(run.waits);
    sorted.sort();
    let late = 0;
    for (let i = 0; i < sorted.length; i++) if (sorted[i]! > targetQueueTime) late++;
    const dollars = (run.workerSeconds / 3600) * oracle.dollarsPerHour;
    return {
      kind,
      ...(params ? { params } : {}),
      floor: pFloor,
      cap: kind === 'always-on' ? pFloor : pCap,
      workerSeconds: round(run.workerSeconds, 1),
      dollars: round(dollars, 4),
      vsWholeWorkers: oracle.wholeWorkers.dollars > 0 ? round(dollars / oracle.wholeWorkers.dollars, 3) : Number.POSITIVE_INFINITY,
      vsFluid: oracle.fluid.dollars > 0 ? round(dollars / oracle.fluid.dollars, 3) : Number.POSITIVE_INFINITY,
      p50: round(quantileOf(sorted, 0.5), 2),
      p99: round(quantileOf(sorted, 0.99), 2),
      max: round(sorted.length > 0 ? sorted[sorted.length - 1]! : 0, 2),
      late,
      lateShare: sorted.length > 0 ? round(late / sorted.length, 5) : 0,
      activations: run.activations,
      maxWorkers: run.maxWorkers,
    };
  };

  const headrooms = grid.headroom ?? [1];
  const controllers: ReactiveParams[] = [];
  for (const win of grid.win)
    for (const horizon of grid.horizon)
      for (const hold of grid.hold) for (const fore of grid.fore) for (const headroom of headrooms) controllers.push({ win, horizon, hold, fore, headroom });
  const total = floors.length * controllers.length + alwaysOn.length;
  const points: FrontierPoint[] = [];
  const done = () => {
    if (opts.onProgress && (points.length % 50 === 0 || points.length === total)) opts.onProgress(points.length, total);
  };
  for (const floor of floors)
    for (const c of controllers) {
      points.push(point('reactive', c, floor, cap));
      done();
    }
  for (const k of alwaysOn) {
    points.push(point('always-on', undefined, k, k));
    done();
  }

  const frontier = paretoFrontier(points);
  const byCost = (a: FrontierPoint, b: FrontierPoint) => a.workerSeconds - b.workerSeconds || a.p99 - b.p99;
  const meeting = points.filter((p) => p.p99 <= targetQueueTime).sort(byCost);
  const within = points.filter((p) => p.vsWholeWorkers <= budget).sort((a, b) => a.p99 - b.p99 || a.workerSeconds - b.workerSeconds);
  return {
    machine: oracle.machine,
    perf: oracle.perf,
    dollarsPerHour: oracle.dollarsPerHour,
    requests: requests.length,
    minutes,
    startSeconds,
    targetQueueTime,
    budget,
    floors,
    cap,
    rate,
    dt,
    serving,
    oracle: { fluidDollars: round(oracle.fluid.dollars, 4), wholeWorkersDollars: round(oracle.wholeWorkers.dollars, 4), wholeWorkerMinutes },
    grid,
    alwaysOn,
    points,
    frontier,
    cheapestMeetingTarget: meeting[0] ?? null,
    bestWithinBudget: within[0] ?? null,
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** A point's controller in words: `always-on 5` or `floor 1 win 5 horizon 5 hold 60 fore 1 headroom 1.5`. */
export function describePoint(p: FrontierPoint): string {
  if (!p.params) return `always-on ${p.floor}`;
  const { win, horizon, hold, fore, headroom } = p.params;
  return `floor ${p.floor} win ${win} horizon ${horizon} hold ${hold} fore ${fore} headroom ${headroom ?? 1}`;
}

/** The two headline sentences: cheapest point meeting the target, best p99 within the budget. */
export function frontierHeadlines(r: FrontierResult): string[] {
  const c = r.cheapestMeetingTarget;
  const b = r.bestWithinBudget;
  return [
    c
      ? `cheapest p99 ≤ ${r.targetQueueTime} s: ${c.vsWholeWorkers}× the whole-workers oracle ($${c.dollars.toFixed(3)}), p99 ${c.p99} s, ${pct(c.lateShare)} over ${r.targetQueueTime} s (${describePoint(c)})`
      : `cheapest p99 ≤ ${r.targetQueueTime} s: none of the ${r.points.length} points reaches it`,
    b
      ? `best p99 at ≤ ${r.budget}×: ${b.p99} s, ${pct(b.lateShare)} over ${r.targetQueueTime} s, at ${b.vsWholeWorkers}× ($${b.dollars.toFixed(3)}) (${describePoint(b)})`
      : `best p99 at ≤ ${r.budget}×: no point costs that little`,
  ];
}

function pct(share: number): string {
  return `${(share * 100).toFixed(2)}%`;
}

/** The frontier as a Markdown report: the model in one line, the headlines, the Pareto table. */
export function frontierMarkdown(r: FrontierResult, label = 'trace'): string {
  const lines = [
    `# Reactive frontier: ${label}`,
    '',
    `${r.requests} requests, ${r.minutes} billed minutes; ${r.machine} (perf ${r.perf} load/s, $${r.dollarsPerHour}/h), start ${r.startSeconds} s, ` +
      `floor ${r.floors.join('/')}, cap ${r.cap}, dt ${r.dt} s, ${r.serving === 'pooled' ? 'one pooled server' : r.serving === 'workers' ? 'separate workers, oldest request first' : 'separate workers, smallest request first'}; target queue time ${r.targetQueueTime} s; whole-workers oracle $${r.oracle.wholeWorkersDollars.toFixed(3)} ` +
      `(${r.oracle.wholeWorkerMinutes} worker-minutes), fluid oracle $${r.oracle.fluidDollars.toFixed(3)}. ${r.points.length} points ` +
      `(${r.points.length - r.alwaysOn.length} reactive, ${r.alwaysOn.length} always-on).`,
    '',
    ...frontierHeadlines(r).map((h) => `- ${h}`),
    '',
    'Pareto frontier (no point is both cheaper and lower in p99):',
    '',
    '| controller | × whole workers | $ | queue p50 s | queue p99 s | over target | activations | max workers |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.frontier.map(
      (p) =>
        `| ${describePoint(p)} | ${p.vsWholeWorkers.toFixed(2)} | ${p.dollars.toFixed(3)} | ${p.p50} | ${p.p99} | ${pct(p.lateShare)} | ${p.activations} | ${p.maxWorkers} |`,
    ),
  ];
  return lines.join('\n') + '\n';
}
