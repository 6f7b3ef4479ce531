import { Ring } from '../common/ring.js';
import { ShardedMap } from '../common/sharded-map.js';
import { RecentEnds } from './recent-ends.js';
import type { RouteAnswer as ProtocolRouteAnswer } from '../common/protocol.js';
import type { QueueSignal } from './policy.js';

/**
 * The router of one endpoint: picks a worker for each request, signs what the client forwards
 * as `auth_data`, and holds the endpoint's FIFO queue of requests no worker can take yet.
 *
 * Guarantees:
 * - a request goes to the ready worker that would finish it first, (reported load + load routed
 *   to it but not yet seen in its reports + its cost) / perf, among those whose expected queue
 *   time is within `max_queue_time`; workers whose recent answers failed (or that failed one and
 *   have not served one well since: `unproven`) come only after every healthy one, and not at all
 *   while a standby is starting (`standbyComing`); ties (idle workers of equal speed) are spread in
 *   turn; otherwise it waits, and waiting requests leave the queue in arrival order;
 * - `reqnum` grows by one for every routed request of the endpoint;
 * - re-routing a routed request_idx (the client's failover) takes its load off the worker that
 *   failed it, counts a failure against that worker, and routes it afresh avoiding that worker
 *   (for `AVOID_MS` while another worker can take it, for `AVOID_HARD_MS` in any case); a
 *   finished or forgotten id is routed afresh the same way;
 * - a request_idx lives until a `/delete_requests/` of its worker names it (or `request_ttl`
 *   passes); a queued one is timed out only when the client stops polling for its `replay_timeout`.
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

/** A request as the engine's journal keeps it. */
export type PendingRequest = Omit<RequestEntry, 'avoid' | 'endpoint'> & { avoid: Array<[number, number]> };

/**
 * A request as plain data (the signature is made again at import: it is most of the bytes). One
 * object literal of the fields (no rest/spread copies: the journal makes one per changed request).
 */
function plainPending(e: RequestEntry): PendingRequest {
  const a = e.answer;
  return {
    idx: e.idx,
    cost: e.cost,
    createdAt: e.createdAt,
    replayTimeoutMs: e.replayTimeoutMs,
    state: e.state,
    workerId: e.workerId,
    routedAt: e.routedAt,
    answer: a && (a.expires_at === undefined ? plainAnswer(a) : { ...a, signature: '' }),
    reported: e.reported,
    expectedQueueTime: e.expectedQueueTime,
    lastSeenAt: e.lastSeenAt,
    avoid: e.avoid.size === 0 ? [] : [...e.avoid],
    attempts: e.attempts,
    delivered: e.delivered,
  };
}

/** The answer's fields as the router fills them (strict mode's expires_at aside), the signature left out. */
function plainAnswer(a: RouteAnswer): RouteAnswer {
  return {
    url: a.url,
    request_idx: a.request_idx,
    reqnum: a.reqnum,
    cost: a.cost,
    endpoint: a.endpoint,
    signature: '',
    worker_id: a.worker_id,
    status: a.status,
  };
}

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
  /** Last time the client asked about it (route or poll): the replay_timeout counts from here. */
  lastSeenAt: number;
  /** Workers that failed this request, with when: not chosen for it again for AVOID_MS. */
  avoid: Map<number, number>;
  /** Times it was routed (1 + failovers). */
  attempts: number;
  /** The client has been given this routing's url: asking again means that worker failed it. */
  delivered: boolean;
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
  /**
   * The endpoint's ready workers, read at each choice. The same array may be returned while its
   * members stay the same workers; a change of members (or of a member's perf or url) must come
   * as another array (or another length). A member's `lastReportAt` may change in place; a change
   * of its `reportedLoad` in place must be told with `workerChanged(id)` (the router keeps its
   * workers ordered by load).
   */
  readyWorkers: () => readonly RoutableWorker[];
  /** The endpoint's current `max_queue_time`, s. */
  maxQueueTime: () => number;
  /**
   * Seconds a request may wait in all (0 or absent: no budget): it is placed at a worker only when
   * what it already waited plus that worker's expected queue stays within the budget, or the queue
   * is under MIN_ROUTE_QUEUE_S.
   */
  queueBudget?: () => number;
  /** Serve waiting requests smallest first (`queue_order: smallest`); else in arrival order. */
  smallestFirst?: () => boolean;
  /** With smallestFirst: a request that waited this long (ms) goes before smaller ones. */
  agingMs?: () => number;
  /**
   * True while a worker of the endpoint is starting or loading (a standby on its way): requests
   * then wait for it rather than go to a worker that failed them or is failing.
   */
  standbyComing?: () => boolean;
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
/**
 * Under a queue budget a worker may still be given this much queue: below it the router's view of
 * a worker (reports every second, load routed but not yet reported) is too coarse to keep it busy.
 */
export const MIN_ROUTE_QUEUE_S = 2;
/** Seconds of recent routing used for the observed queue time. */
const RECENT_WAIT_MS = 10_000;
/**
 * A wait counted in the observed queue time is at most this (s): the sum of up to 900,000
 * waits in µs (90k routings a second) then stays an exact integer (< 2^53). No queue decision turns on waits of hours.
 */
const MAX_COUNTED_WAIT_S = 10_000;

