/**
 * The engine's state you can trust (issue 21 rows 1-7 and 14), black-box against real autoscaler
 * processes on real data dirs: SIGKILL soon after start, a journal damaged byte by byte, records
 * with `v: null` or a `__proto__` worker id, a full disk (a 256 KiB tmpfs), cross-endpoint and
 * malformed request_idx. Needs `npm run build` (spawns dist/cli.js).
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { encodeRecord, Journal, JournalDamagedError } from '../src/autoscaler/journal.js';
import { EngineStore, validateRecord } from '../src/autoscaler/store.js';
import { testRegistry } from './helpers/engine-parts.js';
import { post, refusedStart, routeNew, startAutoscalerProc, stopProc, writeNoWorkerConfig, type AutoscalerProc } from './helpers/autoscaler-proc.js';
import { smallTmpfs } from './helpers/tmpfs.js';

const dirs: string[] = [];
const procs: AutoscalerProc[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await stopProc(p, 'SIGKILL');
});
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function dataDir(): { dir: string; config: string; journal: string } {
  const dir = mkdtempSync(join(tmpdir(), 'as-persist-'));
  dirs.push(dir);
  return { dir, config: writeNoWorkerConfig(dir), journal: join(dir, 'engine-state.jsonl') };
}

async function start(d: { dir: string; config: string }, args: string[] = []): Promise<AutoscalerProc> {
  const p = await startAutoscalerProc({ config: d.config, dataDir: d.dir, args });
  procs.push(p);
  return p;
}

/** A journal written by a real process: `n` open requests on e1, stopped cleanly. */
async function journalWithRequests(n: number) {
  const d = dataDir();
  const p = await start(d);
  const idxs: number[] = [];
  for (let i = 0; i < n; i++) idxs.push(await routeNew(p));
  expect(await stopProc(p)).toBe(0);
  return { ...d, idxs };
}

describe('ids are never issued twice', () => {
  it('SIGKILL right after start (no tick yet), restart: request_idx and worker ids continue above every id issued', async () => {
    const d = dataDir();
    const seen = new Set<number>();
    for (let run = 0; run < 3; run++) {
      const p = await start(d);
      for (let i = 0; i < 3; i++) {
        const idx = await routeNew(p, i % 2 ? 'e2' : 'e1');
        expect(seen.has(idx), `request_idx ${idx} issued twice (run ${run})`).toBe(false);
        seen.add(idx);
      }
      await stopProc(p, 'SIGKILL');
    }
    expect(seen.size).toBe(9);
  });
});

describe('request_idx on the wire', () => {
  it('"0x10", 1e300, "1e3", 2^53 and -1 are 400 naming request_idx; another endpoint\'s idx is 404', async () => {
    const d = dataDir();
    const p = await start(d);
    const base = '{"endpoint":"e1","api_key":"e1-key-1234","cost":1,"request_idx":';
    for (const bad of ['"0x10"', '1e300', '"1e3"', String(2 ** 53), '-1', '1.5', '"16 "']) {
      const r = await post(`${p.url}/route/`, null, `${base}${bad}}`);
      expect(r.status, bad).toBe(400);
      expect(r.body.fields, bad).toHaveProperty('request_idx');
    }
    const idx = await routeNew(p, 'e1');
    // e2, with its own key, cannot take over e1's request.
    const cross = await post(`${p.url}/route/`, { endpoint: 'e2', api_key: 'e2-key-1234', cost: 1, request_idx: idx });
    expect(cross.status).toBe(404);
    expect(cross.body.fields).toHaveProperty('request_idx');
    // e1 itself can poll it; a decimal string is read as the same id.
    const poll = await post(`${p.url}/route/`, { endpoint: 'e1', api_key: 'e1-key-1234', cost: 1, request_idx: String(idx) });
    expect([poll.status, poll.body.request_idx]).toEqual([200, idx]);
    expect(await routeNew(p, 'e2')).toBeGreaterThan(idx);
  });
});

