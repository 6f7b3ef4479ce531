import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';
import { generateRsaKeyPair } from '../../common/signature.js';
import { createLogger, type Logger } from '../../common/log.js';
import { sortedQuantile } from '../../common/util.js';
import { FakeClock } from '../clock.js';
import { Engine } from '../engine.js';
import { SimulatedProvider, type SimBilling, type SimJob } from '../providers/simulated.js';
import { WORKER_STATES, type WorkerState } from '../states.js';
import type { SimulationConfig } from './config.js';
import { latencyOracle, oracleCost, type LatencyOracleResult, type OracleResult } from './oracle.js';
import { policyByName, type PolicyName } from '../policies.js';
import { TRACE_ATTRIBUTION, type TraceRequest } from './trace.js';

/**
 * The trace simulation: the real engine (policy, router, state machine) on a FakeClock, fed
 * by a client that replays the trace through `engine.route()` and forwards each routed request
 * to the simulated worker it names. Discrete-event: time jumps between events, so an hour of
 * trace takes seconds. Billing covers the trace's minutes only (not the warm-up or the drain).
 */

export interface SimulationOptions {
  config: SimulationConfig;
  requests: readonly TraceRequest[];
  /** false turns the panic window off (panic_window 0). Default true. */
  panic?: boolean;
  /** Write the engine's JSON log here, stamped with simulated time (`sim_s`, seconds since the trace start). */
  logFile?: string;
  logger?: Logger;
  /** For the report. */
  traceFile?: string;
  speed?: number;
  /** The scaling policy: this engine's (`default`) or the Knative-KPA-style baseline (`kpa`). */
  policy?: PolicyName;
  /** Parameters merged over the config's endpoint (a pattern's own, e.g. the idle hour's scale-to-zero gate). */
  params?: Record<string, unknown>;
  /** Times a client re-routes a request whose worker failed before giving up on it (default 5). */
  maxRetries?: number;
  /**
   * Send every /route/, report and delete through the engine's validated entry points, as network
   * input would come, instead of the trusted in-process ones. Same results, slower: for the test
   * that the two paths agree.
   */
  validated?: boolean;
  /** Called with the engine once the run is over, before it closes (tests read its state). */
  atEnd?: (engine: Engine) => void;
}

/** One timeline row, every `sample_seconds`. */
export interface TimelineRow {
  /** Seconds since the first request. */
  t: number;
  /** Load arrived per second over the sample. */
  load: number;
  /** Sum of the benchmarked perf of ready workers. */
  readyCapacity: number;
  /** Requests waiting in the global queue. */
  queued: number;
  panicking: boolean;
  /** Workers per state; `destroyed` is cumulative since the first request. */
  states: Record<WorkerState, number>;
}

export interface SimulationReport {
  trace: {
    file: string | null;
    requests: number;
    spanSeconds: number;
    billedMinutes: number;
    totalWorkload: number;
    promptShare: number;
    speed: number;
    attribution: string;
  };
  panic: boolean;
  policy: PolicyName;
  params: Record<string, unknown>;
  machines: Array<{ name: string; dollarsPerHour: number; truePerf: number }>;
  cost: SimBilling;
  oracle: Omit<OracleResult, 'loadPerMinute'> & { latency: Omit<LatencyOracleResult, 'workersPerMinute'> };
  /** cost.dollars / oracle.fluid.dollars, and against whole workers; what the clairvoyant plan meeting the queue target costs against whole workers. */
  costRatio: { vsFluid: number; vsWholeWorkers: number; latencyOracleVsWholeWorkers: number };
  gpuHoursRatio: number;
  /** Queue time of each request from its first /route/ to the model starting on it (retries included); `last`: of the trace's last request. */
  /**
   * `overTarget`: requests whose queue time exceeded the endpoint's target_queue_time (or that never
   * started), and their share: the goal "p99 ≤ target" holds when the share is at most 1%.
   */
  queueTime: {
    p50: number;
    p90: number;
    p99: number;
    max: number;
    mean: number;
    last: number | null;
    target: number;
    overTarget: number;
    overTargetShare: number;
  };
  latency: { p50: number; p99: number };
  /** `retried`: requests re-routed after their worker failed (served in the end unless counted as lost). */
  requests: { total: number; served: number; rejected: number; timedOut: number; lost: number; unfinished: number; retried: number; retries: number };
  workers: { recruited: number; errored: number; destroyed: number; activations: number; stops: number; maxLive: number };
  panicEpisodes: number;
  perfLearned: Record<string, unknown>;
  simulatedSeconds: number;
  wallSeconds: number;
}

