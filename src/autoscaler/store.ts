import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { open as openP, rename as renameP } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { JournalDamagedError, type Journal } from './journal.js';
import { endpointSchema, fieldErrors } from './params.js';
import { ID_BLOCK, type IdCounters, type Registry, type WorkerRecord } from './registry.js';
import type { EndpointRouter, PendingRequest } from './router.js';
import { WORKER_STATES } from './states.js';

/**
 * Persistence of the registry in a journal (see journal.ts): `save` writes what changed since the
 * last save and fsyncs it (every tick, and at close); `restore` takes back an earlier run's state
 * before the config's endpoints are added (an endpoint the journal knows keeps its journal state).
 *
 * Ids: the registry hands out only ids below a reservation that `reserve` has made durable first:
 * the reservation is a journal record (fsync'd) and a second copy in `<journal>.ids` (written
 * atomically), so losing either still never lets an id restart below one ever issued. At restore
 * the next id of each kind is above the reservation, every id in any record, and both copies.
 *
 * A failed write (a full disk, a read-only data dir) never stops the engine: it keeps routing from
 * memory, `health()` says what failed since when, and every tick tries again (the journal keeps
 * what it could not write). Every record's value is validated here by zod at restore.
 */

export interface Restored {
  endpoints: number;
  workers: number;
  requests: number;
}

/** The store's state for /healthz, the dashboard and /metrics. */
export interface StoreHealth {
  ok: boolean;
  /** The last write error (`ENOSPC: no space left on device, write`), or null. */
  error: string | null;
  /** Since when writes fail (ms), or null. */
  failingSince: number | null;
  /** Failed saves and reservations since start. */
  failures: number;
  /** Records written in memory but not yet durable. */
  pendingRecords: number;
  /** Damaged records skipped at start (only with --repair). */
  skippedRecords: number;
  /** ids are being handed out beyond the last durable reservation (writes failed for that long). */
  idsBeyondReservation: boolean;
}

const num = z.number().refine(Number.isFinite, 'must be finite');
const safeId = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const ms = num.nullable();

const idsSchema = z.strictObject({ worker: safeId, endpoint: safeId, workergroup: safeId, requestIdx: safeId });

const workerSchema = z.object({
  id: safeId,
  endpoint: z.string().min(1),
  workergroup: z.string().min(1),
  machineType: z.string().min(1),
  typeKey: z.string().min(1),
  dollarsPerHour: num,
  storageDollarsPerHour: num,
  dlperf: num,
  state: z.enum(WORKER_STATES),
  stateSince: num,
  stateReason: z.string(),
  mtoken: z.string().min(1),
  url: z.string().nullable(),
  createdAt: num,
  loadedAt: ms,
  startedAt: ms,
  lastReportAt: ms,
  reports: num,
  maxPerf: num,
  curPerf: num,
  measuredPerf: num,
  curLoad: num,
  newLoad: num,
  curLoadAvg: num,
  reqsWorking: num,
  diskUsage: num,
  rejLoad: num.default(0),
  errorMsg: z.string(),
  loadtime: num,
  benchmarked: z.boolean(),
  lastReportBusy: z.boolean(),
  probing: z.boolean(),
  lastProbeOkAt: ms,
  draining: z.boolean(),
  drainReason: z.string(),
  updatePending: z.boolean().default(false),
});

const endpointRecordSchema = z.object({
  id: safeId,
  createdAt: num,
  lastActivityAt: ms,
  /** Parsed by endpointSchema at restore: a config that no longer parses is skipped with a warning. */
  config: z.object({ name: z.string().min(1) }).passthrough(),
  wgIds: z.array(z.tuple([z.string().min(1), safeId])),
});

