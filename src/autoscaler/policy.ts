import { windowRate, windowSums, type LoadHistoryView } from './load-history.js';
import type { EndpointParams } from './params.js';
import type { EndpointState, WorkerState } from './states.js';

/**
 * The scaling policy: a pure function from an endpoint's parameters, its workers, its load
 * history and the time to decisions. No I/O, no clock, no randomness: the live engine, the
 * tests and the trace simulation all run this same function.
 *
 * Capacity is perf (load/s). Each tick:
 *  1. errored workers are destroyed (their replacement falls out of the targets below);
 *  2. loads: stable (`stable_window`), panic (`panic_window`) and long (`cold_window`) averages of
 *     the load arriving at /route/;
 *  3. panic (Knative's KPA): entered when panic-window demand (load / target_util) ≥
 *     `panic_threshold` × the ready capacity, or when the observed queue time exceeds
 *     `target_queue_time`; while panicking the active target never goes down and nothing is
 *     stopped or released; left once the queued work is drained and a learned start time passed
 *     without a trigger (ski rental: holding surge capacity longer than a restart takes costs more);
 *  4. active target A = max((anticipated load + backlog drain rate) / target_util, min_load), where
 *     anticipated = stable load (max with the panic load while panicking; max with a surge: the rate
 *     of a 2–32 s window whose arrivals are significantly above the ready capacity; max with the
 *     persistent load: the stable load plus the signal share of a 2, 4 or 8 s window's rise above it,
 *     that share learned from the endpoint's own history, see burstSignalShare) and the backlog is all
 *     queued work (global queue and workers, less a second per ready worker) drained within
 *     `target_queue_time`, which also caps the queue a worker holds (the plan's routeQueueLimit);
 *     recruitment target
 *     R = max(stable load / target_util, min_load); both at least the burst reserve (burstReserve:
 *     ready capacity for a repeat of the last burst the fleet did not absorb, kept `release_delay`,
 *     and on bursty traffic for κ × the largest of `cold_window`);
 *     with the scale-to-zero gate (min_load 0 and inactivity_timeout) deciding whether either may be
 *     0 or keeps one worker;
 *  5. inactive target I = max(cold_mult × long load, min_cold_load), and at least `cold_workers`
 *     workers with the model loaded: the largest wins;
 *  6. moves: the active set is the prefix, by perf per dollar, of ready/starting/inactive workers
 *     that covers A: its inactive members are started (seconds); ready non-members are stopped
 *     (drained first when busy) when the calm target (stable or still-arriving load, queued work,
 *     the burst reserve: no surge or panic terms) was low for `scale_down_delay`; new workers are
 *     recruited for what R + I still lack (a variety of machine types first, then the best learned
 *     perf per dollar); inactive workers are released after `release_delay` when the capacity they
 *     hold was not needed during it, or when another type is REPLACE_RATIO better per dollar;
 *     never above `max_workers`.
 */

/** A worker as the policy sees it. */
export interface PolicyWorker {
  id: number;
  state: WorkerState;
  /** `workergroup/machine_type`. */
  typeKey: string;
  /** Perf to plan with: its own benchmark when reported, else its type's estimate. */
  perf: number;
  /** Its machine's price while running, $/h. */
  dollarsPerHour: number;
  /** True while requests routed to it are not finished: stopped last, and only after the engine drains it. */
  busy: boolean;
  /** When it entered its current state, ms. */
  stateSince: number;
  /** Ready but silent on requests sent to it over 5 s ago (the router avoids it): not counted as capacity. */
  suspect?: boolean;
}

/** A machine type the endpoint may recruit. */
export interface MachineChoice {
  /** `workergroup/machine_type`. */
  key: string;
  workergroup: string;
  machineType: string;
  dollarsPerHour: number;
  /** Learned perf (or the config's `expected_perf` hint); null when nothing is known. */
  perf: number | null;
  /** Benchmarks received for this type. */
  samples: number;
}

/** The global queue of the endpoint, as seen by the router. */
export interface QueueSignal {
  waiting: number;
  /** Sum of the cost of waiting requests. */
  waitingLoad: number;
  /** Observed queue time, s: the oldest wait in the global queue or the recent expected wait at a worker, whichever is larger. */
  queueTime: number;
  /** Load queued at ready workers (reported plus routed-not-yet-reported). */
  workerBacklog: number;
}

