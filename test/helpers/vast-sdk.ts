/**
 * The Vast Python SDK's client side, played call for call in TypeScript (written from what the
 * SDK's `Serverless` client reads and sends; its code is not copied). What matters is the
 * sequence and the strictness:
 *
 * - `getEndpoints()`: `GET {web}/api/v0/endptjobs/?client_id=me&api_key=K` with
 *   `Authorization: Bearer K`; non-2xx raises; reads `results[*]`, needing `id`, `endpoint_name`,
 *   `api_key`, `user_id`, `created_at` (a missing key is a KeyError in the SDK).
 * - `getWorkers()`: `POST {autoscaler}/get_endpoint_workers/ {id, api_key: K}` (the account key);
 *   non-200 raises; a dict with `error_msg` is []; each item goes through `float()`/`int()`, so a
 *   present `null` raises (TypeError) where a missing key would read 0.
 * - `request()`: `/route/ {endpoint, api_key, cost, request_idx, replay_timeout: 60}`; a non-2xx
 *   answer raises (no handling of 404 or 408); no `url` → poll with the request_idx after a sleep
 *   growing 2^attempt (capped by max_poll_interval); with a url → `POST {url}{route}
 *   {auth_data, session_id: null, payload}`; a connection error re-routes at once with the same
 *   request_idx; 408/429/5xx re-route the same request_idx after min(2^attempts + jitter,
 *   max_poll_interval) seconds; other answers are returned.
 * - `updateWorkers()`: `POST {autoscaler}/update_workers/ {workergroup_id, api_key: K}`.
 *
 * Sleeps go through `sleep(seconds)`, so a test on a fake clock can advance it instead of waiting.
 */

export interface SdkEndpoint {
  id: number;
  name: string;
  apiKey: string;
}

export interface SdkWorker {
  id: number;
  status: string;
  [field: string]: number | string;
}

export interface SdkTrace {
  /** Every /route/ call: the request_idx sent and what came back. */
  routes: Array<{ sent: number; status: number; idx: number | null; url: string | null; signature: string | null; reqnum: number | null }>;
  /** Every worker call: url and status (null = connection error). */
  calls: Array<{ url: string; status: number | null }>;
  /** Seconds slept, in order (poll waits and back-offs). */
  sleeps: number[];
}

export class SdkError extends Error {}

export interface SdkOptions {
  /** The account key (VAST_API_KEY). */
  apiKey: string;
  webUrl: string;
  autoscalerUrl: string;
  /** Wait `seconds` (a fake clock advances instead). */
  sleep: (seconds: number) => Promise<void>;
  maxPollInterval?: number;
  random?: () => number;
}

const NUMERIC = [
  'cur_load',
  'new_load',
  'cur_load_rolling_avg',
  'cur_perf',
  'perf',
  'measured_perf',
  'dlperf',
  'reliability',
  'disk_usage',
  'loaded_at',
  'started_at',
];

/** Python's float(): numbers and numeric strings; None and anything else raise. */
function pyFloat(v: unknown, field: string): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  throw new SdkError(`TypeError: float() argument must be a string or a real number, not '${v === null ? 'NoneType' : typeof v}' (field ${field})`);
}

export class VastSdk {
  constructor(private o: SdkOptions) {}