const answerSchema = z.object({ url: z.string() }).passthrough();
const pendingSchema = z.object({
  idx: safeId,
  cost: num,
  createdAt: num,
  replayTimeoutMs: num,
  state: z.enum(['queued', 'routed', 'timed_out']),
  workerId: safeId.nullable(),
  routedAt: ms,
  answer: answerSchema.nullable(),
  reported: z.boolean(),
  expectedQueueTime: ms,
  lastSeenAt: num,
  avoid: z.array(z.tuple([safeId, num])),
  attempts: num,
  delivered: z.boolean(),
});
/** Per endpoint: its reqnum (and, in journals written before one record per request, its open requests). */
const requestsSchema = z.object({ reqnum: z.number().int().min(0), pending: z.array(pendingSchema) });
/** One open request (`req/<idx>`), with the endpoint it belongs to. */
const reqSchema = pendingSchema.extend({ endpoint: z.string().min(1) });

const perfSchema = z.array(
  z.tuple([
    z.string().min(1),
    z.object({ benchmarks: z.number().int().min(0).max(1e6), benchmarkMean: num, measured: z.number().int().min(0).max(1e6), measuredEwma: num }),
  ]),
);

/** Zod check of each record kind, with its key: used by the journal at open. */
export function validateRecord(kind: string, id: string, value: unknown): string | null {
  const check = (r: { success: boolean; error?: z.ZodError }) =>
    r.success
      ? null
      : Object.entries(fieldErrors(r.error!))
          .map(([k, v]) => `${k}: ${v}`)
          .join('; ') || 'invalid';
  switch (kind) {
    case 'meta':
      if (id === 'ids') return check(idsSchema.safeParse(value));
      if (id === 'perf') return check(perfSchema.safeParse(value));
      return `unknown meta record "${id}"`;
    case 'worker': {
      const r = workerSchema.safeParse(value);
      if (r.success && String(r.data.id) !== id) return `worker record ${r.data.id} stored under "${id}"`;
      return check(r);
    }
    case 'endpoint': {
      const r = endpointRecordSchema.safeParse(value);
      if (r.success && r.data.config.name !== id) return `endpoint "${r.data.config.name}" stored under "${id}"`;
      return check(r);
    }
    case 'requests':
      return check(requestsSchema.safeParse(value));
    case 'req': {
      const r = reqSchema.safeParse(value);
      if (r.success && String(r.data.idx) !== id) return `request ${r.data.idx} stored under "${id}"`;
      return check(r);
    }
    default:
      return `unknown kind "${kind}"`;
  }
}

/** Requests one `stage()` encodes at most per endpoint (about 3 ms at ~6 µs a record); the save takes the rest. */
export const STAGE_LIMIT = 512;
/**
 * Wall time one `stage()` call may spend on requests before it stops (it goes on in chunks of
 * STAGE_CHUNK until then): under load a record costs 6–40 µs (the CPU's caches, a core shared
 * with the load), so a fixed count could hold the event loop 3 ms or 20. `startStaging` carries
 * what is left over in the next turn of the loop, after the sockets' I/O.
 */
export const STAGE_BUDGET_MS = 2;
/**
 * A backlog of changed requests past this many (the loop was held, or a slow phase of the machine
 * made each record dearer) widens a stage's budget in proportion, up to STAGE_BUDGET_MAX_MS, so
 * staging catches up instead of leaving the backlog to the tick's save.
 */
export const STAGE_BACKLOG = 1024;
export const STAGE_BUDGET_MAX_MS = 8;
/**
 * Wall time the tick's background save may spend encoding the requests staging has not reached
 * (at least one chunk an endpoint). The rest stay changed, for staging and the next save: a
 * request routed in a slow second becomes durable a save later, as if the machine had crashed a
 * second earlier for it (its client re-routes an id the engine does not know, and ids stay
 * reserved ahead, so none is issued twice). Unbounded, a save after a slow phase encoded 6,000
 * records in one slice of 38–118 ms.
 */
export const SAVE_ENCODE_BUDGET_MS = 5;
/** Requests encoded between two looks at the clock. */
export const STAGE_CHUNK = 64;

/** A stage's time budget with `backlog` changed requests waiting: STAGE_BUDGET_MS, widened past STAGE_BACKLOG. */
export function stageBudgetMs(backlog: number, base = STAGE_BUDGET_MS): number {
  if (backlog <= STAGE_BACKLOG) return base;
  return Math.min(Math.max(base, STAGE_BUDGET_MAX_MS), (base * backlog) / STAGE_BACKLOG);
}