/** What the policy remembers between ticks (returned, never mutated in place). */
export interface PolicyMemory {
  panicking: boolean;
  panicSince: number | null;
  lastTriggerAt: number | null;
  /** Highest active target reached while panicking. */
  panicTarget: number;
  /** Active targets of the last `scale_down_delay` seconds. */
  recentTargets: ReadonlyArray<{ at: number; target: number }>;
  /** Workers seen starting, and since when (ms): their start time is learned when they turn ready. */
  starting?: ReadonlyArray<{ id: number; since: number }>;
  /** Learned seconds from `activate` to ready (EWMA), null until one was seen. */
  startSeconds?: number | null;
  /** Loaded capacity needed (active + inactive targets) over the last `release_delay`, as a decreasing run of peaks. */
  recentNeeds?: ReadonlyArray<{ at: number; need: number }>;
  /** Rate over the burst window (start time + detection) at each surge of the last `release_delay`, as a decreasing run of peaks: the burst reserve plans for the first. */
  recentSurges?: ReadonlyArray<{ at: number; need: number }>;
  /** The signal share of each PERSIST_WINDOWS_S window's swings (burstSignalShare) and when it was estimated (ms). */
  signal?: { at: number; shares: readonly number[] };
  /** Like recentSurges over `cold_window`: the burst reserve plans for its first in the signal share κ. */
  longSurges?: ReadonlyArray<{ at: number; need: number }>;
}

export const INITIAL_MEMORY: PolicyMemory = {
  panicking: false,
  panicSince: null,
  lastTriggerAt: null,
  panicTarget: 0,
  recentTargets: [],
  starting: [],
  startSeconds: null,
  recentNeeds: [],
  recentSurges: [],
};

/** Confidence of the surge test: a window's load must exceed the ready capacity by this many standard errors (≈ 97.7% one-sided). */
export const SURGE_Z = 2;
/** Windows of the surge test, s (those longer than `stable_window` are skipped). */
export const SURGE_WINDOWS_S = [2, 4, 8, 16, 32] as const;

/**
 * The load of a surge: the highest rate among the short windows whose arrivals are significantly
 * above `readyCap` (the load less SURGE_Z standard errors, compound-Poisson: the square root of the
 * sum of squared request costs, still above the capacity); 0 when none is, or when the history
 * keeps no squared costs. A few large requests, or
 * Poisson noise near capacity, are not significant; a burst or a step of many requests is, within
 * a second or two.
 */
export function surgeLoad(history: LoadHistoryView, now: number, stableWindowS: number, readyCap: number): number {
  let surge = 0;
  // Without the squared costs there is no error estimate: no evidence of a surge.
  if (!history.squares) return 0;
  for (const L of SURGE_WINDOWS_S) {
    if (L > stableWindowS) break;
    const w = windowSums(history, now, L);
    if ((w.load - SURGE_Z * Math.sqrt(w.squares)) / w.seconds > readyCap) surge = Math.max(surge, w.load / w.seconds);
  }
  return surge;
}

/**
 * The burst reserve, load/s of ready capacity: what keeps the wait of requests within
 * `target_queue_time` (T) while workers started for a burst become ready. A burst at rate λ meets
 * ready capacity C < λ; capacity started once it is seen serves D s later (D = start time + the
 * surge test's shortest window). A request arriving x s into the burst finds λx of work ahead
 * of it and starts by x + w where C·(x + w) = λx, unless the started capacity serves it first
 * (at D): its wait is min(x(λ − C)/C, D − x), largest at x = D·C/λ, where it is D(1 − C/λ).
 * That is ≤ T for C ≥ λ(1 − T/D), and nothing is needed when a start takes less than T.
 * λ is the highest rate over D s seen at a surge (arrivals significantly above the ready
 * capacity) in the last `release_delay` — the same memory that keeps loaded capacity that was
 * needed: a burst the fleet did not absorb is planned for until it has not recurred for that
 * long; a step the fleet caught up with, or steady load, leaves no reserve.
 */
export function burstReserve(targetQueueS: number, startS: number, surgeRate: number): number {
  const D = startS + SURGE_WINDOWS_S[0];
  if (!(targetQueueS > 0) || D <= targetQueueS) return 0;
  return (1 - targetQueueS / D) * surgeRate;
}

/** Windows whose rise above the stable load may be planned for, s (see burstSignalShare). */
export const PERSIST_WINDOWS_S = [2, 4, 8] as const;
/** The signal shares are estimated again after this long, s: over an hour of history they move slowly. */
export const SIGNAL_REFRESH_S = 60;

/**
 * The share of a `W`-second window's swings that is signal (bursts that last longer than the window),
 * not the noise of independent arrivals: 1 − (the compound-Poisson variance of the window's load: the
 * sum of its squared request costs) / (the observed squared deviation of its load from the mean of
 * the `localS` seconds around it), over the history's last `keepS` seconds, less SURGE_Z standard
 * errors of that estimate (√(2/m) for m windows), within 0..1. Independent arrivals (Poisson, however
 * heavy-tailed the costs) give about 0, so their short-window noise starts nothing; traffic that
 * comes in bursts gives near 1: a rise of the short window then predicts the next seconds. The
 * noise counts the mean's own (it is estimated from 2·localS − W seconds of the same arrivals). The
 * windows are centred in time (the seconds after a past window are known), so a step or a slow
 * trend is not taken for bursts. The best linear estimate of a rate seen through noise is the mean
 * plus this share of the deviation (signal variance over total variance).
 */
