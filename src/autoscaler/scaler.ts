import type { Clock } from './clock.js';
import type { EngineTiming } from './config.js';
import type { MachineType } from './params.js';
import { decide, typeEstimates, type Decision, type MachineChoice, type PolicyInput, type PolicyOutput, type PolicyWorker } from './policy.js';
import type { Provider, ProviderEvent } from './providers/types.js';
import { errText, newWorkerRecord, round, roundPlan, type EndpointRuntime, type Registry, type WorkerRecord } from './registry.js';

/**
 * The scaling loop, as Knative's autoscaler + reconciler: each tick expires requests, checks
 * stale and slow workers, steps rolling updates, runs the policy of every endpoint and turns
 * its decisions into provider calls (recruit, activate, stop, destroy). No HTTP: the protocol
 * and the HTTP API never decide a move, they only reach `finishDrain` / `checkFailedWorker`.
 *
 * Guarantees:
 * - every state change goes through the registry's `transition`;
 * - an errored worker is destroyed at the next tick and the policy recruits its replacement;
 * - a worker silent for `stale_after_seconds` is probed (`GET {url}/healthz`, or the
 *   provider's probe) and errored when the probe fails; so is one the router suspects (requests
 *   sent to it went unreported for seconds), at once and once per silence.
 */

export interface ScalerOptions {
  clock: Clock;
  provider: Provider;
  timing: EngineTiming;
  /** REPORT_ADDR given to new workers; read at each creation (the server learns its port late). */
  reportAddrs: () => string[];
  /** Liveness probe of a worker URL; default `httpProbe`. */
  probe?: (url: string, timeoutMs: number) => Promise<boolean>;
  /** The scaling policy (default: `decide` of policy.ts). */
  policy?: (input: PolicyInput) => PolicyOutput;
  /** Called after every tick (the engine saves its state there): at its end, or for a timer's tick in a macrotask of its own right after. */
  afterTick?: () => void;
}

/** Keep destroyed workers visible this long (admin API, dashboards). */
const DESTROYED_KEEP_MS = 10 * 60_000;

/** Default probe: any HTTP answer from `GET {url}/healthz` within the timeout means alive. */
export async function httpProbe(url: string, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return true;
  } catch {
    return false;
  }
}

/** A worker as the policy sees it (frozen: it may be handed to the next tick's policy again). */
export function policyWorker(w: WorkerRecord, perf: number, busy: boolean, suspect: boolean): PolicyWorker {
  const pw: PolicyWorker = { id: w.id, state: w.state, typeKey: w.typeKey, perf, dollarsPerHour: w.dollarsPerHour, busy, stateSince: w.stateSince };
  if (suspect) pw.suspect = true;
  return Object.freeze(pw);
}

export class Scaler {
  private tickTimer: number | null = null;
  /** The last report time of each silent worker when it was probed: one probe per silence. */
  private readonly suspectProbed = new WeakMap<WorkerRecord, number>();
  /** Each worker's PolicyWorker of the last tick, reused while its fields are unchanged. */
  private readonly policyWorkers = new WeakMap<WorkerRecord, PolicyWorker>();
  private readonly provider: Provider;
  private readonly timing: EngineTiming;

  constructor(
    private readonly reg: Registry,
    private readonly opts: ScalerOptions,
  ) {
    this.provider = opts.provider;
    this.timing = opts.timing;
  }

  /** Start ticking every `tick_seconds`. */
  start(): void {
    if (this.tickTimer !== null) return;
    this.tickTimer = this.opts.clock.setInterval(() => this.tick(true), this.timing.tick_seconds * 1000);
  }

  stop(): void {
    if (this.tickTimer !== null) this.opts.clock.clearTimer(this.tickTimer);
    this.tickTimer = null;
    if (this.afterTimer !== null) this.opts.clock.clearTimer(this.afterTimer);
    this.afterTimer = null;
  }

  /** The deferred `afterTick` of the last timer tick, until it runs. */
  private afterTimer: number | null = null;