export interface SimulationResult {
  report: SimulationReport;
  timeline: TimelineRow[];
  /** Each request's arrival (s since the first) and queue time (s; null if it never started), in arrival order. */
  waits: Array<{ at: number; wait: number | null }>;
}

type Outcome = 'pending' | 'served' | 'rejected' | 'timed_out' | 'lost';

/** What a client does when its worker started or ended its request. */
interface ClientHooks {
  served(rec: ClientRecord, at: number): void;
  lost(rec: ClientRecord): void;
}

/**
 * One request as its client sees it. It is also the job its worker holds (`SimJob`): its `idx` is
 * the request_idx it was forwarded with, unchanged while a worker holds it (the client only routes
 * it again once the worker let it go). One object per request instead of a job and two closures
 * per forwarding: at ×100 these are allocated 880k times.
 */
class ClientRecord implements SimJob {
  status: Outcome = 'pending';
  start: number | null = null;
  end: number | null = null;
  /** The request_idx the engine gave it (the client polls and re-routes with it). */
  idx = 0;
  retries = 0;
  /** The worker that last failed it: an answer naming it again is not followed. */
  failedWorker: number | null = null;
  worker: number | null = null;

  constructor(
    readonly arrival: number,
    readonly workload: number,
    private readonly hooks: ClientHooks,
  ) {}

  onStart(at: number): void {
    this.start = at;
  }

  onDone(at: number, outcome: 'served' | 'lost'): void {
    if (outcome === 'served') this.hooks.served(this, at);
    else this.hooks.lost(this);
  }
}

const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** What the client reads of a /route/ answer: its status, the worker (null while queued) and the request_idx. */
interface RouteOut {
  status: number;
  workerId: number | null;
  idx: number;
}

/** A wire answer of /route/ read as the client reads it. */
function routeOut(out: { status: number; body: unknown }): RouteOut {
  const body = out.body as Record<string, unknown>;
  if (out.status !== 200) return { status: out.status, workerId: null, idx: 0 };
  return { status: 200, workerId: typeof body.url === 'string' ? Number(body.worker_id) : null, idx: Number(body.request_idx) };
}

