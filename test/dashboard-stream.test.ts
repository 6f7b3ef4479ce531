import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { generateRsaKeyPair } from '../src/common/signature.js';
import { FakeClock } from '../src/autoscaler/clock.js';
import { engineTimingSchema } from '../src/autoscaler/config.js';
import { Engine } from '../src/autoscaler/engine.js';
import { createApp } from '../src/autoscaler/http.js';
import { mountDashboard } from '../src/autoscaler/dashboard/routes.js';
import { endpointSchema } from '../src/autoscaler/params.js';
import { SimulatedProvider } from '../src/autoscaler/providers/simulated.js';
import type { Frame, InitFrame, SampleColumns } from '../src/autoscaler/dashboard/client/frames.js';
import { DashboardModel } from '../src/autoscaler/dashboard/client/model.js';
import { plannedPerfNote } from '../src/autoscaler/dashboard/client/planned-perf.js';
import { SseParser } from '../src/autoscaler/dashboard/client/sse.js';
import { SseDecoder } from '../src/client/stream.js';
import { demoEndpoint } from '../src/autoscaler/dashboard/demo.js';
import { SampleRing } from '../src/autoscaler/dashboard/ring.js';
import { startAutoscaler } from '../src/autoscaler/server.js';
import { runSimulateCli } from '../src/autoscaler/simulate-cli.js';
import { useDashboardScope } from './helpers/dashboard.js';
import { CODE_TRACE } from './helpers/trace.js';

/**
 * The dashboard's server side over real HTTP on loopback: the page and its assets, the
 * admin-key guard, the event stream (an init, then deltas that rebuild the server's state
 * exactly, history capped by the ring), rejected load, and the last simulate report read from
 * a real `simulate` run. The browser itself is driven in dashboard.test.ts.
 */

const ADMIN = 'dashboard-admin-key-1';
const TRACE = CODE_TRACE;

const silent = () => createLogger('dashboard-test', { level: 'silent' });
const { tmp, demo, defer } = useDashboardScope({
  prefix: 'dashboard-test-',
  adminKey: ADMIN,
  logName: 'dashboard-test',
  defaults: { bootSeconds: 0.3, loadSeconds: 0.8 },
});

async function waitFor<T>(what: string, fn: () => T | undefined | false | null | Promise<T | undefined | false | null>, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A live stream read the way the page reads it: fetch + the page's SSE parser + the page's model. */
async function openStream(url: string) {
  const abort = new AbortController();
  const res = await fetch(`${url}/admin/dashboard/stream`, { headers: { authorization: `Bearer ${ADMIN}` }, signal: abort.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const model = new DashboardModel();
  const frames: Frame[] = [];
  let raw = '';
  const parser = new SseParser();
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const done = (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        const text = decoder.decode(value, { stream: true });
        raw += text;
        for (const e of parser.push(text)) {
          const frame = JSON.parse(e.data) as Frame;
          expect(e.event).toBe(frame.kind);
          frames.push(frame);
          model.apply(frame);
        }
      }
    } catch {
      // aborted by the test
    }
  })();
  defer(async () => {
    abort.abort();
    await done;
  });
  return { model, frames, raw: () => raw, close: () => abort.abort() };
}

async function initFrame(url: string): Promise<InitFrame> {
  const abort = new AbortController();
  const res = await fetch(`${url}/admin/dashboard/stream`, { headers: { authorization: `Bearer ${ADMIN}` }, signal: abort.signal });
  const parser = new SseParser();
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error('stream ended before its init frame');
    const events = parser.push(decoder.decode(value, { stream: true }));
    if (events.length > 0) {
      abort.abort();
      expect(events[0]!.event).toBe('init');
      return JSON.parse(events[0]!.data) as InitFrame;
    }
  }
}

