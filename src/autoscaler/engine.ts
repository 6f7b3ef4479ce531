import { createHash, createPrivateKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Logger } from '../common/log.js';
import { errorBody } from '../common/protocol.js';
import { pythonJsonDumps, signMessage, signUrl } from '../common/signature.js';
import type { Clock } from './clock.js';
import type { EngineTiming } from './config.js';
import { LoadHistory } from './load-history.js';
import {
  endpointParamsSchema,
  endpointSchema,
  fieldErrors,
  paramsOf,
  type EndpointConfig,
  type EndpointParams,
  type EndpointPatch,
  type MachineType,
  type WorkergroupConfig,
  type WorkergroupPatch,
} from './params.js';
import { PerfBook } from './perf-model.js';
import {
  decide,
  INITIAL_MEMORY,
  typeEstimates,
  type Decision,
  type MachineChoice,
  type Plan,
  type PolicyInput,
  type PolicyMemory,
  type PolicyOutput,
  type PolicyWorker,
} from './policy.js';
import type { EngineLink, Provider, ProviderEvent } from './providers/types.js';
import type { Journal } from './journal.js';
import { EndpointRouter, type PendingRequest, type RequestEntry, type RoutableWorker } from './router.js';
import { canTransition, type EndpointState, type WorkerState } from './states.js';
import { deleteRequestsSchema, endpointWorkersSchema, fail, routeBodySchema, workerStatusSchema, type Outcome } from './wire.js';

/**
 * The engine: the state of endpoints, workergroups and workers, the protocol operations
 * (`route`, `workerStatus`, `deleteRequests`, `endpointWorkers`) and the tick that runs the
 * policy and turns its decisions into provider calls. It does no HTTP itself: the server and
 * the simulation call the same methods.
 *
 * Guarantees:
 * - every worker state change goes through `transition`, which allows only the moves of
 *   `states.ts` and logs `{worker, endpoint, from, to, reason}`;
 * - a report is accepted only with the MASTER_TOKEN the engine issued to that worker;
 * - an errored worker is destroyed at the next tick and the policy recruits its replacement;
 * - a worker silent for `stale_after_seconds` is probed (`GET {url}/healthz`, or the
 *   provider's probe) and errored when the probe fails.
 */

/** Everything the engine knows about one worker. */
export interface WorkerRecord {
  id: number;
  endpoint: string;
  workergroup: string;
  machineType: string;
  /** `workergroup/machine_type`. */
  typeKey: string;
  dollarsPerHour: number;
  storageDollarsPerHour: number;
  dlperf: number;
  state: WorkerState;
  stateSince: number;
  stateReason: string;
  /** The MASTER_TOKEN issued at creation. Never logged. */
  mtoken: string;
  url: string | null;
  createdAt: number;
  loadedAt: number | null;
  startedAt: number | null;
  lastReportAt: number | null;
  reports: number;
  maxPerf: number;
  /** Served load per second over the last report interval. */
  curPerf: number;
  /** Saturated throughput, EWMA; 0 until measured. */
  measuredPerf: number;
  curLoad: number;
  newLoad: number;
  curLoadAvg: number;
  reqsWorking: number;
  diskUsage: number;
  /** Running sum of the load this worker refused (reports' `rej_load`): the dashboard's rejected load. */
  rejLoad: number;
  errorMsg: string;
  loadtime: number;
  benchmarked: boolean;
  lastReportBusy: boolean;
  probing: boolean;
  lastProbeOkAt: number | null;
  /** Told to stop while requests were in flight: gets no new requests, stops once idle. */
  draining: boolean;
  drainReason: string;
  /** `/update_workers/` asked for it to be replaced (one worker of its workergroup at a time). */
  updatePending: boolean;
}

/** One endpoint at run time. */
export interface EndpointRuntime {
  id: number;
  name: string;
  apiKey: string;
  state: EndpointState;
  params: EndpointParams;
  workergroups: Map<string, WorkergroupConfig>;
  history: LoadHistory;
  lastActivityAt: number | null;
  memory: PolicyMemory;
  lastPlan: Plan | null;
  router: EndpointRouter;
  createdAt: number;
}

/** A worker state change, as emitted to listeners. */
export interface TransitionEvent {
  at: number;
  worker: number;
  endpoint: string;
  from: WorkerState | null;
  to: WorkerState;
  reason: string;
}

export interface EngineEvents {
  transition: TransitionEvent;
  routed: RequestEntry;
  timedOut: RequestEntry;
  plan: { at: number; endpoint: string; plan: Plan; decisions: Decision[] };
}

export interface EngineOptions {
  clock: Clock;
  provider: Provider;
  /** PEM (PKCS#8) or KeyObject of the RSA key that signs routes. */
  privateKey: KeyObject | string;
  logger: Logger;
  timing: EngineTiming;
  /** REPORT_ADDR given to new workers; read at each creation (the server learns its port late). */
  reportAddrs: () => string[];
  /** Liveness probe of a worker URL; default `GET {url}/healthz` (any HTTP answer counts as alive). */
  probe?: (url: string, timeoutMs: number) => Promise<boolean>;
  /** Opt-in strict signing of /route/ answers (see RouterOptions.strictAuth); default: the url only. */
  strictAuth?: { ttlSeconds: number };
  /** The scaling policy (default: `decide` of policy.ts; the simulation can run a baseline instead). */
  policy?: (input: PolicyInput) => PolicyOutput;
  /** The account key: accepted wherever an endpoint's api_key is (the console calls of the SDK send it). */
  accountKey?: string;
  /** Where the engine keeps its state (endpoints, workers, learned perf, pending requests) across restarts. */
  store?: Journal;
}

