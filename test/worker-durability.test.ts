/**
 * Issue 21, worker rows 8, 11, 16, 17, 18:
 *  - row 11: a worker killed with -9 with requests in flight and finished ones not yet reported
 *    loses no report: the next start in the same workspace reports every id (in-flight ones as
 *    failed). Real processes: model-sim, the worker process, the recording engine.
 *  - row 17: a worker without REPORT_ADDR keeps no delete backlog (and no file); the backlog of a
 *    worker whose engine never acknowledges is bounded.
 *  - row 8: strict auth_data signed for worker A's URL is a 401 at worker B (two worker processes).
 *  - row 16: a model answer with `Transfer-Encoding: gzip, chunked` is a 502, trailers are bounded
 *    (502), and a model that trickles trailer lines forever is cut at modelAnswerTimeoutMs (504);
 *    worker processes on both paths, over plain HTTP and TLS, before a raw TCP model.
 *  - row 18: a probe's deadline leaves nothing on the long-lived stop signal.
 */
import { getEventListeners } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { deadline } from '../src/common/deadline.js';
import { pythonJsonDumps, signMessage } from '../src/common/signature.js';
import { Ledger } from '../src/worker/ledger.js';
import { readUnreported, UNREPORTED_FILE, UnreportedFile } from '../src/worker/unreported.js';
import { authMaker, completionWorkload, dispatcherFor, type SimProcess, useStage, waitUntil } from './faults/harness.js';
import { SCHEMES } from './helpers/tls.js';
import { freePort } from './helpers/worker.js';

const stage = useStage();

const completionBody = (a: Record<string, unknown>, maxTokens: number) => JSON.stringify({ auth_data: a, payload: { prompt: 'hi', max_tokens: maxTokens } });

async function complete(url: string, a: Record<string, unknown>, maxTokens: number): Promise<number> {
  const r = await request(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: completionBody(a, maxTokens) });
  await r.body.dump();
  return r.statusCode;
}

async function metric(url: string, name: string): Promise<string[]> {
  const r = await request(`${url}/metrics`, { dispatcher: dispatcherFor(url) });
  return (await r.body.text()).split('\n').filter((l) => l.startsWith(name));
}

describe('a worker killed with -9 loses no report (row 11)', () => {
  it('4 finished and 4 in-flight requests, never acknowledged, are reported by the next start in the workspace', async () => {
    const engine = await stage.engine();
    // 20 tokens a second: a 200-token request is in flight for 10 s.
    const sim = await stage.sim({ tokenRate: 20 });
    const workspace = stage.dir();
    const first = await stage.worker({ sim, reportAddr: engine.url, workspace, containerId: 4101 });
    const auth = authMaker(engine, first.url);
    engine.answer(503); // nothing is acknowledged from here on
    const finished = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const a = auth(5);
        expect(await complete(first.url, a, 1)).toBe(200);
        return a.request_idx;
      }),
    );
    const inFlight = Array.from({ length: 4 }, () => auth(205));
    const calls = inFlight.map((a) => complete(first.url, a, 200).catch(() => 0));
    // The four are admitted once the file says so (it is what survives the kill).
    const file = join(workspace, UNREPORTED_FILE);
    await waitUntil(
      () => existsSync(file) && inFlight.every((a) => readFileSync(file, 'latin1').includes(`A${a.request_idx}\n`)),
      10_000,
      () => `the in-flight ids in ${file}: ${existsSync(file) ? readFileSync(file, 'latin1') : '(none)'}`,
    );
    first.proc.child.kill('SIGKILL');
    await first.proc.exited;
    await Promise.all(calls);
    const left = readUnreported(file);
    expect(left.dropped).toBe(4);

    engine.answer(200);
    const second = await stage.worker({ sim, reportAddr: engine.url, workspace, containerId: 4101 });
    await engine.waitFor(
      () => [...finished, ...inFlight.map((a) => a.request_idx)].every((idx) => engine.delivered().some((d) => d.idx === idx)),
      15_000,
      () => `every id delivered; delivered: ${JSON.stringify(engine.delivered())}`,
    );
    const flag = (idx: number) =>
      engine
        .delivered()
        .filter((d) => d.idx === idx)
        .map((d) => d.success);
    for (const idx of finished) expect(flag(idx), `finished ${idx}`).toEqual([true]);
    for (const a of inFlight) expect(flag(a.request_idx), `in flight ${a.request_idx}`).toEqual([false]);
    // Once acknowledged they are owed no more: the file left by a clean stop holds nothing.
    await second.terminate();
    expect(readUnreported(file)).toMatchObject({ succeeded: [], failed: [] });
  });
});

