import { IdQueue } from './id-queue.js';

/**
 * The ledger: the one owner of per-request state and of every counter of PROTOCOL §3.
 *
 * Invariant: every request that enters through `receive()` ends exactly once, through `end()`
 * or `reject()`, in exactly one terminal state (success, error, cancelled, rejected), and, unless it
 * runs inside a session, its request_idx is queued exactly once for /delete_requests/ at that
 * moment. A second end of the same request is ignored and returns false. Counters only change here.
 *
 * Counters reset after a report got through: the reporter takes a `snapshot()`, posts it, and calls
 * `commitReport(snapshot)`, which subtracts what was reported, so load that arrives while a report
 * is in flight is kept for the next one.
 */
export type Outcome = 'success' | 'error' | 'cancelled' | 'rejected';
export type RequestState = 'created' | 'started' | Outcome;

export interface RequestEntry {
  readonly id: number;
  readonly requestIdx: number;
  readonly reqnum: number;
  readonly workload: number;
  readonly route: string;
  /** A request sent inside a session: counted in workload, not in the working set or deletes. */
  readonly sessionBound: boolean;
  /** The session itself, counted as one working request until it closes. */
  readonly isSession: boolean;
  state: RequestState;
  readonly receivedAt: number;
}

export interface WorkloadCounters {
  received: number;
  served: number;
  errored: number;
  cancelled: number;
  rejected: number;
}

export interface LedgerSnapshot {
  readonly version: number;
  readonly counters: Readonly<WorkloadCounters>;
  /** Load started and not ended (kept across reports). */
  readonly workloadPending: number;
  /** Sum of workload of the working set (sessions included). */
  readonly curLoad: number;
  readonly numRequestsWorking: number;
  readonly workingRequestIdxs: number[];
  /** reqnums received since the last report that got through. */
  readonly numRequestsReceived: number;
  readonly receivedMark: number;
  readonly maxPerf: number;
  readonly errorMsg: string;
}

export type LedgerListener = (entry: RequestEntry, outcome: Outcome) => void;

export class Ledger {
  private nextId = 1;
  private readonly working = new Map<number, RequestEntry>();
  private counters: WorkloadCounters = { received: 0, served: 0, errored: 0, cancelled: 0, rejected: 0 };
  private pending = 0;
  /** Started requests not ended yet, sessions themselves excluded (they end when they close). */
  private active = 0;
  private workingLoad = 0;
  /** Workload of working requests that are not sessions: what the queue-time check divides by perf. */
  private queuedLoad = 0;
  private receivedSinceReport = 0;
  private receivedCommitted = 0;
  private perf = 0;
  private error = '';
  private listeners: LedgerListener[] = [];
  /** Bumped on every change, so the reporter can tell "something changed". */
  version = 0;
  /** Ended request_idxs awaiting /delete_requests/, split by the `success` flag of the post. */
  readonly deleteSucceeded = new IdQueue();
  readonly deleteFailed = new IdQueue();
  /** Totals since start, never reset (for /metrics, /healthz and invariant checks). */
  readonly totals: WorkloadCounters & { requests: number; ended: number } = {
    received: 0,
    served: 0,
    errored: 0,
    cancelled: 0,
    rejected: 0,
    requests: 0,
    ended: 0,
  };

  /** Register a request as Created. */
  create(init: { requestIdx: number; reqnum: number; workload: number; route: string; sessionBound?: boolean; isSession?: boolean }): RequestEntry {
    this.totals.requests++;
    return {
      id: this.nextId++,
      requestIdx: init.requestIdx,
      reqnum: init.reqnum,
      workload: init.workload,
      route: init.route,
      sessionBound: init.sessionBound ?? false,
      isSession: init.isSession ?? false,
      state: 'created',
      receivedAt: performance.now(),
    };
  }

  /** Created → Started: the request was admitted and counts as received and working. */
  start(e: RequestEntry): void {
    if (e.state !== 'created') return;
    e.state = 'started';
    this.counters.received += e.workload;
    this.totals.received += e.workload;
    this.pending += e.workload;
    this.receivedSinceReport++;
    if (!e.isSession) this.active++;
    if (!e.sessionBound) {
      this.working.set(e.id, e);
      this.workingLoad += e.workload;
      if (!e.isSession) this.queuedLoad += e.workload;
    }
    this.version++;
  }