export class EngineStore {
  /** Last JSON saved per journal key (meta, endpoints, reqnums): only what changed is written. */
  private saved = new Map<string, string>();
  /** Each worker as last written (see saveWorkers). */
  private savedWorkers = new Map<number, WorkerRecord>();
  private readonly idsPath: string;
  private failures = 0;
  private error: string | null = null;
  private failingSince: number | null = null;
  private lastReserveTry = Number.NEGATIVE_INFINITY;
  private beyond = false;
  /** The tick saves in the background (`saveInBackground`): reservations ahead of need are made so too. */
  private background = false;
  /** A background reservation is under way. */
  private reserving = false;
  /** A reservation was wanted while a flush was in flight: made when it ends. */
  private reserveWanted = false;
  /** The background save or reservation in flight (tests await it). */
  private inFlight: Promise<void> | null = null;
  /** The final save was made: nothing is written in the background after it. */
  private closed = false;

  constructor(
    private readonly reg: Registry,
    readonly journal: Journal,
    private readonly opts: { repair?: boolean } = {},
  ) {
    this.idsPath = `${journal.path}.ids`;
    reg.reserveIds = () => this.reserveFromAlloc();
    reg.reportedSince = new Set();
  }

  health(): StoreHealth {
    return {
      ok: this.error === null,
      error: this.error,
      failingSince: this.failingSince,
      failures: this.failures,
      pendingRecords: this.journal.pendingCount(),
      skippedRecords: this.journal.recovered.skipped,
      idsBeyondReservation: this.beyond,
    };
  }

  private failed(op: string, err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.failures++;
    if (this.error === null) {
      this.failingSince = this.reg.clock.now();
      this.reg.log.error(
        { event: 'store_failing', op, error: msg, path: this.journal.path },
        'cannot write the state journal: serving from memory, retrying every tick',
      );
    }
    this.error = msg;
  }

  private succeeded(): void {
    if (this.error !== null) {
      this.reg.log.warn(
        { event: 'store_recovered', failed_for_ms: this.reg.clock.now() - (this.failingSince ?? 0), failures: this.failures },
        'the state journal is written again',
      );
    }
    this.error = null;
    this.failingSince = null;
  }

  /**
   * From an id allocation below the low water: at most one try a second while writes fail. With
   * background saves, ids are still reserved (the low water is 50,000 request ids ahead): the
   * reservation is made on the thread pool, and `reserved` moves only once it is durable. Only
   * when the next id is not reserved does it wait: a synchronous reservation (taking over a flush
   * in flight), as without background saves.
   */
  private reserveFromAlloc(): void {
    const reg = this.reg;
    const now = reg.clock.now();
    if (this.error !== null && now - this.lastReserveTry < 1000) return this.noteBeyond();
    const hard = (Object.keys(reg.next) as Array<keyof IdCounters>).some((k) => reg.next[k] >= reg.reserved[k]);
    if (this.background && !hard) {
      if (this.reserving) return;
      this.lastReserveTry = now;
      return this.reserveInBackground();
    }
    this.lastReserveTry = now;
    if (!this.reserve()) this.noteBeyond();
  }

  private ceiling(exact: boolean): IdCounters {
    const reg = this.reg;
    const ceil = {} as IdCounters;
    for (const k of Object.keys(reg.next) as Array<keyof IdCounters>) ceil[k] = exact ? reg.next[k] : Math.max(reg.reserved[k], reg.next[k] + ID_BLOCK[k]);
    return ceil;
  }