describe('the unreported-ids file', () => {
  it('reads what a killed run left: ended ids by flag, in-flight ones as dropped, acknowledged ones gone, a torn last line skipped', () => {
    const dir = stage.dir();
    const file = join(dir, UNREPORTED_FILE);
    // 1 and 2 ended (success, failure) and unacknowledged; 3 acknowledged; 4 in flight; 5 twice in
    // flight (a client reused its request_idx), one of them ended; 6 rejected (never admitted).
    writeFileSync(file, 'A1\nA2\nA3\nA4\nA5\nA5\nS1\nF2\nS3\ns3\nS5\nF6\nA7\nS');
    const left = readUnreported(file);
    expect(left.succeeded.sort()).toEqual([1, 5]);
    expect(left.failed.sort()).toEqual([2, 4, 5, 6, 7]);
    expect(left.dropped).toBe(3);
    expect(left.skipped).toBe(1);
    expect(readUnreported(join(dir, 'none'))).toEqual({ succeeded: [], failed: [], dropped: 0, skipped: 0 });
  });
});

describe('the unreported-ids file, written by a ledger', () => {
  it('holds exactly what is owed, through compactions, and what the next start reads back', () => {
    const file = join(stage.dir(), UNREPORTED_FILE);
    const ledger = new Ledger();
    const journal = new UnreportedFile(
      file,
      {
        *working() {
          for (const e of ledger.workingEntries()) yield e.requestIdx;
        },
        succeeded: () => ledger.deleteSucceeded.peek(Number.POSITIVE_INFINITY),
        failed: () => ledger.deleteFailed.peek(Number.POSITIVE_INFINITY),
      },
      { compactBytes: 200 },
    );
    ledger.journal = journal;
    const open: number[] = [];
    for (let i = 1; i <= 300; i++) {
      const e = ledger.create({ requestIdx: i, reqnum: i, workload: 1, route: '/r' });
      ledger.start(e);
      if (i % 10 === 0)
        open.push(i); // still in flight
      else ledger.end(e, i % 3 === 0 ? 'error' : 'success');
      journal.flush();
      // The engine acknowledges every post of 50.
      if (ledger.deleteSucceeded.size >= 50) {
        const { ids, mark } = ledger.peekDeletes(true, 50);
        ledger.acknowledged(ids, true, mark);
        journal.flush();
      }
    }
    journal.close();
    const left = readUnreported(file);
    expect(left.succeeded.sort((a, b) => a - b)).toEqual(ledger.deleteSucceeded.peek(1000).sort((a, b) => a - b));
    expect(left.failed.sort((a, b) => a - b)).toEqual([...ledger.deleteFailed.peek(1000), ...open].sort((a, b) => a - b));
    expect(left.dropped).toBe(open.length);
    // Compacted: far smaller than the ~2 records a request appended.
    expect(readFileSync(file, 'latin1').length).toBeLessThan(300 * 2 * 4);
  });
});

describe('the delete backlog (row 17)', () => {
  it('a worker without REPORT_ADDR keeps none, and no file', async () => {
    const sim = await stage.sim();
    const workspace = stage.dir();
    const w = await stage.worker({ sim, reportAddr: '', workspace, env: { UNSECURED: 'true' } });
    const a = authMaker({ sign: () => 'unsigned' } as never, w.url);
    for (let i = 0; i < 20; i++) expect(await complete(w.url, a(5), 1)).toBe(200);
    const lines = await metric(w.url, 'nodeworker_delete_backlog{');
    expect(lines.length).toBe(2);
    for (const l of lines) expect(l).toMatch(/ 0$/);
    expect(readdirSync(workspace).filter((f) => f.startsWith(UNREPORTED_FILE))).toEqual([]);
  });

  it('is bounded while the engine never acknowledges: the oldest ids go, counted', () => {
    const ledger = new Ledger({ maxDeleteBacklog: 4 });
    for (let i = 1; i <= 10; i++) {
      const e = ledger.create({ requestIdx: i, reqnum: i, workload: 1, route: '/r' });
      ledger.start(e);
      ledger.end(e, 'success');
    }
    expect(ledger.deleteSucceeded.peek(100)).toEqual([7, 8, 9, 10]);
    expect(ledger.deletesDropped).toBe(6);
    // A post of ids peeked before two more were dropped takes only what is still queued.
    const { ids, mark } = ledger.peekDeletes(true, 4);
    for (let i = 11; i <= 12; i++) {
      const e = ledger.create({ requestIdx: i, reqnum: i, workload: 1, route: '/r' });
      ledger.start(e);
      ledger.end(e, 'success');
    }
    ledger.acknowledged(ids, true, mark);
    expect(ledger.deleteSucceeded.peek(100)).toEqual([11, 12]);
  });

  it('keeps none without an engine (keepDeletes false)', () => {
    const ledger = new Ledger({ keepDeletes: false });
    const e = ledger.create({ requestIdx: 1, reqnum: 1, workload: 1, route: '/r' });
    ledger.start(e);
    ledger.end(e, 'error');
    expect(ledger.deleteFailed.size + ledger.deleteSucceeded.size).toBe(0);
    expect(ledger.totals.errored).toBe(1);
  });
});

