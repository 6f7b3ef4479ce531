import * as nodeCrypto from 'node:crypto';
import { createHash, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Logger } from '../common/log.js';
import { pythonJsonDumps, signMessage, signUrl } from '../common/signature.js';
import type { Clock } from './clock.js';
import type { EngineTiming } from './config.js';
import { LoadHistory } from './load-history.js';
import {
  endpointParamsSchema,
  fieldErrors,
  paramsOf,
  type EndpointConfig,
  type EndpointParams,
  type EndpointPatch,
  type WorkergroupConfig,
  type WorkergroupPatch,
} from './params.js';
import { PerfBook } from './perf-model.js';
import { INITIAL_MEMORY, type Decision, type Plan, type PolicyMemory } from './policy.js';
import { EndpointRouter, type RequestEntry, type RoutableWorker } from './router.js';
import { canTransition, type EndpointState, type WorkerState } from './states.js';

/**
 * The registry: the one owner of the engine's state — endpoints, workergroups, workers, the
 * learned perf book and the id counters — and the only place a worker changes state
 * (`transition`, which allows only the moves of `states.ts`, logs `{worker, endpoint, from, to,
 * reason}` and emits the change). It makes no scaling decision and calls no provider: the
 * protocol answers from it, the scaler moves workers through it, the store saves and restores it.
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

/** The workers of an endpoint the router may choose, kept between requests (see `Registry.routable`). */
export interface RoutableSet {
  list: RoutableWorker[];
  byId: Map<number, RoutableWorker>;
  /** Workers of the endpoint starting (inactive → ready, seconds away): a standby is coming. */
  starting: number;
}

export interface RegistryOptions {
  clock: Clock;
  logger: Logger;
  /** The RSA key that signs routes. */
  key: KeyObject;
  timing: EngineTiming;
  /** Opt-in strict signing of /route/ answers (see RouterOptions.strictAuth). */
  strictAuth?: { ttlSeconds: number };
  /** The account key: accepted wherever an endpoint's api_key is. */
  accountKey?: string;
}

/** The next id of each kind to hand out (the store saves them; ids are never handed out twice). */
export interface IdCounters {
  worker: number;
  endpoint: number;
  workergroup: number;
  requestIdx: number;
}

/** A new reservation is made when fewer than this many ids of a kind are left reserved. */
export const ID_LOW_WATER: Readonly<IdCounters> = { worker: 500, endpoint: 50, workergroup: 50, requestIdx: 50_000 };
/** How many ids of each kind a reservation covers beyond the next one. */
export const ID_BLOCK: Readonly<IdCounters> = { worker: 1_000, endpoint: 100, workergroup: 100, requestIdx: 100_000 };

/**
 * Constant-time string comparison (through SHA-256, so lengths do not leak either). One-shot
 * `hash()`, not a Hash object per call: this runs on every /route/ and every worker report, and
 * the object's setup cost 4× the digest (a third of a ×100 simulation's CPU was here).
 */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), secretDigest(b));
}

/**
 * Digests of the secrets compared against (`b`: an endpoint's api_key, the account or admin key,
 * a worker's mtoken), kept: each `/route/` or report then hashes only what it was given. One per
 * secret in use; emptied if it ever holds 10,000 (secrets rotated many times), so it stays small.
 */
const secretDigests = new Map<string, Buffer>();
function secretDigest(secret: string): Buffer {
  let d = secretDigests.get(secret);
  if (!d) {
    if (secretDigests.size >= 10_000) secretDigests.clear();
    d = sha256(secret);
    secretDigests.set(secret, d);
  }
  return d;
}

// crypto.hash() arrived in Node 20.12; package.json allows 20.11, which gets the Hash object.
const oneShot = (nodeCrypto as { hash?: (alg: string, data: string, enc: 'buffer') => Buffer }).hash;
const sha256 = oneShot ? (s: string) => oneShot('sha256', s, 'buffer') : (s: string) => createHash('sha256').update(s).digest();