  /**
   * The next block of every id kind, reserved as `reserve` does (the journal record fsync'd, then
   * the `.ids` copy written atomically) but on the thread pool; `reserved` moves when both are
   * durable. Waits for a flush in flight (one at a time).
   */
  private reserveInBackground(): void {
    if (this.closed) return;
    if (this.journal.flushing()) {
      this.reserveWanted = true;
      return;
    }
    this.reserveWanted = false;
    this.reserving = true;
    const ceil = this.ceiling(false);
    this.journal.put('meta', 'ids', ceil);
    this.saved.set('meta/ids', JSON.stringify(ceil));
    this.track(
      this.journal
        .flushAsync()
        .then(() => {
          // Never below a reservation made meanwhile (a synchronous one may have overtaken this).
          const reg = this.reg;
          const copy = {} as IdCounters;
          for (const k of Object.keys(ceil) as Array<keyof IdCounters>) copy[k] = Math.max(ceil[k], reg.reserved[k]);
          return writeFileAtomicAsync(this.idsPath, JSON.stringify(copy)).then(() => copy);
        })
        .then(
          (copy) => {
            const reg = this.reg;
            // A synchronous reservation during the write of the copy: its `.ids` may have been
            // renamed over by this lower one. Written again (rare: the limit reached meanwhile).
            const keys = Object.keys(copy) as Array<keyof IdCounters>;
            if (keys.some((k) => reg.reserved[k] > copy[k])) {
              try {
                writeFileAtomic(this.idsPath, JSON.stringify(reg.reserved));
              } catch (err) {
                this.failed('reserve', err);
              }
            }
            for (const k of keys) reg.reserved[k] = Math.max(reg.reserved[k], copy[k]);
            this.beyond = false;
            this.succeeded();
          },
          (err) => {
            this.failed('reserve', err);
            this.noteBeyond();
          },
        )
        .finally(() => {
          this.reserving = false;
        }),
    );
  }

  /** Keep the background work's promise (for `settled`) and start a wanted reservation when it ends. */
  private track(p: Promise<void>): void {
    // Every failure is reported by the handlers (health, log); none may become an unhandled rejection.
    const done = p
      .catch((err) => this.failed('save', err))
      .finally(() => {
        if (this.inFlight === done) this.inFlight = null;
        if (this.reserveWanted && !this.journal.flushing()) this.reserveInBackground();
      });
    this.inFlight = done;
  }

