import { percentile } from '../../common/util.js';
import type { Clock } from '../clock.js';
import type { Engine, EndpointRuntime, WorkerRecord } from '../engine.js';
import { windowRate } from '../load-history.js';
import {
  CHART_STATES,
  type ChartState,
  type EndpointSummary,
  type InitFrame,
  type PerfBasis,
  type ReportStamp,
  type Sample,
  type StoreStatus,
  type TickFrame,
  type WorkerRow,
} from './client/frames.js';
import { reportStamp } from './report.js';
import { SampleRing } from './ring.js';

/**
 * What the dashboard streams: the engine sampled at a fixed wall-clock period (default 1 s)
 * into a history ring per endpoint, plus worker rows and endpoint summaries turned into
 * deltas. One JSON string per sample is shared by every open stream, so 10 pages cost what
 * one does.
 *
 * Guarantees: `init()` is the state as of the last sample, and the tick frames that follow
 * it are deltas against exactly that state; the history never holds more than
 * `historySize` rows per endpoint; nothing here holds a secret (no api keys, no tokens).
 */

export interface CollectorOptions {
  engine: Engine;
  /** The engine's clock: samples are stamped in engine time. */
  clock: Clock;
  /** The provider's kind, shown on the page. */
  providerKind: string;
  /** Wall-clock milliseconds between samples (default 1000). */
  sampleMs?: number;
  /** Rows of history kept per endpoint (default 3600: an hour at 1 Hz). */
  historySize?: number;
  /** Directory of the last `simulate` run (its report.json), or null for none. */
  reportDir?: string | null;
  /** Engine seconds of routed requests the queue-time percentiles cover (default 10). */
  queueWindowSeconds?: number;
}

/** A stream fed by the collector. */
export interface FrameSink {
  /** A tick frame, already JSON. */
  frame(json: string): void;
  /** The collector is closing: end the stream. */
  end(): void;
}

interface EndpointTrack {
  ring: SampleRing;
  /** Expected queue time of recently routed requests (engine ms, s). */
  waits: Array<{ at: number; wait: number }>;
  /** Cost of requests that timed out in the engine's queue since the last sample. */
  timedOutLoad: number;
  lastSampleAt: number;
  summaryJson: string;
}

/** Durations (s) a machine type took to load or to start, the last few of them. */
class DurationBook {
  private byType = new Map<string, number[]>();
  add(type: string, seconds: number): void {
    if (!(seconds > 0)) return;
    const list = this.byType.get(type) ?? [];
    list.push(seconds);
    if (list.length > 20) list.shift();
    this.byType.set(type, list);
  }
  /** Mean of the recorded durations, or null. */
  mean(type: string): number | null {
    const list = this.byType.get(type);
    return list && list.length > 0 ? list.reduce((a, b) => a + b, 0) / list.length : null;
  }
}

/** Most waits kept per endpoint, whatever the clock does (a frozen fake clock never trims). */
const MAX_WAITS = 20_000;

export class DashboardCollector {
  readonly sampleMs: number;
  readonly historySize: number;
  private readonly engine: Engine;
  private readonly clock: Clock;
  private readonly providerKind: string;
  private readonly reportDir: string | null;
  private readonly queueWindowMs: number;
  private readonly tracks = new Map<string, EndpointTrack>();
  private readonly summaries = new Map<string, EndpointSummary>();
  private rows = new Map<number, { row: WorkerRow; json: string }>();
  private readonly prevRejected = new Map<number, number>();
  private readonly loadTimes = new DurationBook();
  private readonly startTimes = new DurationBook();
  private readonly startingSince = new Map<number, number>();
  private readonly sinks = new Set<FrameSink>();
  private readonly unsubscribe: Array<() => void> = [];
  private timer: NodeJS.Timeout | null = null;
  private lastNow = 0;
  private lastReport: ReportStamp | null = null;

  constructor(opts: CollectorOptions) {
    this.engine = opts.engine;
    this.clock = opts.clock;
    this.providerKind = opts.providerKind;
    this.sampleMs = opts.sampleMs ?? 1000;
    this.historySize = opts.historySize ?? 3600;
    this.reportDir = opts.reportDir ?? null;
    this.queueWindowMs = (opts.queueWindowSeconds ?? 10) * 1000;
    this.unsubscribe.push(
      this.engine.on('routed', (e) => {
        const track = this.tracks.get(e.endpoint);
        if (!track) return;
        track.waits.push({ at: e.routedAt ?? this.clock.now(), wait: e.expectedQueueTime ?? 0 });
        if (track.waits.length > MAX_WAITS) track.waits.splice(0, track.waits.length - MAX_WAITS);
      }),
      this.engine.on('timedOut', (e) => {
        const track = this.tracks.get(e.endpoint);
        if (track) track.timedOutLoad += e.cost;
      }),
      this.engine.on('transition', (e) => this.onTransition(e.worker, e.from, e.to, e.at)),
    );
  }

