import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Journal } from '../src/autoscaler/journal.js';
import { ID_BLOCK } from '../src/autoscaler/registry.js';
import {
  EngineStore,
  STAGE_BACKLOG,
  STAGE_BUDGET_MAX_MS,
  STAGE_BUDGET_MS,
  STAGE_CHUNK,
  STAGE_LIMIT,
  stageBudgetMs,
  startStaging,
} from '../src/autoscaler/store.js';
import { seededRandom } from '../src/common/random.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/** The store alone: a registry saved to a real journal file and restored into a fresh registry. */

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function journalPath(): string {
  const d = mkdtempSync(join(tmpdir(), 'store-'));
  dirs.push(d);
  return join(d, 'state.jsonl');
}

/** A registry with endpoint `a`, a journal and its store, saved once (so changes are tracked from here). */
function savedStore() {
  const path = journalPath();
  const { reg } = testRegistry();
  reg.addEndpoint(endpointCfg('a'));
  const ep = reg.endpoints.get('a')!;
  const j = new Journal(path);
  const store = new EngineStore(reg, j);
  store.save(false);
  return { path, reg, ep, j, store };
}

describe('store', () => {
  it('restores endpoints, workers, pending requests and counters into a fresh registry', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const w = addTestWorker(reg, 'a');
    reg.transition(w, 'loading', 'test');
    const ep = reg.endpoints.get('a')!;
    ep.router.submit(reg.allocRequestIdx(), 100, 60);
    const j = new Journal(path);
    new EngineStore(reg, j).save(false);
    j.close();

    const fresh = testRegistry();
    const j2 = new Journal(path);
    const out = new EngineStore(fresh.reg, j2).restore();
    j2.close();
    expect(out).toEqual({ endpoints: 1, workers: 1, requests: 1 });
    const back = fresh.reg.workers.get(w.id)!;
    expect([back.state, back.mtoken]).toEqual(['loading', w.mtoken]);
    expect(fresh.reg.endpoints.get('a')!.apiKey).toBe('a-key-1234');
    // An unclean stop reserves request ids ahead: none issued before the crash is issued again.
    expect(fresh.reg.next.requestIdx).toBe(2 + ID_BLOCK.requestIdx);
    expect(fresh.reg.allocWorkerId()).toBe(w.id + 1 + ID_BLOCK.worker);
  });

  it('a final save reserves nothing ahead; deleted workers leave the journal', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const a = addTestWorker(reg, 'a');
    addTestWorker(reg, 'a');
    reg.allocRequestIdx();
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    store.save(false);
    reg.workers.delete(a.id);
    store.save(true);
    j.close();
    const fresh = testRegistry();
    const j2 = new Journal(path);
    new EngineStore(fresh.reg, j2).restore();
    j2.close();
    expect([...fresh.reg.workers.keys()]).toEqual([2]);
    expect(fresh.reg.next.requestIdx).toBe(2);
    expect(fresh.reg.next.worker).toBe(3);
  });
});

describe('one record per open request, written when it changes', () => {
  const reqIds = (j: Journal) => [...j.all('req').keys()].sort();

  it('new, polled and timed-out requests each write their own record; a tick with nothing changed writes nothing', () => {
    const path = journalPath();
    const { reg, clock } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const ep = reg.endpoints.get('a')!;
    const idxs = [0, 1, 2].map(() => ep.router.submit(reg.allocRequestIdx(), 100, 60).idx);
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    store.save(false);
    expect(reqIds(j)).toEqual(idxs.map(String).sort());
    expect((j.get('requests', 'a') as { pending: unknown[] }).pending).toEqual([]);
    const lines = j.lineCount();
    store.save(false);
    expect(j.lineCount()).toBe(lines);
    // A poll of one request rewrites that record only.
    clock.advanceBy(30_000);
    ep.router.touch(ep.router.get(idxs[1]!)!, 60);
    store.save(false);
    expect(j.lineCount()).toBe(lines + 1);
    expect((j.get('req', String(idxs[1])) as { lastSeenAt: number }).lastSeenAt).toBe(clock.now());
    // The other two time out: their records are deleted; the polled one stays.
    clock.advanceBy(40_000);
    ep.router.expire();
    store.save(false);
    expect(reqIds(j)).toEqual([String(idxs[1])]);
    const next = ep.router.submit(reg.allocRequestIdx(), 100, 60).idx;
    store.save(false);
    j.close();

    // Restored in queue order; the first save after it rewrites nothing (the records are there).
    const fresh = testRegistry({ clock });
    const j2 = new Journal(path);
    const s2 = new EngineStore(fresh.reg, j2);
    expect(s2.restore().requests).toBe(2);
    expect(
      fresh.reg.endpoints
        .get('a')!
        .router.exportPending()
        .map((p) => p.idx),
    ).toEqual([idxs[1], next]);
    const before = readFileSync(path).length;
    s2.save(false);
    const written = readFileSync(path).subarray(before).toString('utf8');
    expect(written).not.toContain('"k":"req"');
    expect(written).not.toContain('"k":"worker"');
    j2.close();
  });

  it('a journal of the one-record-per-endpoint shape restores, and its first save moves the requests to their own records', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const ep = reg.endpoints.get('a')!;
    const idxs = [0, 1].map(() => ep.router.submit(reg.allocRequestIdx(), 100, 60).idx);
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    store.save(false);
    // Rewrite as the earlier shape did: the endpoint's requests in one record, none of their own.
    j.put('requests', 'a', { reqnum: 0, pending: ep.router.exportPending() });
    for (const idx of idxs) j.delete('req', String(idx));
    j.close();

    const fresh = testRegistry();
    const j2 = new Journal(path);
    const s2 = new EngineStore(fresh.reg, j2);
    expect(s2.restore().requests).toBe(2);
    s2.save(false);
    expect(reqIds(j2)).toEqual(idxs.map(String).sort());
    expect((j2.get('requests', 'a') as { pending: unknown[] }).pending).toEqual([]);
    j2.close();
  });
});