export function burstSignalShare(h: LoadHistoryView, now: number, W: number, localS: number, keepS: number): number {
  if (!h.squares || !(W > 0) || !(localS > W)) return 0;
  const last = Math.min(Math.floor((now - 1 - h.start) / h.bucketMs), h.loads.length - 1);
  const first = Math.max(0, Math.ceil((h.since - h.start) / h.bucketMs), last - Math.round((keepS * 1000) / h.bucketMs) + 1);
  const n = last - first + 1;
  const w = Math.max(1, Math.round((W * 1000) / h.bucketMs));
  const half = Math.max(w, Math.round((localS * 500) / h.bucketMs));
  if (n < 2 * half + w) return 0;
  const pre = new Float64Array(n + 1);
  const preSq = new Float64Array(n + 1);
  for (let k = 0; k < n; k++) {
    pre[k + 1] = pre[k]! + (h.loads[first + k] ?? 0);
    preSq[k + 1] = preSq[k]! + (h.squares[first + k] ?? 0);
  }
  let deviation = 0;
  let noise = 0;
  let m = 0;
  // Window [k - w, k) against the mean load of [k - half, k + half) without it.
  for (let k = half; k + half <= n; k += w) {
    const x = pre[k]! - pre[k - w]!;
    const around = ((pre[k + half]! - pre[k - half]! - x) / (2 * half - w)) * w;
    deviation += (x - around) ** 2;
    // The noise of the window and of the mean it is compared with (scaled to the window).
    const own = preSq[k]! - preSq[k - w]!;
    noise += own + (preSq[k + half]! - preSq[k - half]! - own) * (w / (2 * half - w)) ** 2;
    m++;
  }
  if (m < 2 || !(deviation > 0)) return 0;
  const share = 1 - noise / deviation - SURGE_Z * Math.sqrt(2 / m);
  return Math.max(0, Math.min(1, share));
}

/** The signal shares of PERSIST_WINDOWS_S, estimated again once SIGNAL_REFRESH_S passed since `prev`. */
export function signalShares(
  prev: { at: number; shares: readonly number[] } | undefined,
  h: LoadHistoryView,
  now: number,
  stableWindowS: number,
  coldWindowS: number,
): { at: number; shares: readonly number[] } {
  if (prev && now - prev.at < SIGNAL_REFRESH_S * 1000 && now >= prev.at) return prev;
  return { at: now, shares: PERSIST_WINDOWS_S.map((W) => burstSignalShare(h, now, W, stableWindowS, coldWindowS)) };
}

/** Seconds of work a busy worker holds in the normal course (being served, reported, deleted): not a backlog. */
export const PIPELINE_S = 1;
/** Start time assumed until one is observed, s (a stopped Vast instance with the model on disk). */
export const START_PRIOR_S = 15;

/**
 * Learn how long an inactive worker takes to become ready: workers remembered as starting that
 * are ready now took `readySince - startedSince`. Updates `memory.starting` in place (a copy).
 */
function learnStartSeconds(memory: PolicyMemory, live: readonly PolicyWorker[]): number | null {
  let learned = memory.startSeconds ?? null;
  const byId = new Map(live.map((w) => [w.id, w]));
  for (const s of memory.starting ?? []) {
    const w = byId.get(s.id);
    if (w && w.state === 'ready' && w.stateSince >= s.since) {
      const took = (w.stateSince - s.since) / 1000;
      learned = learned === null ? took : learned + 0.3 * (took - learned);
    }
  }
  memory.starting = live.filter((w) => w.state === 'starting').map((w) => ({ id: w.id, since: w.stateSince }));
  return learned;
}

export interface PolicyInput {
  now: number;
  state: EndpointState;
  params: EndpointParams;
  workers: readonly PolicyWorker[];
  machines: readonly MachineChoice[];
  history: LoadHistoryView;
  /** Last time a request arrived (ms), null if none ever did. */
  lastActivityAt: number | null;
  queue: QueueSignal;
  memory: PolicyMemory;
}

/** One thing to do; `reason` is logged with the transition it causes. */
export type Decision =
  | { kind: 'recruit'; typeKey: string; count: number; reason: string }
  | { kind: 'activate'; id: number; reason: string }
  | { kind: 'stop'; id: number; reason: string }
  | { kind: 'destroy'; id: number; reason: string };