describe('strict auth binds the worker (row 8)', () => {
  it('auth_data signed (strict) for worker A is a 401 at worker B, and a 200 at A', async () => {
    const engine = await stage.engine();
    const sim = await stage.sim();
    // Fixed ports: a worker's own URL (PUBLIC_IPADDR:WORKER_PORT) is what the engine signs.
    const worker = async () => stage.worker({ sim, reportAddr: engine.url, env: { STRICT_AUTH: 'true', WORKER_PORT: String(await freePort()) } });
    const [a, b] = await Promise.all([worker(), worker()]);
    // As the engine's router signs in strict mode: every field but the signature, with an expiry.
    const strict = (url: string, idx: number) => {
      const fields = {
        url,
        request_idx: idx,
        reqnum: idx,
        cost: 5,
        endpoint: 'e',
        worker_id: 1,
        status: 'routed',
        expires_at: Math.floor(Date.now() / 1000) + 300,
      };
      return { ...fields, signature: signMessage(engine.keys.privateKeyPem, pythonJsonDumps(fields)) };
    };
    const forA = strict(a.url, 8_100_001);
    expect(await complete(b.url, forA, 1)).toBe(401);
    expect(await complete(a.url, forA, 1)).toBe(200);
    // The same url spelled with a trailing slash is the same worker.
    expect(await complete(a.url, strict(`${a.url}/`, 8_100_002), 1)).toBe(200);
  });
});

/**
 * A raw model for worker processes: `GET /health` is a 200 (the worker's readiness and health
 * check); a POST is answered by its prompt with one of `answers` (written as given, on raw TCP).
 */
async function rawModel(answers: Record<string, (socket: Socket) => void>): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const headEnd = buf.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const head = buf.toString('latin1', 0, headEnd);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < headEnd + 4 + len) return;
        const body = buf.toString('utf8', headEnd + 4, headEnd + 4 + len);
        buf = buf.subarray(headEnd + 4 + len);
        if (head.startsWith('GET ')) {
          socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}');
          continue;
        }
        let prompt = '';
        try {
          prompt = String((JSON.parse(body) as { prompt?: unknown }).prompt);
        } catch {
          /* no JSON: no such answer */
        }
        const answer = answers[prompt];
        if (answer) answer(socket);
        else socket.destroy();
        return;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** The model answers of row 16, by prompt. */
