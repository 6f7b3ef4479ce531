import type { Clock, TimerId } from '../clock.js';
import type { WorkerStatusReport } from '../wire.js';
import type { EngineLink, Provider, ProviderEvent, WorkerHandle, WorkerSpec } from './types.js';

/**
 * Simulated workers, in process: each behaves like an instance running the worker beside a
 * model: it boots, loads for `load_time`, benchmarks (its true perf, with noise), serves
 * requests one at a time in FIFO order at its true perf, and reports to the engine with the
 * PyWorker cadence (every second when something changed, else every 10 s; `/delete_requests/`
 * every second). It runs on the engine's clock, so it works in real time and on a FakeClock.
 *
 * Faults: a load fails with probability `failure_rate` (the worker reports `error_msg`); a
 * running worker dies silently at rate `crash_rate_per_hour` (reports stop, `probe` says dead).
 * Billing follows the instance: GPU price from creation to stop/destroy (dead instances too,
 * until destroyed), storage price while stopped.
 */

/** How one machine type behaves in the simulation. */
export interface SimMachine {
  /** True perf, load/s. */
  perf: number;
  /** Seconds from creation to the instance running. */
  boot_time: number;
  /** Seconds from running to the model loaded and benchmarked. */
  load_time: number;
  /** Seconds from `start` of a stopped worker to ready again. */
  start_time: number;
  /** Probability a load fails. */
  failure_rate: number;
  /** Silent deaths per hour of running. */
  crash_rate_per_hour: number;
  /** Benchmark error: max_perf = perf × (1 ± perf_noise). */
  perf_noise: number;
}

export const DEFAULT_SIM_MACHINE: SimMachine = {
  perf: 100,
  boot_time: 5,
  load_time: 60,
  start_time: 10,
  failure_rate: 0,
  crash_rate_per_hour: 0,
  perf_noise: 0.05,
};

export interface SimulatedProviderOptions {
  clock: Clock;
  /** Behaviour per machine type name; unknown names use `defaults`. */
  machines?: Record<string, Partial<SimMachine>>;
  defaults?: Partial<SimMachine>;
  /** Seed of the deterministic random source. */
  seed?: number;
  /** The worker's own max_queue_time (s) above which it answers 429 (PyWorker default 30). */
  workerMaxQueueTime?: number;
  /** Base of the fake worker URLs (never contacted: the probe is in process). */
  urlBase?: string;
  /**
   * Send reports through the engine's validated entry points (parsed as network input, token
   * compared in constant time) even when the link offers the trusted ones. Default false: the
   * workers are in this process, so their typed reports skip the parse (a tenth of a ×100 run).
   */
  validateReports?: boolean;
}

type InstanceState = 'booting' | 'loading' | 'serving' | 'failed' | 'stopped' | 'dead' | 'destroyed';

/** A request given to a simulated worker. */
export interface SimJob {
  idx: number;
  workload: number;
  /** Called when the model starts on it. */
  onStart?: (at: number) => void;
  /** Called once: served, or lost (worker stopped, destroyed or dead). */
  onDone?: (at: number, outcome: 'served' | 'lost') => void;
}

interface Instance {
  id: number;
  spec: WorkerSpec;
  m: SimMachine;
  state: InstanceState;
  /** Bumped on every stop/start/destroy: timers of an older epoch do nothing. */
  epoch: number;
  bootedAt: number;
  loadtime: number;
  benchPerf: number;
  errorMsg: string;
  queue: SimJob[];
  queuedLoad: number;
  busy: SimJob | null;
  received: number;
  served: number;
  rejected: number;
  receivedIdxs: number;
  deletingOk: number[];
  deletingFail: number[];
  changed: boolean;
  lastReportAt: number;
  reportTimer: TimerId | null;
  gpuSince: number | null;
  storageSince: number | null;
  gpuMs: number;
  storageMs: number;
  /** Billed GPU time split: in the serving state, and with a request on the model (for the cost breakdown). */
  servingSince: number | null;
  servingMs: number;
  busySince: number | null;
  busyMs: number;
  /** Running ms left before this instance dies silently (its own draws; null: none drawn yet). */
  crashLeftMs: number | null;
  /** When the current running period started counting toward the death (null: not running). */
  crashArmedAt: number | null;
  /** This instance's own random source for its deaths (seeded by the provider's seed and its id). */
  crashRandom: (() => number) | null;
}

