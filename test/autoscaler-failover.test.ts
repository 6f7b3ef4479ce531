/**
 * Failover to a standby with real processes (issue 22 point 5): the autoscaler in this process,
 * two real on_start.sh workers (model-sim + `nodeworker worker` from dist/) through the local
 * provider, one ready and one inactive. The ready one's model starts answering 500; the Vast SDK
 * (test/helpers/vast-sdk.ts, call for call) re-routes each request with the same request_idx. The
 * engine must count the failing worker out of its ready capacity, start the standby, keep it, and
 * give it the re-routed requests as soon as it is ready: every request is served by the standby.
 * Needs `npm run build` (on_start.sh runs dist/cli.js).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import type { TransitionEvent } from '../src/autoscaler/engine.js';
import type { LocalProvider } from '../src/autoscaler/providers/local.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import { alive, localFleetConfig, rememberPids, waitForValue } from './helpers/local-fleet.js';
import { VastSdk, type SdkTrace } from './helpers/vast-sdk.js';

const API_KEY = 'failover-client-key';
const ENDPOINT = 'failover';
const REQUESTS = 6;

describe('failover to a standby (real workers, the SDK re-routing)', () => {
  let as: RunningAutoscaler;
  let dataDir: string;
  const transitions: TransitionEvent[] = [];
  const seenPids = new Set<number>();
  const provider = () => as.provider as LocalProvider;
  const inState = (state: string) => [...as.engine.workers.values()].filter((w) => w.state === state);

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'as-failover-'));
    as = await startAutoscaler({
      dataDir,
      adminKey: 'failover-admin-key',
      logger: createLogger('autoscaler', { destination: join(dataDir, 'autoscaler.log') }),
      // Two loaded workers, one active: the other waits inactive as the standby. No scale-down
      // delay: a standby started for nothing would be stopped at the next tick (the bug this tests).
      config: localFleetConfig({
        tokenRate: 200,
        endpoint: { name: ENDPOINT, api_key: API_KEY, cold_workers: 2, max_workers: 2, min_load: 1, scale_down_delay: 0 },
      }),
    });
    as.engine.on('transition', (t) => transitions.push(t));
    rememberPids(provider, seenPids);
  }, 20_000);

  afterAll(async () => {
    await as?.close();
    for (const pid of seenPids) expect(alive(pid), `pid ${pid} still alive`).toBe(false);
    if (dataDir && existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true });
  }, 30_000);

  it('counts the failing worker out, starts the standby, keeps it, and serves every re-routed request there', async () => {
    // One ready worker and one inactive standby, both with the model loaded once.
    const [failing, standby] = await waitForValue(
      'one ready worker and one inactive standby',
      () => {
        const ready = inState('ready');
        const inactive = inState('inactive');
        return ready.length === 1 && inactive.length === 1 && inactive[0]!.url ? [ready[0]!, inactive[0]!] : null;
      },
      60_000,
    );
    // Its model now answers every request 500 (the worker itself, its reports and /healthz stay fine).
    const modelPort = provider().portsOf(failing.id)!.model;
    const ctl = await fetch(`http://127.0.0.1:${modelPort}/sim/control`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ errorRate: 1 }),
    });
    expect(ctl.status).toBe(200);
    await ctl.body?.cancel();
    const since = transitions.length;

    const ep = as.engine.endpoints.get(ENDPOINT)!;
    const sdk = new VastSdk({
      apiKey: API_KEY,
      webUrl: as.url,
      autoscalerUrl: as.url,
      sleep: (s) => new Promise((r) => setTimeout(r, s * 1000)),
      maxPollInterval: 2,
      random: () => 0.5,
    });
    const results = await Promise.all(
      Array.from({ length: REQUESTS }, (_, i) => {
        const trace: SdkTrace = { routes: [], calls: [], sleeps: [] };
        return sdk.request({ id: ep.id, name: ENDPOINT, apiKey: API_KEY }, '/v1/completions', { prompt: `failover ${i}`, max_tokens: 4 }, 10, trace);
      }),
    );

    for (const r of results) {
      // Served, by the standby, after the failing worker answered 500 and the SDK re-routed the same request_idx.
      expect(r.status).toBe(200);
      expect((r.json as { choices: Array<{ text: string }> }).choices[0]!.text.length).toBeGreaterThan(0);
      const last = r.trace.calls.at(-1)!;
      expect(last.url.startsWith(standby.url!)).toBe(true);
      const idx = r.trace.routes[0]!.idx!;
      expect(idx).toBeGreaterThan(0);
      expect(r.trace.routes.every((x) => x.idx === idx)).toBe(true);
      if (r.trace.calls.some((c) => c.url.startsWith(failing.url!))) {
        expect(r.trace.calls.find((c) => c.url.startsWith(failing.url!))!.status).toBe(500);
        expect(r.trace.routes.some((x) => x.sent === idx)).toBe(true);
      }
    }
    // The failover happened: at least one request met the failing worker and was re-routed.
    expect(results.some((r) => r.trace.calls.some((c) => c.url.startsWith(failing.url!) && c.status === 500))).toBe(true);
    // The standby was started once and stayed: never stopped while the failovers were served.
    const moves = transitions.slice(since).filter((t) => t.worker === standby.id);
    expect(moves.map((t) => t.to)).toEqual(['starting', 'ready']);
    expect(as.engine.workers.get(standby.id)!.state).toBe('ready');
    // The failing worker was not counted as ready capacity while unproven.
    expect(ep.router.unproven(failing.id)).toBe(true);
  }, 90_000);
});
