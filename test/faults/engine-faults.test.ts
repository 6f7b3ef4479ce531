/**
 * Engine faults under load (issue 8.1): the engine refusing connections, answering 500, answering
 * slower than the worker's 10 s post timeout, and its /pubkey/ down at start. Real processes on
 * loopback (model-sim, the worker); after each scenario the accounting invariants
 * (test/invariants.ts) and a worker that exits by itself after SIGTERM.
 */
import { describe, expect, it } from 'vitest';
import {
  authMaker,
  clientAgent,
  completion,
  finishScenario,
  reportsOf,
  runLoad,
  startKeyFront,
  tally,
  useStage,
  waitUntil,
  type CompletionRecord,
} from './harness.js';

const stage = useStage();

async function setup() {
  const engine = await stage.engine();
  const sim = await stage.sim();
  const worker = await stage.worker({ sim, reportAddr: engine.url });
  const auth = authMaker(engine, worker.url);
  const agent = clientAgent(stage);
  const load = (n: number, concurrency = 16) =>
    runLoad(n, concurrency, (i) => completion(worker.url, auth, { dispatcher: agent, stream: i % 3 === 0, maxTokens: 4 + (i % 29) }));
  return { engine, sim, worker, load };
}

describe('engine faults under load', () => {
  it('the engine refuses connections for a while: nothing is lost or reported twice once it is back', async () => {
    const { engine, sim, worker, load } = await setup();
    const records: CompletionRecord[] = [];
    records.push(...(await load(100)));
    await engine.refuse();
    records.push(...(await load(150)));
    // Several report rounds fail while the port is closed.
    await new Promise((r) => setTimeout(r, 800));
    await engine.accept();
    records.push(...(await load(50)));
    expect(tally(records)).toMatchObject({ success: 300, error: 0 });
    await finishScenario({ engine, worker, records, sim });
  });

  it('the engine answers 500 for a while: reports and deletes are kept until one is acknowledged', async () => {
    const { engine, sim, worker, load } = await setup();
    const records: CompletionRecord[] = [];
    records.push(...(await load(100)));
    engine.answer(500);
    records.push(...(await load(150)));
    await waitUntil(
      () => engine.posts.filter((p) => p.answered === 500 && p.path === '/delete_requests/').length >= 3,
      5000,
      () => 'refused delete posts',
    );
    const refusedStatus = engine.posts.filter((p) => p.answered === 500 && p.path === '/worker_status/').length;
    engine.answer(200);
    records.push(...(await load(50)));
    expect(tally(records)).toMatchObject({ success: 300, error: 0 });
    expect(refusedStatus).toBeGreaterThan(0);
    await finishScenario({ engine, worker, records, sim });
  });

  it('the engine answers slower than the 10 s post timeout: requests are served meanwhile, nothing is lost or doubled', async () => {
    const { engine, sim, worker, load } = await setup();
    const records: CompletionRecord[] = [];
    records.push(...(await load(60)));
    await waitUntil(
      () => engine.delivered().length === 60,
      5000,
      () => `first deliveries: ${engine.delivered().length}`,
    );
    // Real slowness: every answer held 11 s, past the worker's 10 s per-post timeout.
    engine.slow(11_000);
    const slowFrom = engine.posts.length;
    const during = await load(150);
    records.push(...during);
    // The worker keeps serving at full speed while its reports hang.
    expect(tally(during)).toMatchObject({ success: 150 });
    expect(Math.max(...during.map((r) => r.ms))).toBeLessThan(5000);
    // Posts in flight while the engine was slow are given up by the worker (never acknowledged)...
    await waitUntil(
      () => engine.posts.slice(slowFrom).some((p) => p.path === '/delete_requests/'),
      5000,
      () => 'a delete post during the slow phase',
    );
    await new Promise((r) => setTimeout(r, 10_500));
    engine.slow(0);
    // ...and sent again once the engine is quick.
    records.push(...(await load(40)));
    await waitUntil(
      () => engine.posts.slice(slowFrom).some((p) => p.answered === null),
      15_000,
      () => 'a post the worker gave up on',
    );
    await finishScenario({ engine, worker, records, sim, timeoutMs: 20_000 });
  }, 60_000);

  it('the engine /pubkey/ is down at start: not ready, the error is reported, all 401; it recovers when the key returns', async () => {
    const engine = await stage.engine();
    const front = await startKeyFront(stage, engine);
    front.serveKey(false);
    const sim = await stage.sim();
    const worker = await stage.worker({ sim, reportAddr: front.url, waitReady: false });
    await waitUntil(
      () => reportsOf(engine, worker.id).some((r) => /public key/.test((r as unknown as { error_msg: string }).error_msg)),
      10_000,
      () => `an error report; reports: ${JSON.stringify(engine.statuses.slice(-2))}`,
    );
    const h = await worker.healthz();
    expect(h.state).not.toBe('ready');
    expect(h.error_msg).toMatch(/public key/);
    const auth = authMaker(engine, worker.url);
    const agent = clientAgent(stage);
    const records: CompletionRecord[] = await runLoad(40, 8, () => completion(worker.url, auth, { dispatcher: agent }));
    expect(tally(records)).toMatchObject({ rejected: 40 });

    front.serveKey(true);
    await waitUntil(
      async () => (await worker.healthz()).state === 'ready',
      15_000,
      async () => JSON.stringify(await worker.healthz()),
    );
    records.push(...(await runLoad(200, 16, (i) => completion(worker.url, auth, { dispatcher: agent, stream: i % 2 === 0 }))));
    expect(tally(records)).toMatchObject({ rejected: 40, success: 200 });
    await waitUntil(
      () => (reportsOf(engine, worker.id).at(-1) as unknown as { error_msg: string }).error_msg === '',
      5000,
      () => 'a report with the error cleared',
    );
    await finishScenario({ engine, worker, records, sim });
  });
});
