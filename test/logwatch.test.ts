import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { classifyLine, watchLog, type LogActions, type LogEvent, type LogWatch } from '../src/worker/logwatch.js';

const actions: LogActions = {
  onLoad: ['Application startup complete'],
  onError: ['CUDA out of memory', 'Traceback'],
  onInfo: ['Downloading'],
};

let dir: string;
let watches: LogWatch[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logwatch-'));
});

afterEach(async () => {
  await Promise.all(watches.map((w) => w.close()));
  watches = [];
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Start a watch that records every event; `next(pred)` resolves with the first event matching. */
function record(file: string, opts: { fromStart?: boolean; maxLineBytes?: number; acts?: LogActions } = {}) {
  const events: LogEvent[] = [];
  const waiters: Array<{ pred: (e: LogEvent) => boolean; resolve: (e: LogEvent) => void }> = [];
  const watch = watchLog({
    path: file,
    actions: opts.acts ?? actions,
    fromStart: opts.fromStart,
    maxLineBytes: opts.maxLineBytes,
    onEvent: (e) => {
      events.push(e);
      for (const w of [...waiters]) {
        if (w.pred(e)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    },
  });
  watches.push(watch);
  const next = (pred: (e: LogEvent) => boolean, timeoutMs = 5000): Promise<LogEvent> => {
    const seen = events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(events.map((e) => e.line.slice(0, 80)))}`)),
        timeoutMs,
      );
      waiters.push({
        pred,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  };
  const lineIs = (text: string) => (e: LogEvent) => e.line === text;
  return { watch, events, next, lineIs };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const countResources = (name: string) => process.getActiveResourcesInfo().filter((n) => n === name).length;
/** Handle closes finish on a later loop turn: wait (up to 1 s) for the count to fall to `atMost`. */
async function settledCount(name: string, atMost: number): Promise<number> {
  for (let i = 0; i < 50 && countResources(name) > atMost; i++) await pause(20);
  return countResources(name);
}

describe('classifyLine', () => {
  it('checks onError before onLoad before onInfo, and ignores empty patterns', () => {
    expect(classifyLine('Traceback after Application startup complete', actions)).toEqual({
      kind: 'error',
      pattern: 'Traceback',
      line: 'Traceback after Application startup complete',
    });
    expect(classifyLine('INFO: Application startup complete. Downloading', actions)?.kind).toBe('load');
    expect(classifyLine('Downloading shard 3/4', actions)?.kind).toBe('info');
    expect(classifyLine('nothing to see', actions)).toBeNull();
    expect(classifyLine('anything', { onLoad: [''], onError: [], onInfo: [] })).toBeNull();
  });
});

describe('watchLog', () => {
  it('emits each kind of action, in file order, reading what the file already holds', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'Downloading weights\nplain line\n');
    const r = record(file);
    await r.next(r.lineIs('Downloading weights'));
    fs.appendFileSync(file, 'RuntimeError: CUDA out of memory\nINFO: Application startup complete.\n');
    await r.next((e) => e.kind === 'load');
    expect(r.events.map((e) => [e.kind, e.pattern])).toEqual([
      ['info', 'Downloading'],
      ['error', 'CUDA out of memory'],
      ['load', 'Application startup complete'],
    ]);
    expect(r.watch.stats().lines).toBe(4);
  });

  it('waits for a log file (and its directory) created late', async () => {
    const file = path.join(dir, 'later', 'model.log');
    const r = record(file);
    await pause(150);
    fs.mkdirSync(path.dirname(file));
    fs.writeFileSync(file, 'booting\n');
    await pause(150);
    fs.appendFileSync(file, 'Application startup complete\n');
    const e = await r.next((x) => x.kind === 'load');
    expect(e.line).toBe('Application startup complete');
  });

  it('with fromStart=false skips what the file held at start', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'old run: Application startup complete\n');
    const r = record(file, { fromStart: false });
    await pause(150);
    fs.appendFileSync(file, 'new run: Application startup complete\n');
    await r.next((e) => e.kind === 'load');
    await pause(100);
    expect(r.events.map((e) => e.line)).toEqual(['new run: Application startup complete']);
  });

  it('skips only content it has seen: a file rewritten in place (same inode, same size) is read', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'Downloading old\n');
    const ino = fs.statSync(file).ino;
    const r = record(file, { fromStart: false });
    fs.writeFileSync(file, 'Downloading new\n'); // before the tail has read anything
    expect(fs.statSync(file).ino).toBe(ino);
    await r.next(r.lineIs('Downloading new'));
    expect(r.events.map((e) => e.line)).toEqual(['Downloading new']);
  });

  it('follows rename rotation: lines before and after, none twice', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'Downloading before 1\n');
    const r = record(file);
    await r.next(r.lineIs('Downloading before 1'));
    // The writer still holds the old file for a moment after the rename.
    const oldFd = fs.openSync(file, 'a');
    fs.renameSync(file, `${file}.old`);
    fs.writeSync(oldFd, 'Downloading before 2\n');
    fs.closeSync(oldFd);
    fs.writeFileSync(file, 'Downloading after 1\n');
    fs.appendFileSync(file, 'Application startup complete\n');
    await r.next((e) => e.kind === 'load');
    await pause(100);
    expect(r.events.map((e) => e.line)).toEqual(['Downloading before 1', 'Downloading before 2', 'Downloading after 1', 'Application startup complete']);
    expect(r.watch.stats().rotations).toBe(1);
  });

  it('follows copy-truncate rotation during a run without losing or repeating lines', async () => {
    const file = path.join(dir, 'model.log');
    const r = record(file);
    fs.writeFileSync(file, Array.from({ length: 50 }, (_, i) => `Downloading chunk ${i}\n`).join(''));
    await r.next(r.lineIs('Downloading chunk 49'));
    // logrotate's copytruncate: copy, truncate in place, and the writer goes on writing.
    fs.copyFileSync(file, `${file}.1`);
    fs.truncateSync(file, 0);
    fs.appendFileSync(file, 'Downloading after truncate\n');
    fs.appendFileSync(file, 'Application startup complete\n');
    await r.next((e) => e.kind === 'load');
    await pause(100);
    const lines = r.events.map((e) => e.line);
    expect(lines.slice(50)).toEqual(['Downloading after truncate', 'Application startup complete']);
    expect(new Set(lines).size).toBe(lines.length);
    expect(r.watch.stats().rotations).toBe(1);
  });

  it('follows the file being deleted and created again', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'Downloading first\n');
    const r = record(file);
    await r.next(r.lineIs('Downloading first'));
    fs.unlinkSync(file);
    await pause(100);
    fs.writeFileSync(file, 'Application startup complete\n');
    await r.next((e) => e.kind === 'load');
    expect(r.events.map((e) => e.line)).toEqual(['Downloading first', 'Application startup complete']);
  });

  it('recovers when the log cannot be read (replaced by a directory) and reads the file that replaces it', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'Downloading A\n');
    const r = record(file);
    await r.next(r.lineIs('Downloading A'));
    fs.unlinkSync(file);
    fs.mkdirSync(file);
    await pause(300);
    fs.rmdirSync(file);
    // Same length and offset as the first line: only the content tells it apart (inode numbers are reused).
    fs.writeFileSync(file, 'Downloading B\nApplication startup complete\n');
    await r.next((e) => e.kind === 'load');
    expect(r.events.map((e) => e.line)).toEqual(['Downloading A', 'Downloading B', 'Application startup complete']);
  });

  it('holds a partial line until it is completed', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, '');
    const r = record(file);
    fs.appendFileSync(file, 'INFO: Application start');
    await pause(200);
    expect(r.events).toEqual([]);
    fs.appendFileSync(file, 'up complete.\n');
    const e = await r.next((x) => x.kind === 'load');
    expect(e.line).toBe('INFO: Application startup complete.');
  });

  it('survives a 2 MB line followed by a ready line, truncating the long line for matching', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, '');
    const r = record(file);
    const long = `Downloading ${'x'.repeat(2 * 1024 * 1024)} Application startup complete`;
    fs.appendFileSync(file, `${long}\nready: Application startup complete\n`);
    const e = await r.next((x) => x.kind === 'load');
    expect(e.line).toBe('ready: Application startup complete');
    // The load phrase at the end of the long line lies past 64 KiB: only its start was matched.
    const info = r.events.find((x) => x.kind === 'info');
    expect(info?.line.length).toBe(64 * 1024);
    expect(r.events.map((x) => x.kind)).toEqual(['info', 'load']);
  });

  it('keeps memory bounded for a line much longer than maxLineBytes written in many pieces', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, '');
    const r = record(file, { maxLineBytes: 1024 });
    const fd = fs.openSync(file, 'a');
    fs.writeSync(fd, 'Downloading ');
    for (let i = 0; i < 40; i++) fs.writeSync(fd, 'y'.repeat(256 * 1024));
    fs.writeSync(fd, '\nApplication startup complete\n');
    fs.closeSync(fd);
    await r.next((x) => x.kind === 'load');
    const info = r.events.find((x) => x.kind === 'info');
    expect(info?.line).toBe(`Downloading ${'y'.repeat(1024 - 12)}`);
  });

  it('decodes invalid UTF-8 with replacement characters and goes on', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, '');
    const r = record(file);
    fs.appendFileSync(file, Buffer.concat([Buffer.from('Downloading '), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('\n')]));
    fs.appendFileSync(file, 'Application startup complete\n');
    await r.next((x) => x.kind === 'load');
    expect(r.events[0]?.line).toBe('Downloading \uFFFD\uFFFD\uFFFD');
  });

  it('decodes a UTF-8 character split across two writes', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, '');
    const r = record(file);
    const bytes = Buffer.from('Downloading modèle → prêt\n');
    const cut = bytes.indexOf(0xa8); // inside "è"
    fs.appendFileSync(file, bytes.subarray(0, cut));
    await pause(150);
    fs.appendFileSync(file, bytes.subarray(cut));
    const e = await r.next((x) => x.kind === 'info');
    expect(e.line).toBe('Downloading modèle → prêt');
  });

  it('handles CRLF and lone CR (progress bars) as line ends', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, '');
    const r = record(file);
    fs.appendFileSync(file, 'Downloading 10%\rDownloading 100%\r\nApplication startup complete\r\n');
    await r.next((x) => x.kind === 'load');
    expect(r.events.map((e) => e.line)).toEqual(['Downloading 10%', 'Downloading 100%', 'Application startup complete']);
  });

  // How fast (the ready-line latency) is a benchmark (benchmarks/, `npm run bench`), not a test.
  it('acts on each of 10 ready lines appended one after another, once each', async () => {
    const file = path.join(dir, 'model.log');
    fs.writeFileSync(file, 'booting\n');
    const r = record(file);
    await pause(100);
    for (let i = 0; i < 10; i++) {
      const seen = r.next(r.lineIs(`Application startup complete ${i}`));
      fs.appendFileSync(file, `Application startup complete ${i}\n`);
      await seen;
    }
    expect(r.events.filter((e) => e.kind === 'load').map((e) => e.line)).toEqual(Array.from({ length: 10 }, (_, i) => `Application startup complete ${i}`));
  });

  it('close() releases every watcher and timer and stops delivering', async () => {
    const file = path.join(dir, 'model.log');
    await pause(50); // let the previous test's handles finish closing
    const before = { fsEvents: countResources('FSEventWrap'), timers: countResources('Timeout') };
    fs.writeFileSync(file, 'Downloading one\n');
    const r = record(file);
    await r.next(r.lineIs('Downloading one'));
    expect(countResources('FSEventWrap')).toBeGreaterThan(before.fsEvents);
    await r.watch.close();
    expect(await settledCount('FSEventWrap', before.fsEvents)).toBe(before.fsEvents);
    expect(await settledCount('Timeout', before.timers)).toBeLessThanOrEqual(before.timers);
    fs.appendFileSync(file, 'Application startup complete\n');
    await pause(250);
    expect(r.events.map((e) => e.line)).toEqual(['Downloading one']);
  });

  it('close() while still waiting for the file releases everything', async () => {
    await pause(50);
    const before = { fsEvents: countResources('FSEventWrap'), timers: countResources('Timeout') };
    const r = record(path.join(dir, 'never.log'));
    await pause(50);
    expect(countResources('FSEventWrap')).toBeGreaterThan(before.fsEvents);
    await r.watch.close();
    expect(await settledCount('FSEventWrap', before.fsEvents)).toBe(before.fsEvents);
    expect(await settledCount('Timeout', before.timers)).toBeLessThanOrEqual(before.timers);
  });
});
