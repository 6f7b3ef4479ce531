/**
 * A test engine on loopback: the worker-facing half of the serverless engine (PROTOCOL §4, §9).
 *
 * - serves `GET /pubkey/` from an RSA key pair it makes (or is given), and signs auth_data with it;
 * - records every `POST /worker_status/` and `/delete_requests/` it receives (`posts`), and
 *   separately the bodies it acknowledged with a 2xx (`statuses`, `deletes`): only those count as
 *   delivered;
 * - can be told to refuse connections (`refuse()`: the port is closed, connects get ECONNREFUSED;
 *   `accept()` listens on the same port again), to answer an error status (`answer(500)`), or to be
 *   slow (`slow(ms)`: the answer is held that long; a body whose client gave up before the answer
 *   was written is not counted as acknowledged).
 *
 * Typical use:
 *   const engine = await startEngine();          // close() it in afterEach/afterAll
 *   const auth = engine.authData({ url: worker.url, cost: 50 });
 *   await engine.waitFor(() => engine.statuses.length >= 2);
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll } from 'vitest';
import { generateRsaKeyPair, signUrl, type KeyPair } from '../../src/common/signature.js';

export interface EnginePost {
  path: '/worker_status/' | '/delete_requests/';
  /** Date.now() when the body was fully received. */
  at: number;
  body: any;
  /** Status the engine answered with; null when the client left before the answer. */
  answered: number | null;
}

export interface DeleteBody {
  worker_id: number;
  mtoken: string;
  request_idxs: number[];
  success: boolean;
}

export interface StatusBody extends Record<string, unknown> {
  id: number;
  mtoken: string;
}

export interface EngineAuthInit {
  url: string;
  cost?: number;
  request_idx?: number;
  reqnum?: number;
  endpoint?: string;
  [extra: string]: unknown;
}

export interface TestEngine {
  url: string;
  port: number;
  keys: KeyPair;
  /** Every report post received, acknowledged or not, in arrival order. */
  posts: EnginePost[];
  /** worker_status bodies the engine acknowledged (2xx), with their arrival time. */
  statuses: Array<{ at: number; body: StatusBody }>;
  /** delete_requests bodies the engine acknowledged (2xx). */
  deletes: DeleteBody[];
  /** GET /pubkey/ calls. */
  pubkeyHits: number;
  /** Answer report posts with `status` (2xx = accept). */
  answer(status: number): void;
  /** Hold every report answer `ms` (0 = answer at once). */
  slow(ms: number): void;
  /** Close the port: connects are refused until `accept()`. */
  refuse(): Promise<void>;
  /** Listen on the same port again. */
  accept(): Promise<void>;
  /** Accept at once, at full speed (undo answer/slow/refuse). */
  normal(): Promise<void>;
  /** The engine's signature of `url` (what /route/ puts in auth_data.signature). */
  sign(url: string): string;
  /** auth_data as /route/ returns it, signed with the engine's key. Unique request_idx unless given. */
  authData(init: EngineAuthInit): { cost: number; endpoint: string; reqnum: number; request_idx: number; signature: string; url: string; [k: string]: unknown };
  /** Every request_idx delivered (acknowledged), with its success flag, in order of delivery. */
  delivered(): Array<{ idx: number; success: boolean }>;
  /** Poll until `cond()` holds; rejects after `timeoutMs` with `what()`. */
  waitFor(cond: () => boolean, timeoutMs?: number, what?: () => string): Promise<void>;
  close(): Promise<void>;
}

let sharedKeys: KeyPair | null = null;

/** One RSA key pair per test process: generating 2048-bit keys costs CPU the other tests need. */
export function testKeys(): KeyPair {
  sharedKeys ??= generateRsaKeyPair(2048);
  return sharedKeys;
}

let nextIdx = 1;

