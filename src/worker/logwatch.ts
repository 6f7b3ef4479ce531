/**
 * Model log watching (PROTOCOL §5): tail the model server's log and turn lines that contain a
 * configured substring into readiness events.
 *
 * The reading itself is done by the `tail-file` package, pinned to exactly 1.4.16 in package.json
 * because this module replaces some of its methods and reads its private fields (TailInternals
 * below): a patch release may rename them, so an upgrade is a reviewed change with
 * test/logwatch.test.ts run, never a silent `^` bump. What it does, read from its code:
 * - it is event-driven: `fs.watch` on the log's *directory* (inotify on Linux reports writes to
 *   files inside it), then a read from the last byte position. There is no poll interval option
 *   (`pollInterval` does not exist; unknown options are silently copied onto the object), and the
 *   separator option is `sep`, not `sepRegExp`. Measured latency write → line is well under 1 ms.
 * - rename rotation: at the end of the file it stats the name and switches to a new inode once
 *   that has content. Copy-truncate: at the end of the file it compares the size with its
 *   position and starts over from 0 when the file shrank.
 * What it gets wrong for us, and what this module does about it (by its documented mechanism:
 * options replace any of its properties or methods):
 * - missing file: it falls back to tailing `<log>.1` (a stale log could announce "loaded"), and
 *   `fs.watch` on a missing directory throws from inside a promise (crashes the process). So we
 *   wait for the file ourselves and start tail-file only once it exists, point its `secondary` at
 *   a name that never exists, and guard `startTail` so a throwing `fs.watch` becomes an 'error'.
 * - decoding: its StringDecoder is flushed at every end of file, so a UTF-8 character split
 *   across two writes turns into U+FFFD garbage. We read as latin1 (one char per byte, stateless)
 *   and decode each complete line as UTF-8 ourselves (invalid bytes become U+FFFD). Latin1 also
 *   makes its char positions equal byte positions, which we use to skip re-read lines.
 * - long lines: it keeps the whole pending line in one string and rescans it for the separator on
 *   every chunk (quadratic; a 20 MB line took 2.3 s with its 4 KiB reads) and has no length limit
 *   (past ~512 MB V8 throws inside its read callback). We read in 1 MiB chunks and replace its
 *   `getLine` with one that keeps only the first `maxLineBytes` of an over-long line.
 * - lost lines at rotation: its `getLine` hands out one line per setImmediate, and a concurrent
 *   read that sees the rotation clears the lines still queued; ours delivers a chunk's lines at
 *   once. Its end-of-file step switches as soon as a stat sees the new inode, losing what the
 *   old writer added between the last read and that stat; ours reads the old file once more.
 * - any read/open/watch error leaves it stopped; we start a fresh tail (with back-off), skipping
 *   the lines already delivered from the same inode.
 * Known limit (any tailer's): if a copy-truncated file grows past our old position before we
 * look, the truncation goes unseen and the lines before that position are missed.
 * An unterminated last line of a rotated-away file is dropped (it never gets its end).
 * Lines end at `\n`, `\r\n` or a lone `\r`, like Python's universal newlines that PyWorker reads
 * with (progress bars written with `\r` become lines instead of one ever-growing line).
 * A 100 ms safety tick nudges a read in case a change event is missed (e.g. filesystems without
 * inotify); it is a backstop, not the source of latency.
 */
import type { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Logger } from 'pino';

/** Substrings that classify a model log line (PROTOCOL §5: on_load, on_error, on_info). */
export interface LogActions {
  onLoad: string[];
  onError: string[];
  onInfo: string[];
}

/** One classified log line: `pattern` is the substring that matched, `line` the decoded line. */
export type LogEvent = { kind: 'load' | 'error' | 'info'; line: string; pattern: string };

export interface LogWatchOptions {
  path: string;
  actions: LogActions;
  onEvent: (e: LogEvent) => void;
  /** Default true: read what the file already holds (the on-start script rotates old logs away). */
  fromStart?: boolean;
  logger?: Logger;
  /** Default 64 KiB; longer lines are truncated for matching, never break the watch. */
  maxLineBytes?: number;
}

/**
 * A running watch. `close()` releases every watcher, timer and file descriptor it holds; no event
 * is delivered after it resolves. `stats()`: non-empty lines read, and rotations followed (moves
 * to a new inode plus truncations).
 */
export interface LogWatch {
  close(): Promise<void>;
  stats(): { lines: number; rotations: number };
}

