/**
 * The protocol fast path (src/autoscaler/http-fast.ts) answers `/route/`, `/worker_status/` and
 * `/delete_requests/` on node:http in front of the hono app: its answers must be the app's. Each
 * case is sent to the running server (fast path) and to the same engine's hono app, and the
 * status, content-type and JSON body compared; the happy path is checked on its own.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { createApp } from '../src/autoscaler/http.js';
import { startAutoscaler, type RunningAutoscaler } from '../src/autoscaler/server.js';
import type { Hono } from 'hono';
import { createServer } from 'node:http';
import { withProtocolFastPath } from '../src/autoscaler/http-fast.js';
import { closeServer, listenLoopback } from './helpers/autoscaler.js';
import { rawConnect } from './helpers/raw-http.js';

const API_KEY = 'fastpath-client-key';

describe('protocol fast path: the same answers as the hono app', () => {
  let as: RunningAutoscaler;
  let app: Hono;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'as-fastpath-'));
    const logger = createLogger('autoscaler', { level: 'silent' });
    as = await startAutoscaler({
      dataDir,
      adminKey: 'fastpath-admin-key',
      logger,
      dashboard: false,
      config: {
        persist: false,
        endpoints: [
          { name: 'fp', api_key: API_KEY, cold_workers: 0, min_load: 0, workergroups: [{ name: 'g', machine_types: [{ name: 'm', dollars_per_hour: 1 }] }] },
        ],
      },
    });
    app = createApp(as.engine, { adminKey: as.adminKey, accountKey: as.accountKey, publicKeyPem: as.publicKeyPem, logger, maxBodyBytes: 1024 * 1024 });
  });

  afterAll(async () => {
    await as?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function both(path: string, body: string | undefined, method = 'POST') {
    const init = { method, headers: { 'content-type': 'application/json' }, body };
    const live = await fetch(`${as.url}${path}`, init);
    const ref = await app.request(path, init);
    const read = async (r: Response) => ({ status: r.status, type: r.headers.get('content-type'), text: await r.text() });
    return { live: await read(live), ref: await read(ref) };
  }

  const cases: Array<[string, string, string | undefined, number, string | null]> = [
    // path, what, body, expected status, expected field
    ['/route/', 'not JSON', '{"endpoint": ', 400, 'body'],
    ['/route', 'no trailing slash, not JSON', 'nope', 400, 'body'],
    ['/route/?x=1', 'a query string', '[1,', 400, 'body'],
    ['/route/', 'an empty body', '', 400, 'endpoint'],
    ['/route/', 'a wrong type', JSON.stringify({ endpoint: 'fp', api_key: API_KEY, cost: 'lots' }), 400, 'cost'],
    ['/route/', 'an unknown endpoint', JSON.stringify({ endpoint: 'nope', api_key: API_KEY }), 404, 'endpoint'],
    ['/route/', 'a wrong api_key', JSON.stringify({ endpoint: 'fp', api_key: 'wrong-key-123' }), 401, 'api_key'],
    ['/route/', 'a request_idx never issued', JSON.stringify({ endpoint: 'fp', api_key: API_KEY, request_idx: 987654 }), 404, 'request_idx'],
    ['/worker_status/', 'an unknown worker', JSON.stringify({ id: 4242, mtoken: 'x' }), 404, 'id'],
    ['/worker_status', 'a bad id', JSON.stringify({ id: 'abc', mtoken: 'x' }), 400, 'id'],
    ['/delete_requests/', 'a bad list', JSON.stringify({ worker_id: 1, mtoken: 'x', request_idxs: 'all' }), 400, 'request_idxs'],
    ['/delete_requests/', 'an unknown worker', JSON.stringify({ worker_id: 4242, mtoken: 'x', request_idxs: [1] }), 404, 'worker_id'],
    ['/route/', 'a body over 1 MiB', JSON.stringify({ endpoint: 'fp', api_key: API_KEY, pad: 'x'.repeat(1024 * 1024 + 10) }), 413, 'body'],
  ];

  for (const [path, what, body, status, field] of cases) {
    it(`POST ${path} with ${what}: ${status} naming ${field}`, async () => {
      const { live, ref } = await both(path, body);
      expect(live).toEqual(ref);
      expect(live.status).toBe(status);
      expect(live.type).toMatch(/^application\/json/);
      expect(JSON.parse(live.text).field).toBe(field);
    });
  }

  it('other methods on the same paths are still the app’s (404 naming the path)', async () => {
    const { live, ref } = await both('/route/', undefined, 'GET');
    expect(live).toEqual(ref);
    expect(live.status).toBe(404);
    expect(JSON.parse(live.text).field).toBe('path');
  });

  it('the live server: a route read by the fast lane, then a request node:http cannot parse gets a JSON 400 naming the request', async () => {
    const c = await rawConnect(as.url);
    try {
      const body = JSON.stringify({ endpoint: 'fp', api_key: API_KEY, cost: 1 });
      c.write(
        `POST /route/ HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}POST /route/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n`,
      );
      const x = await c.read(2);
      expect(x.answers.map((a) => a.status)).toEqual([200, 400]);
      expect(JSON.parse(x.answers[0]!.body.toString()).request_idx).toBeGreaterThan(0);
      expect(JSON.parse(x.answers[1]!.body.toString())).toEqual({ error: 'malformed HTTP request (HPE_INVALID_CONTENT_LENGTH)', field: 'request' });
    } finally {
      c.close();
    }
  });

  it('a new request with no worker yet is queued: 200 with its request_idx and no url', async () => {
    const res = await fetch(`${as.url}/route/`, { method: 'POST', body: JSON.stringify({ endpoint: 'fp', api_key: API_KEY, cost: 10 }) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const b = (await res.json()) as Record<string, unknown>;
    expect(b.request_idx).toBeGreaterThan(0);
    expect(b.status).toBe('queued');
    expect('url' in b).toBe(false);
  });
});

describe('protocol fast path: which requests it takes', () => {
  it('answers POSTs of its routes itself and hands everything else to the fallback', async () => {
    const fellBack: string[] = [];
    const seen: unknown[] = [];
    const listener = withProtocolFastPath(
      (req, res) => {
        fellBack.push(`${req.method} ${req.url}`);
        res.writeHead(418).end();
      },
      {
        routes: {
          '/route': (b) => {
            seen.push(b);
            return { status: 200, body: { ok: true } };
          },
          '/boom': () => {
            throw new Error('engine bug');
          },
        },
        maxBodyBytes: 100,
        logger: createLogger('fastpath', { level: 'silent' }),
      },
    );
    const server = createServer(listener);
    const url = await listenLoopback(server);
    try {
      const post = (path: string, body: string) => fetch(url + path, { method: 'POST', body });
      expect((await post('/route/', '{"a":1}')).status).toBe(200);
      expect((await post('/route?q=2', '{"a":2}')).status).toBe(200);
      expect(seen).toEqual([{ a: 1 }, { a: 2 }]);
      expect((await fetch(`${url}/route/`)).status).toBe(418);
      expect((await post('/other/', '{}')).status).toBe(418);
      expect(fellBack).toEqual(['GET /route/', 'POST /other/']);
      const boom = await post('/boom', '{}');
      expect(boom.status).toBe(500);
      expect(await boom.json()).toEqual({ error: 'internal error' });
      const big = await post('/route/', 'x'.repeat(101));
      expect(big.status).toBe(413);
      expect((await big.json()).field).toBe('body');
      expect(seen).toHaveLength(2);
    } finally {
      await closeServer(server);
    }
  });
});
