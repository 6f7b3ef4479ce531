import { closeSync, copyFileSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { encodeRecord, JournalDamagedError } from './journal.js';

/**
 * Upgrading a data dir written by the previous release. Its journal was plain JSON lines,
 * `{"k":kind,"id":id,"v":value}` or `{"k","id","del":true}`, with no `<crc32> <length>` framing,
 * and some record shapes differed (`meta/counters` instead of `meta/ids`, `perf` and `wgIds` as
 * objects). The checked journal refuses such a file as damaged, so it is migrated before opening:
 *
 * - detection is of the whole file: it starts with `{` and no line has the checked framing (a file
 *   mixing both is damage, left to the journal's own rules);
 * - each legacy line is replayed (last one per key wins, `del` removes), then every live record is
 *   converted to today's shape and validated with the same zod schemas as any record (`validate`);
 *   a line that is not JSON, not a record, or invalid is damage: start-up stops naming the file and
 *   offset unless `repair` (then it is skipped and counted). A torn last line (no newline: the old
 *   release's crash rule) is dropped and counted;
 * - ids continue above every id found in any line (superseded and deleted ones included) and above
 *   the last counters the previous release wrote;
 * - the new journal is written to `<path>.tmp` and fsync'd, the old file is copied aside to
 *   `<path>.legacy-<time>`, then the new one is renamed over it: a crash at any point leaves the
 *   legacy file in place (migrated again at the next start) or the whole new journal.
 */

export interface LegacyMigration {
  /** Live records written to the new journal, by kind. */
  records: Record<string, number>;
  /** Legacy lines read (whole ones). */
  lines: number;
  /** Damaged lines skipped (only with `repair`). */
  skipped: number;
  /** Bytes of a torn last line dropped. */
  droppedBytes: number;
  /** The next ids the new journal reserves from (above every id found). */
  ids: { worker: number; endpoint: number; workergroup: number; requestIdx: number };
  /** Where the legacy file was kept. */
  movedTo: string;
}

const HEADER = /^[0-9a-f]{8} \d{1,10} /;

const legacyLine = z.union([
  z.strictObject({ k: z.string().min(1).max(64), id: z.string().min(1).max(512), v: z.unknown() }),
  z.strictObject({ k: z.string().min(1).max(64), id: z.string().min(1).max(512), del: z.literal(true) }),
]);
type LegacyLine = z.output<typeof legacyLine>;

const counters = z.object({
  nextWorkerId: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  nextEndpointId: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  nextWorkergroupId: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  nextRequestIdx: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
});

function noProtoKeys(key: string, value: unknown): unknown {
  if (key === '__proto__') throw new Error('a "__proto__" key');
  return value;
}

/** Whether a journal file's bytes are the previous release's format (judged on the whole file). */
export function isLegacyJournal(buf: Buffer): boolean {
  if (buf.length === 0 || buf[0] !== 0x7b /* { */) return false;
  let start = 0;
  while (start < buf.length) {
    let nl = buf.indexOf(0x0a, start);
    if (nl < 0) nl = buf.length;
    if (HEADER.test(buf.subarray(start, Math.min(nl, start + 24)).toString('latin1'))) return false;
    start = nl + 1;
  }
  return true;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const safeInt = (v: unknown): number => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : 0);

/** Today's shape of one live legacy record: [kind, id, value], or null when the kind is gone (counters become ids). */
function convert(kind: string, id: string, v: unknown): [string, string, unknown] | null {
  if (kind === 'meta' && id === 'counters') return null;
  if (kind === 'meta' && id === 'perf' && isObj(v)) {
    // Was { typeKey: knowledge }, is [[typeKey, knowledge]] with only the replayed fields.
    return [
      kind,
      id,
      Object.entries(v).map(([key, k]) => [
        key,
        isObj(k) ? { benchmarks: k.benchmarks, benchmarkMean: k.benchmarkMean, measured: k.measured, measuredEwma: k.measuredEwma } : k,
      ]),
    ];
  }
  if (kind === 'endpoint' && isObj(v) && isObj(v.wgIds)) return [kind, id, { ...v, wgIds: Object.entries(v.wgIds) }];
  return [kind, id, v];
}

/** The highest id of each kind anywhere in a legacy value (any line, superseded or not). */
function noteIds(kind: string, v: unknown, seen: LegacyMigration['ids']): void {
  if (!isObj(v)) return;
  if (kind === 'worker') seen.worker = Math.max(seen.worker, safeInt(v.id));
  if (kind === 'endpoint') {
    seen.endpoint = Math.max(seen.endpoint, safeInt(v.id));
    if (isObj(v.wgIds)) for (const w of Object.values(v.wgIds)) seen.workergroup = Math.max(seen.workergroup, safeInt(w));
  }
  if (kind === 'requests' && Array.isArray(v.pending)) for (const p of v.pending) if (isObj(p)) seen.requestIdx = Math.max(seen.requestIdx, safeInt(p.idx));
}

/**
 * Migrate `path` when it holds a legacy journal; returns what was done, or null when it is not one
 * (or does not exist). Throws JournalDamagedError on a damaged legacy line unless `repair`.
 */
export function migrateLegacyJournal(
  path: string,
  opts: { validate: (kind: string, id: string, value: unknown) => string | null; repair?: boolean; now?: () => Date },
): LegacyMigration | null {
  if (!existsSync(path)) return null;
  const buf = readFileSync(path);
  if (!isLegacyJournal(buf)) return null;
  const data = new Map<string, LegacyLine>();
  const bad: Array<{ offset: number; reason: string }> = [];
  // Highest id seen of each kind (not next ids yet).
  const seen = { worker: 0, endpoint: 0, workergroup: 0, requestIdx: 0 };
  let next = { worker: 1, endpoint: 1, workergroup: 1, requestIdx: 1 };
  let lines = 0;
  let droppedBytes = 0;
  // The previous release's crash rule: a last line without a newline is a torn append.
  const end = buf.lastIndexOf(0x0a) + 1;
  droppedBytes = buf.length - end;
  let start = 0;
  while (start < end) {
    const nl = buf.indexOf(0x0a, start);
    const text = buf.subarray(start, nl).toString('utf8');
    const offset = start;
    start = nl + 1;
    if (text.trim() === '') continue;
    let raw: unknown;
    try {
      raw = JSON.parse(text, noProtoKeys);
    } catch (err) {
      bad.push({ offset, reason: `legacy line not JSON: ${err instanceof Error ? err.message : String(err)}` });
      continue;
    }
    const line = legacyLine.safeParse(raw);
    if (!line.success) {
      bad.push({ offset, reason: `not a legacy journal record: ${line.error.issues[0]?.message ?? 'invalid'}` });
      continue;
    }
    const rec = line.data;
    lines++;
    if (!('del' in rec)) {
      noteIds(rec.k, rec.v, seen);
      if (rec.k === 'meta' && rec.id === 'counters') {
        const c = counters.safeParse(rec.v);
        if (!c.success) {
          bad.push({ offset, reason: 'invalid legacy meta "counters"' });
          continue;
        }
        // The last counters win, as the previous release read them (a clean stop writes the exact
        // next ids over the reservation made ahead while running); ids seen in records are added below.
        next = {
          worker: c.data.nextWorkerId,
          endpoint: c.data.nextEndpointId,
          workergroup: c.data.nextWorkergroupId,
          requestIdx: c.data.nextRequestIdx,
        };
      }
    }
    (rec as LegacyLine & { offset?: number }).offset = offset;
    data.set(`${rec.k}\u0000${rec.id}`, rec);
  }
  const out: Buffer[] = [];
  const records: Record<string, number> = {};
  for (const rec of data.values()) {
    if ('del' in rec) continue;
    const conv = convert(rec.k, rec.id, rec.v);
    if (!conv) continue;
    const why = opts.validate(...conv);
    if (why) {
      bad.push({ offset: (rec as { offset?: number }).offset ?? 0, reason: `invalid legacy ${rec.k} ${JSON.stringify(rec.id)}: ${why}` });
      continue;
    }
    out.push(encodeRecord({ k: conv[0], id: conv[1], v: conv[2] }));
    records[conv[0]] = (records[conv[0]] ?? 0) + 1;
  }
  if (bad.length > 0 && !opts.repair) {
    bad.sort((a, b) => a.offset - b.offset);
    throw new JournalDamagedError(path, bad[0]!.offset, `a legacy journal (the previous release's format): ${bad[0]!.reason}`, bad.length);
  }
  const ids = {
    worker: Math.max(next.worker, seen.worker + 1),
    endpoint: Math.max(next.endpoint, seen.endpoint + 1),
    workergroup: Math.max(next.workergroup, seen.workergroup + 1),
    requestIdx: Math.max(next.requestIdx, seen.requestIdx + 1),
  };
  out.push(encodeRecord({ k: 'meta', id: 'ids', v: ids }));
  records.meta = (records.meta ?? 0) + 1;

  const tmp = `${path}.tmp`;
  const text = Buffer.concat(out);
  const fd = openSync(tmp, 'w', 0o600);
  let written = false;
  try {
    let off = 0;
    while (off < text.length) off += writeSync(fd, text, off, text.length - off, off);
    fsyncSync(fd);
    written = true;
  } finally {
    closeSync(fd);
    if (!written) {
      try {
        unlinkSync(tmp);
      } catch {
        /* nothing to clean */
      }
    }
  }
  // Aside first (a copy), so the legacy file stays at `path` until the new one replaces it atomically.
  const movedTo = `${path}.legacy-${(opts.now?.() ?? new Date()).toISOString().replace(/[:.]/g, '-')}`;
  copyFileSync(path, movedTo);
  syncFile(movedTo);
  renameSync(tmp, path);
  syncFile(dirname(path));
  return { records, lines, skipped: bad.length, droppedBytes, ids, movedTo };
}

function syncFile(p: string): void {
  try {
    const fd = openSync(p, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* some filesystems cannot fsync a directory; the rename is still atomic */
  }
}