  /**
   * One step: expire requests, check stale workers, roll updates, run the policy of each endpoint,
   * then `afterTick` (the engine's save). `split` (the timer's ticks): `afterTick` runs as a
   * macrotask of its own right after, so the event loop answers the requests that arrived
   * meanwhile between the two (two slices of a few ms instead of one). The decisions are taken on
   * one snapshot either way (all in the first slice); the save reads the state when it runs.
   */
  tick(split = false): void {
    this.step();
    const after = this.opts.afterTick;
    if (!after) return;
    if (!split) {
      after();
      return;
    }
    if (this.afterTimer !== null) return; // the previous one has not run yet: it saves this tick's changes too
    this.afterTimer = this.opts.clock.setTimeout(() => {
      this.afterTimer = null;
      after();
    }, 0);
  }

  private step(): void {
    const reg = this.reg;
    const now = this.opts.clock.now();
    for (const ep of reg.endpoints.values()) {
      ep.router.expire();
      ep.history.trim(now);
    }
    this.checkWorkers(now);
    this.rollUpdates();
    for (const w of reg.workers.values()) if (w.draining && !w.updatePending) this.finishDrain(w);
    for (const ep of reg.endpoints.values()) this.runPolicy(ep, now);
    for (const ep of reg.endpoints.values()) ep.router.drain();
    for (const [id, w] of reg.workers) if (w.state === 'destroyed' && now - w.stateSince > DESTROYED_KEEP_MS) reg.workers.delete(id);
  }

  /**
   * `POST /update_workers/`: replace every worker of the workergroup, one at a time (a rolling
   * update): each is drained, destroyed, and recruited again with the workergroup's current
   * launch settings; the next goes once the replacement is ready. Returns how many were marked.
   */
  markForUpdate(endpoint: EndpointRuntime, workergroup: string): number {
    let n = 0;
    for (const w of this.reg.workersOf(endpoint.name)) {
      if (w.workergroup !== workergroup || w.state === 'destroyed') continue;
      w.updatePending = true;
      n++;
    }
    this.reg.log.info({ event: 'update_workers', endpoint: endpoint.name, workergroup, workers: n }, 'rolling update of a workergroup');
    return n;
  }

  /** One step of each rolling update: workers not serving go at once, a serving one only when nothing of its group is loading. */
  private rollUpdates(): void {
    const reg = this.reg;
    // Nearly always none: then nothing below can act (two passes over every worker saved per tick).
    let any = false;
    for (const w of reg.workers.values()) if (w.updatePending) any = true;
    if (!any) return;
    const busyGroups = new Set<string>();
    for (const w of reg.workers.values()) {
      const g = `${w.endpoint}/${w.workergroup}`;
      if (w.state === 'created' || w.state === 'loading' || w.state === 'starting' || (w.updatePending && w.draining)) busyGroups.add(g);
    }
    for (const w of reg.workers.values()) {
      if (!w.updatePending || w.state === 'destroyed') continue;
      const g = `${w.endpoint}/${w.workergroup}`;
      if (w.state !== 'ready') {
        if (w.state === 'inactive' || w.state === 'errored') this.destroyWorker(w, 'rolling update');
        continue;
      }
      if (w.draining) {
        if (reg.idle(w)) this.destroyWorker(w, 'rolling update (drained)');
        continue;
      }
      if (busyGroups.has(g)) continue;
      busyGroups.add(g);
      if (reg.idle(w)) this.destroyWorker(w, 'rolling update');
      else {
        w.draining = true;
        w.drainReason = 'rolling update';
        reg.routableChanged(w.endpoint);
      }
    }
  }