  /** Created → Rejected (401, 429). Returns false when the request had already moved on. */
  reject(e: RequestEntry): boolean {
    if (e.state !== 'created') return false;
    e.state = 'rejected';
    this.counters.rejected += e.workload;
    this.totals.rejected += e.workload;
    this.finish(e, 'rejected');
    return true;
  }

  /** Started → success | error | cancelled. Returns false for a request already ended. */
  end(e: RequestEntry, outcome: 'success' | 'error' | 'cancelled'): boolean {
    if (e.state !== 'started') return false;
    e.state = outcome;
    this.pending -= e.workload;
    if (!e.isSession) this.active--;
    if (!e.sessionBound && this.working.delete(e.id)) {
      this.workingLoad -= e.workload;
      if (!e.isSession) this.queuedLoad -= e.workload;
    }
    if (outcome === 'success') {
      this.counters.served += e.workload;
      this.totals.served += e.workload;
    } else if (outcome === 'error') {
      this.counters.errored += e.workload;
      this.totals.errored += e.workload;
    } else {
      this.counters.cancelled += e.workload;
      this.totals.cancelled += e.workload;
    }
    this.finish(e, outcome);
    return true;
  }

  private finish(e: RequestEntry, outcome: Outcome): void {
    this.totals.ended++;
    if (!e.sessionBound) {
      (outcome === 'success' || outcome === 'cancelled' ? this.deleteSucceeded : this.deleteFailed).push(e.requestIdx);
    }
    this.version++;
    for (const l of this.listeners) l(e, outcome);
  }

  /** Expected queue time in seconds for a new request (PROTOCOL §2). */
  expectedQueueTime(): number {
    return this.queuedLoad / Math.max(this.perf, 1e-5);
  }

  get curLoad(): number {
    return this.workingLoad;
  }

  /** Requests being served right now (sessions themselves not counted): what a drain waits for. */
  get inflight(): number {
    return this.active;
  }

  /** Resolves true when nothing is in flight, false after `timeoutMs` with requests still in flight. */
  waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.active === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const stop = this.onEnd(() => {
        if (this.active !== 0) return;
        clearTimeout(timer);
        stop();
        resolve(true);
      });
      const timer = setTimeout(() => {
        stop();
        resolve(false);
      }, timeoutMs);
    });
  }

  get workingCount(): number {
    return this.working.size;
  }

  get maxPerf(): number {
    return this.perf;
  }

  get errorMsg(): string {
    return this.error;
  }

  setMaxPerf(perf: number): void {
    if (perf !== this.perf) {
      this.perf = perf;
      this.version++;
    }
  }

  setErrorMsg(msg: string): void {
    if (msg !== this.error) {
      this.error = msg;
      this.version++;
    }
  }

  onEnd(listener: LedgerListener): () => void {
    this.listeners.push(listener);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  /** Working entries (for sessions' GC and for draining). */
  workingEntries(): IterableIterator<RequestEntry> {
    return this.working.values();
  }

  snapshot(): LedgerSnapshot {
    const idxs: number[] = [];
    for (const e of this.working.values()) idxs.push(e.requestIdx);
    return {
      version: this.version,
      counters: { ...this.counters },
      workloadPending: this.pending,
      curLoad: this.workingLoad,
      numRequestsWorking: this.working.size,
      workingRequestIdxs: idxs,
      numRequestsReceived: this.receivedSinceReport - this.receivedCommitted,
      receivedMark: this.receivedSinceReport,
      maxPerf: this.perf,
      errorMsg: this.error,
    };
  }

  /** The report built from `snap` got through: subtract what it carried. */
  commitReport(snap: LedgerSnapshot): void {
    const c = this.counters;
    c.received -= snap.counters.received;
    c.served -= snap.counters.served;
    c.errored -= snap.counters.errored;
    c.cancelled -= snap.counters.cancelled;
    c.rejected -= snap.counters.rejected;
    this.receivedCommitted = snap.receivedMark;
  }
}
