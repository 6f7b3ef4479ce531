import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { clientAgent, postJson, waitFor } from './helpers/worker.js';

/**
 * The worker as a real process (`node dist/cli.js worker --handler openai`) in front of model-sim,
 * reporting to a test engine, with debug logging: its whole log must be JSON lines, follow each
 * request by one `rid`, and never contain a secret.
 */
const CLI = resolve('dist/cli.js');
const MASTER_TOKEN = 'mt-LOGTEST-7f3Kq9ZxW2pV';

interface Proc {
  child: ChildProcess;
  out: string[];
  exited: Promise<number | null>;
}

function run(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, out, exited };
}

async function stop(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const killer = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await p.exited;
  clearTimeout(killer);
}

const agent = clientAgent(16);
let engine: TestEngine;
let dir: string;
let sim: Proc | undefined;
let worker: Proc | undefined;

beforeAll(async () => {
  expect(existsSync(CLI), `${CLI} is missing: run \`npm run build\` first (npm test does)`).toBe(true);
  engine = await startEngine();
  dir = mkdtempSync(join(tmpdir(), 'logs-test-'));
});

afterAll(async () => {
  await stop(worker);
  await stop(sim);
  await agent.close();
  await engine?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the worker process log', () => {
  it('is JSON lines, follows each request by one rid, and never contains the master token, a signature or session auth', async () => {
    sim = run(
      ['model-sim', '--flavor', 'openai', '--port', '0', '--load-seconds', '0', '--ttft-ms', '1', '--token-rate', '2000', '--log-file', join(dir, 'model.log')],
      {},
    );
    await waitFor(
      () => /model-sim listening on (http:\/\/127\.0\.0\.1:\d+)/.test(sim!.out.join('')),
      15_000,
      () => `model-sim start: ${sim!.out.join('')}`,
    );
    const modelUrl = /model-sim listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(sim.out.join(''))![1]!;

    const workspace = join(dir, 'ws');
    const marker = join(dir, 'force_update');
    (await import('node:fs')).mkdirSync(workspace);
    writeFileSync(join(workspace, '.has_benchmark'), '500');
    worker = run(['worker', '--handler', 'openai'], {
      WORKER_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '77',
      REPORT_ADDR: engine.url,
      MASTER_TOKEN,
      MODEL_SERVER_URL: modelUrl,
      WORKSPACE_DIR: workspace,
      FORCE_UPDATE_FILE: marker,
      LOG_LEVEL: 'debug',
    });
    const listening = () =>
      worker!.out
        .join('')
        .split('\n')
        .map(tryJson)
        .find((l) => l?.msg === 'worker listening');
    await waitFor(
      () => listening() !== undefined,
      15_000,
      () => `worker start: ${worker!.out.join('')}`,
    );
    const url = listening()!.url as string;
    const internalPort = listening()!.internal_port as number;
    await waitFor(
      () => engine.statuses.some((s) => s.body.loadtime !== 0),
      20_000,
      () => `worker ready: ${worker!.out.join('').slice(-2000)}`,
    );

    const secrets: string[] = [MASTER_TOKEN];
    const send = async (route: string, body: unknown, headers?: Record<string, string>) => postJson(url + route, body, { dispatcher: agent, headers });
    const signed = (cost = 20) => {
      const a = engine.authData({ url, cost });
      secrets.push(a.signature);
      return a;
    };
    const idxs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const a = signed();
      idxs.push(a.request_idx);
      const r = await send('/v1/completions', { auth_data: a, payload: { prompt: 'hello there', max_tokens: 4, stream: i === 1 } });
      expect(r.status).toBe(200);
    }
    const chatAuth = signed();
    expect((await send('/v1/chat/completions', { auth_data: chatAuth, payload: { messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 } })).status).toBe(
      200,
    );
    const forgedSig = engine.sign('http://127.0.0.1:9/forged');
    secrets.push(forgedSig);
    expect((await send('/v1/completions', { auth_data: { ...engine.authData({ url }), signature: forgedSig }, payload: { prompt: 'x' } })).status).toBe(401);
    expect((await send('/v1/completions', { auth_data: signed(), payload: { prompt: 42 } })).status).toBe(422);

    // A session: create, use, get, health, end (on the internal listener), and a wrong session_auth.
    const sAuth = signed(60);
    const created = await send('/session/create', { auth_data: sAuth, payload: { lifetime: 30, on_close_route: '/v1/models' } });
    expect(created.status).toBe(201);
    const sid = created.json.session_id as string;
    expect((await send('/v1/completions', { auth_data: signed(), payload: { prompt: 'in session', max_tokens: 2 }, session_id: sid })).status).toBe(200);
    expect((await send('/session/get', { session_id: sid, session_auth: sAuth })).status).toBe(200);
    expect((await send('/session/health', { session_id: sid, session_auth: sAuth })).json).toEqual({ ok: true });
    expect((await send('/session/get', { session_id: sid, session_auth: { ...sAuth, cost: 1 } })).status).toBe(401);
    const ended = await postJson(`http://127.0.0.1:${internalPort}/session/end`, { session_id: sid, session_auth: sAuth }, { dispatcher: agent });
    expect(ended.status).toBe(200);

    // Management with the right and a wrong token; metrics.
    expect((await send('/pyworker/update', {}, { authorization: `Bearer ${MASTER_TOKEN}` })).json).toEqual({ ok: true });
    expect(existsSync(marker)).toBe(true);
    expect((await send('/pyworker/update', {}, { authorization: `Bearer ${MASTER_TOKEN}-wrong` })).status).toBe(401);
    const metrics = await request(url + '/metrics', { dispatcher: agent });
    expect(metrics.statusCode).toBe(200);
    expect(await metrics.body.text()).toContain('nodeworker_requests_total{route="/v1/completions",outcome="success"} 4');

    await engine.waitFor(() => engine.delivered().some((d) => d.idx === sAuth.request_idx), 10_000);
    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);

    const text = worker.out.join('');
    if (process.env.LOGS_TEST_DUMP) writeFileSync(process.env.LOGS_TEST_DUMP, text); // to read the log by eye
    // Nothing secret, anywhere: not the token, not a signature, not the session's auth_data.
    for (const s of secrets) expect(text.includes(s), `a secret of ${s.length} chars appears in the log`).toBe(false);
    expect(text).not.toContain(MASTER_TOKEN.slice(2));
    expect(text).not.toContain(JSON.stringify(sAuth));
    expect(text).not.toContain(`Bearer`);

    // Every line is one JSON object with a level and a message.
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    const records = lines.map((l) => {
      const j = tryJson(l);
      expect(j, `not a JSON line: ${l}`).toBeDefined();
      return j!;
    });
    for (const r of records) {
      expect(typeof r.level).toBe('string');
      expect(typeof r.msg).toBe('string');
    }
    // One rid per request, from admission to the end.
    const ridOf = new Map<number, Set<number>>();
    for (const r of records) {
      if (typeof r.rid !== 'number' || typeof r.request_idx !== 'number') continue;
      if (!ridOf.has(r.request_idx)) ridOf.set(r.request_idx, new Set());
      ridOf.get(r.request_idx)!.add(r.rid);
    }
    for (const idx of [...idxs, chatAuth.request_idx]) {
      expect(ridOf.get(idx)?.size, `request ${idx} should be logged under exactly one rid`).toBe(1);
      const rid = [...ridOf.get(idx)!][0];
      const msgs = records.filter((r) => r.rid === rid).map((r) => r.msg);
      expect(msgs).toContain('request admitted');
      expect(msgs).toContain('request done');
    }
    const ridsSeen = new Map<number, number>();
    for (const [idx, rids] of ridOf)
      for (const rid of rids) {
        expect(ridsSeen.has(rid) && ridsSeen.get(rid) !== idx, `rid ${rid} used for two requests`).toBe(false);
        ridsSeen.set(rid, idx);
      }
    expect(records.some((r) => r.msg === 'worker_status sent')).toBe(true);
    expect(records.some((r) => r.msg === 'session created' && r.session_id === sid)).toBe(true);
  }, 60_000);
});

describe('log redaction', () => {
  it('replaces secret keys at any of the first levels of a logged object', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'redact-')), 'x.log');
    const log = createLogger('t', { level: 'debug', destination: file });
    log.info(
      {
        mtoken: 's1-secret',
        report: { mtoken: 's2-secret' },
        req: { headers: { authorization: 'Bearer s3-secret' } },
        auth_data: { signature: 's4-secret' },
        body: { session_auth: { a: 's5-secret' } },
        deep: { a: { b: { signature: 's6-secret' } } },
      },
      'with secrets',
    );
    log.flush();
    await waitFor(() => existsSync(file) && readFileSync(file, 'utf8').includes('with secrets'), 3000);
    const text = readFileSync(file, 'utf8');
    expect(text).not.toMatch(/s\d-secret/);
    expect(JSON.parse(text.trim()).mtoken).toBe('[redacted]');
    rmSync(join(file, '..'), { recursive: true, force: true });
  });
});

function tryJson(line: string): Record<string, any> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, any>) : undefined;
  } catch {
    return undefined;
  }
}
