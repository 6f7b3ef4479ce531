import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Journal } from '../src/autoscaler/journal.js';

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
    expect(again.recovered).toEqual({ lines: 5, droppedBytes: 0 });
    again.close();
  });

  it('drops a torn last line (crash mid-append), cuts the file back, and appends cleanly after it', () => {
    const p = path();
    const j = new Journal(p);
    j.put('worker', '1', { state: 'ready' });
    j.flush();
    j.close();
    const whole = readFileSync(p, 'utf8');
    // A crash in the middle of writing the next line: no newline, half a JSON object.
    appendFileSync(p, '{"k":"worker","id":"1","v":{"state":"err');
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

  it('stops at the first damaged line: a line of garbage (even newline-terminated) and what follows are not trusted', () => {
    const p = path();
    writeFileSync(p, '{"k":"a","id":"1","v":1}\n\u0000\u0000garbage\n{"k":"a","id":"2","v":2}\n');
    const j = new Journal(p);
    expect([...j.all('a').keys()]).toEqual(['1']);
    expect(j.recovered.lines).toBe(1);
    j.close();
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
});
