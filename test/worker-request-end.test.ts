/**
 * Issue 21, worker rows 9, 10, 13, 15: every request ends, over plain HTTP and over TLS (USE_SSL,
 * the production path on Vast). Real processes on loopback: model-sim and, for each scheme, three
 * worker processes (test/faults/worker-process.mjs): one with the fast lane, one with node:http only
 * (the path chunked requests take), one with WORKER_MAX_CONNECTIONS=4; and a node:http server (an
 * https one for TLS) as the reference. The same raw byte sequences go to the reference and to both
 * paths of the same scheme:
 *  - a body that stalls (chunked, a Content-Length body small enough for the fast lane, one over
 *    its 1 MiB that node:http streams), a malformed chunk size, a bad trailer, a chunk longer than
 *    its size, a body cut by the client's FIN: each must get a 4xx and a close, as node:http gives
 *    (408 once WORKER_REQUEST_TIMEOUT passes for a stall, 400 at once for bad framing);
 *  - stalled connections cannot keep real clients out at WORKER_MAX_CONNECTIONS;
 *  - a client that half-closes after a whole request gets its answer (row 10);
 *  - a 10 MiB + 1 body gets a readable 413 before the close (row 13);
 *  - an absolute-form target is served (row 15).
 * No timing is asserted: a stalled request must be answered eventually (WORKER_REQUEST_TIMEOUT is
 * 1 s here; the read waits up to 20 s).
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestEngine } from './helpers/engine.js';
import { startEngine } from './helpers/engine.js';
import { rawConnect, type RawExchange } from './helpers/raw-http.js';
import { authMaker, startSim, startWorkerProcess, type SimProcess, type Stage, type WorkerProcess } from './faults/harness.js';
import { SCHEMES, type Scheme, testCert } from './helpers/tls.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A stage that lives for the whole file (harness.useStage cleans up after each test). */
function fileStage(): Stage & { closeAll(): Promise<void> } {
  const cleanups: Array<() => Promise<void> | void> = [];
  const stage = {
    dir() {
      const d = mkdtempSync(join(tmpdir(), 'request-end-'));
      cleanups.push(() => rmSync(d, { recursive: true, force: true }));
      return d;
    },
    async engine() {
      const e = await startEngine();
      cleanups.push(() => e.close());
      return e;
    },
    sim: (o = {}) => startSim(stage, o),
    worker: (o: Parameters<Stage['worker']>[0]) => startWorkerProcess(stage, o),
    defer(fn: () => Promise<void> | void) {
      cleanups.push(fn);
    },
    async closeAll() {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch {
          /* keep closing */
        }
      }
    },
  };
  return stage as Stage & { closeAll(): Promise<void> };
}

const stage = fileStage();
let engine: TestEngine;
let sim: SimProcess;

/** The processes of one scheme: both paths, the capped worker and the node:http reference. */
interface Rig {
  fast: WorkerProcess;
  plain: WorkerProcess;
  capped: WorkerProcess;
  reference: Server;
  referenceUrl: string;
}
const rigs = {} as Record<Scheme, Rig>;

const ROUTE = '/v1/completions';
/** Short enough that a stall is answered within the test, long enough for a loaded machine to send a head. */
const REQUEST_TIMEOUT_S = '1';

/** node:http (https: for TLS, same certificate) with the same request timeout, answering 200 once a body is in. */
async function startReference(scheme: Scheme): Promise<{ server: Server; url: string }> {
  const opts = { requestTimeout: 1000, headersTimeout: 1000, connectionsCheckingInterval: 100 };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    req.on('data', () => undefined);
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
    req.on('error', () => undefined);
  };
  const server =
    scheme === 'https'
      ? (createHttpsServer({ ...opts, cert: readFileSync(testCert().cert), key: readFileSync(testCert().key) }, onRequest) as unknown as Server)
      : createServer(opts, onRequest);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

beforeAll(async () => {
  engine = await stage.engine();
  sim = await stage.sim();
  const env = { WORKER_REQUEST_TIMEOUT: REQUEST_TIMEOUT_S, WORKER_HEADERS_TIMEOUT: REQUEST_TIMEOUT_S };
  // One scheme after the other: six worker processes starting at once crowd a shared machine.
  for (const scheme of SCHEMES) {
    const tls = scheme === 'https';
    const [fast, plain, capped, ref] = await Promise.all([
      stage.worker({ sim, reportAddr: engine.url, env, tls }),
      stage.worker({ sim, reportAddr: engine.url, env: { ...env, FAULT_REQUEST_PATH: '{"fastLane":false}' }, tls }),
      stage.worker({ sim, reportAddr: engine.url, env: { WORKER_REQUEST_TIMEOUT: REQUEST_TIMEOUT_S, WORKER_MAX_CONNECTIONS: '4' }, tls }),
      startReference(scheme),
    ]);
    stage.defer(async () => {
      ref.server.closeAllConnections();
      await new Promise<void>((r) => ref.server.close(() => r()));
    });
    rigs[scheme] = { fast, plain, capped, reference: ref.server, referenceUrl: ref.url };
  }
}, 180_000);