/** The numbers behind the decisions, for logs, the admin API and the simulation report. */
export interface Plan {
  stableLoad: number;
  panicLoad: number;
  coldLoad: number;
  /** Rate of a short window whose arrivals are significantly above the ready capacity, 0 when none is (see surgeLoad). */
  surgeLoad?: number;
  anticipatedLoad: number;
  activeTarget: number;
  /** The stable target recruitment works toward (active target without panic and backlog terms). */
  recruitTarget: number;
  inactiveTarget: number;
  panicking: boolean;
  zeroAllowed: boolean;
  readyCapacity: number;
  activeCapacity: number;
  inactiveCapacity: number;
  loadingCapacity: number;
  /** Seconds of expected queue the router lets a worker hold now (≤ max_queue_time); beyond it requests wait in the global queue. */
  routeQueueLimit: number;
  /**
   * Seconds a request may wait in all, global queue included, before the model starts on it (0 or
   * absent: none): the router places a request at a worker only within what is left of it (at least
   * MIN_ROUTE_QUEUE_S), so a request that waited for capacity is not queued again behind a full worker.
   */
  routeQueueBudget?: number;
  /** Ready capacity held for a repeat of the last burst the fleet did not absorb (see burstReserve); 0 when none. */
  burstReserve?: number;
  /** The stable load raised by the signal share of a short window's rise above it (0 when no window's swings are signal). */
  persistentLoad?: number;
}

export interface PolicyOutput {
  decisions: Decision[];
  memory: PolicyMemory;
  plan: Plan;
}

/** Perf assumed for a type nothing is known about, when no other type is known either. */
export const DEFAULT_PERF_GUESS = 100;
const EPS = 1e-9;
/** A serving worker's perf per dollar counts this much more than an inactive one's: trading places must pay for a start. */
export const SWAP_BIAS = 1.2;
/** An inactive worker is replaced when the best learned type gives this much more perf per dollar. */
export const REPLACE_RATIO = 1.25;

/** Perf per dollar-hour; free machines rank first. */
function perfPerDollar(perf: number, dollarsPerHour: number): number {
  return dollarsPerHour > 0 ? perf / dollarsPerHour : Number.POSITIVE_INFINITY;
}

/** The perf to plan with for every machine type (unknown types: the mean of the known ones, else the default guess). */
export function typeEstimates(machines: readonly MachineChoice[]): Map<string, number> {
  const known = machines.filter((m) => m.perf !== null && m.perf > 0).map((m) => m.perf!);
  const guess = known.length > 0 ? known.reduce((a, b) => a + b, 0) / known.length : DEFAULT_PERF_GUESS;
  return new Map(machines.map((m) => [m.key, m.perf !== null && m.perf > 0 ? m.perf : guess]));
}

/** An endpoint's workers by state, as a policy plans with them (destroyed ones left out). */
export interface Fleet {
  live: PolicyWorker[];
  ready: PolicyWorker[];
  starting: PolicyWorker[];
  /** Created or loading. */
  loading: PolicyWorker[];
  inactive: PolicyWorker[];
  errored: PolicyWorker[];
}

/** Sum of the perf of `ws`. */
export function capacity(ws: readonly PolicyWorker[]): number {
  let sum = 0;
  for (const w of ws) sum += w.perf;
  return sum;
}

/** The fleet of `workers`; with `withoutSuspects`, ready workers the router suspects are left out of `ready`. */
export function fleetOf(workers: readonly PolicyWorker[], withoutSuspects: boolean): Fleet {
  // One pass (each list keeps the input's order), not a filter per state: it runs every tick over every worker.
  const fleet: Fleet = { live: [], ready: [], starting: [], loading: [], inactive: [], errored: [] };
  for (const w of workers) {
    const s = w.state;
    if (s === 'destroyed') continue;
    fleet.live.push(w);
    if (s === 'ready') {
      if (!(withoutSuspects && w.suspect)) fleet.ready.push(w);
    } else if (s === 'starting') fleet.starting.push(w);
    else if (s === 'created' || s === 'loading') fleet.loading.push(w);
    else if (s === 'inactive') fleet.inactive.push(w);
    else if (s === 'errored') fleet.errored.push(w);
  }
  return fleet;
}

/** The plan's capacities, with the loads and targets still to fill in. */
export function basePlan(fleet: Fleet, P: EndpointParams, memory: PolicyMemory): Plan {
  const ready = capacity(fleet.ready);
  return {
    stableLoad: 0,
    panicLoad: 0,
    coldLoad: 0,
    anticipatedLoad: 0,
    activeTarget: 0,
    recruitTarget: 0,
    inactiveTarget: 0,
    panicking: memory.panicking,
    zeroAllowed: false,
    readyCapacity: ready,
    activeCapacity: ready + capacity(fleet.starting),
    inactiveCapacity: capacity(fleet.inactive),
    loadingCapacity: capacity(fleet.loading),
    routeQueueLimit: P.max_queue_time,
  };
}

/**
 * What every policy does first, by endpoint state: nothing while suspended; errored workers are
 * destroyed (their replacement follows from the targets); a stopped endpoint stops its serving
 * workers. True when the tick ends here.
 */