export class Registry {
  readonly endpoints = new Map<string, EndpointRuntime>();
  readonly workers = new Map<number, WorkerRecord>();
  /** routableOf()'s cache, by endpoint name. */
  private readonly routableSets = new Map<string, RoutableSet>();
  /**
   * Workers that reported since the store last looked (null while no store asks: the simulator
   * keeps nothing): the store encodes their records between ticks (`EngineStore.stage`).
   */
  reportedSince: Set<number> | null = null;
  /**
   * Moves when a worker is added, re-keyed or changes state (or the store restores workers): the
   * scaler's stale check skips its pass over every worker while this and the clock say nothing
   * can be due (see `Scaler.checkWorkers`).
   */
  workerEpoch = 0;
  readonly perf = new PerfBook();
  /** Numeric ids of workergroups (the console API names them by number), by `endpoint/workergroup`. */
  readonly wgIds = new Map<string, number>();
  readonly next: IdCounters = { worker: 1, endpoint: 1, workergroup: 1, requestIdx: 1 };
  readonly clock: Clock;
  readonly log: Logger;
  private listeners: { [K in keyof EngineEvents]: Set<(e: EngineEvents[K]) => void> } = {
    transition: new Set(),
    routed: new Set(),
    timedOut: new Set(),
    plan: new Set(),
  };

  constructor(private readonly opts: RegistryOptions) {
    this.clock = opts.clock;
    this.log = opts.logger;
  }

  /** Listen to engine events; returns the unsubscribe function. */
  on<K extends keyof EngineEvents>(event: K, listener: (e: EngineEvents[K]) => void): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  emit<K extends keyof EngineEvents>(event: K, payload: EngineEvents[K]): void {
    for (const l of this.listeners[event]) l(payload);
  }

  // ---------------------------------------------------------------- ids

  /**
   * Ids below these are reserved durably (the store fsyncs the reservation before any id of it is
   * handed out), so a crash never lets an id be issued twice. Without a store nothing is reserved.
   */
  reserved: IdCounters = { worker: 0, endpoint: 0, workergroup: 0, requestIdx: 0 };
  /** Set by the store: make a new reservation (synchronous; on failure `reserved` stays as it was). */
  reserveIds: (() => void) | null = null;

  private alloc(kind: keyof IdCounters): number {
    if (this.reserveIds && this.next[kind] + ID_LOW_WATER[kind] > this.reserved[kind]) this.reserveIds();
    return this.next[kind]++;
  }

  /** A new worker id (never one handed out before). */
  allocWorkerId(): number {
    return this.alloc('worker');
  }

  /** A new request_idx, unique across every endpoint of this engine. */
  allocRequestIdx(): number {
    return this.alloc('requestIdx');
  }

  /** True when `idx` was handed out by this engine (now or before a restart). */
  issuedRequestIdx(idx: number): boolean {
    return idx >= 1 && idx < this.next.requestIdx;
  }

  // ---------------------------------------------------------------- endpoints