export async function startEngine(opts: { keys?: KeyPair; host?: string } = {}): Promise<TestEngine> {
  const keys = opts.keys ?? testKeys();
  const privateKey: KeyObject = createPrivateKey(keys.privateKeyPem);
  const host = opts.host ?? '127.0.0.1';
  let status = 200;
  let delayMs = 0;
  let server: Server | null = null;
  let port = 0;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();

  const engine: TestEngine = {
    url: '',
    port: 0,
    keys,
    posts: [],
    statuses: [],
    deletes: [],
    pubkeyHits: 0,
    answer(s) {
      status = s;
    },
    slow(ms) {
      delayMs = ms;
    },
    refuse: () => stopListening(),
    accept: () => startListening(port),
    async normal() {
      status = 200;
      delayMs = 0;
      if (!server) await startListening(port);
    },
    sign: (url) => signUrl(privateKey, url),
    authData(init) {
      const idx = init.request_idx ?? nextIdx++;
      const { url, cost, request_idx: _i, reqnum, endpoint, ...extra } = init;
      return {
        cost: cost ?? 100,
        endpoint: endpoint ?? 'test-endpoint',
        reqnum: reqnum ?? idx,
        request_idx: idx,
        signature: signUrl(privateKey, url),
        url,
        ...extra,
      };
    },
    delivered() {
      const out: Array<{ idx: number; success: boolean }> = [];
      for (const d of engine.deletes) for (const idx of d.request_idxs) out.push({ idx, success: d.success });
      return out;
    },
    async waitFor(cond, timeoutMs = 10_000, what = () => 'engine condition') {
      const until = Date.now() + timeoutMs;
      while (!cond()) {
        if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what()}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await stopListening();
    },
  };

  function handle(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (req.method === 'GET' && req.url === '/pubkey/') {
        engine.pubkeyHits++;
        res.writeHead(200, { 'content-type': 'text/plain' }).end(keys.publicKeyPem);
        return;
      }
      if (req.method !== 'POST' || (req.url !== '/worker_status/' && req.url !== '/delete_requests/')) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: `no route ${req.method} ${req.url}` }));
        return;
      }
      let body: any;
      try {
        body = JSON.parse(text);
      } catch {
        res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"invalid JSON"}');
        return;
      }
      const post: EnginePost = { path: req.url, at: Date.now(), body, answered: null };
      engine.posts.push(post);
      const answerNow = status;
      const reply = () => {
        // A client that gave up (timeout) never sees the answer: not an acknowledgement.
        if (res.destroyed || req.socket.destroyed) return;
        post.answered = answerNow;
        if (answerNow >= 200 && answerNow < 300) {
          if (post.path === '/worker_status/') engine.statuses.push({ at: post.at, body });
          else engine.deletes.push(body as DeleteBody);
        }
        res.writeHead(answerNow, { 'content-type': 'application/json' }).end(answerNow < 300 ? '{}' : '{"error":"test engine told to fail"}');
      };
      if (delayMs > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          reply();
        }, delayMs);
        timers.add(t);
      } else reply();
    });
  }

  function startListening(p: number): Promise<void> {
    if (server) return Promise.resolve();
    const s = createServer({ keepAliveTimeout: 5000 }, handle);
    s.on('connection', (sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    return new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(p, host, () => {
        s.off('error', reject);
        server = s;
        port = (s.address() as AddressInfo).port;
        engine.port = port;
        engine.url = `http://${host}:${port}`;
        resolve();
      });
    });
  }

  function stopListening(): Promise<void> {
    const s = server;
    if (!s) return Promise.resolve();
    server = null;
    return new Promise<void>((resolve) => {
      s.close(() => resolve());
      for (const sock of sockets) sock.destroy();
    });
  }

  await startListening(0);
  return engine;
}

/** One engine for a whole test file: started before its first test (handed to `set`), closed after its last. */
export function useFileEngine(set: (engine: TestEngine) => void): void {
  let engine: TestEngine | undefined;
  beforeAll(async () => {
    engine = await startEngine();
    set(engine);
  });
  afterAll(() => engine?.close());
}
