import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { parseProviderSection } from './section.js';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { z } from 'zod';
import type { Logger } from '../../common/log.js';
import { packagePath } from '../../common/package-root.js';
import { sleep } from '../../common/util.js';
import { fieldErrors } from '../params.js';
import { cmdline, freePort, portFree, procStart, readPidFile, same, signalGroup, type ProcId } from './local-procs.js';
import type { AdoptResult, AdoptSpec, Provider, ProviderContext, ProviderEvent, WorkerHandle, WorkerSpec } from './types.js';

/**
 * The local provider: every worker is the repo's `on_start.sh` run as a process on this machine,
 * exactly as a GPU instance runs it at boot — it starts the model server (model-sim unless the
 * launch env sets MODEL_CMD) and the worker, supervises both and reports failures. Each worker
 * gets its own free ports (worker, WORKER_HTTP_PORT, model), its own workspace under
 * `<data dir>/workers/worker-<id>`, `CONTAINER_ID`, `MASTER_TOKEN` and `REPORT_ADDR` pointing
 * at the engine. `UNSECURED` is never passed: workers fetch `/pubkey/` and verify every route
 * signature for real.
 *
 * How the instance life maps onto processes:
 * - create: spawn `bash on_start.sh` in a fresh workspace (its own process group); `running` is
 *   emitted once it is spawned.
 * - stop (inactive): SIGTERM to on_start.sh, which drains the worker, then stops the model; the
 *   workspace stays (model log, `.has_benchmark`), like a stopped instance's disk.
 * - start: on_start.sh again in the same workspace: a second boot, which rotates the model log
 *   and finds the cached benchmark, so the worker is ready again within seconds.
 * - destroy: SIGTERM, then SIGKILL to every process group the run made (script, model, worker)
 *   after `kill_timeout_seconds`, and the workspace is removed.
 * - on_start.sh ending without being asked (a process died, the supervisor gave up): `exited`,
 *   and whatever it left running is ended.
 *
 * Guarantees: no process it started outlives `close()` (barring SIGKILL of the autoscaler
 * itself; the next start on the same data dir ends such leftovers); a pid is signalled only while
 * it names the process first seen under it.
 */

/** The `provider:` section for `kind: local`. */
export const localConfigSchema = z.strictObject({
  kind: z.literal('local'),
  /** The on-start script (default: this checkout's on_start.sh). */
  script: z.string().min(1).optional(),
  /** Where workspaces live (default `<data dir>/workers`). */
  workspaces_dir: z.string().min(1).optional(),
  /** Interface the worker and model listen on, and the worker's public address (loopback). */
  host: z.string().min(1).default('127.0.0.1'),
  /** Extra environment for every worker (a workergroup's `launch.env` wins). */
  env: z.record(z.string(), z.string()).default({}),
  /** How long a stop may take (the worker drains for up to DRAIN_TIMEOUT, 30 s) before SIGKILL. */
  stop_timeout_seconds: z.number().gt(0).default(45),
  /** How long destroy and close wait after SIGTERM before SIGKILL. */
  kill_timeout_seconds: z.number().gt(0).default(10),
  /** Keep workspaces when the provider closes (they are always removed by destroy). */
  keep_workspaces: z.boolean().default(false),
  /**
   * Leave the workers running when the autoscaler stops, and take them back when it starts again
   * on the same data dir (with `persist: true`, the default, the engine remembers them): a
   * restart keeps the fleet. Off by default: a stopped autoscaler leaves no process behind.
   */
  keep_workers_on_close: z.boolean().default(false),
});
export type LocalConfig = z.output<typeof localConfigSchema>;

/** A workergroup's `launch` settings as the local provider reads them (other keys are ignored). */
export const localLaunchSchema = z.looseObject({
  /** BACKEND: the worker's handler (default openai). */
  backend: z.string().min(1).optional(),
  /** Environment of this workergroup's workers, e.g. MODEL_SIM_ARGS, MODEL_CMD, BENCHMARK_MAX_TOKENS. */
  env: z.record(z.string(), z.string()).optional(),
});