/** Run the simulation to the end of the trace (plus the drain) and build its report. */
export async function runSimulation(opts: SimulationOptions): Promise<SimulationResult> {
  const wallStart = performance.now();
  const cfg = opts.config;
  const panic = opts.panic ?? true;
  const clock = new FakeClock(0);
  let t0 = cfg.warmup_seconds * 1000;
  const logger = opts.logger ?? (opts.logFile ? simLogger(opts.logFile, () => (clock.now() - t0) / 1000) : createLogger('simulate', { level: 'silent' }));
  const provider = new SimulatedProvider({
    clock,
    seed: cfg.provider.seed,
    workerMaxQueueTime: cfg.provider.worker_max_queue_time,
    defaults: cfg.provider.defaults,
    machines: cfg.provider.machines,
    validateReports: opts.validated ?? false,
  });
  const engine = new Engine({
    clock,
    provider,
    privateKey: generateRsaKeyPair(1024).privateKeyPem, // signatures are never verified here
    logger,
    timing: cfg.engine,
    reportAddrs: () => ['sim://engine'],
    policy: policyByName(opts.policy ?? 'default'),
  });
  const endpointCfg = { ...cfg.endpoint, ...(opts.params ?? {}), ...(panic ? {} : { panic_window: 0 }) };
  const maxRetries = opts.maxRetries ?? 5;
  const ep = engine.addEndpoint(endpointCfg);

  // Client side.
  const allRecords: ClientRecord[] = [];
  const waiting = new Map<number, ClientRecord>();
  let pending = 0;
  const finish = (rec: ClientRecord, status: Outcome, at = clock.now()) => {
    if (rec.status !== 'pending') return;
    rec.status = status;
    rec.end = at;
    pending--;
  };
  const dispatch = (rec: ClientRecord, workerId: number, idx: number) => {
    rec.idx = idx;
    rec.worker = workerId;
    const r = provider.submit(workerId, rec);
    if (r === 'rejected') finish(rec, 'rejected');
    else if (r === 'unavailable') retry(rec);
  };
  /** The answer of /route/ for `rec`: forward it, wait for the queue, or give up. */
  const follow = (rec: ClientRecord, out: RouteOut) => {
    if (out.status === 200 && out.workerId !== null) {
      // An engine that answers the failed worker again for this request_idx: ask as a new request.
      if (rec.failedWorker !== null && out.workerId === rec.failedWorker && rec.idx === out.idx) return follow(rec, route(rec, 0));
      dispatch(rec, out.workerId, out.idx);
    } else if (out.status === 200) {
      rec.idx = out.idx;
      waiting.set(rec.idx, rec);
    } else finish(rec, 'rejected');
  };
  const validated = opts.validated ?? false;
  const route = (rec: ClientRecord, idx: number): RouteOut => {
    const body = { cost: rec.workload, request_idx: idx, replay_timeout: cfg.client.replay_timeout };
    if (validated) return routeOut(engine.route({ endpoint: ep.name, api_key: ep.apiKey, ...body }));
    const out = engine.routeTrusted(ep, body);
    if ('status' in out) return { status: out.status, workerId: null, idx: 0 };
    // The status the wire answer would have: 200 routed or queued, 408 timed out.
    if (out.state === 'timed_out') return { status: 408, workerId: null, idx: out.idx };
    return { status: 200, workerId: out.state === 'routed' && out.answer ? out.workerId : null, idx: out.idx };
  };
  // As the Vast SDK does after a worker failure: re-route with the same request_idx; an engine
  // that has forgotten it (404) gets the request as a new one. Queue time counts from the first try.
  const retry = (rec: ClientRecord) => {
    if (rec.status !== 'pending') return;
    if (rec.retries >= maxRetries) return finish(rec, 'lost');
    rec.retries++;
    rec.start = null;
    rec.failedWorker = rec.worker;
    let out = rec.idx > 0 ? route(rec, rec.idx) : null;
    if (out === null || out.status === 404) out = route(rec, 0);
    follow(rec, out);
  };
  engine.on('routed', (e) => {
    const rec = waiting.get(e.idx);
    if (!rec || e.workerId === null) return;
    waiting.delete(e.idx);
    dispatch(rec, e.workerId, e.idx);
  });
  engine.on('timedOut', (e) => {
    const rec = waiting.get(e.idx);
    if (!rec) return;
    waiting.delete(e.idx);
    finish(rec, 'timed_out');
  });
  const hooks: ClientHooks = { served: (rec, at) => finish(rec, 'served', at), lost: (rec) => retry(rec) };
  const arrive = (req: TraceRequest) => {
    const rec = new ClientRecord(clock.now(), req.workload, hooks);
    allRecords.push(rec);
    pending++;
    follow(rec, route(rec, 0));
  };

  // Engine-side counters.
  let counting = false;
  const counts = { recruited: 0, errored: 0, destroyed: 0, activations: 0, stops: 0 };
  engine.on('transition', (e) => {
    if (!counting) return;
    if (e.to === 'created') counts.recruited++;
    if (e.to === 'errored') counts.errored++;
    if (e.to === 'destroyed') counts.destroyed++;
    if (e.to === 'starting') counts.activations++;
    if (e.to === 'inactive') counts.stops++;
  });
  let panicEpisodes = 0;
  let wasPanicking = false;
  engine.on('plan', (p) => {
    if (counting && p.plan.panicking && !wasPanicking) panicEpisodes++;
    wasPanicking = p.plan.panicking;
  });

  engine.start();
  const requests = opts.requests;
  const span = requests.length > 0 ? requests[requests.length - 1]!.at : 0;
  const warmupMs = cfg.warmup_seconds * 1000;
  // Warm-up traffic: the trace's last `warmup_traffic_seconds`, ending as the trace begins.
  const preSeconds = Math.min(cfg.warmup_traffic_seconds, cfg.warmup_seconds, span);
  let pre = requests.length;
  while (pre > 0 && requests[pre - 1]!.at >= span - preSeconds) pre--;
  const preShift = warmupMs - span * 1000;
  for (let t = 1000; t <= warmupMs; t += 1000) {
    while (pre < requests.length && preShift + requests[pre]!.at * 1000 < t && preShift + requests[pre]!.at * 1000 < warmupMs) {
      clock.advanceTo(Math.max(clock.now(), preShift + requests[pre]!.at * 1000));
      arrive(requests[pre]!);
      pre++;
    }
    clock.advanceTo(t);
    await flush();
  }
  clock.advanceTo(warmupMs);
  t0 = warmupMs;
  provider.resetBilling();
  counting = true;
  // Warm-up requests are not part of the report (those still open finish in the simulation).
  const warmupRecords = allRecords.length;
  const billedMinutes = Math.max(1, Math.ceil(span / 60));
  const billEnd = t0 + billedMinutes * 60_000;
  const lastArrival = t0 + span * 1000;
  const sampleMs = cfg.sample_seconds * 1000;
  const timeline: TimelineRow[] = [];
  let arrivedSinceSample = 0;
  let maxLive = 0;
  let billing: SimBilling | null = null;
  let i = 0;

  const sample = () => {
    const states = Object.fromEntries(WORKER_STATES.map((s) => [s, 0])) as Record<WorkerState, number>;
    let readyCapacity = 0;
    for (const w of engine.workers.values()) {
      if (w.state === 'destroyed') continue;
      states[w.state]++;
      if (w.state === 'ready') readyCapacity += w.maxPerf;
    }
    states.destroyed = counts.destroyed;
    maxLive = Math.max(
      maxLive,
      WORKER_STATES.filter((s) => s !== 'destroyed').reduce((n, s) => n + states[s], 0),
    );
    timeline.push({
      t: (clock.now() - t0) / 1000,
      load: arrivedSinceSample / cfg.sample_seconds,
      readyCapacity,
      queued: ep.router.waiting(),
      panicking: ep.memory.panicking,
      states,
    });
    arrivedSinceSample = 0;
  };
  sample();
  for (let t = t0; ; t += 1000) {
    const stepEnd = t + 1000;
    while (i < requests.length && t0 + requests[i]!.at * 1000 < stepEnd) {
      const req = requests[i]!;
      clock.advanceTo(t0 + req.at * 1000);
      arrive(req);
      arrivedSinceSample += req.workload;
      i++;
    }
    clock.advanceTo(stepEnd);
    if ((stepEnd - t0) % sampleMs === 0) sample();
    if (billing === null && stepEnd >= billEnd) billing = provider.billing();
    await flush();
    const arrivalsDone = i >= requests.length;
    if (arrivalsDone && billing !== null && (pending === 0 || stepEnd >= lastArrival + cfg.drain_seconds * 1000)) break;
  }
  const simulatedSeconds = (clock.now() - t0) / 1000;
  opts.atEnd?.(engine);
  engine.close();
  await provider.close();
  logger.flush();

  // Report.
  const records = warmupRecords > 0 ? allRecords.slice(warmupRecords) : allRecords;
  const served = records.filter((r) => r.status === 'served');
  const lastRecord = records[records.length - 1];
  // Sorted once, as typed arrays: at ×100 these hold ~900k values and are read for several quantiles.
  const queueTimes = Float64Array.from(
    records.filter((r) => r.start !== null),
    (r) => (r.start! - r.arrival) / 1000,
  ).sort();
  const latencies = Float64Array.from(served, (r) => (r.end! - r.arrival) / 1000).sort();
  const quantile = (sorted: Float64Array, p: number) => (sorted.length === 0 ? Number.NaN : sortedQuantile(sorted, p / 100));
  const machines = cfg.endpoint.workergroups.flatMap((wg) =>
    wg.machine_types.map((m) => ({ name: m.name, dollarsPerHour: m.dollars_per_hour, truePerf: provider.machine(m.name).perf })),
  );
  const oracle = oracleCost(
    requests,
    machines.map((m) => ({ name: m.name, perf: m.truePerf, dollarsPerHour: m.dollarsPerHour })),
    billedMinutes,
  );
  const cost = billing ?? provider.billing();
  const { loadPerMinute: _perMinute, ...oracleBase } = oracle;
  const targetQueueTime = ep.params.target_queue_time > 0 ? ep.params.target_queue_time : ep.params.max_queue_time;
  const overTarget = records.filter((r) => r.start === null || (r.start - r.arrival) / 1000 > targetQueueTime).length;
  const { workersPerMinute: _plan, ...latency } = latencyOracle(
    requests,
    { name: oracle.machine, perf: oracle.perf, dollarsPerHour: oracle.dollarsPerHour },
    billedMinutes,
    targetQueueTime,
  );
  const oracleSummary = { ...oracleBase, latency };
  const round = (n: number, d = 4) => (Number.isFinite(n) ? Math.round(n * 10 ** d) / 10 ** d : n);
  const report: SimulationReport = {
    trace: {
      file: opts.traceFile ?? null,
      requests: requests.length,
      spanSeconds: round(span, 1),
      billedMinutes,
      totalWorkload: round(
        requests.reduce((s, r) => s + r.workload, 0),
        1,
      ),
      promptShare: cfg.workload.prompt_share,
      speed: opts.speed ?? 1,
      attribution: TRACE_ATTRIBUTION,
    },
    panic,
    policy: opts.policy ?? 'default',
    params: { ...ep.params },
    machines,
    cost: {
      gpuHours: round(cost.gpuHours),
      gpuDollars: round(cost.gpuDollars),
      storageHours: round(cost.storageHours),
      storageDollars: round(cost.storageDollars),
      dollars: round(cost.dollars),
      breakdown: Object.fromEntries(
        Object.entries(cost.breakdown).map(([k, v]) => [k, { hours: round(v.hours), dollars: round(v.dollars) }]),
      ) as SimBilling['breakdown'],
    },
    oracle: oracleSummary,
    costRatio: {
      vsFluid: round(cost.dollars / oracle.fluid.dollars, 2),
      vsWholeWorkers: round(cost.dollars / oracle.wholeWorkers.dollars, 2),
      latencyOracleVsWholeWorkers: round(latency.dollars / oracle.wholeWorkers.dollars, 2),
    },
    gpuHoursRatio: round(cost.gpuHours / oracle.fluid.gpuHours, 2),
    queueTime: {
      p50: round(quantile(queueTimes, 50), 3),
      p90: round(quantile(queueTimes, 90), 3),
      p99: round(quantile(queueTimes, 99), 3),
      max: round(queueTimes.length > 0 ? Math.max(0, queueTimes[queueTimes.length - 1]!) : 0, 3),
      mean: round(queueTimes.reduce((a, b) => a + b, 0) / Math.max(1, queueTimes.length), 3),
      last: lastRecord && lastRecord.start !== null ? round((lastRecord.start - lastRecord.arrival) / 1000, 3) : null,
      target: targetQueueTime,
      overTarget,
      overTargetShare: round(overTarget / Math.max(1, records.length), 4),
    },
    latency: { p50: round(quantile(latencies, 50), 3), p99: round(quantile(latencies, 99), 3) },
    requests: {
      total: records.length,
      served: served.length,
      rejected: records.filter((r) => r.status === 'rejected').length,
      timedOut: records.filter((r) => r.status === 'timed_out').length,
      lost: records.filter((r) => r.status === 'lost').length,
      unfinished: records.filter((r) => r.status === 'pending').length,
      retried: records.filter((r) => r.retries > 0).length,
      retries: records.reduce((n, r) => n + r.retries, 0),
    },
    workers: { ...counts, maxLive },
    panicEpisodes,
    perfLearned: engine.perf.snapshot(),
    simulatedSeconds,
    wallSeconds: round((performance.now() - wallStart) / 1000, 3),
  };
  const waits = records.map((r) => ({ at: (r.arrival - t0) / 1000, wait: r.start === null ? null : (r.start - r.arrival) / 1000 }));
  return { report, timeline, waits };
}

/** A JSON logger stamped with simulated seconds (negative during the warm-up) instead of wall time. */
function simLogger(file: string, simSeconds: () => number): Logger {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, ''); // one run per file
  return pino(
    {
      name: 'simulate',
      level: process.env.LOG_LEVEL ?? 'info',
      base: null,
      timestamp: () => `,"sim_s":${simSeconds().toFixed(3)}`,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: file, sync: true }),
  );
}
