/**
 * Who gets in (issue 8.4): signature attacks, the opt-in strict mode end to end through the
 * reference autoscaler (whole auth_data signed, with an expiry), constant-time comparison of
 * tokens and session auth, no secret in any log line (grepped), sessions refusing other sessions'
 * auth, and HTTPS with a certificate from a CA made here by openssl, verified by the client.
 * Everything real on loopback: RSA keys, HTTP(S) servers, the worker, model-sim, the autoscaler.
 */
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, createVerify } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completions } from '../handlers/openai.js';
import type { Provider, ProviderEvent, WorkerHandle, WorkerSpec as ProviderWorkerSpec } from '../src/autoscaler/providers/types.js';
import { sameSecret } from '../src/autoscaler/engine.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import { createLogger } from '../src/common/log.js';
import { generateRsaKeyPair, pythonJsonDumps, signMessage, signUrl } from '../src/common/signature.js';
import type { ModelSim } from '../src/model-sim/index.js';
import { strictSignedMessage } from '../src/worker/auth.js';
import { defineWorker } from '../src/worker/config.js';
import { parseWorkerEnv } from '../src/worker/env.js';
import { defaultExtensions } from '../src/worker/extensions.js';
import { tokenMatches } from '../src/worker/management.js';
import { canonicalJson, sameAuth } from '../src/worker/sessions.js';
import { startWorker, type RunningWorker } from '../src/worker/worker.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { selfSignedCert } from './helpers/tls.js';
import { freePort, postJson, startInstantOpenaiSim, startTestWorker, useResources, waitFor, type TestWorker } from './helpers/worker.js';
import { authMaker, clientAgent, completion, useStage, waitUntil } from './faults/harness.js';
import { checkDeliveries } from '../benchmarks/lib/invariants.js';

const stage = useStage();
let engine: TestEngine;
let sim: ModelSim;
let simDir: string;

beforeAll(async () => {
  engine = await startEngine();
  simDir = mkdtempSync(join(tmpdir(), 'security-'));
  sim = await startInstantOpenaiSim(simDir);
});
afterAll(async () => {
  await sim?.close();
  await engine?.close();
  rmSync(simDir, { recursive: true, force: true });
});

const cleanups = useResources();

async function securedWorker(env: Record<string, string> = {}): Promise<TestWorker> {
  const w = await startTestWorker({
    modelUrl: sim.url,
    handlers: [completions],
    unsecured: false,
    reportAddr: engine.url,
    extensions: defaultExtensions(),
    env,
  });
  cleanups.defer(() => w.close());
  return w;
}

const send = (url: string, body: unknown, dispatcher?: Agent) => postJson(url, body, { dispatcher });

let nextIdx = 70_000_000;
const payload = { prompt: 'hello', max_tokens: 2 };
const WORKLOAD = Math.ceil(payload.prompt.length / 4) + payload.max_tokens;

describe('signature attacks (compatible mode)', () => {
  it('another key, another url, truncated, not base64, empty, or any bit flipped: all an empty 401, counted rejected and reported', async () => {
    const w = await securedWorker();
    const good = engine.sign(w.url);
    const other = generateRsaKeyPair(2048);
    const base = () => ({ cost: 10, endpoint: 'sec', reqnum: nextIdx, request_idx: nextIdx++, url: w.url });
    const attacks: Record<string, string> = {
      'another key': signUrl(createPrivateKey(other.privateKeyPem), w.url),
      'another url': engine.sign(`${w.url}/other`),
      truncated: good.slice(0, -8),
      'truncated to a valid base64 length': good.slice(0, good.length - 4),
      'not base64': good.replace(/[A-Za-z]/, '*'),
      'base64url alphabet': good.replace(/\+/g, '-').replace(/\//g, '_'),
      empty: '',
      whitespace: ` ${good} `,
      'the signature of the message bytes, not the Python text': signMessage(createPrivateKey(engine.keys.privateKeyPem), w.url),
    };
    const sent: Array<{ requestIdx: number; workload: number; outcome: 'rejected' | 'success' }> = [];
    for (const [name, signature] of Object.entries(attacks)) {
      const auth = { ...base(), signature };
      const a = await send(`${w.url}/v1/completions`, { auth_data: auth, payload });
      expect([name, a.status, a.text]).toEqual([name, 401, '']);
      sent.push({ requestIdx: auth.request_idx, workload: WORKLOAD, outcome: 'rejected' });
    }
    // Any single bit flipped in a good signature.
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 2047 }), async (bit) => {
        const raw = Buffer.from(good, 'base64');
        raw[bit >> 3]! ^= 1 << (bit & 7);
        const auth = { ...base(), signature: raw.toString('base64') };
        const a = await send(`${w.url}/v1/completions`, { auth_data: auth, payload });
        expect(a.status).toBe(401);
        sent.push({ requestIdx: auth.request_idx, workload: WORKLOAD, outcome: 'rejected' });
      }),
      { numRuns: 50 },
    );
    const ok = { ...base(), signature: good };
    expect((await send(`${w.url}/v1/completions`, { auth_data: ok, payload })).status).toBe(200);
    sent.push({ requestIdx: ok.request_idx, workload: WORKLOAD, outcome: 'success' });
    // Every refusal is in the ledger and reaches the engine as success=false; nothing else does.
    await waitFor(
      () => sent.every((s) => engine.delivered().some((d) => d.idx === s.requestIdx)),
      5000,
      () => 'deliveries',
    );
    const mine = new Set(sent.map((s) => s.requestIdx));
    expect(
      checkDeliveries(
        sent,
        engine.delivered().filter((d) => mine.has(d.idx)),
      ),
    ).toEqual([]);
    // The handler's workload (prompt tokens + max_tokens), not auth_data.cost, is what the ledger counts.
    expect(w.ledger.totals.rejected).toBe(WORKLOAD * (sent.length - 1));
    expect(w.auth.reqnum).toBe(ok.reqnum);
  });
});