const DEFAULT_MAX_LINE_BYTES = 64 * 1024;
/** Read chunk: large so a multi-MB line takes a few reads, not thousands. */
const READ_CHUNK_BYTES = 1 << 20;
/** Backstop for missed change events; PyWorker itself polls every 100 ms. */
const SAFETY_TICK_MS = 100;
/** While the file does not exist: how often to look (the directory watch usually wins). */
const EXISTENCE_POLL_MS = 100;
const RETRY_MIN_MS = 250;
/** Bytes remembered before the skip offset, to recognise the same content after a restart. */
const FINGERPRINT_BYTES = 64;
const RETRY_MAX_MS = 10_000;

/**
 * Classify a line: the first matching substring wins, checked in the order onError, onLoad,
 * onInfo (an error line that also mentions a load phrase must not start the benchmark).
 * Empty patterns are ignored (they would match every line).
 */
export function classifyLine(line: string, actions: LogActions): LogEvent | null {
  const groups: Array<[LogEvent['kind'], string[]]> = [
    ['error', actions.onError],
    ['load', actions.onLoad],
    ['info', actions.onInfo],
  ];
  for (const [kind, patterns] of groups) {
    for (const pattern of patterns) {
      if (pattern !== '' && line.includes(pattern)) return { kind, line, pattern };
    }
  }
  return null;
}

/** The parts of tail-file's (untyped, CommonJS) Tail object that this module touches. */
interface TailInternals extends EventEmitter {
  start(): void;
  _stop(): void;
  readStuff(): void;
  onLine(err: Error | null, line?: string, pos?: number): void;
  onError(err: unknown): void;
  onEndOfFileForTail(this: TailInternals): void;
  setBytePos(pos: number): void;
  interrupt(): void;
  fd?: number | 'init';
  filename: string;
  started: string | null;
  stopping: string | null;
  reading: boolean;
  readable: boolean;
  startPos: number | 'start' | 'end';
  pos: number;
  ino: number | null;
  posNext: number;
  posLast: number;
  txt: string;
  sepG: RegExp;
  watcher?: fs.FSWatcher;
}
type TailCtor = {
  new (filename: string, options: Record<string, unknown>): TailInternals;
  prototype: { startTail(this: TailInternals, filename: string): void };
};

const requireCjs = createRequire(import.meta.url);
const Tail = requireCjs('tail-file') as TailCtor;

/**
 * Watch the model log and call `onEvent` for each line that matches an action. Guarantees: a
 * line is delivered once its terminator is written (within milliseconds: change events, not
 * polling); partial lines wait for their end; rename and copy-truncate rotations are followed;
 * a missing file is waited for; lines are decoded as UTF-8 with replacement characters and cut
 * to `maxLineBytes`; a throwing `onEvent` is logged and does not stop the watch. Never throws.
 */
