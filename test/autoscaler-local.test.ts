/**
 * The local provider end to end: the autoscaler runs in this process, each worker is the real
 * on_start.sh spawned by the provider (model-sim + `nodeworker worker` from dist/), and everything
 * talks HTTP on loopback. Workers verify the engine's signatures for real (no UNSECURED).
 * Needs `npm run build` (on_start.sh runs dist/cli.js).
 */
import { createPublicKey, createVerify } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import type { LocalProvider } from '../src/autoscaler/providers/local.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import type { TransitionEvent } from '../src/autoscaler/engine.js';
import { alive, localFleetConfig, rememberPids, waitForValue } from './helpers/local-fleet.js';

const API_KEY = 'local-e2e-client-key';
const waitFor = <T>(what: string, fn: () => T | undefined | null | false, ms = 30_000) => waitForValue(what, fn, ms);

async function post(url: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed };
}

describe('local provider: real on_start.sh workers behind the autoscaler', () => {
  let as: RunningAutoscaler;
  let dataDir: string;
  const transitions: TransitionEvent[] = [];
  const seenPids = new Set<number>();

  const provider = () => as.provider as LocalProvider;
  const ready = () => [...as.engine.workers.values()].filter((w) => w.state === 'ready');

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'as-local-'));
    as = await startAutoscaler({
      dataDir,
      adminKey: 'local-admin-key',
      logger: createLogger('autoscaler', { destination: join(dataDir, 'autoscaler.log') }),
      config: localFleetConfig({ tokenRate: 100, endpoint: { name: 'local-e2e', api_key: API_KEY, cold_workers: 1, max_workers: 2, min_load: 1 } }),
    });
    as.engine.on('transition', (t) => transitions.push(t));
    rememberPids(provider, seenPids);
  }, 20_000);

  afterAll(async () => {
    await as?.close();
    // Every process any worker ran is gone, and the workspaces with them.
    for (const pid of seenPids) expect(alive(pid), `pid ${pid} still alive`).toBe(false);
    expect(existsSync(join(dataDir, 'workers', 'worker-1'))).toBe(false);
    rmSync(dataDir, { recursive: true, force: true });
  }, 30_000);

  it('routes a request to a real worker, which verifies the signature, answers, and deletes it at the engine', async () => {
    const w = await waitFor('a ready worker', () => ready()[0], 40_000);
    expect(w.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(w.maxPerf).toBeGreaterThan(0);
    // The worker process got what the provider promised.
    const ws = provider().workspaceOf(w.id)!;
    expect(readFileSync(join(ws, '.has_benchmark'), 'utf8').trim()).toMatch(/^\d+(\.\d+)?$/);
    expect(readFileSync(join(ws, 'on_start.log'), 'utf8')).not.toContain(w.mtoken);

    const route = await post(`${as.url}/route/`, { endpoint: 'local-e2e', api_key: API_KEY, cost: 30 });
    expect(route.status).toBe(200);
    const auth = route.body;
    expect(auth.url).toBe(w.url);
    // The signature is over the Python-format message, verifiable with /pubkey/.
    const pem = await (await fetch(`${as.url}/pubkey/`)).text();
    const verify = createVerify('sha256');
    verify.update(`{\n    "url": "${auth.url}"\n}`);
    expect(verify.verify(createPublicKey(pem), auth.signature, 'base64')).toBe(true);
    expect(as.engine.endpoints.get('local-e2e')!.router.get(auth.request_idx)?.state).toBe('routed');

    const answer = await post(`${auth.url}/v1/completions`, { auth_data: auth, payload: { prompt: 'Hello, local worker', max_tokens: 4 } });
    expect(answer.status).toBe(200);
    expect(answer.body.choices[0].text.length).toBeGreaterThan(0);

    // The worker's /delete_requests/ closes it at the engine.
    await waitFor('the request deleted', () => as.engine.endpoints.get('local-e2e')!.router.get(auth.request_idx) === undefined, 10_000);

    // A forged signature is refused by the worker (it checks for real; nothing is unsecured).
    const route2 = await post(`${as.url}/route/`, { endpoint: 'local-e2e', api_key: API_KEY, cost: 30 });
    const forged = { ...route2.body, signature: Buffer.from('x'.repeat(256)).toString('base64') };
    const refused = await fetch(`${auth.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth_data: forged, payload: { prompt: 'x', max_tokens: 1 } }),
    });
    expect(refused.status).toBe(401);
    await refused.body?.cancel();
    await waitFor('the refused request deleted', () => as.engine.endpoints.get('local-e2e')!.router.get(route2.body.request_idx) === undefined, 10_000);
  }, 60_000);

  it('replaces a worker whose processes were killed', async () => {
    const victim = await waitFor('a ready worker', () => ready()[0], 40_000);
    const pids = await waitFor("the worker's three pids", () => {
      const p = provider().pidsOf(victim.id);
      return p.length === 3 ? p : null;
    });
    const ws = provider().workspaceOf(victim.id)!;
    // The machine is lost: every process of the instance dies at once.
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        process.kill(pid, 'SIGKILL');
      }
    }
    await waitFor('the victim errored', () => transitions.some((t) => t.worker === victim.id && t.to === 'errored'), 15_000);
    const errored = transitions.find((t) => t.worker === victim.id && t.to === 'errored')!;
    expect(errored.reason).toMatch(/instance exited|no report/);
    await waitFor('the victim destroyed', () => transitions.some((t) => t.worker === victim.id && t.to === 'destroyed'), 10_000);
    const replacement = await waitFor('a ready replacement', () => ready().find((w) => w.id !== victim.id), 40_000);
    expect(replacement.id).toBeGreaterThan(victim.id);
    // The dead instance's workspace is gone; nothing of it runs.
    await waitFor('the victim workspace removed', () => !existsSync(ws), 10_000);
    for (const pid of pids) expect(alive(pid)).toBe(false);

    const route = await post(`${as.url}/route/`, { endpoint: 'local-e2e', api_key: API_KEY, cost: 30 });
    expect(route.body.url).toBe(replacement.url);
    const answer = await post(`${route.body.url}/v1/completions`, { auth_data: route.body, payload: { prompt: 'again', max_tokens: 2 } });
    expect(answer.status).toBe(200);
  }, 90_000);
});
