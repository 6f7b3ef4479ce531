import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { errorBody } from '../common/protocol.js';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import { type Engine, EngineError, sameSecret, workerView } from './engine.js';
import { endpointPatchSchema, endpointSchema, fieldErrors, workergroupPatchSchema, workergroupSchema, type EndpointPatch } from './params.js';
import type { Outcome } from './wire.js';
import { mountConsole } from './console.js';
import type { Logger } from '../common/log.js';

/**
 * The engine's HTTP API (hono). Protocol routes (PROTOCOL §4, §9) and the admin API under
 * `/admin/`, guarded by `Authorization: Bearer <admin key>`. Every 4xx body is
 * `{error, fields: {field: message}}`; a body that is not JSON is a 400 naming `body`.
 */

export interface HttpOptions {
  adminKey: string;
  /** The account key of the console calls (console.ts); without it they are not served. */
  accountKey?: string;
  publicKeyPem: string;
  logger: Logger;
  /** Largest accepted body (default 1 MiB). */
  maxBodyBytes?: number;
}

type Parsed = { ok: true; value: unknown } | { ok: false; res: Response };

async function readJson(c: Context): Promise<Parsed> {
  let text: string;
  try {
    text = await c.req.text();
  } catch {
    return { ok: false, res: c.json(errorBody('unreadable body', { body: 'could not be read' }), 400) };
  }
  if (text.trim() === '') return { ok: true, value: {} };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, res: c.json(errorBody('invalid JSON', { body: 'not valid JSON' }), 400) };
  }
}

function send(c: Context, out: Outcome): Response {
  return c.json(out.body as object, out.status as ContentfulStatusCode);
}

function engineError(c: Context, err: unknown): Response {
  if (err instanceof EngineError) return c.json(errorBody(err.message, err.fields), err.status as ContentfulStatusCode);
  throw err;
}

function invalid(c: Context, error: z.ZodError, what: string): Response {
  return c.json(errorBody(`invalid ${what}`, fieldErrors(error)), 400);
}