  /** Inputs of the policy for one endpoint (exported for tests and the admin API). */
  machinesOf(ep: EndpointRuntime): MachineChoice[] {
    const out: MachineChoice[] = [];
    for (const wg of ep.workergroups.values()) {
      for (const mt of wg.machine_types) {
        const key = `${wg.name}/${mt.name}`;
        out.push({
          key,
          workergroup: wg.name,
          machineType: mt.name,
          dollarsPerHour: mt.dollars_per_hour,
          perf: this.reg.perf.estimate(key) ?? mt.expected_perf ?? null,
          samples: this.reg.perf.get(key)?.benchmarks ?? 0,
        });
      }
    }
    return out;
  }

  private runPolicy(ep: EndpointRuntime, now: number): void {
    const reg = this.reg;
    if (ep.state === 'suspended') return;
    const machines = this.machinesOf(ep);
    const estimates = typeEstimates(machines);
    const fallback = [...estimates.values()].reduce((a, b) => a + b, 0) / Math.max(1, estimates.size) || 100;
    // A ready worker that stopped answering is no capacity to plan with (the router already avoids
    // it); nor is one that failed a request and has not served one well since: a standby is
    // started for the failover, and kept while it lasts (the policy neither keeps nor stops a suspect).
    const suspects = new Set<number>();
    // Proportional to what can be suspect: with no routing unreported for SUSPECT_AFTER_MS no
    // worker is silent, and only the unproven ones (few) are visited, not all 1,000.
    if (!ep.router.anySuspect(now)) {
      const unproven = ep.router.unprovenIds();
      if (unproven.size > 0) for (const r of reg.routable(ep.name)) if (unproven.has(r.id)) suspects.add(r.id);
    } else
      for (const r of reg.routable(ep.name)) {
        const silent = ep.router.suspect(r, now);
        if (silent || ep.router.unproven(r.id)) suspects.add(r.id);
        // Requests sent to it went unreported for SUSPECT_AFTER_MS: ask it now (once per silence)
        // rather than at stale_after_seconds, so a worker that died silently gives its requests
        // back in seconds, not half a minute.
        const w = silent ? reg.workers.get(r.id) : undefined;
        if (w && !w.probing && w.url && w.state === 'ready' && this.suspectProbed.get(w) !== (w.lastReportAt ?? 0)) {
          this.suspectProbed.set(w, w.lastReportAt ?? 0);
          this.probeWorker(w, now, 'requests routed to it got no report');
        }
      }
    // One pass over the workers, no intermediate arrays; each worker's PolicyWorker is the one of
    // the last tick when none of its fields changed (frozen, so a policy cannot change it for the next).
    const workers: PolicyWorker[] = [];
    for (const w of reg.workers.values()) {
      if (w.endpoint !== ep.name || w.state === 'destroyed') continue;
      const perf = w.maxPerf > 0 ? w.maxPerf : (estimates.get(w.typeKey) ?? reg.perf.estimate(w.typeKey) ?? fallback);
      const busy = ep.router.outstanding(w.id) > 0 || w.reqsWorking > 0;
      const suspect = suspects.has(w.id);
      const prev = this.policyWorkers.get(w);
      if (
        prev !== undefined &&
        prev.id === w.id &&
        prev.state === w.state &&
        prev.typeKey === w.typeKey &&
        Object.is(prev.perf, perf) &&
        Object.is(prev.dollarsPerHour, w.dollarsPerHour) &&
        prev.busy === busy &&
        Object.is(prev.stateSince, w.stateSince) &&
        (prev.suspect === true) === suspect
      ) {
        workers.push(prev);
        continue;
      }
      const pw = policyWorker(w, perf, busy, suspect);
      this.policyWorkers.set(w, pw);
      workers.push(pw);
    }
    const out = (this.opts.policy ?? decide)({
      now,
      state: ep.state,
      params: ep.params,
      workers,
      machines,
      history: ep.history,
      lastActivityAt: ep.lastActivityAt,
      queue: ep.router.signal(),
      memory: ep.memory,
    });
    if (out.memory.panicking !== ep.memory.panicking) {
      reg.log.info(
        {
          event: 'panic',
          endpoint: ep.name,
          panicking: out.memory.panicking,
          panic_load: round(out.plan.panicLoad),
          ready_capacity: round(out.plan.readyCapacity),
        },
        out.memory.panicking ? 'panic mode entered' : 'panic mode left',
      );
    }
    ep.memory = out.memory;
    ep.lastPlan = out.plan;
    if (out.decisions.length > 0) {
      reg.log.info({ event: 'decisions', endpoint: ep.name, decisions: out.decisions.map((d) => ({ ...d })), plan: roundPlan(out.plan) }, 'policy decisions');
    }
    reg.emit('plan', { at: now, endpoint: ep.name, plan: out.plan, decisions: out.decisions });
    const stopping = new Set(out.decisions.filter((d) => d.kind === 'stop').map((d) => (d as { id: number }).id));
    for (const w of reg.workers.values()) {
      if (w.endpoint === ep.name && w.draining && !w.updatePending && !stopping.has(w.id)) {
        w.draining = false;
        reg.routableChanged(w.endpoint);
        reg.log.info({ event: 'drain_cancelled', worker: w.id, endpoint: ep.name }, 'worker needed again: drain cancelled');
      }
    }
    for (const d of out.decisions) this.apply(ep, d);
  }

