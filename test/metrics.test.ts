import { spawnSync } from 'node:child_process';
import { request } from 'undici';
import { promtoolTool } from './helpers/external-tools.js';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultExtensions } from '../src/worker/extensions.js';
import { metricsExtension, refusedOutcome } from '../src/worker/metrics.js';
import { startEngine, type TestEngine, useFileEngine } from './helpers/engine.js';
import {
  clientAgent,
  echoHandler,
  postJson,
  startTestModel,
  startTestWorker,
  useResources,
  waitFor,
  type ModelHandler,
  type TestWorker,
} from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(32);
afterAll(() => agent.close());

let engine: TestEngine;
useFileEngine((e) => (engine = e));

const PROMTOOL = promtoolTool();
/** Exposition texts the tests scraped, checked by promtool in one test (skipped without promtool). */
const scraped: string[] = [];

/** `promtool check metrics` with the text on stdin: exit status and output. */
function promtool(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** Parse the exposition text into `name{sorted labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels = m[2]
      ? [...m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)]
          .map((l) => `${l[1]}=${l[2]}`)
          .sort()
          .join(',')
      : '';
    out.set(labels ? `${m[1]}{${labels}}` : m[1]!, Number(m[3]));
  }
  return out;
}

async function scrape(w: TestWorker): Promise<{ text: string; contentType: string; values: Map<string, number> }> {
  const r = await request(w.url + '/metrics', { dispatcher: agent });
  expect(r.statusCode).toBe(200);
  const text = await r.body.text();
  return { text, contentType: String(r.headers['content-type']), values: parseMetrics(text) };
}

const model: ModelHandler = async (_req, r, body) => {
  const p = JSON.parse(body.toString('utf8')) as { mode?: string; holdMs?: number };
  if (p.holdMs) await new Promise((res) => setTimeout(res, p.holdMs));
  if (p.mode === 'stream') {
    r.writeHead(200, { 'content-type': 'text/event-stream' });
    r.write('data: {"t":1}\n\n');
    setTimeout(() => r.end('data: [DONE]\n\n'), 20);
    return;
  }
  r.writeHead(p.mode === 'fail' ? 500 : 200, { 'content-type': 'application/json' }).end(p.mode === 'fail' ? '{"error":"boom"}' : '{"ok":true}');
};

describe('GET /metrics', () => {
  it('carries the counts of a known set of requests', async () => {
    const m = await res.add(startTestModel(model));
    const w = await res.add(
      startTestWorker({
        modelUrl: m.url,
        unsecured: false,
        reportAddr: engine.url,
        perf: 400,
        extensions: defaultExtensions({ sessions: { gcIntervalMs: 50 } }),
        timings: { reportTickMs: 50, reportIdleMs: 500 },
      }),
    );
    const send = (body: unknown) => postJson(w.url + '/echo', body, { dispatcher: agent });
    const auth = () => engine.authData({ url: w.url, cost: 40 });
    expect((await send({ auth_data: auth(), payload: { mode: 'ok' } })).status).toBe(200);
    expect((await send({ auth_data: auth(), payload: { mode: 'ok' } })).status).toBe(200);
    expect((await send({ auth_data: auth(), payload: { mode: 'stream' } })).status).toBe(200);
    expect((await send({ auth_data: auth(), payload: { mode: 'fail' } })).status).toBe(500);
    expect((await send({ auth_data: { ...auth(), signature: engine.sign('http://127.0.0.1:9/x') }, payload: {} })).status).toBe(401);
    expect((await send({ payload: {} })).status).toBe(422);
    expect((await send('{broken')).status).toBe(422);
    expect((await send({ auth_data: auth(), payload: {}, session_id: 'no-such-session' })).status).toBe(410);
    const sAuth = auth();
    const created = await postJson(w.url + '/session/create', { auth_data: sAuth, payload: {} }, { dispatcher: agent });
    expect(created.status).toBe(201);
    expect((await send({ auth_data: auth(), payload: { mode: 'ok' }, session_id: created.json.session_id })).status).toBe(200);
    expect((await postJson(w.url + '/session/end', { session_id: created.json.session_id, session_auth: sAuth }, { dispatcher: agent })).status).toBe(200);
    await waitFor(
      () => w.ledger.deleteSucceeded.size + w.ledger.deleteFailed.size === 0 && w.reporter.stats.deleteOk > 0,
      5000,
      () => 'deletes delivered',
    );

    const { text, contentType, values: v } = await scrape(w);
    expect(contentType).toContain('text/plain');
    expect(contentType).toContain('version=0.0.4');
    scraped.push(text);

    const get = (k: string) => v.get(k);
    expect(get('nodeworker_requests_total{outcome=success,route=/echo}')).toBe(4); // 3 + 1 inside the session
    expect(get('nodeworker_requests_total{outcome=error,route=/echo}')).toBe(1);
    expect(get('nodeworker_requests_total{outcome=rejected,route=/echo}')).toBe(1);
    expect(get('nodeworker_requests_total{outcome=invalid,route=/echo}')).toBe(2);
    expect(get('nodeworker_requests_total{outcome=invalid_session,route=/echo}')).toBe(1);
    expect(get('nodeworker_requests_total{outcome=success,route=/session/create}')).toBe(1);
    // Workload: 100 per /echo request (the handler's default), the session's cost 40.
    expect(get('nodeworker_workload_total{kind=received}')).toBe(5 * 100 + 40);
    expect(get('nodeworker_workload_total{kind=served}')).toBe(4 * 100 + 40);
    expect(get('nodeworker_workload_total{kind=errored}')).toBe(100);
    expect(get('nodeworker_workload_total{kind=rejected}')).toBe(100);
    expect(get('nodeworker_workload_total{kind=cancelled}')).toBe(0);
    expect(get('nodeworker_request_duration_seconds_count{route=/echo}')).toBe(5);
    expect(get('nodeworker_request_duration_seconds_bucket{le=+Inf,route=/echo}')).toBe(5);
    expect(get('nodeworker_time_to_first_byte_seconds_count{route=/echo}')).toBe(5);
    expect(get('nodeworker_request_duration_seconds_sum{route=/echo}')).toBeGreaterThan(0.02); // the stream's 20 ms
    // Buckets are cumulative in `le` order and end at the count.
    for (const h of ['nodeworker_request_duration_seconds', 'nodeworker_time_to_first_byte_seconds']) {
      const buckets = [...v.entries()]
        .filter(([k]) => k.startsWith(`${h}_bucket{`) && k.includes('route=/echo'))
        .map(([k, n]) => ({ le: Number(/le=([^,}]+)/.exec(k)![1]!.replace('+Inf', 'Infinity')), n }))
        .sort((a, b) => a.le - b.le);
      expect(buckets.length).toBeGreaterThan(5);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.n).toBeGreaterThanOrEqual(buckets[i - 1]!.n);
      expect(buckets.at(-1)).toEqual({ le: Infinity, n: get(`${h}_count{route=/echo}`) });
    }
    // The 20 ms stream lies above the 10 ms bucket.
    expect(get('nodeworker_request_duration_seconds_bucket{le=0.01,route=/echo}')).toBeLessThan(5);
    expect(get('nodeworker_requests_in_flight')).toBe(0);
    expect(get('nodeworker_requests_working')).toBe(0);
    expect(get('nodeworker_queue_depth')).toBe(0);
    expect(get('nodeworker_expected_queue_time_seconds')).toBe(0);
    expect(get('nodeworker_current_load')).toBe(0);
    expect(get('nodeworker_perf')).toBe(400);
    expect(get('nodeworker_loadtime_seconds')).toBeGreaterThan(0);
    expect(get('nodeworker_state{state=ready}')).toBe(1);
    for (const s of ['starting', 'loading', 'benchmarking', 'errored', 'draining']) expect(get(`nodeworker_state{state=${s}}`)).toBe(0);
    expect(get('nodeworker_error')).toBe(0);
    expect(get('nodeworker_sessions_open')).toBe(0);
    expect(get('nodeworker_sessions_max')).toBe(10);
    expect(get('nodeworker_sessions_closed_total{reason=ended}')).toBe(1);
    expect(get('nodeworker_delete_backlog{success=true}')).toBe(0);
    expect(get('nodeworker_delete_backlog{success=false}')).toBe(0);
    expect(get('nodeworker_reports_total{kind=worker_status,result=ok}')).toBeGreaterThanOrEqual(1);
    expect(get('nodeworker_reports_total{kind=delete_requests,result=ok}')).toBe(w.reporter.stats.deleteOk);
    expect(get('nodeworker_report_failures_total{kind=worker_status}')).toBe(0);
    expect([...v.keys()].some((k) => k.startsWith('nodeworker_build_info{version='))).toBe(true);
    // prom-client's default process metrics.
    expect(get('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(get('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('shows in-flight requests, the FIFO queue depth, expected queue time, and a growing delete backlog while the engine is down', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const m = await res.add(
      startTestModel(async (_q, r) => {
        await gate;
        r.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      }),
    );
    const down = await res.add(startEngine());
    const w = await res.add(
      startTestWorker({
        modelUrl: m.url,
        perf: 50,
        reportAddr: down.url,
        handlers: [echoHandler({ allowParallelRequests: false })],
        extensions: [metricsExtension()],
        timings: { reportTickMs: 50, reportIdleMs: 500, reportRetryDelayMs: 10 },
      }),
    );
    await down.refuse();
    const pending = [0, 1, 2].map(() => postJson(w.url + '/echo', { auth_data: engine.authData({ url: w.url }), payload: {} }, { dispatcher: agent }));
    await waitFor(() => w.ledger.inflight === 3 && m.bodies.length === 1);
    const during = (await scrape(w)).values;
    expect(during.get('nodeworker_requests_in_flight')).toBe(3);
    expect(during.get('nodeworker_requests_working')).toBe(3);
    expect(during.get('nodeworker_queue_depth')).toBe(2);
    expect(during.get('nodeworker_current_load')).toBe(300);
    expect(during.get('nodeworker_expected_queue_time_seconds')).toBe(300 / 50);
    release();
    expect((await Promise.all(pending)).map((r) => r.status)).toEqual([200, 200, 200]);
    await waitFor(() => w.reporter.stats.statusFailed > 0 && w.reporter.stats.deleteFailed > 0);
    const after = (await scrape(w)).values;
    expect(after.get('nodeworker_requests_in_flight')).toBe(0);
    expect(after.get('nodeworker_delete_backlog{success=true}')).toBe(3);
    expect(after.get('nodeworker_delete_backlog_bytes')).toBeGreaterThan(0);
    expect(after.get('nodeworker_report_failures_total{kind=worker_status}')).toBeGreaterThanOrEqual(1);
    expect(after.get('nodeworker_report_failures_total{kind=delete_requests}')).toBeGreaterThanOrEqual(1);
  });

  it('keeps two workers in one process apart (a registry each)', async () => {
    const m = await res.add(startTestModel(model));
    const a = await res.add(startTestWorker({ modelUrl: m.url, extensions: [metricsExtension()] }));
    const b = await res.add(startTestWorker({ modelUrl: m.url, extensions: [metricsExtension()] }));
    for (let i = 0; i < 3; i++)
      expect((await postJson(a.url + '/echo', { auth_data: engine.authData({ url: a.url }), payload: {} }, { dispatcher: agent })).status).toBe(200);
    expect((await postJson(b.url + '/echo', { auth_data: engine.authData({ url: b.url }), payload: {} }, { dispatcher: agent })).status).toBe(200);
    const [sa, sb] = [await scrape(a), await scrape(b)];
    expect(sa.values.get('nodeworker_requests_total{outcome=success,route=/echo}')).toBe(3);
    expect(sb.values.get('nodeworker_requests_total{outcome=success,route=/echo}')).toBe(1);
    scraped.push(sb.text);
  });

  it.skipIf(!PROMTOOL.available)('every scrape above passes `promtool check metrics`', () => {
    expect(scraped.length).toBeGreaterThan(0);
    for (const text of scraped) {
      const check = promtool(text);
      expect(check.status, check.output).toBe(0);
    }
  });

  it('names refusals by status', () => {
    expect([410, 413, 422, 503, 418].map(refusedOutcome)).toEqual(['invalid_session', 'invalid', 'invalid', 'draining', 'refused']);
  });
});
