/**
 * Start-up as a user meets it, in real `nodeworker` processes: a bad configuration stops the start
 * with every problem listed, each naming its variable or flag; a local run without REPORT_ADDR says
 * once that nothing will be reported; a benchmark against a broken model says why it failed. And
 * the resolved config itself: one merge of handler spec, environment and flags, by precedence.
 */
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError } from '../src/common/protocol.js';
import { defineWorker } from '../src/worker/config.js';
import { parseWorkerEnv } from '../src/worker/env.js';
import { DEFAULT_MODEL_URL, loadWorkerConfig, resolveWorkerConfig, salvageReportTarget } from '../src/worker/worker-config.js';
import { useResources } from './helpers/worker.js';

const CLI = resolve('dist/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'worker-startup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups = useResources();

interface Run {
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  kill: (signal: NodeJS.Signals) => void;
}

function run(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH ?? '', WORKSPACE_DIR: dir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  cleanups.defer(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { stdout: () => stdout, stderr: () => stderr, exited, kill: (s) => void child.kill(s) };
}

async function until(what: string, cond: () => boolean, output: () => string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; output:\n${output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A model that answers every request 404 with a FastAPI-like body. */
async function notFoundModel(): Promise<string> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ detail: 'Not Found' }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.defer(() => new Promise<void>((r) => server.close(() => r())));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

describe('nodeworker worker: a bad configuration', () => {
  it('stops start-up with exit 1 and every problem listed, each naming its variable or flag', async () => {
    const p = run(['worker', '--handler', 'no-such-handler'], {
      MODEL_SERVER_URL: 'localhost:8000',
      LOG_LEVEL: 'loud',
      REPORT_ADDR: 'engine.example:8080',
      WORKER_PORT: '70000',
    });
    expect(await p.exited).toBe(1);
    const err = p.stderr();
    expect(err).toContain('nodeworker: invalid configuration:');
    expect(err).toContain('  - MODEL_SERVER_URL: must be an http(s) URL like http://127.0.0.1:8000, got "localhost:8000"');
    expect(err).toContain('  - CONTAINER_ID: not set');
    expect(err).toContain('  - LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "loud"');
    expect(err).toContain('  - REPORT_ADDR: every address must be an http(s) URL like https://run.vast.ai, got "engine.example:8080"');
    expect(err).toContain('  - WORKER_PORT: must be a port number (0-65535)');
    expect(err).toContain('  - handler "no-such-handler" is neither a built-in');
  });

  it('names a bad --model-url, and a CONTAINER_ID that is not an integer', async () => {
    const p = run(['worker', '--handler', 'tgi', '--model-url', 'localhost:8000'], { CONTAINER_ID: 'abc', UNSECURED: 'true' });
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toContain('  - --model-url: must be an http(s) URL like http://127.0.0.1:8000, got "localhost:8000"');
    expect(p.stderr()).toContain('  - CONTAINER_ID: must be an integer');
  });
});

describe('nodeworker worker: a port taken', () => {
  it('without REPORT_ADDR says why on stderr and exits 1 (nothing to keep reporting to)', async () => {
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    cleanups.defer(() => new Promise<void>((r) => holder.close(() => r())));
    const port = (holder.address() as { port: number }).port;
    const p = run(['worker', '--handler', 'tgi'], {
      CONTAINER_ID: '6',
      UNSECURED: 'true',
      WORKER_HOST: '127.0.0.1',
      WORKER_PORT: String(port),
      MODEL_SERVER_URL: 'http://127.0.0.1:9',
    });
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toContain(`nodeworker: worker failed to start: listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
  });
});

describe('nodeworker worker: a local run', () => {
  it('without REPORT_ADDR (UNSECURED) warns once that nothing will be reported; without MODEL_LOG it waits for a model that is down instead of benchmarking it', async () => {
    const p = run(['worker', '--handler', 'tgi'], {
      CONTAINER_ID: '5',
      UNSECURED: 'true',
      WORKER_PORT: '0',
      WORKER_HTTP_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      MODEL_SERVER_URL: 'http://127.0.0.1:9',
    });
    await until(
      'the worker to say it waits for the model',
      () => p.stdout().includes('waiting for the model health path to answer 200 before benchmarking'),
      () => p.stdout() + p.stderr(),
    );
    const lines = p
      .stdout()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: string; msg: string; err?: string; url?: string });
    const warnings = lines.filter((l) => l.msg.includes('nothing will be reported'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe('warn');
    expect(warnings[0]!.msg).toMatch(/^REPORT_ADDR is not set/);
    expect(lines.find((l) => l.msg.includes('waiting for the model health path'))!.url).toBe('http://127.0.0.1:9/health');
    // Nothing was sent to a model that is not up (before issue 25: every benchmark request refused, errored for good).
    expect(lines.some((l) => l.msg.startsWith('benchmark'))).toBe(false);
    p.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });
});

describe('nodeworker benchmark: a model answering 404', () => {
  it('exits 1 and prints the status and body excerpt of the first failures, warm-up included', async () => {
    const url = await notFoundModel();
    const p = run(['benchmark', '--handler', 'tgi', '--model-url', url, '--runs', '2', '--concurrency', '2'], {});
    expect(await p.exited).toBe(1);
    expect(p.stdout()).toContain(
      'perf 0.0 load/s  (No successful responses from benchmark: 5 of 5 requests failed; first: POST /generate answered 404: {"detail":"Not Found"})',
    );
    expect(p.stdout()).toContain('first failures:\n  warm-up: POST /generate answered 404: {"detail":"Not Found"}\n  round 1: POST /generate answered 404');
    // Progress from the first second: the warm-up is announced before it is answered.
    expect(p.stderr().split('\n')[0]).toBe('benchmark warm-up: one request to POST /generate');
    expect(p.stderr()).toContain('benchmark warm-up: POST /generate answered 404: {"detail":"Not Found"}');
  });
});

describe('resolveWorkerConfig', () => {
  const definition = (modelServerUrl?: string) =>
    defineWorker({ modelServerUrl, handlers: [{ route: '/x', payload: z.unknown(), benchmark: { dataset: [{}] } }] });

  it('merges flag > handler spec > environment > default, once', () => {
    const env = parseWorkerEnv({
      CONTAINER_ID: '3',
      MODEL_SERVER_URL: 'http://env:1',
      MODEL_LOG: '/tmp/m.log',
      REPORT_ADDR: 'http://a:1/, http://b:2',
      MASTER_TOKEN: 't',
    });
    expect(resolveWorkerConfig(definition(), parseWorkerEnv({ CONTAINER_ID: '3' })).model.url).toBe(DEFAULT_MODEL_URL);
    expect(resolveWorkerConfig(definition(), env).model.url).toBe('http://env:1');
    expect(resolveWorkerConfig(definition('http://spec:2'), env).model.url).toBe('http://spec:2');
    const c = resolveWorkerConfig(definition('http://spec:2'), env, { modelUrl: 'http://flag:3/' });
    expect(c.model).toMatchObject({ url: 'http://flag:3', logFile: '/tmp/m.log', healthPath: null, timeoutMs: 300_000 });
    expect(c.report).toMatchObject({ addrs: ['http://a:1', 'http://b:2'], containerId: 3, masterToken: 't', publicUrl: 'http://127.0.0.1:3000' });
    expect(() => resolveWorkerConfig(definition(), env, { modelUrl: 'nope' })).toThrow(/--model-url: must be an http\(s\) URL/);
  });

  it('lists the problems of the environment and of the handler together', async () => {
    const failing = loadWorkerConfig({ CONTAINER_ID: 'x', DRAIN_TIMEOUT: '-1' }, () => Promise.resolve(defineWorker({ handlers: [] })));
    const err = (await failing.catch((e: unknown) => e)) as ConfigError;
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.problems).toEqual([
      'CONTAINER_ID: must be an integer (the instance id)',
      'DRAIN_TIMEOUT: must be a number of seconds ≥ 0',
      'handlers: a worker needs at least one handler',
      'handlers: exactly one handler must carry a benchmark (found 0)',
    ]);
  });

  it('salvages where to report a failed start from a bad environment, and nothing without a valid address', () => {
    expect(
      salvageReportTarget({
        REPORT_ADDR: 'http://e:1',
        CONTAINER_ID: 'x',
        LOG_LEVEL: 'loud',
        MASTER_TOKEN: 'm',
        WORKER_PORT: '4000',
        VAST_TCP_PORT_4000: '41000',
      }),
    ).toMatchObject({
      addrs: ['http://e:1'],
      containerId: 0,
      masterToken: 'm',
      publicUrl: 'http://127.0.0.1:41000',
    });
    expect(salvageReportTarget({ REPORT_ADDR: 'e:1', CONTAINER_ID: '1' })).toBeNull();
    expect(salvageReportTarget({ CONTAINER_ID: '1' })).toBeNull();
  });
});
