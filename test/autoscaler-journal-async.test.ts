import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Journal } from '../src/autoscaler/journal.js';
import { ID_BLOCK, ID_LOW_WATER } from '../src/autoscaler/registry.js';
import { EngineStore, STAGE_CHUNK } from '../src/autoscaler/store.js';
import { endpointCfg, testRegistry } from './helpers/engine-parts.js';
import { smallTmpfs } from './helpers/tmpfs.js';

/**
 * The journal's flush on the thread pool (`flushAsync`) and the store's background save: records
 * are durable when it resolves, what is put meanwhile goes to the next, a synchronous flush may take
 * over at any moment, a failed write cuts back and is retried. "Durable" is checked the only way a
 * restart sees it: a second Journal opened on the same file (as after a crash: no close first).
 */

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function path(): string {
  const d = mkdtempSync(join(tmpdir(), 'journal-async-'));
  dirs.push(d);
  return join(d, 'state.jsonl');
}
/** What a restart would read now. */
function onDisk(p: string, kind = 'req'): string[] {
  return reopen(p, (j) => [...j.all(kind).keys()].sort(byId));
}
/** Numeric ids in numeric order, then the others: a total order, whatever order the journal lists them in. */
function byId(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) === Number.isNaN(y) ? a.localeCompare(b) : Number.isNaN(x) ? 1 : -1;
  return x - y;
}
function reopen<T>(p: string, read: (j: Journal) => T): T {
  const j = new Journal(p);
  try {
    return read(j);
  } finally {
    j.close();
  }
}
const idsRecord = (p: string) => reopen(p, (j) => (j.get('meta', 'ids') as { requestIdx: number }).requestIdx);
/** No time budget on a background save's encoding. */
const ALL = Number.POSITIVE_INFINITY;
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => String(a + i));
const value = (i: number) => ({ idx: i, payload: 'x'.repeat(200) });

describe('journal flushAsync', () => {
  it('is durable when it resolves; records put meanwhile go to the next; one at a time', async () => {
    const p = path();
    const j = new Journal(p);
    for (let i = 1; i <= 3; i++) j.put('req', String(i), value(i));
    const f = j.flushAsync();
    expect(j.flushing()).toBe(true);
    await expect(j.flushAsync()).rejects.toThrow(/in flight/);
    j.put('req', '4', value(4));
    j.delete('req', '1');
    expect(j.pendingCount()).toBe(2);
    await f;
    expect(j.flushing()).toBe(false);
    expect(onDisk(p)).toEqual(['1', '2', '3']);
    await j.flushAsync();
    expect(onDisk(p)).toEqual(['2', '3', '4']);
    j.close();
  });

  it('a synchronous flush at any moment of a flushAsync (append, fsync, compaction) loses nothing and leaves no damage', async () => {
    for (let wait = 0; wait < 12; wait++) {
      const p = path();
      // Compacts once the file has 4x the live records: every second flush here.
      const j = new Journal(p, { minLinesToCompact: 10, minBytesToCompact: 1 });
      for (let i = 0; i < 3000; i++) j.put('req', String(i), value(i));
      j.flush();
      // Rewrite them all: the next async flush appends 3,000 records, then compacts.
      for (let i = 0; i < 3000; i++) j.put('req', String(i), { ...value(i), v: 2 });
      const before = j.lineCount();
      const f = j.flushAsync();
      // Let the thread pool get to some point of it: a different one for each `wait`.
      for (let k = 0; k < wait * 3; k++) await new Promise((r) => setImmediate(r));
      j.put('req', 'late', value(-1));
      j.flush();
      expect(onDisk(p)).toEqual([...range(0, 3000), 'late'].sort(byId));
      await f;
      j.put('req', 'after', value(-2));
      await j.flushAsync();
      reopen(p, (again) => {
        expect(again.recovered.skipped).toBe(0);
        expect((again.get('req', '2999') as { v: number }).v).toBe(2);
        expect(again.get('req', 'after')).toEqual(value(-2));
        expect(again.all('req').size).toBe(3002);
      });
      expect(before).toBeGreaterThan(0);
      j.close();
    }
  });

  it('compacts on the thread pool: same state, fewer records, appends go on in the new file', async () => {
    const p = path();
    const j = new Journal(p, { minLinesToCompact: 50, minBytesToCompact: 1 });
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 20; i++) j.put('req', String(i), { ...value(i), round });
      await j.flushAsync();
    }
    // 400 records appended, 20 live: compacted at least once (never more than ratio x live + one round).
    expect(j.lineCount()).toBeLessThanOrEqual(4 * 20 + 20);
    expect(readFileSync(p, 'utf8').trim().split('\n').length).toBe(j.lineCount());
    expect(existsSync(`${p}.tmp`)).toBe(false);
    reopen(p, (again) => {
      expect((again.get('req', '19') as { round: number }).round).toBe(19);
      expect(again.all('req').size).toBe(20);
    });
    j.close();
  });

  it('close() while a flushAsync is in flight: everything durable, the descriptor closed after it', async () => {
    const p = path();
    const j = new Journal(p);
    for (let i = 0; i < 2000; i++) j.put('req', String(i), value(i));
    const f = j.flushAsync();
    j.put('req', 'last', value(-1));
    j.close();
    expect(onDisk(p)).toContain('last');
    expect(onDisk(p)).toHaveLength(2001);
    await f;
    await expect(j.flushAsync()).rejects.toThrow(/closed/);
  });
});