  /** Resolves when no background save or reservation is in flight (tests, benchmarks). */
  async settled(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  private noteBeyond(): void {
    const reg = this.reg;
    const over = (Object.keys(reg.next) as Array<keyof IdCounters>).some((k) => reg.next[k] >= reg.reserved[k]);
    if (over && !this.beyond)
      reg.log.error({ event: 'ids_not_durable' }, 'ids are handed out beyond the last durable reservation (the journal cannot be written)');
    this.beyond = over;
  }

  /**
   * Reserve the next block of every id kind, durably (journal fsync + the `.ids` copy), before any
   * of it is handed out. `exact`: reserve nothing ahead (a clean stop). Returns false when it failed.
   */
  reserve(exact = false): boolean {
    const reg = this.reg;
    const ceil = this.ceiling(exact);
    try {
      this.journal.put('meta', 'ids', ceil);
      this.saved.set('meta/ids', JSON.stringify(ceil));
      this.journal.flush();
      writeFileAtomic(this.idsPath, JSON.stringify(ceil));
    } catch (err) {
      this.failed('reserve', err);
      return false;
    }
    reg.reserved = ceil;
    this.beyond = false;
    this.succeeded();
    return true;
  }

  /**
   * The tick's save: what changed is encoded now (as `save`), then appended and fsync'd on the
   * thread pool while the engine goes on. One at a time: while one is in flight, this one only
   * encodes, and its records go with the next. A failure is reported and retried at the next
   * tick (the journal cut back and kept the records). Never throws.
   */
  saveInBackground(encodeBudgetMs = SAVE_ENCODE_BUDGET_MS): void {
    if (this.closed) return;
    this.background = true;
    try {
      this.collect(encodeBudgetMs);
    } catch (err) {
      this.failed('save', err);
      return;
    }
    if (this.journal.flushing()) return;
    this.track(
      this.journal.flushAsync().then(
        () => {
          const reg = this.reg;
          if (this.beyond || (Object.keys(reg.next) as Array<keyof IdCounters>).some((k) => reg.next[k] >= reg.reserved[k])) this.reserveWanted = true;
          else this.succeeded();
        },
        (err) => this.failed('save', err),
      ),
    );
  }

  /** Write what changed since the last save and fsync it; `final` at close (no id reserved ahead). Never throws. */
  save(final = false): void {
    this.collect();
    if (final) {
      // A clean stop: the next start continues at the exact next ids (a flush in flight is taken over).
      this.closed = true;
      this.reserve(true);
      return;
    }
    try {
      this.journal.flush();
    } catch (err) {
      this.failed('save', err);
      return;
    }
    // A reservation that failed earlier is made again as soon as the disk takes writes.
    const reg = this.reg;
    if (this.beyond || (Object.keys(reg.next) as Array<keyof IdCounters>).some((k) => reg.next[k] >= reg.reserved[k])) this.reserve();
    else this.succeeded();
  }

  /**
   * Put into the journal (pending, not written) every record that changed since the last save;
   * of the changed requests, as many as `requestBudgetMs` allows (see SAVE_ENCODE_BUDGET_MS).
   */
  private collect(requestBudgetMs = Number.POSITIVE_INFINITY): void {
    const deadline = performance.now() + requestBudgetMs;
    const reg = this.reg;
    const store = this.journal;
    const live = new Set<string>(['meta/ids']);
    const put = (kind: string, id: string, value: unknown) => {
      const key = `${kind}/${id}`;
      live.add(key);
      const json = JSON.stringify(value);
      if (this.saved.get(key) === json) return;
      this.saved.set(key, json);
      store.put(kind, id, value, json);
    };
    put(
      'meta',
      'perf',
      Object.entries(reg.perf.snapshot()).map(([k, v]) => [
        k,
        { benchmarks: v.benchmarks, benchmarkMean: v.benchmarkMean, measured: v.measured, measuredEwma: v.measuredEwma },
      ]),
    );
    for (const ep of reg.endpoints.values()) {
      put('endpoint', ep.name, {
        id: ep.id,
        createdAt: ep.createdAt,
        lastActivityAt: ep.lastActivityAt,
        config: { name: ep.name, api_key: ep.apiKey, state: ep.state, ...ep.params, workergroups: [...ep.workergroups.values()] },
        wgIds: [...ep.workergroups.keys()].map((wg) => [wg, reg.wgIds.get(`${ep.name}/${wg}`)]).filter((p) => p[1] !== undefined),
      });
      put('requests', ep.name, { reqnum: ep.router.lastReqnum(), pending: [] });
      if (requestBudgetMs === Number.POSITIVE_INFINITY || !ep.router.tracking()) this.saveRequests(ep.name, ep.router);
      else this.encodeUntil(ep.name, ep.router, deadline, Number.POSITIVE_INFINITY);
    }
    this.saveWorkers();
    for (const key of [...this.saved.keys()]) {
      if (live.has(key)) continue;
      const slash = key.indexOf('/');
      store.delete(key.slice(0, slash), key.slice(slash + 1));
      this.saved.delete(key);
      // An endpoint gone: its open requests' records go with it.
      if (key.startsWith('requests/')) this.dropRequests(key.slice(slash + 1));
    }
  }

  /**
   * Encode the requests changed since the last save or stage into the journal's pending records,
   * without writing: a busy second's records are then encoded in small slices between requests,
   * not all at once in the tick's save (which writes and fsyncs them, durable as before). Does
   * nothing before the first save (that one writes every open request). Never throws.
   *
   * Bounded: at most STAGE_LIMIT requests per endpoint and `budgetMs` of wall time (looked at
   * every STAGE_CHUNK requests; at least one chunk is encoded). After the loop was held (a GC, a
   * wait for a core) the changes of those 100+ ms are encoded over the next calls, not in one
   * slice that holds it again. Returns true when changed requests are left for a next call.
   */
  stage(budgetMs = STAGE_BUDGET_MS): boolean {
    let more = false;
    try {
      let backlog = 0;
      for (const ep of this.reg.endpoints.values()) backlog += ep.router.changeCount();
      const deadline = performance.now() + stageBudgetMs(backlog, budgetMs);
      for (const ep of this.reg.endpoints.values()) {
        const router = ep.router;
        if (!router.tracking()) continue;
        this.encodeUntil(ep.name, router, deadline, STAGE_LIMIT);
        if (router.changeCount() > 0) more = true;
      }
      // Workers that reported (their load, report time…): encoded now, not all in the tick's save.
      const reported = this.reg.reportedSince;
      if (reported && reported.size > 0 && this.savedWorkers.size > 0) {
        for (const id of reported) {
          const w = this.reg.workers.get(id);
          if (w) this.saveWorker(w);
        }
        reported.clear();
      }
    } catch (err) {
      this.failed('stage', err);
      return false;
    }
    return more;
  }

  /**
   * Encode the endpoint's changed requests, oldest first, in chunks of STAGE_CHUNK until `deadline`
   * (looked at after each chunk: at least one is encoded) or `max` of them.
   */
  private encodeUntil(endpoint: string, router: EndpointRouter, deadline: number, max: number): void {
    for (let n = 0; n < max && router.changeCount() > 0; n += STAGE_CHUNK) {
      this.saveRequests(endpoint, router, Math.min(STAGE_CHUNK, max - n));
      if (performance.now() >= deadline) return;
    }
  }

  /**
   * One record per open request (`req/<idx>`), written when it changes: the router records which
   * ids changed (route, poll, report, end), so a save costs what changed, not what is open. The
   * first save of an endpoint writes all its open requests and drops records of ones not open.
   */
  private saveRequests(endpoint: string, router: EndpointRouter, limit = Number.POSITIVE_INFINITY): void {
    const store = this.journal;
    const changes = router.takeChanges(limit);
    if (changes === null) {
      const open = router.trackChanges();
      const keep = new Set<string>();
      for (const p of open) {
        const id = String(p.idx);
        keep.add(id);
        store.put('req', id, { ...p, endpoint }, undefined, false);
      }
      for (const [id, v] of store.all('req')) if ((v as { endpoint: string }).endpoint === endpoint && !keep.has(id)) store.delete('req', id);
      return;
    }
    for (const [idx, p] of changes) {
      // The plain copy is ours (takeChanges made it): the endpoint goes on it, no second copy.
      // Not kept in memory (the journal decodes it if ever read back): the copy is garbage once
      // encoded, instead of 10,000 copies living about a second each (GC work at every scavenge).
      if (p) store.put('req', String(idx), Object.assign(p, { endpoint }), undefined, false);
      else store.delete('req', String(idx));
    }
  }

  /**
   * Worker records: each compared field by field with the copy last written (every field is a
   * primitive), so a tick with 1,000 workers costs no JSON unless a worker changed; the probe flag
   * is not state (saved as false).
   */
  private saveWorkers(): void {
    const store = this.journal;
    this.reg.reportedSince?.clear();
    for (const w of this.reg.workers.values()) this.saveWorker(w);
    for (const id of this.savedWorkers.keys()) {
      if (this.reg.workers.has(id)) continue;
      this.savedWorkers.delete(id);
      store.delete('worker', String(id));
    }
  }

  /** Queue the worker's record when a field differs from the copy last queued. */
  private saveWorker(w: WorkerRecord): void {
    const prev = this.savedWorkers.get(w.id);
    if (prev && sameWorker(prev, w)) return;
    const copy = { ...w, probing: false };
    this.savedWorkers.set(w.id, copy);
    this.journal.put('worker', String(w.id), copy);
  }

  private dropRequests(endpoint: string): void {
    for (const [id, v] of [...this.journal.all('req')]) if ((v as { endpoint: string }).endpoint === endpoint) this.journal.delete('req', id);
  }

  /** Take back the state of an earlier run into the (empty) registry, then reserve ids. Returns what was restored. */
  restore(): Restored {
    const hook = this.reg.reserveIds;
    // Ids taken while restoring (endpoints, workergroups) are renumbered from the records: no reservation for them.
    this.reg.reserveIds = null;
    try {
      return this.restoreRecords();
    } finally {
      this.reg.reserveIds = hook;
    }
  }

  private restoreRecords(): Restored {
    const reg = this.reg;
    const store = this.journal;
    const out = { endpoints: 0, workers: 0, requests: 0 };
    const fromFile = this.readIdsFile();
    if (fromFile && store.lineCount() === 0 && !this.opts.repair) {
      throw new JournalDamagedError(store.path, 0, `it holds no record although ${this.idsPath} says ids were issued`, 1);
    }
    const seen: IdCounters = { worker: 0, endpoint: 0, workergroup: 0, requestIdx: 0 };
    // Open requests by endpoint, queue order kept (oldest first; routed ones follow in any order).
    const reqsOf = new Map<string, PendingRequest[]>();
    for (const raw of store.all('req').values()) {
      const { endpoint, ...p } = reqSchema.parse(raw);
      seen.requestIdx = Math.max(seen.requestIdx, p.idx);
      let list = reqsOf.get(endpoint);
      if (!list) {
        list = [];
        reqsOf.set(endpoint, list);
      }
      list.push(p as PendingRequest);
    }
    for (const list of reqsOf.values()) list.sort((a, b) => a.createdAt - b.createdAt || a.idx - b.idx);
    for (const [name, raw] of store.all('endpoint')) {
      const rec = endpointRecordSchema.parse(raw);
      seen.endpoint = Math.max(seen.endpoint, rec.id);
      for (const [, id] of rec.wgIds) seen.workergroup = Math.max(seen.workergroup, id);
      const parsed = endpointSchema.safeParse(rec.config);
      if (!parsed.success) {
        reg.log.warn({ event: 'restore_skipped', endpoint: name, fields: fieldErrors(parsed.error) }, 'a remembered endpoint no longer parses: skipped');
        continue;
      }
      const ep = reg.addEndpoint(parsed.data);
      ep.id = rec.id;
      ep.createdAt = rec.createdAt;
      ep.lastActivityAt = rec.lastActivityAt;
      for (const [wg, id] of rec.wgIds) if (ep.workergroups.has(wg)) reg.wgIds.set(`${ep.name}/${wg}`, id);
      const reqs = store.get('requests', name);
      if (reqs !== undefined) {
        const r = requestsSchema.parse(reqs);
        for (const p of r.pending) seen.requestIdx = Math.max(seen.requestIdx, p.idx);
        ep.router.importPending(r.pending as PendingRequest[], r.reqnum);
        out.requests += r.pending.length;
      }
      const own = reqsOf.get(name) ?? [];
      ep.router.importPending(own, 0);
      out.requests += own.length;
      // Its requests' records are in the journal as restored: from here on only changes are written
      // (a journal of the earlier one-record-per-endpoint shape is written per request at the first save).
      if (reqs === undefined || requestsSchema.parse(reqs).pending.length === 0) ep.router.trackChanges();
      out.endpoints++;
    }
    for (const raw of store.all('worker').values()) {
      const w = workerSchema.parse(raw) as WorkerRecord;
      seen.worker = Math.max(seen.worker, w.id);
      if (!reg.endpoints.has(w.endpoint)) continue;
      // The record's report time may be older than its last report (report fields do not make a
      // record dirty): staleness is measured from the restore, as if the worker had just reported.
      if (w.lastReportAt !== null) w.lastReportAt = Math.max(w.lastReportAt, reg.clock.now());
      reg.workers.set(w.id, { ...w, probing: false });
      reg.workerEpoch++;
      this.savedWorkers.set(w.id, { ...w, probing: false });
      out.workers++;
    }
    reg.routableChanged();
    // Replayed through the book's own API: n benchmarks of the mean, n measurements of the average.
    const perf = store.get('meta', 'perf');
    for (const [key, k] of perf === undefined ? [] : perfSchema.parse(perf)) {
      for (let i = 0; i < k.benchmarks; i++) reg.perf.addBenchmark(key, k.benchmarkMean);
      for (let i = 0; i < k.measured; i++) reg.perf.addMeasured(key, k.measuredEwma);
    }
    const fromJournal = store.get('meta', 'ids') === undefined ? null : idsSchema.parse(store.get('meta', 'ids'));
    for (const k of Object.keys(reg.next) as Array<keyof IdCounters>) {
      reg.next[k] = Math.max(reg.next[k], seen[k] + 1, fromJournal?.[k] ?? 1, fromFile?.[k] ?? 1);
    }
    const skipped = store.recovered.skipped;
    if (out.endpoints > 0 || skipped > 0)
      reg.log.info({ event: 'restored', ...out, skipped_records: skipped, next_request_idx: reg.next.requestIdx }, 'engine state restored from the journal');
    this.reserve();
    return out;
  }

  /** The second copy of the reservation; damage there is damage (unless repairing: then it is ignored). */
  private readIdsFile(): IdCounters | null {
    if (!existsSync(this.idsPath)) return null;
    const text = readFileSync(this.idsPath, 'utf8');
    let parsed: z.ZodSafeParseResult<IdCounters>;
    try {
      parsed = idsSchema.safeParse(JSON.parse(text));
    } catch {
      parsed = { success: false } as z.ZodSafeParseResult<IdCounters>;
    }
    if (parsed.success) return parsed.data;
    if (this.opts.repair) {
      this.reg.log.warn({ event: 'ids_file_ignored', path: this.idsPath }, 'the id reservation copy is damaged: ignored (--repair)');
      return null;
    }
    throw new JournalDamagedError(this.idsPath, 0, 'not a valid id reservation', 1);
  }
}

/**
 * Fields that move with every report (the report's time and count, the load it carried, the
 * throughput over its interval): a change of these alone does not make a worker's record dirty,
 * or 1,000 workers would rewrite 1,000 records a second. They are written with the record when a
 * lasting field changes. A restart does not need them: the worker reports again within seconds
 * and overwrites them all, and its staleness is measured from the restore (see `restoreRecords`).
 */
const REPORT_FIELDS: ReadonlySet<string> = new Set<keyof WorkerRecord>([
  'lastReportAt',
  'reports',
  'curLoad',
  'newLoad',
  'curLoadAvg',
  'reqsWorking',
  'lastReportBusy',
  'curPerf',
  'measuredPerf',
  'diskUsage',
  'probing',
]);

/** Whether a worker's lasting fields are those last written (see REPORT_FIELDS). */
function sameWorker(prev: WorkerRecord, w: WorkerRecord): boolean {
  for (const k in w) {
    if (REPORT_FIELDS.has(k)) continue;
    if (prev[k as keyof WorkerRecord] !== w[k as keyof WorkerRecord]) return false;
  }
  return true;
}

/** writeFileAtomic on the thread pool (its own tmp name: a synchronous one may run meanwhile). */
async function writeFileAtomicAsync(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-bg`;
  const fh = await openP(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await renameP(tmp, path);
  try {
    const dh = await openP(dirname(path), 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    /* some filesystems cannot fsync a directory; the rename is still atomic */
  }
}

/** Write a small file so that a crash leaves the old or the new content whole: tmp, fsync, rename, fsync dir. */
function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    const buf = Buffer.from(text);
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    /* some filesystems cannot fsync a directory; the rename is still atomic */
  }
}

/**
 * Stage the store's changes every `intervalMs`, and when a call leaves changes over (its time
 * budget spent), go on at the next turn of the event loop (`setImmediate`: after the sockets'
 * I/O and the timers), so a busy second is encoded in slices of about STAGE_BUDGET_MS with
 * requests answered between them. Returns the function that stops it.
 */
export function startStaging(store: EngineStore, intervalMs: number): () => void {
  let running = false;
  let stopped = false;
  const run = () => {
    if (stopped) return;
    if (store.stage()) setImmediate(run);
    else running = false;
  };
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    run();
  }, intervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