  private apply(ep: EndpointRuntime, d: Decision): void {
    const reg = this.reg;
    if (d.kind === 'recruit') {
      for (let i = 0; i < d.count; i++) this.recruit(ep, d.typeKey, d.reason);
      return;
    }
    const w = reg.workers.get(d.id);
    if (!w) return;
    if (d.kind === 'activate') {
      if (!reg.transition(w, 'starting', d.reason)) return;
      this.provider.start(w.id).catch((err: unknown) => this.failWorker(w, `provider start failed: ${errText(err)}`));
    } else if (d.kind === 'stop') {
      if (w.state === 'ready' && !reg.idle(w)) {
        if (!w.draining) {
          w.draining = true;
          w.drainReason = d.reason;
          reg.routableChanged(w.endpoint);
          reg.log.info(
            { event: 'draining', worker: w.id, endpoint: w.endpoint, outstanding: ep.router.outstanding(w.id), reason: d.reason },
            'worker draining before stop',
          );
        }
        return;
      }
      this.stopWorker(w, d.reason);
    } else {
      this.destroyWorker(w, d.reason);
    }
  }

  private recruit(ep: EndpointRuntime, typeKey: string, reason: string): WorkerRecord | null {
    const slash = typeKey.indexOf('/');
    const wg = ep.workergroups.get(typeKey.slice(0, slash));
    const mt: MachineType | undefined = wg?.machine_types.find((m) => m.name === typeKey.slice(slash + 1));
    if (!wg || !mt) return null;
    const now = this.opts.clock.now();
    const rec = newWorkerRecord({
      id: this.reg.allocWorkerId(),
      endpoint: ep.name,
      workergroup: wg.name,
      machineType: mt.name,
      dollarsPerHour: mt.dollars_per_hour,
      storageDollarsPerHour: mt.storage_dollars_per_hour,
      dlperf: mt.dlperf ?? 0,
      reason,
      now,
    });
    this.reg.addWorker(rec, reason);
    const proposed = rec.id;
    this.provider
      .create({
        workerId: proposed,
        masterToken: rec.mtoken,
        reportAddrs: this.opts.reportAddrs(),
        endpoint: ep.name,
        workergroup: wg.name,
        machineType: mt.name,
        searchParams: wg.search_params,
        launch: wg.launch,
        dollarsPerHour: mt.dollars_per_hour,
        storageDollarsPerHour: mt.storage_dollars_per_hour,
      })
      .then((handle) => {
        if (handle.id !== proposed && rec.id === proposed) this.reg.rekeyWorker(rec, handle.id);
        if (handle.url && !rec.url) {
          rec.url = handle.url;
          this.reg.routableChanged(rec.endpoint);
        }
      })
      .catch((err: unknown) => this.failWorker(rec, `provider create failed: ${errText(err)}`));
    return rec;
  }

