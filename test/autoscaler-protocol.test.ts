import { describe, expect, it } from 'vitest';
import { Protocol } from '../src/autoscaler/protocol.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/** The protocol answers alone: a registry, no scaler (its two hooks are recorded). */

function setup() {
  const { reg, clock } = testRegistry();
  reg.addEndpoint(endpointCfg('a'));
  reg.addEndpoint(endpointCfg('b'));
  const hooks: string[] = [];
  const proto = new Protocol(reg, {
    finishDrain: (w) => hooks.push(`finishDrain ${w.id}`),
    checkFailedWorker: (id) => hooks.push(`check ${id}`),
  });
  const w = addTestWorker(reg, 'a');
  const report = (over: Record<string, unknown> = {}) =>
    proto.workerStatus({ id: w.id, mtoken: w.mtoken, loadtime: 2, max_perf: 100, cur_load: 0, url: 'http://127.0.0.1:9', ...over });
  const route = (over: Record<string, unknown> = {}) => proto.route({ endpoint: 'a', api_key: 'a-key-1234', cost: 100, ...over });
  return { reg, clock, proto, hooks, w, report, route };
}

describe('protocol', () => {
  it('refuses bad bodies and wrong keys naming the field', () => {
    const t = setup();
    const bad = t.proto.route({ endpoint: 'a', api_key: 'a-key-1234', cost: 'x' });
    expect(bad.status).toBe(400);
    expect((bad.body as { fields: Record<string, string> }).fields).toHaveProperty('cost');
    const key = t.route({ api_key: 'b-key-1234' });
    expect([key.status, Object.keys((key.body as { fields: object }).fields)]).toEqual([401, ['api_key']]);
    const tok = t.proto.workerStatus({ id: t.w.id, mtoken: 'wrong', loadtime: 1 });
    expect([tok.status, Object.keys((tok.body as { fields: object }).fields)]).toEqual([401, ['mtoken']]);
    const who = t.proto.deleteRequests({ worker_id: 999, mtoken: 'x', request_idxs: [1] });
    expect([who.status, Object.keys((who.body as { fields: object }).fields)]).toEqual([404, ['worker_id']]);
    const never = t.route({ request_idx: 12345 });
    expect([never.status, Object.keys((never.body as { fields: object }).fields)]).toEqual([404, ['request_idx']]);
  });

  it('queues with no worker, routes once a report makes one ready, and frees it at /delete_requests/', () => {
    const t = setup();
    const q = t.route();
    expect(q.status).toBe(200);
    expect(q.body).toMatchObject({ status: 'queued', request_idx: 1 });
    expect(t.report().status).toBe(200);
    expect(t.w.state).toBe('ready');
    // The queued request went to the worker that became ready; the poll collects it.
    const got = t.route({ request_idx: 1 });
    expect(got.body).toMatchObject({ request_idx: 1, url: 'http://127.0.0.1:9' });
    expect(t.reg.endpoints.get('a')!.router.outstanding(t.w.id)).toBe(1);
    const del = t.proto.deleteRequests({ worker_id: t.w.id, mtoken: t.w.mtoken, request_idxs: [1] });
    expect(del.body).toEqual({ ok: true, deleted: 1 });
    expect(t.reg.endpoints.get('a')!.router.outstanding(t.w.id)).toBe(0);
  });

  it('reaches the scaler only through its hooks: a failover re-route checks the worker, a drained worker is handed back', () => {
    const t = setup();
    t.report();
    const first = t.route();
    expect(first.body).toMatchObject({ request_idx: 1, url: 'http://127.0.0.1:9' });
    t.route({ request_idx: 1 });
    expect(t.hooks).toEqual([`check ${t.w.id}`]);
    t.w.draining = true;
    t.proto.deleteRequests({ worker_id: t.w.id, mtoken: t.w.mtoken, request_idxs: [1] });
    expect(t.hooks).toEqual([`check ${t.w.id}`, `finishDrain ${t.w.id}`]);
  });

  it('lists an endpoint workers for its own key or by id, numbers only', () => {
    const t = setup();
    t.report();
    const list = t.proto.endpointWorkers({ id: 1, api_key: 'a-key-1234' });
    expect(list.status).toBe(200);
    expect(list.body).toEqual([expect.objectContaining({ id: t.w.id, status: 'ready', perf: 100 })]);
    expect(t.proto.endpointWorkers({ id: 1, api_key: 'b-key-1234' }).status).toBe(401);
    expect(t.proto.endpointWorkers({ id: 'zz', api_key: 'a-key-1234' }).status).toBe(404);
  });
});
