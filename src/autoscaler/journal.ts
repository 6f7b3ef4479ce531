import {
  close,
  closeSync,
  existsSync,
  fsync,
  fsyncSync,
  ftruncate,
  ftruncateSync,
  open,
  openSync,
  readFileSync,
  renameSync,
  unlink,
  unlinkSync,
  writeSync,
  writev,
  writevSync,
} from 'node:fs';
import { ShardedMap } from '../common/sharded-map.js';
import { syncDir } from '../common/sync-dir.js';
import { dirname } from 'node:path';
import * as zlib from 'node:zlib';
import { z } from 'zod';

/**
 * A small durable key-value store: an append-only journal of checked records, fsync'd at every
 * `flush()`. Each record is one line, `<crc32 hex8> <byte length> <json>\n`, the JSON being
 * `{"k": kind, "id": id, "v": value}` (or `"del": true`). Opening replays it: the last record for
 * a key wins. When the journal holds many more records than live keys it is compacted: every live
 * record is written to `<path>.tmp`, fsync'd, renamed over the journal, and the directory fsync'd,
 * so a crash at any point leaves either the old or the new file whole.
 *
 * What opening trusts (write-ahead-log rules):
 * - every record's length and CRC-32 are checked, its envelope is validated by zod, and its value
 *   by the caller's `validate` (the store's schemas); a key `__proto__` anywhere refuses the record;
 * - only a torn LAST record (no newline after it, and a prefix of a record's shape) counts as a
 *   crash: it is dropped and the file cut back, so later appends start clean;
 * - any other damage (a bad record with whole records after it, a whole bad last record, a file
 *   of zeros) throws JournalDamagedError naming the file and byte offset, unless `repair` is set:
 *   then every intact record is kept, the damaged file is moved aside (`<path>.damaged-<time>`)
 *   and a clean journal of the intact records takes its place. Bad records are counted either way.
 *
 * `flushAsync()` does the same append, fsync and compaction on libuv's thread pool, so a tick's
 * save does not hold the event loop for the disk: one at a time; records put meanwhile go to the
 * next flush; it resolves only once its records are fsync'd. A synchronous `flush()` (an id
 * reservation that cannot wait, a clean stop) may come while one is in flight: it takes over, by
 * writing the in-flight records again at the same offset (the same bytes: harmless if the thread
 * pool's write lands too) before its own, and fsyncing; an in-flight compaction is then abandoned
 * (its copy lacks what the synchronous flush appended to the old file).
 *
 * Writes never leave a partial record in the middle: each flush writes at the end of the last
 * good record, and a failed write (ENOSPC, EIO, read-only) leaves the records pending, cuts the
 * file back when it can, and is tried again at the next flush. The file can also be missing or
 * unopenable at open (read-only data dir): the journal then works from memory and retries.
 */

export interface JournalOptions {
  /** Compact when records > max(minLinesToCompact, compactRatio × live keys). */
  compactRatio?: number;
  minLinesToCompact?: number;
  /** Also compact when the file is larger than max(minBytesToCompact, compactRatio × its size after the last compaction). */
  minBytesToCompact?: number;
  /** Keep every intact record of a damaged journal and move the damaged file aside, rather than refuse to open. */
  repair?: boolean;
  /** Check a record's value at open: null when valid, else why not (the record is then damage). */
  validate?: (kind: string, id: string, value: unknown) => string | null;
}

/** The journal holds damage other than a torn last record: start-up stops here unless repairing. */
export class JournalDamagedError extends Error {
  constructor(
    readonly path: string,
    readonly offset: number,
    readonly reason: string,
    readonly badRecords: number,
  ) {
    super(
      `the state journal ${path} is damaged at byte offset ${offset} (${reason}; ${badRecords} bad record(s) in all): ` +
        'start with --repair to keep every intact record and move the damaged file aside',
    );
    this.name = 'JournalDamagedError';
  }
}

