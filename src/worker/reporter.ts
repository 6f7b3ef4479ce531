import { request } from 'undici';
import type { Logger } from '../common/log.js';
import { maskSecret } from '../common/log.js';
import type { WorkerStatusReport } from '../common/protocol.js';
import { deadline } from '../common/deadline.js';
import { sleep } from '../common/util.js';
import type { Ledger, LedgerSnapshot } from './ledger.js';
import type { Lifecycle } from './lifecycle.js';

/**
 * Reports to the engine (PROTOCOL §4). The reporter keeps no counts: every number comes from a
 * ledger snapshot, and the ledger's counters are reduced only by `commitReport` after a post got
 * through. `/delete_requests/` ids leave the ledger's queues only once their post was acknowledged,
 * so while the engine is down or answering errors nothing is dropped and nothing is sent twice.
 */
/** The body of `POST /worker_status/`: the shape the engine's schema reads (src/common/protocol.ts). */
export type { WorkerStatusReport };

export interface ReporterOptions {
  addrs: string[];
  containerId: number;
  masterToken: string;
  version: string;
  publicUrl: string;
  ledger: Ledger;
  lifecycle: Lifecycle;
  logger: Logger;
  /** GB added to disk since the previous call (loading progress); optional. */
  takeDiskDeltaGb?: () => Promise<number>;
  /** How often to check for something to send (default 1000 ms). */
  tickMs?: number;
  /** Send at least this often (default 10 000 ms); also the cadence while the model is not loaded. */
  idleMs?: number;
  /** Tries per address per round (default 3), pause between tries (default 2000 ms), post timeout (default 10 000 ms). */
  tries?: number;
  retryDelayMs?: number;
  timeoutMs?: number;
  /** Largest id list in one /delete_requests/ post. */
  deleteBatch?: number;
  /** Called after each attempt (metrics). */
  onPost?: (kind: 'worker_status' | 'delete_requests', ok: boolean) => void;
}

export function buildReport(
  o: Pick<ReporterOptions, 'containerId' | 'masterToken' | 'version' | 'publicUrl'>,
  snap: LedgerSnapshot,
  loadtime: number,
  diskGb: number,
): WorkerStatusReport {
  const c = snap.counters;
  return {
    id: o.containerId,
    mtoken: o.masterToken,
    version: o.version,
    loadtime,
    cur_load: snap.curLoad,
    rej_load: c.rejected,
    new_load: Math.max(c.received - c.cancelled, 0),
    error_msg: snap.errorMsg,
    max_perf: snap.maxPerf,
    cur_perf: c.served,
    cur_capacity: 0,
    max_capacity: 0,
    num_requests_working: snap.numRequestsWorking,
    num_requests_recieved: snap.numRequestsReceived,
    additional_disk_usage: diskGb,
    working_request_idxs: snap.workingRequestIdxs,
    url: o.publicUrl,
  };
}