/** Billing of the simulated fleet. */
export interface SimBilling {
  gpuHours: number;
  gpuDollars: number;
  storageHours: number;
  storageDollars: number;
  dollars: number;
  /**
   * Where the GPU time went: `working` (a request on the model), `idle` (serving, nothing to do),
   * `notServing` (billed but unable to serve: booting, loading, starting from inactive, failed, dead).
   */
  breakdown: Record<'working' | 'idle' | 'notServing', { hours: number; dollars: number }>;
}

/** A small deterministic PRNG (mulberry32), shared with model-sim. */
import { seededRandom } from '../../common/random.js';
export { seededRandom };

/** A 32-bit seed for one instance's own stream, from the provider's seed and the instance id. */
function mixSeed(seed: number, id: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x85ebca6b, 0xc2b2ae35) ^ Math.imul(id >>> 0, 0x9e3779b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  return (h ^ (h >>> 15)) >>> 0;
}

export class SimulatedProvider implements Provider {
  readonly kind = 'simulated';
  private instances = new Map<number, Instance>();
  private listeners = new Set<(e: ProviderEvent) => void>();
  private link: EngineLink | null = null;
  private random: () => number;
  private clock: Clock;
  private nextId = 1;

  constructor(private opts: SimulatedProviderOptions) {
    this.clock = opts.clock;
    this.random = seededRandom(opts.seed ?? 1);
  }

  attach(link: EngineLink): void {
    this.link = link;
  }