export interface JournalRecovery {
  /** Records replayed. */
  lines: number;
  /** Bytes of a torn last record dropped (a crash mid-append). */
  droppedBytes: number;
  /** Damaged records skipped (only with `repair`; otherwise opening throws). */
  skipped: number;
  /** Byte offset of the first damaged record, or null. */
  firstBadOffset: number | null;
  /** Where the damaged file was moved (repair), or null. */
  movedTo: string | null;
}

const envelopeSchema = z.union([
  z.strictObject({ k: z.string().min(1).max(64), id: z.string().min(1).max(512), v: z.unknown() }),
  z.strictObject({ k: z.string().min(1).max(64), id: z.string().min(1).max(512), del: z.literal(true) }),
]);
type Line = z.output<typeof envelopeSchema>;

const HEADER = /^([0-9a-f]{8}) (\d{1,10}) /;
/** What the start of a record looks like, for telling a torn tail from garbage. */
const HEADER_PREFIX = /^[0-9a-f]{0,8}$|^[0-9a-f]{8} \d{0,10}$|^[0-9a-f]{8} \d{1,10} /;

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** zlib's own CRC-32 where Node has it (20.15+), ~30x faster than the table loop below. */
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

/** CRC-32 (IEEE), as zlib computes it. */
export function crc32(buf: Uint8Array): number {
  if (nativeCrc32) return nativeCrc32(buf) >>> 0;
  return crc32Table(buf);
}

/** The same CRC-32 in JS (Node 20.11–20.14 have no zlib.crc32). */
export function crc32Table(buf: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** One record as bytes on disk (`valueJson`: JSON.stringify(line.v), when the caller has it already). */
export function encodeRecord(line: Line, valueJson?: string): Buffer {
  const text =
    valueJson !== undefined && 'v' in line ? `{"k":${JSON.stringify(line.k)},"id":${JSON.stringify(line.id)},"v":${valueJson}}` : JSON.stringify(line);
  // One buffer: header (fixed 8 hex digits, the length), JSON, newline; the CRC over the JSON part.
  const len = Buffer.byteLength(text, 'utf8');
  const lenText = String(len);
  const at = 9 + lenText.length + 1;
  const out = Buffer.allocUnsafe(at + len + 1);
  out.write(text, at, 'utf8');
  out.write(
    `${crc32(out.subarray(at, at + len))
      .toString(16)
      .padStart(8, '0')} ${lenText} `,
    0,
    'latin1',
  );
  out[at + len] = 0x0a;
  return out;
}

/** Buffers per writev call: Linux's IOV_MAX (libuv splits a longer list itself; batches keep each call's list small). */
const IOV_MAX = 1024;

/**
 * Write `parts` (`total` bytes) at `position`, in order, with no copy into one buffer: writev in
 * batches of IOV_MAX; a short write goes on from where it stopped.
 */
function writeAll(fd: number, parts: Buffer[], total: number, position: number): void {
  let done = 0;
  let i = 0;
  while (i < parts.length) {
    const batch = parts.slice(i, i + IOV_MAX);
    let want = 0;
    for (const b of batch) want += b.length;
    const n = writevSync(fd, batch, position + done);
    if (n < want) {
      // Short: write the rest of this batch from where it stopped, then go on with the next.
      const rest = Buffer.concat(batch).subarray(n);
      let off = 0;
      while (off < rest.length) off += writeSync(fd, rest, off, rest.length - off, position + done + n + off);
    }
    done += want;
    i += IOV_MAX;
  }
  if (done !== total) throw new Error(`journal write: ${done} bytes written of ${total}`);
}

/** fs callbacks as promises (the work runs on libuv's thread pool). */
function writevAt(fd: number, parts: Buffer[], position: number): Promise<number> {
  return new Promise((resolve, reject) => writev(fd, parts, position, (err, n) => (err ? reject(err) : resolve(n))));
}
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
}
function truncateFd(fd: number, len: number): Promise<void> {
  return new Promise((resolve, reject) => ftruncate(fd, len, (err) => (err ? reject(err) : resolve())));
}
function openFile(path: string, flags: string, mode?: number): Promise<number> {
  return new Promise((resolve, reject) => open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}
function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}
function unlinkQuiet(path: string): Promise<void> {
  return new Promise((resolve) => unlink(path, () => resolve()));
}