// ---------------------------------------------------------------------------------------------
// Strict mode, end to end: the reference autoscaler signs, a STRICT_AUTH worker verifies.

/** A provider whose instances are real in-process workers (STRICT_AUTH=true) in front of model-sim. */
class StrictWorkerProvider implements Provider {
  readonly kind = 'strict-test';
  readonly workers: RunningWorker[] = [];
  private readonly dirs: string[] = [];
  constructor(private readonly logFile: string) {}
  async create(spec: ProviderWorkerSpec): Promise<WorkerHandle> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'strict-worker-'));
    this.dirs.push(dir);
    writeFileSync(join(dir, '.has_benchmark'), '5000');
    const env = parseWorkerEnv({
      WORKER_PORT: String(port),
      WORKER_HTTP_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      PUBLIC_IPADDR: '127.0.0.1',
      CONTAINER_ID: String(spec.workerId),
      MASTER_TOKEN: spec.masterToken,
      REPORT_ADDR: spec.reportAddrs.join(','),
      WORKSPACE_DIR: dir,
      STRICT_AUTH: 'true',
    });
    const w = await startWorker({
      definition: defineWorker({ modelServerUrl: sim.url, handlers: [completions] }),
      env,
      logger: createLogger('strict-worker', { level: 'debug', destination: this.logFile }),
      timings: { noHealthWaitMs: 0, reportTickMs: 50, reportIdleMs: 300, reportRetryDelayMs: 50, pubkeyBaseDelayMs: 50 },
      extensions: defaultExtensions(),
    });
    this.workers.push(w);
    return { id: spec.workerId, url: w.url };
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  async destroy(): Promise<void> {}
  subscribe(_l: (e: ProviderEvent) => void): () => void {
    return () => undefined;
  }
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
    for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
  }
}