/** A routed request's expected queue time as an integer of µs (clamped) for the exact running sum. */
export function waitMicros(seconds: number): number {
  // A NaN would poison the running sum for good (a fresh sum forgot it after 10 s).
  if (Number.isNaN(seconds)) return 0;
  return Math.round(Math.min(MAX_COUNTED_WAIT_S, Math.max(-MAX_COUNTED_WAIT_S, seconds)) * 1e6);
}
/** How long a timed-out request_idx still answers polls with its error. */
const TIMED_OUT_KEEP_MS = 60_000;
/** A worker that failed a request is chosen for it again within this long only when no other worker can take it... */
export const AVOID_MS = 10_000;
/** ...and never within this long (about the SDK's back-off; the failed worker is probed meanwhile). */
export const AVOID_HARD_MS = 3_000;
/** Failures fade with this time constant (ms): a worker is "failing" while its score is ≥ 0.5. */
const FAILURE_DECAY_MS = 30_000;
/** How long the end of a request is remembered (for a late re-route of its id)... */
const FINISHED_KEEP_MS = 10 * 60_000;
/** ...and how many at most (memory stays bounded at any request rate; older ends are re-routed without it). */
const FINISHED_MAX = 100_000;
/** Waiting requests ordered by size at a time (the sort runs when a worker frees up and several wait). */
const SIZE_ORDER_MAX = 4096;
/** The avoid list of every request no worker has failed: shared, replaced by its own before the first entry (see reroute). */
const NO_AVOID: Map<number, number> = new Map();
/** Finish times within this fraction of the best count as a tie. */
const TIE_TOLERANCE = 1e-6;

interface WorkerBook {
  outstanding: Map<number, RequestEntry>;
  unreportedLoad: number;
  /**
   * Routed requests in routing order; those settled or gone since are dropped from the front
   * lazily. A ring, so what was dropped is not kept alive: an array cut down only every 1,024
   * drops held each worker's last thousand routings (93,000 entries with their answers in old
   * space at 1,000 workers and 12k routings a second, for the collector to mark).
   */
  unreported: Ring<RequestEntry>;
  /** Its place in the pick index while its worker is ready (null otherwise). */
  slot: Slot | null;
  /**
   * `outstanding` is in routing-time order (each entry set when routed, at the clock's time, and
   * not routed again in place): `expire` then stops at the first entry too young to expire, as
   * every later one is younger. Cleared by anything else (a restore, a requeue in place); set
   * again when the book empties.
   */
  ordered: boolean;
  /** The routing time of the entry set last (for `ordered`). */
  lastRoutedAt: number;
}

/** A ready worker in the pick index, with the load it is ordered by. */
interface Slot {
  w: RoutableWorker;
  book: WorkerBook;
  /** max(0, reportedLoad) + unreportedLoad, as of the last reindex. */
  load: number;
  group: PerfGroup;
}

/**
 * The ready workers of one perf, ordered by (load, id). Within one perf the order by load is the
 * order by expected finish (load + cost) / perf and by expected wait, whatever the request's cost,
 * so the best of a group is its first eligible worker and the workers under a wait limit or tied
 * for a finish time are a prefix: a pick looks at a few workers per perf, not at every worker.
 */
interface PerfGroup {
  perf: number;
  slots: Slot[];
}

function slotBefore(a: Slot, load: number, id: number): boolean {
  return a.load < load || (a.load === load && a.w.id < id);
}

interface FailureScore {
  score: number;
  at: number;
}

export class EndpointRouter {
  private queue: RequestEntry[] = [];
  private head = 0;
  /** Every request known by id (sharded: 10,000+ open under steady churn, see ShardedMap). */
  private entries = new ShardedMap<RequestEntry>();
  private books = new Map<number, WorkerBook>();
  private signatures = new Map<string, string>();
  /** The entries in state timed_out (some may have left it or `entries`: checked when visited). */
  private readonly timedOut = new Map<number, RequestEntry>();
  /**
   * Waits of recent routings (integer µs) and their times, oldest first from `recentHead` (older
   * ones are cut lazily, not spliced). Two arrays of numbers, not an object per routing: nothing
   * for the GC. `recentWaitSumUs` is their sum, kept as waits enter and leave: in integers, so
   * it is exact whatever the order (a float running sum would drift from a fresh sum and, at
   * the margin, change decisions); summing 50-100k waits each tick was 2.5 ms of it.
   */
  private recentAt: number[] = [];
  private recentWait: number[] = [];
  private recentHead = 0;
  private recentWaitSumUs = 0;
  private reqnum = 0;
  /** Routed requests whose worker went away: kept so the client's re-route finds them. */
  private orphans = new Map<number, RequestEntry>();
  /** How requests ended (which worker had each), the newest FINISHED_MAX within FINISHED_KEEP_MS. */
  private ends = new RecentEnds(FINISHED_MAX);
  private failures = new Map<number, FailureScore>();
  /** Workers that failed a request and have not served one well since: not ready capacity (see `unproven`). */
  private failedSinceSuccess = new Set<number>();
  /** Turn counter that spreads ties. */
  private turn = 0;
  /** pick()'s reused scratch: the workers tied for best, and their expected waits. */
  private tiedScratch: RoutableWorker[] = [];
  private tiedWaitScratch: number[] = [];
  /** Every routing in order, with its time: the front is the oldest request still unreported (see `suspectsPossible`). */
  private fifoEntries = new Ring<RequestEntry>();
  private fifoAt = new Ring<number>();
  private fifoDisordered = false;
  /** The pick index: the ready list it was built for, its perf groups, and the book drops it has seen. */
  private indexList: readonly RoutableWorker[] | null = null;
  private indexLength = -1;
  private groups: PerfGroup[] = [];
  private indexVersion = -1;
  private booksVersion = 0;
  /**
   * Ids whose journal record may be stale (changed, opened or ended) since the last `takeChanges()`;
   * null until the journal asks for it (`trackChanges()`), so an engine without persistence (the
   * simulator) keeps nothing.
   */
  private changed: Set<number> | null = null;
  /** Requests routed, timed out, completed: counters for the admin API and simulation. */
  readonly stats = { routed: 0, queued: 0, timedOut: 0, succeeded: 0, failed: 0, rerouted: 0 };

