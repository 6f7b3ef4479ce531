/**
 * Errors a newcomer meets in the first hour say where and what (issue 25 item 10): a handler's
 * syntax error with file:line:column, did-you-mean for near-miss names (environment, config keys,
 * handlers, commands), a JSON config error with line and column, the autoscaler's config checked
 * before any key is generated, a start-up error printed once, a loading worker's 429 in JSON.
 * Needs `npm run build` (the CLI runs from dist/).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAutoscalerConfig, parseAutoscalerConfig } from '../src/autoscaler/config.js';
import { startAutoscaler } from '../src/autoscaler/server.js';
import { createLogger } from '../src/common/log.js';
import { envHints, parseWorkerEnv } from '../src/worker/env.js';
import { loadWorkerDefinition } from '../src/worker/load-definition.js';
import { authData, echoHandler, envelope, postJson, startTestModel, startTestWorker, useResources, waitFor } from './helpers/worker.js';

const REPO = resolve(__dirname, '..');
const CLI = join(REPO, 'dist', 'cli.js');
const dir = mkdtempSync(join(tmpdir(), 'startup-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const res = useResources();

describe('did you mean', () => {
  it('environment: CONTAINERID for a missing CONTAINER_ID is named in the error; MODEL_URL and PORT get a hint', () => {
    expect(() => parseWorkerEnv({ CONTAINERID: '7' })).toThrow(/CONTAINER_ID: .*\(CONTAINERID is set: did you mean CONTAINER_ID\?\)/);
    const hints = envHints({ CONTAINER_ID: '7', MODEL_URL: 'http://127.0.0.1:8000', PORT: '3000', PATH: '/usr/bin', HOME: '/root' });
    expect(hints.sort()).toEqual(['MODEL_URL is set but not read: did you mean MODEL_SERVER_URL?', 'PORT is set but not read: did you mean WORKER_PORT?']);
    // The name meant is set already: no hint.
    expect(envHints({ PORT: '80', WORKER_PORT: '3000' })).toEqual([]);
  });

  it('a handler name: opneai', async () => {
    await expect(loadWorkerDefinition('opneai')).rejects.toThrow(/"opneai" is neither a built-in .* \(did you mean openai\?\)/);
  });

  it('a config key: max_worker in an endpoint', () => {
    let fields: Record<string, string> = {};
    try {
      parseAutoscalerConfig({ endpoints: [{ name: 'e', max_worker: 3, workergroups: [{ name: 'g', machine_types: [{ name: 'm', dollars_per_hour: 1 }] }] }] });
    } catch (err) {
      fields = (err as { fields: Record<string, string> }).fields;
    }
    expect(fields['endpoints.0.max_worker']).toBe('unknown field (did you mean max_workers?)');
  });

  it('a command: wroker', () => {
    const r = spawnSync(process.execPath, [CLI, 'wroker'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown command "wroker" (did you mean worker?)');
  });
});

it("a handler module's syntax error names the file, line and column", () => {
  // Through the real CLI: under vitest, import() is vite's, whose parse errors differ from Node's.
  const file = join(dir, 'broken-handler.js');
  writeFileSync(file, 'export default {\n  handlers: [\n    { route: "/x" oops }\n  ],\n};\n');
  const r = spawnSync(process.execPath, [CLI, 'worker', '--handler', file], {
    encoding: 'utf8',
    env: { ...process.env, CONTAINER_ID: '1', WORKER_PORT: '0' },
    timeout: 60_000,
  });
  expect(r.status).toBe(1);
  expect(r.stderr).toContain(`SyntaxError: Unexpected identifier 'oops' at ${file}:3:19`);
  expect(r.stderr).toContain('{ route: "/x" oops }');
});

it('a JSON config error gives line and column, and shows the line', () => {
  const file = join(dir, 'bad.json');
  writeFileSync(file, '{\n  "endpoints": [],\n  oops: 1\n}\n');
  expect(() => loadAutoscalerConfig(file)).toThrow(/at line 3, column 3\n {2} {2}oops: 1\n {2} {2}\^/);
});

it('the autoscaler checks its whole config (the provider part too) before generating any key', async () => {
  const dataDir = join(dir, 'as-data');
  await expect(
    startAutoscaler({ config: { provider: { kind: 'no-such-provider' } }, dataDir, port: 0, dashboard: false, logger: createLogger('t', { level: 'silent' }) }),
  ).rejects.toThrow(/provider\.kind "no-such-provider" is unknown/);
  expect(existsSync(dataDir) ? readdirSync(dataDir) : []).toEqual([]);
});

it('a start-up error is printed once (not again as an escaped JSON log line)', () => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !['CONTAINER_ID', 'LOG_FILE', 'REPORT_ADDR'].includes(k)));
  const r = spawnSync(process.execPath, [CLI, 'worker', '--handler', 'hello'], {
    encoding: 'utf8',
    env: { ...env, WORKER_PORT: '0', LOG_FORMAT: 'json' },
    timeout: 60_000,
  });
  expect(r.status).toBe(1);
  const both = `${r.stdout}${r.stderr}`;
  expect(both.match(/CONTAINER_ID: not set/g)).toHaveLength(1);
});

it('a request to a worker that is still loading gets 429 with a JSON body saying why', async () => {
  // The model holds every request: one in flight makes any expected queue too long at perf 0.
  const model = await res.add(startTestModel(() => undefined));
  mkdirSync(join(dir, 'never'), { recursive: true });
  // MODEL_LOG never appears: the worker stays loading, with no perf.
  const w = await res.add(
    startTestWorker({
      modelUrl: model.url,
      handlers: [echoHandler({ maxQueueTime: 30 })],
      perf: null,
      waitReady: false,
      env: { MODEL_LOG: join(dir, 'never', 'model.log'), DRAIN_TIMEOUT: '0' },
    }),
  );
  expect(w.lifecycle.state).toBe('loading');
  const held = postJson(`${w.url}/echo`, envelope({}, authData())).catch(() => undefined);
  await waitFor(
    () => model.bodies.length === 1,
    10_000,
    () => `the first request at the model; worker ${w.lifecycle.state}, inflight ${w.ledger.inflight}`,
  );
  const a = await postJson(`${w.url}/echo`, envelope({}, authData()));
  void held;
  expect(a.status).toBe(429);
  expect(a.json).toMatchObject({ field: 'worker', state: 'loading' });
  expect(a.json.error).toMatch(/not ready \(loading\)/);
});