  /** Create an endpoint from its declaration; throws EngineError 409 when the name is taken. */
  addEndpoint(cfg: EndpointConfig): EndpointRuntime {
    if (this.endpoints.has(cfg.name)) throw new EngineError(409, { name: `endpoint "${cfg.name}" already exists` }, 'endpoint exists');
    const params = endpointParamsSchema.parse(paramsOf(cfg));
    const now = this.clock.now();
    const ep: EndpointRuntime = {
      id: this.alloc('endpoint'),
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
    const key = this.opts.key;
    const strict = this.opts.strictAuth;
    ep.router = new EndpointRouter({
      endpoint: ep.name,
      now: () => this.clock.now(),
      sign: (url) => signUrl(key, url),
      // The message is the one the worker's strictSignedMessage rebuilds: json.dumps(indent=4, sort_keys=True).
      strictAuth: strict ? { sign: (fields) => signMessage(key, pythonJsonDumps(fields)), ttlSeconds: strict.ttlSeconds } : undefined,
      readyWorkers: () => this.routable(ep.name),
      standbyComing: () => this.routableOf(ep.name).starting > 0,
      // The plan may hold requests in the global queue sooner than max_queue_time (capacity is coming).
      maxQueueTime: () => Math.min(ep.params.max_queue_time, ep.lastPlan?.routeQueueLimit ?? Number.POSITIVE_INFINITY),
      queueBudget: () => ep.lastPlan?.routeQueueBudget ?? 0,
      smallestFirst: () => ep.params.queue_order === 'smallest',
      agingMs: () => 2000 * (ep.params.target_queue_time > 0 ? ep.params.target_queue_time : ep.params.max_queue_time),
      unreportedTtlMs: this.opts.timing.unreported_ttl_seconds * 1000,
      requestTtlMs: this.opts.timing.request_ttl_seconds * 1000,
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
      this.wgIds.set(`${ep.name}/${wg.name}`, this.alloc('workergroup'));
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

  /** Forget an endpoint (its workers must have been destroyed first: that is a scaling move). */
  removeEndpoint(name: string): void {
    const ep = this.mustEndpoint(name);
    this.endpoints.delete(name);
    this.routableChanged(name);
    for (const wg of ep.workergroups.keys()) this.wgIds.delete(`${name}/${wg}`);
    this.log.info({ event: 'endpoint_state', endpoint: name, from: ep.state, to: null, reason: 'deleted' }, 'endpoint deleted');
  }

  addWorkergroup(endpoint: string, wg: WorkergroupConfig): WorkergroupConfig {
    const ep = this.mustEndpoint(endpoint);
    if (ep.workergroups.has(wg.name)) throw new EngineError(409, { name: `workergroup "${wg.name}" already exists` }, 'workergroup exists');
    ep.workergroups.set(wg.name, wg);
    this.wgIds.set(`${endpoint}/${wg.name}`, this.alloc('workergroup'));
    this.log.info({ event: 'workergroup', endpoint, workergroup: wg.name, change: 'created' }, 'workergroup created');
    return wg;
  }

  updateWorkergroup(endpoint: string, name: string, patch: WorkergroupPatch): WorkergroupConfig {
    const ep = this.mustEndpoint(endpoint);
    const wg = this.mustWorkergroup(ep, name);
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

  /** Forget a workergroup (its workers must have been destroyed first). */
  removeWorkergroup(endpoint: string, name: string): void {
    const ep = this.mustEndpoint(endpoint);
    this.mustWorkergroup(ep, name);
    ep.workergroups.delete(name);
    this.wgIds.delete(`${endpoint}/${name}`);
    this.log.info({ event: 'workergroup', endpoint, workergroup: name, change: 'deleted' }, 'workergroup deleted');
  }

  mustWorkergroup(ep: EndpointRuntime, name: string): WorkergroupConfig {
    const wg = ep.workergroups.get(name);
    if (!wg) throw new EngineError(404, { workergroup: `no workergroup "${name}"` }, 'no such workergroup');
    return wg;
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

  mustEndpoint(name: string): EndpointRuntime {
    const ep = this.endpoints.get(name);
    if (!ep) throw new EngineError(404, { endpoint: `no endpoint "${name}"` }, 'no such endpoint');
    return ep;
  }

  // ---------------------------------------------------------------- workers

  /** Workers of an endpoint, destroyed ones included while they are kept. */
  workersOf(endpoint: string): WorkerRecord[] {
    return [...this.workers.values()].filter((w) => w.endpoint === endpoint);
  }

  /**
   * Ready workers of an endpoint that may take new requests (not draining, URL and perf known).
   * The router reads this for every request: it is kept, one array per endpoint, until a worker's
   * routability may have changed (`routableChanged`); reports update its load in place (`reported`).
   * Callers must not change it.
   */
  routable(endpoint: string): readonly RoutableWorker[] {
    return this.routableOf(endpoint).list;
  }

  /** The cached routable set of an endpoint, built when missing, with how many of its workers are starting. */
  routableOf(endpoint: string): RoutableSet {
    let set = this.routableSets.get(endpoint);
    if (set) return set;
    set = { list: [], byId: new Map(), starting: 0 };
    for (const w of this.workers.values()) {
      if (w.endpoint !== endpoint) continue;
      if (w.state === 'starting') set.starting++;
      if (w.state === 'ready' && !w.draining && w.url && w.maxPerf > 0) {
        const rw: RoutableWorker = { id: w.id, url: w.url, perf: w.maxPerf, reportedLoad: w.curLoad, lastReportAt: w.lastReportAt };
        set.list.push(rw);
        set.byId.set(w.id, rw);
      }
    }
    this.routableSets.set(endpoint, set);
    return set;
  }

  /** Something that decides whether workers may take requests changed (state, draining, url, perf, id): rebuild at next use. */
  routableChanged(endpoint?: string): void {
    if (endpoint === undefined) this.routableSets.clear();
    else this.routableSets.delete(endpoint);
  }

  /** A report updated `w`: its load and report time go into the routable set in place. */
  reported(w: WorkerRecord): void {
    this.reportedSince?.add(w.id);
    const rw = this.routableSets.get(w.endpoint)?.byId.get(w.id);
    if (!rw) {
      // Not routable yet: a report may just have made it so (url, perf).
      if (w.state === 'ready' && w.url && w.maxPerf > 0) this.routableChanged(w.endpoint);
      return;
    }
    if (rw.url !== w.url || rw.perf !== w.maxPerf) return this.routableChanged(w.endpoint);
    rw.lastReportAt = w.lastReportAt;
    if (rw.reportedLoad !== w.curLoad) {
      rw.reportedLoad = w.curLoad;
      this.endpoints.get(w.endpoint)?.router.workerChanged(w.id);
    }
  }

  /** No request routed to it is unfinished, and its last report said none is working. */
  idle(w: WorkerRecord): boolean {
    const ep = this.endpoints.get(w.endpoint);
    return (ep?.router.outstanding(w.id) ?? 0) === 0 && w.reqsWorking === 0;
  }

  /** Register a new worker (state `created`) and log its creation. */
  addWorker(rec: WorkerRecord, reason: string): void {
    this.workerEpoch++;
    this.workers.set(rec.id, rec);
    this.logTransition(rec, null, 'created', reason);
  }

  /** The provider chose another id than the one proposed: the record moves to it. */
  rekeyWorker(rec: WorkerRecord, id: number): void {
    if (id === rec.id || this.workers.get(rec.id) !== rec) return;
    this.workerEpoch++;
    this.workers.delete(rec.id);
    rec.id = id;
    this.workers.set(id, rec);
    this.routableChanged(rec.endpoint);
  }

  /** Move a worker to `to` if the move is legal; logs it with its reason and emits it. */
  transition(w: WorkerRecord, to: WorkerState, reason: string): boolean {
    const from = w.state;
    if (from === to || !canTransition(from, to)) {
      if (from !== to) this.log.debug({ event: 'transition_refused', worker: w.id, from, to, reason }, 'illegal transition ignored');
      return false;
    }
    this.workerEpoch++;
    w.state = to;
    w.draining = false;
    w.stateSince = this.clock.now();
    w.stateReason = reason;
    this.routableChanged(w.endpoint);
    this.logTransition(w, from, to, reason);
    const ep = this.endpoints.get(w.endpoint);
    // Sign its url now, off the request path (RSA is the dearest step of a route; cached per url).
    if (to === 'ready' && w.url) ep?.router.presign(w.url);
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
  snapshot(providerKind: string): Record<string, unknown> {
    return {
      now: this.clock.now(),
      provider: providerKind,
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

/** A fresh worker record (state `created`, a new MASTER_TOKEN, nothing measured yet). */
export function newWorkerRecord(f: {
  id: number;
  endpoint: string;
  workergroup: string;
  machineType: string;
  dollarsPerHour: number;
  storageDollarsPerHour: number;
  dlperf: number;
  reason: string;
  now: number;
}): WorkerRecord {
  return {
    id: f.id,
    endpoint: f.endpoint,
    workergroup: f.workergroup,
    machineType: f.machineType,
    typeKey: `${f.workergroup}/${f.machineType}`,
    dollarsPerHour: f.dollarsPerHour,
    storageDollarsPerHour: f.storageDollarsPerHour,
    dlperf: f.dlperf,
    state: 'created',
    stateSince: f.now,
    stateReason: f.reason,
    mtoken: randomBytes(24).toString('hex'),
    url: null,
    createdAt: f.now,
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
}

/** A worker without its token. */
export function workerView(w: WorkerRecord): Record<string, unknown> {
  const { mtoken: _secret, probing: _p, lastReportBusy: _b, benchmarked: _k, ...rest } = w;
  return rest;
}

export function historyKeep(p: EndpointParams): number {
  return Math.max(p.cold_window, p.stable_window, p.panic_window) + 5;
}

export function round(n: number): number {
  return Math.round(n * 100) / 100;
}

export function roundPlan(p: Plan): Record<string, number | boolean> {
  return Object.fromEntries(Object.entries(p).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]));
}

export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
