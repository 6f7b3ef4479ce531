import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { Logger } from '../common/log.js';
import type { Clock } from './clock.js';
import type { EngineTiming } from './config.js';
import type { Journal } from './journal.js';
import type { EndpointConfig, EndpointPatch, WorkergroupConfig, WorkergroupPatch } from './params.js';
import type { PerfBook } from './perf-model.js';
import type { MachineChoice, PolicyInput, PolicyOutput } from './policy.js';
import { Protocol } from './protocol.js';
import type { EngineLink, Provider } from './providers/types.js';
import { EngineError, Registry, type EndpointRuntime, type EngineEvents, type WorkerRecord } from './registry.js';
import { Scaler } from './scaler.js';
import { EngineStore, type Restored, type StoreHealth } from './store.js';
import type { RequestEntry } from './router.js';
import type { DeleteRequestsBody, Outcome, RouteBody, WorkerStatusReport } from './wire.js';

/**
 * The engine: one facade over four parts with one job each (as Knative splits autoscaler,
 * activator and reconciler), so the HTTP API, the simulation and tests call one object:
 * - `registry.ts`: endpoints, workergroups, workers, ids: the one owner of the state;
 * - `protocol.ts`: `/route/`, `/worker_status/`, `/delete_requests/`, `/get_endpoint_workers/`;
 * - `scaler.ts`: the tick: policy → moves → provider calls;
 * - `store.ts`: save and restore through the journal.
 * It does no HTTP itself: the server and the simulation call the same methods.
 */

export { EngineError, sameSecret, workerView, type EndpointRuntime, type EngineEvents, type TransitionEvent, type WorkerRecord } from './registry.js';
export { httpProbe } from './scaler.js';

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
  /** `--repair`: start from the intact records even when the id reservation copy is damaged or the journal lost every record. */
  repairStore?: boolean;
}

export class Engine implements EngineLink {
  readonly registry: Registry;
  readonly protocol: Protocol;
  readonly scaler: Scaler;
  readonly store: EngineStore | null;
  readonly endpoints: Map<string, EndpointRuntime>;
  readonly workers: Map<number, WorkerRecord>;
  readonly perf: PerfBook;
  private readonly provider: Provider;
  private closedStore = false;
  private unsubscribe: (() => void) | null = null;

  constructor(opts: EngineOptions) {
    this.provider = opts.provider;
    const key = typeof opts.privateKey === 'string' ? createPrivateKey(opts.privateKey) : opts.privateKey;
    this.registry = new Registry({
      clock: opts.clock,
      logger: opts.logger,
      key,
      timing: opts.timing,
      ...(opts.strictAuth ? { strictAuth: opts.strictAuth } : {}),
      ...(opts.accountKey ? { accountKey: opts.accountKey } : {}),
    });
    this.endpoints = this.registry.endpoints;
    this.workers = this.registry.workers;
    this.perf = this.registry.perf;
    this.store = opts.store ? new EngineStore(this.registry, opts.store, { repair: opts.repairStore ?? false }) : null;
    this.scaler = new Scaler(this.registry, {
      clock: opts.clock,
      provider: opts.provider,
      timing: opts.timing,
      reportAddrs: opts.reportAddrs,
      ...(opts.probe ? { probe: opts.probe } : {}),
      ...(opts.policy ? { policy: opts.policy } : {}),
      // Without a store (the simulation) there is nothing to do after a tick, and nothing is scheduled.
      ...(this.store ? { afterTick: () => this.store?.saveInBackground() } : {}),
    });
    this.protocol = new Protocol(this.registry, {
      finishDrain: (w) => this.scaler.finishDrain(w),
      checkFailedWorker: (id) => this.scaler.checkFailedWorker(id),
    });
    this.unsubscribe = this.provider.subscribe((e) => this.scaler.onProviderEvent(e));
    this.provider.attach?.(this);
  }

  /** Listen to engine events; returns the unsubscribe function. */
  on<K extends keyof EngineEvents>(event: K, listener: (e: EngineEvents[K]) => void): () => void {
    return this.registry.on(event, listener);
  }

  /** Start ticking (policy, expiry, staleness) every `tick_seconds`. */
  start(): void {
    this.scaler.start();
  }