describe('flushAsync on a full disk', () => {
  const fs = smallTmpfs('journal-full-');
  afterAll(() => {
    if (typeof fs !== 'string') fs.unmount();
  });
  it.skipIf(typeof fs === 'string')(
    `fails with ENOSPC, cuts the file back to what is durable, and writes it all once space returns${typeof fs === 'string' ? ` (skipped: ${fs})` : ''}`,
    async () => {
      if (typeof fs === 'string') return;
      const dir = join(fs.dir, 'data');
      mkdirSync(dir);
      const p = join(dir, 'state.jsonl');
      const j = new Journal(p);
      try {
        await fullDisk(j, p);
      } finally {
        j.close();
      }
    },
  );
});

async function fullDisk(j: Journal, p: string): Promise<void> {
  for (let i = 0; i < 10; i++) j.put('req', String(i), value(i));
  await j.flushAsync();
  const durable = statSync(p).size;
  // About 1.3 MB of records: more than the 256 KiB disk holds.
  for (let i = 10; i < 6000; i++) j.put('req', String(i), value(i));
  await expect(j.flushAsync()).rejects.toThrow(/ENOSPC/);
  expect(statSync(p).size).toBe(durable);
  expect(onDisk(p)).toEqual(range(0, 10));
  expect(j.pendingCount()).toBe(5990);
  // Space returns (fewer records live): the next flush writes what is pending, whole.
  for (let i = 600; i < 6000; i++) j.delete('req', String(i));
  await j.flushAsync();
  expect(onDisk(p)).toEqual(range(0, 600));
  expect(j.pendingCount()).toBe(0);
}