describe('strict mode (STRICT_AUTH=true, autoscaler strict_auth)', () => {
  const API_KEY = 'strict-client-key-0123456789';
  const ADMIN = 'strict-admin-key-0123456789';
  let as: RunningAutoscaler;
  let provider: StrictWorkerProvider;
  let logDir: string;

  beforeAll(async () => {
    logDir = mkdtempSync(join(tmpdir(), 'strict-logs-'));
    provider = new StrictWorkerProvider(join(logDir, 'worker.log'));
    as = await startAutoscaler({
      config: {
        admin_key: ADMIN,
        strict_auth: { ttl_seconds: 2 },
        engine: { tick_seconds: 0.05 },
        endpoints: [
          {
            name: 'strict',
            api_key: API_KEY,
            max_workers: 1,
            cold_workers: 1,
            cold_mult: 0,
            workergroups: [{ name: 'wg', machine_types: [{ name: 'local', dollars_per_hour: 0 }] }],
          },
        ],
      },
      port: 0,
      dataDir: join(logDir, 'data'),
      provider,
      adminKey: ADMIN,
      dashboard: false,
      logger: createLogger('autoscaler', { level: 'debug', destination: join(logDir, 'autoscaler.log') }),
    });
    await waitFor(
      () => [...as.engine.workers.values()].some((w) => w.state === 'ready'),
      15_000,
      () => `a ready worker: ${JSON.stringify([...as.engine.workers.values()].map((w) => w.state))}`,
    );
  });
  afterAll(async () => {
    await as?.close();
    rmSync(logDir, { recursive: true, force: true });
  });

  async function route(cost = 40): Promise<Record<string, any>> {
    const r = await send(`${as.url}/route/`, { endpoint: 'strict', api_key: API_KEY, cost, request_idx: 0, replay_timeout: 5 });
    expect(r.status, r.text).toBe(200);
    expect(r.json.url).toBeDefined();
    return r.json;
  }

  it('the autoscaler signs the whole auth_data with an expiry; the worker serves it', async () => {
    const auth = await route();
    const now = Date.now() / 1000;
    expect(auth.expires_at).toBeGreaterThan(now);
    expect(auth.expires_at).toBeLessThanOrEqual(now + 3);
    // Independently verified: RSA/SHA-256 over json.dumps(auth_data minus signature, indent=4, sort_keys=True).
    const { signature, ...fields } = auth;
    const pem = await (await fetch(`${as.url}/pubkey/`)).text();
    expect(createVerify('sha256').update(pythonJsonDumps(fields)).verify(createPublicKey(pem), Buffer.from(signature, 'base64'))).toBe(true);
    expect(strictSignedMessage(auth)).toBe(pythonJsonDumps(fields));
    // The url-only message does not verify: strict answers are not compatible-mode signatures.
    expect(createVerify('sha256').update(`{\n    "url": "${auth.url}"\n}`).verify(createPublicKey(pem), Buffer.from(signature, 'base64'))).toBe(false);
    const a = await send(`${auth.url}/v1/completions`, { auth_data: auth, payload });
    expect(a.status, a.text).toBe(200);
  });

  it('any changed, added or removed field is a 401: cost, url, ids, expiry', async () => {
    const auth = await route(40);
    const tampered: Array<[string, Record<string, unknown>, number]> = [
      ['cost lowered', { ...auth, cost: 1 }, 401],
      ['cost raised', { ...auth, cost: 4000 }, 401],
      // The same number spelled as a string is the same cost (PROTOCOL: numbers may arrive as strings).
      ['cost "40", the same value', { ...auth, cost: '40' }, 200],
      ['cost "1" as a string', { ...auth, cost: '1' }, 401],
      ['expiry pushed out', { ...auth, expires_at: auth.expires_at + 3600 }, 401],
      ['expiry removed', (({ expires_at: _e, ...rest }) => rest)(auth), 401],
      ['request_idx changed', { ...auth, request_idx: auth.request_idx + 1 }, 401],
      ['reqnum changed', { ...auth, reqnum: auth.reqnum + 1000 }, 401],
      ['endpoint changed', { ...auth, endpoint: 'other' }, 401],
      ['url changed', { ...auth, url: `${auth.url}/` }, 401],
      ['a key added', { ...auth, priority: 'high' }, 401],
      ['worker_id removed', (({ worker_id: _w, ...rest }) => rest)(auth), 401],
      [
        'a compatible url-only signature',
        { ...auth, signature: signUrl(createPrivateKey(readFileSync(join(logDir, 'data', 'engine_key.pem'), 'utf8')), auth.url) },
        401,
      ],
    ];
    for (const [name, forged, status] of tampered) {
      const a = await send(`${auth.url}/v1/completions`, { auth_data: forged, payload });
      expect([name, a.status]).toEqual([name, status]);
      if (status === 401) expect(a.text).toBe('');
    }
    // The untouched original still works (within its lifetime).
    expect((await send(`${auth.url}/v1/completions`, { auth_data: auth, payload })).status).toBe(200);
  });

  it('a captured auth_data replays only until expires_at, then gets 401', async () => {
    const auth = await route(25);
    expect((await send(`${auth.url}/v1/completions`, { auth_data: auth, payload })).status).toBe(200);
    expect((await send(`${auth.url}/v1/completions`, { auth_data: auth, payload })).status).toBe(200);
    await new Promise((r) => setTimeout(r, Math.max(0, auth.expires_at * 1000 - Date.now()) + 100));
    const late = await send(`${auth.url}/v1/completions`, { auth_data: auth, payload });
    expect([late.status, late.text]).toEqual([401, '']);
    // Sessions check the same signature: an expired auth_data cannot open one either.
    const s = await send(`${auth.url}/session/create`, { auth_data: auth, payload: { lifetime: 5 } });
    expect(s.status).toBe(401);
  });

  it("deeply nested extra fields cannot blow the signer's stack: a 422 naming the field", async () => {
    const auth = await route(5);
    const deep = JSON.stringify({ auth_data: { ...auth, extra: '__DEEP__' }, payload }).replace('"__DEEP__"', '['.repeat(50_000) + ']'.repeat(50_000));
    const a = await send(`${auth.url}/v1/completions`, deep);
    expect(a.status).toBe(422);
    expect(a.json.auth_data.extra).toMatch(/nested deeper/);
  });

  it("the autoscaler's and the strict worker's logs hold no api key, admin key, token or signature", async () => {
    const auth = await route(5);
    await send(`${auth.url}/v1/completions`, { auth_data: { ...auth, cost: 1 }, payload });
    await new Promise((r) => setTimeout(r, 300));
    const tokens = [...as.engine.workers.values()].map((w) => w.mtoken);
    const logs = readdirSync(logDir)
      .filter((f) => f.endsWith('.log'))
      .map((f) => readFileSync(join(logDir, f), 'utf8'))
      .join('\n');
    expect(logs.length).toBeGreaterThan(1000);
    for (const secret of [API_KEY, ADMIN, auth.signature, auth.signature.slice(10, 40), ...tokens]) {
      expect(secret.length).toBeGreaterThan(8);
      expect(logs.includes(secret), `a log line holds ${secret.slice(0, 6)}…`).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('constant-time comparison of secrets', () => {
  it('tokens, api keys and session auth are compared through fixed-length digests (no early exit on length or prefix)', () => {
    const token = 'master-token-0123456789abcdef';
    for (const candidate of ['', 'm', token.slice(0, -1), `${token}x`, token.toUpperCase(), `${token.slice(0, -1)}F`, 'ü'.repeat(40)]) {
      // timingSafeEqual on raw strings would throw on a length mismatch; these never throw.
      expect(tokenMatches(token, candidate)).toBe(false);
      expect(sameSecret(token, candidate)).toBe(false);
    }
    expect(tokenMatches(token, token)).toBe(true);
    expect(sameSecret(token, token)).toBe(true);
    expect(tokenMatches('', '')).toBe(false); // an empty MASTER_TOKEN authorises nobody

    const auth = { cost: 1, endpoint: 'e', reqnum: 1, request_idx: 1, signature: 'c2ln', url: 'http://x' };
    const digest = (v: unknown) => createHash('sha256').update(canonicalJson(v)).digest();
    expect(sameAuth(digest(auth), { url: 'http://x', signature: 'c2ln', request_idx: 1, reqnum: 1, endpoint: 'e', cost: 1 })).toBe(true);
    expect(sameAuth(digest(auth), { ...auth, cost: 2 })).toBe(false);
    expect(sameAuth(digest(auth), 'not an object')).toBe(false);
  });

  it('no secret in the source is compared with ===/!== (every comparison goes through the digest helpers)', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(resolve('src'));
    const secret = /(mtoken|masterToken|MASTER_TOKEN|apiKey|api_key|adminKey|admin_key|sessionAuth|session_auth|authDigest|bearer|\btoken\b|signature)/;
    const offenders: string[] = [];
    for (const f of files) {
      readFileSync(f, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          const code = line.replace(/\/\/.*$/, '').replace(/'[^']*'|"[^"]*"|`[^`]*`/g, "''");
          for (const m of code.matchAll(/([\w.$?!\][]+)\s*(===|!==|==|!=)\s*([\w.$?!\][']+)/g)) {
            const [, left, , right] = m;
            const sides = [left!, right!];
            if (!sides.some((s) => secret.test(s))) continue;
            // Presence and type checks are not comparisons of secret values.
            if (sides.some((s) => /^(undefined|null|''|0|true|false)$/.test(s) || /(length|\.size)$/.test(s))) continue;
            if (/typeof\s+$/.test(code.slice(0, m.index))) continue;
            offenders.push(`${f.slice(resolve('.').length + 1)}:${i + 1}: ${line.trim()}`);
          }
        });
    }
    expect(offenders).toEqual([]);
    for (const f of ['src/worker/management.ts', 'src/worker/sessions.ts', 'src/autoscaler/registry.ts'])
      expect(readFileSync(f, 'utf8')).toContain('timingSafeEqual');
  });
});

describe("sessions refuse other sessions' auth", () => {
  it("get, health and end with another session's (or an altered) session_auth are 401; the owner's auth works, in any key order", async () => {
    const w = await securedWorker();
    const sig = engine.sign(w.url);
    const authA = { cost: 30, endpoint: 'sec', reqnum: nextIdx, request_idx: nextIdx++, signature: sig, url: w.url };
    const authB = { cost: 30, endpoint: 'sec', reqnum: nextIdx, request_idx: nextIdx++, signature: sig, url: w.url };
    const a = await send(`${w.url}/session/create`, { auth_data: authA, payload: { lifetime: 30 } });
    const b = await send(`${w.url}/session/create`, { auth_data: authB, payload: { lifetime: 30 } });
    expect([a.status, b.status]).toEqual([201, 201]);
    const idA = a.json.session_id as string;
    const wrongs: Array<[string, unknown]> = [
      ["B's auth", authB],
      ['cost changed', { ...authA, cost: 31 }],
      ['a key added', { ...authA, extra: 1 }],
      ['signature dropped', (({ signature: _s, ...rest }) => rest)(authA)],
      ['empty', {}],
    ];
    for (const path of ['/session/get', '/session/health', '/session/end']) {
      for (const [name, auth] of wrongs) {
        const r = await send(`${w.url}${path}`, { session_id: idA, session_auth: auth });
        expect([path, name, r.status, r.json?.field]).toEqual([path, name, 401, 'session_auth']);
        expect(r.text).not.toContain(sig);
      }
    }
    const reordered = Object.fromEntries(Object.entries(authA).reverse());
    expect((await send(`${w.url}/session/get`, { session_id: idA, session_auth: reordered })).status).toBe(200);
    expect((await send(`${w.url}/session/end`, { session_id: idA, session_auth: authA })).status).toBe(200);
    // Closed: still not for B to probe, and the owner learns it is gone.
    expect((await send(`${w.url}/session/end`, { session_id: idA, session_auth: authB })).status).toBe(401);
    expect((await send(`${w.url}/session/end`, { session_id: idA, session_auth: authA })).status).toBe(400);
    expect((await send(`${w.url}/session/end`, { session_id: b.json.session_id, session_auth: authB })).status).toBe(200);
  });
});

describe('no secret in any log line', () => {
  it('a worker process at debug level, through requests, refusals, sessions, updates and reports, never logs a token, signature or session auth', async () => {
    const dir = stage.dir();
    const e = await stage.engine();
    const simProc = await stage.sim();
    const masterToken = 'mtoken-do-not-log-5f2c9a7e1b';
    const worker = await stage.worker({ sim: simProc, reportAddr: e.url, masterToken, env: { FORCE_UPDATE_FILE: join(dir, 'force_update') } });
    const sig = e.sign(worker.url);
    const agent = clientAgent(stage);
    const auth = authMaker(e, worker.url);
    // Requests: served, refused for their signature, refused for their shape.
    for (let i = 0; i < 5; i++) await completion(worker.url, auth, { dispatcher: agent, stream: i % 2 === 0 });
    const forged = {
      cost: 5,
      endpoint: 'sec',
      reqnum: 1,
      request_idx: nextIdx++,
      signature: 'Zm9yZ2VkLXNpZ25hdHVyZS1kby1ub3QtbG9n',
      url: worker.url,
      canary: 'canary-in-auth-data-7d1e',
    };
    expect((await send(`${worker.url}/v1/completions`, { auth_data: forged, payload }, agent)).status).toBe(401);
    expect((await send(`${worker.url}/v1/completions`, { auth_data: { ...forged, cost: 'x' }, payload }, agent)).status).toBe(422);
    // Sessions: created, probed with the wrong auth, ended.
    const sauth = { cost: 9, endpoint: 'sec', reqnum: 2, request_idx: nextIdx++, signature: sig, url: worker.url, canary: 'canary-in-session-auth-93ab' };
    const s = await send(`${worker.url}/session/create`, { auth_data: sauth, payload: { lifetime: 10 } }, agent);
    expect(s.status).toBe(201);
    expect((await send(`${worker.url}/session/get`, { session_id: s.json.session_id, session_auth: { ...sauth, cost: 1 } }, agent)).status).toBe(401);
    expect((await send(`${worker.url}/session/end`, { session_id: s.json.session_id, session_auth: sauth }, agent)).status).toBe(200);
    // Management: a wrong bearer token and the right one.
    const wrongBearer = 'bearer-guess-do-not-log-44aa';
    for (const token of [wrongBearer, masterToken]) {
      const r = await request(`${worker.url}/pyworker/update`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, dispatcher: agent });
      expect(r.statusCode).toBe(token === masterToken ? 200 : 401);
      await r.body.dump();
    }
    await waitUntil(
      () => e.statuses.filter((x) => x.body.id === worker.id).length >= 3,
      5000,
      () => 'reports',
    );
    await worker.terminate();
    const log = readFileSync(worker.logFile, 'utf8');
    expect(log.split('\n').length).toBeGreaterThan(20);
    expect(log).toContain('worker_status sent'); // the debug report line is there, with its token masked
    for (const secret of [masterToken, sig, sig.slice(20, 60), forged.signature, wrongBearer, 'canary-in-auth-data-7d1e', 'canary-in-session-auth-93ab']) {
      const line = log.split('\n').find((l) => l.includes(secret));
      expect(line, `logged: ${secret.slice(0, 8)}…`).toBeUndefined();
    }
  });
});

describe('HTTPS with a real certificate', () => {
  let pki: { dir: string; ca: string; cert: string; key: string; otherCa: string };

  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'pki-'));
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    // A CA, and a server certificate for 127.0.0.1 signed by it; and a second, unrelated CA.
    const ca = selfSignedCert(dir, 'ca', {
      subject: '/CN=nodeworker test CA',
      days: 2,
      extensions: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'],
    });
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
    writeFileSync(
      join(dir, 'ext.cnf'),
      'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n',
    );
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf');
    const other = selfSignedCert(dir, 'other', { subject: '/CN=some other CA', days: 2 });
    pki = { dir, ca: ca.cert, cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), otherCa: other.cert };
  });
  afterAll(() => rmSync(pki.dir, { recursive: true, force: true }));

  it('serves over TLS with the CA-signed certificate, verified by the client with that CA; refused without it or with another CA', async () => {
    const w = await securedWorker({ USE_SSL: 'true', SSL_CERT_PATH: pki.cert, SSL_KEY_PATH: pki.key });
    expect(w.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const trusted = new Agent({ connect: { ca: readFileSync(pki.ca) } });
    const wrongCa = new Agent({ connect: { ca: readFileSync(pki.otherCa) } });
    const noCa = new Agent();
    const byName = new Agent({ connect: { ca: readFileSync(pki.ca), servername: 'localhost' } });
    cleanups.defer(() => Promise.all([trusted.close(), wrongCa.close(), noCa.close(), byName.close()]).then(() => undefined));

    const auth = { cost: 10, endpoint: 'sec', reqnum: nextIdx, request_idx: nextIdx++, signature: engine.sign(w.url), url: w.url };
    const ok = await send(`${w.url}/v1/completions`, { auth_data: auth, payload }, trusted);
    expect(ok.status, ok.text).toBe(200);
    const health = await request(`${w.url}/healthz`, { dispatcher: trusted });
    expect(((await health.body.json()) as { state: string }).state).toBe('ready');

    const failures: Record<string, string> = {};
    for (const [name, agent] of [
      ['no CA', noCa],
      ['another CA', wrongCa],
      ['a name the certificate does not hold', byName],
    ] as const) {
      const err = await request(`${w.url}/healthz`, { dispatcher: agent }).then(
        () => null,
        (e: Error & { code?: string; cause?: { code?: string } }) => e.code ?? e.cause?.code ?? e.message,
      );
      failures[name] = String(err);
    }
    expect(failures['no CA']).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
    expect(failures['another CA']).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
    expect(failures['a name the certificate does not hold']).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);

    // Plain HTTP to the TLS port gets no HTTP answer.
    const plain = await request(w.url.replace('https:', 'http:') + '/healthz').then(
      async (r) => r.statusCode,
      () => 'refused',
    );
    expect(plain === 'refused' || plain === 400).toBe(true);
    // The internal listener (/session/end for webhooks) stays plain HTTP on its own port.
    const internal = await send(`http://127.0.0.1:${w.internalPort}/session/end`, { session_id: 'x', session_auth: auth });
    expect(internal.status).toBe(400);
  });
});
