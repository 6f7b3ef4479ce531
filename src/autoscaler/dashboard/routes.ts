import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { Clock } from '../clock.js';
import type { Engine } from '../engine.js';
import { DashboardCollector } from './collector.js';
import { ASSET_BASE, PAGE_HEADERS, dashboardHtml } from './page.js';
import { readReport, readTimelineSvg } from './report.js';
import { DASHBOARD_CSS } from './styles.js';
import { packagePath } from '../../common/package-root.js';
import { errorBody } from '../../common/protocol.js';

/**
 * The dashboard's routes, mounted on the autoscaler's app:
 *
 * - `GET /` and `GET /dashboard`: the page (no data in it);
 * - `GET /dashboard/assets/…`: the compiled client modules, its CSS, uPlot and eventsource-parser from node_modules;
 * - `GET /admin/dashboard/stream`: server-sent events (`init`, then one `tick` per sample);
 * - `GET /admin/dashboard/report` (+ `/timeline.svg`): the last `simulate` run (`report: null`
 *   and a `message` when there is none).
 *
 * The data routes live under `/admin/` so the app's admin-key check guards them; parameter
 * edits go through the admin API itself (`PATCH /admin/endpoints/:name`), so the page gets
 * exactly the API's validation.
 */

/** Options of the dashboard. */
export interface DashboardOptions {
  /** Output directory of `nodeworker simulate` whose report.json is shown (default `.artifacts/simulate`, from the working directory). */
  simulateDir?: string;
  /** Wall-clock ms between samples (default 1000). */
  sampleMs?: number;
  /** History rows kept per endpoint (default 3600). */
  historySize?: number;
}

/** What the dashboard needs from the running autoscaler. */
export interface DashboardDeps {
  engine: Engine;
  clock: Clock;
  providerKind: string;
}

/** A mounted dashboard; `close()` stops sampling and ends open streams. */
export interface MountedDashboard {
  collector: DashboardCollector;
  close(): void;
}

/** A stream whose client lags this many frames behind is closed; the page reconnects and gets a fresh init. */
const MAX_PENDING_FRAMES = 30;

/** Directory of the compiled client: dist/autoscaler/dashboard/client (tests run from src/ and serve the build). */
export function clientDir(): string | null {
  const dir = packagePath('dist', 'autoscaler', 'dashboard', 'client');
  return existsSync(join(dir, 'app.js')) ? dir : null;
}

function uplotDir(): string {
  return dirname(createRequire(import.meta.url).resolve('uplot'));
}

/**
 * eventsource-parser's ESM build, for the page's import map. It imports nothing, so it runs in the
 * browser as is; its source-map comment is dropped because the map is not served.
 */
function eventsourceParserModule(): string {
  // require.resolve gives the CommonJS entry; the ESM build sits beside it.
  const dir = dirname(createRequire(import.meta.url).resolve('eventsource-parser'));
  return readFileSync(join(dir, 'index.js'), 'utf8').replace(/^\/\/# sourceMappingURL=.*$/m, '');
}

function notFound(c: Context, field: string, message: string) {
  return c.json(errorBody(message, { [field]: message }), 404);
}

/** Add the dashboard's routes to `app` and start sampling. */
export function mountDashboard(app: Hono, deps: DashboardDeps, opts: DashboardOptions = {}): MountedDashboard {
  const reportDir = resolve(opts.simulateDir ?? '.artifacts/simulate');
  const collector = new DashboardCollector({
    engine: deps.engine,
    clock: deps.clock,
    providerKind: deps.providerKind,
    sampleMs: opts.sampleMs,
    historySize: opts.historySize,
    reportDir,
  });
  const vendor = uplotDir();
  const esParser = eventsourceParserModule();
  const client = clientDir();

  const page = (c: Context) => c.body(dashboardHtml(), 200, PAGE_HEADERS);
  app.get('/', page);
  app.get('/dashboard', page);

  const asset = (c: Context, body: string | Buffer, type: string) =>
    c.body(typeof body === 'string' ? body : new Uint8Array(body), 200, {
      'content-type': type,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
    });
  app.get(`${ASSET_BASE}/dashboard.css`, (c) => asset(c, DASHBOARD_CSS, 'text/css; charset=utf-8'));
  app.get(`${ASSET_BASE}/vendor/uPlot.esm.js`, (c) => asset(c, readFileSync(join(vendor, 'uPlot.esm.js')), 'text/javascript; charset=utf-8'));
  app.get(`${ASSET_BASE}/vendor/eventsource-parser.js`, (c) => asset(c, esParser, 'text/javascript; charset=utf-8'));
  app.get(`${ASSET_BASE}/vendor/uPlot.min.css`, (c) => asset(c, readFileSync(join(vendor, 'uPlot.min.css')), 'text/css; charset=utf-8'));
  app.get(`${ASSET_BASE}/:file`, (c) => {
    const file = c.req.param('file');
    // Only plain module names: no path can leave the client directory.
    if (!/^[a-z][a-z0-9-]*\.js$/.test(file)) return notFound(c, 'file', `no asset "${file}"`);
    if (!client)
      return c.json(errorBody('the dashboard client is not built', { file: 'run `npm run build` (tsc compiles src/autoscaler/dashboard/client)' }), 503);
    const path = join(client, file);
    if (!existsSync(path)) return notFound(c, 'file', `no asset "${file}"`);
    return asset(c, readFileSync(path), 'text/javascript; charset=utf-8');
  });

  app.get('/admin/dashboard/stream', (c) => {
    c.header('cache-control', 'no-store');
    c.header('x-accel-buffering', 'no');
    return streamSSE(c, async (stream) => {
      const pending: string[] = [];
      let closed = false;
      let wake: (() => void) | null = null;
      const unsubscribe = collector.subscribe({
        frame(json) {
          if (pending.length >= MAX_PENDING_FRAMES) closed = true;
          else pending.push(json);
          wake?.();
        },
        end() {
          closed = true;
          wake?.();
        },
      });
      stream.onAbort(() => {
        closed = true;
        wake?.();
      });
      try {
        await stream.writeSSE({ event: 'init', data: JSON.stringify(collector.init()) });
        while (!closed && !stream.aborted) {
          if (pending.length === 0) {
            await new Promise<void>((r) => (wake = r));
            wake = null;
            continue;
          }
          await stream.writeSSE({ event: 'tick', data: pending.shift()! });
        }
      } finally {
        unsubscribe();
      }
    });
  });

  // No report yet is a normal state of the page, not an error: 200 with `report: null` and why.
  app.get('/admin/dashboard/report', (c) => {
    const r = readReport(reportDir);
    return c.json(r.ok ? { dir: reportDir, report: r.report } : { dir: reportDir, report: null, message: r.message });
  });
  app.get('/admin/dashboard/report/timeline.svg', (c) => {
    const svg = readTimelineSvg(reportDir);
    if (svg === null) return notFound(c, 'report', `no timeline.svg in ${reportDir}`);
    return c.body(svg, 200, { 'content-type': 'image/svg+xml; charset=utf-8', 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff' });
  });

  collector.start();
  return { collector, close: () => collector.close() };
}