describe('a damaged journal', () => {
  it('flipping any byte: restores every record or refuses naming the file and the offset, never less (in process, every byte)', async () => {
    const d = await journalWithRequests(3);
    const whole = readFileSync(d.journal);
    const records = whole.toString('latin1').trimEnd().split('\n').length;
    const ids = readFileSync(`${d.journal}.ids`);
    const tmp = mkdtempSync(join(tmpdir(), 'as-flip-'));
    dirs.push(tmp);
    const path = join(tmp, 'engine-state.jsonl');
    writeFileSync(`${path}.ids`, ids);
    let refused = 0;
    for (let i = 0; i < whole.length; i++) {
      const bad = Buffer.from(whole);
      bad[i] = bad[i]! ^ 0x20;
      writeFileSync(path, bad);
      let j: Journal;
      try {
        j = new Journal(path, { validate: validateRecord });
      } catch (err) {
        expect(err, `byte ${i}`).toBeInstanceOf(JournalDamagedError);
        expect((err as Error).message).toContain(path);
        expect((err as JournalDamagedError).offset).toBeLessThanOrEqual(i);
        expect((err as Error).message).toMatch(/at byte offset \d+/);
        refused++;
        continue;
      }
      // Opened: then nothing was lost (every record is there and the state restores).
      expect(j.recovered.lines, `byte ${i}`).toBe(records);
      const { reg } = testRegistry();
      new EngineStore(reg, j).restore();
      expect(
        reg.endpoints
          .get('e1')!
          .router.exportPending()
          .map((e) => e.idx),
      ).toEqual(d.idxs);
      j.close();
    }
    // Every flip is caught: the CRC covers each byte of a record, the header its length.
    expect(refused).toBe(whole.length);
  });

  it('a real process: the first byte changed, a byte of line 5 removed, a zero-filled or empty journal: refused with file and offset; --repair keeps every intact record and ids go on', async () => {
    const d = await journalWithRequests(6);
    const whole = readFileSync(d.journal);
    const lineStarts = [0];
    for (let i = 0; i < whole.length - 1; i++) if (whole[i] === 0x0a) lineStarts.push(i + 1);
    expect(lineStarts.length).toBeGreaterThanOrEqual(5);
    const cases: Array<[string, Buffer, number]> = [
      ['first byte', Buffer.concat([Buffer.from('['), whole.subarray(1)]), 0],
      ['line 5 shortened', Buffer.concat([whole.subarray(0, lineStarts[4]! + 20), whole.subarray(lineStarts[4]! + 21)]), lineStarts[4]!],
      ['zero-filled', Buffer.alloc(whole.length), 0],
      ['empty', Buffer.alloc(0), 0],
    ];
    for (const [what, content, offset] of cases) {
      writeFileSync(d.journal, content);
      const r = await refusedStart({ config: d.config, dataDir: d.dir });
      expect(r.code, `${what}: ${r.stderr}`).toBe(1);
      expect(r.stderr, what).toContain(d.journal);
      expect(r.stderr, what).toContain(`offset ${offset}`);
      expect(r.stderr, what).toContain('--repair');
      // Refusing changed nothing.
      expect(readFileSync(d.journal).equals(content), what).toBe(true);
    }
    // --repair on "line 5 shortened": every other record is kept, the damaged file moved aside.
    writeFileSync(d.journal, cases[1]![1]);
    const p = await start(d, ['--repair']);
    const next = await routeNew(p);
    expect(next).toBeGreaterThan(Math.max(...d.idxs));
    expect(readdirSync(d.dir).some((f) => f.startsWith('engine-state.jsonl.damaged-'))).toBe(true);
    await stopProc(p);
    // And it opens without --repair afterwards.
    const again = await start(d);
    expect(await routeNew(again)).toBeGreaterThan(next);
    await stopProc(again);
  });

  it('a record with "v": null, or a worker whose id is "__proto__": refused naming the offset; --repair starts and ticks', async () => {
    for (const rec of [
      Buffer.from('{"k":"worker","id":"7","v":null}\n'),
      encodeRecord({ k: 'worker', id: '7', v: null }),
      encodeRecord({ k: 'worker', id: '__proto__', v: { id: '__proto__', endpoint: 'e1' } }),
    ]) {
      const d = await journalWithRequests(2);
      const size = statSync(d.journal).size;
      appendFileSync(d.journal, rec);
      // A whole record at the end (it has its newline) is no torn write: refused.
      const r = await refusedStart({ config: d.config, dataDir: d.dir });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`offset ${size}`);
      const p = await start(d, ['--repair']);
      const idx = await routeNew(p);
      expect(idx).toBeGreaterThan(Math.max(...d.idxs));
      // Ticks run: the new request reaches the journal within a few ticks (0.2 s each).
      const deadline = Date.now() + 20_000;
      while (!readFileSync(d.journal, 'latin1').includes(`"idx":${idx},`) && Date.now() < deadline) await new Promise((s) => setTimeout(s, 100));
      expect(readFileSync(d.journal, 'latin1')).toContain(`"idx":${idx},`);
      const health = await (await fetch(`${p.url}/healthz`)).json();
      expect(health).toMatchObject({ ok: true, store: { ok: true, skippedRecords: 1 } });
      await stopProc(p);
    }
  }, 120_000);

  it('a torn last record (a crash mid-append) is dropped and the rest restored, with no --repair', async () => {
    const d = await journalWithRequests(2);
    const torn = encodeRecord({ k: 'worker', id: '9', v: { half: true } });
    appendFileSync(d.journal, torn.subarray(0, torn.length - 7));
    const p = await start(d);
    const idx = await routeNew(p);
    expect(idx).toBeGreaterThan(Math.max(...d.idxs));
    const poll = await post(`${p.url}/route/`, { endpoint: 'e1', api_key: 'e1-key-1234', cost: 1, request_idx: d.idxs[0] });
    expect(poll.body).toMatchObject({ status: 'queued', request_idx: d.idxs[0] });
    await stopProc(p);
  });
});

