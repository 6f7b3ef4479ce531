import { closeSync, fdatasync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { syncDir } from '../common/sync-dir.js';
import { dirname, join } from 'node:path';

/**
 * The request_idxs the engine has not heard about yet, kept in a small file in the workspace so a
 * worker killed with -9 loses no /delete_requests/ report (issue 21 row 11): the next start reads
 * the file and reports every id in it, those that were still in flight as failed (dropped).
 *
 * One line a record, appended:
 *   `A<idx>` admitted (started, not ended)   `S<idx>` / `F<idx>` ended, for the success / failure post
 *   `s<idx>` / `f<idx>` that post was acknowledged by the engine.
 * Records leave in one write at most `flushDelayMs` (2 ms) after the first of them: a kill -9 loses
 * only the ids of those last milliseconds (a write a turn cost the worker a fifth of its CPU per
 * request on a VM: a syscall of several µs per record; benchmarks/unreported-cost.ts). The page
 * cache survives a killed process; for a
 * crash of the machine the file is fdatasync'd at most every `syncEveryMs` (1 s; batched, in the
 * thread pool). When the file grows past `compactBytes` it is rewritten with only the live ids (written to
 * a temporary file, synced, renamed over the old one).
 */
export interface UnreportedLeftover {
  /** Ended ids not yet acknowledged, by the `success` flag of their post. */
  succeeded: number[];
  failed: number[];
  /** Of `failed`: ids that were still in flight when the previous run ended (dropped). */
  dropped: number;
  /** Lines that were not records (a torn last line after a crash of the machine). */
  skipped: number;
}

/** The live state a compaction writes: what the ledger still owes the engine. */
export interface UnreportedState {
  working(): Iterable<number>;
  succeeded(): Iterable<number>;
  failed(): Iterable<number>;
}

export interface UnreportedFileOptions {
  /** Rewrite the file once this many bytes were appended since the last rewrite (default 1 MiB). */
  compactBytes?: number;
  /** Write what came within this many ms in one syscall (default 2). */
  flushDelayMs?: number;
  /**
   * fdatasync at most this often while records come (default 1 s). Each one makes the file
   * system commit its journal, and an append that meets a commit waits for it on the event loop.
   */
  syncEveryMs?: number;
}

export const UNREPORTED_FILE = '.nodeworker-unreported';

/** Read a previous run's file (missing: nothing left over). */
export function readUnreported(path: string): UnreportedLeftover {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { succeeded: [], failed: [], dropped: 0, skipped: 0 };
    throw err;
  }
  // Per id: admitted and not ended, ended (by flag) and not acknowledged. Counts, because a client
  // may send the same request_idx twice.
  const open = new Map<number, number>();
  const ok = new Map<number, number>();
  const bad = new Map<number, number>();
  const bump = (m: Map<number, number>, id: number, by: number) => {
    const n = (m.get(id) ?? 0) + by;
    if (n > 0) m.set(id, n);
    else m.delete(id);
  };
  let skipped = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const id = Number(line.slice(1));
    if (line.length < 2 || !Number.isFinite(id)) {
      skipped++;
      continue;
    }
    switch (line.charCodeAt(0)) {
      case 0x41: // A
        bump(open, id, 1);
        break;
      case 0x53: // S
        bump(open, id, -1);
        bump(ok, id, 1);
        break;
      case 0x46: // F (a rejected request was never admitted: its open count stays 0)
        bump(open, id, -1);
        bump(bad, id, 1);
        break;
      case 0x73: // s
        bump(ok, id, -1);
        break;
      case 0x66: // f
        bump(bad, id, -1);
        break;
      default:
        skipped++;
    }
  }
  const succeeded: number[] = [];
  const failed: number[] = [];
  for (const [id, n] of ok) for (let i = 0; i < n; i++) succeeded.push(id);
  for (const [id, n] of bad) for (let i = 0; i < n; i++) failed.push(id);
  let dropped = 0;
  for (const [id, n] of open)
    for (let i = 0; i < n; i++) {
      failed.push(id);
      dropped++;
    }
  return { succeeded, failed, dropped, skipped };
}

