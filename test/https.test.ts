/**
 * USE_SSL=true (PROTOCOL §8): the worker serves HTTPS from SSL_CERT_PATH / SSL_KEY_PATH and reports
 * an https url. The certificate is made here by openssl (self-signed for 127.0.0.1), and the test
 * talks HTTPS to the worker with that certificate as its only CA.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import tgi, { generate, generateStream } from '../handlers/tgi.js';
import { startModelSim, type ModelSim } from '../src/model-sim/index.js';
import { defineWorker } from '../src/worker/config.js';
import { parseWorkerEnv } from '../src/worker/env.js';
import { startWorker } from '../src/worker/worker.js';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { selfSignedCert } from './helpers/tls.js';
import { freePort, silentLogger, useResources, waitFor } from './helpers/worker.js';

let dir: string;
let cert: string;
let key: string;
let ca: Buffer;
let agent: Agent;
let engine: TestEngine;
let sim: ModelSim;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'https-'));
  ({ cert, key } = selfSignedCert(dir, 'instance', { subject: '/CN=127.0.0.1', days: 1, extensions: ['subjectAltName=IP:127.0.0.1'] }));
  ca = readFileSync(cert);
  agent = new Agent({ connect: { ca } });
  engine = await startEngine();
  sim = await startModelSim({ flavor: 'tgi', port: 0, loadSeconds: 0, tokenRate: 5000, capacity: 50_000, ttftMs: 1, logFile: join(dir, 'model.log') });
  await sim.ready;
});

afterAll(async () => {
  await agent?.close();
  await sim?.close();
  await engine?.close();
  rmSync(dir, { recursive: true, force: true });
});

const cleanups = useResources();

const definition = () =>
  defineWorker({
    ...tgi,
    modelServerUrl: sim.url,
    handlers: [{ ...generate, benchmark: { dataset: [{ inputs: 'benchmark', parameters: { max_new_tokens: 8 } }], runs: 1, concurrency: 2 } }, generateStream],
  });

describe('USE_SSL', () => {
  it('serves the handler routes and /healthz over HTTPS with the configured cert, and reports an https url', async () => {
    const ws = mkdtempSync(join(dir, 'ws-'));
    const env = parseWorkerEnv({
      WORKER_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '51',
      REPORT_ADDR: engine.url,
      WORKSPACE_DIR: ws,
      MODEL_LOG: join(dir, 'model.log'),
      USE_SSL: 'true',
      SSL_CERT_PATH: cert,
      SSL_KEY_PATH: key,
      PUBLIC_IPADDR: '127.0.0.1',
      VAST_TCP_PORT_0: '443',
    });
    const w = await startWorker({
      definition: definition(),
      env,
      logger: silentLogger(),
      timings: { noHealthWaitMs: 0, reportTickMs: 50, reportIdleMs: 200, pubkeyBaseDelayMs: 50 },
    });
    cleanups.defer(() => w.close());
    expect(w.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    await waitFor(
      () => w.lifecycle.state === 'ready',
      10_000,
      () => w.lifecycle.state,
    );

    const h = await request(`${w.url}/healthz`, { dispatcher: agent });
    expect(h.statusCode).toBe(200);
    expect(((await h.body.json()) as { state: string }).state).toBe('ready');

    const r = await request(`${w.url}/generate`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth_data: engine.authData({ url: w.url, cost: 8 }), payload: { inputs: 'hello', parameters: { max_new_tokens: 8 } } }),
    });
    expect(r.statusCode).toBe(200);
    expect(((await r.body.json()) as { generated_text: string }).generated_text.length).toBeGreaterThan(0);

    // Without the CA the certificate is not trusted, and plain HTTP gets no HTTP answer.
    await expect(request(`${w.url}/healthz`)).rejects.toThrow(/self[- ]signed|certificate/i);
    await expect(request(w.url.replace('https:', 'http:') + '/healthz').then((x) => x.body.text())).rejects.toThrow();

    await engine.waitFor(() => engine.statuses.some((s) => s.body.id === 51 && (s.body.loadtime as number) > 0), 5000);
    expect(engine.statuses.find((s) => s.body.id === 51)!.body.url).toBe('https://127.0.0.1:443');
  });

  it('a missing certificate fails the start cleanly, naming the file', async () => {
    const env = parseWorkerEnv({
      WORKER_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '52',
      UNSECURED: 'true',
      WORKSPACE_DIR: dir,
      USE_SSL: 'true',
      SSL_CERT_PATH: join(dir, 'missing.crt'),
      SSL_KEY_PATH: key,
    });
    await expect(startWorker({ definition: definition(), env, logger: silentLogger() })).rejects.toThrow(/missing\.crt/);
  });

  it('the worker process (nodeworker worker) takes SSL_CERT_PATH / SSL_KEY_PATH from its environment', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [resolve('dist/cli.js'), 'worker', '--handler', 'tgi'], {
      env: {
        PATH: process.env.PATH ?? '',
        WORKER_PORT: String(port),
        WORKER_HTTP_PORT: String(await freePort()),
        WORKER_HOST: '127.0.0.1',
        CONTAINER_ID: '53',
        UNSECURED: 'true',
        WORKSPACE_DIR: mkdtempSync(join(dir, 'ws-')),
        MODEL_SERVER_URL: sim.url,
        USE_SSL: 'true',
        SSL_CERT_PATH: cert,
        SSL_KEY_PATH: key,
      },
      stdio: 'ignore',
    });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    cleanups.defer(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    let answer: { state: string } | null = null;
    for (let i = 0; i < 100 && !answer; i++) {
      answer = await request(`https://127.0.0.1:${port}/healthz`, { dispatcher: agent })
        .then((r) => r.body.json() as Promise<{ state: string }>)
        .catch(() => null);
      if (!answer) await new Promise((r) => setTimeout(r, 50));
    }
    expect(answer).not.toBeNull();
    expect(typeof answer!.state).toBe('string');
  });
});