  constructor(private opts: RouterOptions) {}

  /** A new request: routed at once when a worker can take it and nobody waits, else queued. */
  submit(idx: number, cost: number, replayTimeoutS: number): RequestEntry {
    const now = this.opts.now();
    const entry: RequestEntry = {
      idx,
      endpoint: this.opts.endpoint,
      cost,
      createdAt: now,
      replayTimeoutMs: replayTimeoutS * 1000,
      state: 'queued',
      workerId: null,
      routedAt: null,
      answer: null,
      reported: false,
      expectedQueueTime: null,
      lastSeenAt: now,
      avoid: NO_AVOID,
      attempts: 0,
      delivered: false,
    };
    this.entries.set(idx, entry);
    this.changed?.add(idx);
    this.queue.push(entry);
    this.stats.queued++;
    this.drain();
    return entry;
  }

  /** The client asked about `idx` again: its replay_timeout starts over. */
  touch(entry: RequestEntry, replayTimeoutS?: number): void {
    entry.lastSeenAt = this.opts.now();
    this.changed?.add(entry.idx);
    if (replayTimeoutS !== undefined) entry.replayTimeoutMs = replayTimeoutS * 1000;
  }

  /**
   * The client routes `idx` again after its worker failed it (PROTOCOL §9 failover): the first
   * routing's load leaves that worker, the worker gets a failure, and the request is routed
   * afresh, first in line, avoiding that worker. A finished or forgotten id the engine issued
   * (`issued`) is submitted again under the same idx. Returns the entry and the worker that
   * failed it (null when none is known).
   */
  reroute(idx: number, cost: number, replayTimeoutS: number): { entry: RequestEntry; failed: number | null } {
    const now = this.opts.now();
    let entry = this.entries.get(idx);
    let failed: number | null = null;
    if (entry && entry.state === 'routed' && !entry.delivered) {
      // Routed from the queue since the last poll: the client has not seen it yet; if its worker
      // left meanwhile, it goes back first in line (nobody failed it).
      if (this.orphans.delete(idx)) this.requeueFirst(entry);
      this.touch(entry, replayTimeoutS);
      this.drain();
      return { entry, failed: null };
    }
    if (entry && entry.state === 'routed') {
      failed = entry.workerId;
      const book = failed === null ? undefined : this.books.get(failed);
      if (book?.outstanding.has(idx)) {
        this.settle(entry, book);
        book.outstanding.delete(idx);
      }
      this.orphans.delete(idx);
    } else if (!entry) {
      failed = this.ends.take(idx) ?? null;
      this.submitting = true;
      entry = this.submit(idx, cost, replayTimeoutS);
      this.submitting = false;
      this.stats.queued--; // the same request as before, not a new one
    } else {
      // queued or timed out: nothing failed; a poll.
      this.touch(entry, replayTimeoutS);
      if (entry.state === 'queued') this.drain();
      return { entry, failed: null };
    }
    this.stats.rerouted++;
    if (failed !== null) {
      this.noteFailure(failed);
      if (entry.avoid === NO_AVOID) entry.avoid = new Map();
      entry.avoid.set(failed, now);
    }
    if (entry.state === 'routed') {
      this.requeueFirst(entry);
    } else if (this.queue[this.head] !== entry) {
      // Resubmitted: submit() put it last; move it first.
      const at = this.queue.lastIndexOf(entry);
      if (at >= 0 && entry.state === 'queued') {
        this.queue.splice(at, 1);
        if (this.head > 0) this.queue[--this.head] = entry;
        else this.queue.unshift(entry);
      }
    }
    this.touch(entry, replayTimeoutS);
    this.drain();
    return { entry, failed };
  }

  /** A routed entry back to queued, first in line: it has waited longest. */
  private requeueFirst(entry: RequestEntry): void {
    this.changed?.add(entry.idx);
    // Still in its book (an orphan): its age there would be counted from its creation now.
    const book = entry.workerId === null ? undefined : this.books.get(entry.workerId);
    if (book?.outstanding.get(entry.idx) === entry) book.ordered = false;
    entry.state = 'queued';
    entry.workerId = null;
    entry.routedAt = null;
    entry.answer = null;
    entry.reported = false;
    entry.delivered = false;
    entry.expectedQueueTime = null;
    if (this.head > 0) this.queue[--this.head] = entry;
    else this.queue.unshift(entry);
  }

  /** Set while reroute() resubmits, so submit() does not route before the avoid list is set. */
  private submitting = false;

  /** A worker's answer failed (a re-route, or a failed /delete_requests/): route away from it for a while. */
  noteFailure(workerId: number): void {
    const now = this.opts.now();
    this.failures.set(workerId, { score: this.failureScore(workerId, now) + 1, at: now });
    this.failedSinceSuccess.add(workerId);
  }

  /**
   * True when the worker failed a request (a client re-routed away from it, or it reported a
   * request failed) and has not served one well since: the scaler plans without its capacity, so
   * a standby is started for the failover. Forgotten with its failure score (about 90 s after a
   * single failure with no other), so a worker nobody sends requests to again is not held out forever.
   */
  unproven(workerId: number): boolean {
    return this.failedSinceSuccess.has(workerId);
  }

  /** The workers `unproven` is true of (read only): the scaler visits these, not every worker. */
  unprovenIds(): ReadonlySet<number> {
    return this.failedSinceSuccess;
  }

  /**
   * False when `suspect` is false of every worker now (the oldest unreported routing is younger
   * than SUSPECT_AFTER_MS): the scaler then skips its check of every routable worker. O(1) amortized.
   */
  anySuspect(now: number): boolean {
    return this.suspectsPossible(now);
  }

