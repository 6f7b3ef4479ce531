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

/** Where the ids the engine must hear about are made durable (unreported.ts); null: memory only. */
export interface LedgerJournal {
  admitted(requestIdx: number): void;
  ended(requestIdx: number, success: boolean): void;
  delivered(requestIdxs: readonly number[], success: boolean): void;
}

export interface LedgerOptions {
  /**
   * Keep ended ids for /delete_requests/ (default true). A worker with no engine to report to
   * (no REPORT_ADDR) keeps none: the backlog would only grow (issue 21 row 17).
   */
  keepDeletes?: boolean;
  /** Ids kept at most per queue while the engine does not acknowledge (default 200 000, 1.6 MB); older ones are dropped and counted. */
  maxDeleteBacklog?: number;
}

/** Default bound on each /delete_requests/ queue: about 6 minutes at 550 requests a second. */
export const DEFAULT_MAX_DELETE_BACKLOG = 200_000;

export class Ledger {
  private nextId = 1;
  private readonly keepDeletes: boolean;
  private readonly maxDeleteBacklog: number;
  /** Ids dropped from a full delete queue (the engine never acknowledged them). */
  deletesDropped = 0;
  /** Of those, per queue (success, failure): lets an acknowledgement skip ids dropped meanwhile. */
  private readonly droppedFrom = [0, 0];
  journal: LedgerJournal | null = null;
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

  constructor(opts: LedgerOptions = {}) {
    this.keepDeletes = opts.keepDeletes ?? true;
    this.maxDeleteBacklog = Math.max(1, opts.maxDeleteBacklog ?? DEFAULT_MAX_DELETE_BACKLOG);
  }

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
      if (this.keepDeletes) this.journal?.admitted(e.requestIdx);
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
    if (!e.sessionBound && this.keepDeletes) {
      const success = outcome === 'success' || outcome === 'cancelled';
      this.queueDelete(e.requestIdx, success);
      this.journal?.ended(e.requestIdx, success);
    }
    this.version++;
    for (const l of this.listeners) l(e, outcome);
  }

  private queueDelete(requestIdx: number, success: boolean): void {
    const queue = success ? this.deleteSucceeded : this.deleteFailed;
    queue.push(requestIdx);
    if (queue.size > this.maxDeleteBacklog) {
      // The engine has not acknowledged for a long while: the oldest id goes (its request is long
      // over; the engine times such requests out itself).
      const oldest = queue.peek(1);
      queue.drop(1);
      this.deletesDropped++;
      this.droppedFrom[success ? 0 : 1]!++;
      this.journal?.delivered(oldest, success);
    }
  }

  /** Ids a previous run left unreported (unreported.ts): queued for the next delete posts. */
  carryOver(succeeded: readonly number[], failed: readonly number[]): void {
    if (!this.keepDeletes) return;
    for (const id of succeeded) this.queueDelete(id, true);
    for (const id of failed) this.queueDelete(id, false);
    if (succeeded.length + failed.length > 0) this.version++;
  }

  /** The oldest `n` ids waiting for the post with this `success` flag, and the mark `acknowledged` needs. */
  peekDeletes(success: boolean, n: number): { ids: number[]; mark: number } {
    return { ids: (success ? this.deleteSucceeded : this.deleteFailed).peek(n), mark: this.droppedFrom[success ? 0 : 1]! };
  }

  /**
   * The engine acknowledged a post of `peekDeletes` ids: they leave the queue (and the journal).
   * Ids of the post that a full queue dropped since the peek are gone already.
   */
  acknowledged(requestIdxs: readonly number[], success: boolean, mark: number): void {
    const gone = this.droppedFrom[success ? 0 : 1]! - mark;
    const queue = success ? this.deleteSucceeded : this.deleteFailed;
    queue.drop(Math.max(0, requestIdxs.length - gone));
    this.journal?.delivered(gone > 0 ? requestIdxs.slice(gone) : requestIdxs, success);
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
