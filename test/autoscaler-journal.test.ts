import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { crc32, crc32Table, encodeRecord, Journal, JournalDamagedError } from '../src/autoscaler/journal.js';
import { seededRandom } from '../src/common/random.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function path(): string {
  const d = mkdtempSync(join(tmpdir(), 'journal-'));
  dirs.push(d);
  return join(d, 'state.jsonl');
}

describe('journal', () => {
  it('replays the last value of each key, deletes included, across reopen', () => {
    const p = path();
    const j = new Journal(p);
    j.put('worker', '1', { state: 'loading' });
    j.put('worker', '2', { state: 'ready' });
    j.put('worker', '1', { state: 'ready' });
    j.delete('worker', '2');
    j.put('meta', 'counters', { next: 7 });
    j.close();
    expect(statSync(p).mode & 0o777).toBe(0o600);
    const again = new Journal(p);
    expect([...again.all('worker')]).toEqual([['1', { state: 'ready' }]]);
    expect(again.get('meta', 'counters')).toEqual({ next: 7 });
    // Changes of one key between two flushes are written once: 3 records (worker 1, the delete of worker 2, meta).
    expect(again.recovered).toEqual({ lines: 3, droppedBytes: 0, skipped: 0, firstBadOffset: null, movedTo: null });
    again.close();
  });

  it('drops a torn last line (crash mid-append), cuts the file back, and appends cleanly after it', () => {
    const p = path();
    const j = new Journal(p);
    j.put('worker', '1', { state: 'ready' });
    j.flush();
    j.close();
    const whole = readFileSync(p, 'utf8');
    // A crash in the middle of writing the next record: no newline, half of it on disk.
    const next = encodeRecord({ k: 'worker', id: '1', v: { state: 'errored' } });
    appendFileSync(p, next.subarray(0, next.length - 9));
    const after = new Journal(p);
    expect(after.get('worker', '1')).toEqual({ state: 'ready' });
    expect(after.recovered.droppedBytes).toBeGreaterThan(0);
    expect(readFileSync(p, 'utf8')).toBe(whole);
    after.put('worker', '2', { state: 'loading' });
    after.close();
    const third = new Journal(p);
    expect(third.get('worker', '2')).toEqual({ state: 'loading' });
    expect(third.recovered.droppedBytes).toBe(0);
    third.close();
  });

  it('damage before the end stops opening, naming the file and offset; --repair keeps every intact record and moves the file aside', () => {
    const p = path();
    const a = encodeRecord({ k: 'a', id: '1', v: 1 });
    const c = encodeRecord({ k: 'a', id: '2', v: 2 });
    writeFileSync(p, Buffer.concat([a, Buffer.from('\u0000\u0000garbage\n'), c]));
    const err = (() => {
      try {
        new Journal(p);
      } catch (e) {
        return e as JournalDamagedError;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(JournalDamagedError);
    expect(err!.message).toContain(p);
    expect(err!.offset).toBe(a.length);
    expect(err!.message).toContain(`offset ${a.length}`);
    // Nothing was changed by the refusal.
    expect(readFileSync(p).length).toBe(a.length + 10 + c.length);
    const j = new Journal(p, { repair: true });
    expect([...j.all('a').entries()]).toEqual([
      ['1', 1],
      ['2', 2],
    ]);
    expect(j.recovered).toMatchObject({ lines: 2, skipped: 1, firstBadOffset: a.length });
    expect(existsSync(j.recovered.movedTo!)).toBe(true);
    j.close();
    // The clean journal opens without --repair.
    expect(new Journal(p).all('a').size).toBe(2);
  });

  it('one flush of more records than writev takes at once (IOV_MAX) writes them all, in order, readable again', () => {
    const p = path();
    const j = new Journal(p, { minLinesToCompact: 1_000_000, minBytesToCompact: 1e9 });
    for (let i = 0; i < 3000; i++) j.put('req', String(i), { i, pad: 'x'.repeat(i % 50) });
    for (let i = 0; i < 3000; i += 3) j.delete('req', String(i));
    j.flush();
    for (let i = 1; i < 3000; i += 3) j.put('req', String(i), { i, again: true });
    j.close();
    const again = new Journal(p);
    expect(again.recovered.skipped).toBe(0);
    expect(again.all('req').size).toBe(2000);
    expect(again.get('req', '1')).toEqual({ i: 1, again: true });
    expect(again.get('req', '2')).toEqual({ i: 2, pad: 'x'.repeat(2) });
    expect(again.get('req', '3')).toBeUndefined();
    again.close();
  });

  it('CRC-32 is the IEEE one, natively or in JS', () => {
    const data = Buffer.from('123456789');
    expect(crc32(data)).toBe(0xcbf43926);
    expect(crc32Table(data)).toBe(0xcbf43926);
    const big = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 31) & 0xff));
    expect(crc32Table(big)).toBe(crc32(big));
  });

  it('a zero-filled or unheadered file is damage, not a torn write; an empty file is a fresh start', () => {
    const p = path();
    writeFileSync(p, Buffer.alloc(300));
    expect(() => new Journal(p)).toThrow(/offset 0/);
    writeFileSync(p, '{"k":"a","id":"1","v":1}\n');
    expect(() => new Journal(p)).toThrow(JournalDamagedError);
    writeFileSync(p, '');
    expect(new Journal(p).recovered.lines).toBe(0);
  });

  it('refuses records with a "__proto__" key, with v: null where the schema wants an object, and a checksum that does not match', () => {
    const p = path();
    const validate = (_k: string, _id: string, v: unknown) => (v !== null && typeof v === 'object' ? null : 'must be an object');
    const good = encodeRecord({ k: 'w', id: '1', v: { a: 1 } });
    const proto = Buffer.from(good.toString().replace('{"a":1}', '{"__proto__":{"polluted":1}}'));
    const protoBody = proto.subarray(proto.indexOf(' ', 9) + 1, proto.length - 1);
    const protoRec = Buffer.from(`${crc32(protoBody).toString(16).padStart(8, '0')} ${protoBody.length} ${protoBody.toString()}\n`);
    for (const bad of [protoRec, encodeRecord({ k: 'w', id: '2', v: null }), Buffer.from(good.toString().replace('"a":1', '"a":2'))]) {
      writeFileSync(p, Buffer.concat([good, bad, good]));
      expect(() => new Journal(p, { validate })).toThrow(new RegExp(`offset ${good.length}`));
      const j = new Journal(p, { validate, repair: true });
      expect(j.recovered.skipped).toBe(1);
      expect(j.get('w', '1')).toEqual({ a: 1 });
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      j.close();
    }
  });

  it('compacts when the journal grows long: same state, fewer lines, and it keeps working', () => {
    const p = path();
    const j = new Journal(p, { minLinesToCompact: 50, compactRatio: 4 });
    for (let i = 0; i < 200; i++) {
      j.put('worker', String(i % 5), { n: i });
      j.flush();
    }
    expect(j.lineCount()).toBeLessThanOrEqual(50);
    const lines = readFileSync(p, 'utf8').trim().split('\n').length;
    expect(lines).toBe(j.lineCount());
    j.put('worker', 'x', { n: -1 });
    j.close();
    const again = new Journal(p);
    expect(again.all('worker').size).toBe(6);
    for (let k = 0; k < 5; k++) expect(again.get('worker', String(k))).toEqual({ n: 195 + k });
    expect(again.get('worker', 'x')).toEqual({ n: -1 });
    again.close();
  });

  it('values put without keeping them read back equal (get, all, after compaction and reopen), mixed with kept ones (random steps, a plain map as reference)', () => {
    const p = path();
    let j = new Journal(p, { minLinesToCompact: 40, compactRatio: 2 });
    const r = seededRandom(4);
    const ref = new Map<string, unknown>();
    let notKept = 0;
    let kept = 0;
    for (let step = 0; step < 4000; step++) {
      const id = String(Math.floor(r() * 60));
      const x = r();
      if (x < 0.55) {
        // Values as the store's open requests are: nested objects, nulls, arrays, unicode.
        const v = { idx: Number(id), step, answer: r() < 0.5 ? null : { url: `http://w/é${step}`, cost: r() }, avoid: r() < 0.2 ? [[1, step]] : [] };
        const keep = r() < 0.3;
        j.put('req', id, v, r() < 0.5 ? JSON.stringify(v) : undefined, keep);
        if (keep) kept++;
        else notKept++;
        ref.set(id, JSON.parse(JSON.stringify(v)));
      } else if (x < 0.75) {
        j.delete('req', id);
        ref.delete(id);
      } else if (x < 0.9) j.flush();
      else if (x < 0.93) {
        j.close();
        j = new Journal(p, { minLinesToCompact: 40, compactRatio: 2 });
      } else {
        expect(j.get('req', id)).toEqual(ref.get(id));
        expect(new Map(j.all('req'))).toEqual(ref);
        expect(j.size()).toBe(ref.size);
      }
    }
    expect(new Map(j.all('req'))).toEqual(ref);
    j.close();
    const again = new Journal(p);
    expect(new Map(again.all('req'))).toEqual(ref);
    again.close();
    expect(notKept).toBeGreaterThan(1000);
    expect(kept).toBeGreaterThan(300);
  });

  it('all() hands out the map itself while every value of the kind is kept, a decoded copy otherwise', () => {
    const j = new Journal(path());
    j.put('req', '1', { a: 1 });
    expect(j.all('req')).toBe(j.all('req'));
    j.put('req', '2', { a: 2 }, undefined, false);
    expect(j.all('req')).not.toBe(j.all('req'));
    expect([...j.all('req')]).toEqual([
      ['1', { a: 1 }],
      ['2', { a: 2 }],
    ]);
    // Replaced by a kept value, or deleted: back to the map itself.
    j.put('req', '2', { a: 3 });
    expect(j.all('req')).toBe(j.all('req'));
    j.put('req', '3', { a: 4 }, undefined, false);
    j.delete('req', '3');
    expect(j.all('req')).toBe(j.all('req'));
    j.close();
  });
});