export function endpointStateMoves(state: EndpointState, fleet: Fleet, decisions: Decision[], erroredReason: string): boolean {
  if (state === 'suspended') return true;
  for (const w of fleet.errored) decisions.push({ kind: 'destroy', id: w.id, reason: erroredReason });
  if (state !== 'stopped') return false;
  for (const w of [...fleet.ready, ...fleet.starting]) decisions.push({ kind: 'stop', id: w.id, reason: 'endpoint stopped' });
  return true;
}

/** Run the policy for one endpoint at `input.now`. */
export function decide(input: PolicyInput): PolicyOutput {
  const { now, params: P } = input;
  const memory: PolicyMemory = { ...input.memory, recentTargets: [...input.memory.recentTargets] };
  const decisions: Decision[] = [];
  const estimates = typeEstimates(input.machines);
  const workerValue = (w: PolicyWorker) => perfPerDollar(w.perf, w.dollarsPerHour);

  const cap = capacity;
  // A suspect worker may be dead: its capacity is not planned with, and it is neither kept nor stopped
  // for capacity (the engine errors it when its probe fails, or it reports again).
  const fleet = fleetOf(input.workers, true);
  const { live, ready, starting, loading, inactive, errored } = fleet;

  const stableLoad = windowRate(input.history, now, P.stable_window);
  const panicLoad = P.panic_window > 0 ? windowRate(input.history, now, P.panic_window) : 0;
  const coldLoad = windowRate(input.history, now, P.cold_window);
  const plan: Plan = { ...basePlan(fleet, P, memory), stableLoad, panicLoad, coldLoad, anticipatedLoad: stableLoad };
  if (endpointStateMoves(input.state, fleet, decisions, 'errored: released so a replacement can be recruited')) return { decisions, memory, plan };

  // 3. Panic mode.
  const readyCap = cap(ready);
  const panicDemand = panicLoad / P.target_util;
  // All queued work, in the global queue and at workers: what the fleet must drain besides new arrivals.
  const backlog = input.queue.waitingLoad + input.queue.workerBacklog;
  const queueTrigger = P.target_queue_time > 0 && input.queue.queueTime > P.target_queue_time;
  const loadTrigger = panicLoad > 0 && panicDemand >= P.panic_threshold * readyCap;
  memory.startSeconds = learnStartSeconds(memory, live);
  // Ski rental: holding surge capacity idle longer than a restart takes costs more than restarting it.
  const panicHold = Math.max(P.panic_window, memory.startSeconds ?? START_PRIOR_S);
  const drained = backlog <= readyCap * PIPELINE_S;
  if (P.panic_window > 0 && (loadTrigger || queueTrigger)) {
    memory.lastTriggerAt = now;
    if (!memory.panicking) {
      memory.panicking = true;
      memory.panicSince = now;
      memory.panicTarget = 0;
    }
  } else if (memory.panicking && (P.panic_window <= 0 || (drained && now - (memory.lastTriggerAt ?? now) >= panicHold * 1000))) {
    memory.panicking = false;
    memory.panicSince = null;
    memory.panicTarget = 0;
  }

  // 4. Active target (what serves now: panic load, backlog) and recruitment target (what lasts:
  // the stable load). Recruits take minutes to load, so seconds-long demand is met only by
  // starting inactive workers; recruiting for it would buy machines that arrive after it is gone.
  // A surge: arrivals of a short window significantly above the ready capacity are planned for at
  // once, without waiting for panic's 2× or for the stable average to catch up.
  const surge = surgeLoad(input.history, now, P.stable_window, readyCap);
  plan.surgeLoad = surge;
  // Persistent bursts: on traffic whose short-window swings are mostly signal (bursts that last),
  // a short window's rise above the stable load is planned for in that share (see burstSignalShare).
  memory.signal = signalShares(memory.signal, input.history, now, P.stable_window, P.cold_window);
  let persistent = 0;
  for (let i = 0; i < PERSIST_WINDOWS_S.length; i++) {
    const k = memory.signal.shares[i] ?? 0;
    if (k > 0) persistent = Math.max(persistent, stableLoad + k * Math.max(0, windowRate(input.history, now, PERSIST_WINDOWS_S[i]!) - stableLoad));
  }
  plan.persistentLoad = persistent;
  const anticipated = Math.max(memory.panicking ? Math.max(stableLoad, panicLoad) : stableLoad, surge, persistent);
  const drainHorizon = P.target_queue_time > 0 ? P.target_queue_time : P.max_queue_time;
  // Size to queued work as well as arrivals: add the capacity that drains it within target_queue_time.
  // A second of work per ready worker is the routing pipeline, not a queue.
  const backlogRate = Math.max(0, backlog - readyCap * PIPELINE_S) / Math.max(drainHorizon, 1);
  let A = Math.max((anticipated + backlogRate) / P.target_util, P.min_load);
  let R = Math.max((stableLoad + input.queue.waitingLoad / Math.max(P.stable_window, 1)) / P.target_util, P.min_load);
  // The burst reserve: ready capacity held, between bursts, for a repeat of the last one the fleet
  // did not absorb (see burstReserve). It is capacity that lasts, so recruitment plans for it too.
  const startS = memory.startSeconds ?? START_PRIOR_S;
  const burstWindow = Math.round(startS + SURGE_WINDOWS_S[0]);
  memory.recentSurges = pushPeak(memory.recentSurges ?? [], now, surge > 0 ? windowRate(input.history, now, burstWindow) : 0, P.release_delay * 1000);
  // Once the scale-to-zero gate opened on idleness (min_load 0, no request for inactivity_timeout)
  // the endpoint asked for zero: no reserve is held against its next burst.
  const idleFor = input.lastActivityAt === null ? Number.POSITIVE_INFINITY : (now - input.lastActivityAt) / 1000;
  const zeroAllowed = P.min_load === 0 && (P.inactivity_timeout === 0 || (P.inactivity_timeout > 0 && idleFor >= P.inactivity_timeout));
  const idledToZero = zeroAllowed && P.inactivity_timeout > 0;
  // On bursty traffic bursts recur: the largest unabsorbed burst of the whole cold_window counts too,
  // in the share of the traffic's swings that is signal (κ: 0 for a step or independent arrivals,
  // whose memory stays release_delay).
  memory.longSurges = pushPeak(memory.longSurges ?? [], now, memory.recentSurges[memory.recentSurges.length - 1]!.need, P.cold_window * 1000);
  const kappa = Math.max(0, ...memory.signal.shares);
  const burstRate = Math.max(memory.recentSurges[0]!.need, kappa * memory.longSurges[0]!.need);
  const reserve = idledToZero ? 0 : burstReserve(P.target_queue_time, startS, burstRate);
  plan.burstReserve = reserve;
  A = Math.max(A, reserve);
  R = Math.max(R, reserve);
  // The scale-down delay holds the calm target: the stable load, the queued work and the reserve.
  // Surge and panic capacity is held by the panic hold only (ski rental: idle longer than a start
  // costs more than starting again); without a panic window there is no panic hold, and the
  // scale-down delay holds the surge too.
  const recent = windowSums(input.history, now, burstWindow);
  const recentLoad = Math.max(0, recent.load - SURGE_Z * Math.sqrt(recent.squares)) / recent.seconds;
  const calmLoad = P.panic_window > 0 ? Math.max(stableLoad, recentLoad) : anticipated;
  const calmTarget = Math.max((calmLoad + backlogRate) / P.target_util, P.min_load, reserve);
  if (memory.panicking) {
    A = Math.max(A, memory.panicTarget);
    memory.panicTarget = A;
  }
  // A worker holds at most target_queue_time of queue: the rest waits in the global queue, where the
  // first worker free (one just started included) takes the oldest request. With a single loaded
  // worker nothing else could take it sooner, so the worker's own limit (max_queue_time) stands.
  const others = ready.length + starting.length + loading.length + inactive.length > 1;
  plan.routeQueueLimit = P.target_queue_time > 0 && others ? Math.min(P.max_queue_time, P.target_queue_time) : P.max_queue_time;
  plan.routeQueueBudget = P.target_queue_time > 0 && others ? P.target_queue_time : 0;
  if (!zeroAllowed) {
    // Keeps one worker active.
    A = Math.max(A, EPS);
    R = Math.max(R, EPS);
  }
  memory.recentTargets = [
    ...memory.recentTargets.filter((t) => now - t.at < P.scale_down_delay * 1000),
    { at: now, target: zeroAllowed ? calmTarget : Math.max(calmTarget, EPS) },
  ];
  const downTarget = Math.max(...memory.recentTargets.map((t) => t.target));
  plan.anticipatedLoad = anticipated;
  plan.activeTarget = A;
  plan.recruitTarget = R;
  plan.panicking = memory.panicking;
  plan.zeroAllowed = zeroAllowed;

  // 6a. Active side. The active set is a prefix of the workers ranked by perf per dollar
  // (serving ones favoured by SWAP_BIAS, so equal machines never trade places): the prefix
  // that covers the target. Inactive members are started (seconds); serving non-members are
  // stopped once idle and not needed; what is still missing is recruited (minutes).
  const activated = new Set<number>();
  const serving = readyCap + cap(starting);
  const activeCount = ready.length + starting.length + loading.length;
  const pool = [...ready, ...starting, ...inactive];
  const rank = (w: PolicyWorker) => workerValue(w) * (w.state === 'inactive' ? 1 : SWAP_BIAS);
  // Ties go to busy workers (stopping them means draining first), then to bigger ones.
  const ranked = [...pool].sort((a, b) => rank(b) - rank(a) || Number(b.busy) - Number(a.busy) || b.perf - a.perf || a.id - b.id);
  const cover = (target: number): Set<number> => {
    const chosen = new Set<number>();
    let sum = 0;
    if (!(target > 0)) return chosen;
    for (const w of ranked) {
      if (chosen.size > 0 && sum >= target * (1 - 1e-12)) break;
      chosen.add(w.id);
      sum += w.perf;
    }
    return chosen;
  };
  const fastDeficit = A - serving;
  // Short now: start inactive members of the cover. Not short (and calm): start them only to
  // trade a serving worker for a better-value one, which the stop rule below then releases.
  if (fastDeficit > EPS || (activeCount === 0 && A > 0) || !memory.panicking) {
    const want = cover(A);
    for (const w of ranked) {
      if (!want.has(w.id) || w.state !== 'inactive') continue;
      const why =
        fastDeficit > EPS
          ? `active capacity ${fmt(serving)} < target ${fmt(A)}${memory.panicking ? ' (panic)' : ''}`
          : `better perf per dollar than a serving worker (target ${fmt(A)})`;
      decisions.push({ kind: 'activate', id: w.id, reason: why });
      activated.add(w.id);
    }
  }
  const activatedCap = cap(inactive.filter((w) => activated.has(w.id)));
  let activeShort = R - (serving + activatedCap + cap(loading));
  if (R > 0 && activeCount + activated.size === 0) activeShort = Math.max(activeShort, EPS);

  if (!memory.panicking) {
    // Only ready capacity counts here: starting and loading workers may still fail.
    const keep = cover(downTarget);
    let readyLeft = readyCap;
    let remaining = ready.length + starting.length;
    const minActive = downTarget > 0 || !zeroAllowed ? 1 : 0;
    // Idle ones first: a busy worker told to stop is drained by the engine (no new requests) before it stops.
    const worstFirst = (a: PolicyWorker, b: PolicyWorker) => Number(a.busy) - Number(b.busy) || rank(a) - rank(b) || a.perf - b.perf || b.id - a.id;
    for (const w of ready.filter((r) => !keep.has(r.id)).sort(worstFirst)) {
      if (remaining - 1 < minActive) break;
      if (readyLeft - w.perf < downTarget - EPS) continue;
      decisions.push({
        kind: 'stop',
        id: w.id,
        reason: `not needed for target ${fmt(downTarget)} (max over ${P.scale_down_delay}s); ready capacity ${fmt(readyCap)}`,
      });
      readyLeft -= w.perf;
      remaining--;
    }
  }

  // 5. Inactive target: the largest of cold_mult × load, min_cold_load and cold_workers.
  const I = Math.max(P.cold_mult * coldLoad, P.min_cold_load);
  plan.inactiveTarget = I;
  const loadedOrComing = live.length - errored.length; // errored ones are being destroyed
  const haveCap = serving + cap(loading) + cap(inactive);
  const capShort = Math.max(activeShort, R + I - haveCap);
  const countShort = Math.max(0, P.cold_workers - loadedOrComing);

  // 6b. Recruit, within max_workers.
  const room = Math.max(0, P.max_workers - loadedOrComing);
  const picks = pickTypes(input, estimates, capShort, countShort, room);
  const counts = new Map<string, number>();
  for (const k of picks) counts.set(k, (counts.get(k) ?? 0) + 1);
  for (const [typeKey, count] of counts) {
    const why: string[] = [];
    if (activeShort > EPS) why.push(`stable target ${fmt(R)} > ${fmt(serving + activatedCap + cap(loading))}`);
    if (R + I - haveCap > EPS) why.push(`active+inactive target ${fmt(R + I)} > ${fmt(haveCap)}`);
    if (countShort > 0) why.push(`${loadedOrComing} loaded workers < cold_workers ${P.cold_workers}`);
    decisions.push({ kind: 'recruit', typeKey, count, reason: why.join('; ') || 'capacity short' });
  }

  // 6c. Release surplus inactive workers (never while panicking), worst value first; and
  // replace inactive workers of a type whose learned perf per dollar is REPLACE_RATIO worse than
  // the best learned type (the shortfall recruits the better type next tick).
  let countAfter = loadedOrComing + picks.length;
  // Keep loaded workers rather than release and recruit them again: an inactive worker is released
  // only when the capacity it holds was not needed at any time in the last release_delay.
  memory.recentNeeds = pushPeak(memory.recentNeeds ?? [], now, Math.max(A, R) + I, P.release_delay * 1000);
  const needPeak = memory.recentNeeds[0]!.need;
  if (!memory.panicking && picks.length === 0) {
    let surplus = haveCap - needPeak;
    const learned = input.machines.filter((m) => m.samples > 0 && m.perf !== null && m.perf > 0);
    const bestType = [...learned].sort((a, b) => perfPerDollar(b.perf!, b.dollarsPerHour) - perfPerDollar(a.perf!, a.dollarsPerHour))[0];
    const bestValue = bestType ? perfPerDollar(bestType.perf!, bestType.dollarsPerHour) : 0;
    // A type is judged by its learned estimate, like the best one: a worker's own benchmark against
    // its type's measured estimate would replace machines by copies of themselves.
    const typeValue = (w: PolicyWorker) => {
      const m = learned.find((x) => x.key === w.typeKey);
      return m ? perfPerDollar(m.perf!, m.dollarsPerHour) : workerValue(w);
    };
    const worstFirst = (a: PolicyWorker, b: PolicyWorker) => workerValue(a) - workerValue(b) || a.perf - b.perf || b.id - a.id;
    for (const w of inactive.filter((x) => !activated.has(x.id)).sort(worstFirst)) {
      if (now - w.stateSince < P.release_delay * 1000) continue;
      if (countAfter - 1 >= P.cold_workers && w.perf <= surplus + EPS) {
        decisions.push({ kind: 'destroy', id: w.id, reason: `inactive capacity above target ${fmt(I)} for ${P.release_delay}s` });
        surplus -= w.perf;
        countAfter--;
      } else if (learned.length > 1 && bestType && bestType.key !== w.typeKey && typeValue(w) * REPLACE_RATIO < bestValue) {
        decisions.push({ kind: 'destroy', id: w.id, reason: `replaced: perf per dollar ${fmt(typeValue(w))} vs ${fmt(bestValue)} for ${bestType.key}` });
        surplus -= w.perf;
        countAfter--;
      }
    }
  }

  // max_workers is a hard cap: when it was lowered, shed workers, least useful first.
  const destroyed = new Set(decisions.filter((d) => d.kind === 'destroy').map((d) => (d as { id: number }).id));
  let excess = countAfter - P.max_workers;
  if (excess > 0) {
    const byValue = (a: PolicyWorker, b: PolicyWorker) => workerValue(a) - workerValue(b);
    const order = [
      ...inactive.filter((w) => !activated.has(w.id)).sort(byValue),
      ...inactive.filter((w) => activated.has(w.id)).sort(byValue),
      ...[...loading].sort((a, b) => b.stateSince - a.stateSince),
      ...[...starting].sort(byValue),
      ...ready.filter((w) => !w.busy).sort(byValue),
      ...ready.filter((w) => w.busy).sort(byValue),
    ].filter((w) => !destroyed.has(w.id));
    const shed = new Set<number>();
    for (const w of order) {
      if (excess <= 0) break;
      shed.add(w.id);
      excess--;
    }
    // A shed worker gets no other move this tick.
    const kept = decisions.filter((d) => d.kind === 'recruit' || !shed.has(d.id));
    decisions.length = 0;
    decisions.push(...kept, ...[...shed].map((id): Decision => ({ kind: 'destroy', id, reason: `above max_workers ${P.max_workers}` })));
  }
  return { decisions, memory, plan };
}

