import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The create ledger of the Vast provider: every create is written (and fsync'd) here BEFORE the
 * request leaves, with the unique label it carries, and its outcome after. After a crash, the
 * labels of creates without an outcome are looked for among the account's instances, so an
 * instance whose create answer was lost is found (and adopted or destroyed), never leaked.
 */

export type LedgerEntry =
  | { op: 'create'; label: string; offer: number; machine: number; endpoint: string; workergroup: string; dph: number; at: number }
  | { op: 'created'; label: string; id: number; at: number }
  | { op: 'failed'; label: string; at: number; reason: string }
  | { op: 'destroyed'; id: number; at: number };

export class CreateLedger {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  /** Append one entry durably: it is on disk when this returns. */
  append(entry: LedgerEntry): void {
    const fd = openSync(this.path, 'a', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(entry)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Drop every entry (all creates settled): an empty file replaces the journal atomically. */
  reset(): void {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    const dir = openSync(dirname(this.path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }

  /** Every entry, oldest first; a torn last line (a crash mid-write) is skipped. */
  read(): LedgerEntry[] {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return [];
    }
    const out: LedgerEntry[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as LedgerEntry);
      } catch {
        /* torn line */
      }
    }
    return out;
  }

  /** Creates sent (or about to be) whose outcome was never written: label → entry. */
  open(): Map<string, Extract<LedgerEntry, { op: 'create' }>> {
    const open = new Map<string, Extract<LedgerEntry, { op: 'create' }>>();
    for (const e of this.read()) {
      if (e.op === 'create') open.set(e.label, e);
      else if (e.op === 'created' || e.op === 'failed') open.delete(e.label);
    }
    return open;
  }
}
