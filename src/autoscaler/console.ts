import type { Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { errorBody } from '../common/protocol.js';
import { z } from 'zod';
import { EngineError, sameSecret, type Engine, type EndpointRuntime } from './engine.js';
import { fieldErrors } from './params.js';

/**
 * The console calls the Vast SDK makes (docs/autoscaler.md, "Console API"), served in the shapes
 * it reads, so `Serverless(api_key=<account key>, webserver_url=<this>, autoscaler_url=<this>)`
 * works unchanged:
 *
 * - `GET /api/v0/endptjobs/` → `{success, results: [endpoint…]}` (what `get_endpoint(name)` and
 *   `get_endpoints()` read: `id`, `endpoint_name`, `api_key`, `user_id`, `created_at`, the
 *   scaling parameters, `endpoint_state`);
 * - `GET /api/v0/endptjobs/{id}/` → `{success, result: endpoint}`;
 * - `GET /api/v0/workergroups/` → `{success, results: [{id, endpoint_id, …}]}`;
 * - `POST /update_workers/` `{workergroup_id, api_key}` → `{success, workergroup_id, workers}`:
 *   a rolling replacement of the workergroup's workers.
 *
 * Every call is authenticated with the account key (or the admin key), as
 * `Authorization: Bearer <key>` or `?api_key=<key>` (the SDK sends both); `/update_workers/` also
 * takes the key in its body, and the endpoint's own api_key for its workergroups.
 */

export interface ConsoleOptions {
  accountKey: string;
  adminKey: string;
}

const updateWorkersSchema = z.looseObject({
  workergroup_id: z.union([z.number().int().min(1), z.string().regex(/^\d+$/, 'expected a workergroup id').transform(Number)], {
    error: 'workergroup_id (the id GET /api/v0/workergroups/ lists) required',
  }),
  api_key: z.string().optional(),
});

/** The key a console call carries: bearer header first, then `?api_key=`. */
function presentedKey(c: Context): string {
  const m = /^Bearer\s+(.+)$/i.exec(c.req.header('authorization') ?? '');
  return m?.[1]?.trim() || c.req.query('api_key') || '';
}

function unauthorized(c: Context): Response {
  return c.json(
    errorBody('account key missing or wrong', { authorization: 'expected "Bearer <account key>" or ?api_key=<account key>' }, { success: false }),
    401,
  );
}

/** An endpoint as the console lists it (field names of Vast's endptjobs). */
export function consoleEndpoint(ep: EndpointRuntime): Record<string, unknown> {
  const p = ep.params;
  return {
    id: ep.id,
    endpoint_name: ep.name,
    api_key: ep.apiKey,
    user_id: 1,
    created_at: ep.createdAt / 1000,
    endpoint_state: ep.state,
    cold_workers: p.cold_workers,
    max_workers: p.max_workers,
    min_load: p.min_load,
    min_cold_load: p.min_cold_load,
    target_util: p.target_util,
    cold_mult: p.cold_mult,
    max_queue_time: p.max_queue_time,
    target_queue_time: p.target_queue_time,
    inactivity_timeout: p.inactivity_timeout,
    auto_delete_in_seconds: null,
    auto_delete_due_24h: false,
  };
}

/** Mount the console routes on the engine's app. */
export function mountConsole(app: Hono, engine: Engine, opts: ConsoleOptions): void {
  const accountOk = (key: string) => key !== '' && (sameSecret(key, opts.accountKey) || sameSecret(key, opts.adminKey));

  app.get('/api/v0/endptjobs', (c) => {
    if (!accountOk(presentedKey(c))) return unauthorized(c);
    return c.json({ success: true, results: [...engine.endpoints.values()].map(consoleEndpoint) });
  });
  app.get('/api/v0/endptjobs/:id', (c) => {
    if (!accountOk(presentedKey(c))) return unauthorized(c);
    const id = c.req.param('id');
    const ep = [...engine.endpoints.values()].find((e) => String(e.id) === id || e.name === id);
    if (!ep) return c.json(errorBody('no such endpoint', { id: `no endpoint ${JSON.stringify(id)}` }, { success: false }), 404);
    return c.json({ success: true, result: consoleEndpoint(ep) });
  });
  app.get('/api/v0/workergroups', (c) => {
    if (!accountOk(presentedKey(c))) return unauthorized(c);
    const results: Record<string, unknown>[] = [];
    for (const ep of engine.endpoints.values()) {
      for (const wg of ep.workergroups.values()) {
        results.push({
          id: engine.workergroupId(ep.name, wg.name),
          name: wg.name,
          endpoint_id: ep.id,
          endpoint_name: ep.name,
          search_params: wg.search_params,
          workers: engine.workersOf(ep.name).filter((w) => w.workergroup === wg.name && w.state !== 'destroyed').length,
        });
      }
    }
    return c.json({ success: true, results });
  });
  app.post('/update_workers', async (c) => {
    let raw: unknown;
    try {
      const text = await c.req.text();
      raw = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      return c.json(errorBody('invalid JSON', { body: 'not valid JSON' }, { success: false }), 400);
    }
    const parsed = updateWorkersSchema.safeParse(raw);
    if (!parsed.success) return c.json(errorBody('invalid /update_workers/ body', fieldErrors(parsed.error), { success: false }), 400);
    const { workergroup_id: id, api_key } = parsed.data;
    const key = presentedKey(c) || api_key || '';
    const found = engine.workergroupById(id);
    const allowed =
      accountOk(key) || accountOk(api_key ?? '') || (!!found && (sameSecret(key, found.endpoint.apiKey) || sameSecret(api_key ?? '', found.endpoint.apiKey)));
    if (!allowed) return unauthorized(c);
    try {
      const workers = engine.updateWorkers(id);
      return c.json({ success: true, workergroup_id: id, workers });
    } catch (err) {
      if (err instanceof EngineError) return c.json(errorBody(err.message, err.fields, { success: false }), err.status as ContentfulStatusCode);
      throw err;
    }
  });
}
