import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { FifoGate } from './admission.js';
import type { Ledger, Outcome, RequestEntry } from './ledger.js';
import { WORKER_STATES, type Lifecycle } from './lifecycle.js';
import type { RequestObserver } from './proxy.js';
import type { Reporter } from './reporter.js';
import type { SessionStore } from './sessions.js';
import type { WorkerExtension } from './worker.js';

/**
 * The worker's Prometheus metrics (`GET /metrics`, text format 0.0.4), on a registry of its own so
 * several workers in one process never share a series.
 *
 * Hot-path cost: a request touches one Map lookup (its route's record), plain number increments and
 * two histogram observations on cached children; every other value (workload totals, in-flight,
 * queue depth, lifecycle state, report outcomes, delete backlog, sessions) is read from its owner at
 * scrape time. Nothing here keeps a count that the ledger also keeps: the workload counters are the
 * ledger's `totals`.
 */
export interface MetricsSources {
  ledger: Ledger;
  lifecycle: Lifecycle;
  gate: FifoGate;
  reporter?: Reporter;
  /** Open sessions, when the sessions extension runs. */
  sessions?: () => SessionStore | null;
  /** Worker version for `nodeworker_build_info`. */
  version?: string;
}

export interface MetricsOptions {
  /** Add prom-client's default process metrics (default true). */
  defaultMetrics?: boolean;
}

/** How a request that never reached the ledger was answered, as the `outcome` label says it. */
export function refusedOutcome(status: number): string {
  if (status === 410) return 'invalid_session';
  if (status === 413 || status === 422) return 'invalid';
  if (status === 503) return 'draining';
  return 'refused';
}

/** Request-duration buckets (s): LLM answers run from milliseconds to minutes. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TTFB_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** prom-client's gauges that end in `_total`, which `promtool check metrics` rejects for non-counters. */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/**
 * prom-client's default process metrics, minus the three gauges whose names end in `_total` (lint
 * errors); the same values remain, by type, in nodejs_active_handles / _requests / _resources.
 */
export function addProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(name);
}

/** One route's observations: bucket counts (not cumulative), sum and count. */
class HistogramCell {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length);
  }
  /** O(buckets), no allocation: what a request pays. */
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    if (i < b.length) this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

/**
 * A histogram labelled by route whose observations cost no allocation and no label hashing
 * (prom-client's own histogram hashes the label object on every observe: ~1.5 µs a request).
 * It implements the metric shape prom-client's Registry formats (`name, help, type, aggregator,
 * get()`), so it is exposed like any other metric; the text is checked by promtool in the tests.
 */
class RouteHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly cells = new Map<string, HistogramCell>();
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {}

  cell(route: string): HistogramCell {
    let c = this.cells.get(route);
    if (!c) {
      c = new HistogramCell(this.bounds);
      this.cells.set(route, c);
    }
    return c;
  }

  get() {
    const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
    for (const [route, c] of this.cells) {
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += c.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { route, le }, value: acc });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { route, le: '+Inf' }, value: c.count });
      values.push({ metricName: `${this.name}_sum`, labels: { route }, value: c.sum });
      values.push({ metricName: `${this.name}_count`, labels: { route }, value: c.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.cells.clear();
  }
}

interface RouteRecord {
  /** Requests by outcome label (ledger outcomes and refusals). */
  outcomes: Record<string, number>;
  duration: HistogramCell;
  firstByte: HistogramCell;
}

