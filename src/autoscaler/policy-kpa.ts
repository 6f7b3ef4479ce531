import { windowRate } from './load-history.js';
import {
  basePlan,
  capacity,
  endpointStateMoves,
  fleetOf,
  typeEstimates,
  type Decision,
  type PolicyInput,
  type PolicyMemory,
  type PolicyOutput,
} from './policy.js';

/**
 * The baseline: Knative's KPA transposed to this engine, for `simulate --policy kpa` and the
 * compare table. A pure function like `decide`, on the same parameters:
 * - observed load: the concurrency-equivalent load, i.e. the load arriving per second plus the
 *   work waiting (in the global queue and at workers) spread over the window, averaged over
 *   `stable_window` (60 s) and `panic_window` (6 s);
 * - desired capacity = observed / target_util; panic when the panic window's desired capacity is
 *   ≥ `panic_threshold` × the ready capacity; while panicking the target never goes down; panic
 *   ends `stable_window` after the last trigger;
 * - scale down only to the highest target of the last `scale_down_delay` seconds;
 * - actuation as Knative does it: capacity is added by starting any inactive worker (the cheapest
 *   per unit of perf first) or recruiting the best known type, removed by stopping the least
 *   valuable ready workers; `cold_workers` loaded workers are kept, nothing else is planned ahead.
 */

const EPS = 1e-9;

export function decideKpa(input: PolicyInput): PolicyOutput {
  const { now, params: P } = input;
  const memory: PolicyMemory = { ...input.memory, recentTargets: [...input.memory.recentTargets] };
  const decisions: Decision[] = [];
  const cap = capacity;
  const fleet = fleetOf(input.workers, false);
  const { live, ready, starting, loading, inactive, errored } = fleet;
  // Below a millionth of a load unit is float residue of the router's bookkeeping, not work.
  const queued = input.queue.waitingLoad + input.queue.workerBacklog;
  const backlog = queued > 1e-6 ? queued : 0;
  const stableLoad = windowRate(input.history, now, P.stable_window) + backlog / P.stable_window;
  const panicLoad = P.panic_window > 0 ? windowRate(input.history, now, P.panic_window) + backlog / P.panic_window : 0;
  const readyCap = cap(ready);
  const plan = { ...basePlan(fleet, P, memory), stableLoad, panicLoad, anticipatedLoad: stableLoad };
  if (endpointStateMoves(input.state, fleet, decisions, 'errored')) return { decisions, memory, plan };

  if (P.panic_window > 0 && panicLoad > 0 && panicLoad / P.target_util >= P.panic_threshold * readyCap) {
    memory.lastTriggerAt = now;
    if (!memory.panicking) Object.assign(memory, { panicking: true, panicSince: now, panicTarget: 0 });
  } else if (memory.panicking && now - (memory.lastTriggerAt ?? now) >= P.stable_window * 1000) {
    Object.assign(memory, { panicking: false, panicSince: null, panicTarget: 0 });
  }
  let target = (memory.panicking ? Math.max(stableLoad, panicLoad) : stableLoad) / P.target_util;
  if (memory.panicking) {
    target = Math.max(target, memory.panicTarget);
    memory.panicTarget = target;
  }
  target = Math.max(target, P.min_load);
  const idleFor = input.lastActivityAt === null ? Number.POSITIVE_INFINITY : (now - input.lastActivityAt) / 1000;
  const zeroAllowed = P.min_load === 0 && (P.inactivity_timeout === 0 || (P.inactivity_timeout > 0 && idleFor >= P.inactivity_timeout));
  if (!zeroAllowed) target = Math.max(target, EPS);
  memory.recentTargets = [...memory.recentTargets.filter((t) => now - t.at < P.scale_down_delay * 1000), { at: now, target }];
  const downTarget = Math.max(...memory.recentTargets.map((t) => t.target));
  Object.assign(plan, { activeTarget: target, recruitTarget: target, panicking: memory.panicking, zeroAllowed });

  const value = (w: { perf: number; dollarsPerHour: number }) => (w.dollarsPerHour > 0 ? w.perf / w.dollarsPerHour : Number.POSITIVE_INFINITY);
  let have = readyCap + cap(starting) + cap(loading);
  // Scale up: inactive workers first (best value), then recruits.
  for (const w of [...inactive].sort((a, b) => value(b) - value(a) || a.id - b.id)) {
    if (have >= target - EPS) break;
    decisions.push({ kind: 'activate', id: w.id, reason: `kpa: capacity ${Math.round(have)} < ${Math.round(target)}` });
    have += w.perf;
  }
  const estimates = typeEstimates(input.machines);
  const best = [...input.machines].sort(
    (a, b) =>
      value({ perf: estimates.get(b.key)!, dollarsPerHour: b.dollarsPerHour }) - value({ perf: estimates.get(a.key)!, dollarsPerHour: a.dollarsPerHour }),
  )[0];
  const count = live.length - errored.length;
  let recruits = 0;
  if (best) {
    const perf = Math.max(estimates.get(best.key)!, EPS);
    while (count + recruits < P.max_workers && (have < target - EPS || count + recruits < P.cold_workers)) {
      recruits++;
      have += perf;
    }
    if (recruits > 0) decisions.push({ kind: 'recruit', typeKey: best.key, count: recruits, reason: `kpa: target ${Math.round(target)}` });
  }
  // Scale down (not while panicking): the least valuable ready workers, idle first.
  if (!memory.panicking) {
    let left = readyCap;
    let remaining = ready.length + starting.length;
    const minActive = downTarget > 0 || !zeroAllowed ? 1 : 0;
    for (const w of [...ready].sort((a, b) => Number(a.busy) - Number(b.busy) || value(a) - value(b) || b.id - a.id)) {
      if (remaining - 1 < minActive || left - w.perf < downTarget - EPS) continue;
      decisions.push({ kind: 'stop', id: w.id, reason: `kpa: not needed for ${Math.round(downTarget)}` });
      left -= w.perf;
      remaining--;
    }
    // Release inactive workers beyond cold_workers after release_delay.
    let extra = count + recruits - P.cold_workers;
    for (const w of inactive) {
      if (extra <= 0) break;
      if (decisions.some((d) => d.kind !== 'recruit' && d.id === w.id) || now - w.stateSince < P.release_delay * 1000) continue;
      decisions.push({ kind: 'destroy', id: w.id, reason: `kpa: above cold_workers ${P.cold_workers}` });
      extra--;
    }
  }
  return { decisions, memory, plan };
}