/** writeAll on the thread pool. */
async function writeAllAsync(fd: number, parts: Buffer[], total: number, position: number): Promise<void> {
  let done = 0;
  for (let i = 0; i < parts.length; i += IOV_MAX) {
    let batch = parts.slice(i, i + IOV_MAX);
    let want = 0;
    for (const b of batch) want += b.length;
    let off = 0;
    while (off < want) {
      const n = await writevAt(fd, batch, position + done + off);
      if (n <= 0) throw new Error('journal write: no progress');
      off += n;
      if (off < want) batch = [Buffer.concat(batch).subarray(n)];
    }
    done += want;
  }
  if (done !== total) throw new Error(`journal write: ${done} bytes written of ${total}`);
}

/** fsync a directory on the thread pool (best effort, as syncDir). */
async function syncDirAsync(dir: string): Promise<void> {
  let fd: number;
  try {
    fd = await openFile(dir, 'r');
  } catch {
    return;
  }
  try {
    await fsyncFd(fd);
  } catch {
    /* not every file system syncs a directory */
  } finally {
    await closeFd(fd);
  }
}

function noProtoKeys(key: string, value: unknown): unknown {
  if (key === '__proto__') throw new Error('a "__proto__" key');
  return value;
}

/**
 * id → value of one kind: sharded, since a kind holds 10,000+ open requests under steady churn and
 * a plain Map's rehash of them held the event loop 3–12 ms (see ShardedMap). Order across ids is
 * not kept, and nothing here needs it: each record stands for its own key.
 */
type KeyMap<V> = ShardedMap<V, string>;
const keyMap = <V>(): KeyMap<V> => new ShardedMap<V, string>();

/** The in-memory value of a record put with `keepValue` false: read from its bytes when asked. */
const NOT_KEPT: unique symbol = Symbol('not kept');

export class Journal {
  /** kind → id → value, as replayed and updated since (NOT_KEPT: decode the record's bytes). */
  private readonly data = new Map<string, KeyMap<unknown>>();
  /** kind → how many of its values are NOT_KEPT (0: `all` returns the map itself). */
  private readonly notKept = new Map<string, number>();
  /**
   * kind → id → the live record's bytes as last encoded: compaction writes these as they are, so
   * it costs a write and an fsync, not a JSON encoding of every live record.
   */
  private readonly bytes = new Map<string, KeyMap<Buffer>>();
  /** Records not yet written, by kind then id: a key changed twice before a write is written once (its last value). */
  private pending = new Map<string, KeyMap<Buffer>>();
  private pendingSize = 0;
  /**
   * Records appended by `write()` since the last fsync, by kind then id: if the fsync fails they
   * are cut from the file and queued again (unless changed since), as if never written.
   */
  private unsynced: Array<Map<string, KeyMap<Buffer>>> = [];
  private unsyncedLines = 0;
  /** Bytes known durable (fsync'd): a failed fsync cuts the file back to here. */
  private syncedSize = 0;
  /** File size after the last compaction (or at open): the byte-growth trigger of compaction. */
  private compactedSize = 0;
  private readonly minBytes: number;
  private lines = 0;
  private fd = -1;
  /** Bytes of whole, written records: the next append goes here. */
  private fileSize = 0;
  /** A failed append may have left bytes past `fileSize` that a shorter next append would not cover. */
  private dirtyTail = false;
  private readonly ratio: number;
  private readonly minLines: number;
  /** A flushAsync is in flight (its write, fsync or compaction). */
  private busy = false;
  /** Bumped by a synchronous flush that takes over an in-flight one: the latter then stops where it is. */
  private gen = 0;
  /** `gen` at the last successful synchronous fsync: a taken-over flushAsync succeeded iff this passed its gen. */
  private syncedGen = -1;
  /** The in-flight append (its records and where they go), for a synchronous flush to write again. */
  private inflight: { parts: Buffer[]; total: number; at: number } | null = null;
  /** An async compaction renamed the new file in but has not fsync'd the directory yet. */
  private dirPending = false;
  /** close() came while a flushAsync was in flight: the descriptor is closed when it ends (the thread pool may still use it). */
  private closeWhenIdle = false;
  /** What opening found. */
  readonly recovered: JournalRecovery;

