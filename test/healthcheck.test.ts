import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startHealthcheck, type Healthcheck, type HealthcheckOptions } from '../src/worker/healthcheck.js';

/** A model server stand-in on loopback whose /health answer a test can flip. */
async function modelServer() {
  const state = { status: 503, hits: 0, hang: false };
  const server = http.createServer((req, res) => {
    if (req.url !== '/health') {
      res.writeHead(404).end();
      return;
    }
    state.hits++;
    if (state.hang) return; // never answers
    res.writeHead(state.status, { 'content-type': 'application/json' }).end(JSON.stringify({ status: state.status }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { state, url: `http://127.0.0.1:${port}/health`, close };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolve once `cond()` holds, checking every 10 ms; reject after `ms`. */
async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await pause(10);
  }
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(overrides: Partial<HealthcheckOptions> = {}) {
  const model = await modelServer();
  cleanups.push(model.close);
  const failures: string[] = [];
  let recoveries = 0;
  let successes = 0;
  const hc: Healthcheck = startHealthcheck({
    url: model.url,
    intervalMs: 40,
    startupIntervalMs: 20,
    timeoutMs: 1000,
    onFailure: (m) => failures.push(m),
    onRecovery: () => recoveries++,
    onSuccess: () => successes++,
    ...overrides,
  });
  cleanups.push(() => hc.stop());
  return { model, hc, failures, recoveries: () => recoveries, successes: () => successes };
}

describe('startHealthcheck', () => {
  it('does not report failures before the first success', async () => {
    const { model, hc, failures } = await setup();
    await until(() => model.state.hits >= 5, 5000, 'five probes');
    expect(hc.lastOk()).toBe(false);
    model.state.status = 200;
    expect(await hc.waitForFirstSuccess(5000)).toBe(true);
    expect(hc.lastOk()).toBe(true);
    expect(failures).toEqual([]);
  });

  it('reports a non-200 after a success with an actionable message, and the recovery', async () => {
    const { model, hc, failures, recoveries, successes } = await setup();
    model.state.status = 200;
    expect(await hc.waitForFirstSuccess(5000)).toBe(true);
    model.state.status = 503;
    await until(() => failures.length > 0, 5000, 'a failure');
    expect(failures[0]).toBe(`model health check failed: GET ${model.url} answered 503`);
    expect(hc.lastOk()).toBe(false);
    // The same failure repeated is reported once.
    const hits = model.state.hits;
    await until(() => model.state.hits >= hits + 3, 5000, 'three more probes');
    expect(failures).toHaveLength(1);
    model.state.status = 200;
    await until(() => recoveries() === 1, 5000, 'a recovery');
    expect(hc.lastOk()).toBe(true);
    expect(successes()).toBeGreaterThanOrEqual(2);
  });

  it('reports a connection error once the model server is gone', async () => {
    const { model, hc, failures } = await setup();
    model.state.status = 200;
    expect(await hc.waitForFirstSuccess(5000)).toBe(true);
    await model.close();
    await until(() => failures.length > 0, 5000, 'a failure');
    expect(failures[0]).toMatch(new RegExp(`^model health check failed: GET ${model.url.replace(/[.?]/g, '\\$&')}: connection refused`));
  });

  it('reports a probe that gets no answer within the timeout', async () => {
    const { model, hc, failures } = await setup({ timeoutMs: 150 });
    model.state.status = 200;
    expect(await hc.waitForFirstSuccess(5000)).toBe(true);
    model.state.hang = true;
    await until(() => failures.length > 0, 5000, 'a failure');
    expect(failures[0]).toBe(`model health check failed: GET ${model.url}: no answer within 150 ms`);
  });

  it('waitForFirstSuccess answers false when the deadline passes, true when the model comes up in time', async () => {
    const { model, hc } = await setup();
    expect(await hc.waitForFirstSuccess(200)).toBe(false);
    const waiting = hc.waitForFirstSuccess(5000);
    await pause(100);
    model.state.status = 200;
    expect(await waiting).toBe(true);
    // Already succeeded: answers at once.
    expect(await hc.waitForFirstSuccess(0)).toBe(true);
  });

  it('waitForFirstSuccess answers false on abort and on stop()', async () => {
    const { hc } = await setup();
    const ac = new AbortController();
    const aborted = hc.waitForFirstSuccess(60_000, ac.signal);
    const stoppedWait = hc.waitForFirstSuccess(60_000);
    ac.abort();
    expect(await aborted).toBe(false);
    hc.stop();
    expect(await stoppedWait).toBe(false);
  });

  it('stop() ends probing and leaves no timer or socket behind', async () => {
    await pause(50); // let earlier tests' handles finish closing
    const count = () => process.getActiveResourcesInfo().filter((n) => n === 'Timeout' || n === 'TCPSocketWrap' || n === 'TCPWrap').length;
    const before = count();
    const { model, hc } = await setup();
    model.state.status = 200;
    expect(await hc.waitForFirstSuccess(5000)).toBe(true);
    hc.stop();
    const hits = model.state.hits;
    await pause(200);
    expect(model.state.hits).toBe(hits);
    await model.close();
    for (let i = 0; i < 50 && count() > before; i++) await pause(20);
    expect(count()).toBeLessThanOrEqual(before);
  });
});