/** An admin operation refused: status and the field at fault. */
export class EngineError extends Error {
  constructor(
    readonly status: number,
    readonly fields: Record<string, string>,
    message: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

/** Keep destroyed workers visible this long (admin API, dashboards). */
const DESTROYED_KEEP_MS = 10 * 60_000;
/** request_idx values reserved ahead in the journal, so ids issued just before a crash are never issued again. */
const IDX_RESERVE = 100_000;
const LOAD_AVG_ALPHA = 0.2;

/** Constant-time string comparison (through SHA-256, so lengths do not leak either). */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

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

export class Engine implements EngineLink {
  readonly endpoints = new Map<string, EndpointRuntime>();
  readonly workers = new Map<number, WorkerRecord>();
  readonly perf = new PerfBook();
  private readonly clock: Clock;
  private readonly provider: Provider;
  private readonly key: KeyObject;
  private readonly log: Logger;
  private readonly timing: EngineTiming;
  private nextWorkerId = 1;
  private nextEndpointId = 1;
  private nextRequestIdx = 1;
  private nextWorkergroupId = 1;
  /** Last JSON saved per journal key: only what changed is written. */
  private saved = new Map<string, string>();
  private closedStore = false;
  /** Numeric ids of workergroups (the console API names them by number), by `endpoint/workergroup`. */
  private readonly wgIds = new Map<string, number>();
  private tickTimer: number | null = null;
  private unsubscribe: (() => void) | null = null;
  private listeners: { [K in keyof EngineEvents]: Set<(e: EngineEvents[K]) => void> } = {
    transition: new Set(),
    routed: new Set(),
    timedOut: new Set(),
    plan: new Set(),
  };

  constructor(private opts: EngineOptions) {
    this.clock = opts.clock;
    this.provider = opts.provider;
    this.key = typeof opts.privateKey === 'string' ? createPrivateKey(opts.privateKey) : opts.privateKey;
    this.log = opts.logger;
    this.timing = opts.timing;
    this.unsubscribe = this.provider.subscribe((e) => this.onProviderEvent(e));
    this.provider.attach?.(this);
  }

  /** Listen to engine events; returns the unsubscribe function. */
  on<K extends keyof EngineEvents>(event: K, listener: (e: EngineEvents[K]) => void): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  private emit<K extends keyof EngineEvents>(event: K, payload: EngineEvents[K]): void {
    for (const l of this.listeners[event]) l(payload);
  }

  /** Start ticking (policy, expiry, staleness) every `tick_seconds`. */
  start(): void {
    if (this.tickTimer !== null) return;
    this.tickTimer = this.clock.setInterval(() => this.tick(), this.timing.tick_seconds * 1000);
  }

  /** Stop ticking and detach from the provider (the provider is closed by its owner); the state is saved a last time. */
  close(): void {
    if (this.tickTimer !== null) this.clock.clearTimer(this.tickTimer);
    this.tickTimer = null;
    if (this.opts.store && !this.closedStore) {
      this.save(true);
      this.closedStore = true;
    }
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  // ---------------------------------------------------------------- endpoints

  /** Create an endpoint from its declaration; throws EngineError 409 when the name is taken. */
  addEndpoint(cfg: EndpointConfig): EndpointRuntime {
    if (this.endpoints.has(cfg.name)) throw new EngineError(409, { name: `endpoint "${cfg.name}" already exists` }, 'endpoint exists');
    const params = endpointParamsSchema.parse(paramsOf(cfg));
    const now = this.clock.now();
    const ep: EndpointRuntime = {
      id: this.nextEndpointId++,
      name: cfg.name,
      apiKey: cfg.api_key ?? randomBytes(18).toString('base64url'),
      state: cfg.state,
      params,
      workergroups: new Map(),
      history: new LoadHistory(now, historyKeep(params)),
      lastActivityAt: null,
      memory: INITIAL_MEMORY,
      lastPlan: null,
      router: null as unknown as EndpointRouter,
      createdAt: now,
    };
    ep.router = new EndpointRouter({
      endpoint: ep.name,
      now: () => this.clock.now(),
      sign: (url) => signUrl(this.key, url),
      // The message is the one the worker's strictSignedMessage rebuilds: json.dumps(indent=4, sort_keys=True).
      strictAuth: this.opts.strictAuth
        ? { sign: (fields) => signMessage(this.key, pythonJsonDumps(fields)), ttlSeconds: this.opts.strictAuth.ttlSeconds }
        : undefined,
      readyWorkers: () => this.routable(ep.name),
      // The plan may hold requests in the global queue sooner than max_queue_time (capacity is coming).
      maxQueueTime: () => Math.min(ep.params.max_queue_time, ep.lastPlan?.routeQueueLimit ?? Number.POSITIVE_INFINITY),
      queueBudget: () => ep.lastPlan?.routeQueueBudget ?? 0,
      unreportedTtlMs: this.timing.unreported_ttl_seconds * 1000,
      requestTtlMs: this.timing.request_ttl_seconds * 1000,
      onRouted: (e) => this.emit('routed', e),
      onTimedOut: (e) => {
        this.log.info(
          { event: 'request_timed_out', endpoint: ep.name, request_idx: e.idx, waited_s: (this.clock.now() - e.createdAt) / 1000 },
          'request timed out in the queue',
        );
        this.emit('timedOut', e);
      },
    });
    for (const wg of cfg.workergroups) {
      if (ep.workergroups.has(wg.name)) throw new EngineError(409, { 'workergroups.name': `duplicate workergroup "${wg.name}"` }, 'duplicate workergroup');
      ep.workergroups.set(wg.name, wg);
      this.wgIds.set(`${ep.name}/${wg.name}`, this.nextWorkergroupId++);
    }
    this.endpoints.set(ep.name, ep);
    this.log.info({ event: 'endpoint_state', endpoint: ep.name, from: null, to: ep.state, reason: 'created' }, 'endpoint created');
    return ep;
  }

  /** Change parameters, state or api_key of an endpoint; every change is validated together. */
  updateEndpoint(name: string, patch: EndpointPatch): EndpointRuntime {
    const ep = this.mustEndpoint(name);
    const merged = endpointParamsSchema.safeParse({ ...ep.params, ...paramsOf(patch as EndpointPatch & Record<string, unknown>) });
    if (!merged.success) throw new EngineError(400, fieldErrors(merged.error), 'invalid parameters');
    ep.params = merged.data;
    ep.history.setKeep(historyKeep(ep.params));
    if (patch.api_key) ep.apiKey = patch.api_key;
    if (patch.state && patch.state !== ep.state) {
      this.log.info({ event: 'endpoint_state', endpoint: ep.name, from: ep.state, to: patch.state, reason: 'admin' }, 'endpoint state');
      ep.state = patch.state;
      // Leaving "suspended" or "stopped": forget panic memory so the policy starts clean.
      ep.memory = INITIAL_MEMORY;
    }
    return ep;
  }

  /** Delete an endpoint: its workers are destroyed, its queued requests dropped. */
  removeEndpoint(name: string): void {
    const ep = this.mustEndpoint(name);
    for (const w of this.workersOf(name)) this.destroyWorker(w, 'endpoint deleted');
    this.endpoints.delete(name);
    for (const wg of ep.workergroups.keys()) this.wgIds.delete(`${name}/${wg}`);
    this.log.info({ event: 'endpoint_state', endpoint: name, from: ep.state, to: null, reason: 'deleted' }, 'endpoint deleted');
  }

  addWorkergroup(endpoint: string, wg: WorkergroupConfig): WorkergroupConfig {
    const ep = this.mustEndpoint(endpoint);
    if (ep.workergroups.has(wg.name)) throw new EngineError(409, { name: `workergroup "${wg.name}" already exists` }, 'workergroup exists');
    ep.workergroups.set(wg.name, wg);
    this.wgIds.set(`${endpoint}/${wg.name}`, this.nextWorkergroupId++);
    this.log.info({ event: 'workergroup', endpoint, workergroup: wg.name, change: 'created' }, 'workergroup created');
    return wg;
  }

  updateWorkergroup(endpoint: string, name: string, patch: WorkergroupPatch): WorkergroupConfig {
    const ep = this.mustEndpoint(endpoint);
    const wg = ep.workergroups.get(name);
    if (!wg) throw new EngineError(404, { workergroup: `no workergroup "${name}"` }, 'no such workergroup');
    const next: WorkergroupConfig = {
      ...wg,
      ...(patch.search_params !== undefined ? { search_params: patch.search_params } : {}),
      ...(patch.launch !== undefined ? { launch: patch.launch } : {}),
      ...(patch.machine_types !== undefined ? { machine_types: patch.machine_types } : {}),
    };
    ep.workergroups.set(name, next);
    this.log.info({ event: 'workergroup', endpoint, workergroup: name, change: 'updated' }, 'workergroup updated');
    return next;
  }

  /** Delete a workergroup and destroy its workers. */
  removeWorkergroup(endpoint: string, name: string): void {
    const ep = this.mustEndpoint(endpoint);
    if (!ep.workergroups.has(name)) throw new EngineError(404, { workergroup: `no workergroup "${name}"` }, 'no such workergroup');
    for (const w of this.workersOf(endpoint)) if (w.workergroup === name) this.destroyWorker(w, 'workergroup deleted');
    ep.workergroups.delete(name);
    this.wgIds.delete(`${endpoint}/${name}`);
    this.log.info({ event: 'workergroup', endpoint, workergroup: name, change: 'deleted' }, 'workergroup deleted');
  }

  /** The numeric id of a workergroup (console API), or null. */
  workergroupId(endpoint: string, workergroup: string): number | null {
    return this.wgIds.get(`${endpoint}/${workergroup}`) ?? null;
  }

  /** The workergroup with numeric id `id`, with its endpoint. */
  workergroupById(id: number): { endpoint: EndpointRuntime; workergroup: WorkergroupConfig } | null {
    for (const [key, wid] of this.wgIds) {
      if (wid !== id) continue;
      const slash = key.indexOf('/');
      const ep = this.endpoints.get(key.slice(0, slash));
      const wg = ep?.workergroups.get(key.slice(slash + 1));
      if (ep && wg) return { endpoint: ep, workergroup: wg };
    }
    return null;
  }

  /** True when `key` is the endpoint's api_key or the account key. */
  keyOpens(ep: EndpointRuntime, key: string): boolean {
    return sameSecret(key, ep.apiKey) || (!!this.opts.accountKey && sameSecret(key, this.opts.accountKey));
  }

  /**
   * `POST /update_workers/`: replace every worker of the workergroup, one at a time (a rolling
   * update): each is drained, destroyed, and recruited again with the workergroup's current
   * launch settings; the next goes once the replacement is ready. Returns how many were marked.
   */
  updateWorkers(workergroupId: number): number {
    const found = this.workergroupById(workergroupId);
    if (!found) throw new EngineError(404, { workergroup_id: `no workergroup ${workergroupId}` }, 'no such workergroup');
    let n = 0;
    for (const w of this.workersOf(found.endpoint.name)) {
      if (w.workergroup !== found.workergroup.name || w.state === 'destroyed') continue;
      w.updatePending = true;
      n++;
    }
    this.log.info(
      { event: 'update_workers', endpoint: found.endpoint.name, workergroup: found.workergroup.name, workers: n },
      'rolling update of a workergroup',
    );
    return n;
  }

  /** One step of each rolling update: workers not serving go at once, a serving one only when nothing of its group is loading. */
  private rollUpdates(): void {
    const busyGroups = new Set<string>();
    for (const w of this.workers.values()) {
      const g = `${w.endpoint}/${w.workergroup}`;
      if (w.state === 'created' || w.state === 'loading' || w.state === 'starting' || (w.updatePending && w.draining)) busyGroups.add(g);
    }
    for (const w of this.workers.values()) {
      if (!w.updatePending || w.state === 'destroyed') continue;
      const g = `${w.endpoint}/${w.workergroup}`;
      if (w.state !== 'ready') {
        if (w.state === 'inactive' || w.state === 'errored') this.destroyWorker(w, 'rolling update');
        continue;
      }
      if (w.draining) {
        if (this.idle(w)) this.destroyWorker(w, 'rolling update (drained)');
        continue;
      }
      if (busyGroups.has(g)) continue;
      busyGroups.add(g);
      if (this.idle(w)) this.destroyWorker(w, 'rolling update');
      else {
        w.draining = true;
        w.drainReason = 'rolling update';
      }
    }
  }

  private mustEndpoint(name: string): EndpointRuntime {
    const ep = this.endpoints.get(name);
    if (!ep) throw new EngineError(404, { endpoint: `no endpoint "${name}"` }, 'no such endpoint');
    return ep;
  }

  /** Workers of an endpoint, destroyed ones included while they are kept. */
  workersOf(endpoint: string): WorkerRecord[] {
    return [...this.workers.values()].filter((w) => w.endpoint === endpoint);
  }

  private routable(endpoint: string): RoutableWorker[] {
    const out: RoutableWorker[] = [];
    for (const w of this.workers.values()) {
      if (w.endpoint === endpoint && w.state === 'ready' && !w.draining && w.url && w.maxPerf > 0)
        out.push({ id: w.id, url: w.url, perf: w.maxPerf, reportedLoad: w.curLoad, lastReportAt: w.lastReportAt });
    }
    return out;
  }

  // ---------------------------------------------------------------- protocol

  /** `POST /route/`: a worker for a request, or its place in the queue. */
  route(raw: unknown): Outcome {
    const parsed = routeBodySchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /route/ body', fieldErrors(parsed.error)) };
    const body = parsed.data;
    const ep = this.endpoints.get(body.endpoint);
    if (!ep) return fail(404, 'endpoint', `no endpoint "${body.endpoint}"`);
    if (!this.keyOpens(ep, body.api_key)) return fail(401, 'api_key', 'api_key does not match the endpoint');
    let entry: RequestEntry | undefined;
    if (body.request_idx === 0) {
      if (ep.state === 'stopped') return fail(503, 'endpoint', 'endpoint is stopped');
      const now = this.clock.now();
      ep.history.add(now, body.cost);
      ep.lastActivityAt = now;
      entry = ep.router.submit(this.nextRequestIdx++, body.cost, body.replay_timeout);
    } else {
      if (body.request_idx >= this.nextRequestIdx) return fail(404, 'request_idx', `request_idx ${body.request_idx} was never issued by this engine`);
      entry = ep.router.get(body.request_idx);
      if (entry && entry.state !== 'routed') {
        // A poll: the client is still there, so its replay_timeout starts over.
        ep.router.touch(entry, body.replay_timeout);
        if (entry.state === 'queued') ep.router.drain();
      } else if (entry && !entry.delivered) {
        // Routed from the queue since the last poll (back in line if its worker left meanwhile).
        entry = ep.router.reroute(body.request_idx, body.cost, body.replay_timeout).entry;
      } else {
        // Routed before (or finished, or forgotten): the client's failover after its worker failed it.
        if (!entry && ep.state === 'stopped') return fail(503, 'endpoint', 'endpoint is stopped');
        const out = ep.router.reroute(body.request_idx, body.cost, body.replay_timeout);
        entry = out.entry;
        ep.lastActivityAt = this.clock.now();
        this.log.info(
          { event: 'reroute', endpoint: ep.name, request_idx: entry.idx, failed_worker: out.failed, attempts: entry.attempts, to: entry.workerId },
          'request routed again after its worker failed it',
        );
        if (out.failed !== null) this.checkFailedWorker(out.failed);
      }
    }
    return this.answer(ep, entry);
  }

  /** A client re-routed away from `id`: probe it now, so a dead worker leaves at once rather than after stale_after_seconds. */
  private checkFailedWorker(id: number): void {
    const w = this.workers.get(id);
    if (!w || w.probing || !w.url || (w.state !== 'ready' && w.state !== 'loading' && w.state !== 'starting')) return;
    this.probeWorker(w, this.clock.now(), 'a client could not use it');
  }

  private answer(ep: EndpointRuntime, entry: RequestEntry): Outcome {
    if (entry.state === 'routed' && entry.answer) {
      entry.delivered = true;
      return { status: 200, body: entry.answer };
    }
    if (entry.state === 'timed_out') {
      return {
        status: 408,
        body: errorBody(
          `no worker could take the request within replay_timeout (${entry.replayTimeoutMs / 1000} s)`,
          { replay_timeout: 'elapsed while waiting for a worker' },
          { request_idx: entry.idx, status: 'timed_out' },
        ),
      };
    }
    return {
      status: 200,
      body: {
        request_idx: entry.idx,
        status: 'queued',
        endpoint: ep.name,
        cost: entry.cost,
        queue_position: ep.router.position(entry),
        waited: (this.clock.now() - entry.createdAt) / 1000,
      },
    };
  }

  private authWorker(id: number, mtoken: string, idField: string): Outcome | WorkerRecord {
    const rec = this.workers.get(id);
    if (!rec || rec.state === 'destroyed') return fail(404, idField, `unknown worker ${id}`);
    if (!sameSecret(mtoken, rec.mtoken)) {
      this.log.warn({ event: 'report_refused', worker: id, reason: 'mtoken mismatch' }, 'report with a wrong mtoken refused');
      return fail(401, 'mtoken', 'mtoken does not match the worker');
    }
    return rec;
  }

  /** `POST /worker_status/` (PROTOCOL §4): update the worker, move its state, route waiting requests. */
  workerStatus(raw: unknown): Outcome {
    const parsed = workerStatusSchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /worker_status/ body', fieldErrors(parsed.error)) };
    const r = parsed.data;
    const found = this.authWorker(r.id, r.mtoken, 'id');
    if (!('typeKey' in found)) return found;
    const rec = found;
    const now = this.clock.now();
    const prevAt = rec.lastReportAt;
    rec.lastReportAt = now;
    rec.reports++;
    if (r.url) rec.url = r.url;
    rec.curLoad = Math.max(0, r.cur_load);
    rec.newLoad = Math.max(0, r.new_load);
    rec.curLoadAvg = rec.reports === 1 ? rec.curLoad : rec.curLoadAvg + LOAD_AVG_ALPHA * (rec.curLoad - rec.curLoadAvg);
    rec.reqsWorking = Math.max(0, r.num_requests_working);
    rec.diskUsage += Math.max(0, r.additional_disk_usage);
    rec.rejLoad += Math.max(0, r.rej_load);
    rec.errorMsg = r.error_msg;
    rec.loadtime = r.loadtime;
    if (r.max_perf > 0) rec.maxPerf = r.max_perf;
    const dt = prevAt === null ? 0 : (now - prevAt) / 1000;
    if (dt > 0) {
      rec.curPerf = Math.max(0, r.cur_perf) / dt;
      // Only an interval that started and ended busy measures capacity rather than demand.
      if (rec.lastReportBusy && rec.reqsWorking > 0 && dt >= 1 && rec.curPerf > 0) {
        rec.measuredPerf = rec.measuredPerf === 0 ? rec.curPerf : rec.measuredPerf + 0.2 * (rec.curPerf - rec.measuredPerf);
        this.perf.addMeasured(rec.typeKey, rec.curPerf);
      }
    }
    rec.lastReportBusy = rec.reqsWorking > 0;
    const ep = this.endpoints.get(rec.endpoint);
    ep?.router.markReported(rec.id, r.working_request_idxs);

    switch (rec.state) {
      case 'created':
      case 'loading':
      case 'starting':
        if (r.error_msg) this.transition(rec, 'errored', `worker reported: ${r.error_msg}`);
        else if (r.loadtime > 0 && rec.maxPerf > 0) {
          if (!rec.benchmarked) {
            rec.benchmarked = true;
            this.perf.addBenchmark(rec.typeKey, rec.maxPerf);
          }
          if (rec.state !== 'starting') rec.loadedAt = now;
          rec.startedAt = now;
          this.transition(
            rec,
            'ready',
            rec.state === 'starting' ? 'started again, model loaded' : `model loaded in ${round(r.loadtime)} s, perf ${round(rec.maxPerf)}`,
          );
        } else if (rec.state === 'created') this.transition(rec, 'loading', 'first report: model loading');
        break;
      case 'ready':
        if (r.error_msg) this.transition(rec, 'errored', `worker reported: ${r.error_msg}`);
        break;
      default:
        // inactive/errored: a late report changes numbers only, never the state.
        break;
    }
    ep?.router.drain();
    return { status: 200, body: { ok: true } };
  }

  /** `POST /delete_requests/` (PROTOCOL §4): these request_idxs are over. */
  deleteRequests(raw: unknown): Outcome {
    const parsed = deleteRequestsSchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /delete_requests/ body', fieldErrors(parsed.error)) };
    const b = parsed.data;
    const found = this.authWorker(b.worker_id, b.mtoken, 'worker_id');
    if (!('typeKey' in found)) return found;
    const ep = this.endpoints.get(found.endpoint);
    const deleted = ep ? ep.router.complete(found.id, b.request_idxs, b.success) : 0;
    if (found.draining && !found.updatePending) this.finishDrain(found);
    ep?.router.drain();
    return { status: 200, body: { ok: true, deleted } };
  }

  /** `POST /get_endpoint_workers/` (PROTOCOL §9). */
  endpointWorkers(raw: unknown): Outcome {
    const parsed = endpointWorkersSchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /get_endpoint_workers/ body', fieldErrors(parsed.error)) };
    const { id, api_key } = parsed.data;
    const ep = [...this.endpoints.values()].find((e) => e.id === id || e.name === id || String(e.id) === id);
    if (!ep) return fail(404, 'id', `no endpoint ${JSON.stringify(id)}`);
    if (!this.keyOpens(ep, api_key)) return fail(401, 'api_key', 'api_key matches neither the endpoint nor the account');
    // The SDK does float() on every number: unknown times are 0, never null.
    const secs = (ms: number | null) => (ms === null ? 0 : ms / 1000);
    const n = (v: number) => (Number.isFinite(v) ? v : 0);
    const list = this.workersOf(ep.name)
      .filter((w) => w.state !== 'destroyed')
      .map((w) => ({
        id: w.id,
        status: w.state,
        cur_load: n(w.curLoad),
        new_load: n(w.newLoad),
        cur_load_rolling_avg: n(round(w.curLoadAvg)),
        cur_perf: n(round(w.curPerf)),
        perf: n(w.maxPerf),
        measured_perf: n(round(w.measuredPerf)),
        dlperf: n(w.dlperf),
        reliability: w.state === 'errored' ? 0 : Math.max(0, 1 - Math.min(1, ep.router.failureScore(w.id) / 4)),
        reqs_working: Math.round(n(w.reqsWorking)),
        disk_usage: n(w.diskUsage),
        loaded_at: n(secs(w.loadedAt)),
        started_at: n(secs(w.startedAt)),
      }));
    return { status: 200, body: list };
  }

  // ---------------------------------------------------------------- tick

  /** One engine step: expire requests, check stale workers, run the policy of each endpoint. */
  tick(): void {
    const now = this.clock.now();
    for (const ep of this.endpoints.values()) {
      ep.router.expire();
      ep.history.trim(now);
    }
    this.checkWorkers(now);
    this.rollUpdates();
    for (const w of this.workers.values()) if (w.draining && !w.updatePending) this.finishDrain(w);
    for (const ep of this.endpoints.values()) this.runPolicy(ep, now);
    for (const ep of this.endpoints.values()) ep.router.drain();
    for (const [id, w] of this.workers) if (w.state === 'destroyed' && now - w.stateSince > DESTROYED_KEEP_MS) this.workers.delete(id);
    if (this.opts.store) this.save(false);
  }

  // ---------------------------------------------------------------- persistence

  /**
   * Write what changed since the last save to the journal and fsync it (every tick, and at
   * close). request_idx is saved IDX_RESERVE ahead except at close, so after a crash no id is
   * issued twice.
   */
  save(final = false): void {
    const store = this.opts.store;
    if (!store) return;
    const live = new Set<string>();
    const put = (kind: string, id: string, value: unknown) => {
      const key = `${kind}/${id}`;
      live.add(key);
      const json = JSON.stringify(value);
      if (this.saved.get(key) === json) return;
      this.saved.set(key, json);
      store.put(kind, id, value);
    };
    put('meta', 'counters', {
      nextWorkerId: this.nextWorkerId,
      nextEndpointId: this.nextEndpointId,
      nextWorkergroupId: this.nextWorkergroupId,
      nextRequestIdx: this.nextRequestIdx + (final ? 0 : IDX_RESERVE - ((this.nextRequestIdx - 1) % IDX_RESERVE)),
    });
    put('meta', 'perf', this.perf.snapshot());
    for (const ep of this.endpoints.values()) {
      put('endpoint', ep.name, {
        id: ep.id,
        createdAt: ep.createdAt,
        lastActivityAt: ep.lastActivityAt,
        config: { name: ep.name, api_key: ep.apiKey, state: ep.state, ...ep.params, workergroups: [...ep.workergroups.values()] },
        wgIds: Object.fromEntries([...ep.workergroups.keys()].map((wg) => [wg, this.wgIds.get(`${ep.name}/${wg}`)])),
      });
      put('requests', ep.name, { reqnum: ep.router.lastReqnum(), pending: ep.router.exportPending() });
    }
    for (const w of this.workers.values()) put('worker', String(w.id), { ...w, probing: false });
    for (const key of [...this.saved.keys()]) {
      if (live.has(key)) continue;
      const slash = key.indexOf('/');
      store.delete(key.slice(0, slash), key.slice(slash + 1));
      this.saved.delete(key);
    }
    store.flush();
  }

  /**
   * Take back the state of an earlier run from the journal (before the config's endpoints are
   * added: an endpoint the journal knows keeps its journal state). Returns what was restored.
   */
  restore(): { endpoints: number; workers: number; requests: number } {
    const store = this.opts.store;
    const out = { endpoints: 0, workers: 0, requests: 0 };
    if (!store) return out;
    const counters = store.get('meta', 'counters') as Record<string, number> | undefined;
    for (const [name, raw] of store.all('endpoint')) {
      const rec = raw as { id: number; createdAt: number; lastActivityAt: number | null; config: unknown; wgIds: Record<string, number> };
      const parsed = endpointSchema.safeParse(rec.config);
      if (!parsed.success) {
        this.log.warn({ event: 'restore_skipped', endpoint: name, fields: fieldErrors(parsed.error) }, 'a remembered endpoint no longer parses: skipped');
        continue;
      }
      const ep = this.addEndpoint(parsed.data);
      ep.id = rec.id;
      ep.createdAt = rec.createdAt;
      ep.lastActivityAt = rec.lastActivityAt;
      for (const [wg, id] of Object.entries(rec.wgIds ?? {})) if (typeof id === 'number') this.wgIds.set(`${ep.name}/${wg}`, id);
      const reqs = store.get('requests', name) as { reqnum: number; pending: PendingRequest[] } | undefined;
      if (reqs) {
        ep.router.importPending(reqs.pending, reqs.reqnum);
        out.requests += reqs.pending.length;
      }
      out.endpoints++;
    }
    for (const raw of store.all('worker').values()) {
      const w = raw as WorkerRecord;
      if (!this.endpoints.has(w.endpoint)) continue;
      this.workers.set(w.id, { ...w, probing: false, updatePending: w.updatePending ?? false });
      out.workers++;
    }
    const perf = store.get('meta', 'perf') as Record<string, { benchmarks: number; benchmarkMean: number; measured: number; measuredEwma: number }> | undefined;
    // Replayed through the book's own API: n benchmarks of the mean, n measurements of the average.
    for (const [key, k] of Object.entries(perf ?? {})) {
      for (let i = 0; i < k.benchmarks; i++) this.perf.addBenchmark(key, k.benchmarkMean);
      for (let i = 0; i < k.measured; i++) this.perf.addMeasured(key, k.measuredEwma);
    }
    const maxId = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), 0);
    this.nextWorkerId = Math.max(counters?.nextWorkerId ?? 1, maxId([...this.workers.keys()]) + 1);
    this.nextEndpointId = Math.max(counters?.nextEndpointId ?? 1, maxId([...this.endpoints.values()].map((e) => e.id)) + 1);
    this.nextWorkergroupId = Math.max(counters?.nextWorkergroupId ?? 1, maxId([...this.wgIds.values()]) + 1);
    this.nextRequestIdx = Math.max(this.nextRequestIdx, counters?.nextRequestIdx ?? 1);
    if (out.endpoints > 0) this.log.info({ event: 'restored', ...out, next_request_idx: this.nextRequestIdx }, 'engine state restored from the journal');
    return out;
  }

  /**
   * After restore(): hand the remembered workers back to the provider. Those it no longer has,
   * or that stopped running while the engine was away, are errored (and so replaced).
   */
  async adoptWorkers(): Promise<void> {
    const remembered = [...this.workers.values()].filter((w) => w.state !== 'destroyed');
    const shouldRun = (w: WorkerRecord) => w.state === 'created' || w.state === 'loading' || w.state === 'starting' || w.state === 'ready';
    if (!this.provider.adopt) {
      for (const w of remembered) this.transition(w, 'errored', `the ${this.provider.kind} provider cannot take workers back after a restart`);
      return;
    }
    const specs = remembered.map((w) => ({
      workerId: w.id,
      masterToken: w.mtoken,
      reportAddrs: this.opts.reportAddrs(),
      endpoint: w.endpoint,
      workergroup: w.workergroup,
      machineType: w.machineType,
      searchParams: this.endpoints.get(w.endpoint)?.workergroups.get(w.workergroup)?.search_params ?? '',
      launch: this.endpoints.get(w.endpoint)?.workergroups.get(w.workergroup)?.launch ?? {},
      dollarsPerHour: w.dollarsPerHour,
      storageDollarsPerHour: w.storageDollarsPerHour,
      running: shouldRun(w),
    }));
    const got = new Map((await this.provider.adopt(specs)).map((r) => [r.id, r]));
    let adopted = 0;
    for (const w of remembered) {
      const r = got.get(w.id);
      if (!r) this.transition(w, 'errored', 'its instance was gone after the autoscaler restarted');
      else if (shouldRun(w) && !r.running) this.transition(w, 'errored', 'its instance stopped while the autoscaler was down');
      else {
        adopted++;
        if (r.url && !w.url) w.url = r.url;
      }
    }
    this.log.info({ event: 'workers_adopted', adopted, remembered: remembered.length }, 'remembered workers taken back');
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
          perf: this.perf.estimate(key) ?? mt.expected_perf ?? null,
          samples: this.perf.get(key)?.benchmarks ?? 0,
        });
      }
    }
    return out;
  }

  private runPolicy(ep: EndpointRuntime, now: number): void {
    if (ep.state === 'suspended') return;
    const machines = this.machinesOf(ep);
    const estimates = typeEstimates(machines);
    const fallback = [...estimates.values()].reduce((a, b) => a + b, 0) / Math.max(1, estimates.size) || 100;
    // A ready worker that stopped answering is no capacity to plan with (the router already avoids it).
    const suspects = new Set(
      this.routable(ep.name)
        .filter((r) => ep.router.suspect(r, now))
        .map((r) => r.id),
    );
    const workers: PolicyWorker[] = this.workersOf(ep.name)
      .filter((w) => w.state !== 'destroyed')
      .map((w) => ({
        id: w.id,
        state: w.state,
        typeKey: w.typeKey,
        perf: w.maxPerf > 0 ? w.maxPerf : (estimates.get(w.typeKey) ?? this.perf.estimate(w.typeKey) ?? fallback),
        dollarsPerHour: w.dollarsPerHour,
        busy: ep.router.outstanding(w.id) > 0 || w.reqsWorking > 0,
        stateSince: w.stateSince,
        ...(suspects.has(w.id) ? { suspect: true } : {}),
      }));
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
      this.log.info(
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
      this.log.info({ event: 'decisions', endpoint: ep.name, decisions: out.decisions.map((d) => ({ ...d })), plan: roundPlan(out.plan) }, 'policy decisions');
    }
    this.emit('plan', { at: now, endpoint: ep.name, plan: out.plan, decisions: out.decisions });
    const stopping = new Set(out.decisions.filter((d) => d.kind === 'stop').map((d) => (d as { id: number }).id));
    for (const w of this.workersOf(ep.name)) {
      if (w.draining && !w.updatePending && !stopping.has(w.id)) {
        w.draining = false;
        this.log.info({ event: 'drain_cancelled', worker: w.id, endpoint: ep.name }, 'worker needed again: drain cancelled');
      }
    }
    for (const d of out.decisions) this.apply(ep, d);
  }

  private apply(ep: EndpointRuntime, d: Decision): void {
    if (d.kind === 'recruit') {
      for (let i = 0; i < d.count; i++) this.recruit(ep, d.typeKey, d.reason);
      return;
    }
    const w = this.workers.get(d.id);
    if (!w) return;
    if (d.kind === 'activate') {
      if (!this.transition(w, 'starting', d.reason)) return;
      this.provider.start(w.id).catch((err: unknown) => this.failWorker(w, `provider start failed: ${errText(err)}`));
    } else if (d.kind === 'stop') {
      if (w.state === 'ready' && !this.idle(w)) {
        if (!w.draining) {
          w.draining = true;
          w.drainReason = d.reason;
          this.log.info(
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
    const now = this.clock.now();
    const rec: WorkerRecord = {
      id: this.nextWorkerId++,
      endpoint: ep.name,
      workergroup: wg.name,
      machineType: mt.name,
      typeKey,
      dollarsPerHour: mt.dollars_per_hour,
      storageDollarsPerHour: mt.storage_dollars_per_hour,
      dlperf: mt.dlperf ?? 0,
      state: 'created',
      stateSince: now,
      stateReason: reason,
      mtoken: randomBytes(24).toString('hex'),
      url: null,
      createdAt: now,
      loadedAt: null,
      startedAt: null,
      lastReportAt: null,
      reports: 0,
      maxPerf: 0,
      curPerf: 0,
      measuredPerf: 0,
      curLoad: 0,
      newLoad: 0,
      curLoadAvg: 0,
      reqsWorking: 0,
      diskUsage: 0,
      rejLoad: 0,
      errorMsg: '',
      loadtime: 0,
      benchmarked: false,
      lastReportBusy: false,
      probing: false,
      lastProbeOkAt: null,
      draining: false,
      drainReason: '',
      updatePending: false,
    };
    this.workers.set(rec.id, rec);
    this.logTransition(rec, null, 'created', reason);
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
        if (handle.id !== proposed && this.workers.get(proposed) === rec) {
          this.workers.delete(proposed);
          rec.id = handle.id;
          this.workers.set(handle.id, rec);
        }
        if (handle.url && !rec.url) rec.url = handle.url;
      })
      .catch((err: unknown) => this.failWorker(rec, `provider create failed: ${errText(err)}`));
    return rec;
  }

  /** No request routed to it is unfinished, and its last report said none is working. */
  private idle(w: WorkerRecord): boolean {
    const ep = this.endpoints.get(w.endpoint);
    return (ep?.router.outstanding(w.id) ?? 0) === 0 && w.reqsWorking === 0;
  }

  private stopWorker(w: WorkerRecord, reason: string): void {
    if (!this.transition(w, 'inactive', reason)) return;
    this.provider.stop(w.id).catch((err: unknown) => this.failWorker(w, `provider stop failed: ${errText(err)}`));
  }

  /** A draining worker whose last request ended is stopped now. */
  private finishDrain(w: WorkerRecord): void {
    if (w.draining && w.state === 'ready' && (this.endpoints.get(w.endpoint)?.router.outstanding(w.id) ?? 0) === 0) {
      this.stopWorker(w, `${w.drainReason} (drained)`);
    }
  }

  private destroyWorker(w: WorkerRecord, reason: string): void {
    if (!this.transition(w, 'destroyed', reason)) return;
    this.provider
      .destroy(w.id)
      .catch((err: unknown) => this.log.warn({ event: 'provider_error', worker: w.id, op: 'destroy', error: errText(err) }, 'provider destroy failed'));
  }

  private failWorker(w: WorkerRecord, reason: string): void {
    this.transition(w, 'errored', reason);
  }

  private onProviderEvent(e: ProviderEvent): void {
    const w = this.workers.get(e.workerId);
    if (!w) return;
    if (e.url && !w.url) w.url = e.url;
    if (e.kind === 'running') {
      if (w.state === 'created') this.transition(w, 'loading', e.reason ?? 'instance running');
    } else if (e.kind === 'exited') {
      if (w.state !== 'inactive' && w.state !== 'destroyed') this.transition(w, 'errored', `instance exited: ${e.reason ?? 'unknown reason'}`);
    } else {
      this.log.debug({ event: 'provider_event', worker: w.id, kind: e.kind, reason: e.reason }, 'provider event');
    }
  }

  /** Stale reports (probe, then errored), load timeouts. */
  private checkWorkers(now: number): void {
    const staleMs = this.timing.stale_after_seconds * 1000;
    const loadMs = this.timing.load_timeout_seconds * 1000;
    for (const w of this.workers.values()) {
      if (w.state === 'created' || w.state === 'loading' || w.state === 'starting') {
        if (now - w.stateSince > loadMs && (w.state !== 'created' || now - w.createdAt > loadMs)) {
          this.transition(w, 'errored', `not ready ${this.timing.load_timeout_seconds} s after ${w.state === 'starting' ? 'start' : 'creation'}`);
          continue;
        }
      }
      if (w.state !== 'loading' && w.state !== 'ready' && w.state !== 'starting') continue;
      if (w.probing || !w.url) continue;
      const heardAt = Math.max(w.lastReportAt ?? 0, w.stateSince, w.lastProbeOkAt ?? 0);
      if (now - heardAt <= staleMs) continue;
      this.probeWorker(w, now);
    }
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
          w.lastProbeOkAt = this.clock.now();
          this.log.warn({ event: 'worker_stale', worker: w.id, endpoint: w.endpoint, silent_s: silentFor }, 'no report, but /healthz answered');
        } else {
          this.transition(w, 'errored', `${cause} and GET /healthz did not answer`);
        }
      });
  }

  /** Move a worker to `to` if the move is legal; logs it with its reason and emits it. */
  private transition(w: WorkerRecord, to: WorkerState, reason: string): boolean {
    const from = w.state;
    if (from === to || !canTransition(from, to)) {
      if (from !== to) this.log.debug({ event: 'transition_refused', worker: w.id, from, to, reason }, 'illegal transition ignored');
      return false;
    }
    w.state = to;
    w.draining = false;
    w.stateSince = this.clock.now();
    w.stateReason = reason;
    this.logTransition(w, from, to, reason);
    const ep = this.endpoints.get(w.endpoint);
    if (to === 'errored' || to === 'inactive' || to === 'destroyed') {
      const lost = ep?.router.dropWorker(w.id) ?? [];
      if (lost.length > 0)
        this.log.warn(
          { event: 'requests_orphaned', worker: w.id, count: lost.length },
          "requests of a departing worker: their clients' re-routes get another worker",
        );
    }
    if (to === 'errored' && w.errorMsg === '') w.errorMsg = reason;
    if (to === 'ready') ep?.router.drain();
    return true;
  }

  private logTransition(w: WorkerRecord, from: WorkerState | null, to: WorkerState, reason: string): void {
    const at = this.clock.now();
    const level = to === 'errored' ? 'warn' : 'info';
    this.log[level]({ event: 'worker_state', worker: w.id, endpoint: w.endpoint, machine_type: w.typeKey, from, to, reason }, 'worker state');
    this.emit('transition', { at, worker: w.id, endpoint: w.endpoint, from, to, reason });
  }

  // ---------------------------------------------------------------- views

  /** A JSON view of everything (no secrets): for the admin API and dashboards. */
  snapshot(): Record<string, unknown> {
    return {
      now: this.clock.now(),
      provider: this.provider.kind,
      perf: this.perf.snapshot(),
      endpoints: [...this.endpoints.values()].map((ep) => this.endpointView(ep)),
    };
  }

  /** An endpoint as the admin API shows it (the api_key only when `withKey`). */
  endpointView(ep: EndpointRuntime, withKey = false): Record<string, unknown> {
    return {
      id: ep.id,
      name: ep.name,
      ...(withKey ? { api_key: ep.apiKey } : {}),
      state: ep.state,
      ...ep.params,
      workergroups: [...ep.workergroups.values()],
      plan: ep.lastPlan ? roundPlan(ep.lastPlan) : null,
      queue: ep.router.signal(),
      requests: { ...ep.router.stats, reqnum: ep.router.lastReqnum() },
      workers: this.workersOf(ep.name).map(workerView),
    };
  }
}

/** A worker without its token. */
export function workerView(w: WorkerRecord): Record<string, unknown> {
  const { mtoken: _secret, probing: _p, lastReportBusy: _b, benchmarked: _k, ...rest } = w;
  return rest;
}

function historyKeep(p: EndpointParams): number {
  return Math.max(p.cold_window, p.stable_window, p.panic_window) + 5;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

function roundPlan(p: Plan): Record<string, number | boolean> {
  return Object.fromEntries(Object.entries(p).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]));
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