export function watchLog(opts: LogWatchOptions): LogWatch {
  const file = path.resolve(opts.path);
  const dir = path.dirname(file);
  const base = path.basename(file);
  const maxLineBytes = Number.isFinite(opts.maxLineBytes) && opts.maxLineBytes! >= 1 ? Math.floor(opts.maxLineBytes!) : DEFAULT_MAX_LINE_BYTES;
  const logger = opts.logger;

  let closed = false;
  let lines = 0;
  let rotations = 0;
  let failures = 0;
  // Where the last delivered line ended in which inode, and the bytes just before that offset
  // (latin1): a fresh tail skips up to there only if the file still holds those bytes, since a
  // replaced file can reuse a freed inode number.
  let skipIno: number | null = null;
  let skipUntil = 0;
  let skipTail = '';
  // The file bytes (latin1) that end the line being emitted, set by getLine for the line handler.
  let emittingTail = '';
  // Inode of the last delivered line, to count moves to a new file.
  let currentIno: number | null = null;

  let active: { tail: TailInternals; dead: boolean } | null = null;
  let safetyTimer: NodeJS.Timeout | null = null;
  let retryTimer: NodeJS.Timeout | null = null;
  let existenceTimer: NodeJS.Timeout | null = null;
  let dirWatcher: fs.FSWatcher | null = null;
  let probing = false;

  const deliver = (raw: string) => {
    if (raw.length === 0) return;
    lines++;
    const line = Buffer.from(raw.length > maxLineBytes ? raw.slice(0, maxLineBytes) : raw, 'latin1').toString('utf8');
    const event = classifyLine(line, opts.actions);
    if (!event) return;
    logger?.debug({ kind: event.kind, pattern: event.pattern }, 'model log line matched');
    try {
      opts.onEvent(event);
    } catch (err) {
      logger?.error({ err: (err as Error).message }, 'log event handler threw');
    }
  };

  const startTail = () => {
    if (closed) return;
    const self = { tail: null as unknown as TailInternals, dead: false };
    // Head (latin1 bytes) of an over-long line being skipped, and how many chars of it were dropped.
    let longHead: Buffer | null = null;
    let dropped = 0;

    // Set when a stat saw a new file under the name: the next end of the old file switches to it.
    let switchArmed = false;
    const tail = new Tail(file, {
      startPos: 'start',
      force: false,
      sep: /\r\n|\r|\n/,
      encoding: 'latin1',
      secondary: path.join(dir, `.${base}.nodeworker-no-secondary`),
      _bufsize: READ_CHUNK_BYTES,
      // A throwing fs.watch (directory gone, inotify limit) must become an 'error', not a crash;
      // and a torn-down tail must never start watching again.
      startTail(this: TailInternals, filename: string) {
        if (self.dead) return;
        try {
          Tail.prototype.startTail.call(this, filename);
        } catch (err) {
          this.onError(err);
        }
      },
      // Replaces tail-file's getLine, which hands out one line per setImmediate: lines still queued
      // when a concurrent read notices a rotation were cleared with its buffer. This one delivers
      // every complete line at once and bounds the pending line to maxLineBytes.
      getLine(this: TailInternals) {
        const sep = this.sepG;
        const txt = this.txt;
        let start = 0;
        sep.lastIndex = 0;
        for (let m = sep.exec(txt); m !== null; m = sep.exec(txt)) {
          const line = longHead ? longHead.toString('latin1') : txt.slice(start, m.index);
          this.posLast = this.posNext;
          this.posNext += dropped + (sep.lastIndex - start);
          longHead = null;
          dropped = 0;
          emittingTail = txt.slice(Math.max(start, sep.lastIndex - FINGERPRINT_BYTES), sep.lastIndex);
          start = sep.lastIndex;
          this.emit('line', line);
          if (self.dead) return;
        }
        sep.lastIndex = 0;
        let rest = start === 0 ? txt : txt.slice(start);
        if (rest.length > maxLineBytes) {
          longHead ??= Buffer.from(rest.slice(0, maxLineBytes), 'latin1');
          dropped += rest.length;
          rest = '';
        }
        this.txt = rest;
        return this.readStuff();
      },
      // Replaces tail-file's end-of-file step (the catch-up of older files is unused here). Its
      // version switches as soon as a stat sees a new inode, losing what the old writer added
      // between our last read and that stat; this one reads the old file once more first.
      onEndOfFileForTail(this: TailInternals) {
        if (!this.started || self.dead) return;
        if (this.stopping) return this.interrupt();
        this.reading = true;
        fs.stat(this.filename, (err, st) => {
          this.reading = false;
          if (self.dead || !this.started) return;
          if (!err && st.ino !== this.ino && st.size > 0) {
            if (!switchArmed) {
              switchArmed = true;
              return this.readStuff();
            }
            switchArmed = false;
            this._stop();
            this.startPos = 'start';
            this.emit('restart', 'NEWPRIME');
            return this.start();
          }
          if (!err && st.ino === this.ino && st.size < this.pos) {
            this._stop();
            this.setBytePos(0);
            this.emit('restart', 'TRUNCATE');
            return this.start();
          }
          if (this.readable) return this.readStuff();
          this.emit('eof', this.pos);
        });
      },
    });
    self.tail = tail;
    active = self;

    tail.on('line', (raw: string) => {
      if (self.dead) return;
      const end = tail.posNext; // byte offset just past this line (latin1: chars = bytes)
      if (tail.ino === skipIno && end <= skipUntil) return; // delivered before a restart
      if (currentIno !== null && tail.ino !== currentIno) rotations++;
      currentIno = skipIno = tail.ino;
      skipUntil = end;
      skipTail = emittingTail;
      failures = 0; // reading works again: the next error starts the back-off over
      deliver(raw);
    });
    tail.on('restart', (reason: string) => {
      if (self.dead) return;
      longHead = null;
      dropped = 0;
      if (reason === 'TRUNCATE') {
        // Same inode, new content from offset 0 (copy-truncate): nothing of it was delivered yet.
        rotations++;
        skipUntil = 0;
        skipTail = '';
      }
      logger?.info({ path: file, reason }, 'model log rotated; reading the new content from its start');
    });
    // Always listen: tail-file throws when it has an error and no listener.
    tail.on('error', (err: NodeJS.ErrnoException) => {
      if (self.dead || closed) return;
      teardownTail();
      if (err.code === 'ENOENT') {
        // The file is gone: whatever appears under its name is new content.
        forgetSkip();
        logger?.info({ path: file }, 'model log disappeared; waiting for it');
        waitForFile();
        return;
      }
      failures++;
      const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (failures - 1));
      logger?.warn({ path: file, code: err.code, err: err.message, retry_ms: delay }, 'cannot tail the model log; retrying');
      retryTimer = setTimeout(() => {
        retryTimer = null;
        waitForFile();
      }, delay);
    });
    tail.start();
  };

  const teardownTail = () => {
    const a = active;
    active = null;
    if (!a) return;
    a.dead = true;
    try {
      a.tail.watcher?.close();
    } catch {
      // already closed
    }
    a.tail.watcher = undefined;
    // Closes the fd; an open still in flight closes its own fd when it finds none expected.
    a.tail._stop();
  };

  const stopWaiting = () => {
    if (existenceTimer) clearInterval(existenceTimer);
    existenceTimer = null;
    dirWatcher?.close();
    dirWatcher = null;
  };

  const forgetSkip = () => {
    skipIno = null;
    skipUntil = 0;
    skipTail = '';
  };

  // Does the file at `st` still hold what was delivered (same inode, same bytes before the offset)?
  const holdsDelivered = async (st: fs.Stats): Promise<boolean> => {
    if (st.ino !== skipIno || st.size < skipUntil) return false;
    const want = Buffer.from(skipTail, 'latin1');
    if (want.length === 0) return true;
    const fh = await fs.promises.open(file, 'r').catch(() => null);
    if (!fh) return false;
    try {
      const got = Buffer.alloc(want.length);
      const { bytesRead } = await fh.read(got, 0, want.length, skipUntil - want.length);
      return bytesRead === want.length && got.equals(want);
    } catch {
      return false;
    } finally {
      await fh.close().catch(() => {});
    }
  };

  // Look for the file; tail-file starts only once it exists (see the module comment).
  const probe = () => {
    if (closed || probing || active) return;
    probing = true;
    void (async () => {
      const st = await fs.promises.stat(file).catch(() => null);
      if (st?.isFile() && skipIno !== null && !(await holdsDelivered(st))) forgetSkip();
      probing = false;
      if (closed || active) return;
      if (st?.isFile()) {
        stopWaiting();
        logger?.debug({ path: file }, 'model log found; tailing it');
        startTail();
        return;
      }
      if (!dirWatcher) watchDir(); // the directory may have appeared since the last try
    })();
  };

  const watchDir = () => {
    try {
      const w = fs.watch(dir, (_type, name) => {
        if (!name || name === base) probe();
      });
      w.on('error', () => {
        w.close();
        if (dirWatcher === w) dirWatcher = null;
      });
      dirWatcher = w;
    } catch {
      dirWatcher = null; // directory missing or not watchable: the poll covers it
    }
  };

  const waitForFile = () => {
    if (closed) return;
    stopWaiting();
    watchDir();
    existenceTimer = setInterval(probe, EXISTENCE_POLL_MS);
    probe();
  };

  // fromStart=false: what the file holds now counts as already delivered.
  if (opts.fromStart === false) {
    try {
      const st = fs.statSync(file);
      if (st.isFile()) {
        skipIno = currentIno = st.ino;
        skipUntil = st.size;
        const n = Math.min(FINGERPRINT_BYTES, st.size);
        const fd = fs.openSync(file, 'r');
        try {
          const buf = Buffer.alloc(n);
          skipTail = buf.subarray(0, fs.readSync(fd, buf, 0, n, st.size - n)).toString('latin1');
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch {
      // not there yet: everything it will hold is new
    }
  }

  safetyTimer = setInterval(() => {
    const a = active;
    if (a && typeof a.tail.fd === 'number') a.tail.readStuff();
  }, SAFETY_TICK_MS);
  waitForFile();

  return {
    async close() {
      if (closed) return;
      closed = true;
      if (safetyTimer) clearInterval(safetyTimer);
      if (retryTimer) clearTimeout(retryTimer);
      safetyTimer = retryTimer = null;
      stopWaiting();
      teardownTail();
      // Two loop turns: closed handles finish closing (close phase) and reads already handed to
      // the thread pool come back and find the watch closed.
      await new Promise<void>((resolve) => setImmediate(resolve));
      await new Promise<void>((resolve) => setImmediate(resolve));
    },
    stats: () => ({ lines, rotations }),
  };
}
