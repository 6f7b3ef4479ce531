/**
 * Upgrading a data dir of the previous release (issue 21 point 1): its journal of plain JSON lines
 * (no `<crc32> <length>` framing) is migrated at start, not refused. The fixtures under
 * test/fixtures/legacy-journal/ were written by the previous release itself (commit 87ce4a5, its
 * `dist/cli.js autoscaler` on the simulated provider with the config next to them):
 * - clean-stop.jsonl: 6 requests routed (idx 1–6: e1 has 1, 4, 6; e2 has 2, 3, 5), one worker
 *   recruited, then SIGTERM (its counters say next request_idx 7);
 * - killed.jsonl: 3 requests routed (idx 1–3), then SIGKILL (its counters say 100001, reserved ahead).
 * Needs `npm run build` (spawns dist/cli.js).
 */
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Journal, JournalDamagedError } from '../src/autoscaler/journal.js';
import { isLegacyJournal, migrateLegacyJournal } from '../src/autoscaler/legacy-journal.js';
import { validateRecord } from '../src/autoscaler/store.js';
import { post, refusedStart, routeNew, startAutoscalerProc, stopProc, type AutoscalerProc } from './helpers/autoscaler-proc.js';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'legacy-journal');
const dirs: string[] = [];
const procs: AutoscalerProc[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await stopProc(p, 'SIGKILL');
});
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A data dir holding one legacy fixture as its journal (or the given bytes). */
function legacyDir(fixture: string, bytes?: Buffer): { dir: string; config: string; journal: string; legacy: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'as-legacy-'));
  dirs.push(dir);
  const journal = join(dir, 'engine-state.jsonl');
  const legacy = bytes ?? readFileSync(join(FIXTURES, fixture));
  writeFileSync(journal, legacy);
  const config = join(dir, 'autoscaler.json');
  copyFileSync(join(FIXTURES, 'autoscaler.json'), config);
  return { dir, config, journal, legacy };
}

async function start(d: { dir: string; config: string }, args: string[] = []): Promise<AutoscalerProc> {
  const p = await startAutoscalerProc({ config: d.config, dataDir: d.dir, args });
  procs.push(p);
  return p;
}

/** What it logged once the given text is there (pino writes asynchronously; a hang guard, not a speed bound). */
async function logged(p: AutoscalerProc, text: string): Promise<string> {
  for (let i = 0; i < 600 && !p.stdout().includes(text); i++) await new Promise((r) => setTimeout(r, 50));
  return p.stdout();
}

const poll = (p: AutoscalerProc, ep: string, idx: number) => post(`${p.url}/route/`, { endpoint: ep, api_key: `${ep}-key-1234`, cost: 1, request_idx: idx });

