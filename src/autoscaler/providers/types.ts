import type { Clock } from '../clock.js';
import type { Logger } from '../../common/log.js';
import type { DeleteRequestsBody, Outcome, WorkerStatusInput, WorkerStatusReport } from '../wire.js';

/**
 * The one interface between the engine and whatever runs workers: simulated in-process
 * workers, local processes (on_start.sh), a cloud (the Vast API, Kubernetes).
 *
 * The engine decides; the provider only makes machines exist, run, stop and go away, and says
 * when a machine changed by itself. What happens *inside* a worker (model loaded, benchmark,
 * load) never comes from the provider: the worker reports it over the protocol
 * (`POST {reportAddrs}/worker_status/` with `masterToken`), exactly as on Vast.
 *
 * Contract:
 * - `create` starts an instance that runs the worker with env `CONTAINER_ID` = the returned
 *   `id`, `MASTER_TOKEN` = `spec.masterToken`, `REPORT_ADDR` = `spec.reportAddrs.join(',')`;
 *   it resolves once the instance is requested (not when the model is loaded).
 * - `stop` makes a worker inactive: GPU released, disk (model, benchmark cache) kept, so that
 *   `start` brings it back in seconds; the worker then reports again and the engine marks it ready.
 * - `destroy` ends the worker and removes its disk; it must succeed for an unknown or already
 *   destroyed id (the engine may retry).
 * - Events report changes the provider sees on its own; the engine tolerates duplicates.
 * - Every method may reject; the engine then marks the worker errored (and replaces it).
 */
export interface Provider {
  /** `simulated`, `local`, `vast`, `kubernetes` … */
  readonly kind: string;
  create(spec: WorkerSpec): Promise<WorkerHandle>;
  start(id: number): Promise<void>;
  stop(id: number): Promise<void>;
  destroy(id: number): Promise<void>;
  /** Listen to provider events; returns the unsubscribe function. */
  subscribe(listener: (event: ProviderEvent) => void): () => void;
  /** In-process workers report through this instead of HTTP (the simulated provider). */
  attach?(link: EngineLink): void;
  /** Liveness without the network (the engine otherwise GETs `{url}/healthz`). */
  probe?(id: number): Promise<boolean>;
  /**
   * After a restart of the autoscaler: take back the workers the engine remembers (its journal)
   * and end whatever else the provider finds of an earlier run. Resolves with the ids it still
   * has, and whether each runs. A provider without it cannot re-adopt: the engine errors (and
   * so replaces) every remembered worker.
   */
  adopt?(workers: AdoptSpec[]): Promise<AdoptResult[]>;
  /** End everything the provider started (the engine's close calls it). */
  close(): Promise<void>;
}

/** A remembered worker: its spec again, and the engine's id for it. */
export interface AdoptSpec extends WorkerSpec {
  /** The engine's state says it should be running (created, loading, starting, ready). */
  running: boolean;
}

export interface AdoptResult {
  id: number;
  /** Its processes / instance run now. */
  running: boolean;
  /**
   * The instance is intact but parked (stopped on purpose): it can be started again. A worker the
   * engine remembered as ready then becomes inactive, not errored: the park was made, and only its
   * journal record was lost (the autoscaler was killed between the two).
   */
  stopped?: boolean;
  url?: string;
}

/** What the engine asks a provider to create. */
export interface WorkerSpec {
  /** The CONTAINER_ID the engine proposes; a provider that assigns its own ids returns them in the handle. */
  workerId: number;
  /** MASTER_TOKEN: the worker's reports must carry it (checked by the engine). */
  masterToken: string;
  /** REPORT_ADDR, in order of preference. */
  reportAddrs: string[];
  endpoint: string;
  workergroup: string;
  /** The machine type chosen by the policy (one of the workergroup's `machine_types`). */
  machineType: string;
  /** The workergroup's provider query (Vast search syntax), passed through. */
  searchParams: string;
  /** The workergroup's `launch` settings, passed through (template, image, handler, env …). */
  launch: Record<string, unknown>;
  /** The machine type's declared prices (a cloud provider may use them as a bid ceiling). */
  dollarsPerHour: number;
  storageDollarsPerHour: number;
}

/** A created worker. */
export interface WorkerHandle {
  /** CONTAINER_ID, the id the worker reports with. */
  id: number;
  /** The worker's public URL when the provider knows it before the first report. */
  url?: string;
}

/**
 * Changes the provider observed by itself:
 * - `running`: the instance booted (the engine moves created → loading);
 * - `exited`: the instance ended without being asked (crash, host lost): the worker is errored;
 * - `stopped` / `destroyed`: confirmations of the engine's own requests (informational).
 */
export interface ProviderEvent {
  workerId: number;
  kind: 'running' | 'exited' | 'stopped' | 'destroyed';
  reason?: string;
  url?: string;
}

/** The engine's side of the protocol, for in-process workers: the same code the HTTP routes call. */
export interface EngineLink {
  workerStatus(report: WorkerStatusInput): Outcome;
  deleteRequests(body: DeleteRequestsBody | Record<string, unknown>): Outcome;
  /**
   * The same moves for a message built typed in this process (no network in between): not parsed
   * again, the token compared plainly. Optional: a link without them gets the validated calls.
   */
  workerStatusTrusted?(report: WorkerStatusReport): Outcome;
  deleteRequestsTrusted?(body: DeleteRequestsBody): Outcome;
}

/** What a provider factory gets: its own config section, the clock, a logger and the data dir. */
export interface ProviderContext {
  config: Record<string, unknown>;
  clock: Clock;
  logger: Logger;
  dataDir: string;
}

export type ProviderFactory = (ctx: ProviderContext) => Provider | Promise<Provider>;