export class UnreportedFile {
  private fd: number;
  private buf = '';
  private flushQueued = false;
  private appended = 0;
  private dirty = false;
  private syncing = false;
  private closed = false;
  private readonly syncTimer: NodeJS.Timeout;
  private readonly compactBytes: number;
  private readonly flushDelayMs: number;
  /** Write failures (a full disk): the worker goes on without durability, and says so once. */
  failures = 0;
  onFailure: ((err: Error) => void) | null = null;
  private readonly flushNow = (): void => this.flush();

  /** Start a fresh file at `path` holding `state` (the previous run's leftovers, or nothing). */
  constructor(
    readonly path: string,
    private readonly state: UnreportedState,
    opts: UnreportedFileOptions = {},
  ) {
    this.compactBytes = opts.compactBytes ?? 1024 * 1024;
    this.flushDelayMs = opts.flushDelayMs ?? 2;
    this.fd = this.rewrite();
    this.syncTimer = setInterval(() => this.sync(), opts.syncEveryMs ?? 1000);
    this.syncTimer.unref();
  }

  admitted(id: number): void {
    this.append(`A${id}\n`);
  }

  ended(id: number, success: boolean): void {
    this.append(success ? `S${id}\n` : `F${id}\n`);
  }

  delivered(ids: readonly number[], success: boolean): void {
    const tag = success ? 's' : 'f';
    let text = '';
    for (const id of ids) text += `${tag}${id}\n`;
    this.append(text);
  }

  private append(text: string): void {
    if (this.closed) return;
    this.buf += text;
    if (!this.flushQueued) {
      this.flushQueued = true;
      setTimeout(this.flushNow, this.flushDelayMs).unref();
    }
  }

  /** Write what was appended since the last write (one syscall). */
  flush(): void {
    this.flushQueued = false;
    if (this.buf === '' || this.closed) return;
    const text = this.buf;
    this.buf = '';
    try {
      writeSync(this.fd, text, null, 'latin1');
      this.appended += text.length;
      this.dirty = true;
    } catch (err) {
      this.failed(err as Error);
    }
    if (this.appended >= this.compactBytes && !this.syncing) this.compact();
  }

  private sync(): void {
    if (!this.dirty || this.syncing || this.closed) return;
    this.dirty = false;
    this.syncing = true;
    fdatasync(this.fd, (err) => {
      this.syncing = false;
      if (err && !this.closed) this.failed(err);
    });
  }

  /** Replace the file by one holding only the live ids. */
  private compact(): void {
    try {
      const fd = this.rewrite();
      closeSync(this.fd);
      this.fd = fd;
      this.appended = 0;
    } catch (err) {
      this.failed(err as Error);
    }
  }

  /** Write the live state to `<path>.tmp`, sync it, rename it over `path`; returns its fd (append). */
  private rewrite(): number {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      let text = '';
      const put = (tag: string, ids: Iterable<number>) => {
        for (const id of ids) {
          text += `${tag}${id}\n`;
          if (text.length > 64 * 1024) {
            writeSync(fd, text, null, 'latin1');
            text = '';
          }
        }
      };
      put('A', this.state.working());
      put('S', this.state.succeeded());
      put('F', this.state.failed());
      if (text) writeSync(fd, text, null, 'latin1');
      fsyncSync(fd);
      renameSync(tmp, this.path);
      syncDir(dirname(this.path));
      return fd;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  private failed(err: Error): void {
    this.failures++;
    if (this.failures === 1) this.onFailure?.(err);
  }

  /** Last write and sync; the file stays for the next start (empty when nothing is owed). */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    clearInterval(this.syncTimer);
    try {
      fsyncSync(this.fd);
    } catch {
      /* reported by an earlier write, or nothing to sync */
    }
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

export function unreportedPath(workspaceDir: string): string {
  return join(workspaceDir, UNREPORTED_FILE);
}