/** Variables taken from the autoscaler's own environment; nothing else leaks (no admin key). */
const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'NODE_EXTRA_CA_CERTS', 'LOG_LEVEL'];
/** Pid files on_start.sh writes into the workspace. */
const PID_FILES = ['.model.pid', '.worker.pid'] as const;
const SUPERVISOR_PID_FILE = '.on_start.pid';
/** Ports of the workspace's worker, written at each spawn, read when a restarted autoscaler adopts it. */
const INSTANCE_FILE = '.instance.json';
const LOCK_FILE = '.provider.lock';
/** Workspaces directories locked by a provider of this process. */
const lockedHere = new Set<string>();

interface Ports {
  worker: number;
  http: number;
  model: number;
}

/** One run of on_start.sh. */
interface Run {
  script: ProcId;
  /** Model and worker, from the pid files (their own sessions, so not in the script's group). */
  children: Map<string, ProcId>;
  done: boolean;
  exit: { code: number | null; signal: string | null } | null;
  exited: Promise<void>;
  /** The provider ended it: its exit is not an `exited` event. */
  asked: boolean;
  termSent: boolean;
  /** When SIGKILL follows (ms epoch); the earliest caller's deadline wins. */
  deadline: number;
  pidTimer: NodeJS.Timeout;
  /** The spawned process, when this provider spawned it (not when adopted). */
  child?: { unref(): void };
}

interface Instance {
  id: number;
  spec: WorkerSpec;
  launch: z.output<typeof localLaunchSchema>;
  dir: string;
  ports: Ports;
  run: Run | null;
  stopped: boolean;
  destroyed: boolean;
  /** stop/start of one instance run one after the other. */
  chain: Promise<unknown>;
}

export interface LocalProviderOptions {
  config: LocalConfig;
  dataDir: string;
  logger: Logger;
}

export class LocalProvider implements Provider {
  readonly kind = 'local';
  readonly script: string;
  readonly workspacesDir: string;
  private readonly cfg: LocalConfig;
  private readonly log: Logger;
  private readonly instances = new Map<number, Instance>();
  private readonly listeners = new Set<(e: ProviderEvent) => void>();
  private closed = false;
  private closing: Promise<void> | null = null;
  private warnedUnsecured = false;
  /** Last resort if this process exits without close() (a crash): no worker is left behind (unless kept on purpose). */
  private readonly onProcessExit = () => {
    if (!this.cfg.keep_workers_on_close) this.killAllNow();
  };

  constructor(opts: LocalProviderOptions) {
    this.cfg = opts.config;
    this.log = opts.logger;
    this.script = resolve(opts.config.script ?? defaultScript());
    if (!existsSync(this.script)) throw new Error(`provider.script: ${this.script} does not exist`);
    this.workspacesDir = resolve(opts.config.workspaces_dir ?? join(opts.dataDir, 'workers'));
    mkdirSync(this.workspacesDir, { recursive: true });
    this.lock();
    // Kept workers wait for adopt(), which takes back the remembered ones and reaps the rest.
    if (!this.cfg.keep_workers_on_close) this.reapLeftovers();
    process.on('exit', this.onProcessExit);
  }

