import {
  SAMPLE_KEYS,
  emptyColumns,
  type EndpointSummary,
  type Frame,
  type ReportStamp,
  type SampleColumns,
  type StoreStatus,
  type WorkerRow,
} from './frames.js';

/**
 * The page's copy of the engine's state, built from the stream's frames. No DOM: the views
 * read it, and tests apply real frames to it under Node.
 *
 * Guarantees: after an `init` and any number of `tick`s applied in order, `endpoints`,
 * `workers` and `history` equal the server's state as of the last frame; history columns
 * never exceed `historySize` rows.
 */

/** What one frame changed, so views redraw only that. */
export interface Change {
  /** An init: everything changed. */
  full: boolean;
  endpoints: Set<string>;
  removedEndpoints: string[];
  workers: Set<number>;
  removedWorkers: number[];
  /** Endpoints that got a history row. */
  sampled: Set<string>;
  reportChanged: boolean;
}

export class DashboardModel {
  now = 0;
  provider = '';
  sampleMs = 1000;
  historySize = 3600;
  readonly endpoints = new Map<string, EndpointSummary>();
  readonly workers = new Map<number, WorkerRow>();
  readonly history = new Map<string, SampleColumns>();
  report: ReportStamp | null = null;
  /** The state journal's health (null: no persistence). */
  store: StoreStatus | null = null;
  /** Frames applied since the last init. */
  ticks = 0;

  /** Apply one frame (an init replaces everything). */
  apply(frame: Frame): Change {
    const change: Change = {
      full: frame.kind === 'init',
      endpoints: new Set(),
      removedEndpoints: [],
      workers: new Set(),
      removedWorkers: [],
      sampled: new Set(),
      reportChanged: false,
    };
    this.now = frame.now;
    this.store = frame.store;
    if (frame.kind === 'init') {
      this.provider = frame.provider;
      this.sampleMs = frame.sampleMs;
      this.historySize = frame.historySize;
      this.endpoints.clear();
      this.workers.clear();
      this.history.clear();
      this.ticks = 0;
      for (const ep of frame.endpoints) {
        this.endpoints.set(ep.name, ep);
        change.endpoints.add(ep.name);
      }
      for (const w of frame.workers) {
        this.workers.set(w.id, w);
        change.workers.add(w.id);
      }
      for (const [name, cols] of Object.entries(frame.history)) {
        this.history.set(name, cols);
        change.sampled.add(name);
      }
      change.reportChanged = true;
      this.report = frame.report;
      return change;
    }

    this.ticks++;
    for (const ep of frame.endpoints) {
      this.endpoints.set(ep.name, ep);
      change.endpoints.add(ep.name);
    }
    for (const name of frame.removedEndpoints) {
      this.endpoints.delete(name);
      this.history.delete(name);
      change.removedEndpoints.push(name);
    }
    for (const w of frame.upsert) {
      this.workers.set(w.id, w);
      change.workers.add(w.id);
    }
    for (const id of frame.remove) {
      this.workers.delete(id);
      change.removedWorkers.push(id);
    }
    for (const [name, row] of Object.entries(frame.samples)) {
      let cols = this.history.get(name);
      if (!cols) {
        cols = emptyColumns();
        this.history.set(name, cols);
      }
      for (const k of SAMPLE_KEYS) cols[k].push(row[k]);
      const excess = cols.t.length - this.historySize;
      if (excess > 0) for (const k of SAMPLE_KEYS) cols[k].splice(0, excess);
      change.sampled.add(name);
    }
    const stamp = frame.report;
    if ((stamp?.mtimeMs ?? null) !== (this.report?.mtimeMs ?? null) || (stamp?.size ?? null) !== (this.report?.size ?? null)) change.reportChanged = true;
    this.report = stamp;
    return change;
  }

  /** Workers of one endpoint. */
  workersOf(endpoint: string): WorkerRow[] {
    const out: WorkerRow[] = [];
    for (const w of this.workers.values()) if (w.endpoint === endpoint) out.push(w);
    return out;
  }
}