  /** Stop ticking and detach from the provider (the provider is closed by its owner); the state is saved a last time. */
  close(): void {
    this.scaler.stop();
    if (this.store && !this.closedStore) {
      this.store.save(true);
      this.closedStore = true;
    }
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  // ---------------------------------------------------------------- endpoints (registry)

  /** Create an endpoint from its declaration; throws EngineError 409 when the name is taken. */
  addEndpoint(cfg: EndpointConfig): EndpointRuntime {
    return this.registry.addEndpoint(cfg);
  }

  updateEndpoint(name: string, patch: EndpointPatch): EndpointRuntime {
    return this.registry.updateEndpoint(name, patch);
  }

  /** Delete an endpoint: its workers are destroyed, its queued requests dropped. */
  removeEndpoint(name: string): void {
    this.registry.mustEndpoint(name);
    for (const w of this.registry.workersOf(name)) this.scaler.destroyWorker(w, 'endpoint deleted');
    this.registry.removeEndpoint(name);
  }

  addWorkergroup(endpoint: string, wg: WorkergroupConfig): WorkergroupConfig {
    return this.registry.addWorkergroup(endpoint, wg);
  }

  updateWorkergroup(endpoint: string, name: string, patch: WorkergroupPatch): WorkergroupConfig {
    return this.registry.updateWorkergroup(endpoint, name, patch);
  }

  /** Delete a workergroup and destroy its workers. */
  removeWorkergroup(endpoint: string, name: string): void {
    this.registry.mustWorkergroup(this.registry.mustEndpoint(endpoint), name);
    for (const w of this.registry.workersOf(endpoint)) if (w.workergroup === name) this.scaler.destroyWorker(w, 'workergroup deleted');
    this.registry.removeWorkergroup(endpoint, name);
  }

  workergroupId(endpoint: string, workergroup: string): number | null {
    return this.registry.workergroupId(endpoint, workergroup);
  }

  workergroupById(id: number): { endpoint: EndpointRuntime; workergroup: WorkergroupConfig } | null {
    return this.registry.workergroupById(id);
  }

  keyOpens(ep: EndpointRuntime, key: string): boolean {
    return this.registry.keyOpens(ep, key);
  }

  /** `POST /update_workers/`: a rolling update of every worker of the workergroup. Returns how many were marked. */
  updateWorkers(workergroupId: number): number {
    const found = this.registry.workergroupById(workergroupId);
    if (!found) throw new EngineError(404, { workergroup_id: `no workergroup ${workergroupId}` }, 'no such workergroup');
    return this.scaler.markForUpdate(found.endpoint, found.workergroup.name);
  }

  workersOf(endpoint: string): WorkerRecord[] {
    return this.registry.workersOf(endpoint);
  }

  // ---------------------------------------------------------------- protocol

  route(raw: unknown): Outcome {
    return this.protocol.route(raw);
  }

  workerStatus(raw: unknown): Outcome {
    return this.protocol.workerStatus(raw);
  }

  deleteRequests(raw: unknown): Outcome {
    return this.protocol.deleteRequests(raw);
  }

  /** `route` for the in-process simulator (see Protocol.routeTrusted): no parse, no key check, the entry as answer. */
  routeTrusted(ep: EndpointRuntime, body: Pick<RouteBody, 'cost' | 'request_idx' | 'replay_timeout'>): RequestEntry | Outcome {
    return this.protocol.routeTrusted(ep, body);
  }

  workerStatusTrusted(report: WorkerStatusReport): Outcome {
    return this.protocol.workerStatusTrusted(report);
  }

  deleteRequestsTrusted(body: DeleteRequestsBody): Outcome {
    return this.protocol.deleteRequestsTrusted(body);
  }

  endpointWorkers(raw: unknown): Outcome {
    return this.protocol.endpointWorkers(raw);
  }

  // ---------------------------------------------------------------- scaling

  /** One engine step (see Scaler.tick), then the state is saved (before this returns). */
  tick(): void {
    this.scaler.tick();
  }

  machinesOf(ep: EndpointRuntime): MachineChoice[] {
    return this.scaler.machinesOf(ep);
  }

  /** After restore(): hand the remembered workers back to the provider. */
  adoptWorkers(): Promise<void> {
    return this.scaler.adoptWorkers();
  }

  // ---------------------------------------------------------------- persistence

  /** Write what changed since the last save (see EngineStore.save). */
  save(final = false): void {
    this.store?.save(final);
  }

  /** Take back an earlier run's state, before the config's endpoints are added. */
  restore(): Restored {
    return this.store ? this.store.restore() : { endpoints: 0, workers: 0, requests: 0 };
  }

  /** The persistence's health (null without a store): /healthz, the dashboard and /metrics show it. */
  storeHealth(): StoreHealth | null {
    return this.store?.health() ?? null;
  }

  // ---------------------------------------------------------------- views

  /** A JSON view of everything (no secrets): for the admin API and dashboards. */
  snapshot(): Record<string, unknown> {
    return this.registry.snapshot(this.provider.kind);
  }

  endpointView(ep: EndpointRuntime, withKey = false): Record<string, unknown> {
    return this.registry.endpointView(ep, withKey);
  }
}