describe('staging between saves (EngineStore.stage)', () => {
  it('encodes changed requests without writing; the save writes them; a request opened and closed between saves leaves no record', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const w = addTestWorker(reg, 'a');
    reg.transition(w, 'loading', 'test');
    const ep = reg.endpoints.get('a')!;
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    // Before the first save nothing is tracked: stage does nothing.
    const first = ep.router.submit(reg.allocRequestIdx(), 100, 60).idx;
    store.stage();
    expect(j.pendingCount()).toBe(0);
    store.save(false);
    const size = readFileSync(path).length;
    const kept = ep.router.submit(reg.allocRequestIdx(), 100, 60).idx;
    const gone = ep.router.submit(reg.allocRequestIdx(), 100, 60).idx;
    store.stage();
    // Encoded and pending, not written: the file has not grown.
    expect(j.pendingCount()).toBe(2);
    expect(readFileSync(path).length).toBe(size);
    // `gone` times out before the save: its pending record becomes a delete, nothing of it survives.
    ep.router.touch(ep.router.get(kept)!, 600);
    ep.router.touch(ep.router.get(first)!, 600);
    (ep.router.get(gone) as { replayTimeoutMs: number }).replayTimeoutMs = -1;
    ep.router.expire();
    store.stage();
    store.save(false);
    j.close();
    const fresh = testRegistry();
    const j2 = new Journal(path);
    expect(new EngineStore(fresh.reg, j2).restore().requests).toBe(2);
    expect([...j2.all('req').keys()].sort()).toEqual([String(first), String(kept)].sort());
    j2.close();
  });

  it('a report alone does not make a worker record dirty; a lasting change writes it with what it reported', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const w = addTestWorker(reg, 'a');
    const other = addTestWorker(reg, 'a');
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    store.save(false);
    const size = readFileSync(path).length;
    // Report fields only (time, count, load, throughput): nothing to write, in stage or in the save.
    w.curLoad = 50;
    w.newLoad = 10;
    w.curLoadAvg = 40;
    w.reqsWorking = 2;
    w.lastReportBusy = true;
    w.reports = 7;
    w.lastReportAt = 4_000;
    reg.reported(w);
    store.stage();
    expect(j.pendingCount()).toBe(0);
    store.save(false);
    expect(readFileSync(path).length).toBe(size);
    // A lasting field (the url) changes with the next report: the record is written, load included.
    w.url = 'http://127.0.0.1:9/';
    w.curLoad = 123;
    w.lastReportAt = 4_567;
    reg.reported(w);
    other.loadtime = 9; // changed without a report: left to the save's full comparison
    store.stage();
    expect(j.pendingCount()).toBe(1);
    expect(readFileSync(path).length).toBe(size);
    store.save(false);
    expect(readFileSync(path).length).toBeGreaterThan(size);
    j.close();
    const fresh = testRegistry({});
    fresh.clock.advanceBy(60_000);
    const j2 = new Journal(path);
    new EngineStore(fresh.reg, j2).restore();
    j2.close();
    const back = fresh.reg.workers.get(w.id)!;
    // The journal's report time (4,567) is older than the restore: staleness counts from the restore.
    expect([back.url, back.curLoad, back.lastReportAt]).toEqual(['http://127.0.0.1:9/', 123, fresh.clock.now()]);
    expect(fresh.reg.workers.get(other.id)!.loadtime).toBe(9);
    // A worker that never reported stays so.
    expect(fresh.reg.workers.get(other.id)!.lastReportAt).toBeNull();
  });

  it('staging in bounded slices (STAGE_LIMIT a call) loses no change: after a save the records are exactly the open requests (random steps)', () => {
    const path = journalPath();
    const { reg, clock } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const ep = reg.endpoints.get('a')!;
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    store.save(false);
    const r = seededRandom(31);
    let partial = 0;
    const open = () => new Map(ep.router.exportPending().map((p) => [String(p.idx), JSON.parse(JSON.stringify({ ...p, endpoint: 'a' }))]));
    for (let step = 0; step < 300; step++) {
      const x = r();
      if (x < 0.4) {
        // A burst: up to two slices' worth of new requests at once.
        const n = Math.floor(r() * STAGE_LIMIT * 2);
        for (let i = 0; i < n; i++) ep.router.submit(reg.allocRequestIdx(), 1 + Math.floor(r() * 100), 5 + Math.floor(r() * 60));
      } else if (x < 0.65) {
        const all = ep.router.exportPending();
        for (let i = 0; i < 50 && all.length > 0; i++) {
          const e = ep.router.get(all[Math.floor(r() * all.length)]!.idx);
          if (e) ep.router.touch(e, 5 + Math.floor(r() * 60));
        }
      } else if (x < 0.75) {
        clock.advanceBy(Math.floor(r() * 30_000));
        ep.router.expire();
      } else if (x < 0.95) {
        const before = j.pendingCount();
        // No time budget here (a slow machine would cut slices short): STAGE_LIMIT alone bounds them.
        store.stage(Number.POSITIVE_INFINITY);
        if (j.pendingCount() - before >= STAGE_LIMIT) partial++;
      } else {
        store.save(false);
        expect(new Map(j.all('req'))).toEqual(open());
      }
    }
    store.save(false);
    expect(new Map(j.all('req'))).toEqual(open());
    j.close();
    const again = new Journal(path);
    expect(new Map(again.all('req'))).toEqual(open());
    again.close();
    // Slices were bounded (some stages hit the limit), so the rest waited for a later call.
    expect(partial).toBeGreaterThan(10);
  });

  it('a stage whose time budget is spent stops after a chunk and says so; the calls that follow stage the rest', () => {
    const { path, reg, ep, j, store } = savedStore();
    expect(store.stage(0)).toBe(false); // nothing changed
    const n = STAGE_CHUNK * 3 + 5;
    for (let i = 0; i < n; i++) ep.router.submit(reg.allocRequestIdx(), 10, 60);
    // A budget of 0 ms: one chunk a call (at least one is always encoded), then it stops.
    const staged: number[] = [];
    let more = true;
    while (more) {
      const before = j.pendingCount();
      more = store.stage(0);
      staged.push(j.pendingCount() - before);
    }
    expect(staged).toEqual([STAGE_CHUNK, STAGE_CHUNK, STAGE_CHUNK, 5]);
    expect(ep.router.changeCount()).toBe(0);
    // A generous budget: everything up to STAGE_LIMIT in one call.
    for (let i = 0; i < STAGE_LIMIT + 7; i++) ep.router.submit(reg.allocRequestIdx(), 10, 60);
    expect(store.stage(Number.POSITIVE_INFINITY)).toBe(true);
    expect(ep.router.changeCount()).toBe(7);
    expect(store.stage(Number.POSITIVE_INFINITY)).toBe(false);
    store.save(false);
    j.close();
    const again = new Journal(path);
    expect(again.all('req').size).toBe(n + STAGE_LIMIT + 7);
    again.close();
  });

  it('widens the budget of a stage with the backlog, up to its cap', () => {
    expect(stageBudgetMs(0)).toBe(STAGE_BUDGET_MS);
    expect(stageBudgetMs(STAGE_BACKLOG)).toBe(STAGE_BUDGET_MS);
    expect(stageBudgetMs(STAGE_BACKLOG * 2)).toBe(STAGE_BUDGET_MS * 2);
    expect(stageBudgetMs(STAGE_BACKLOG * 1000)).toBe(STAGE_BUDGET_MAX_MS);
    // A budget asked for is never cut (tests pass 0 or Infinity).
    expect(stageBudgetMs(STAGE_BACKLOG * 1000, 0)).toBe(0);
    expect(stageBudgetMs(STAGE_BACKLOG * 1000, Number.POSITIVE_INFINITY)).toBe(Number.POSITIVE_INFINITY);
    expect(stageBudgetMs(STAGE_BACKLOG * 1000, 20)).toBe(20);
  });

  it('startStaging goes on at the next turn of the loop until nothing is left, and stops when asked', async () => {
    const { reg, ep, j, store } = savedStore();
    // More than one call's limit: the interval's call leaves some, the continuations take them.
    for (let i = 0; i < STAGE_LIMIT * 3; i++) ep.router.submit(reg.allocRequestIdx(), 10, 60);
    const calls: boolean[] = [];
    const stage = store.stage.bind(store);
    store.stage = (budget?: number) => {
      const more = stage(budget);
      calls.push(more);
      return more;
    };
    const stop = startStaging(store, 5);
    while (ep.router.changeCount() > 0) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setImmediate(r));
    expect(j.pendingCount()).toBe(STAGE_LIMIT * 3);
    expect(calls.length).toBeGreaterThanOrEqual(3);
    expect(calls.at(-1)).toBe(false);
    stop();
    const after = calls.length;
    ep.router.submit(reg.allocRequestIdx(), 10, 60);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls.length).toBe(after); // stopped: no call since
    expect(ep.router.changeCount()).toBe(1);
    j.close();
  });
});
