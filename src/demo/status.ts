import type { Engine, TransitionEvent } from '../autoscaler/engine.js';
import type { Plan } from '../autoscaler/policy.js';
import { WORKER_STATES, type WorkerState } from '../autoscaler/states.js';
import type { LoadStats } from './load.js';

/**
 * The demo's live status: what the engine knows (workers by state, their perf and load, the
 * policy's plan) next to what the client sees (requests/s, latency). `collectStatus` reads;
 * the render functions are pure, so the table can be tested without a terminal.
 */
export interface WorkerRow {
  id: number;
  state: WorkerState;
  perf: number;
  curLoad: number;
  reqsWorking: number;
  /** Load/s served over its last report interval. */
  servedPerSecond: number;
  url: string | null;
  sinceSeconds: number;
  draining: boolean;
}

export interface DemoStatus {
  elapsedSeconds: number;
  autoscalerUrl: string;
  load: LoadStats;
  counts: Record<WorkerState, number>;
  workers: WorkerRow[];
  plan: Plan | null;
  queued: number;
}

/** A snapshot of the endpoint's workers and plan, and of the load generator. */
export function collectStatus(engine: Engine, endpoint: string, load: LoadStats, startedAt: number, autoscalerUrl: string): DemoStatus {
  const now = Date.now();
  const counts = Object.fromEntries(WORKER_STATES.map((s) => [s, 0])) as Record<WorkerState, number>;
  const workers: WorkerRow[] = [];
  for (const w of engine.workersOf(endpoint)) {
    counts[w.state]++;
    if (w.state === 'destroyed') continue;
    workers.push({
      id: w.id,
      state: w.state,
      perf: w.maxPerf,
      curLoad: w.curLoad,
      reqsWorking: w.reqsWorking,
      servedPerSecond: w.curPerf,
      url: w.url,
      sinceSeconds: (now - w.stateSince) / 1000,
      draining: w.draining,
    });
  }
  workers.sort((a, b) => a.id - b.id);
  const ep = engine.endpoints.get(endpoint);
  return {
    elapsedSeconds: (now - startedAt) / 1000,
    autoscalerUrl,
    load,
    counts,
    workers,
    plan: ep?.lastPlan ?? null,
    queued: ep?.router.waiting() ?? 0,
  };
}

const num = (n: number | null | undefined, digits = 0) => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits));
const ms = (n: number | null) => (n === null ? '-' : n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`);
const secs = (s: number) => (s < 60 ? `${Math.floor(s)}s` : `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`);

/** Non-zero worker counts by state, in lifecycle order: `ready 2  inactive 1`. */
export function stateSummary(counts: Record<WorkerState, number>, withDestroyed = false): string {
  const parts = WORKER_STATES.filter((s) => (s !== 'destroyed' || withDestroyed) && counts[s] > 0).map((s) => `${s} ${counts[s]}`);
  return parts.length > 0 ? parts.join('  ') : 'none yet';
}

/** The full table for a terminal (redrawn in place). */
export function renderTable(s: DemoStatus): string[] {
  const l = s.load;
  const lines = [
    `nodeworker demo — autoscaler ${s.autoscalerUrl}, local provider, endpoint "demo"   ${secs(s.elapsedSeconds)}   Ctrl-C stops everything`,
    '',
    `load     offered ${num(l.sentRps, 1)} req/s (wave now ${num(l.targetRps, 1)}), ${num(l.loadPerSecond)} load/s   served ${num(l.okRps, 1)} req/s   p50 ${ms(l.p50Ms)}  p99 ${ms(l.p99Ms)}   in flight ${l.inflight}  queued at engine ${s.queued}`,
    `totals   sent ${l.sent}  ok ${l.ok}  failed ${l.failed}${l.dropped > 0 ? `  dropped ${l.dropped}` : ''}${l.lastError ? `   last error: ${l.lastError.slice(0, 80)}` : ''}`,
    `workers  ${stateSummary(s.counts)}${s.counts.destroyed > 0 ? `   (destroyed ${s.counts.destroyed})` : ''}`,
    s.plan
      ? `plan     active target ${num(s.plan.activeTarget)} load/s, ready capacity ${num(s.plan.readyCapacity)}, stable load ${num(s.plan.stableLoad)}${s.plan.panicking ? ', PANIC (surge: no scale-down)' : ''}`
      : 'plan     (first tick pending)',
    '',
    `  ${'id'.padStart(3)}  ${'state'.padEnd(9)} ${'perf'.padStart(6)} ${'load'.padStart(6)} ${'reqs'.padStart(5)} ${'served'.padStart(9)}  ${'since'.padStart(6)}  url      (perf, served: load/s; load, reqs: in flight)`,
  ];
  for (const w of s.workers) {
    const state = w.draining ? 'draining' : w.state;
    lines.push(
      `  ${String(w.id).padStart(3)}  ${state.padEnd(9)} ${(w.perf > 0 ? num(w.perf) : '-').padStart(6)} ${num(w.curLoad).padStart(6)} ${String(w.reqsWorking).padStart(5)} ${num(w.servedPerSecond).padStart(9)}  ${secs(w.sinceSeconds).padStart(6)}  ${w.url ?? ''}`,
    );
  }
  if (s.workers.length === 0) lines.push('  (no workers yet: the policy recruits them on its first tick)');
  return lines;
}

/** One line for logs and pipes: `t=35s offered 18.2 req/s ... | ready 2 inactive 1`. */
export function renderLine(s: DemoStatus): string {
  const l = s.load;
  return `t=${secs(s.elapsedSeconds)} offered ${num(l.sentRps, 1)} req/s served ${num(l.okRps, 1)} req/s p50 ${ms(l.p50Ms)} ok ${l.ok} failed ${l.failed} | workers ${stateSummary(s.counts)} | ${s.workers
    .map((w) => `#${w.id} ${w.draining ? 'draining' : w.state}${w.perf > 0 ? ` perf ${num(w.perf)}` : ''} load ${num(w.curLoad)}`)
    .join(', ')}`;
}

/** A worker state change, as the demo prints it. */
export function renderTransition(t: TransitionEvent): string {
  const clock = new Date(t.at).toISOString().slice(11, 19);
  return `${clock} worker ${t.worker}: ${t.from ?? 'new'} → ${t.to} (${t.reason})`;
}