describe('dashboard pieces', () => {
  it('the history ring keeps the last rows, oldest first, in fixed memory', () => {
    const ring = new SampleRing(3);
    const row = (t: number) => ({
      t,
      load: t * 10,
      capacity: 0,
      target: null,
      queued: 0,
      qp50: null,
      qp99: t,
      rejected: 0,
      created: 0,
      loading: 0,
      ready: t,
      inactive: 0,
      starting: 0,
      errored: 0,
    });
    expect(ring.columns().t).toEqual([]);
    for (let t = 1; t <= 5; t++) ring.push(row(t));
    const cols = ring.columns();
    expect(ring.size).toBe(3);
    expect(cols.t).toEqual([3, 4, 5]);
    expect(cols.load).toEqual([30, 40, 50]);
    expect(cols.target).toEqual([null, null, null]);
    expect(cols.ready).toEqual([3, 4, 5]);
    expect(() => new SampleRing(0)).toThrow(/positive integer/);
  });

  it("the page's event-stream parser handles split chunks, CRLF, comments and multi-line data", () => {
    const p = new SseParser();
    expect(p.push('event: init\nda')).toEqual([]);
    expect(p.push('ta: {"a":1}\n')).toEqual([]);
    expect(p.push('\n: a comment\n\nevent:tick\r\ndata: x\r')).toEqual([{ event: 'init', data: '{"a":1}' }]);
    expect(p.push('\ndata: y\r\n\r\ndata:z\n\n')).toEqual([
      { event: 'tick', data: 'x\ny' },
      { event: 'message', data: 'z' },
    ]);
  });

  it('the page and the TS client parse server-sent events alike (one parser, eventsource-parser)', () => {
    // Hostile input: CR-only line ends split across chunks, an unknown field, a bad retry,
    // "data" without a colon, an event block with no data, and the last event with no blank line.
    const text = 'event: a\rdata: 1\r\rbogus: x\nretry: soon\ndata\n\nevent: nodata\n\n: c\ndata:2\r\ndata: 3\r\n\r\nevent: last\ndata: end';
    const page = new SseParser();
    const client = new SseDecoder();
    const fromPage: Array<{ event: string; data: string }> = [];
    const fromClient: Array<{ event: string; data: string }> = [];
    for (let i = 0; i < text.length; i += 3) {
      fromPage.push(...page.push(text.slice(i, i + 3)));
      fromClient.push(...client.push(text.slice(i, i + 3)).map((e) => ({ event: e.event, data: e.data })));
    }
    const expected = [
      { event: 'a', data: '1' },
      { event: 'message', data: '' },
      { event: 'message', data: '2\n3' },
    ];
    expect(fromPage).toEqual(expected);
    expect(fromClient).toEqual(expected);
    // The client also delivers the last event when the stream ends without its blank line; the
    // page's stream never ends that way (the server ends every frame).
    expect(client.end().map((e) => ({ event: e.event, data: e.data }))).toEqual([{ event: 'last', data: 'end' }]);
    expect(page.push('\n\n')).toEqual([{ event: 'last', data: 'end' }]);
  });
});