afterAll(async () => {
  await stage.closeAll();
});

const head = (lines: string[]) => `${lines.map((l) => `${l}\r\n`).join('')}\r\n`;
const chunkedHead = head([`POST ${ROUTE} HTTP/1.1`, 'host: w', 'content-type: application/json', 'transfer-encoding: chunked']);
const lengthHead = (n: number) => head([`POST ${ROUTE} HTTP/1.1`, 'host: w', 'content-type: application/json', `content-length: ${n}`]);

/** Byte sequences a client sends and then either stalls on or half-closes after (`fin`). */
const CASES: Array<{ name: string; bytes: string; fin?: boolean }> = [
  { name: 'a chunked body that stops', bytes: `${chunkedHead}a\r\n01234` },
  { name: 'a chunked body that stops between chunks', bytes: `${chunkedHead}2\r\n{}\r\n` },
  { name: 'a Content-Length body that never completes (fast-lane size)', bytes: `${lengthHead(100)}{"auth_data"` },
  { name: 'a Content-Length body over 1 MiB that never completes (node:http)', bytes: `${lengthHead(2_000_000)}{"auth_data"` },
  { name: 'a malformed chunk size', bytes: `${chunkedHead}zz\r\n{}\r\n0\r\n\r\n` },
  { name: 'a bad trailer line', bytes: `${chunkedHead}2\r\n{}\r\n0\r\nno colon here\r\n\r\n` },
  { name: 'a chunk longer than its size', bytes: `${chunkedHead}2\r\n{}{}\r\n0\r\n\r\n` },
  { name: 'a Content-Length body cut by the client (FIN)', bytes: `${lengthHead(100)}{"auth_data"`, fin: true },
  { name: 'a chunked body cut by the client (FIN)', bytes: `${chunkedHead}a\r\n01234`, fin: true },
];

/** Send `bytes`, then wait (up to 20 s) for an answer and (unless `untilClose` is false) for the close. */
async function exchange(url: string, bytes: string, fin = false, untilClose = true): Promise<{ status: number | null; closed: boolean; body: string }> {
  const c = await rawConnect(url);
  try {
    c.write(bytes);
    if (fin) c.socket.end();
    // Interim answers (the 100 Continue probes a half-closed client gets) are skipped.
    let x: RawExchange = await c.read(1, { timeoutMs: 20_000 });
    const answers = [...x.answers];
    while (!x.closed && !answers.some((a) => a.status >= 200)) {
      x = await c.read(1, { timeoutMs: 20_000 });
      answers.push(...x.answers);
    }
    const first = answers.find((a) => a.status >= 200) ?? x.cut;
    if (!x.closed && untilClose) x = await c.read(1, { timeoutMs: 10_000 });
    return { status: first?.status ?? null, closed: x.closed, body: first?.body.toString('utf8') ?? '' };
  } finally {
    c.close();
  }
}

const statusClass = (s: number | null) => (s === null ? 'no answer' : `${Math.floor(s / 100)}xx`);
const PATHS = ['fast lane', 'node:http'] as const;
const worker = (scheme: Scheme, path: (typeof PATHS)[number]) => (path === 'fast lane' ? rigs[scheme].fast : rigs[scheme].plain);

