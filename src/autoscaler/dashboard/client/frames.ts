/**
 * The dashboard's wire format, shared by the server (collector) and the page: what one
 * server-sent event carries. No DOM and no Node here, so both sides import it.
 *
 * The stream starts with one `init` frame (the full state as of the last sample, with the
 * history ring) and continues with one `tick` frame per sample (~1 Hz) holding only what
 * changed: a new history row per endpoint, the endpoints whose summary changed, and the
 * workers added, changed or gone. Applying the init then every tick in order reproduces the
 * server's state exactly.
 */

/** Worker states shown as series in the "workers by state" chart (destroyed is not a fleet member). */
export const CHART_STATES = ['created', 'loading', 'ready', 'inactive', 'starting', 'errored'] as const;
export type ChartState = (typeof CHART_STATES)[number];

/** Every worker state, in the order the page groups them. */
export const GROUP_ORDER = ['ready', 'starting', 'loading', 'created', 'inactive', 'errored', 'destroyed'] as const;
export type WorkerStateName = (typeof GROUP_ORDER)[number];

/**
 * Columns of one history row. `t` is engine time in seconds; loads are load/s; queue times are
 * seconds (null when no request was routed in the window); state columns count workers.
 */
export const SAMPLE_KEYS = ['t', 'load', 'capacity', 'target', 'queued', 'qp50', 'qp99', 'rejected', ...CHART_STATES] as const;
export type SampleKey = (typeof SAMPLE_KEYS)[number];

/** One history row. */
export type Sample = Record<SampleKey, number | null>;
/** A history, column by column (what uPlot draws), oldest first. */
export type SampleColumns = Record<SampleKey, Array<number | null>>;

/** One worker as the page shows it (no token, no URL). */
export interface WorkerRow {
  id: number;
  endpoint: string;
  /** `workergroup/machine_type`. */
  type: string;
  state: WorkerStateName;
  /** Engine time (ms) of the last state change. */
  since: number;
  reason: string;
  /** `cur_load` of its last report: load queued or in progress at the worker. */
  load: number;
  /** Benchmarked perf (`max_perf`), load/s; 0 until benchmarked. */
  perf: number;
  /** Measured saturated throughput, load/s; 0 until measured. */
  measured: number;
  /** Load served per second over its last report interval. */
  served: number;
  reqs: number;
  /** Expected queue time at the worker, s: load / perf (null before the benchmark). */
  queue: number | null;
  /** Seconds in the current loading phase (created/loading since creation, starting since the start). */
  loadingFor: number | null;
  /** Estimated loading progress 0..0.99 from how long this machine type took before; null when unknown. */
  progress: number | null;
  /** GB written to disk, as reported. */
  disk: number;
  draining: boolean;
  error: string;
}

/** A machine type as the page shows it. */
export interface MachineSummary {
  name: string;
  dollars_per_hour: number;
  storage_dollars_per_hour: number;
  expected_perf?: number;
  /** Perf the engine plans with for this type now (learned, else expected), null when unknown. */
  perf: number | null;
  /** What `perf` is made of, so the page can relate it to the workers' own benchmarked perf. */
  perf_basis: PerfBasis;
}

/**
 * The parts of a type's planned perf. It is not any one worker's perf: it is the mean of the
 * benchmarks of every worker of the type so far, scaled by the throughput measured while they were
 * saturated (bounded ×0.25…×1.1), or the config's `expected_perf` while nothing was learned.
 */
export interface PerfBasis {
  source: 'benchmarks' | 'benchmarks+measured' | 'measured' | 'expected_perf' | 'unknown';
  /** Workers of the type benchmarked so far, and the mean of their `max_perf`. */
  benchmarks: number;
  benchmark_mean: number | null;
  /** Saturated-throughput samples so far, and the sustained figure taken from them (null below the trust threshold). */
  measured: number;
  sustained: number | null;
}

/** An endpoint as the page shows it (no api_key). */
export interface EndpointSummary {
  id: number;
  name: string;
  state: 'active' | 'suspended' | 'stopped';
  /** Every scaling parameter, by its admin API name. */
  params: Record<string, number | string>;
  /** The policy's last plan (loads, targets, capacities), null before the first tick. */
  plan: Record<string, number | boolean> | null;
  queue: { waiting: number; waitingLoad: number; queueTime: number; workerBacklog: number };
  requests: Record<string, number>;
  workergroups: Array<{ name: string; search_params: string; machine_types: MachineSummary[] }>;
}

/** Identifies the last `simulate` report on disk; the page refetches it when this changes. */
export interface ReportStamp {
  mtimeMs: number;
  size: number;
}

/** The first frame of a stream: the full state. */
export interface InitFrame {
  kind: 'init';
  /** Engine time, ms. */
  now: number;
  provider: string;
  sampleMs: number;
  /** Rows kept per endpoint (the page keeps the same number). */
  historySize: number;
  endpoints: EndpointSummary[];
  workers: WorkerRow[];
  history: Record<string, SampleColumns>;
  report: ReportStamp | null;
  /** The engine's state journal: null without persistence; `ok: false` while it cannot be written. */
  store: StoreStatus | null;
}

/** What the page shows of the state journal (the rest is on /healthz and /metrics). */
export interface StoreStatus {
  ok: boolean;
  error: string | null;
  failingSince: number | null;
}

/** Every later frame: what changed since the previous one. */
export interface TickFrame {
  kind: 'tick';
  now: number;
  /** Endpoints whose summary changed (or that are new). */
  endpoints: EndpointSummary[];
  /** Names of endpoints that were deleted. */
  removedEndpoints: string[];
  /** The new history row of each endpoint. */
  samples: Record<string, Sample>;
  /** Workers that are new or changed. */
  upsert: WorkerRow[];
  /** Ids of workers the engine forgot. */
  remove: number[];
  report: ReportStamp | null;
  store: StoreStatus | null;
}

export type Frame = InitFrame | TickFrame;

/** An empty history. */
export function emptyColumns(): SampleColumns {
  return Object.fromEntries(SAMPLE_KEYS.map((k) => [k, []])) as unknown as SampleColumns;
}