const ROW16_ANSWERS: Record<string, (socket: Socket) => void> = {
  // A content coding the worker cannot pass on as the JSON it says it is.
  gzip: (s) => s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\n\x1f\x8b\x08\x00\x00\r\n0\r\n\r\n'),
  // The body ends, then trailer lines come one at a time, forever.
  trickle: (s) => {
    s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n');
    const t = setInterval(() => s.write('x-more: 1\r\n'), 50);
    s.on('close', () => clearInterval(t));
  },
  // More than 16 KiB of trailers.
  trailers: (s) =>
    s.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n${'x-pad: yyyyyyyy\r\n'.repeat(1200)}\r\n`),
};

describe("the model's answer (row 16): worker processes, both paths, plain and TLS", () => {
  for (const scheme of SCHEMES) {
    it(`over ${scheme}: gzip coding and over-long trailers are a 502, trailers trickled forever a 504 at modelAnswerTimeoutMs; each reported failed`, async () => {
      const engine = await stage.engine();
      const model = await rawModel(ROW16_ANSWERS);
      stage.defer(() => model.close());
      // The worker processes need a model log saying the model is up (the openai handler's onLoad line).
      const logFile = join(stage.dir(), 'model.log');
      writeFileSync(logFile, 'Application startup complete.\n');
      const sim = { url: model.url, logFile } as SimProcess;
      const tls = scheme === 'https';
      const spec = { modelAnswerTimeoutMs: 1000 };
      const [fast, plain] = await Promise.all([
        stage.worker({ sim, reportAddr: engine.url, spec, tls }),
        stage.worker({ sim, reportAddr: engine.url, spec, tls, env: { FAULT_REQUEST_PATH: '{"fastLane":false}' } }),
      ]);
      const expected = { gzip: [502, 'model'], trickle: [504, 'model'], trailers: [502, 'model'] } as const;
      await Promise.all(
        [fast, plain].map(async (w) => {
          const label = w === fast ? 'fast lane' : 'node:http';
          const auth = authMaker(engine, w.url);
          const sent: number[] = [];
          for (const [prompt, [status, field]] of Object.entries(expected)) {
            const a = auth(5);
            sent.push(a.request_idx);
            const r = await request(`${w.url}/v1/completions`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ auth_data: a, payload: { prompt, max_tokens: 4 } }),
              dispatcher: dispatcherFor(w.url),
            });
            const text = await r.body.text();
            expect({ status: r.statusCode, field: JSON.parse(text).field }, `${label}: ${prompt}`).toEqual({ status, field });
          }
          // Every one counted errored (the handler's workload: prompt tokens + max_tokens) and reported failed.
          const errored = Object.keys(expected).reduce((sum, prompt) => sum + completionWorkload(prompt, 4), 0);
          expect(await metric(w.url, 'nodeworker_workload_total{kind="errored"}'), label).toEqual([`nodeworker_workload_total{kind="errored"} ${errored}`]);
          await engine.waitFor(
            () => sent.every((idx) => engine.delivered().some((d) => d.idx === idx)),
            10_000,
            () => `${label}: ${sent} reported; delivered ${JSON.stringify(engine.delivered())}`,
          );
          for (const idx of sent)
            expect(
              engine
                .delivered()
                .filter((d) => d.idx === idx)
                .map((d) => d.success),
              `${label}: ${idx}`,
            ).toEqual([false]);
        }),
      );
    });
  }
});

describe('probe deadlines leave nothing on the stop signal (row 18)', () => {
  it('a thousand disposed deadlines leave no listener and no dependant signal on the parent', () => {
    const stop = new AbortController();
    for (let i = 0; i < 1000; i++) deadline(10_000, stop.signal).dispose();
    expect(getEventListeners(stop.signal, 'abort').length).toBe(0);
    // What AbortSignal.any would have left: one WeakRef per call in the parent's dependants.
    const dependants = Object.getOwnPropertySymbols(stop.signal)
      .filter((s) => s.description === 'kDependantSignals')
      .map((s) => (stop.signal as unknown as Record<symbol, Set<unknown>>)[s]);
    for (const d of dependants) expect(d?.size ?? 0).toBe(0);
    // The comparison that makes the check able to fail: AbortSignal.any does leave them.
    const other = new AbortController();
    const kept = Array.from({ length: 10 }, () => AbortSignal.any([other.signal]));
    const sym = Object.getOwnPropertySymbols(other.signal).find((s) => s.description === 'kDependantSignals');
    if (sym) expect((other.signal as unknown as Record<symbol, Set<unknown>>)[sym]!.size).toBeGreaterThanOrEqual(10);
    expect(kept.length).toBe(10);
  });

  it('aborts on the parent and on the timeout, and says which', async () => {
    const stop = new AbortController();
    const a = deadline(10_000, stop.signal);
    stop.abort();
    expect(a.signal.aborted).toBe(true);
    expect(a.timedOut).toBe(false);
    a.dispose();
    const b = deadline(1);
    await waitUntil(
      () => b.signal.aborted,
      5000,
      () => 'the deadline to pass',
    );
    expect(b.timedOut).toBe(true);
  });

  it('the worker makes no AbortSignal.any on a long-lived signal', () => {
    for (const f of ['healthcheck.ts', 'reporter.ts', 'sessions.ts']) {
      expect(readFileSync(join('src/worker', f), 'utf8')).not.toMatch(/AbortSignal\.any\(/);
    }
  });
});