for (const scheme of SCHEMES) {
  describe(`over ${scheme === 'https' ? 'TLS (USE_SSL)' : 'plain HTTP'}`, () => {
    describe('stalled and malformed bodies: the worker answers as node:http does, on both paths', () => {
      for (const c of CASES) {
        it(c.name, async () => {
          const r = rigs[scheme];
          const [ref, onFast, onPlain] = await Promise.all([
            exchange(r.referenceUrl, c.bytes, c.fin),
            exchange(r.fast.url, c.bytes, c.fin),
            exchange(r.plain.url, c.bytes, c.fin),
          ]);
          expect(statusClass(ref.status), 'the reference (node:http)').toBe('4xx');
          expect(ref.closed).toBe(true);
          expect({ status: statusClass(onFast.status), closed: onFast.closed }, 'fast lane').toEqual({ status: statusClass(ref.status), closed: true });
          expect({ status: statusClass(onPlain.status), closed: onPlain.closed }, 'node:http path').toEqual({
            status: statusClass(ref.status),
            closed: true,
          });
          // The worker's 4xx is JSON naming what is wrong.
          for (const w of [onFast, onPlain]) expect(JSON.parse(w.body).field).toBeTypeOf('string');
        });
      }
    });

    describe('stalled connections cannot hold WORKER_MAX_CONNECTIONS', () => {
      it('with the cap taken by stalled bodies (both paths), a real client is served once they are answered', async () => {
        const capped = rigs[scheme].capped;
        const auth = authMaker(engine, capped.url);
        // Stalls on the fast lane and on node:http (chunked), more than the cap of 4: those past the
        // cap are closed on arrival (over TLS before the handshake ends: no connection at all), the
        // rest hold their connection until they are answered.
        const closedOnArrival = { status: null, closed: true, body: '' };
        const stalls = Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            exchange(capped.url, i % 2 === 0 ? `${lengthHead(100)}{"a` : `${chunkedHead}a\r\n01`).catch(() => closedOnArrival),
          ),
        );
        // Meanwhile a real client tries; a connection closed at the cap is tried again.
        const text = (a: Record<string, unknown>) => JSON.stringify({ auth_data: a, payload: { prompt: 'hi', max_tokens: 4 } });
        let served: number | null = null;
        let refused = 0;
        for (let i = 0; i < 150 && served === null; i++) {
          const body = text(auth(5));
          const r = await exchange(capped.url, `${lengthHead(Buffer.byteLength(body))}${body}`, false, false).catch(() => ({ status: null }));
          if (r.status !== null) served = r.status;
          else {
            refused++;
            await new Promise((res) => setTimeout(res, 100));
          }
        }
        expect(served).toBe(200);
        const ended = await stalls;
        // The cap was reached (some connection was closed on arrival) and every stalled one got its 4xx and a close.
        expect(refused + ended.filter((s) => s.status === null).length).toBeGreaterThan(0);
        for (const s of ended) {
          expect(s.closed).toBe(true);
          if (s.status !== null) expect(statusClass(s.status)).toBe('4xx');
        }
      });
    });

    describe('a client that half-closes after a whole request gets its answer (row 10)', () => {
      for (const path of PATHS) {
        it(path, async () => {
          const w = worker(scheme, path);
          const a = authMaker(engine, w.url)(5);
          const text = JSON.stringify({ auth_data: a, payload: { prompt: 'hi', max_tokens: 4 } });
          const r = await exchange(w.url, `${lengthHead(Buffer.byteLength(text))}${text}`, true);
          expect(r.status).toBe(200);
          expect(JSON.parse(r.body).choices).toBeInstanceOf(Array);
          expect(r.closed).toBe(true);
          // Reported delivered, as a success.
          await engine.waitFor(
            () => engine.delivered().some((d) => d.idx === a.request_idx),
            10_000,
            () => `request_idx ${a.request_idx} reported`,
          );
          expect(engine.delivered().find((d) => d.idx === a.request_idx)?.success).toBe(true);
        });
      }
    });

    describe('a body over the limit gets a readable 413 before the close (row 13)', () => {
      for (const path of PATHS) {
        it(path, async () => {
          const w = worker(scheme, path);
          const c = await rawConnect(w.url);
          try {
            const size = 10 * 1024 * 1024 + 1;
            c.socket.write(lengthHead(size));
            const piece = Buffer.alloc(64 * 1024, 0x61);
            // Stream the whole body as a client would (waiting for the socket), ignoring a refusal.
            for (let sent = 0; sent < size && !c.socket.destroyed; ) {
              const n = Math.min(piece.length, size - sent);
              sent += n;
              if (!c.socket.write(n === piece.length ? piece : piece.subarray(0, n))) {
                await new Promise<void>((r) => {
                  const done = () => {
                    c.socket.off('drain', done);
                    c.socket.off('close', done);
                    r();
                  };
                  c.socket.on('drain', done);
                  c.socket.on('close', done);
                });
              }
            }
            const x = await c.read(1, { timeoutMs: 20_000 });
            expect(x.answers[0]?.status).toBe(413);
            expect(JSON.parse(x.answers[0]!.body.toString('utf8')).field).toBe('body');
          } finally {
            c.close();
          }
        });
      }
    });

    describe('an absolute-form target is served as its path (row 15)', () => {
      for (const path of PATHS) {
        it(path, async () => {
          const w = worker(scheme, path);
          const text = JSON.stringify({ auth_data: authMaker(engine, w.url)(5), payload: { prompt: 'hi', max_tokens: 4 } });
          const bytes =
            head([`POST ${w.url}${ROUTE} HTTP/1.1`, 'host: w', 'content-type: application/json', `content-length: ${Buffer.byteLength(text)}`]) + text;
          const c = await rawConnect(w.url);
          try {
            c.write(bytes);
            const x = await c.read(1, { timeoutMs: 10_000 });
            expect(x.answers[0]?.status).toBe(200);
            expect(JSON.parse(x.answers[0]!.body.toString('utf8')).choices).toBeInstanceOf(Array);
          } finally {
            c.close();
          }
        });
      }
    });
  });
}