  subscribe(listener: (e: ProviderEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ProviderEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Ports of a worker (tests, the demo). */
  portsOf(id: number): Ports | undefined {
    const inst = this.instances.get(id);
    return inst && { ...inst.ports };
  }

  /** The workspace of a worker. */
  workspaceOf(id: number): string | undefined {
    return this.instances.get(id)?.dir;
  }

  /** Pids of a worker's current run: on_start.sh, then the model and the worker once known. */
  pidsOf(id: number): number[] {
    const run = this.instances.get(id)?.run;
    if (!run) return [];
    this.collectChildren(this.instances.get(id)!, run);
    return [run.script.pid, ...[...run.children.values()].map((c) => c.pid)];
  }

  /** Every pid of every run this provider has going now. */
  allPids(): number[] {
    return [...this.instances.keys()].flatMap((id) => this.pidsOf(id));
  }

  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    if (this.closed) throw new Error('local provider is closed');
    const launch = localLaunchSchema.safeParse(spec.launch ?? {});
    if (!launch.success) {
      const fields = fieldErrors(launch.error, 'launch');
      throw new Error(
        `invalid launch settings: ${Object.entries(fields)
          .map(([k, v]) => `${k}: ${v}`)
          .join('; ')}`,
      );
    }
    const id = this.instances.has(spec.workerId) ? Math.max(...this.instances.keys()) + 1 : spec.workerId;
    const dir = join(this.workspacesDir, `worker-${id}`);
    // Registered before the first await, so a destroy that comes while ports are chosen finds it.
    const inst: Instance = {
      id,
      spec,
      launch: launch.data,
      dir,
      ports: { worker: 0, http: 0, model: 0 },
      run: null,
      stopped: false,
      destroyed: false,
      chain: Promise.resolve(),
    };
    this.instances.set(id, inst);
    reapWorkspace(dir);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    await this.serially(inst, async () => {
      const taken = this.takenPorts();
      for (const k of ['worker', 'http', 'model'] as const) {
        inst.ports[k] = await freePort(this.cfg.host, taken);
        taken.add(inst.ports[k]);
      }
      if (inst.destroyed || this.closed) throw new Error(`worker ${id} was destroyed before it started`);
      await this.spawn(inst);
    }).catch((err: unknown) => {
      if (!inst.destroyed) {
        this.instances.delete(id);
        rmSync(dir, { recursive: true, force: true });
      }
      throw err;
    });
    const url = this.urlOf(inst);
    setImmediate(() => this.emit({ workerId: id, kind: 'running', reason: 'on_start.sh started', url }));
    return { id, url };
  }

  start(id: number): Promise<void> {
    const inst = this.instances.get(id);
    if (!inst) return Promise.reject(new Error(`no local worker ${id}`));
    return this.serially(inst, async () => {
      if (inst.destroyed || this.closed) throw new Error(`worker ${id} is destroyed`);
      if (inst.run && !inst.run.done) return;
      await this.refreshPorts(inst);
      if (inst.destroyed || this.closed) throw new Error(`worker ${id} is destroyed`);
      inst.stopped = false;
      await this.spawn(inst);
      this.emit({ workerId: id, kind: 'running', reason: 'on_start.sh started again in its workspace', url: this.urlOf(inst) });
    });
  }

  stop(id: number): Promise<void> {
    const inst = this.instances.get(id);
    if (!inst) return Promise.reject(new Error(`no local worker ${id}`));
    return this.serially(inst, async () => {
      if (inst.destroyed) throw new Error(`worker ${id} is destroyed`);
      inst.stopped = true;
      const run = inst.run;
      if (run) await this.endRun(inst, run, this.cfg.stop_timeout_seconds * 1000);
      this.log.info({ event: 'local_worker', worker: id, op: 'stopped', workspace: inst.dir }, 'local worker stopped (workspace kept)');
      this.emit({ workerId: id, kind: 'stopped', reason: 'on_start.sh ended; workspace kept' });
    });
  }

  async destroy(id: number): Promise<void> {
    const inst = this.instances.get(id);
    if (!inst || inst.destroyed) return;
    inst.destroyed = true;
    if (inst.run) await this.endRun(inst, inst.run, this.cfg.kill_timeout_seconds * 1000);
    await inst.chain.catch(() => undefined);
    if (inst.run) await this.endRun(inst, inst.run, this.cfg.kill_timeout_seconds * 1000);
    rmSync(inst.dir, { recursive: true, force: true });
    this.instances.delete(id);
    this.log.info({ event: 'local_worker', worker: id, op: 'destroyed' }, 'local worker destroyed (processes ended, workspace removed)');
    this.emit({ workerId: id, kind: 'destroyed' });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      if (this.cfg.keep_workers_on_close && !this.endingAll) {
        // Left running for the next autoscaler on this data dir (adopt()).
        for (const inst of this.instances.values()) {
          if (!inst.run) continue;
          clearInterval(inst.run.pidTimer);
          inst.run.asked = true; // its exit, if any, is the next autoscaler's business
          inst.run.child?.unref();
        }
        this.log.info({ event: 'local_workers_kept', workers: [...this.instances.keys()] }, 'local workers left running for the next start');
        this.instances.clear();
        this.unlock();
        process.off('exit', this.onProcessExit);
        return;
      }
      const graceMs = this.cfg.kill_timeout_seconds * 1000;
      await Promise.all(
        [...this.instances.values()].map(async (inst) => {
          inst.destroyed = true;
          if (inst.run) await this.endRun(inst, inst.run, graceMs);
          await inst.chain.catch(() => undefined);
          if (inst.run) await this.endRun(inst, inst.run, graceMs);
          if (!this.cfg.keep_workspaces) rmSync(inst.dir, { recursive: true, force: true });
        }),
      );
      this.instances.clear();
      this.unlock();
      process.off('exit', this.onProcessExit);
    })();
    return this.closing;
  }

  /** close(), ending every worker even when `keep_workers_on_close` is set. */
  endAll(): Promise<void> {
    this.endingAll = true;
    return this.close();
  }

  private endingAll = false;

  /**
   * Take back the workers a restarted engine remembers: their workspaces, ports and (when still
   * running) their processes, watched from now on as if spawned here. Workspaces nobody
   * remembers are ended and removed, as at a start without keep_workers_on_close.
   */
  async adopt(specs: AdoptSpec[]): Promise<AdoptResult[]> {
    const wanted = new Map(specs.map((s) => [s.workerId, s]));
    const out: AdoptResult[] = [];
    for (const name of readdirSync(this.workspacesDir)) {
      const m = /^worker-(\d+)$/.exec(name);
      if (!m) continue;
      const id = Number(m[1]);
      const dir = join(this.workspacesDir, name);
      const spec = wanted.get(id);
      const ports = spec ? readInstanceFile(dir) : null;
      if (!spec || !ports || this.instances.has(id)) {
        const killed = reapWorkspace(dir);
        if (killed > 0)
          this.log.warn({ event: 'local_worker', op: 'reaped', workspace: dir, processes: killed }, 'ended processes of a worker nobody remembers');
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      const launch = localLaunchSchema.safeParse(spec.launch ?? {});
      const inst: Instance = {
        id,
        spec,
        launch: launch.success ? launch.data : {},
        dir,
        ports,
        run: null,
        stopped: !spec.running,
        destroyed: false,
        chain: Promise.resolve(),
      };
      this.instances.set(id, inst);
      const run = this.adoptRun(inst);
      out.push({ id, running: run !== null, url: this.urlOf(inst) });
    }
    this.log.info(
      { event: 'local_workers_adopted', adopted: out.filter((r) => r.running).map((r) => r.id), stopped: out.filter((r) => !r.running).map((r) => r.id) },
      'local workers taken back',
    );
    return out;
  }

  /** Watch the on_start.sh of an earlier autoscaler still running in `inst`'s workspace; null when none runs. */
  private adoptRun(inst: Instance): Run | null {
    const pid = readPidFile(join(inst.dir, SUPERVISOR_PID_FILE));
    const start = pid === null ? null : procStart(pid);
    if (pid === null || start === null || !/on_start/.test(cmdline(pid))) return null;
    let resolveExit!: () => void;
    const run: Run = {
      script: { pid, start },
      children: new Map(),
      done: false,
      exit: null,
      exited: new Promise<void>((r) => (resolveExit = r)),
      asked: false,
      termSent: false,
      deadline: Number.POSITIVE_INFINITY,
      // Not our child: its end is seen by polling /proc.
      pidTimer: setInterval(() => {
        this.collectChildren(inst, run);
        if (same(run.script)) return;
        clearInterval(run.pidTimer);
        run.done = true;
        run.exit = { code: null, signal: null };
        resolveExit();
        this.onRunExit(inst, run);
      }, 250),
    };
    run.pidTimer.unref();
    inst.run = run;
    this.collectChildren(inst, run);
    return run;
  }

  /**
   * SIGKILL every process group of every run, synchronously: for a process about to exit without
   * close() (uncaught exception, process.exit). Workspaces stay; the next start on this data dir
   * removes them.
   */
  killAllNow(): void {
    for (const inst of this.instances.values()) {
      const run = inst.run;
      if (!run) continue;
      this.collectChildren(inst, run);
      signalGroup(run.script, 'SIGKILL');
      for (const c of run.children.values()) signalGroup(c, 'SIGKILL');
    }
  }

  // ------------------------------------------------------------------ runs

  private serially(inst: Instance, fn: () => Promise<void>): Promise<void> {
    const next = inst.chain.then(fn, fn);
    inst.chain = next.catch(() => undefined);
    return next;
  }

  private urlOf(inst: Instance): string {
    const host = this.cfg.host.includes(':') ? `[${this.cfg.host}]` : this.cfg.host;
    return `http://${host}:${inst.ports.worker}`;
  }

  private takenPorts(): Set<number> {
    const out = new Set<number>();
    for (const i of this.instances.values()) for (const p of Object.values(i.ports)) out.add(p);
    return out;
  }

  /** Before a restart: keep the ports when they are still free, else take new ones. */
  private async refreshPorts(inst: Instance): Promise<void> {
    const taken = this.takenPorts();
    for (const k of ['worker', 'http', 'model'] as const) {
      if (await portFree(this.cfg.host, inst.ports[k])) continue;
      taken.delete(inst.ports[k]);
      inst.ports[k] = await freePort(this.cfg.host, taken);
      taken.add(inst.ports[k]);
    }
  }

  private envOf(inst: Instance): Record<string, string> {
    const env: Record<string, string> = {};
    for (const k of INHERITED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    Object.assign(env, this.cfg.env, inst.launch.env);
    if ('UNSECURED' in env) {
      delete env.UNSECURED;
      if (!this.warnedUnsecured)
        this.log.warn({ event: 'local_env', dropped: 'UNSECURED' }, "UNSECURED is never given to local workers: they verify the engine's signatures");
      this.warnedUnsecured = true;
    }
    const host = this.cfg.host;
    return {
      ...env,
      WORKSPACE_DIR: inst.dir,
      WORKER_HOST: host,
      PUBLIC_IPADDR: host,
      WORKER_PORT: String(inst.ports.worker),
      WORKER_HTTP_PORT: String(inst.ports.http),
      MODEL_PORT: String(inst.ports.model),
      MODEL_SERVER_URL: env.MODEL_SERVER_URL ?? `http://${host.includes(':') ? `[${host}]` : host}:${inst.ports.model}`,
      BACKEND: inst.launch.backend ?? env.BACKEND ?? 'openai',
      CONTAINER_ID: String(inst.id),
      MASTER_TOKEN: inst.spec.masterToken,
      REPORT_ADDR: inst.spec.reportAddrs.join(','),
      // As on a Vast instance (PROTOCOL §8): the public port of each internal port. Locally there
      // is no port mapping, so each maps to itself; the Python PyWorker needs VAST_TCP_PORT_<WORKER_PORT>.
      [`VAST_TCP_PORT_${inst.ports.worker}`]: String(inst.ports.worker),
      [`VAST_TCP_PORT_${inst.ports.http}`]: String(inst.ports.http),
      VAST_CONTAINERLABEL: `C.${inst.id}`,
      USE_SSL: env.USE_SSL ?? 'false',
    };
  }

  /** Start on_start.sh for `inst`; resolves once it is spawned (not when the model is loaded). */
  private async spawn(inst: Instance): Promise<void> {
    const logPath = join(inst.dir, 'on_start.log');
    // The shell opens the log itself, then becomes on_start.sh: output never passes through this
    // process (execa pipes `{file}` targets through the parent), so the workers neither cost the
    // autoscaler CPU nor die of SIGPIPE if it is gone.
    const proc = execa('bash', ['-c', 'exec >>"$1" 2>&1 && exec bash "$2"', 'on_start', logPath, this.script], {
      cwd: inst.dir,
      env: this.envOf(inst),
      extendEnv: false,
      detached: true, // its own session and process group: signalled as a whole, and Ctrl-C in a terminal reaches only us
      cleanup: false,
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'ignore',
      reject: false,
    });
    const pid = proc.pid;
    if (pid === undefined) {
      const r = await proc;
      throw new Error(`cannot start ${this.script}: ${(r as { message?: string }).message ?? 'spawn failed'}`);
    }
    const run: Run = {
      script: { pid, start: procStart(pid) ?? '' },
      children: new Map(),
      done: false,
      exit: null,
      exited: null as unknown as Promise<void>,
      asked: false,
      termSent: false,
      deadline: Number.POSITIVE_INFINITY,
      pidTimer: setInterval(() => this.collectChildren(inst, run), 100),
      child: proc,
    };
    run.pidTimer.unref();
    run.exited = proc.then((r) => {
      run.done = true;
      run.exit = { code: r.exitCode ?? null, signal: r.signal ?? null };
      clearInterval(run.pidTimer);
      this.onRunExit(inst, run);
    });
    inst.run = run;
    writeFileSync(join(inst.dir, INSTANCE_FILE), JSON.stringify({ id: inst.id, ports: inst.ports }) + '\n', { mode: 0o600 });
    this.log.info({ event: 'local_worker', worker: inst.id, op: 'spawned', pid, ports: inst.ports, workspace: inst.dir }, 'on_start.sh started');
  }

  /** Read the model/worker pids the run wrote (only live processes, so stale files are ignored). */
  private collectChildren(inst: Instance, run: Run): void {
    if (run.children.size === PID_FILES.length) return clearInterval(run.pidTimer);
    for (const f of PID_FILES) {
      if (run.children.has(f)) continue;
      const pid = readPidFile(join(inst.dir, f));
      if (pid === null || pid === run.script.pid) continue;
      const start = procStart(pid);
      if (start !== null) run.children.set(f, { pid, start });
    }
  }

  /**
   * End a run: SIGTERM to on_start.sh (it drains the worker, then stops the model), SIGKILL to
   * every group of the run once `graceMs` passes, then end whatever outlived the script.
   * Concurrent callers share the run; the shortest deadline wins.
   */
  private async endRun(inst: Instance, run: Run, graceMs: number): Promise<void> {
    run.asked = true;
    run.deadline = Math.min(run.deadline, Date.now() + graceMs);
    this.collectChildren(inst, run);
    if (!run.termSent && !run.done) {
      run.termSent = true;
      try {
        process.kill(run.script.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
    while (!run.done && Date.now() < run.deadline) await Promise.race([run.exited, sleep(100)]);
    this.collectChildren(inst, run);
    if (!run.done) {
      this.log.warn({ event: 'local_worker', worker: inst.id, op: 'kill', pid: run.script.pid }, 'on_start.sh did not stop in time: SIGKILL');
      signalGroup(run.script, 'SIGKILL');
    }
    // Bounded: nothing may hold a stop or a close forever.
    await Promise.race([run.exited, sleep(2000)]);
    await this.endChildren(run, Math.max(1000, run.deadline - Date.now()));
    if (inst.run === run) inst.run = null;
    for (const f of [...PID_FILES, SUPERVISOR_PID_FILE]) rmSync(join(inst.dir, f), { force: true });
  }

  /** Model and worker groups still alive after their script: SIGTERM, then SIGKILL after `graceMs`. */
  private async endChildren(run: Run, graceMs: number): Promise<void> {
    const left = () => [...run.children.values()].filter(same);
    if (left().length === 0) return;
    for (const c of left()) signalGroup(c, 'SIGTERM');
    const until = Date.now() + graceMs;
    while (left().length > 0 && Date.now() < until) await sleep(50);
    for (const c of left()) signalGroup(c, 'SIGKILL');
    const hard = Date.now() + 2000;
    while (left().length > 0 && Date.now() < hard) await sleep(20);
  }

  private onRunExit(inst: Instance, run: Run): void {
    if (run.asked) return;
    if (inst.run === run) inst.run = null;
    const reason = `${run.exit?.signal ? `on_start.sh killed by ${run.exit.signal}` : `on_start.sh exited with code ${run.exit?.code}`}${lastError(join(inst.dir, 'on_start.log'))}`;
    this.log.warn({ event: 'local_worker', worker: inst.id, op: 'exited', reason }, 'local worker exited by itself');
    // What it left behind is ended: an instance that died takes its processes with it.
    void this.endChildren(run, this.cfg.kill_timeout_seconds * 1000).then(() => {
      for (const f of [...PID_FILES, SUPERVISOR_PID_FILE]) rmSync(join(inst.dir, f), { force: true });
    });
    if (!inst.destroyed && !inst.stopped) this.emit({ workerId: inst.id, kind: 'exited', reason });
  }

  // ------------------------------------------------------------------ data dir

  /** One provider per workspaces dir: two would end each other's leftovers. */
  private lock(): void {
    const path = join(this.workspacesDir, LOCK_FILE);
    if (lockedHere.has(this.workspacesDir))
      throw new Error(`provider.workspaces_dir ${this.workspacesDir} is already used by another local provider of this process`);
    const holder = readPidFile(path);
    if (holder !== null && holder !== process.pid && procStart(holder) !== null && /node/.test(cmdline(holder) || 'node')) {
      throw new Error(`provider.workspaces_dir ${this.workspacesDir} is in use by process ${holder} (another autoscaler); use another data dir`);
    }
    writeFileSync(path, `${process.pid}\n`);
    lockedHere.add(this.workspacesDir);
  }

  private unlock(): void {
    lockedHere.delete(this.workspacesDir);
    if (readPidFile(join(this.workspacesDir, LOCK_FILE)) === process.pid) rmSync(join(this.workspacesDir, LOCK_FILE), { force: true });
  }

  /** Workspaces left by an autoscaler that died: end their processes, remove them. */
  private reapLeftovers(): void {
    for (const name of readdirSync(this.workspacesDir)) {
      if (!/^worker-\d+$/.test(name)) continue;
      const dir = join(this.workspacesDir, name);
      const killed = reapWorkspace(dir);
      if (killed > 0)
        this.log.warn({ event: 'local_worker', op: 'reaped', workspace: dir, processes: killed }, 'ended processes left by an earlier autoscaler');
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

/** SIGKILL the process groups a workspace's pid files name, when they still run our scripts. */
function reapWorkspace(dir: string): number {
  let killed = 0;
  for (const f of [SUPERVISOR_PID_FILE, ...PID_FILES]) {
    const pid = readPidFile(join(dir, f));
    if (pid === null || pid === process.pid) continue;
    const start = procStart(pid);
    if (start === null || !/on_start|cli\.js|model-sim/.test(cmdline(pid))) continue;
    signalGroup({ pid, start }, 'SIGKILL');
    killed++;
  }
  return killed;
}

/** The ports a workspace's worker was spawned with, or null when the file is missing or bad. */
function readInstanceFile(dir: string): Ports | null {
  try {
    const v = JSON.parse(readFileSync(join(dir, INSTANCE_FILE), 'utf8')) as { ports?: Partial<Ports> };
    const p = v.ports ?? {};
    if (![p.worker, p.http, p.model].every((n) => Number.isInteger(n) && (n as number) > 0)) return null;
    return { worker: p.worker!, http: p.http!, model: p.model! };
  } catch {
    return null;
  }
}

/** The last `error:` line on_start.sh logged, as a suffix for an exit reason ('' when none). */
function lastError(logPath: string): string {
  try {
    const text = readFileSync(logPath, 'utf8').slice(-20_000);
    const lines = text.split('\n').filter((l) => / on_start: error: /.test(l));
    const last = lines.at(-1);
    return last ? `: ${last.slice(last.indexOf('error: ') + 7, last.indexOf('error: ') + 307)}` : '';
  } catch {
    return '';
  }
}

/** The package's on_start.sh (at its root, beside package.json). */
export function defaultScript(): string {
  return packagePath('on_start.sh');
}

/** The registry's factory for `kind: local`: validates the section, then builds the provider. */
export function localProviderFactory(ctx: ProviderContext): LocalProvider {
  return new LocalProvider({ config: parseProviderSection(localConfigSchema, ctx.config, 'local'), dataDir: ctx.dataDir, logger: ctx.logger });
}