/**
 * Machine types for new workers: each type with no benchmark and no live worker once (a variety
 * at first, so perf per dollar can be learned), then the best perf per dollar.
 */
function pickTypes(input: PolicyInput, estimates: Map<string, number>, capShort: number, countShort: number, room: number): string[] {
  const picks: string[] = [];
  if (input.machines.length === 0 || room <= 0) return picks;
  let short = capShort;
  const want = () => picks.length < room && (short > EPS || picks.length < countShort);
  const liveTypes = new Set(input.workers.filter((w) => w.state !== 'destroyed' && w.state !== 'errored').map((w) => w.typeKey));
  for (const m of input.machines) {
    if (!want()) return picks;
    if (m.samples === 0 && !liveTypes.has(m.key)) {
      picks.push(m.key);
      short -= estimates.get(m.key)!;
    }
  }
  const best = [...input.machines].sort(
    (a, b) => perfPerDollar(estimates.get(b.key)!, b.dollarsPerHour) - perfPerDollar(estimates.get(a.key)!, a.dollarsPerHour),
  )[0]!;
  const perf = Math.max(estimates.get(best.key)!, EPS);
  while (want()) {
    picks.push(best.key);
    short -= perf;
  }
  return picks;
}

/** Add `need` at `now` to a decreasing run of peaks over `windowMs`: its first entry is the window's maximum. */
export function pushPeak(peaks: ReadonlyArray<{ at: number; need: number }>, now: number, need: number, windowMs: number): Array<{ at: number; need: number }> {
  const kept = peaks.filter((p) => now - p.at < windowMs && p.need > need);
  kept.push({ at: now, need });
  return kept;
}

function fmt(n: number): string {
  return Number.isFinite(n) ? String(Math.round(n * 10) / 10) : String(n);
}
