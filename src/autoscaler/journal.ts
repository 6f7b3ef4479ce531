import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * A small durable key-value store: an append-only journal of JSON lines, `{"k": kind, "id": id,
 * "v": value}` (or `"del": true`), fsync'd at every `flush()`. Opening replays it: the last line
 * for a key wins. When the journal holds many more lines than live keys it is compacted: every
 * live record is written to `<path>.tmp`, fsync'd, renamed over the journal, and the directory
 * fsync'd, so a crash at any point leaves either the old or the new file whole.
 *
 * A crash in the middle of an append leaves a torn last line (no newline, or not JSON): it is
 * dropped at open and the file cut back to the last whole line, so later appends start clean.
 * Lines after a broken one are dropped too (an append-only file is only trusted up to its first
 * damage); `recovered` says how much was dropped.
 */

export interface JournalOptions {
  /** Compact when lines > max(minLinesToCompact, compactRatio × live keys). */
  compactRatio?: number;
  minLinesToCompact?: number;
}

interface Line {
  k: string;
  id: string;
  v?: unknown;
  del?: true;
}

export class Journal {
  /** kind → id → value, as replayed and updated since. */
  private readonly data = new Map<string, Map<string, unknown>>();
  private pending: string[] = [];
  private lines = 0;
  private fd: number;
  private readonly ratio: number;
  private readonly minLines: number;
  /** What opening found: whole lines replayed, bytes dropped after the last good line. */
  readonly recovered: { lines: number; droppedBytes: number };

  constructor(
    readonly path: string,
    opts: JournalOptions = {},
  ) {
    this.ratio = opts.compactRatio ?? 4;
    this.minLines = opts.minLinesToCompact ?? 1000;
    let good = 0;
    let dropped = 0;
    if (existsSync(path)) {
      const buf = readFileSync(path);
      let start = 0;
      for (;;) {
        const nl = buf.indexOf(0x0a, start);
        if (nl < 0) break;
        const line = this.parse(buf.subarray(start, nl).toString('utf8'));
        if (!line) break;
        this.apply(line);
        this.lines++;
        start = nl + 1;
      }
      good = start;
      dropped = buf.length - start;
    }
    this.recovered = { lines: this.lines, droppedBytes: dropped };
    this.fd = openSync(path, existsSync(path) ? 'r+' : 'w+', 0o600);
    if (dropped > 0) {
      ftruncateSync(this.fd, good);
      fsyncSync(this.fd);
    }
  }

  private parse(text: string): Line | null {
    if (text.trim() === '') return null;
    try {
      const v = JSON.parse(text) as Line;
      if (!v || typeof v !== 'object' || typeof v.k !== 'string' || typeof v.id !== 'string') return null;
      return v;
    } catch {
      return null;
    }
  }

  private apply(line: Line): void {
    let m = this.data.get(line.k);
    if (!m) {
      m = new Map();
      this.data.set(line.k, m);
    }
    if (line.del) m.delete(line.id);
    else m.set(line.id, line.v);
  }

  /** Every live record of a kind (the values are the stored objects: do not mutate). */
  all(kind: string): Map<string, unknown> {
    return this.data.get(kind) ?? new Map();
  }

  get(kind: string, id: string): unknown {
    return this.data.get(kind)?.get(id);
  }

  /** Set a record; durable at the next flush(). */
  put(kind: string, id: string, value: unknown): void {
    const line: Line = { k: kind, id, v: value };
    this.apply(line);
    this.pending.push(JSON.stringify(line));
  }

  /** Remove a record; durable at the next flush(). */
  delete(kind: string, id: string): void {
    if (!this.data.get(kind)?.has(id)) return;
    const line: Line = { k: kind, id, del: true };
    this.apply(line);
    this.pending.push(JSON.stringify(line));
  }

  /** Live keys. */
  size(): number {
    let n = 0;
    for (const m of this.data.values()) n += m.size;
    return n;
  }

  /** Lines in the file now (after flush). */
  lineCount(): number {
    return this.lines;
  }

  /** Append what changed and fsync; compact when the file grew too long. */
  flush(): void {
    if (this.pending.length > 0) {
      const text = this.pending.join('\n') + '\n';
      this.lines += this.pending.length;
      this.pending = [];
      // Appended at the end of what is on disk (the fd is not O_APPEND, so open can cut a torn tail).
      writeSync(this.fd, text, fstatSync(this.fd).size);
      fsyncSync(this.fd);
    }
    if (this.lines > Math.max(this.minLines, this.ratio * this.size())) this.compact();
  }

  /** Rewrite the journal with only the live records (atomic: tmp file, fsync, rename, fsync dir). */
  compact(): void {
    const tmp = `${this.path}.tmp`;
    const out: string[] = [];
    for (const [k, m] of this.data) for (const [id, v] of m) out.push(JSON.stringify({ k, id, v }));
    const fd = openSync(tmp, 'w', 0o600);
    try {
      if (out.length > 0) writeSync(fd, out.join('\n') + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    syncDir(dirname(this.path));
    closeSync(this.fd);
    this.fd = openSync(this.path, 'r+');
    this.lines = out.length;
    this.pending = [];
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
    this.fd = -1;
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* some filesystems cannot fsync a directory; the rename is still atomic */
  }
}