describe('a data dir of the previous release', () => {
  it('clean stop: migrated at start (logged, old file kept aside byte for byte), open requests kept per endpoint, ids go on above every id', async () => {
    const d = legacyDir('clean-stop.jsonl');
    const p = await start(d);
    const log = await logged(p, 'journal_migrated');
    expect(log).toContain('"event":"journal_migrated"');
    expect(log).toMatch(/"records":\{[^}]*"requests":2/);
    const aside = readdirSync(d.dir).filter((f) => f.startsWith('engine-state.jsonl.legacy-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(d.dir, aside[0]!)).equals(d.legacy)).toBe(true);
    // The open requests of the old run are there, on their own endpoint only.
    for (const idx of [1, 4, 6]) expect([idx, (await poll(p, 'e1', idx)).status]).toEqual([idx, 200]);
    for (const idx of [2, 3, 5]) expect([idx, (await poll(p, 'e2', idx)).status]).toEqual([idx, 200]);
    expect((await poll(p, 'e1', 2)).status).toBe(404);
    // New ids continue above the old run's.
    const fresh = await routeNew(p, 'e2');
    expect(fresh).toBeGreaterThanOrEqual(7);
    expect(await stopProc(p)).toBe(0);
    // The journal is now checked records, and restarting does not migrate again.
    const j = new Journal(d.journal, { validate: validateRecord });
    expect(j.get('worker', '1')).toMatchObject({ id: 1, endpoint: 'e1' });
    expect((j.get('meta', 'ids') as { worker: number }).worker).toBeGreaterThanOrEqual(2);
    expect(j.get('meta', 'counters')).toBeUndefined();
    j.close();
    const again = await start(d);
    expect(await logged(again, '"event":"listening"')).not.toContain('journal_migrated');
    expect((await poll(again, 'e1', fresh)).status).toBe(404);
    expect((await poll(again, 'e2', fresh)).status).toBe(200);
    expect(await routeNew(again, 'e1')).toBeGreaterThan(fresh);
  });

  it('killed (ids reserved ahead): request_idx continues above the old reservation, never reissuing 1–3', async () => {
    const d = legacyDir('killed.jsonl');
    const p = await start(d);
    expect(await logged(p, 'journal_migrated')).toContain('"event":"journal_migrated"');
    expect(await routeNew(p, 'e1')).toBeGreaterThanOrEqual(100001);
    for (const idx of [1, 3]) expect((await poll(p, 'e1', idx)).status).toBe(200);
    expect((await poll(p, 'e2', 2)).status).toBe(200);
  });

  it('a damaged legacy line: refused naming file and offset, the file untouched; --repair migrates the intact lines', async () => {
    const clean = readFileSync(join(FIXTURES, 'clean-stop.jsonl'));
    const lines = clean.toString('utf8').split('\n');
    // Line 4 (e1's first open-requests record) loses its closing brace; a later record replaces it.
    const offset = Buffer.byteLength(lines.slice(0, 3).join('\n')) + 1;
    lines[3] = lines[3]!.slice(0, -1);
    const d = legacyDir('clean-stop.jsonl', Buffer.from(lines.join('\n')));
    const r = await refusedStart({ config: d.config, dataDir: d.dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(d.journal);
    expect(r.stderr).toContain(`byte offset ${offset}`);
    expect(r.stderr).toContain('legacy');
    expect(readFileSync(d.journal).equals(d.legacy)).toBe(true);
    const p = await start(d, ['--repair']);
    expect(await logged(p, 'journal_migrated')).toMatch(/"event":"journal_migrated".*"skipped":1/);
    for (const idx of [1, 4, 6]) expect((await poll(p, 'e1', idx)).status).toBe(200);
    expect(await routeNew(p, 'e1')).toBeGreaterThanOrEqual(7);
  });

  it('a legacy record that today\'s schemas refuse (a worker "__proto__", request_idx 1e300) is damage, not migrated', async () => {
    const clean = readFileSync(join(FIXTURES, 'clean-stop.jsonl'), 'utf8');
    for (const extra of [
      '{"k":"worker","id":"__proto__","v":{}}',
      '{"k":"requests","id":"e1","v":{"reqnum":0,"pending":[{"idx":1e300}]}}',
      '{"k":"meta","id":"counters","v":null}',
    ]) {
      const path = join(legacyDir('clean-stop.jsonl').dir, 'engine-state.jsonl');
      writeFileSync(path, `${clean}${extra}\n`);
      expect(() => migrateLegacyJournal(path, { validate: validateRecord }), extra).toThrow(JournalDamagedError);
      expect(readFileSync(path, 'utf8')).toBe(`${clean}${extra}\n`);
    }
  });

  it('detection is of the whole file: a checked journal, or one mixing both formats, is not legacy', () => {
    const legacy = readFileSync(join(FIXTURES, 'clean-stop.jsonl'));
    expect(isLegacyJournal(legacy)).toBe(true);
    const d = legacyDir('clean-stop.jsonl');
    const m = migrateLegacyJournal(d.journal, { validate: validateRecord, now: () => new Date(0) });
    expect(m?.movedTo).toBe(`${d.journal}.legacy-1970-01-01T00-00-00-000Z`);
    expect(m?.ids.requestIdx).toBe(7);
    const checked = readFileSync(d.journal);
    expect(isLegacyJournal(checked)).toBe(false);
    expect(migrateLegacyJournal(d.journal, { validate: validateRecord })).toBeNull();
    expect(isLegacyJournal(Buffer.concat([legacy, checked]))).toBe(false);
    expect(isLegacyJournal(Buffer.alloc(0))).toBe(false);
    expect(isLegacyJournal(Buffer.alloc(64))).toBe(false);
  });
});