  /** A worker answered well: half its failure score goes. */
  noteSuccess(workerId: number): void {
    const f = this.failures.get(workerId);
    if (!f) return;
    const now = this.opts.now();
    const score = this.failureScore(workerId, now) / 2;
    if (score < 0.05) this.failures.delete(workerId);
    else this.failures.set(workerId, { score, at: now });
  }

  /** Recent failures of a worker, fading with FAILURE_DECAY_MS (0 = none). */
  failureScore(workerId: number, now = this.opts.now()): number {
    const f = this.failures.get(workerId);
    if (!f) return 0;
    return f.score * Math.exp(-Math.max(0, now - f.at) / FAILURE_DECAY_MS);
  }

  /** True while a worker's recent answers failed more than they succeeded. */
  failing(workerId: number, now = this.opts.now()): boolean {
    return this.failureScore(workerId, now) >= 0.5;
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

  /**
   * Give waiting requests to workers while a worker can take the next one: in arrival order, or
   * with `smallestFirst` (the endpoint's `queue_order: smallest`) in the order of `sizeOrder`. A
   * request kept back only by the workers it must avoid lets the ones behind it go.
   */
  drain(): void {
    if (this.submitting) return;
    if (this.opts.smallestFirst?.() && this.drainBySize()) return;
    let i = this.head;
    while (i < this.queue.length) {
      const entry = this.queue[i]!;
      if (entry.state !== 'queued') {
        if (i === this.head) this.head++;
        i++;
        continue;
      }
      const choice = this.choose(entry);
      if (!choice) {
        if (entry.avoid.size > 0 && this.choose()) {
          i++;
          continue;
        }
        break;
      }
      if (i === this.head) this.head++;
      i++;
      this.assign(entry, choice.worker, choice.wait);
    }
    this.compactQueue();
  }

  /**
   * Smallest first: when a worker frees up, the smallest waiting request takes it, so a burst of
   * mixed sizes is served with fewer requests past the target (a large one waits for a few small
   * ones, instead of many small ones each waiting for it). None waits forever: a request that
   * already waited `agingMs` (or was routed before and came back) goes first, in arrival order.
   * Ties by arrival. At most SIZE_ORDER_MAX waiting requests are ordered at a time (the rest keep
   * their turn). Returns false when fewer than two wait (the arrival-order pass does the same then).
   */
  private drainBySize(): boolean {
    // No worker to give anything to: nothing moves (as in arrival order), and the queue is not read.
    if (this.opts.readyWorkers().length === 0) return true;
    const waiting: RequestEntry[] = [];
    const at: number[] = [];
    for (let k = this.head; k < this.queue.length && waiting.length < SIZE_ORDER_MAX; k++) {
      const e = this.queue[k]!;
      if (e.state !== 'queued') continue;
      waiting.push(e);
      at.push(k);
    }
    if (waiting.length < 2) return false;
    const now = this.opts.now();
    const aging = this.opts.agingMs?.() ?? Number.POSITIVE_INFINITY;
    const first = (e: RequestEntry) => e.attempts > 0 || now - e.createdAt >= aging;
    const before = (x: number, y: number) => {
      const a = waiting[x]!;
      const b = waiting[y]!;
      const fa = first(a);
      if (fa !== first(b)) return fa ? -1 : 1;
      return (fa ? 0 : a.cost - b.cost) || at[x]! - at[y]!;
    };
    // Most calls find every worker full (a request arrived, a report came): the one that would go
    // first is found in one pass, and when it cannot go (and avoids no one) nothing moves: no sort.
    let top = 0;
    for (let k = 1; k < waiting.length; k++) if (before(k, top) < 0) top = k;
    if (waiting[top]!.avoid.size === 0 && !this.choose(waiting[top]!)) return true;
    const order = waiting.map((_, k) => k);
    order.sort(before);
    for (const k of order) {
      const entry = waiting[k]!;
      if (entry.state !== 'queued') continue;
      const choice = this.choose(entry);
      if (!choice) {
        if (entry.avoid.size > 0 && this.choose()) continue;
        break;
      }
      this.assign(entry, choice.worker, choice.wait);
    }
    while (this.head < this.queue.length && this.queue[this.head]!.state !== 'queued') this.head++;
    this.compactQueue();
    return true;
  }

  /** Compact now and then so the queue array does not grow forever. */
  private compactQueue(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * The best worker for `entry` (or for a request of 100 load) now, with its expected queue
   * time: healthy workers before failing ones, then the earliest expected finish; ties in turn.
   * Null if none is under max_queue_time.
   */
  choose(entry?: RequestEntry): { worker: RoutableWorker; wait: number } | null {
    // With a standby on its way, a request waits for it rather than go back to a worker that
    // failed it (or fails everything): the failover is what the standby was started for.
    const standby = this.opts.standbyComing?.() ?? false;
    if (!entry || entry.avoid.size === 0) return this.pick(entry, AVOID_MS, standby);
    return this.pick(entry, AVOID_MS, standby) ?? (standby ? null : this.pick(entry, AVOID_HARD_MS, false));
  }

  private pick(entry: RequestEntry | undefined, avoidMs: number, healthyOnly: boolean): { worker: RoutableWorker; wait: number } | null {
    const now = this.opts.now();
    let limit = this.opts.maxQueueTime();
    const budget = this.opts.queueBudget?.() ?? 0;
    // A request that already waited in the global queue may take only what is left of its budget at a worker.
    if (budget > 0 && entry) limit = Math.min(limit, Math.max(MIN_ROUTE_QUEUE_S, budget - (now - entry.createdAt) / 1000));
    const cost = entry?.cost ?? 100;
    const avoid = entry && entry.avoid.size > 0 ? entry.avoid : null;
    const groups = this.indexFor(this.opts.readyWorkers());
    const anyFailures = this.failures.size > 0;
    // Failing, or not served well since its last failure: only after every healthy worker, and
    // not at all while a standby is coming.
    const rankOf = (id: number) => (anyFailures && (this.failedSinceSuccess.has(id) || this.failing(id, now)) ? 1 : 0);
    const eligible = (s: Slot) => {
      if (avoid) {
        const at = avoid.get(s.w.id);
        if (at !== undefined && now - at < avoidMs) return false;
      }
      return !(s.book.unreportedLoad > 0 && this.suspectBook(s.book, s.w, now));
    };
    // Pass 1: the earliest finish of each rank. In a group the first eligible healthy worker is
    // the group's best; the walk stops there (or at the wait limit: the rest wait longer).
    let best0 = Number.POSITIVE_INFINITY;
    let best1 = Number.POSITIVE_INFINITY;
    // Loads are never below 0 (reported load clamped, routed load a sum of costs ≥ 0): a finish in a
    // group is at least cost / perf, and the groups go by falling perf. A negative cost (not on the
    // wire) turns the cut off.
    const cut = cost >= 0;
    for (const g of groups) {
      if (cut && cost / g.perf > best0) break;
      let seen1 = false;
      for (const s of g.slots) {
        if (s.load / g.perf > limit) break;
        if (!eligible(s)) continue;
        const finish = (s.load + cost) / g.perf;
        if (rankOf(s.w.id) === 0) {
          if (finish < best0) best0 = finish;
          break;
        }
        if (!seen1 && !healthyOnly) {
          seen1 = true;
          if (finish < best1) best1 = finish;
        }
      }
    }
    const rank = best0 < Number.POSITIVE_INFINITY ? 0 : 1;
    const best = rank === 0 ? best0 : best1;
    if (!(best < Number.POSITIVE_INFINITY)) return null;
    // Pass 2: every worker of that rank whose finish is within TIE_TOLERANCE of the best (a
    // prefix of each group). The tied ones go into a reused scratch array, no allocation.
    const bound = best * (1 + TIE_TOLERANCE);
    if (!avoid && !anyFailures && !this.suspectsPossible(now)) {
      const quick = this.pickInPrefix(groups, cost, limit, bound);
      if (quick) return quick;
    }
    const tied = this.tiedScratch;
    const tiedWait = this.tiedWaitScratch;
    let n = 0;
    for (const g of groups) {
      if (cut && cost / g.perf > bound) break;
      for (const s of g.slots) {
        const wait = s.load / g.perf;
        if (wait > limit || (s.load + cost) / g.perf > bound) break;
        if (!eligible(s) || rankOf(s.w.id) !== rank) continue;
        tied[n] = s.w;
        tiedWait[n++] = wait;
      }
    }
    if (n === 0) return null;
    // Ties take turns in id order: the (turn mod n)-th smallest id.
    const k = n === 1 ? 0 : selectById(tied, tiedWait, n, this.turn++ % n);
    const out = { worker: tied[k]!, wait: tiedWait[k]! };
    // Do not keep workers alive through the scratch array.
    tied.length = 0;
    tiedWait.length = 0;
    return out;
  }

  /**
   * The tie of pass 2 without looking at each tied worker, when every worker is eligible (no
   * avoid list, no failures, no suspect possible): a group's tied workers are then the prefix up to
   * the bound (found by bisection), and when one group holds them all at one load they are in id
   * order, so the (turn mod n)-th smallest id is the (turn mod n)-th of the prefix. Null when the
   * tie spans groups or loads (the caller then walks the prefixes).
   */
  private pickInPrefix(groups: PerfGroup[], cost: number, limit: number, bound: number): { worker: RoutableWorker; wait: number } | null {
    let only: PerfGroup | null = null;
    let n = 0;
    for (const g of groups) {
      // Groups by falling perf: from here on no finish is within the bound (see pick).
      if (cost >= 0 && cost / g.perf > bound) break;
      const slots = g.slots;
      let lo = 0;
      let hi = slots.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const load = slots[mid]!.load;
        if (load / g.perf > limit || (load + cost) / g.perf > bound) hi = mid;
        else lo = mid + 1;
      }
      if (lo === 0) continue;
      if (only) return null;
      only = g;
      n = lo;
    }
    if (!only || only.slots[0]!.load !== only.slots[n - 1]!.load) return null;
    const s = only.slots[n === 1 ? 0 : this.turn++ % n]!;
    return { worker: s.w, wait: s.load / only.perf };
  }

  /**
   * False when no worker can be suspect now: the oldest routed request no report has shown yet
   * (of a worker still holding it) was routed within SUSPECT_AFTER_MS. O(1) amortized: requests
   * reported or gone since are dropped from the front for good.
   */
  private suspectsPossible(now: number): boolean {
    const at = this.fifoFront();
    if (at === null) return false;
    return this.fifoDisordered || now - at > SUSPECT_AFTER_MS;
  }

  /**
   * Drop from the front of the routing fifo the requests reported or gone since; returns the
   * routing time of the first still unreported one, or null (the fifo is then emptied). Run at
   * every routing too, so the fifo holds no more than the unreported requests' span (a request
   * unreported for `unreportedTtlMs` is settled by `expire`) whatever path the picks take.
   */
  private fifoFront(): number | null {
    const fifo = this.fifoEntries;
    while (fifo.length > 0) {
      const e = fifo.front()!;
      const at = this.fifoAt.front()!;
      if (
        !e.reported &&
        e.state === 'routed' &&
        (e.routedAt ?? e.createdAt) === at &&
        e.workerId !== null &&
        this.books.get(e.workerId)?.outstanding.get(e.idx) === e
      )
        return at;
      fifo.shift();
      this.fifoAt.shift();
    }
    this.fifoDisordered = false;
    return null;
  }

  /** True when requests sent to `w` over SUSPECT_AFTER_MS ago got no report from it since. */
  suspect(w: RoutableWorker, now: number): boolean {
    const book = this.books.get(w.id);
    if (!book || book.unreportedLoad <= 0) return false;
    return this.suspectBook(book, w, now);
  }

  private suspectBook(book: WorkerBook, w: RoutableWorker, now: number): boolean {
    // The oldest unreported request decides; the settled ones before it are dropped for good, so
    // this stays O(1) per call however many reported requests the worker holds.
    const list = book.unreported;
    for (let e = list.front(); e !== undefined; e = list.front()) {
      // Routed here and unreported means outstanding here: a request that left this worker
      // (completed, re-routed, expired) was settled or re-queued on the way out.
      if (!e.reported && e.state === 'routed' && e.workerId === w.id) {
        const at = e.routedAt ?? e.createdAt;
        return now - at > SUSPECT_AFTER_MS && (w.lastReportAt ?? Number.NEGATIVE_INFINITY) <= at;
      }
      list.shift();
    }
    return false;
  }

  /** Reported load plus load routed to the worker that its reports have not shown yet. */
  expectedLoad(w: RoutableWorker): number {
    return Math.max(0, w.reportedLoad) + (this.books.get(w.id)?.unreportedLoad ?? 0);
  }

  private assign(entry: RequestEntry, w: RoutableWorker, wait: number): void {
    const now = this.opts.now();
    this.changed?.add(entry.idx);
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
    this.signAnswer(entry.answer);
    entry.attempts++;
    const book = this.book(w.id);
    this.noteOrder(book, entry.idx, now);
    book.outstanding.set(entry.idx, entry);
    book.unreportedLoad += entry.cost;
    this.reindex(book);
    this.pushUnreported(book, entry);
    this.pushFifo(entry, now);
    const waitUs = waitMicros(entry.expectedQueueTime);
    this.recentAt.push(now);
    this.recentWait.push(waitUs);
    this.recentWaitSumUs += waitUs;
    this.stats.routed++;
    this.opts.onRouted?.(entry);
  }

  /** Sign `url` ahead (a worker became ready), so its first request does not wait for RSA. No-op in strict mode. */
  presign(url: string): void {
    if (this.opts.strictAuth || this.signatures.has(url)) return;
    this.signatures.set(url, this.opts.sign(url));
  }

  /** Fill `answer.signature`: the url's (cached), or in strict mode every field with a fresh expiry. */
  private signAnswer(answer: RouteAnswer): void {
    const strict = this.opts.strictAuth;
    if (strict) {
      // Wall time, whatever clock drives the engine: the worker checks the expiry against its own.
      answer.expires_at = Math.floor((strict.wallClock ?? Date.now)() / 1000 + strict.ttlSeconds);
      const { signature: _unsigned, ...fields } = answer;
      answer.signature = strict.sign(fields);
      return;
    }
    let signature = this.signatures.get(answer.url);
    if (signature === undefined) {
      signature = this.opts.sign(answer.url);
      this.signatures.set(answer.url, signature);
    }
    answer.signature = signature;
  }

  /**
   * The pick index of `list`: its workers (perf > 0, with a url) grouped by perf, each group
   * ordered by (load, id). Rebuilt when the list is another array (the engine keeps one while its
   * ready workers do not change) or a book was dropped since; kept in order as loads change
   * (`reindex`), so a pick never sorts.
   */
  private indexFor(list: readonly RoutableWorker[]): PerfGroup[] {
    if (list === this.indexList && list.length === this.indexLength && this.indexVersion === this.booksVersion) return this.groups;
    for (const g of this.groups) for (const s of g.slots) if (s.book.slot === s) s.book.slot = null;
    const byPerf = new Map<number, PerfGroup>();
    for (const w of list) {
      if (!(w.perf > 0) || !w.url) continue;
      let g = byPerf.get(w.perf);
      if (!g) {
        g = { perf: w.perf, slots: [] };
        byPerf.set(w.perf, g);
      }
      const book = this.book(w.id);
      const slot: Slot = { w, book, load: 0, group: g };
      slot.load = this.loadOf(slot);
      book.slot = slot;
      g.slots.push(slot);
    }
    // Fastest first: a pick stops at the first group whose idle finish (cost / perf) cannot beat
    // the best (no group after it can). The choice does not depend on this order (the minimum,
    // and ties taken by id).
    this.groups = [...byPerf.values()].sort((a, b) => b.perf - a.perf);
    for (const g of this.groups) g.slots.sort((a, b) => a.load - b.load || a.w.id - b.w.id);
    this.indexList = list;
    this.indexLength = list.length;
    this.indexVersion = this.booksVersion;
    return this.groups;
  }

  /** The load a slot is ordered by: what pick compares (a load that is not a number sorts last). */
  private loadOf(s: Slot): number {
    const load = Math.max(0, s.w.reportedLoad) + s.book.unreportedLoad;
    return Number.isNaN(load) ? Number.POSITIVE_INFINITY : load;
  }

  /** A worker's load changed: move its slot to its new place (a few steps: loads change by one request). */
  private reindex(book: WorkerBook): void {
    const s = book.slot;
    if (!s) return;
    const load = this.loadOf(s);
    if (load === s.load) return;
    const slots = s.group.slots;
    const id = s.w.id;
    // Where it is now: binary search by its current key.
    let lo = 0;
    let hi = slots.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (slotBefore(slots[mid]!, s.load, id)) lo = mid + 1;
      else hi = mid;
    }
    const i = slots[lo] === s ? lo : slots.indexOf(s);
    if (i < 0) return;
    const up = load > s.load;
    s.load = load;
    // Where it goes: bisect the side it moves to (itself at i left out).
    lo = up ? i + 1 : 0;
    hi = up ? slots.length : i;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (slotBefore(slots[mid]!, load, id)) lo = mid + 1;
      else hi = mid;
    }
    const j = up ? lo - 1 : lo;
    if (Math.abs(j - i) > 32) {
      // A long move (a load step past many workers of equal load): splice moves memory in one go.
      slots.splice(i, 1);
      slots.splice(j, 0, s);
      return;
    }
    if (up) for (let k = i; k < j; k++) slots[k] = slots[k + 1]!;
    else for (let k = i; k > j; k--) slots[k] = slots[k - 1]!;
    slots[j] = s;
  }

  /**
   * The worker's `reportedLoad` changed in place (a report): its place in the pick index follows.
   * Unknown or not ready: nothing to do.
   */
  workerChanged(workerId: number): void {
    const book = this.books.get(workerId);
    if (book) this.reindex(book);
  }

  private book(id: number): WorkerBook {
    let b = this.books.get(id);
    if (!b) {
      b = { outstanding: new Map(), unreportedLoad: 0, unreported: new Ring(), slot: null, ordered: true, lastRoutedAt: Number.NEGATIVE_INFINITY };
      this.books.set(id, b);
    }
    return b;
  }

  /** Before `book.outstanding.set(idx, …)` of an entry routed at `at`: keep `ordered` true. */
  private noteOrder(book: WorkerBook, idx: number, at: number): void {
    if (book.outstanding.size === 0) book.ordered = true;
    else if (at < book.lastRoutedAt || book.outstanding.has(idx)) book.ordered = false;
    book.lastRoutedAt = at;
  }

  private pushUnreported(book: WorkerBook, entry: RequestEntry): void {
    // Settled or gone requests leave the front here too: a pick no longer visits every worker
    // (suspectBook's own trimming), and the list must not grow with a worker's routings.
    const list = book.unreported;
    for (let e = list.front(); e !== undefined; e = list.front()) {
      if (!e.reported && e.state === 'routed' && e.workerId === entry.workerId) break;
      list.shift();
    }
    list.push(entry);
  }

  private pushFifo(e: RequestEntry, at: number): void {
    this.fifoFront();
    // Out of time order (requests taken back at a restart, a clock that stepped back): the front
    // is then not the oldest, and suspects are looked for one by one until the list empties.
    const last = this.fifoAt.back();
    if (last !== undefined && at < last) this.fifoDisordered = true;
    this.fifoEntries.push(e);
    this.fifoAt.push(at);
  }

  private settle(entry: RequestEntry, book: WorkerBook): void {
    if (!entry.reported) {
      // Not a journal change on its own: after a restart the next report (or unreportedTtlMs)
      // settles it again, and leaving it out saves one record per routed request.
      entry.reported = true;
      book.unreportedLoad = Math.max(0, book.unreportedLoad - entry.cost);
      this.reindex(book);
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
      this.changed?.add(idx);
      this.ends.record(entry.idx, entry.workerId, this.opts.now());
      if (success) this.stats.succeeded++;
      else this.stats.failed++;
      n++;
    }
    if (n > 0) {
      if (success) {
        this.noteSuccess(workerId);
        this.failedSinceSuccess.delete(workerId);
      } else this.noteFailure(workerId);
    }
    return n;
  }

  /** Requests routed to `workerId` and not yet deleted. */
  outstanding(workerId: number): number {
    return this.books.get(workerId)?.outstanding.size ?? 0;
  }

  /**
   * The worker is gone (errored, stopped, destroyed): its requests stop counting as anyone's
   * load, but stay known, so the client's re-route of one gets a fresh worker. Returns them.
   */
  dropWorker(workerId: number): RequestEntry[] {
    this.failures.delete(workerId);
    this.failedSinceSuccess.delete(workerId);
    const book = this.books.get(workerId);
    if (!book) return [];
    this.books.delete(workerId);
    book.slot = null;
    this.booksVersion++;
    for (const e of book.outstanding.values()) {
      this.orphans.set(e.idx, e);
      this.changed?.add(e.idx);
    }
    return [...book.outstanding.values()];
  }

  /** Time out queued requests past their replay_timeout and forget stale ones; call every tick. */
  expire(): void {
    const now = this.opts.now();
    let removed = false;
    for (let i = this.head; i < this.queue.length; i++) {
      const e = this.queue[i]!;
      if (e.state === 'queued' && now - e.lastSeenAt > e.replayTimeoutMs) {
        e.state = 'timed_out';
        this.timedOut.set(e.idx, e);
        this.changed?.add(e.idx);
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
    // Timed-out entries are kept a while (a late poll is told so), then forgotten: only they are visited.
    for (const [idx, e] of this.timedOut) {
      if (this.entries.get(idx) !== e || e.state !== 'timed_out') this.timedOut.delete(idx);
      else if (now - e.lastSeenAt > e.replayTimeoutMs + TIMED_OUT_KEEP_MS) {
        this.entries.delete(idx);
        this.timedOut.delete(idx);
      }
    }
    for (const [idx, e] of this.orphans) {
      if (now - (e.routedAt ?? e.createdAt) > this.opts.requestTtlMs || this.entries.get(idx) !== e || e.state !== 'routed') {
        this.orphans.delete(idx);
        if (this.entries.get(idx) === e && e.state === 'routed') {
          this.entries.delete(idx);
          this.changed?.add(idx);
        }
      }
    }
    this.ends.expire(now, FINISHED_KEEP_MS);
    for (const id of [...this.failures.keys()]) {
      if (this.failureScore(id, now) >= 0.05) continue;
      this.failures.delete(id);
      this.failedSinceSuccess.delete(id);
    }
    // Only the old end of each book: in routing order, the first entry too young ends the visit.
    const horizon = Math.min(this.opts.unreportedTtlMs, this.opts.requestTtlMs);
    for (const [, book] of this.books) {
      for (const [idx, e] of book.outstanding) {
        const age = now - (e.routedAt ?? e.createdAt);
        if (book.ordered && age <= horizon) break;
        if (!e.reported && age > this.opts.unreportedTtlMs) this.settle(e, book);
        if (age > this.opts.requestTtlMs) {
          book.outstanding.delete(idx);
          this.entries.delete(idx);
          this.changed?.add(idx);
        }
      }
    }
    this.trimWaits(now);
  }

  private trimWaits(now: number): void {
    const times = this.recentAt;
    const waits = this.recentWait;
    while (this.recentHead < times.length && now - times[this.recentHead]! > RECENT_WAIT_MS) this.recentWaitSumUs -= waits[this.recentHead++]!;
    // Compact now and then: a splice from the front at every tick copied every wait kept (10 s of routings).
    if (this.recentHead > 1024 && this.recentHead * 2 > times.length) {
      this.recentAt = times.slice(this.recentHead);
      this.recentWait = this.recentWait.slice(this.recentHead);
      this.recentHead = 0;
    }
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
    const kept = this.recentWait.length - this.recentHead;
    const recent = kept > 0 ? this.recentWaitSumUs / kept / 1e6 : 0;
    return { waiting, waitingLoad, queueTime: Math.max(oldest, recent), workerBacklog };
  }

  /** The next reqnum to be handed out minus one. */
  lastReqnum(): number {
    return this.reqnum;
  }

  /** The requests still open (queued in queue order, then routed), as plain data for the engine's journal. */
  exportPending(): PendingRequest[] {
    const out: PendingRequest[] = [];
    for (let i = this.head; i < this.queue.length; i++) if (this.queue[i]!.state === 'queued') out.push(plainPending(this.queue[i]!));
    for (const book of this.books.values()) for (const e of book.outstanding.values()) out.push(plainPending(e));
    return out;
  }

  /**
   * Start recording which requests change (for the journal's one record per open request);
   * returns every open request now, as exportPending, for the first full write.
   */
  trackChanges(): PendingRequest[] {
    this.changed = new Set();
    return this.exportPending();
  }

  /**
   * The requests changed since the last call (or trackChanges()): each id with its plain data while
   * it is open (what exportPending would give), or null once it is not (ended, timed out, orphaned).
   * Null when changes are not tracked yet. `limit`: at most that many, the oldest changes first;
   * the others stay for the next call (a caller that works in slices bounds each slice).
   */
  takeChanges(limit = Number.POSITIVE_INFINITY): Array<[number, PendingRequest | null]> | null {
    if (!this.changed) return null;
    const out: Array<[number, PendingRequest | null]> = [];
    const all = this.changed.size <= limit;
    for (const idx of this.changed) {
      if (out.length >= limit) break;
      const e = this.entries.get(idx);
      out.push([idx, e && this.isOpen(e) ? plainPending(e) : null]);
    }
    if (all) this.changed.clear();
    else for (const [idx] of out) this.changed.delete(idx);
    return out;
  }

  /** Requests changed since the last `takeChanges()` (0 when not tracking). */
  changeCount(): number {
    return this.changed?.size ?? 0;
  }

  /** True once `trackChanges()` was called: `takeChanges()` then answers. */
  tracking(): boolean {
    return this.changed !== null;
  }

  /** Something outside the router changed this request (the protocol marked it delivered). */
  noteChanged(idx: number): void {
    this.changed?.add(idx);
  }

  /** What exportPending lists: queued, or routed and still on its worker's book. */
  private isOpen(e: RequestEntry): boolean {
    if (e.state === 'queued') return true;
    return e.state === 'routed' && e.workerId !== null && this.books.get(e.workerId)?.outstanding.get(e.idx) === e;
  }

  /** Take back requests exported before a restart (routed ones count on their worker again). */
  importPending(list: readonly PendingRequest[], reqnum: number): void {
    this.reqnum = Math.max(this.reqnum, reqnum);
    for (const p of list) {
      if (this.entries.has(p.idx)) continue;
      const entry: RequestEntry = { ...p, endpoint: this.opts.endpoint, avoid: new Map(p.avoid), answer: p.answer && { ...p.answer } };
      if (entry.answer && !entry.answer.signature) this.signAnswer(entry.answer);
      this.entries.set(entry.idx, entry);
      this.changed?.add(entry.idx);
      if (entry.state === 'timed_out') this.timedOut.set(entry.idx, entry);
      if (entry.state === 'queued') this.queue.push(entry);
      else if (entry.state === 'routed' && entry.workerId !== null) {
        const book = this.book(entry.workerId);
        this.noteOrder(book, entry.idx, entry.routedAt ?? entry.createdAt);
        book.outstanding.set(entry.idx, entry);
        if (!entry.reported) {
          book.unreportedLoad += entry.cost;
          this.reindex(book);
          this.pushUnreported(book, entry);
          this.pushFifo(entry, entry.routedAt ?? entry.createdAt);
        }
      }
    }
  }
}

/**
 * Reorder the first `n` of `ws` (and `waits` alike) so that position `k` holds the k-th smallest
 * id, as sorting by id would (Hoare's selection: O(n), no allocation); returns `k`.
 */
function selectById(ws: RoutableWorker[], waits: number[], n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  const swap = (a: number, b: number) => {
    const w = ws[a]!;
    ws[a] = ws[b]!;
    ws[b] = w;
    const t = waits[a]!;
    waits[a] = waits[b]!;
    waits[b] = t;
  };
  while (lo < hi) {
    const pivot = ws[(lo + hi) >>> 1]!.id;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (ws[i]!.id < pivot) i++;
      while (ws[j]!.id > pivot) j--;
      if (i <= j) {
        swap(i, j);
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return k;
  }
  return k;
}
