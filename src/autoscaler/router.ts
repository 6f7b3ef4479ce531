import type { RouteAnswer as ProtocolRouteAnswer } from '../common/protocol.js';
import type { QueueSignal } from './policy.js';

/**
 * The router of one endpoint: picks a worker for each request, signs what the client forwards
 * as `auth_data`, and holds the endpoint's FIFO queue of requests no worker can take yet.
 *
 * Guarantees:
 * - a request goes to the ready worker with the lowest expected queue time, (reported load +
 *   load routed to it but not yet seen in its reports) / perf, among those whose expected queue
 *   time is within `max_queue_time`; otherwise it waits, and waiting requests leave the queue
 *   strictly in arrival order;
 * - `reqnum` grows by one for every routed request of the endpoint;
 * - a request_idx lives until a `/delete_requests/` of its worker names it (or its worker goes
 *   away, or `request_ttl` passes); a queued one that waits past its `replay_timeout` is timed out.
 */

/** A ready worker the router may choose. */
export interface RoutableWorker {
  id: number;
  url: string;
  /** Benchmarked perf, load/s. */
  perf: number;
  /** `cur_load` of its last report. */
  reportedLoad: number;
  /** When its last report arrived (ms), null if never. */
  lastReportAt: number | null;
}

/** What `/route/` returns once a worker is chosen (the protocol's route answer, as this engine fills it). */
export interface RouteAnswer extends ProtocolRouteAnswer {
  worker_id: number;
  status: 'routed';
}

export type RequestState = 'queued' | 'routed' | 'timed_out';

/** One request the router knows. */
export interface RequestEntry {
  idx: number;
  endpoint: string;
  cost: number;
  createdAt: number;
  replayTimeoutMs: number;
  state: RequestState;
  workerId: number | null;
  routedAt: number | null;
  answer: RouteAnswer | null;
  /** Seen in a report's working_request_idxs (or too old): no longer counted as unreported load. */
  reported: boolean;
  /** Seconds it waited in the global queue plus the expected wait at its worker when routed. */
  expectedQueueTime: number | null;
}

export interface RouterOptions {
  endpoint: string;
  now: () => number;
  /** Signature of a worker URL (PROTOCOL §2). Called once per URL; cached. */
  sign: (url: string) => string;
  /**
   * Strict mode (opt-in, docs/security.md): instead of the url alone, sign every field of the
   * answer but `signature`, `expires_at` included, so a captured auth_data can neither be replayed
   * after `ttlSeconds` nor have its cost changed. Workers must run with STRICT_AUTH=true.
   */
  strictAuth?: { sign: (fields: Record<string, unknown>) => string; ttlSeconds: number; wallClock?: () => number };
  /** The endpoint's ready workers, read at each choice. */
  readyWorkers: () => readonly RoutableWorker[];
  /** The endpoint's current `max_queue_time`, s. */
  maxQueueTime: () => number;
  unreportedTtlMs: number;
  requestTtlMs: number;
  /** Called when a request gets a worker (at once or from the queue). */
  onRouted?: (entry: RequestEntry) => void;
  /** Called when a queued request times out. */
  onTimedOut?: (entry: RequestEntry) => void;
}

/**
 * A worker that has not reported once in this long after being sent a request is skipped until
 * it reports (a live worker reports within a second of a change): the stale probe (30 s) will
 * tell whether it died, and meanwhile no more requests are lost to it.
 */
export const SUSPECT_AFTER_MS = 5_000;
/** Seconds of recent routing used for the observed queue time. */
const RECENT_WAIT_MS = 10_000;
/** How long a timed-out request_idx still answers polls with its error. */
const TIMED_OUT_KEEP_MS = 60_000;

interface WorkerBook {
  outstanding: Map<number, RequestEntry>;
  unreportedLoad: number;
}

export class EndpointRouter {
  private queue: RequestEntry[] = [];
  private head = 0;
  private entries = new Map<number, RequestEntry>();
  private books = new Map<number, WorkerBook>();
  private signatures = new Map<string, string>();
  private recentWaits: Array<{ at: number; wait: number }> = [];
  private reqnum = 0;
  /** Requests routed, timed out, completed: counters for the admin API and simulation. */
  readonly stats = { routed: 0, queued: 0, timedOut: 0, succeeded: 0, failed: 0 };

  constructor(private opts: RouterOptions) {}