  stopWorker(w: WorkerRecord, reason: string): void {
    if (!this.reg.transition(w, 'inactive', reason)) return;
    this.provider.stop(w.id).catch((err: unknown) => this.failWorker(w, `provider stop failed: ${errText(err)}`));
  }

  /** A draining worker whose last request ended is stopped now. */
  finishDrain(w: WorkerRecord): void {
    if (w.draining && w.state === 'ready' && (this.reg.endpoints.get(w.endpoint)?.router.outstanding(w.id) ?? 0) === 0) {
      this.stopWorker(w, `${w.drainReason} (drained)`);
    }
  }

  destroyWorker(w: WorkerRecord, reason: string): void {
    if (!this.reg.transition(w, 'destroyed', reason)) return;
    this.provider
      .destroy(w.id)
      .catch((err: unknown) => this.reg.log.warn({ event: 'provider_error', worker: w.id, op: 'destroy', error: errText(err) }, 'provider destroy failed'));
  }

  private failWorker(w: WorkerRecord, reason: string): void {
    this.reg.transition(w, 'errored', reason);
  }

  onProviderEvent(e: ProviderEvent): void {
    const w = this.reg.workers.get(e.workerId);
    if (!w) return;
    if (e.url && !w.url) {
      w.url = e.url;
      this.reg.routableChanged(w.endpoint);
    }
    if (e.kind === 'running') {
      if (w.state === 'created') this.reg.transition(w, 'loading', e.reason ?? 'instance running');
    } else if (e.kind === 'exited') {
      if (w.state !== 'inactive' && w.state !== 'destroyed') this.reg.transition(w, 'errored', `instance exited: ${e.reason ?? 'unknown reason'}`);
    } else {
      this.reg.log.debug({ event: 'provider_event', worker: w.id, kind: e.kind, reason: e.reason }, 'provider event');
    }
  }

  /** Stale reports (probe, then errored), load timeouts. */
  /** What the last full pass of `checkWorkers` found: nothing can be due before `due`. */
  private checkMemo: { due: number; at: number; epoch: number; staleMs: number; loadMs: number } | null = null;

  private checkWorkers(now: number): void {
    const staleMs = this.timing.stale_after_seconds * 1000;
    const loadMs = this.timing.load_timeout_seconds * 1000;
    // Proportional to what can be due: the last pass noted the earliest moment any worker could
    // time out or go stale. The times it read only move later (reports, probes, transitions set
    // them to now), so until that moment, with no worker added or moved (the epoch) and the same
    // limits, a pass would find nothing. A worker it had to skip (probing, no url) forces a pass.
    const skip = this.checkMemo;
    if (skip && now < skip.due && skip.epoch === this.reg.workerEpoch && skip.staleMs === staleMs && skip.loadMs === loadMs && now >= skip.at) return;
    let due = Number.POSITIVE_INFINITY;
    for (const w of this.reg.workers.values()) {
      if (w.state === 'created' || w.state === 'loading' || w.state === 'starting') {
        if (now - w.stateSince > loadMs && (w.state !== 'created' || now - w.createdAt > loadMs)) {
          this.reg.transition(w, 'errored', `not ready ${this.timing.load_timeout_seconds} s after ${w.state === 'starting' ? 'start' : 'creation'}`);
          continue;
        }
        due = Math.min(due, Math.max(w.stateSince, w.state === 'created' ? w.createdAt : w.stateSince) + loadMs);
      }
      if (w.state !== 'loading' && w.state !== 'ready' && w.state !== 'starting') continue;
      if (w.probing || !w.url) {
        due = now;
        continue;
      }
      const heardAt = Math.max(w.lastReportAt ?? 0, w.stateSince, w.lastProbeOkAt ?? 0);
      if (now - heardAt <= staleMs) {
        due = Math.min(due, heardAt + staleMs);
        continue;
      }
      this.probeWorker(w, now);
      due = now;
    }
    // The epoch read after the pass: its own transitions (errored) are already seen.
    this.checkMemo = { due, at: now, epoch: this.reg.workerEpoch, staleMs, loadMs };
  }