describe('dashboard over HTTP', () => {
  it('serves the page, its assets and uPlot without a key; refuses data without the admin key', async () => {
    const d = await demo({ workers: 1 });
    const url = d.autoscaler.url;
    for (const path of ['/', '/dashboard', '/dashboard/']) {
      const res = await fetch(url + path);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'self'");
      expect(csp).toContain("frame-ancestors 'none'");
      const html = await res.text();
      expect(html).toContain('<script type="module" src="/dashboard/assets/app.js">');
      expect(html).not.toContain(ADMIN);
    }
    const uplot = await fetch(`${url}/dashboard/assets/vendor/uPlot.esm.js`);
    expect(uplot.status).toBe(200);
    expect(uplot.headers.get('content-type')).toMatch(/javascript/);
    expect(await uplot.text()).toContain('export { uPlot as default }');
    expect((await fetch(`${url}/dashboard/assets/vendor/uPlot.min.css`)).status).toBe(200);
    // The page's SSE parser is eventsource-parser's ESM build, named in the import map (issue 25 item 12).
    const esp = await fetch(`${url}/dashboard/assets/vendor/eventsource-parser.js`);
    expect(esp.status).toBe(200);
    expect(esp.headers.get('content-type')).toMatch(/javascript/);
    const espText = await esp.text();
    expect(espText).toMatch(/export\s*\{[^}]*createParser/);
    expect(espText).not.toMatch(/^\s*import\b/m); // runs in the browser with no further module to resolve
    expect(espText).not.toContain('sourceMappingURL');
    const html = await (await fetch(`${url}/dashboard`)).text();
    expect(html).toContain('"eventsource-parser":"/dashboard/assets/vendor/eventsource-parser.js"');
    const css = await fetch(`${url}/dashboard/assets/dashboard.css`);
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
    expect(await css.text()).toContain('.field-error');

    for (const bad of ['nope.js', '..%2F..%2Fpackage.json', 'App.js', 'app.ts']) {
      const res = await fetch(`${url}/dashboard/assets/${bad}`);
      expect(res.status).toBe(404);
      expect((await res.json()).fields).toHaveProperty('file');
    }

    for (const path of ['/admin/dashboard/stream', '/admin/dashboard/report']) {
      const none = await fetch(url + path);
      expect(none.status).toBe(401);
      expect((await none.json()).fields).toHaveProperty('authorization');
      const wrong = await fetch(url + path, { headers: { authorization: 'Bearer not-the-key' } });
      expect(wrong.status).toBe(401);
    }
  });

  it("streams an init then deltas that rebuild the server's state exactly, history capped, no secrets", async () => {
    const d = await demo({ workers: 3, requestsPerSecond: 10 });
    // Recreated with a small, fast ring: the options reach the dashboard through startAutoscaler.
    const as = await startAutoscaler({
      config: {
        provider: { kind: 'simulated', defaults: { boot_time: 0.2, load_time: 0.6 } },
        endpoints: [demoEndpoint('small', 'small-client-key', 2)],
      },
      dataDir: tmp(),
      adminKey: ADMIN,
      logger: silent(),
      dashboard: { sampleMs: 100, historySize: 5 },
    });
    defer(() => as.close());

    for (const url of [d.autoscaler.url, as.url]) {
      const s = await openStream(url);
      await waitFor('the init and a few ticks', () => s.frames.length >= 4);
      expect(s.frames[0]!.kind).toBe('init');
      expect(s.frames.slice(1).every((f) => f.kind === 'tick')).toBe(true);
      // A fresh init is the state as of the last sample; the deltas must have rebuilt the same.
      let compared = false;
      for (let attempt = 0; attempt < 5 && !compared; attempt++) {
        const fresh = await initFrame(url);
        await waitFor('the stream to reach the fresh init', () => s.model.now >= fresh.now);
        if (s.model.now !== fresh.now) continue;
        compared = true;
        expect(new Map(fresh.workers.map((w) => [w.id, w]))).toEqual(s.model.workers);
        expect(new Map(fresh.endpoints.map((e) => [e.name, e]))).toEqual(s.model.endpoints);
        expect(new Map(Object.entries(fresh.history))).toEqual(s.model.history);
      }
      expect(compared).toBe(true);
    }

    const s = await openStream(as.url);
    // Both load; the policy then keeps one ready (min_load 1, no traffic) and stops the other.
    await waitFor(
      'two loaded workers in the stream',
      () => [...s.model.workers.values()].filter((w) => w.state === 'ready' || w.state === 'inactive').length === 2,
    );
    await waitFor('the ring to fill', () => (s.model.history.get('small')?.t.length ?? 0) >= 5);
    const cols = s.model.history.get('small') as SampleColumns;
    expect(cols.t.length).toBe(5);
    for (let i = 1; i < cols.t.length; i++) expect(cols.t[i]!).toBeGreaterThan(cols.t[i - 1]!);
    const ready = [...as.engine.workers.values()].filter((w) => w.state === 'ready').length;
    expect(ready).toBeGreaterThanOrEqual(1);
    expect(cols.ready.at(-1)).toBe(ready);
    expect(cols.inactive.at(-1)).toBe(2 - ready);
    const ids = [...as.engine.workers.keys()].sort((a, b) => a - b);
    expect([...s.model.workers.keys()].sort((a, b) => a - b)).toEqual(ids);
    for (const w of s.model.workers.values()) {
      const rec = as.engine.workers.get(w.id)!;
      expect(w.state).toBe(rec.state);
      expect(w.type).toBe(rec.typeKey);
      expect(w.perf).toBeCloseTo(rec.maxPerf, 1);
    }
    // Deltas: once the fleet is settled and idle, ticks stop resending unchanged workers.
    const settled = s.frames.length;
    await waitFor('more ticks', () => s.frames.length >= settled + 3);
    const last = s.frames.at(-1)!;
    expect(last.kind === 'tick' && last.upsert.length).toBe(0);
    // Parameters shown are the engine's, and follow an admin change.
    const patch = await fetch(`${as.url}/admin/endpoints/small`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ target_util: 0.5 }),
    });
    expect(patch.status).toBe(200);
    await waitFor('the new target_util in the stream', () => s.model.endpoints.get('small')?.params.target_util === 0.5);
    // A floor no fleet of max_workers can serve: the chart's target is drawn at what max_workers
    // of the fastest known machine reach, not at the floor (issue 25 item 9).
    const floor = await fetch(`${as.url}/admin/endpoints/small`, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ min_load: 1e9 }),
    });
    expect(floor.status).toBe(200);
    const reach = () => {
      const ep = s.model.endpoints.get('small');
      const perfs = [
        ...[...s.model.workers.values()].map((w) => w.perf ?? 0),
        ...(ep?.workergroups.flatMap((g) => g.machine_types.map((m) => m.perf ?? 0)) ?? []),
      ];
      return 2 * Math.max(0, ...perfs);
    };
    const lastTarget = () => (s.model.history.get('small') as SampleColumns | undefined)?.target.at(-1) ?? null;
    // Before issue 25 the drawn target went to 1e9 here; now it settles at the reach, and stays there.
    await waitFor('the target drawn at the reach of max_workers', () => {
      const t = lastTarget();
      return t !== null && reach() > 0 && Math.abs(t - reach()) <= 1;
    });
    const more = s.frames.length;
    await waitFor('two more ticks', () => s.frames.length >= more + 2);
    expect(lastTarget()!).toBeLessThanOrEqual(reach() + 1);

    // Deleting the endpoint: removed from the stream, its workers forgotten once the engine drops them.
    const del = await fetch(`${as.url}/admin/endpoints/small`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } });
    expect(del.status).toBe(200);
    await waitFor('the endpoint to leave the stream', () => !s.model.endpoints.has('small') && !s.model.history.has('small'));
    await waitFor('its workers shown destroyed', () => [...s.model.workers.values()].every((w) => w.state === 'destroyed'));

    const raw = s.raw();
    expect(raw).not.toContain(ADMIN);
    expect(raw).not.toContain('small-client-key');
    for (const w of as.engine.workers.values()) expect(raw).not.toContain(w.mtoken);
  });

  it("says what a type's planned perf is: the mean of its workers' benchmarks scaled by measured throughput, not a worker's perf (issue 25 item 9)", async () => {
    const as = await startAutoscaler({
      config: {
        provider: { kind: 'simulated', defaults: { boot_time: 0.2, load_time: 0.4 } },
        endpoints: [demoEndpoint('planned', 'planned-client-key', 2)],
      },
      dataDir: tmp(),
      adminKey: ADMIN,
      logger: silent(),
      dashboard: { sampleMs: 100, historySize: 5 },
    });
    defer(() => as.close());
    const benchmarked = await waitFor('a benchmarked worker', () => [...as.engine.workers.values()].find((w) => w.maxPerf > 0));
    const key = benchmarked.typeKey;
    const mean = as.engine.perf.get(key)!.benchmarkMean;
    // Saturated throughput measured at 0.9 of the benchmark (a throttled GPU): the engine now plans
    // with less than any of the type's workers benchmarked.
    for (let i = 0; i < 6; i++) as.engine.perf.addMeasured(key, 0.9 * mean);
    const typeName = key.split('/')[1]!;
    const machine = await waitFor('the scaled estimate in an init frame', async () => {
      const init = await initFrame(as.url);
      const m = init.endpoints.find((e) => e.name === 'planned')!.workergroups[0]!.machine_types.find((t) => t.name === typeName)!;
      return m.perf_basis.source === 'benchmarks+measured' ? { m, init } : null;
    });
    const { m, init } = machine;
    expect(m.perf).toBeCloseTo(0.9 * mean, 1);
    expect(m.perf_basis.benchmark_mean).toBeCloseTo(as.engine.perf.get(key)!.benchmarkMean, 1);
    expect(m.perf_basis.benchmarks).toBe(as.engine.perf.get(key)!.benchmarks);
    expect(m.perf_basis.measured).toBe(6);
    expect(m.perf_basis.sustained).toBeCloseTo(0.9 * mean, 1);
    // The figure matches no worker's perf, and the page says why, naming the figure that does relate.
    const perfs = init.workers.filter((w) => w.type === key && w.perf > 0).map((w) => w.perf);
    expect(perfs.length).toBeGreaterThan(0);
    for (const p of perfs) expect(Math.abs(p - m.perf!)).toBeGreaterThan(1);
    const note = plannedPerfNote(m);
    expect(note).toContain(`mean benchmark ${Math.round(m.perf_basis.benchmark_mean!)}`);
    expect(note).toContain('× 0.9,');
    expect(note).toContain('measured while saturated (');
    // Every other type of the fleet says where its figure comes from too (config or not yet known).
    for (const t of init.endpoints[0]!.workergroups[0]!.machine_types) {
      expect(['benchmarks', 'benchmarks+measured', 'expected_perf', 'unknown']).toContain(t.perf_basis.source);
      expect(plannedPerfNote(t)).not.toBe('');
    }
  });

  it('planned-perf notes for each source', () => {
    const basis = { benchmarks: 0, benchmark_mean: null, measured: 0, sustained: null };
    expect(plannedPerfNote({ perf: 1042, perf_basis: { ...basis, source: 'benchmarks', benchmarks: 1, benchmark_mean: 1042 } })).toBe(
      'mean benchmark of 1 worker',
    );
    expect(plannedPerfNote({ perf: 500, expected_perf: 500, perf_basis: { ...basis, source: 'expected_perf' } })).toMatch(/^expected_perf from the config/);
    expect(plannedPerfNote({ perf: null, perf_basis: { ...basis, source: 'unknown' } })).toMatch(/^unknown until/);
    expect(plannedPerfNote({ perf: 980, perf_basis: { ...basis, source: 'measured', measured: 7, sustained: 980 } })).toMatch(/7 samples\); no benchmark yet$/);
    expect(
      plannedPerfNote({ perf: 980, perf_basis: { source: 'benchmarks+measured', benchmarks: 3, benchmark_mean: 1042, measured: 12, sustained: 980 } }),
    ).toBe('mean benchmark 1042 of 3 workers × 0.94, from the throughput measured while saturated (980, 12 samples)');
  });

  it('charts rejected load: requests that time out in the engine queue', async () => {
    const as = await startAutoscaler({
      config: {
        // No machine can be recruited: every request waits, then times out.
        endpoints: [{ name: 'empty', api_key: 'empty-client-key', max_workers: 0, cold_workers: 0 }],
      },
      dataDir: tmp(),
      adminKey: ADMIN,
      logger: silent(),
      dashboard: { sampleMs: 200 },
    });
    defer(() => as.close());
    const s = await openStream(as.url);
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${as.url}/route/`, {
        method: 'POST',
        body: JSON.stringify({ endpoint: 'empty', api_key: 'empty-client-key', cost: 50, replay_timeout: 0.3 }),
      });
      expect((await res.json()).status).toBe('queued');
    }
    await waitFor('the queue in the history', () => s.model.history.get('empty')?.queued.some((q) => q === 4));
    await waitFor('rejected load in the history', () => s.model.history.get('empty')?.rejected.some((r) => (r ?? 0) > 0));
    const cols = s.model.history.get('empty')!;
    // 4 × 50 load timed out; each sample divides what it saw by at least one second.
    const total = cols.rejected.reduce<number>((a, r) => a + (r ?? 0), 0);
    expect(total).toBeGreaterThan(0);
    expect(total).toBeLessThanOrEqual(200);
    expect(cols.qp50.every((q) => q === null)).toBe(true);
    await waitFor('the timed-out counter', () => s.model.endpoints.get('empty')?.requests.timedOut === 4);
  });

  it('shows the last simulate run: report.json and timeline.svg, refreshed when the file changes', async () => {
    const dir = tmp();
    const d = await demo({ workers: 1, simulateDir: join(dir, 'sim') });
    const get = (path: string) => fetch(d.autoscaler.url + path, { headers: { authorization: `Bearer ${ADMIN}` } });
    const missing = await get('/admin/dashboard/report');
    expect(missing.status).toBe(200);
    const none = await missing.json();
    expect(none.report).toBeNull();
    expect(none.message).toMatch(/no report\.json/);
    expect((await get('/admin/dashboard/report/timeline.svg')).status).toBe(404);

    const s = await openStream(d.autoscaler.url);
    await waitFor('the init', () => s.frames.length >= 1);
    expect(s.model.report).toBeNull();

    // A real run on the first 1,500 requests of the shared trace (CC-BY 4.0, see its README).
    const trace = join(dir, 'trace.csv');
    writeFileSync(trace, readFileSync(TRACE, 'utf8').split('\n').slice(0, 1501).join('\n') + '\n');
    const write = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      expect(await runSimulateCli(['--trace', trace, '--out', join(dir, 'sim')])).toBe(0);
    } finally {
      process.stdout.write = write;
    }
    const ok = await get('/admin/dashboard/report');
    expect(ok.status).toBe(200);
    const { report } = (await ok.json()) as { report: Record<string, any> };
    const onDisk = JSON.parse(readFileSync(join(dir, 'sim', 'report.json'), 'utf8'));
    expect(report).toEqual(onDisk);
    expect(report.trace.requests).toBe(1500);
    expect(report.trace.attribution).toMatch(/CC-BY/);
    const svg = await get('/admin/dashboard/report/timeline.svg');
    expect(svg.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect((await svg.text()).startsWith('<svg')).toBe(true);

    const first = await waitFor('the report stamp in the stream', () => s.model.report);
    utimesSync(join(dir, 'sim', 'report.json'), new Date(), new Date(Date.now() + 5000));
    await waitFor('a new stamp after the file changed', () => s.model.report && s.model.report.mtimeMs !== first.mtimeMs);

    writeFileSync(join(dir, 'sim', 'report.json'), '{"half": ');
    const broken = await (await get('/admin/dashboard/report')).json();
    expect(broken.report).toBeNull();
    expect(broken.message).toMatch(/not valid JSON/);
  });

  it("mounts on the engine's app: streams that go away stop being fed, close() ends the rest; a frozen fake clock reads sanely", async () => {
    const clock = new FakeClock(5_000_000);
    const provider = new SimulatedProvider({ clock });
    const engine = new Engine({
      clock,
      provider,
      privateKey: generateRsaKeyPair(2048).privateKeyPem,
      logger: silent(),
      timing: engineTimingSchema.parse({}),
      reportAddrs: () => ['http://127.0.0.1:1'],
    });
    engine.addEndpoint(endpointSchema.parse({ name: 'frozen', api_key: 'frozen-client-key' }));
    engine.route({ endpoint: 'frozen', api_key: 'frozen-client-key', cost: 300 });
    const app = createApp(engine, { adminKey: ADMIN, publicKeyPem: '', logger: silent() });
    const dashboard = mountDashboard(app, { engine, clock, providerKind: provider.kind }, { sampleMs: 50, simulateDir: tmp() });
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
    });
    defer(async () => {
      dashboard.close();
      engine.close();
      await provider.close();
      await new Promise<void>((r) => {
        server.close(() => r());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const a = await openStream(url);
    const b = await openStream(url);
    await waitFor('both streams fed', () => a.frames.length >= 3 && b.frames.length >= 3);
    expect(dashboard.collector.subscribers).toBe(2);
    a.close();
    await waitFor('the closed stream forgotten', () => dashboard.collector.subscribers === 1);
    const seen = b.frames.length;
    await waitFor('the other still fed', () => b.frames.length >= seen + 2);

    // Engine time never moves: every row is stamped the same, and no division by a zero interval blows a rate up.
    const cols = b.model.history.get('frozen')!;
    expect(new Set(cols.t)).toEqual(new Set([5000]));
    expect(cols.load.every((l) => typeof l === 'number' && l >= 0 && l <= 300)).toBe(true);
    expect(cols.rejected.every((r) => r === 0)).toBe(true);
    expect(cols.queued.at(-1)).toBe(1);

    dashboard.close();
    await waitFor('close() to end the open stream', () => dashboard.collector.subscribers === 0);
    const ended = b.frames.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(b.frames.length).toBe(ended);
  });

  it('can be left out', async () => {
    const as = await startAutoscaler({ config: {}, dataDir: tmp(), adminKey: ADMIN, logger: silent(), dashboard: false });
    defer(() => as.close());
    expect((await fetch(`${as.url}/dashboard`)).status).toBe(404);
    expect((await fetch(`${as.url}/admin/dashboard/stream`, { headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(404);
  });
});