/** POST JSON to `path` on each address in order, `tries` times each; true on the first 2xx. */
export async function postWithFailover(
  addrs: string[],
  path: string,
  body: unknown,
  opts: { tries: number; retryDelayMs: number; timeoutMs: number; logger?: Logger; signal?: AbortSignal },
): Promise<boolean> {
  const text = JSON.stringify(body);
  for (const addr of addrs) {
    for (let attempt = 1; attempt <= opts.tries; attempt++) {
      if (opts.signal?.aborted) return false;
      // One deadline for the whole attempt (connect, headers and body), not per phase.
      const limit = deadline(opts.timeoutMs, opts.signal);
      const signal = limit.signal;
      try {
        const res = await request(`${addr}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: text,
          headersTimeout: opts.timeoutMs,
          bodyTimeout: opts.timeoutMs,
          signal,
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) return true;
        opts.logger?.warn({ addr, path, attempt, status: res.statusCode }, `engine answered ${res.statusCode}`);
      } catch (err) {
        if (opts.signal?.aborted) return false;
        const why = limit.timedOut ? `no answer within ${opts.timeoutMs} ms` : (err as Error).message;
        opts.logger?.warn({ addr, path, attempt, err: why }, 'engine unreachable');
      } finally {
        limit.dispose();
      }
      if (attempt < opts.tries) {
        try {
          await sleep(opts.retryDelayMs, opts.signal);
        } catch {
          return false;
        }
      }
    }
  }
  return false;
}

/**
 * Sends `/worker_status/` on the PROTOCOL §4 cadence and `/delete_requests/` every tick while ended
 * requests wait. Sends of one kind never overlap (a second call waits for the first), so two
 * reports can never commit the same counters and two delete posts never drop the same ids.
 */
export class Reporter {
  private timer: NodeJS.Timeout | null = null;
  /** Status / delete sends running or queued; the tick starts one only when none is. */
  private statusPending = 0;
  private deletePending = 0;
  private statusChain: Promise<unknown> = Promise.resolve();
  private deleteChain: Promise<unknown> = Promise.resolve();
  private lastSentAt = 0;
  private lastSentVersion = -1;
  private lastSentState = '';
  private diskGb = 0;
  private readonly ac = new AbortController();
  readonly stats = { statusOk: 0, statusFailed: 0, deleteOk: 0, deleteFailed: 0 };

  constructor(private readonly o: ReporterOptions) {}

  start(): void {
    if (this.o.addrs.length === 0 || this.timer || this.ac.signal.aborted) return;
    this.timer = setInterval(() => this.tick(), this.o.tickMs ?? 1000);
    this.timer.unref();
    this.tick();
  }

  /** Rounds in a row that no address accepted: during an outage only the first is logged per attempt. */
  private failedRounds = 0;

  private get postOpts() {
    const logger = this.failedRounds === 0 ? this.o.logger : undefined;
    return { tries: this.o.tries ?? 3, retryDelayMs: this.o.retryDelayMs ?? 2000, timeoutMs: this.o.timeoutMs ?? 10_000, logger, signal: this.ac.signal };
  }

  /** Track outages so a down engine costs a few log lines, not several a second. */
  private roundDone(kind: 'worker_status' | 'delete_requests', ok: boolean): void {
    if (ok) {
      if (this.failedRounds > 0) this.o.logger.info({ failed_rounds: this.failedRounds }, 'engine reachable again');
      this.failedRounds = 0;
    } else if (!this.ac.signal.aborted) {
      if (this.failedRounds === 0)
        this.o.logger.warn(
          { addrs: this.o.addrs, kind },
          `${kind} not delivered to any engine address; kept for the next round (repeats are logged at debug until the engine answers)`,
        );
      else this.o.logger.debug({ kind, failed_rounds: this.failedRounds + 1 }, `${kind} not delivered`);
      this.failedRounds++;
    }
  }

  private tick(): void {
    if (this.statusPending === 0 && this.statusDue()) void this.sendStatus();
    if (this.deletePending === 0 && (this.o.ledger.deleteSucceeded.size > 0 || this.o.ledger.deleteFailed.size > 0)) void this.sendDeletes();
  }

  private statusDue(): boolean {
    const idle = this.o.idleMs ?? 10_000;
    const since = Date.now() - this.lastSentAt;
    if (since >= idle) return true;
    const loaded = this.o.lifecycle.state === 'ready' || this.o.lifecycle.state === 'draining';
    if (!loaded && this.o.lifecycle.state !== 'errored') return false;
    return this.o.ledger.version !== this.lastSentVersion || this.o.lifecycle.state !== this.lastSentState;
  }

  /** Send one worker_status now (also the last report on shutdown). Resolves true when it got through. */
  sendStatus(): Promise<boolean> {
    this.statusPending++;
    const run = this.statusChain.then(() => this.postStatus()).finally(() => this.statusPending--);
    this.statusChain = run.catch(() => undefined);
    return run;
  }

  private async postStatus(): Promise<boolean> {
    if (this.o.takeDiskDeltaGb) this.diskGb += await this.o.takeDiskDeltaGb().catch(() => 0);
    const snap = this.o.ledger.snapshot();
    const state = this.o.lifecycle.state;
    const report = buildReport(this.o, snap, this.o.lifecycle.loadtime, round(this.diskGb));
    this.lastSentAt = Date.now(); // pace attempts even when they fail
    const ok = await postWithFailover(this.o.addrs, '/worker_status/', report, this.postOpts);
    this.o.onPost?.('worker_status', ok);
    this.roundDone('worker_status', ok);
    if (ok) {
      this.o.ledger.commitReport(snap);
      this.diskGb = 0;
      this.lastSentVersion = snap.version;
      this.lastSentState = state;
      this.stats.statusOk++;
      this.o.logger.debug({ report: { ...report, mtoken: maskSecret(report.mtoken) } }, 'worker_status sent');
    } else {
      this.stats.statusFailed++;
    }
    return ok;
  }

  /**
   * Post the ended requests that are waiting now: one post per `success` flag (more only when a
   * queue holds over `deleteBatch` ids); ids leave only when acknowledged. Ids that end while
   * this runs wait for the next call, so steady traffic costs two posts a tick, not a busy loop.
   */
  sendDeletes(): Promise<boolean> {
    this.deletePending++;
    const run = this.deleteChain.then(() => this.postDeletes()).finally(() => this.deletePending--);
    this.deleteChain = run.catch(() => undefined);
    return run;
  }

  private async postDeletes(): Promise<boolean> {
    let all = true;
    const batch = this.o.deleteBatch ?? 10_000;
    const { deleteSucceeded, deleteFailed } = this.o.ledger;
    for (const [success, atStart] of [
      [true, deleteSucceeded.size],
      [false, deleteFailed.size],
    ] as const) {
      let waiting = atStart;
      while (waiting > 0) {
        const { ids, mark } = this.o.ledger.peekDeletes(success, Math.min(batch, waiting));
        const ok = await postWithFailover(
          this.o.addrs,
          '/delete_requests/',
          { worker_id: this.o.containerId, mtoken: this.o.masterToken, request_idxs: ids, success },
          { ...this.postOpts, tries: 1 },
        );
        this.o.onPost?.('delete_requests', ok);
        this.roundDone('delete_requests', ok);
        if (!ok) {
          this.stats.deleteFailed++;
          all = false;
          break;
        }
        // Only the ids this post carried leave: ids that ended meanwhile sit behind them in the FIFO.
        this.o.ledger.acknowledged(ids, success, mark);
        waiting -= ids.length;
        this.stats.deleteOk++;
      }
    }
    return all;
  }

  /** Final reports before exit: status and deletes, once each, within `timeoutMs`. */
  async flush(timeoutMs = 10_000): Promise<void> {
    if (this.o.addrs.length === 0) return;
    this.stopTimer();
    // The deadline's timer is cancelled once the flush is done, so it never holds the process open.
    const done = new AbortController();
    const until = sleep(timeoutMs, done.signal).catch(() => undefined);
    try {
      await Promise.race([Promise.all([this.sendStatus(), this.sendDeletes()]), until]);
    } finally {
      done.abort();
    }
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Stop the cadence and abort posts in flight (their counters and ids stay in the ledger). */
  stop(): void {
    this.stopTimer();
    this.ac.abort();
  }
}

const round = (n: number) => Math.round(n * 1e6) / 1e6;

/**
 * The worker could not start: tell the engine every `intervalMs` (default 10 s) until stopped, with
 * the fields the on-start script also sends (PROTOCOL §7).
 */
export function startFailureReporter(o: {
  addrs: string[];
  containerId: number;
  masterToken: string;
  version: string;
  publicUrl: string;
  errorMsg: string;
  logger?: Logger;
  intervalMs?: number;
}): { stop(): void; sent(): number } {
  let sent = 0;
  const ac = new AbortController();
  const body: WorkerStatusReport = {
    id: o.containerId,
    mtoken: o.masterToken,
    version: o.version,
    error_msg: o.errorMsg,
    url: o.publicUrl,
    loadtime: 0,
    cur_load: 0,
    rej_load: 0,
    new_load: 0,
    max_perf: 0,
    cur_perf: 0,
    cur_capacity: 0,
    max_capacity: 0,
    num_requests_working: 0,
    num_requests_recieved: 0,
    additional_disk_usage: 0,
    working_request_idxs: [],
  };
  const once = async () => {
    const ok = await postWithFailover(o.addrs, '/worker_status/', body, { tries: 1, retryDelayMs: 0, timeoutMs: 10_000, logger: o.logger, signal: ac.signal });
    if (ok) sent++;
  };
  void once();
  const timer = setInterval(() => void once(), o.intervalMs ?? 10_000);
  return {
    stop() {
      clearInterval(timer);
      ac.abort();
    },
    sent: () => sent,
  };
}