  constructor(
    readonly path: string,
    private readonly opts: JournalOptions = {},
  ) {
    this.ratio = opts.compactRatio ?? 4;
    this.minLines = opts.minLinesToCompact ?? 1000;
    this.minBytes = opts.minBytesToCompact ?? 64 * 1024;
    const buf = existsSync(path) ? readFileSync(path) : Buffer.alloc(0);
    const scan = this.scan(buf);
    this.recovered = { lines: this.lines, droppedBytes: scan.torn, skipped: scan.bad.length, firstBadOffset: scan.bad[0]?.offset ?? null, movedTo: null };
    if (scan.bad.length > 0) {
      const first = scan.bad[0]!;
      if (!opts.repair) throw new JournalDamagedError(path, first.offset, first.reason, scan.bad.length);
      const aside = `${path}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      renameSync(path, aside);
      this.recovered.movedTo = aside;
      this.compact();
      return;
    }
    this.fileSize = buf.length - scan.torn;
    this.syncedSize = this.fileSize;
    this.compactedSize = this.fileSize;
    try {
      this.tryOpen();
    } catch {
      // A read-only or full data dir: work from memory; flush() tries again (and reports the error).
    }
    if (scan.torn > 0 && this.fd >= 0) {
      ftruncateSync(this.fd, this.fileSize);
      fsyncSync(this.fd);
    }
  }

  /** Replay every good record; returns the bad ones (offset, why) and the bytes of a torn tail. */
  private scan(buf: Buffer): { bad: Array<{ offset: number; reason: string }>; torn: number } {
    const bad: Array<{ offset: number; reason: string }> = [];
    let start = 0;
    while (start < buf.length) {
      const nl = buf.indexOf(0x0a, start);
      if (nl < 0) {
        // No newline after it: a torn append if it looks like the start of a record; else damage.
        const tail = buf.subarray(start);
        const head = HEADER.exec(tail.subarray(0, 24).toString('latin1'));
        const prefix = HEADER_PREFIX.test(tail.subarray(0, 24).toString('latin1'));
        if (prefix && (!head || tail.length - head[0].length <= Number(head[2]))) return { bad, torn: tail.length };
        bad.push({ offset: start, reason: 'a last record that is not a prefix of a record' });
        return { bad, torn: 0 };
      }
      const why = this.replayRecord(buf.subarray(start, nl));
      if (why) bad.push({ offset: start, reason: why });
      start = nl + 1;
    }
    return { bad, torn: 0 };
  }

  /** Check and apply one record (without its newline); returns why it is bad, or null. */
  private replayRecord(rec: Buffer): string | null {
    const head = HEADER.exec(rec.subarray(0, 24).toString('latin1'));
    if (!head) return 'no record header';
    const body = rec.subarray(head[0].length);
    if (body.length !== Number(head[2])) return `length ${body.length} where the header says ${head[2]}`;
    if (crc32(body) !== Number.parseInt(head[1]!, 16)) return 'checksum mismatch';
    let raw: unknown;
    try {
      raw = JSON.parse(body.toString('utf8'), noProtoKeys);
    } catch (err) {
      return `not JSON: ${err instanceof Error ? err.message : String(err)}`;
    }
    const env = envelopeSchema.safeParse(raw);
    if (!env.success) return `not a journal record: ${env.error.issues[0]?.message ?? 'invalid'}`;
    const line = env.data;
    if (!('del' in line)) {
      const why = this.opts.validate?.(line.k, line.id, line.v);
      if (why) return `invalid ${line.k} ${JSON.stringify(line.id)}: ${why}`;
    }
    this.apply(line);
    // The record's bytes with the newline that follows it in the file (no copy).
    this.keepBytes(line.k, line.id, 'del' in line ? null : Buffer.from(rec.buffer, rec.byteOffset, rec.length + 1));
    this.lines++;
    return null;
  }

  private keepBytes(kind: string, id: string, rec: Buffer | null): void {
    let m = this.bytes.get(kind);
    if (!m) {
      m = keyMap();
      this.bytes.set(kind, m);
    }
    if (rec) m.set(id, rec);
    else m.delete(id);
  }

  private tryOpen(): void {
    if (this.fd >= 0) return;
    this.fd = openSync(this.path, existsSync(this.path) ? 'r+' : 'w+', 0o600);
  }

  private apply(line: Line): void {
    this.setValue(line.k, line.id, 'del' in line ? undefined : line.v, 'del' in line);
  }

  /** Set (or with `del`, remove) a key's value in memory, keeping the count of values not kept (NOT_KEPT) per kind. */
  private setValue(kind: string, id: string, v: unknown, del: boolean): void {
    let m = this.data.get(kind);
    if (!m) {
      m = keyMap();
      this.data.set(kind, m);
    }
    const was = m.get(id) === NOT_KEPT;
    if (del) m.delete(id);
    else m.set(id, v);
    const is = !del && v === NOT_KEPT;
    if (was !== is) this.notKept.set(kind, (this.notKept.get(kind) ?? 0) + (is ? 1 : -1));
  }

  /** A value put without keeping it: read back from the record's bytes (the JSON after the header). */
  private decodeValue(kind: string, id: string): unknown {
    const rec = this.bytes.get(kind)?.get(id);
    if (!rec) throw new Error(`journal: no bytes for ${kind} ${JSON.stringify(id)}`);
    const head = HEADER.exec(rec.subarray(0, 24).toString('latin1'))!;
    return (JSON.parse(rec.toString('utf8', head[0].length, rec.length - 1)) as { v: unknown }).v;
  }

  /**
   * Every live record of a kind (the values are the stored objects: do not mutate). Values put
   * with `keepValue` false are decoded from their records, into a new map (O(records of the kind)).
   */
  all(kind: string): ReadonlyMap<string, unknown> {
    const m = this.data.get(kind);
    if (!m) return new Map();
    if ((this.notKept.get(kind) ?? 0) === 0) return m;
    const out = new Map<string, unknown>();
    for (const [id, v] of m) out.set(id, v === NOT_KEPT ? this.decodeValue(kind, id) : v);
    return out;
  }

  get(kind: string, id: string): unknown {
    const v = this.data.get(kind)?.get(id);
    return v === NOT_KEPT ? this.decodeValue(kind, id) : v;
  }

  /**
   * Set a record; durable at the next flush(). `json`: JSON.stringify(value), if the caller made it
   * already. `keepValue` false: the value object is not kept in memory (`get`/`all` decode it from
   * the record's bytes when asked): for records written at a high rate and rarely read back (open
   * requests), so that each one's copy is garbage at once instead of living until it is replaced.
   */
  put(kind: string, id: string, value: unknown, json?: string, keepValue = true): void {
    const line: Line = { k: kind, id, v: value };
    const rec = encodeRecord(line, json);
    this.setValue(kind, id, keepValue ? value : NOT_KEPT, false);
    this.keepBytes(kind, id, rec);
    this.queue(kind, id, rec);
  }

  private queue(kind: string, id: string, rec: Buffer): void {
    // Nested by kind, not keyed by "kind/id": the id string (its hash cached by V8) serves every map.
    let m = this.pending.get(kind);
    if (!m) {
      m = keyMap();
      this.pending.set(kind, m);
    }
    const size = m.size;
    m.set(id, rec);
    this.pendingSize += m.size - size;
  }

  /** Remove a record; durable at the next flush(). */
  delete(kind: string, id: string): void {
    if (!this.data.get(kind)?.has(id)) return;
    const line: Line = { k: kind, id, del: true };
    this.apply(line);
    this.keepBytes(kind, id, null);
    this.queue(kind, id, encodeRecord(line));
  }

  /** Live keys. */
  size(): number {
    let n = 0;
    for (const m of this.data.values()) n += m.size;
    return n;
  }

  /** Records in the file now (after flush). */
  lineCount(): number {
    return this.lines;
  }

  /** Records not yet durable (a failed flush keeps them here for the next one). */
  pendingCount(): number {
    return this.pendingSize;
  }

  /**
   * Append what changed, without fsync (the records reach the page cache; `flush()` makes them
   * durable): lets a caller spread the writing of a busy second over it. Throws the file system's
   * error with nothing half-written left behind; the records then stay pending.
   */
  write(): void {
    if (this.pendingSize === 0) return;
    this.tryOpen();
    const parts: Buffer[] = [];
    for (const m of this.pending.values()) for (const rec of m.values()) parts.push(rec);
    let total = 0;
    for (const b of parts) total += b.length;
    try {
      writeAll(this.fd, parts, total, this.fileSize);
      if (this.dirtyTail) ftruncateSync(this.fd, this.fileSize + total);
      this.dirtyTail = false;
    } catch (err) {
      this.dirtyTail = true;
      // Cut a partial append back, so the next attempt (or a crash now) leaves whole records only.
      try {
        if (this.fd >= 0) {
          ftruncateSync(this.fd, this.fileSize);
          this.dirtyTail = false;
        }
      } catch {
        /* the next write goes over it at the same offset */
      }
      throw err;
    }
    this.markWritten(total);
  }

  /**
   * The pending records count as written (`total` bytes at the end of the file): the maps
   * themselves are kept (no copy) until the fsync says they are durable, and what is put from now
   * on goes to a new pending map (the next flush).
   */
  private markWritten(total: number): void {
    this.fileSize += total;
    this.lines += this.pendingSize;
    this.unsyncedLines += this.pendingSize;
    this.unsynced.push(this.pending);
    this.pending = new Map();
    this.pendingSize = 0;
  }

  /**
   * Append what changed and fsync; compact when the file grew too long. Throws the file system's
   * error (ENOSPC, EROFS, EIO…) with nothing half-written left behind; the records stay pending.
   */
  flush(): void {
    try {
      if (this.busy) this.takeOver();
      this.write();
      if (this.fileSize !== this.syncedSize || this.dirtyTail) {
        fsyncSync(this.fd);
        this.syncedSize = this.fileSize;
      }
      this.syncedGen = this.gen;
      this.unsynced.length = 0;
      this.unsyncedLines = 0;
    } catch (err) {
      this.unwrite();
      // A full disk: a compaction may fit where the append did not (dead records freed). Not
      // while an async one may still write the same tmp file: the next flush tries again.
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC' && !this.busy) {
        try {
          this.compact();
          return;
        } catch {
          /* still full: reported below, retried at the next flush */
        }
      }
      throw err;
    }
    if (!this.busy && this.needsCompaction()) this.compact();
  }

  private needsCompaction(): boolean {
    return this.lines > Math.max(this.minLines, this.ratio * this.size()) || this.fileSize > Math.max(this.minBytes, this.ratio * this.compactedSize);
  }

  /** Whether a flushAsync is in flight. */
  flushing(): boolean {
    return this.busy;
  }

  /**
   * A synchronous flush while a flushAsync is in flight: the in-flight records may not be written
   * yet, and nothing may follow them in the file before they are. Write them again here, same
   * bytes at the same offset (if the thread pool's write lands as well, it changes nothing), so the
   * fsync that follows covers them; the in-flight flush sees `gen` moved and stops.
   */
  private takeOver(): void {
    this.gen++;
    const f = this.inflight;
    this.inflight = null;
    // A late write of the thread pool may land after a cut-back: the next append trims after itself.
    this.dirtyTail = true;
    if (f) writeAll(this.fd, f.parts, f.total, f.at);
    // An async compaction renamed its file in: make the rename durable before relying on the new file.
    if (this.dirPending) syncDir(dirname(this.path));
  }

  /**
   * flush() on the thread pool: append what is pending, fsync, compact when due (the copy written
   * and fsync'd off the loop; the rename and the switch to the new file in one synchronous step).
   * One at a time (throws if one is in flight); records put meanwhile wait for the next flush.
   * Resolves once its records are durable; rejects with the file system's error after cutting the
   * file back and queueing the records again (the next flush writes them whole), as flush() does.
   */
  async flushAsync(): Promise<void> {
    if (this.busy) throw new Error('journal: a flush is already in flight');
    if (this.closeWhenIdle) throw new Error('journal: closed');
    this.busy = true;
    const gen = this.gen;
    try {
      try {
        await this.appendAsync(gen);
      } catch (err) {
        if (gen !== this.gen) return this.superseded(gen);
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
          // A full disk: a compaction may fit where the append did not.
          try {
            await this.compactAsync(gen);
            if (gen !== this.gen) return this.superseded(gen);
            return;
          } catch {
            /* still full: reported, retried at the next flush */
          }
        }
        throw err;
      }
      if (gen !== this.gen) return this.superseded(gen);
      if (this.needsCompaction()) {
        // The records are durable already: a failed compaction only leaves the file long.
        try {
          await this.compactAsync(gen);
        } catch {
          /* tried again after the next append */
        }
      }
    } finally {
      this.busy = false;
      this.inflight = null;
      if (this.closeWhenIdle && this.fd >= 0) {
        closeSync(this.fd);
        this.fd = -1;
      }
    }
  }

  /** A synchronous flush took over: its records are durable iff a synchronous fsync succeeded since. */
  private superseded(gen: number): void {
    if (this.syncedGen <= gen) throw new Error('journal: the flush was taken over by one that failed');
  }

  private async appendAsync(gen: number): Promise<void> {
    if (this.pendingSize === 0 && this.fileSize === this.syncedSize && !this.dirtyTail) return;
    this.tryOpen();
    const fd = this.fd;
    const parts: Buffer[] = [];
    for (const m of this.pending.values()) for (const rec of m.values()) parts.push(rec);
    let total = 0;
    for (const b of parts) total += b.length;
    const at = this.fileSize;
    const dirty = this.dirtyTail;
    // Counted as written from here: what is put meanwhile goes to a new pending map (the next flush).
    this.markWritten(total);
    this.inflight = { parts, total, at };
    try {
      if (total > 0) await writeAllAsync(fd, parts, total, at);
      if (gen !== this.gen) return;
      if (dirty) await truncateFd(fd, at + total);
      await fsyncFd(fd);
    } catch (err) {
      if (gen !== this.gen) throw err;
      this.inflight = null;
      this.dirtyTail = true;
      this.unwrite();
      throw err;
    }
    if (gen !== this.gen) return;
    this.inflight = null;
    this.dirtyTail = false;
    this.syncedSize = this.fileSize;
    this.unsynced.length = 0;
    this.unsyncedLines = 0;
  }

  /** Every live record's line (its kept bytes, else encoded now) and their total length: what a compaction writes. */
  private liveRecords(): { out: Buffer[]; total: number } {
    const out: Buffer[] = [];
    let total = 0;
    for (const [k, m] of this.data)
      for (const [id, v] of m) {
        const rec = this.bytes.get(k)?.get(id) ?? encodeRecord({ k, id, v: v === NOT_KEPT ? this.decodeValue(k, id) : v });
        out.push(rec);
        total += rec.length;
      }
    return { out, total };
  }

  /** compact() with its writing and fsyncs on the thread pool; abandoned if a synchronous flush came meanwhile. */
  private async compactAsync(gen: number): Promise<void> {
    const tmp = `${this.path}.tmp`;
    const { out, total } = this.liveRecords();
    // The pending records the copy holds: not written again after it, unless put again meanwhile.
    const copied: Array<[KeyMap<Buffer>, string, Buffer]> = [];
    for (const m of this.pending.values()) for (const [id, rec] of m) copied.push([m, id, rec]);
    const fd = await openFile(tmp, 'w', 0o600);
    try {
      await writeAllAsync(fd, out, total, 0);
      await fsyncFd(fd);
    } catch (err) {
      await closeFd(fd);
      await unlinkQuiet(tmp);
      throw err;
    }
    await closeFd(fd);
    if (gen !== this.gen) {
      // A synchronous flush appended to the old file meanwhile: the copy lacks that; keep the old file.
      await unlinkQuiet(tmp);
      return;
    }
    // The rename and the switch of descriptor in one synchronous step: no append can fall between.
    renameSync(tmp, this.path);
    if (this.fd >= 0) close(this.fd, () => {});
    this.fd = openSync(this.path, 'r+');
    this.fileSize = total;
    this.syncedSize = total;
    this.compactedSize = total;
    // Records put since the copy was taken stay pending (a new put is a new buffer).
    for (const [m, id, rec] of copied) {
      if (m.get(id) !== rec) continue;
      m.delete(id);
      this.pendingSize--;
    }
    this.lines = out.length;
    this.unsynced.length = 0;
    this.unsyncedLines = 0;
    this.dirtyTail = false;
    this.dirPending = true;
    try {
      await syncDirAsync(dirname(this.path));
    } finally {
      this.dirPending = false;
    }
  }

  /**
   * A write or fsync failed: the records appended since the last good fsync may not be on disk.
   * Cut the file back to what is durable and queue them again (a key changed since keeps its newer
   * pending record), so the next flush writes them whole.
   */
  private unwrite(): void {
    if (this.fileSize === this.syncedSize && this.unsynced.length === 0) return;
    try {
      if (this.fd >= 0) ftruncateSync(this.fd, this.syncedSize);
      this.dirtyTail = false;
    } catch {
      this.dirtyTail = true;
    }
    // Newest write first: a key written twice keeps its later record, and a pending one beats both.
    for (let i = this.unsynced.length - 1; i >= 0; i--)
      for (const [kind, u] of this.unsynced[i]!) for (const [id, rec] of u) if (!this.pending.get(kind)?.has(id)) this.queue(kind, id, rec);
    this.lines -= this.unsyncedLines;
    this.unsyncedLines = 0;
    this.unsynced.length = 0;
    this.fileSize = this.syncedSize;
  }

  /** Rewrite the journal with only the live records (atomic: tmp file, fsync, rename, fsync dir). */
  compact(): void {
    const tmp = `${this.path}.tmp`;
    const { out, total } = this.liveRecords();
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeAll(fd, out, total, 0);
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      try {
        unlinkSync(tmp);
      } catch {
        /* nothing to clean */
      }
      throw err;
    }
    closeSync(fd);
    renameSync(tmp, this.path);
    syncDir(dirname(this.path));
    // The old file is unlinked by the rename: closing its last descriptor frees its blocks, which
    // for a journal of megabytes took tens of ms on the event loop. Closed on the thread pool.
    if (this.fd >= 0) close(this.fd, () => {});
    this.fd = openSync(this.path, 'r+');
    this.fileSize = total;
    this.syncedSize = total;
    this.compactedSize = total;
    this.lines = out.length;
    this.pending.clear();
    this.pendingSize = 0;
    this.unsynced.length = 0;
    this.unsyncedLines = 0;
    this.dirtyTail = false;
  }

  close(): void {
    try {
      this.flush();
    } finally {
      // The thread pool may still use the descriptor (a taken-over flushAsync): closed when it ends,
      // so its number is not reused under it.
      this.closeWhenIdle = true;
      if (!this.busy && this.fd >= 0) {
        closeSync(this.fd);
        this.fd = -1;
      }
    }
  }
}