  subscribe(listener: (e: ProviderEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ProviderEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** The behaviour of a machine type. */
  machine(name: string): SimMachine {
    return { ...DEFAULT_SIM_MACHINE, ...this.opts.defaults, ...this.opts.machines?.[name] };
  }

  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    const id = this.instances.has(spec.workerId) ? Math.max(this.nextId, ...this.instances.keys()) + 1 : spec.workerId;
    this.nextId = Math.max(this.nextId, id + 1);
    const now = this.clock.now();
    const inst: Instance = {
      id,
      spec,
      m: this.machine(spec.machineType),
      state: 'booting',
      epoch: 0,
      bootedAt: now,
      loadtime: 0,
      benchPerf: 0,
      errorMsg: '',
      queue: [],
      queuedLoad: 0,
      busy: null,
      received: 0,
      served: 0,
      rejected: 0,
      receivedIdxs: 0,
      deletingOk: [],
      deletingFail: [],
      changed: false,
      lastReportAt: now,
      reportTimer: null,
      gpuSince: now,
      storageSince: null,
      gpuMs: 0,
      storageMs: 0,
      servingSince: null,
      servingMs: 0,
      busySince: null,
      busyMs: 0,
      crashLeftMs: null,
      crashArmedAt: null,
      crashRandom: null,
    };
    this.instances.set(id, inst);
    this.boot(inst, inst.m.boot_time, inst.m.load_time, true);
    this.armCrash(inst);
    return { id, url: this.url(id) };
  }

  /**
   * Silent deaths come at `crash_rate_per_hour` per hour of running, counted over every running
   * period of the instance: a stop pauses its clock and a start resumes it, so stopping a worker
   * neither spares it nor re-rolls it. Each instance draws from its own stream (the provider's
   * seed and its id), so two policies that run the same worker for the same hours meet the same
   * death, and a death never shifts the load failures or benchmark noise of the other workers.
   */
  private armCrash(inst: Instance): void {
    const rate = inst.m.crash_rate_per_hour;
    if (!(rate > 0)) return;
    if (inst.crashLeftMs === null) {
      inst.crashRandom ??= seededRandom(mixSeed(this.opts.seed ?? 1, inst.id));
      inst.crashLeftMs = (-Math.log(1 - inst.crashRandom()) / rate) * 3_600_000;
    }
    const epoch = inst.epoch;
    inst.crashArmedAt = this.clock.now();
    this.clock.setTimeout(() => {
      if (inst.epoch !== epoch || inst.state === 'destroyed' || inst.state === 'stopped' || inst.state === 'dead') return;
      inst.crashLeftMs = null;
      inst.crashArmedAt = null;
      this.die(inst);
    }, inst.crashLeftMs);
  }

  /** A running period ends (stop, destroy): the time it ran comes off the instance's death clock. */
  private pauseCrash(inst: Instance): void {
    if (inst.crashArmedAt === null || inst.crashLeftMs === null) return;
    inst.crashLeftMs = Math.max(0, inst.crashLeftMs - (this.clock.now() - inst.crashArmedAt));
    inst.crashArmedAt = null;
  }

  private url(id: number): string {
    return `${this.opts.urlBase ?? 'http://sim-worker.invalid'}/${id}`;
  }

  /** Boot (after `bootS`) then load (after `loadS` more): shared by create and start. */
  private boot(inst: Instance, bootS: number, loadS: number, fresh: boolean): void {
    const epoch = inst.epoch;
    const started = this.clock.now();
    this.clock.setTimeout(() => {
      if (inst.epoch !== epoch || inst.state !== 'booting') return;
      inst.state = 'loading';
      this.emit({ workerId: inst.id, kind: 'running', url: this.url(inst.id), reason: fresh ? 'instance booted' : 'instance restarted' });
      this.startReporting(inst);
      this.clock.setTimeout(() => {
        if (inst.epoch !== epoch || inst.state !== 'loading') return;
        if (fresh && this.random() < inst.m.failure_rate) {
          inst.state = 'failed';
          inst.errorMsg = 'simulated: model failed to load';
          this.report(inst);
          return;
        }
        if (fresh) inst.benchPerf = inst.m.perf * (1 + inst.m.perf_noise * (2 * this.random() - 1));
        inst.loadtime = (this.clock.now() - started) / 1000;
        inst.state = 'serving';
        inst.servingSince = this.clock.now();
        this.report(inst);
      }, loadS * 1000);
    }, bootS * 1000);
  }

  async start(id: number): Promise<void> {
    const inst = this.mustGet(id);
    if (inst.state !== 'stopped') throw new Error(`simulated worker ${id} is ${inst.state}, not stopped`);
    this.settleBilling(inst);
    inst.epoch++;
    inst.gpuSince = this.clock.now();
    inst.storageSince = null;
    inst.state = 'booting';
    inst.loadtime = 0;
    // A restart reloads the model from the kept disk: no boot wait beyond start_time.
    this.boot(inst, 0, inst.m.start_time, false);
    this.armCrash(inst);
  }

  async stop(id: number): Promise<void> {
    const inst = this.mustGet(id);
    if (inst.state === 'stopped' || inst.state === 'destroyed') return;
    this.halt(inst);
    inst.state = 'stopped';
    inst.storageSince = this.clock.now();
    this.emit({ workerId: id, kind: 'stopped' });
  }

  async destroy(id: number): Promise<void> {
    const inst = this.instances.get(id);
    if (!inst || inst.state === 'destroyed') return;
    this.halt(inst);
    inst.state = 'destroyed';
    this.emit({ workerId: id, kind: 'destroyed' });
  }

  async probe(id: number): Promise<boolean> {
    const inst = this.instances.get(id);
    return !!inst && inst.state !== 'dead' && inst.state !== 'destroyed' && inst.state !== 'stopped';
  }

  async close(): Promise<void> {
    for (const inst of this.instances.values()) if (inst.state !== 'destroyed') this.halt(inst);
  }

  private mustGet(id: number): Instance {
    const inst = this.instances.get(id);
    if (!inst || inst.state === 'destroyed') throw new Error(`no simulated worker ${id}`);
    return inst;
  }

  /** End billing periods, timers and jobs: before stop, destroy and close. */
  private halt(inst: Instance): void {
    this.pauseCrash(inst);
    this.endServing(inst);
    inst.gpuSince = null;
    inst.storageSince = null;
    inst.epoch++;
    if (inst.reportTimer !== null) this.clock.clearTimer(inst.reportTimer);
    inst.reportTimer = null;
    this.loseJobs(inst);
  }

  private die(inst: Instance): void {
    this.endServing(inst);
    inst.state = 'dead';
    inst.epoch++;
    if (inst.reportTimer !== null) this.clock.clearTimer(inst.reportTimer);
    inst.reportTimer = null;
    // Its jobs never finish; they are lost when the engine destroys it.
  }

  private loseJobs(inst: Instance): void {
    const now = this.clock.now();
    const jobs = [...(inst.busy ? [inst.busy] : []), ...inst.queue];
    inst.busy = null;
    inst.queue = [];
    inst.queuedLoad = 0;
    for (const j of jobs) j.onDone?.(now, 'lost');
  }

  private settleBilling(inst: Instance): void {
    const now = this.clock.now();
    if (inst.gpuSince !== null) inst.gpuMs += now - inst.gpuSince;
    if (inst.storageSince !== null) inst.storageMs += now - inst.storageSince;
    if (inst.servingSince !== null) inst.servingMs += now - inst.servingSince;
    if (inst.busySince !== null) inst.busyMs += now - inst.busySince;
    inst.gpuSince = inst.gpuSince !== null ? now : null;
    inst.storageSince = inst.storageSince !== null ? now : null;
    inst.servingSince = inst.servingSince !== null ? now : null;
    inst.busySince = inst.busySince !== null ? now : null;
  }

  /** The instance no longer serves (stopped, destroyed, dead): its serving and busy periods end. */
  private endServing(inst: Instance): void {
    this.settleBilling(inst);
    inst.servingSince = null;
    inst.busySince = null;
  }

  /**
   * A client forwards a routed request to worker `id`. Returns `rejected` when the worker's
   * expected queue time is above its max_queue_time (the 429 of PROTOCOL §2), `unavailable`
   * when it does not serve (stopped, destroyed, loading).
   */
  submit(id: number, job: SimJob): 'accepted' | 'rejected' | 'unavailable' {
    const inst = this.instances.get(id);
    if (!inst) return 'unavailable';
    if (inst.state === 'dead') {
      // A dead machine swallows the request; the client only finds out by its own timeout.
      inst.queue.push(job);
      return 'accepted';
    }
    if (inst.state !== 'serving') return 'unavailable';
    const limit = this.opts.workerMaxQueueTime ?? 30;
    const wait = inst.queuedLoad / Math.max(inst.benchPerf, 1e-5);
    inst.receivedIdxs++;
    if (wait > limit) {
      inst.rejected += job.workload;
      inst.deletingFail.push(job.idx);
      inst.changed = true;
      return 'rejected';
    }
    inst.received += job.workload;
    inst.queue.push(job);
    inst.queuedLoad += job.workload;
    inst.changed = true;
    if (!inst.busy) this.serveNext(inst);
    return 'accepted';
  }

  private serveNext(inst: Instance): void {
    const job = inst.queue.shift();
    if (!job) {
      if (inst.busySince !== null) inst.busyMs += this.clock.now() - inst.busySince;
      inst.busySince = null;
      inst.busy = null;
      inst.queuedLoad = 0; // no float residue of the subtractions: an idle worker reports exactly 0
      return;
    }
    inst.busy = job;
    const now = this.clock.now();
    if (inst.busySince === null && inst.servingSince !== null) inst.busySince = now;
    job.onStart?.(now);
    const epoch = inst.epoch;
    this.clock.setTimeout(
      () => {
        if (inst.epoch !== epoch || inst.busy !== job) return;
        inst.served += job.workload;
        inst.queuedLoad = Math.max(0, inst.queuedLoad - job.workload);
        inst.deletingOk.push(job.idx);
        inst.changed = true;
        job.onDone?.(this.clock.now(), 'served');
        this.serveNext(inst);
      },
      (job.workload / inst.m.perf) * 1000,
    );
  }

  private startReporting(inst: Instance): void {
    if (inst.reportTimer !== null) this.clock.clearTimer(inst.reportTimer);
    inst.lastReportAt = this.clock.now();
    this.report(inst);
    inst.reportTimer = this.clock.setInterval(() => this.everySecond(inst), 1000);
  }

  /** PyWorker's cadence: reports when changed (or every 10 s; every 10 s while loading), deletes every second. */
  private everySecond(inst: Instance): void {
    const now = this.clock.now();
    const since = now - inst.lastReportAt;
    if (inst.state === 'serving' ? inst.changed || since >= 10_000 : since >= 10_000) this.report(inst);
    if (!this.link) return;
    if (inst.deletingOk.length > 0 && this.deleteRequests(inst, inst.deletingOk, true)) inst.deletingOk = [];
    if (inst.deletingFail.length > 0 && this.deleteRequests(inst, inst.deletingFail, false)) inst.deletingFail = [];
  }

  /** One `/delete_requests/`; true when the engine took it (the list is then the engine's to read, and replaced here). */
  private deleteRequests(inst: Instance, request_idxs: number[], success: boolean): boolean {
    const link = this.link!;
    const body = { worker_id: inst.id, mtoken: inst.spec.masterToken, request_idxs, success };
    const res = link.deleteRequestsTrusted && !this.opts.validateReports ? link.deleteRequestsTrusted(body) : link.deleteRequests(body);
    return res.status < 300;
  }

  private report(inst: Instance): void {
    const link = this.link;
    if (!link) return;
    const working: number[] = [];
    if (inst.busy) working.push(inst.busy.idx);
    for (const j of inst.queue) working.push(j.idx);
    // Typed as the schema gives a report (every field present, error_msg a string), so both paths read the same.
    const report: WorkerStatusReport = {
      id: inst.id,
      mtoken: inst.spec.masterToken,
      version: 'simulated',
      loadtime: inst.state === 'serving' ? inst.loadtime : 0,
      cur_load: inst.queuedLoad,
      rej_load: inst.rejected,
      new_load: inst.received,
      error_msg: inst.errorMsg,
      max_perf: inst.benchPerf,
      cur_perf: inst.served,
      cur_capacity: 0,
      max_capacity: 0,
      num_requests_working: working.length,
      num_requests_recieved: inst.receivedIdxs,
      additional_disk_usage: 0,
      working_request_idxs: working,
      url: this.url(inst.id),
    };
    const res = link.workerStatusTrusted && !this.opts.validateReports ? link.workerStatusTrusted(report) : link.workerStatus(report);
    inst.lastReportAt = this.clock.now();
    if (res.status < 300) {
      inst.received = 0;
      inst.served = 0;
      inst.rejected = 0;
      inst.receivedIdxs = 0;
      inst.changed = false;
    }
  }

  /** GPU and storage time and dollars of every instance so far. */
  billing(): SimBilling {
    const now = this.clock.now();
    let gpuMs = 0;
    let storageMs = 0;
    let gpuDollars = 0;
    let storageDollars = 0;
    const part = () => ({ hours: 0, dollars: 0 });
    const breakdown = { working: part(), idle: part(), notServing: part() };
    const add = (to: { hours: number; dollars: number }, ms: number, perHour: number) => {
      to.hours += ms / 3_600_000;
      to.dollars += (ms / 3_600_000) * perHour;
    };
    const upTo = (acc: number, since: number | null) => acc + (since !== null ? now - since : 0);
    for (const inst of this.instances.values()) {
      const g = upTo(inst.gpuMs, inst.gpuSince);
      const s = upTo(inst.storageMs, inst.storageSince);
      const serving = Math.min(g, upTo(inst.servingMs, inst.servingSince));
      const busy = Math.min(serving, upTo(inst.busyMs, inst.busySince));
      gpuMs += g;
      storageMs += s;
      gpuDollars += (g / 3_600_000) * inst.spec.dollarsPerHour;
      storageDollars += (s / 3_600_000) * inst.spec.storageDollarsPerHour;
      add(breakdown.working, busy, inst.spec.dollarsPerHour);
      add(breakdown.idle, serving - busy, inst.spec.dollarsPerHour);
      add(breakdown.notServing, g - serving, inst.spec.dollarsPerHour);
    }
    return {
      gpuHours: gpuMs / 3_600_000,
      gpuDollars,
      storageHours: storageMs / 3_600_000,
      storageDollars,
      dollars: gpuDollars + storageDollars,
      breakdown,
    };
  }

  /** Reset billing so it counts from now (the simulation's warm-up ends). */
  resetBilling(): void {
    const now = this.clock.now();
    for (const inst of this.instances.values()) {
      inst.gpuMs = 0;
      inst.storageMs = 0;
      inst.servingMs = 0;
      inst.busyMs = 0;
      if (inst.gpuSince !== null) inst.gpuSince = now;
      if (inst.storageSince !== null) inst.storageSince = now;
      if (inst.servingSince !== null) inst.servingSince = now;
      if (inst.busySince !== null) inst.busySince = now;
    }
  }

  /** The true perf of a worker (for tests and the simulation report). */
  truePerf(id: number): number | undefined {
    return this.instances.get(id)?.m.perf;
  }
}
