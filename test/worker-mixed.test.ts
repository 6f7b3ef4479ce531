import { afterAll, expect, it } from 'vitest';
import { clientAgent, echoHandler, envelope, authData, postJson, startTestModel, startTestWorker, useResources, waitFor } from './helpers/worker.js';

/**
 * 2,000 mixed requests through one worker: successes, model 500s, client aborts and 429s, with
 * 64 in flight. Afterwards every admitted request has ended exactly once, its request_idx sits in
 * exactly one /delete_requests/ list with the right flag, and the workload sums add up.
 */
const res = useResources();
const agent = clientAgent(96);
afterAll(() => agent.close());

type Kind = 'ok' | 'fail' | 'abort' | 'tight';
const TOTAL = 2000;
const IN_FLIGHT = 64;

it('keeps the ledger invariant and sums over 2,000 mixed requests', async () => {
  // The model: "ok" answers 200, "fail" answers 500, "abort" never answers (the client leaves).
  const reached = new Map<number, () => void>();
  const model = await res.add(
    startTestModel((_req, r, body) => {
      const p = JSON.parse(body.toString('utf8')) as { kind: Kind; idx: number };
      if (p.kind === 'abort') {
        reached.get(p.idx)?.();
        return;
      }
      setTimeout(() => {
        r.writeHead(p.kind === 'fail' ? 500 : 200, { 'content-type': 'application/json' });
        r.end(JSON.stringify({ idx: p.idx }));
      }, p.idx % 3);
    }),
  );
  // perf 1000: /tight refuses (429) whenever 2 ms of work or more is queued ahead, so it both
  // admits and refuses under this load; /echo never refuses.
  const w = await res.add(
    startTestWorker({
      modelUrl: model.url,
      perf: 1000,
      handlers: [echoHandler({ maxQueueTime: null }), echoHandler({ route: '/tight', maxQueueTime: 0.002, benchmark: undefined })],
    }),
  );

  const kinds: Kind[] = ['ok', 'ok', 'ok', 'fail', 'abort', 'tight'];
  const observed = new Map<number, { kind: Kind; status: number | 'aborted'; workload: number }>();

  const one = async (i: number): Promise<void> => {
    const idx = 50_000 + i;
    const kind = kinds[(i * 7) % kinds.length]!;
    const workload = 1 + (i % 50);
    const body = envelope({ kind, idx, workload }, authData({ request_idx: idx, reqnum: idx }));
    const url = w.url + (kind === 'tight' ? '/tight' : '/echo');
    if (kind !== 'abort') {
      const r = await postJson(url, body, { dispatcher: agent });
      observed.set(idx, { kind, status: r.status, workload });
      return;
    }
    // Abort only once the model holds the request, so the worker must end it as cancelled.
    const ac = new AbortController();
    const atModel = new Promise<void>((resolve) => reached.set(idx, resolve));
    const p = postJson(url, body, { dispatcher: agent, signal: ac.signal });
    await atModel;
    ac.abort();
    await p.then(
      (r) => observed.set(idx, { kind, status: r.status, workload }),
      () => observed.set(idx, { kind, status: 'aborted', workload }),
    );
  };

  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < TOTAL) await one(next++);
    }),
  );
  await waitFor(
    () => w.ledger.totals.ended === TOTAL,
    5000,
    () => `all ${TOTAL} requests ended (now ${w.ledger.totals.ended})`,
  );

  // What the clients saw.
  const byOutcome = { served: [] as number[], errored: [] as number[], cancelled: [] as number[], rejected: [] as number[] };
  const sums = { served: 0, errored: 0, cancelled: 0, rejected: 0 };
  for (const [idx, o] of observed) {
    const bucket = o.status === 'aborted' ? 'cancelled' : o.status === 200 ? 'served' : o.status === 500 ? 'errored' : o.status === 429 ? 'rejected' : null;
    expect(bucket, `request ${idx} (${o.kind}) got ${o.status}`).not.toBeNull();
    byOutcome[bucket!].push(idx);
    sums[bucket!] += o.workload;
  }
  expect(observed.size).toBe(TOTAL);
  expect(byOutcome.cancelled.length).toBe(observed.size - [...observed.values()].filter((o) => o.kind !== 'abort').length);
  expect(byOutcome.errored.length).toBeGreaterThan(0);
  expect(byOutcome.rejected.length).toBeGreaterThan(0);
  expect(byOutcome.served.length).toBeGreaterThan(0);

  // The ledger: every request ended exactly once, in the state the client saw.
  const { ledger } = w;
  const t = ledger.totals;
  const snap = ledger.snapshot();
  expect(t.requests).toBe(TOTAL);
  expect(t.ended).toBe(TOTAL);
  expect(snap.workloadPending).toBe(0);
  expect(snap.numRequestsWorking).toBe(0);
  expect(snap.curLoad).toBe(0);
  expect(ledger.expectedQueueTime()).toBe(0);
  expect(t.served).toBe(sums.served);
  expect(t.errored).toBe(sums.errored);
  expect(t.cancelled).toBe(sums.cancelled);
  expect(t.rejected).toBe(sums.rejected);
  expect(t.received).toBe(t.served + t.errored + t.cancelled + snap.workloadPending);
  // No report went out (no REPORT_ADDR), so the per-report counters equal the totals.
  expect(snap.counters).toEqual({ received: t.received, served: t.served, errored: t.errored, cancelled: t.cancelled, rejected: t.rejected });
  expect(snap.numRequestsReceived).toBe(TOTAL - byOutcome.rejected.length);

  // /delete_requests/: each request_idx exactly once, success for served/cancelled, failure for errored/rejected.
  const succeeded = ledger.deleteSucceeded.peek(Infinity);
  const failed = ledger.deleteFailed.peek(Infinity);
  expect(succeeded.length + failed.length).toBe(TOTAL);
  expect(new Set([...succeeded, ...failed]).size).toBe(TOTAL);
  const sorted = (a: number[]) => [...a].sort((x, y) => x - y);
  expect(sorted(succeeded)).toEqual(sorted([...byOutcome.served, ...byOutcome.cancelled]));
  expect(sorted(failed)).toEqual(sorted([...byOutcome.errored, ...byOutcome.rejected]));
  expect(w.ledger.inflight).toBe(0);

  // Nothing leaked toward the model: aborted requests' connections are closed.
  await waitFor(
    () => model.openConnections() <= IN_FLIGHT,
    2000,
    () => `model connections to drop to the pool's live ones (open: ${model.openConnections()})`,
  );
}, 60_000);
