/**
 * The autoscaler under test for `engine-scale.ts`, in its own process so that the load generator's
 * CPU is never charged to it: the real server (`startAutoscaler`: hono, /route/, the tick, the
 * journal) with a light fleet of N in-process workers that report the way PyWorker does (a
 * `/worker_status/` every second while something changed, every 10 s otherwise; `/delete_requests/`
 * every second), through the engine's own protocol methods as the simulated provider does.
 *
 * Each worker reports on its own 1 s timer, de-phased as workers started at different moments
 * are (real workers' reports are independent HTTP requests spread over the second): one worker's
 * report per callback. `ENGINE_SCALE_BURST_REPORTS=1` reports all N in one callback each second
 * (the benchmark's first shape, a stall no real fleet makes); `ENGINE_SCALE_SPREAD_REPORTS=1`
 * reports them in 40 slices of 25 ms (the second round's).
 *
 * Every request routed to a worker stays open (listed in its reports' `working_request_idxs`)
 * until the fleet holds more than `--open` requests; the oldest is then finished and deleted in
 * the next report. So the engine carries `--open` open requests all along, whatever the rate.
 *
 * Stdin commands (one a line): `reset` starts a measuring window; `stats` prints one line
 * `ENGINE_HOST_STATS {json}` for the window so far; `route-loop N` calls the engine's `route()`
 * N times in a row (no HTTP) and prints `ENGINE_HOST_ROUTE {json}` with the CPU µs per call. Prints `ENGINE_HOST_READY {json}` once every
 * worker is ready. SIGTERM closes everything.
 */
import { mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { createLogger } from '#nodeworker/common/log.js';
import { startAutoscaler } from '#nodeworker/autoscaler/server.js';
import type { EngineLink, Provider, ProviderEvent, WorkerHandle, WorkerSpec } from '#nodeworker/autoscaler/providers/types.js';
import { benchArgs } from './args.js';

const PERF = 100;
// Small enough that 10 open requests a worker (10,000 over 1,000) are 1 s of queue, inside the policy's queue budget.
const COST = 10;
/** Report slices a second with `ENGINE_SCALE_SPREAD_REPORTS=1`. */
const SLICES = 40;

/** How the fleet's reports reach the engine: one worker per callback (default), slices, or all at once. */
export type ReportShape = 'dephased' | 'spread' | 'burst';

interface FleetWorker {
  id: number;
  mtoken: string;
  /** request_idx → cost of the requests it holds. */
  open: Map<number, number>;
  done: number[];
  changed: boolean;
  lastReportAt: number;
  served: number;
}

/** N workers that are ready at once and report like PyWorker; nothing is ever contacted over the network. */
class LightFleet implements Provider {
  readonly kind = 'light-fleet';
  readonly workers = new Map<number, FleetWorker>();
  private link: EngineLink | null = null;
  private listeners = new Set<(e: ProviderEvent) => void>();
  /**
   * Every open request, oldest first: its worker (FleetWorker, so no lookup when it ends) and its
   * request_idx in two parallel arrays (no tuple per request: this bookkeeping runs in the
   * engine's process on every routing, and its CPU is counted in the engine's CPU per call).
   */
  private orderW: FleetWorker[] = [];
  private orderIdx: number[] = [];
  private orderHead = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Per-worker report timers (the de-phased shape): the phase timeout, then the interval. */
  private workerTimers = new Map<number, NodeJS.Timeout>();
  reports = 0;

  /** Wall time of each of the fleet's report callbacks (its own work, on the engine's event loop): one worker's report by default. */
  readonly bursts: number[] = [];
  /** Called with each report callback's start and end (performance.now()). */
  onBurst: ((t0: number, t1: number) => void) | null = null;
  private slice = 0;

  /**
   * `dephased`: each worker reports on its own 1 s timer whose phase is where in the second it
   * started (a fixed pseudo-random fraction of its id, so runs are alike), one report a callback.
   * `spread`: each worker reports in its own 25 ms slice of the second. `burst`: all N in one
   * callback a second.
   */
  constructor(
    private openTarget: number,
    private shape: ReportShape = 'dephased',
  ) {
    if (shape === 'spread') this.timer = setInterval(() => this.reportSlice(), 1000 / SLICES);
    else if (shape === 'burst') this.timer = setInterval(() => this.reportAll(), 1000);
  }

  /** A worker's own report timer: first at its phase in the second, then every second. */
  private startWorkerTimer(w: FleetWorker): void {
    // Golden-ratio sequence over the ids: evenly spread phases, the same in every run.
    const phase = Math.floor(((((w.id * 0.6180339887498949) % 1) + 1) % 1) * 1000);
    const tick = () => {
      const t0 = performance.now();
      this.reportOne(w, Date.now());
      const t1 = performance.now();
      this.bursts.push(t1 - t0);
      this.onBurst?.(t0, t1);
    };
    this.workerTimers.set(
      w.id,
      setTimeout(() => {
        if (!this.workers.has(w.id)) return;
        this.workerTimers.set(w.id, setInterval(tick, 1000));
        tick();
      }, phase),
    );
  }

  private reportSlice(): void {
    const t0 = performance.now();
    const now = Date.now();
    const k = this.slice++ % SLICES;
    for (const w of this.workers.values()) if (w.id % SLICES === k) this.reportOne(w, now);
    this.bursts.push(performance.now() - t0);
  }

  attach(link: EngineLink): void {
    this.link = link;
  }

  async create(spec: WorkerSpec): Promise<WorkerHandle> {
    const w: FleetWorker = { id: spec.workerId, mtoken: spec.masterToken, open: new Map(), done: [], changed: true, lastReportAt: 0, served: 0 };
    this.workers.set(w.id, w);
    // The first report after the engine has taken the handle: model loaded, benchmarked.
    setImmediate(() => {
      for (const l of this.listeners) l({ workerId: w.id, kind: 'running' });
      this.report(w, Date.now());
      if (this.shape === 'dephased') this.startWorkerTimer(w);
    });
    return { id: w.id, url: `http://127.0.0.1:9/w${w.id}` };
  }

  /** The engine routed a request to `workerId`: it is working until the fleet holds too many. */
  take(workerId: number, idx: number, cost: number): void {
    const w = this.workers.get(workerId);
    if (!w) return;
    w.open.set(idx, cost);
    w.changed = true;
    this.orderW.push(w);
    this.orderIdx.push(idx);
    while (this.orderIdx.length - this.orderHead > this.openTarget) {
      const ow = this.orderW[this.orderHead]!;
      const oldest = this.orderIdx[this.orderHead]!;
      this.orderHead++;
      // A destroyed worker's requests are gone with it.
      if (this.workers.get(ow.id) === ow && ow.open.delete(oldest)) {
        ow.done.push(oldest);
        ow.served += COST;
      }
    }
    if (this.orderHead > 65_536) {
      this.orderW = this.orderW.slice(this.orderHead);
      this.orderIdx = this.orderIdx.slice(this.orderHead);
      this.orderHead = 0;
    }
  }

  private report(w: FleetWorker, now: number): void {
    if (!this.link) return;
    let curLoad = 0;
    for (const c of w.open.values()) curLoad += c;
    this.link.workerStatus({
      id: w.id,
      mtoken: w.mtoken,
      version: 'bench',
      loadtime: 1,
      cur_load: curLoad,
      rej_load: 0,
      new_load: 0,
      error_msg: '',
      max_perf: PERF,
      cur_perf: w.served,
      cur_capacity: 0,
      max_capacity: 0,
      num_requests_working: w.open.size,
      num_requests_recieved: 0,
      additional_disk_usage: 0,
      working_request_idxs: [...w.open.keys()],
      url: `http://127.0.0.1:9/w${w.id}`,
    });
    this.reports++;
    w.served = 0;
    w.changed = false;
    w.lastReportAt = now;
  }

  private reportAll(): void {
    const t0 = performance.now();
    const now = Date.now();
    for (const w of this.workers.values()) this.reportOne(w, now);
    this.bursts.push(performance.now() - t0);
  }

  private reportOne(w: FleetWorker, now: number): void {
    if (w.done.length > 0) {
      this.link?.deleteRequests({ worker_id: w.id, mtoken: w.mtoken, request_idxs: w.done, success: true });
      w.done = [];
    }
    if (w.changed || now - w.lastReportAt >= 10_000) this.report(w, now);
  }

  openCount(): number {
    return this.orderIdx.length - this.orderHead;
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async destroy(id: number): Promise<void> {
    this.workers.delete(id);
    clearTimeout(this.workerTimers.get(id));
    this.workerTimers.delete(id);
  }
  async probe(): Promise<boolean> {
    return true;
  }
  subscribe(l: (e: ProviderEvent) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const t of this.workerTimers.values()) clearTimeout(t);
    this.workerTimers.clear();
  }
}

/** Gaps of the stall sampler longer than this are recorded (ms), and its period. */
const STALL_MS = 30;
const STALL_SAMPLE_MS = 5;
/** Ticks, saves, stages, GC pauses and fleet callbacks at least this long are kept to explain stalls (ms). */
const EVENT_MIN_MS = 1;

interface Stall {
  start: number;
  end: number;
  gapMs: number;
  /** The process's CPU time in the gap, all threads (ms). */
  cpuMs: number;
  /** The event loop's thread in the gap: its CPU time, and its time runnable but waiting for a core (ms; Linux). */
  loopCpuMs?: number;
  loopWaitMs?: number;
  /** ms of the gap spent in each kind of event that overlapped it. */
  parts: Record<string, number>;
}

const events: Array<{ kind: string; start: number; end: number }> = [];
function noteEvent(kind: string, start: number, end: number): void {
  events.push({ kind, start, end });
  if (events.length > 200_000) events.splice(0, 100_000);
}

/** The longest stalls first (at most 8), each with how much of it each kind of event covered. */
function explainStalls(stalls: Stall[], evs: typeof events): Stall[] {
  const top = [...stalls].sort((a, b) => b.gapMs - a.gapMs).slice(0, 8);
  for (const s of top) {
    s.parts = {};
    for (const e of evs) {
      const overlap = Math.min(e.end, s.end) - Math.max(e.start, s.start);
      if (overlap > 0) s.parts[e.kind] = (s.parts[e.kind] ?? 0) + overlap;
    }
  }
  // The monotonic clock's µs (a V8 CPU profile's timestamps) of each stall's start, to find it in a profile.
  const hrOffsetUs = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
  return top.map((s) => ({
    ...s,
    atUs: Math.round(hrOffsetUs + s.start * 1000),
    gapMs: round1(s.gapMs),
    cpuMs: round1(s.cpuMs),
    ...(s.loopCpuMs !== undefined && s.loopWaitMs !== undefined ? { loopCpuMs: round1(s.loopCpuMs), loopWaitMs: round1(s.loopWaitMs) } : {}),
    parts: Object.fromEntries(Object.entries(s.parts).map(([k, v]) => [k, round1(v)])),
  }));
}
const round1 = (x: number) => Math.round(x * 10) / 10;

/** The event loop's thread in Linux's schedstat (ns): its CPU time and its time runnable but waiting for a core. */
let schedFd: number | null | undefined;
const schedBuf = Buffer.alloc(128);
function threadSched(): { cpuMs: number; waitMs: number } | null {
  if (schedFd === undefined) {
    try {
      schedFd = openSync('/proc/thread-self/schedstat', 'r');
    } catch {
      schedFd = null;
    }
  }
  if (schedFd === null) return null;
  const n = readSync(schedFd, schedBuf, 0, schedBuf.length, 0);
  const [cpu, wait] = schedBuf.toString('latin1', 0, n).split(' ');
  return { cpuMs: Number(cpu) / 1e6, waitMs: Number(wait) / 1e6 };
}
/** CPU time of the calling thread (the event loop's), ms; null where Linux's schedstat is not there. */
function threadCpuMs(): number | null {
  return threadSched()?.cpuMs ?? null;
}

/** Percentile of an unsorted sample (nearest rank). */
function pct(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

async function main(): Promise<void> {
  const args = benchArgs('lib/engine-host', '[--workers N] [--open N]', { workers: 'string', open: 'string' });
  const n = Number(args.workers ?? 1000);
  const openTarget = Number(args.open ?? 10_000);
  const dataDir = mkdtempSync(join(tmpdir(), 'engine-scale-'));
  const shape: ReportShape = process.env.ENGINE_SCALE_BURST_REPORTS === '1' ? 'burst' : process.env.ENGINE_SCALE_SPREAD_REPORTS === '1' ? 'spread' : 'dephased';
  const fleet = new LightFleet(openTarget, shape);
  const apiKey = 'engine-scale-client-key';
  const running = await startAutoscaler({
    config: {
      persist: true,
      endpoints: [
        {
          name: 'bench',
          api_key: apiKey,
          max_workers: n,
          // An active-capacity floor of exactly N workers of PERF each: the real policy keeps N ready.
          min_load: n * PERF,
          target_util: 1,
          cold_workers: 0,
          cold_mult: 0,
          workergroups: [{ name: 'light', machine_types: [{ name: 'std', dollars_per_hour: 1, expected_perf: PERF }] }],
        },
      ],
    },
    provider: fleet,
    dataDir,
    logger: createLogger('engine-host', { level: 'warn' }),
    dashboard: false,
  });
  const engine = running.engine;
  engine.on('routed', (e) => {
    if (e.workerId !== null) fleet.take(e.workerId, e.idx, e.cost);
  });

  // Timings of the tick and of the journal save (wrapped where the engine calls them): wall time,
  // and this process's CPU time, which a busy machine does not inflate by descheduling it.
  const ticks: number[] = [];
  const saves: number[] = [];
  const tickCpu: number[] = [];
  const saveCpu: number[] = [];
  const tickAndSave: number[] = [];
  let lastTickWall = 0;
  // The store's staging between ticks (every 25 ms: the requests and reports changed since).
  const stages: number[] = [];
  const stageCpu: number[] = [];
  // The same in CPU time of the event loop's own thread (Linux: /proc/thread-self/schedstat):
  // process.cpuUsage counts every thread, so a GC helper's concurrent marking or the thread pool's
  // fsync of the last save, running while the tick runs, was counted as the tick's.
  const tickThreadCpu: number[] = [];
  const saveThreadCpu: number[] = [];
  const stageThreadCpu: number[] = [];
  // The scaler's timer calls its own tick (which ends with the store's save); an engine without
  // those parts (before the split: measuring an older build) ticks and saves itself.
  const parts = engine as unknown as { scaler?: object; store?: { saveInBackground?: unknown; journal?: object } | null };
  // Where the tick saves: `saveInBackground` (its part on the event loop: encoding, starting the
  // write) when the store has it, else `save` (encode, write and fsync, all on the loop).
  const saveName = parts.store && typeof parts.store.saveInBackground === 'function' ? 'saveInBackground' : 'save';
  for (const [obj, name, wall, cpu, threadCpu, kind] of [
    [parts.scaler ?? engine, 'tick', ticks, tickCpu, tickThreadCpu, 'tick'],
    ['store' in parts ? parts.store : engine, saveName, saves, saveCpu, saveThreadCpu, 'save'],
    ['store' in parts ? parts.store : null, 'stage', stages, stageCpu, stageThreadCpu, 'stage'],
  ] as const) {
    const target = obj as unknown as Record<string, (...a: unknown[]) => unknown> | null;
    const orig = target?.[name];
    if (!target || typeof orig !== 'function') continue;
    target[name] = (...a: unknown[]) => {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const th0 = threadCpuMs();
      try {
        return orig.apply(obj, a);
      } finally {
        const c = process.cpuUsage(c0);
        const th1 = threadCpuMs();
        const t1 = performance.now();
        (cpu as number[]).push((c.user + c.system) / 1000);
        if (th0 !== null && th1 !== null) (threadCpu as number[]).push(th1 - th0);
        (wall as number[]).push(t1 - t0);
        if (t1 - t0 >= EVENT_MIN_MS) noteEvent(kind, t0, t1);
        // A tick and the save that follows it (since round four in a slice of its own): their sum.
        if (kind === 'tick') lastTickWall = t1 - t0;
        else if (kind === 'save') tickAndSave.push(lastTickWall + (t1 - t0));
      }
    };
  }
  // A background save's time until durable (append, fsync and any compaction on the thread pool).
  const durable: number[] = [];
  const journal = parts.store?.journal as { flushAsync?: () => Promise<void> } | undefined;
  const flushAsync = journal?.flushAsync;
  if (journal && typeof flushAsync === 'function') {
    journal.flushAsync = () => {
      const t = performance.now();
      const p = flushAsync.call(journal);
      p.then(
        () => durable.push(performance.now() - t),
        () => {},
      );
      return p;
    };
  }
  // GC pauses (the event loop stands still during each): what of the stalls is the collector's.
  const gcPauses: number[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcPauses.push(e.duration);
      if (e.duration >= EVENT_MIN_MS) noteEvent('gc', e.startTime, e.startTime + e.duration);
    }
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  // Node's histogram records the interval between two of its timer's callbacks, so a sampling
  // period of 10 ms counts up to 10 ms of the period itself into each figure (an idle loop shows
  // 10 ms); one of 1 ms gives the loop's longest hold to within 1 ms.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const delayFine = monitorEventLoopDelay({ resolution: 1 });
  delayFine.enable();
  // Stalls, explained: a sampler every STALL_SAMPLE_MS notes each gap between its callbacks over
  // STALL_MS, with the process's CPU time in the gap (all threads: a gap with little CPU is the
  // machine's run queue, not the engine's work) and the ticks, saves, stages, GC pauses and fleet
  // callbacks that overlapped it.
  const stalls: Stall[] = [];
  let lastSample = performance.now();
  let lastCpu = process.cpuUsage();
  let lastSched = threadSched();
  const stallTimer = setInterval(() => {
    const t = performance.now();
    const c = process.cpuUsage();
    const sched = threadSched();
    if (t - lastSample > STALL_MS) {
      const stall: Stall = { start: lastSample, end: t, gapMs: t - lastSample, cpuMs: (c.user - lastCpu.user + c.system - lastCpu.system) / 1000, parts: {} };
      if (sched && lastSched) {
        stall.loopCpuMs = sched.cpuMs - lastSched.cpuMs;
        stall.loopWaitMs = sched.waitMs - lastSched.waitMs;
      }
      stalls.push(stall);
    }
    lastSample = t;
    lastCpu = c;
    lastSched = sched;
  }, STALL_SAMPLE_MS);
  fleet.onBurst = (t0, t1) => {
    if (t1 - t0 >= EVENT_MIN_MS) noteEvent('fleet', t0, t1);
  };
  let cpu0 = process.cpuUsage();
  let t0 = performance.now();
  let rssPeak = 0;
  const rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 200);
  const reset = () => {
    for (const xs of [
      ticks,
      tickAndSave,
      saves,
      tickCpu,
      saveCpu,
      stages,
      stageCpu,
      tickThreadCpu,
      saveThreadCpu,
      stageThreadCpu,
      durable,
      fleet.bursts,
      gcPauses,
      stalls,
      events,
    ])
      xs.length = 0;
    delay.reset();
    delayFine.reset();
    cpu0 = process.cpuUsage();
    t0 = performance.now();
    rssPeak = process.memoryUsage().rss;
  };
  /** Slices of `kind` of 5 ms or more: how many, and how many of those a GC pause of 1 ms or more fell in. */
  const slowWith = (kind: string) => {
    const slow = events.filter((e) => e.kind === kind && e.end - e.start >= 5);
    const gcs = events.filter((e) => e.kind === 'gc');
    return { slow: slow.length, withGc: slow.filter((s) => gcs.some((g) => g.start < s.end && g.end > s.start)).length };
  };
  const stats = () => {
    const cpu = process.cpuUsage(cpu0);
    const ep = engine.endpoints.get('bench');
    return {
      seconds: (performance.now() - t0) / 1000,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      cpuUserSeconds: cpu.user / 1e6,
      ticks: ticks.length,
      tickP50Ms: pct(ticks, 50),
      tickP99Ms: pct(ticks, 99),
      tickMaxMs: ticks.length ? Math.max(...ticks) : Number.NaN,
      tickTotalMs: ticks.reduce((a, b) => a + b, 0),
      tickAndSaveMaxMs: tickAndSave.length ? Math.max(...tickAndSave) : Number.NaN,
      tickCpuP50Ms: pct(tickCpu, 50),
      tickCpuMaxMs: tickCpu.length ? Math.max(...tickCpu) : Number.NaN,
      tickCpuTotalMs: tickCpu.reduce((a, b) => a + b, 0),
      saveCpuP50Ms: pct(saveCpu, 50),
      saveCpuP99Ms: pct(saveCpu, 99),
      saves: saves.length,
      saveP50Ms: pct(saves, 50),
      saveP99Ms: pct(saves, 99),
      saveMaxMs: saves.length ? Math.max(...saves) : Number.NaN,
      gcMaxMs: gcPauses.length ? Math.max(...gcPauses) : Number.NaN,
      gcTotalMs: gcPauses.reduce((a, b) => a + b, 0),
      gcOver50: gcPauses.filter((d) => d > 50).length,
      fleetBurstMaxMs: fleet.bursts.length ? Math.max(...fleet.bursts) : Number.NaN,
      fleetBurstP50Ms: pct(fleet.bursts, 50),
      durableSaves: durable.length,
      durableP50Ms: pct(durable, 50),
      durableP99Ms: pct(durable, 99),
      stageP50Ms: pct(stages, 50),
      stageP99Ms: pct(stages, 99),
      stageMaxMs: stages.length ? Math.max(...stages) : Number.NaN,
      stageCpuP99Ms: pct(stageCpu, 99),
      threadCpu: tickThreadCpu.length > 0,
      tickThreadCpuP50Ms: pct(tickThreadCpu, 50),
      tickThreadCpuMaxMs: tickThreadCpu.length ? Math.max(...tickThreadCpu) : Number.NaN,
      saveThreadCpuP50Ms: pct(saveThreadCpu, 50),
      saveThreadCpuP99Ms: pct(saveThreadCpu, 99),
      stageThreadCpuP99Ms: pct(stageThreadCpu, 99),
      slowStages: slowWith('stage'),
      slowSaves: slowWith('save'),
      slowTicks: slowWith('tick'),
      stallsOver: stalls.length,
      stallMs: STALL_MS,
      stalls: explainStalls(stalls, events),
      loopDelayP99Ms: delay.percentile(99) / 1e6,
      loopDelayMaxMs: delay.max / 1e6,
      loopHoldP99Ms: delayFine.percentile(99) / 1e6,
      loopHoldMaxMs: delayFine.max / 1e6,
      rssMb: process.memoryUsage().rss / 2 ** 20,
      rssPeakMb: rssPeak / 2 ** 20,
      readyWorkers: [...engine.workers.values()].filter((w) => w.state === 'ready').length,
      openRequests: fleet.openCount(),
      routed: ep?.router.stats.routed ?? 0,
      queued: ep?.router.waiting() ?? 0,
      reports: fleet.reports,
    };
  };

  const readyTimer = setInterval(() => {
    const ready = [...engine.workers.values()].filter((w) => w.state === 'ready').length;
    if (ready < n) return;
    clearInterval(readyTimer);
    process.stdout.write(`ENGINE_HOST_READY ${JSON.stringify({ url: running.url, apiKey, workers: ready, pid: process.pid })}\n`);
  }, 100);

  createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'reset') reset();
    else if (cmd === 'stats') process.stdout.write(`ENGINE_HOST_STATS ${JSON.stringify(stats())}\n`);
    else if (cmd.startsWith('route-loop ')) {
      const calls = Number(cmd.slice('route-loop '.length)) || 10_000;
      const body = { endpoint: 'bench', api_key: apiKey, cost: COST, request_idx: 0, replay_timeout: 60 };
      let routed = 0;
      const c0 = process.cpuUsage();
      for (let i = 0; i < calls; i++) if (engine.route({ ...body }).status === 200) routed++;
      const c = process.cpuUsage(c0);
      // The store stages these calls' records now (not counted above), not in the measured window:
      // a stage of 10,000 new requests at once is the pre-fill's, not a shape of load (100+ ms).
      // A stage takes a bounded number (STAGE_LIMIT) since round four: called until all are in.
      const stage = (parts.store as { stage?: () => void } | null | undefined)?.stage;
      for (let i = 0; stage && i <= calls / 256 + 4; i++) stage.call(parts.store);
      process.stdout.write(`ENGINE_HOST_ROUTE ${JSON.stringify({ calls, routed, usPerCall: (c.user + c.system) / calls })}\n`);
    }
  });

  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    clearInterval(readyTimer);
    clearInterval(rssTimer);
    clearInterval(stallTimer);
    delay.disable();
    delayFine.disable();
    await running.close();
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => void close());
  process.on('SIGINT', () => void close());
  process.stdin.on('end', () => void close());
}

main().catch((err: Error) => {
  process.stderr.write(`engine-host failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