  private async fetchJson(method: string, url: string, key: string, body?: unknown, query: Record<string, string> = {}) {
    const u = new URL(url);
    for (const [k, v] of Object.entries({ ...query, api_key: key })) u.searchParams.set(k, v);
    const res = await fetch(u, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    return { status: res.status, ok: res.status >= 200 && res.status < 300, text, json };
  }

  async getEndpoints(): Promise<SdkEndpoint[]> {
    const r = await this.fetchJson('GET', `${this.o.webUrl}/api/v0/endptjobs/`, this.o.apiKey, undefined, { client_id: 'me' });
    if (!r.ok) throw new SdkError(`Failed to get endpoints: HTTP ${r.status} - ${r.text.slice(0, 512)}`);
    const results = (r.json as Record<string, unknown>)?.results;
    if (!Array.isArray(results)) return [];
    return results.map((e: Record<string, unknown>) => {
      for (const k of ['endpoint_name', 'id', 'api_key', 'user_id', 'created_at']) if (!(k in e)) throw new SdkError(`KeyError: '${k}'`);
      return { id: e.id as number, name: e.endpoint_name as string, apiKey: e.api_key as string };
    });
  }

  async getEndpoint(name: string): Promise<SdkEndpoint> {
    const found = (await this.getEndpoints()).find((e) => e.name === name);
    if (!found) throw new SdkError(`Endpoint ${name} could not be found`);
    return found;
  }

  async getWorkers(ep: SdkEndpoint): Promise<SdkWorker[]> {
    const res = await fetch(`${this.o.autoscalerUrl}/get_endpoint_workers/`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: ep.id, api_key: this.o.apiKey }),
    });
    const text = await res.text();
    if (res.status !== 200) throw new SdkError(`get_endpoint_workers failed: HTTP ${res.status} - ${text}`);
    const data = JSON.parse(text) as unknown;
    if (data && typeof data === 'object' && !Array.isArray(data) && 'error_msg' in data) return [];
    if (!Array.isArray(data)) throw new SdkError(`Unexpected response type (wanted list): ${typeof data}`);
    return data.map((d: Record<string, unknown>) => {
      const w: SdkWorker = { id: Math.trunc(pyFloat(d.id, 'id')), status: (d.status as string) || 'UNKNOWN' };
      for (const f of NUMERIC) w[f] = f in d ? pyFloat(d[f], f) : 0;
      w.reqs_working = 'reqs_working' in d ? Math.trunc(pyFloat(d.reqs_working, 'reqs_working')) : 0;
      return w;
    });
  }

  async updateWorkers(workergroupId: number): Promise<unknown> {
    const r = await this.fetchJson('POST', `${this.o.autoscalerUrl}/update_workers/`, this.o.apiKey, { workergroup_id: workergroupId, api_key: this.o.apiKey });
    if (!r.ok) throw new SdkError(`Failed to trigger worker update for workergroup ${workergroupId}: HTTP ${r.status} - ${r.text.slice(0, 512)}`);
    return r.json;
  }

  private async route(ep: SdkEndpoint, cost: number, reqIdx: number, trace: SdkTrace) {
    const r = await this.fetchJson('POST', `${this.o.autoscalerUrl}/route/`, ep.apiKey, {
      endpoint: ep.name,
      api_key: ep.apiKey,
      cost,
      request_idx: reqIdx,
      replay_timeout: 60,
    });
    const b = (r.json ?? {}) as Record<string, unknown>;
    trace.routes.push({
      sent: reqIdx,
      status: r.status,
      idx: typeof b.request_idx === 'number' ? b.request_idx : null,
      url: typeof b.url === 'string' ? b.url : null,
      signature: typeof b.signature === 'string' ? b.signature : null,
      reqnum: typeof b.reqnum === 'number' ? b.reqnum : null,
    });
    if (!r.ok) throw new SdkError(`Failed to route endpoint: HTTP ${r.status} - ${r.text.slice(0, 512)}`);
    return { ready: 'url' in b, body: b, requestIdx: 'request_idx' in b ? (b.request_idx as number) : 0 };
  }

  /** One `endpoint.request(route, payload, cost)`; resolves with the worker's answer, or rejects as the SDK raises. */
  async request(
    ep: SdkEndpoint,
    path: string,
    payload: unknown,
    cost = 100,
    trace: SdkTrace = { routes: [], calls: [], sleeps: [] },
  ): Promise<{ status: number; json: unknown; trace: SdkTrace }> {
    const rnd = this.o.random ?? Math.random;
    const maxPoll = this.o.maxPollInterval ?? 5;
    const sleep = async (s: number) => {
      trace.sleeps.push(s);
      await this.o.sleep(s);
    };
    let requestIdx = 0;
    let totalAttempts = 0;
    for (;;) {
      totalAttempts++;
      if (totalAttempts > 200) throw new SdkError('the test SDK gave up after 200 attempts');
      let route = await this.route(ep, cost, requestIdx, trace);
      requestIdx = route.requestIdx;
      let attempt = 0;
      let interval = 1;
      while (!route.ready) {
        await sleep(interval);
        route = await this.route(ep, cost, requestIdx, trace);
        requestIdx = route.requestIdx || requestIdx;
        attempt++;
        interval = 0.1 + rnd() * (Math.min(2 ** Math.min(attempt, 20) + rnd(), maxPoll) - 0.1);
      }
      const url = route.body.url as string;
      let res: Response;
      try {
        res = await fetch(url + path, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ auth_data: route.body, session_id: null, payload }),
        });
      } catch {
        trace.calls.push({ url, status: null });
        continue; // worker gone: re-route at once, same request_idx
      }
      const text = await res.text();
      trace.calls.push({ url, status: res.status });
      const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
      if (retryable) {
        await sleep(Math.min(2 ** Math.min(totalAttempts, 20) + rnd(), maxPoll));
        continue;
      }
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {
        json = { error: text };
      }
      return { status: res.status, json, trace };
    }
  }
}