  /** A new request: routed at once when a worker can take it and nobody waits, else queued. */
  submit(idx: number, cost: number, replayTimeoutS: number): RequestEntry {
    const entry: RequestEntry = {
      idx,
      endpoint: this.opts.endpoint,
      cost,
      createdAt: this.opts.now(),
      replayTimeoutMs: replayTimeoutS * 1000,
      state: 'queued',
      workerId: null,
      routedAt: null,
      answer: null,
      reported: false,
      expectedQueueTime: null,
    };
    this.entries.set(idx, entry);
    this.queue.push(entry);
    this.stats.queued++;
    this.drain();
    return entry;
  }

  /** The request `idx`, if this router still knows it. */
  get(idx: number): RequestEntry | undefined {
    return this.entries.get(idx);
  }

  /** Number of requests waiting. */
  waiting(): number {
    return this.queue.length - this.head;
  }

  /** Position (0 = next) of a queued request, or -1. */
  position(entry: RequestEntry): number {
    for (let i = this.head; i < this.queue.length; i++) if (this.queue[i] === entry) return i - this.head;
    return -1;
  }

  /** Give waiting requests to workers, in arrival order, while a worker can take the head. */
  drain(): void {
    while (this.head < this.queue.length) {
      const entry = this.queue[this.head]!;
      if (entry.state !== 'queued') {
        this.head++;
        continue;
      }
      const choice = this.choose();
      if (!choice) break;
      this.head++;
      this.assign(entry, choice.worker, choice.wait);
    }
    // Compact now and then so the array does not grow forever.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** The best worker for the next request now, with its expected queue time; null if none is under max_queue_time. */
  choose(): { worker: RoutableWorker; wait: number } | null {
    const limit = this.opts.maxQueueTime();
    let best: RoutableWorker | null = null;
    let bestWait = Number.POSITIVE_INFINITY;
    const now = this.opts.now();
    for (const w of this.opts.readyWorkers()) {
      if (!(w.perf > 0) || !w.url || this.suspect(w, now)) continue;
      const wait = this.expectedLoad(w) / w.perf;
      if (wait > limit) continue;
      if (wait < bestWait || (wait === bestWait && best !== null && (w.perf > best.perf || (w.perf === best.perf && w.id < best.id)))) {
        best = w;
        bestWait = wait;
      }
    }
    return best ? { worker: best, wait: bestWait } : null;
  }

  /** True when requests sent to `w` over SUSPECT_AFTER_MS ago got no report from it since. */
  suspect(w: RoutableWorker, now: number): boolean {
    const book = this.books.get(w.id);
    if (!book || book.unreportedLoad <= 0) return false;
    for (const e of book.outstanding.values()) {
      if (e.reported) continue;
      const at = e.routedAt ?? e.createdAt;
      return now - at > SUSPECT_AFTER_MS && (w.lastReportAt ?? Number.NEGATIVE_INFINITY) <= at;
    }
    return false;
  }

  /** Reported load plus load routed to the worker that its reports have not shown yet. */
  expectedLoad(w: RoutableWorker): number {
    return Math.max(0, w.reportedLoad) + (this.books.get(w.id)?.unreportedLoad ?? 0);
  }

  private assign(entry: RequestEntry, w: RoutableWorker, wait: number): void {
    const now = this.opts.now();
    entry.state = 'routed';
    entry.workerId = w.id;
    entry.routedAt = now;
    entry.expectedQueueTime = (now - entry.createdAt) / 1000 + wait;
    entry.answer = {
      url: w.url,
      request_idx: entry.idx,
      reqnum: ++this.reqnum,
      cost: entry.cost,
      endpoint: this.opts.endpoint,
      signature: '',
      worker_id: w.id,
      status: 'routed',
    };
    const strict = this.opts.strictAuth;
    if (strict) {
      // Wall time, whatever clock drives the engine: the worker checks the expiry against its own.
      entry.answer.expires_at = Math.floor((strict.wallClock ?? Date.now)() / 1000 + strict.ttlSeconds);
      const { signature: _unsigned, ...fields } = entry.answer;
      entry.answer.signature = strict.sign(fields);
    } else {
      let signature = this.signatures.get(w.url);
      if (signature === undefined) {
        signature = this.opts.sign(w.url);
        this.signatures.set(w.url, signature);
      }
      entry.answer.signature = signature;
    }
    const book = this.book(w.id);
    book.outstanding.set(entry.idx, entry);
    book.unreportedLoad += entry.cost;
    this.recentWaits.push({ at: now, wait: entry.expectedQueueTime });
    this.stats.routed++;
    this.opts.onRouted?.(entry);
  }

  private book(id: number): WorkerBook {
    let b = this.books.get(id);
    if (!b) {
      b = { outstanding: new Map(), unreportedLoad: 0 };
      this.books.set(id, b);
    }
    return b;
  }

  private settle(entry: RequestEntry, book: WorkerBook): void {
    if (!entry.reported) {
      entry.reported = true;
      book.unreportedLoad = Math.max(0, book.unreportedLoad - entry.cost);
    }
  }

  /** A worker's report listed these request_idxs as working: its cur_load now counts them. */
  markReported(workerId: number, idxs: readonly number[]): void {
    const book = this.books.get(workerId);
    if (!book) return;
    for (const idx of idxs) {
      const entry = book.outstanding.get(idx);
      if (entry) this.settle(entry, book);
    }
  }

  /** `/delete_requests/` of `workerId`: these request_idxs are over. Returns how many were known. */
  complete(workerId: number, idxs: readonly number[], success: boolean): number {
    const book = this.books.get(workerId);
    let n = 0;
    for (const idx of idxs) {
      const entry = book?.outstanding.get(idx);
      if (!entry || !book) continue;
      this.settle(entry, book);
      book.outstanding.delete(idx);
      this.entries.delete(idx);
      if (success) this.stats.succeeded++;
      else this.stats.failed++;
      n++;
    }
    return n;
  }

  /** Requests routed to `workerId` and not yet deleted. */
  outstanding(workerId: number): number {
    return this.books.get(workerId)?.outstanding.size ?? 0;
  }

  /** The worker is gone (errored, stopped, destroyed): forget its requests; returns them. */
  dropWorker(workerId: number): RequestEntry[] {
    const book = this.books.get(workerId);
    if (!book) return [];
    this.books.delete(workerId);
    for (const idx of book.outstanding.keys()) this.entries.delete(idx);
    return [...book.outstanding.values()];
  }

  /** Time out queued requests past their replay_timeout and forget stale ones; call every tick. */
  expire(): void {
    const now = this.opts.now();
    let removed = false;
    for (let i = this.head; i < this.queue.length; i++) {
      const e = this.queue[i]!;
      if (e.state === 'queued' && now - e.createdAt > e.replayTimeoutMs) {
        e.state = 'timed_out';
        this.stats.timedOut++;
        removed = true;
        this.opts.onTimedOut?.(e);
      }
    }
    if (removed) {
      const rest = this.queue.slice(this.head).filter((e) => e.state === 'queued');
      this.queue = rest;
      this.head = 0;
    }
    for (const [idx, e] of this.entries) {
      if (e.state === 'timed_out' && now - e.createdAt > e.replayTimeoutMs + TIMED_OUT_KEEP_MS) this.entries.delete(idx);
    }
    for (const [, book] of this.books) {
      for (const [idx, e] of book.outstanding) {
        const age = now - (e.routedAt ?? e.createdAt);
        if (!e.reported && age > this.opts.unreportedTtlMs) this.settle(e, book);
        if (age > this.opts.requestTtlMs) {
          book.outstanding.delete(idx);
          this.entries.delete(idx);
        }
      }
    }
    this.trimWaits(now);
  }

  private trimWaits(now: number): void {
    let cut = 0;
    while (cut < this.recentWaits.length && now - this.recentWaits[cut]!.at > RECENT_WAIT_MS) cut++;
    if (cut > 0) this.recentWaits.splice(0, cut);
  }

  /** The queue as the policy sees it. */
  signal(): QueueSignal {
    const now = this.opts.now();
    this.trimWaits(now);
    let waiting = 0;
    let waitingLoad = 0;
    let oldest = 0;
    for (let i = this.head; i < this.queue.length; i++) {
      const e = this.queue[i]!;
      if (e.state !== 'queued') continue;
      waiting++;
      waitingLoad += e.cost;
      oldest = Math.max(oldest, (now - e.createdAt) / 1000);
    }
    let workerBacklog = 0;
    for (const w of this.opts.readyWorkers()) workerBacklog += this.expectedLoad(w);
    const recent = this.recentWaits.length > 0 ? this.recentWaits.reduce((s, w) => s + w.wait, 0) / this.recentWaits.length : 0;
    return { waiting, waitingLoad, queueTime: Math.max(oldest, recent), workerBacklog };
  }

  /** The next reqnum to be handed out minus one. */
  lastReqnum(): number {
    return this.reqnum;
  }
}