/** Prometheus text of the engine's own health (no secrets, so no key needed, as the worker's /metrics). */
function engineMetrics(engine: Engine): string {
  const h = engine.storeHealth();
  const lines: string[] = [];
  const g = (name: string, help: string, type: 'gauge' | 'counter', v: number) =>
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${v}`);
  g('autoscaler_endpoints', 'Endpoints the engine manages.', 'gauge', engine.endpoints.size);
  g('autoscaler_workers', 'Workers the engine knows (destroyed ones kept a while included).', 'gauge', engine.workers.size);
  if (h) {
    g('autoscaler_store_ok', '1 when the state journal is written, 0 while writes fail (routing goes on from memory).', 'gauge', h.ok ? 1 : 0);
    g('autoscaler_store_write_failures_total', 'Failed saves and id reservations since start.', 'counter', h.failures);
    g('autoscaler_store_pending_records', 'Records kept in memory that are not yet durable.', 'gauge', h.pendingRecords);
    g('autoscaler_store_skipped_records', 'Damaged journal records skipped at start (--repair).', 'gauge', h.skippedRecords);
    g('autoscaler_store_ids_beyond_reservation', '1 while ids are handed out past the last durable reservation.', 'gauge', h.idsBeyondReservation ? 1 : 0);
  }
  return `${lines.join('\n')}\n`;
}

/** Build the app: protocol routes, `/pubkey/`, `/healthz` and `/admin/…`. */
export function createApp(engine: Engine, opts: HttpOptions): Hono {
  // strict: false: each path answers with and without its trailing slash (PyWorker posts to /worker_status/).
  const app = new Hono({ strict: false });
  const limit = bodyLimit({
    maxSize: opts.maxBodyBytes ?? 1024 * 1024,
    onError: (c) => c.json(errorBody('body too large', { body: `larger than ${opts.maxBodyBytes ?? 1024 * 1024} bytes` }), 413),
  });
  app.use('*', limit);

  const protocol = (op: (raw: unknown) => Outcome) => async (c: Context) => {
    const body = await readJson(c);
    if (!body.ok) return body.res;
    return send(c, op(body.value));
  };
  app.post(
    '/route',
    protocol((b) => engine.route(b)),
  );
  app.post(
    '/worker_status',
    protocol((b) => engine.workerStatus(b)),
  );
  app.post(
    '/delete_requests',
    protocol((b) => engine.deleteRequests(b)),
  );
  app.post(
    '/get_endpoint_workers',
    protocol((b) => engine.endpointWorkers(b)),
  );
  app.get('/pubkey', (c) => c.text(opts.publicKeyPem, 200, { 'content-type': 'text/plain; charset=utf-8' }));
  // Routing works from memory even when the state cannot be written: still 200, with the store's health.
  app.get('/healthz', (c) => {
    const store = engine.storeHealth();
    return c.json({ ok: true, ...(store ? { store } : {}) });
  });
  app.get('/metrics', (c) => c.text(engineMetrics(engine), 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }));
  if (opts.accountKey) mountConsole(app, engine, { accountKey: opts.accountKey, adminKey: opts.adminKey });

  // ---- admin
  app.use('/admin/*', async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m?.[1]?.trim() ?? c.req.header('x-admin-key') ?? '';
    if (!given || !sameSecret(given, opts.adminKey)) {
      return c.json(errorBody('admin key missing or wrong', { authorization: 'expected "Bearer <admin key>"' }), 401);
    }
    await next();
  });

  app.get('/admin/status', (c) => c.json(engine.snapshot()));
  app.get('/admin/endpoints', (c) => c.json([...engine.endpoints.values()].map((ep) => engine.endpointView(ep))));
  app.post('/admin/endpoints', async (c) => {
    const body = await readJson(c);
    if (!body.ok) return body.res;
    const parsed = endpointSchema.safeParse(body.value);
    if (!parsed.success) return invalid(c, parsed.error, 'endpoint');
    try {
      const ep = engine.addEndpoint(parsed.data);
      return c.json(engine.endpointView(ep, true), 201);
    } catch (err) {
      return engineError(c, err);
    }
  });
  app.get('/admin/endpoints/:name', (c) => {
    const ep = engine.endpoints.get(c.req.param('name'));
    if (!ep) return c.json(errorBody('no such endpoint', { endpoint: `no endpoint "${c.req.param('name')}"` }), 404);
    return c.json(engine.endpointView(ep, true));
  });
  app.patch('/admin/endpoints/:name', async (c) => {
    const body = await readJson(c);
    if (!body.ok) return body.res;
    const parsed = endpointPatchSchema.safeParse(body.value);
    if (!parsed.success) return invalid(c, parsed.error, 'endpoint update');
    try {
      const ep = engine.updateEndpoint(c.req.param('name'), parsed.data as EndpointPatch);
      return c.json(engine.endpointView(ep, true));
    } catch (err) {
      return engineError(c, err);
    }
  });
  app.delete('/admin/endpoints/:name', (c) => {
    try {
      engine.removeEndpoint(c.req.param('name'));
      return c.json({ deleted: c.req.param('name') });
    } catch (err) {
      return engineError(c, err);
    }
  });
  app.get('/admin/endpoints/:name/workers', (c) => {
    if (!engine.endpoints.has(c.req.param('name'))) return c.json(errorBody('no such endpoint', { endpoint: `no endpoint "${c.req.param('name')}"` }), 404);
    return c.json(engine.workersOf(c.req.param('name')).map(workerView));
  });
  app.post('/admin/endpoints/:name/workergroups', async (c) => {
    const body = await readJson(c);
    if (!body.ok) return body.res;
    const parsed = workergroupSchema.safeParse(body.value);
    if (!parsed.success) return invalid(c, parsed.error, 'workergroup');
    try {
      return c.json(engine.addWorkergroup(c.req.param('name'), parsed.data), 201);
    } catch (err) {
      return engineError(c, err);
    }
  });
  app.patch('/admin/endpoints/:name/workergroups/:wg', async (c) => {
    const body = await readJson(c);
    if (!body.ok) return body.res;
    const parsed = workergroupPatchSchema.safeParse(body.value);
    if (!parsed.success) return invalid(c, parsed.error, 'workergroup update');
    try {
      return c.json(engine.updateWorkergroup(c.req.param('name'), c.req.param('wg'), parsed.data));
    } catch (err) {
      return engineError(c, err);
    }
  });
  app.delete('/admin/endpoints/:name/workergroups/:wg', (c) => {
    try {
      engine.removeWorkergroup(c.req.param('name'), c.req.param('wg'));
      return c.json({ deleted: c.req.param('wg') });
    } catch (err) {
      return engineError(c, err);
    }
  });

  app.notFound((c) => c.json(errorBody('no such route', { path: `${c.req.method} ${c.req.path}` }), 404));
  app.onError((err, c) => {
    opts.logger.error({ event: 'http_error', method: c.req.method, path: c.req.path, error: err.message, stack: err.stack }, 'unexpected error');
    return c.json({ error: 'internal error' }, 500);
  });
  return app;
}