  /** A client re-routed away from `id`: probe it now, so a dead worker leaves at once rather than after stale_after_seconds. */
  checkFailedWorker(id: number): void {
    const w = this.reg.workers.get(id);
    if (!w || w.probing || !w.url || (w.state !== 'ready' && w.state !== 'loading' && w.state !== 'starting')) return;
    this.probeWorker(w, this.opts.clock.now(), 'a client could not use it');
  }

  private probeWorker(w: WorkerRecord, startedAt: number, why?: string): void {
    w.probing = true;
    const url = w.url!;
    const timeoutMs = this.timing.probe_timeout_seconds * 1000;
    const silentFor = Math.round((startedAt - (w.lastReportAt ?? w.stateSince)) / 1000);
    const cause = why ?? `no report for ${silentFor} s`;
    const probe = this.provider.probe ? this.provider.probe(w.id) : (this.opts.probe ?? httpProbe)(url, timeoutMs);
    probe
      .catch(() => false)
      .then((alive) => {
        w.probing = false;
        if (!why && (w.lastReportAt ?? 0) > startedAt) return; // it reported meanwhile
        if (w.state !== 'loading' && w.state !== 'ready' && w.state !== 'starting') return;
        if (alive) {
          if (why) return;
          w.lastProbeOkAt = this.opts.clock.now();
          this.reg.log.warn({ event: 'worker_stale', worker: w.id, endpoint: w.endpoint, silent_s: silentFor }, 'no report, but /healthz answered');
        } else {
          this.reg.transition(w, 'errored', `${cause} and GET /healthz did not answer`);
        }
      });
  }

  /**
   * After a restore: hand the remembered workers back to the provider. Those it no longer has,
   * or that stopped running while the engine was away, are errored (and so replaced).
   */
  async adoptWorkers(): Promise<void> {
    const reg = this.reg;
    const remembered = [...reg.workers.values()].filter((w) => w.state !== 'destroyed');
    const shouldRun = (w: WorkerRecord) => w.state === 'created' || w.state === 'loading' || w.state === 'starting' || w.state === 'ready';
    if (!this.provider.adopt) {
      for (const w of remembered) reg.transition(w, 'errored', `the ${this.provider.kind} provider cannot take workers back after a restart`);
      return;
    }
    const specs = remembered.map((w) => ({
      workerId: w.id,
      masterToken: w.mtoken,
      reportAddrs: this.opts.reportAddrs(),
      endpoint: w.endpoint,
      workergroup: w.workergroup,
      machineType: w.machineType,
      searchParams: reg.endpoints.get(w.endpoint)?.workergroups.get(w.workergroup)?.search_params ?? '',
      launch: reg.endpoints.get(w.endpoint)?.workergroups.get(w.workergroup)?.launch ?? {},
      dollarsPerHour: w.dollarsPerHour,
      storageDollarsPerHour: w.storageDollarsPerHour,
      running: shouldRun(w),
    }));
    const got = new Map((await this.provider.adopt(specs)).map((r) => [r.id, r]));
    let adopted = 0;
    for (const w of remembered) {
      const r = got.get(w.id);
      if (!r) reg.transition(w, 'errored', 'its instance was gone after the autoscaler restarted');
      else if (shouldRun(w) && !r.running && r.stopped && w.state === 'ready' && reg.transition(w, 'inactive', 'its instance was found parked at the restart'))
        adopted++;
      else if (shouldRun(w) && !r.running) reg.transition(w, 'errored', 'its instance stopped while the autoscaler was down');
      else {
        adopted++;
        if (r.url && !w.url) {
          w.url = r.url;
          reg.routableChanged(w.endpoint);
        }
      }
    }
    reg.log.info({ event: 'workers_adopted', adopted, remembered: remembered.length }, 'remembered workers taken back');
  }
}