describe('a full disk', () => {
  const fs = smallTmpfs('as-full-');
  afterAll(() => {
    if (typeof fs !== 'string') fs.unmount();
  });
  it.skipIf(typeof fs === 'string')(
    `keeps routing from memory, says so on /healthz and /metrics, and recovers when space returns${typeof fs === 'string' ? ` (skipped: ${fs})` : ''}`,
    async () => {
      if (typeof fs === 'string') return;
      const d = { dir: join(fs.dir, 'data'), config: '' };
      mkdirSync(d.dir);
      d.config = writeNoWorkerConfig(fs.dir);
      const p = await start(d);
      const first = await routeNew(p);
      // Fill the disk.
      const filler = join(fs.dir, 'filler');
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k', 'count=1000'], { stdio: 'pipe' });
      } catch {
        /* ENOSPC: full, as wanted */
      }
      const idxs: number[] = [first];
      // Routes go on (and each tick tries to save the growing set of open requests).
      for (let i = 0; i < 300; i++) idxs.push(await routeNew(p, i % 2 ? 'e2' : 'e1'));
      expect(new Set(idxs).size).toBe(idxs.length);
      const deadline = Date.now() + 20_000;
      let health: { ok: boolean; store: { ok: boolean; error: string | null } } | undefined;
      while (Date.now() < deadline) {
        health = (await (await fetch(`${p.url}/healthz`)).json()) as typeof health;
        if (health && !health.store.ok) break;
        await new Promise((s) => setTimeout(s, 100));
      }
      expect(health).toMatchObject({ ok: true, store: { ok: false } });
      expect(health!.store.error).toMatch(/ENOSPC/);
      const metrics = await (await fetch(`${p.url}/metrics`)).text();
      expect(metrics).toMatch(/^autoscaler_store_ok 0$/m);
      // The dashboard's first frame says it too.
      const ac = new AbortController();
      const res = await fetch(`${p.url}/admin/dashboard/stream`, { headers: { authorization: 'Bearer proc-admin-key-1234' }, signal: ac.signal });
      const reader = res.body!.getReader();
      let text = '';
      while (!/^data: .*$/m.test(text)) text += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      const init = JSON.parse(/^data: (.*)$/m.exec(text)![1]!) as { kind: string; store: { ok: boolean; error: string } };
      expect(init.kind).toBe('init');
      expect(init.store.ok).toBe(false);
      expect(init.store.error).toMatch(/ENOSPC/);
      expect(p.child.exitCode).toBeNull();
      // Space returns: the next ticks write everything.
      rmSync(filler);
      const until = Date.now() + 20_000;
      while (Date.now() < until) {
        health = (await (await fetch(`${p.url}/healthz`)).json()) as typeof health;
        if (health?.store.ok) break;
        await new Promise((s) => setTimeout(s, 100));
      }
      expect(health!.store.ok).toBe(true);
      expect(await (await fetch(`${p.url}/metrics`)).text()).toMatch(/^autoscaler_store_ok 1$/m);
      // A crash now loses nothing that was issued.
      await stopProc(p, 'SIGKILL');
      const again = await start(d);
      expect(await routeNew(again)).toBeGreaterThan(Math.max(...idxs));
      const poll = await post(`${again.url}/route/`, { endpoint: 'e1', api_key: 'e1-key-1234', cost: 1, request_idx: idxs[1] });
      expect(poll.body, JSON.stringify(poll.body)).toMatchObject({ request_idx: idxs[1], status: 'queued' });
      await stopProc(again);
      expect(existsSync(join(d.dir, 'engine-state.jsonl'))).toBe(true);
    },
    90_000,
  );

  it.skipIf(typeof fs === 'string')(
    'a read-only data dir at start: it serves from memory, /healthz names the error, writing resumes once it is writable',
    async () => {
      if (typeof fs === 'string') return;
      const d = { dir: join(fs.dir, 'data-ro'), config: '' };
      mkdirSync(d.dir);
      d.config = writeNoWorkerConfig(d.dir);
      // A first run writes the keys and a journal; then the directory is mounted read-only over itself.
      const first = await start(d);
      const idxs = [await routeNew(first)];
      await stopProc(first);
      execFileSync('mount', ['--bind', d.dir, d.dir], { stdio: 'pipe' });
      let mounted = true;
      try {
        execFileSync('mount', ['-o', 'remount,ro,bind', d.dir], { stdio: 'pipe' });
        const p = await start(d);
        for (let i = 0; i < 50; i++) idxs.push(await routeNew(p));
        const health = await waitForHealth(p, (h) => !h.store.ok);
        expect(health.store.ok).toBe(false);
        expect(health.store.error).toMatch(/EROFS|read-only/);
        execFileSync('umount', [d.dir], { stdio: 'pipe' });
        mounted = false;
        expect((await waitForHealth(p, (h) => h.store.ok)).store.ok).toBe(true);
        expect(new Set(idxs).size).toBe(idxs.length);
        await stopProc(p, 'SIGKILL');
      } finally {
        if (mounted) execFileSync('umount', [d.dir], { stdio: 'pipe' });
      }
      const again = await start(d);
      expect(await routeNew(again)).toBeGreaterThan(Math.max(...idxs));
      await stopProc(again);
    },
    90_000,
  );
});

type Health = { ok: boolean; store: { ok: boolean; error: string | null } };
async function waitForHealth(p: AutoscalerProc, until: (h: Health) => boolean): Promise<Health> {
  const deadline = Date.now() + 20_000;
  let h = (await (await fetch(`${p.url}/healthz`)).json()) as Health;
  while (!until(h) && Date.now() < deadline) {
    await new Promise((s) => setTimeout(s, 100));
    h = (await (await fetch(`${p.url}/healthz`)).json()) as Health;
  }
  return h;
}
