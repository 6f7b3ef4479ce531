/**
 * Scaling end to end with real workers (the local provider: on_start.sh + model-sim + worker
 * processes on loopback) and a real client (src/client): load makes the engine bring a second
 * worker; when the load stops, a worker is stopped (its processes end, its workspace stays); when
 * load comes back the stopped worker is started again in its workspace, a warm second boot that
 * reuses the cached benchmark. Short windows keep it to a few tens of seconds.
 * Needs `npm run build` (on_start.sh runs dist/cli.js).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Serverless } from '../src/client/index.js';
import { createLogger } from '../src/common/log.js';
import type { TransitionEvent, WorkerRecord } from '../src/autoscaler/engine.js';
import type { LocalProvider } from '../src/autoscaler/providers/local.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import { alive, localFleetConfig, rememberPids, waitForValue as waitFor } from './helpers/local-fleet.js';

const API_KEY = 'e2e-scale-client-key';
/** A small open-loop load: `perSecond` requests a second, each declaring `cost`, until stopped. */
function load(client: Serverless, perSecond: number, cost: number) {
  const ep = client.endpoint('scale');
  const results = { ok: 0, failed: 0, errors: [] as string[] };
  const inflight = new Set<Promise<void>>();
  const timer = setInterval(() => {
    const p = ep
      .request('/v1/completions', { prompt: 'scale me', max_tokens: 2 }, { cost, timeout: 20_000 })
      .then(
        (r) => void (r.status === 200 ? results.ok++ : results.failed++),
        (err: Error) => {
          results.failed++;
          results.errors.push(err.message);
        },
      )
      .finally(() => inflight.delete(p));
    inflight.add(p);
  }, 1000 / perSecond);
  return {
    results,
    async stop() {
      clearInterval(timer);
      await Promise.all(inflight);
    },
  };
}

describe('autoscaling with real workers', () => {
  let as: RunningAutoscaler;
  let client: Serverless;
  let dataDir: string;
  const transitions: TransitionEvent[] = [];
  const seenPids = new Set<number>();
  const provider = () => as.provider as LocalProvider;
  const inState = (s: string) => [...as.engine.workers.values()].filter((w) => w.state === s);

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'as-e2e-'));
    as = await startAutoscaler({
      dataDir,
      adminKey: 'e2e-admin-key',
      logger: createLogger('autoscaler', { destination: join(dataDir, 'autoscaler.log') }),
      config: localFleetConfig({
        tokenRate: 100,
        endpoint: {
          name: 'scale',
          api_key: API_KEY,
          cold_workers: 1,
          max_workers: 2,
          min_load: 1,
          target_util: 0.9,
          stable_window: 3,
          panic_window: 0,
          scale_down_delay: 2,
          release_delay: 600,
        },
      }),
    });
    as.engine.on('transition', (t) => transitions.push(t));
    client = new Serverless({ autoscalerUrl: as.url, apiKey: as.apiKeys.scale!, maxPollInterval: 250 });
    rememberPids(provider, seenPids);
  }, 20_000);

  afterAll(async () => {
    await client?.close();
    await as?.close();
    for (const pid of seenPids) expect(alive(pid), `pid ${pid} still alive`).toBe(false);
    rmSync(dataDir, { recursive: true, force: true });
  }, 30_000);

  it('scales up under load, stops a worker when idle, and starts it again warm', async () => {
    const first: WorkerRecord = await waitFor('the first worker ready', () => inState('ready')[0], 40_000);
    expect(first.maxPerf).toBeGreaterThan(0);

    // 1. Load of about twice one worker's perf: the engine recruits the second (max_workers 2).
    const busy = load(client, 4, Math.ceil(first.maxPerf / 2));
    const second = await waitFor('a second worker ready', () => inState('ready').find((w) => w.id !== first.id), 45_000);
    await busy.stop();
    expect(busy.results.ok).toBeGreaterThan(0);
    expect(busy.results.errors).toEqual([]);
    // Both served requests while the load ran or soon after (the router spreads by expected queue time).

    // 2. No load: after the stable window and the scale-down delay one worker is stopped.
    const stopped = await waitFor('a worker stopped', () => inState('inactive')[0], 30_000);
    expect(inState('ready')).toHaveLength(1); // min_load keeps one active
    const stopEvent = transitions.find((t) => t.worker === stopped.id && t.to === 'inactive')!;
    expect(stopEvent.from).toBe('ready');
    await waitFor('its processes ended', () => provider().pidsOf(stopped.id).length === 0, 20_000);
    const ws = provider().workspaceOf(stopped.id)!;
    expect(existsSync(join(ws, '.has_benchmark'))).toBe(true); // the disk is kept
    for (const pid of seenPids) if (provider().allPids().indexOf(pid) < 0) expect(alive(pid)).toBe(false);

    // 3. Load again: the stopped worker is started (inactive → starting → ready) in its workspace.
    const again = load(client, 4, Math.ceil(first.maxPerf / 2));
    await waitFor(
      'the stopped worker ready again',
      () => transitions.some((t) => t.worker === stopped.id && t.from === 'starting' && t.to === 'ready'),
      40_000,
    );
    await again.stop();
    expect(again.results.errors).toEqual([]);
    const path = transitions.filter((t) => t.worker === stopped.id).map((t) => t.to);
    expect(path).toEqual(['created', 'loading', 'ready', 'inactive', 'starting', 'ready']);
    // A second boot: the model log was rotated and the cached benchmark used (one benchmark run).
    expect(existsSync(join(ws, 'model.log.old'))).toBe(true);
    const bootLog = readFileSync(join(ws, 'on_start.log'), 'utf8');
    expect(bootLog.match(/on_start: model pid/g)).toHaveLength(2);
    expect(bootLog.match(/benchmark round 1\//g)).toHaveLength(1);
    // Nothing extra was recruited: the fleet stayed at max_workers.
    expect(new Set(transitions.filter((t) => t.to === 'created').map((t) => t.worker)).size).toBe(2);
    expect([first.id, second.id].sort()).toContain(stopped.id);
  }, 150_000);
});