/** Metrics of one worker: feed it through `observer` and `onLedgerEnd`, read it with `text()`. */
export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly routes = new Map<string, RouteRecord>();
  private readonly duration: RouteHistogram;
  private readonly firstByte: RouteHistogram;

  constructor(src: MetricsSources, opts: MetricsOptions = {}) {
    const register = [this.registry];
    const routes = this.routes;
    const { ledger, lifecycle, gate } = src;

    new Counter({
      name: 'nodeworker_requests_total',
      help: 'Requests by route and outcome: success, error, cancelled, rejected (401/429) from the ledger; invalid (413/422), invalid_session (410), draining (503) for requests refused before admission. Sessions count under /session/create when they close (or are refused).',
      labelNames: ['route', 'outcome'] as const,
      registers: register,
      collect() {
        this.reset();
        for (const [route, r] of routes) for (const outcome in r.outcomes) this.labels(route, outcome).inc(r.outcomes[outcome]);
      },
    });
    new Gauge({
      name: 'nodeworker_requests_in_flight',
      help: 'Requests being served right now (admitted, not yet answered).',
      registers: register,
      collect() {
        this.set(ledger.inflight);
      },
    });
    new Gauge({
      name: 'nodeworker_requests_working',
      help: 'Working requests as reported to the engine (num_requests_working; open sessions count one each).',
      registers: register,
      collect() {
        this.set(ledger.workingCount);
      },
    });
    new Gauge({
      name: 'nodeworker_queue_depth',
      help: 'Requests waiting at the FIFO gate of handlers that serve one request at a time.',
      registers: register,
      collect() {
        this.set(gate.waiting);
      },
    });
    new Gauge({
      name: 'nodeworker_expected_queue_time_seconds',
      help: 'Expected queue time for a new request: working non-session workload / perf (the 429 check).',
      registers: register,
      collect() {
        this.set(ledger.expectedQueueTime());
      },
    });
    new Gauge({
      name: 'nodeworker_current_load',
      help: 'Workload of the working requests (cur_load of the report).',
      registers: register,
      collect() {
        this.set(ledger.curLoad);
      },
    });
    new Counter({
      name: 'nodeworker_workload_total',
      help: 'Workload since start by kind (received, served, errored, cancelled, rejected): the ledger totals, never reset.',
      labelNames: ['kind'] as const,
      registers: register,
      collect() {
        this.reset();
        const t = ledger.totals;
        this.labels('received').inc(t.received);
        this.labels('served').inc(t.served);
        this.labels('errored').inc(t.errored);
        this.labels('cancelled').inc(t.cancelled);
        this.labels('rejected').inc(t.rejected);
      },
    });
    new Gauge({
      name: 'nodeworker_perf',
      help: 'Benchmarked perf: workload resolved per second (max_perf of the report).',
      registers: register,
      collect() {
        this.set(ledger.maxPerf);
      },
    });
    new Gauge({
      name: 'nodeworker_loadtime_seconds',
      help: 'Seconds from start to ready (0 before ready).',
      registers: register,
      collect() {
        this.set(lifecycle.loadtime);
      },
    });
    new Gauge({
      name: 'nodeworker_state',
      help: 'Lifecycle state: 1 for the current state, 0 for the others.',
      labelNames: ['state'] as const,
      registers: register,
      collect() {
        const now = lifecycle.state;
        for (const s of WORKER_STATES) this.labels(s).set(s === now ? 1 : 0);
      },
    });
    new Gauge({
      name: 'nodeworker_error',
      help: '1 while error_msg is set (the engine sees the worker as errored).',
      registers: register,
      collect() {
        this.set(ledger.errorMsg === '' ? 0 : 1);
      },
    });
    this.duration = new RouteHistogram('nodeworker_request_duration_seconds', 'Time from admission to the end of the answer, by route.', DURATION_BUCKETS);
    this.firstByte = new RouteHistogram(
      'nodeworker_time_to_first_byte_seconds',
      "Time from admission to the first byte of the model's answer body (streamed or not), by route.",
      TTFB_BUCKETS,
    );
    // Duck-typed metrics: see RouteHistogram.
    this.registry.registerMetric(this.duration as unknown as Metric);
    this.registry.registerMetric(this.firstByte as unknown as Metric);

    const reporter = src.reporter;
    if (reporter) {
      new Counter({
        name: 'nodeworker_reports_total',
        help: 'Report rounds to the engine by kind (worker_status, delete_requests) and result (ok, failed: no address accepted it).',
        labelNames: ['kind', 'result'] as const,
        registers: register,
        collect() {
          this.reset();
          const s = reporter.stats;
          this.labels('worker_status', 'ok').inc(s.statusOk);
          this.labels('worker_status', 'failed').inc(s.statusFailed);
          this.labels('delete_requests', 'ok').inc(s.deleteOk);
          this.labels('delete_requests', 'failed').inc(s.deleteFailed);
        },
      });
      new Counter({
        name: 'nodeworker_report_failures_total',
        help: 'Report rounds that no engine address accepted, by kind.',
        labelNames: ['kind'] as const,
        registers: register,
        collect() {
          this.reset();
          this.labels('worker_status').inc(reporter.stats.statusFailed);
          this.labels('delete_requests').inc(reporter.stats.deleteFailed);
        },
      });
    }
    new Gauge({
      name: 'nodeworker_delete_backlog',
      help: "Ended request_idxs not yet acknowledged by /delete_requests/, by the post's success flag.",
      labelNames: ['success'] as const,
      registers: register,
      collect() {
        this.labels('true').set(ledger.deleteSucceeded.size);
        this.labels('false').set(ledger.deleteFailed.size);
      },
    });
    new Gauge({
      name: 'nodeworker_delete_backlog_dropped',
      help: 'Ended request_idxs dropped from a full /delete_requests/ backlog (the engine did not acknowledge for a long while).',
      registers: register,
      collect() {
        this.set(ledger.deletesDropped);
      },
    });
    new Gauge({
      name: 'nodeworker_delete_backlog_bytes',
      help: 'Memory held by the /delete_requests/ backlog.',
      registers: register,
      collect() {
        this.set(ledger.deleteSucceeded.bytes() + ledger.deleteFailed.bytes());
      },
    });

    const sessions = src.sessions;
    if (sessions) {
      new Gauge({
        name: 'nodeworker_sessions_open',
        help: 'Open sessions.',
        registers: register,
        collect() {
          this.set(sessions()?.size ?? 0);
        },
      });
      new Gauge({
        name: 'nodeworker_sessions_max',
        help: 'Open sessions allowed (max_sessions).',
        registers: register,
        collect() {
          this.set(sessions()?.maxSessions ?? 0);
        },
      });
      new Counter({
        name: 'nodeworker_sessions_closed_total',
        help: 'Sessions closed since start, by reason (ended, expired, shutdown).',
        labelNames: ['reason'] as const,
        registers: register,
        collect() {
          this.reset();
          const closed = sessions()?.closedTotal;
          if (!closed) return;
          for (const reason of ['ended', 'expired', 'shutdown'] as const) this.labels(reason).inc(closed[reason]);
        },
      });
    }
    new Gauge({
      name: 'nodeworker_build_info',
      help: 'Always 1; the worker version is the label.',
      labelNames: ['version'] as const,
      registers: register,
    }).set({ version: src.version ?? 'unknown' }, 1);

    if (opts.defaultMetrics ?? true) addProcessMetrics(this.registry);
  }

  private route(route: string): RouteRecord {
    let r = this.routes.get(route);
    if (!r) {
      r = { outcomes: {}, duration: this.duration.cell(route), firstByte: this.firstByte.cell(route) };
      this.routes.set(route, r);
    }
    return r;
  }

  private count(route: string, outcome: string): void {
    const o = this.route(route).outcomes;
    o[outcome] = (o[outcome] ?? 0) + 1;
  }

  /** Every request that ends in the ledger (requests, sessions, rejections). */
  readonly onLedgerEnd = (entry: RequestEntry, outcome: Outcome): void => {
    this.count(entry.route, outcome);
  };

  /** Hooks of the request path. */
  readonly observer: RequestObserver = {
    onFirstByte: (entry, ms) => this.route(entry.route).firstByte.observe(ms / 1000),
    onFinished: (entry, _status, ms) => this.route(entry.route).duration.observe(ms / 1000),
    onRefused: (route, status) => this.count(route, refusedOutcome(status)),
  };

  /** The exposition text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

export interface MetricsExtensionOptions extends MetricsOptions {
  /** Where the sessions extension keeps its store (for the session gauges). */
  sessions?: () => SessionStore | null;
}

/** `/metrics` as a worker extension. */
export function metricsExtension(opts: MetricsExtensionOptions = {}): WorkerExtension & { metrics(): WorkerMetrics | null } {
  let metrics: WorkerMetrics | null = null;
  return {
    name: 'metrics',
    metrics: () => metrics,
    setup(ctx) {
      const m = new WorkerMetrics(
        { ledger: ctx.ledger, lifecycle: ctx.lifecycle, gate: ctx.gate, reporter: ctx.reporter, sessions: opts.sessions, version: ctx.config.report.version },
        opts,
      );
      metrics = m;
      const off = ctx.ledger.onEnd(m.onLedgerEnd);
      ctx.app.get('/metrics', async (c) => c.body(await m.text(), 200, { 'content-type': m.contentType }));
      return {
        observer: m.observer,
        close: () => {
          off();
          m.registry.clear();
        },
      };
    },
  };
}