describe('store: the tick saves in the background', () => {
  /** An engine store with endpoint `a`, saved once (requests tracked from here), on a fresh journal. */
  const savedStore = () => {
    const p = path();
    const { reg, clock } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const ep = reg.endpoints.get('a')!;
    const j = new Journal(p);
    const store = new EngineStore(reg, j);
    store.save(false);
    return { p, reg, clock, ep, j, store };
  };

  it('a save in flight while new requests arrive loses nothing across a restart (no clean stop)', async () => {
    const { p, reg, clock, ep, j, store } = savedStore();
    const issued: number[] = [];
    const submit = (n: number) => {
      for (let i = 0; i < n; i++) issued.push(ep.router.submit(reg.allocRequestIdx(), 100, 600).idx);
    };
    // No time budget on the saves' encoding here (tested below): each save takes every change.
    submit(2000);
    store.saveInBackground(ALL);
    expect(j.flushing()).toBe(true);
    // While it is in flight: more requests, staged between ticks, and a tick whose save only encodes.
    submit(500);
    store.stage();
    submit(500);
    store.saveInBackground(ALL);
    await store.settled();
    // The first save's requests are durable; the later ones wait for the next tick.
    expect(onDisk(p).length).toBeGreaterThanOrEqual(2000);
    clock.advanceBy(1000);
    store.saveInBackground(ALL);
    await store.settled();
    expect(store.health().ok).toBe(true);
    // A crash now (no final save, no close): a restart has every request and issues no id again.
    const fresh = testRegistry({ clock });
    const j2 = new Journal(p);
    const out = new EngineStore(fresh.reg, j2).restore();
    expect(out.requests).toBe(3000);
    const back = fresh.reg.endpoints
      .get('a')!
      .router.exportPending()
      .map((q) => q.idx)
      .sort((a, b) => a - b);
    expect(back).toEqual(issued);
    expect(fresh.reg.next.requestIdx).toBeGreaterThan(Math.max(...issued));
    j2.close();
    j.close();
  });

  it('a save whose encoding budget is spent takes one chunk; the rest go with the saves after, and a crash between loses only those', async () => {
    const { p, reg, clock, ep, j, store } = savedStore();
    const issued: number[] = [];
    for (let i = 0; i < STAGE_CHUNK * 3 + 10; i++) issued.push(ep.router.submit(reg.allocRequestIdx(), 100, 600).idx);
    // A budget of 0: one chunk, the oldest changes first.
    store.saveInBackground(0);
    await store.settled();
    expect(onDisk(p).length).toBe(STAGE_CHUNK);
    expect(ep.router.changeCount()).toBe(STAGE_CHUNK * 2 + 10);
    // A crash now: the restart has the chunk written, and issues none of the ids again.
    const early = testRegistry({ clock });
    const jEarly = new Journal(p);
    const restored = new EngineStore(early.reg, jEarly).restore();
    expect(restored.requests).toBe(STAGE_CHUNK);
    expect(early.reg.next.requestIdx).toBeGreaterThan(Math.max(...issued));
    jEarly.close();
    // The saves after carry the rest, a chunk each, until every request is durable.
    for (let k = 0; k < 3; k++) {
      store.saveInBackground(0);
      await store.settled();
    }
    expect(ep.router.changeCount()).toBe(0);
    expect(
      onDisk(p)
        .map(Number)
        .sort((a, b) => a - b),
    ).toEqual(issued);
    j.close();
  });

  it('ids: a reservation ahead of need is made in the background and counts only once durable; at the limit it is made at once', async () => {
    const p = path();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const j = new Journal(p);
    const store = new EngineStore(reg, j);
    store.reserve();
    store.saveInBackground();
    await store.settled();
    const first = reg.reserved.requestIdx;
    // Into the low water: a background reservation starts; `reserved` has not moved yet.
    while (reg.next.requestIdx + ID_LOW_WATER.requestIdx <= first) reg.allocRequestIdx();
    reg.allocRequestIdx();
    expect(reg.reserved.requestIdx).toBe(first);
    await store.settled();
    const second = reg.reserved.requestIdx;
    expect(second).toBeGreaterThan(first);
    // Both copies hold it: the journal's record and the `.ids` file.
    expect(idsRecord(p)).toBe(second);
    expect(JSON.parse(readFileSync(`${p}.ids`, 'utf8')).requestIdx).toBe(second);
    // At the limit with a save in flight: the reservation cannot wait; it takes over the flush.
    ep(reg).router.submit(reg.allocRequestIdx(), 100, 60);
    store.saveInBackground();
    expect(j.flushing()).toBe(true);
    reg.next.requestIdx = second;
    const id = reg.allocRequestIdx();
    expect(id).toBe(second);
    expect(reg.reserved.requestIdx).toBeGreaterThanOrEqual(second + ID_BLOCK.requestIdx);
    expect(idsRecord(p)).toBe(reg.reserved.requestIdx);
    await store.settled();
    // The background one may finish after it: the reservation never goes back.
    expect(JSON.parse(readFileSync(`${p}.ids`, 'utf8')).requestIdx).toBeGreaterThanOrEqual(second + ID_BLOCK.requestIdx);
    expect(idsRecord(p)).toBeGreaterThanOrEqual(second + ID_BLOCK.requestIdx);
    j.close();
  });
});

function ep(reg: ReturnType<typeof testRegistry>['reg']) {
  return reg.endpoints.get('a')!;
}