  /** Take a first sample now, then one every `sampleMs`. */
  start(): void {
    if (this.timer) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.sampleMs);
    this.timer.unref();
  }

  /** Stop sampling, end every stream, detach from the engine. Idempotent. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const u of this.unsubscribe.splice(0)) u();
    for (const s of [...this.sinks]) s.end();
    this.sinks.clear();
  }

  /** Receive every tick frame from now on; returns the unsubscribe function. */
  subscribe(sink: FrameSink): () => void {
    this.sinks.add(sink);
    return () => this.sinks.delete(sink);
  }

  /** Streams open now. */
  get subscribers(): number {
    return this.sinks.size;
  }

  /** The full state as of the last sample: the first frame of a stream. */
  init(): InitFrame {
    return {
      kind: 'init',
      now: this.lastNow,
      provider: this.providerKind,
      sampleMs: this.sampleMs,
      historySize: this.historySize,
      endpoints: [...this.summaries.values()],
      workers: [...this.rows.values()].map((r) => r.row),
      history: Object.fromEntries([...this.tracks].map(([name, t]) => [name, t.ring.columns()])),
      report: this.lastReport,
      store: this.storeStatus(),
    };
  }

  private storeStatus(): StoreStatus | null {
    const h = this.engine.storeHealth();
    return h && { ok: h.ok, error: h.error, failingSince: h.failingSince };
  }

  /** Sample the engine now and send the delta to every stream; returns the frame (tests read it). */
  sample(): TickFrame {
    const now = this.clock.now();
    this.lastNow = now;
    const byEndpoint = new Map<string, WorkerRecord[]>();
    for (const w of this.engine.workers.values()) {
      const list = byEndpoint.get(w.endpoint);
      if (list) list.push(w);
      else byEndpoint.set(w.endpoint, [w]);
    }

    const frame: TickFrame = {
      kind: 'tick',
      now,
      endpoints: [],
      removedEndpoints: [],
      samples: {},
      upsert: [],
      remove: [],
      report: null,
      store: this.storeStatus(),
    };
    for (const ep of this.engine.endpoints.values()) {
      let track = this.tracks.get(ep.name);
      if (!track) {
        track = { ring: new SampleRing(this.historySize), waits: [], timedOutLoad: 0, lastSampleAt: now, summaryJson: '' };
        this.tracks.set(ep.name, track);
      }
      const workers = byEndpoint.get(ep.name) ?? [];
      const row = this.sampleEndpoint(ep, track, workers, now);
      track.ring.push(row);
      frame.samples[ep.name] = row;
      const summary = this.summarize(ep);
      const json = JSON.stringify(summary);
      if (json !== track.summaryJson) {
        track.summaryJson = json;
        frame.endpoints.push(summary);
      }
      this.summaries.set(ep.name, summary);
    }
    for (const name of [...this.tracks.keys()]) {
      if (this.engine.endpoints.has(name)) continue;
      this.tracks.delete(name);
      this.summaries.delete(name);
      frame.removedEndpoints.push(name);
    }

    const rows = new Map<number, { row: WorkerRow; json: string }>();
    for (const w of this.engine.workers.values()) {
      const row = this.rowOf(w, now);
      const json = JSON.stringify(row);
      rows.set(w.id, { row, json });
      if (this.rows.get(w.id)?.json !== json) frame.upsert.push(row);
    }
    for (const id of this.rows.keys()) {
      if (rows.has(id)) continue;
      frame.remove.push(id);
      this.prevRejected.delete(id);
      this.startingSince.delete(id);
    }
    this.rows = rows;

    this.lastReport = this.reportDir ? reportStamp(this.reportDir) : null;
    frame.report = this.lastReport;
    const json = JSON.stringify(frame);
    for (const s of this.sinks) s.frame(json);
    return frame;
  }

  private sampleEndpoint(ep: EndpointRuntime, track: EndpointTrack, workers: readonly WorkerRecord[], now: number): Sample {
    const dtS = Math.max(1, (now - track.lastSampleAt) / 1000);
    track.lastSampleAt = now;
    const states = Object.fromEntries(CHART_STATES.map((s) => [s, 0])) as Record<ChartState, number>;
    let capacity = 0;
    let refused = 0;
    for (const w of workers) {
      if (w.state !== 'destroyed') states[w.state]++;
      if (w.state === 'ready') capacity += w.maxPerf;
      refused += this.refusedSince(w);
    }
    const from = now - this.queueWindowMs;
    let cut = 0;
    while (cut < track.waits.length && track.waits[cut]!.at < from) cut++;
    if (cut > 0) track.waits.splice(0, cut);
    const waits = track.waits.map((x) => x.wait);
    const rejected = (track.timedOutLoad + refused) / dtS;
    track.timedOutLoad = 0;
    return {
      t: now / 1000,
      load: round(windowRate(ep.history, now, dtS)),
      capacity: round(capacity),
      target: ep.lastPlan ? round(this.reachableTarget(ep, workers, ep.lastPlan.activeTarget)) : null,
      queued: ep.router.waiting(),
      qp50: waits.length > 0 ? round(percentile(waits, 50)) : null,
      qp99: waits.length > 0 ? round(percentile(waits, 99)) : null,
      rejected: round(rejected),
      ...states,
    };
  }

  /**
   * The active target as the capacity chart draws it: at most what max_workers of the fastest
   * known machine can serve. The policy's target may ask for more (a burst, a min_load floor);
   * drawn as is it sat far above every reachable capacity and squashed the chart.
   */
  private reachableTarget(ep: EndpointRuntime, workers: readonly WorkerRecord[], target: number): number {
    let best = 0;
    for (const w of workers) best = Math.max(best, w.maxPerf);
    for (const m of this.engine.machinesOf(ep)) best = Math.max(best, m.perf ?? 0);
    const reach = ep.params.max_workers * best;
    return reach > 0 ? Math.min(target, reach) : target;
  }

  /**
   * Load the worker refused (401/429) since the last sample, from the engine's running sum of
   * the reports' `rej_load`.
   */
  private refusedSince(w: WorkerRecord): number {
    const total = w.rejLoad;
    const prev = this.prevRejected.get(w.id) ?? total;
    this.prevRejected.set(w.id, total);
    return Math.max(0, total - prev);
  }

  /** Where a type's planned perf comes from (the same precedence as Scaler.machinesOf). */
  private perfBasis(key: string, expected: number | undefined): PerfBasis {
    const k = this.engine.perf.get(key);
    const sustained = this.engine.perf.sustained(key);
    const benchmarks = k?.benchmarks ?? 0;
    const source: PerfBasis['source'] =
      benchmarks > 0
        ? sustained !== null
          ? 'benchmarks+measured'
          : 'benchmarks'
        : sustained !== null
          ? 'measured'
          : expected !== undefined
            ? 'expected_perf'
            : 'unknown';
    return {
      source,
      benchmarks,
      benchmark_mean: benchmarks > 0 ? round(k!.benchmarkMean) : null,
      measured: k?.measured ?? 0,
      sustained: sustained === null ? null : round(sustained),
    };
  }

  private summarize(ep: EndpointRuntime): EndpointSummary {
    const planned = new Map(this.engine.machinesOf(ep).map((m) => [m.key, m.perf]));
    const q = ep.router.signal();
    return {
      id: ep.id,
      name: ep.name,
      state: ep.state,
      params: { ...ep.params },
      plan: ep.lastPlan ? Object.fromEntries(Object.entries(ep.lastPlan).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v])) : null,
      queue: { waiting: q.waiting, waitingLoad: round(q.waitingLoad), queueTime: round(q.queueTime), workerBacklog: round(q.workerBacklog) },
      requests: { ...ep.router.stats, reqnum: ep.router.lastReqnum() },
      workergroups: [...ep.workergroups.values()].map((wg) => ({
        name: wg.name,
        search_params: wg.search_params,
        machine_types: wg.machine_types.map((m) => ({
          name: m.name,
          dollars_per_hour: m.dollars_per_hour,
          storage_dollars_per_hour: m.storage_dollars_per_hour,
          ...(m.expected_perf !== undefined ? { expected_perf: m.expected_perf } : {}),
          perf: ((p) => (p === null || p === undefined ? null : round(p)))(planned.get(`${wg.name}/${m.name}`)),
          perf_basis: this.perfBasis(`${wg.name}/${m.name}`, m.expected_perf),
        })),
      })),
    };
  }

  private rowOf(w: WorkerRecord, now: number): WorkerRow {
    let loadingFor: number | null = null;
    let expected: number | null = null;
    if (w.state === 'created' || w.state === 'loading') {
      loadingFor = (now - w.createdAt) / 1000;
      expected = this.loadTimes.mean(w.typeKey);
    } else if (w.state === 'starting') {
      loadingFor = (now - w.stateSince) / 1000;
      expected = this.startTimes.mean(w.typeKey);
    }
    return {
      id: w.id,
      endpoint: w.endpoint,
      type: w.typeKey,
      state: w.state,
      since: w.stateSince,
      reason: w.stateReason,
      load: round(w.curLoad),
      perf: round(w.maxPerf),
      measured: round(w.measuredPerf),
      served: round(w.curPerf),
      reqs: w.reqsWorking,
      queue: w.maxPerf > 0 ? round(w.curLoad / w.maxPerf) : null,
      loadingFor: loadingFor === null ? null : Math.round(loadingFor * 10) / 10,
      progress: loadingFor !== null && expected ? round(Math.min(0.99, loadingFor / expected)) : null,
      disk: round(w.diskUsage),
      draining: w.draining,
      error: w.errorMsg,
    };
  }

  /** Learn how long each machine type takes to load (creation → ready) and to start (starting → ready). */
  private onTransition(id: number, from: string | null, to: string, at: number): void {
    if (to === 'starting') this.startingSince.set(id, at);
    if (to !== 'ready') return;
    const w = this.engine.workers.get(id);
    if (!w) return;
    if (from === 'starting') {
      const since = this.startingSince.get(id);
      if (since !== undefined) this.startTimes.add(w.typeKey, (at - since) / 1000);
      this.startingSince.delete(id);
    } else {
      this.loadTimes.add(w.typeKey, (at - w.createdAt) / 1000);
    }
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
