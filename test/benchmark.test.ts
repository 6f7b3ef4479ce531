/**
 * The benchmark (PROTOCOL §5) against a real model-sim over loopback, and `nodeworker benchmark`
 * as a real process: warm-up + rounds, perf = best round, only 200 answers count, the cache file,
 * the no-success error, and the CLI's table, progress lines, bar (on a pseudo-terminal) and exit codes.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../handlers/tgi.js';
import { startModelSim, type ModelSim, type ModelSimOptions } from '../src/model-sim/index.js';
import {
  BENCHMARK_CACHE_FILE,
  benchmarkProgressPrinter,
  NO_SUCCESS_ERROR,
  progressLine,
  readCachedPerf,
  resolveBenchmarkSettings,
  runBenchmark,
} from '../src/worker/benchmark.js';
import { defineWorker, type BenchmarkSpec } from '../src/worker/config.js';
import { useResources } from './helpers/worker.js';

const CLI = resolve('dist/cli.js');
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'benchmark-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups = useResources();

let sims = 0;
async function sim(opts: Partial<ModelSimOptions> = {}): Promise<ModelSim> {
  const logFile = join(dir, `model-sim-${++sims}.log`);
  const m = await startModelSim({ flavor: 'tgi', port: 0, loadSeconds: 0, tokenRate: 5000, capacity: 100_000, ttftMs: 1, logFile, ...opts });
  cleanups.defer(() => m.close());
  await m.ready;
  return m;
}

function pool(url: string): Pool {
  const p = new Pool(url, { connections: 256 });
  cleanups.defer(() => p.destroy());
  return p;
}

/** The built-in TGI /generate handler with its benchmark replaced. */
function tgiHandler(tokens: number, bench: Partial<BenchmarkSpec> = {}, parallel = true) {
  return defineWorker({
    handlers: [
      {
        ...generate,
        allowParallelRequests: parallel,
        benchmark: { generator: (i: number) => ({ inputs: `bench ${i}`, parameters: { max_new_tokens: tokens } }), ...bench },
      },
    ],
  }).benchmarkHandler;
}

function workspace(): string {
  return mkdtempSync(join(dir, 'ws-'));
}

describe('runBenchmark', () => {
  it('fires a warm-up, then `runs` rounds of `concurrency` requests; perf is the best round; the cache file is written and then reused', async () => {
    const m = await sim();
    const ws = workspace();
    const rounds: number[] = [];
    const r = await runBenchmark({
      handler: tgiHandler(10, { runs: 3, concurrency: 5 }),
      model: pool(m.url),
      workspaceDir: ws,
      onRound: (x, total) => rounds.push(x.round * 10 + total),
    });
    expect(r.error).toBeUndefined();
    expect(r.cached).toBe(false);
    expect(m.stats().started).toBe(1 + 3 * 5);
    expect(rounds).toEqual([13, 23, 33]);
    expect(r.rounds.map((x) => [x.requests, x.ok, x.workload])).toEqual([
      [5, 5, 50],
      [5, 5, 50],
      [5, 5, 50],
    ]);
    for (const x of r.rounds) expect(x.throughput).toBeCloseTo(x.workload / x.seconds, 6);
    expect(r.perf).toBe(Math.max(...r.rounds.map((x) => x.throughput)));
    expect(Number(readFileSync(join(ws, BENCHMARK_CACHE_FILE), 'utf8'))).toBe(r.perf);

    const again = await runBenchmark({ handler: tgiHandler(10, { runs: 3, concurrency: 5 }), model: pool(m.url), workspaceDir: ws });
    expect(again).toEqual({ perf: r.perf, rounds: [], cached: true });
    expect(m.stats().started).toBe(16);
  });

  it('counts only 200 answers, and with none at all errors with perf 0 and writes no cache', async () => {
    const m = await sim({ errorRate: 0.5, seed: 7 });
    const r = await runBenchmark({ handler: tgiHandler(10, { runs: 2, concurrency: 10, warmup: false }), model: pool(m.url), workspaceDir: workspace() });
    const ok = r.rounds.reduce((a, x) => a + x.ok, 0);
    expect(ok).toBe(20 - m.stats().errored);
    for (const x of r.rounds) expect(x.workload).toBe(x.ok * 10);

    const broken = await sim({ errorRate: 1 });
    const ws = workspace();
    const none = await runBenchmark({ handler: tgiHandler(10, { runs: 2, concurrency: 3 }), model: pool(broken.url), workspaceDir: ws });
    // Why, from the model's own answers: 7 of 7 failed (warm-up included), each a 500 with its body.
    expect(none.error).toMatch(/^No successful responses from benchmark: 7 of 7 requests failed; first: POST \/generate answered 500: \{.*simulated error/);
    expect(none.failures).toHaveLength(5);
    expect(none.failures![0]).toMatchObject({ at: 'warmup', status: 500 });
    expect(none.failures![1]).toMatchObject({ at: 1, status: 500 });
    expect(none.perf).toBe(0);
    expect(none.rounds).toHaveLength(2);
    expect(existsSync(join(ws, BENCHMARK_CACHE_FILE))).toBe(false);
  });

  it('ignores a cache file that holds no positive number; a model that is down is "no success", not a crash', async () => {
    const ws = workspace();
    for (const text of ['', 'abc', '0', '-5', 'NaN']) {
      writeFileSync(join(ws, BENCHMARK_CACHE_FILE), text);
      expect(await readCachedPerf(ws)).toBeNull();
    }
    writeFileSync(join(ws, BENCHMARK_CACHE_FILE), ' 1234.5\n');
    expect(await readCachedPerf(ws)).toBe(1234.5);
    const down = await runBenchmark({ handler: tgiHandler(10, { runs: 1, concurrency: 2 }), model: pool('http://127.0.0.1:9'), workspaceDir: workspace() });
    // Nobody listens on port 9: the connection error's code says so.
    expect(down.error).toMatch(
      /^No successful responses from benchmark: 3 of 3 requests failed; first: POST \/generate failed: connect ECONNREFUSED 127\.0\.0\.1:9/,
    );
    expect(down.failures!.every((f) => f.status === null)).toBe(true);
  });

  it('defaults: 8 runs of 10, and 1 at a time for a handler that is not parallel', () => {
    expect(resolveBenchmarkSettings(tgiHandler(1))).toEqual({ runs: 8, concurrency: 10 });
    expect(resolveBenchmarkSettings(tgiHandler(1, {}, false))).toEqual({ runs: 8, concurrency: 1 });
    expect(resolveBenchmarkSettings(tgiHandler(1, { runs: 3, concurrency: 7 }), 2)).toEqual({ runs: 2, concurrency: 7 });
    expect(progressLine(5, 8, 1234.56)).toBe('[#############.......] 5/8 rounds  best 1234.6 load/s');
  });

  it("measures the model's capacity when the concurrency saturates it, and less when it does not", async () => {
    // capacity 2000 tok/s, one request alone 200 tok/s: 10 requests or more saturate it.
    const m = await sim({ capacity: 2000, tokenRate: 200, ttftMs: 5 });
    const saturated = await runBenchmark({ handler: tgiHandler(100, { runs: 2, concurrency: 20, warmup: false }), model: pool(m.url) });
    // Only bounds a machine's speed cannot break (timers never fire early; a busy machine only
    // measures less): the accuracy (±5%) is measured by benchmarks/readiness-bench.ts.
    expect(saturated.perf / 2000).toBeLessThan(1.05);
    const starved = await runBenchmark({ handler: tgiHandler(100, { runs: 1, concurrency: 4, warmup: false }), model: pool(m.url) });
    // 4 requests × 200 tok/s = 800 tok/s at most.
    expect(starved.perf).toBeLessThan(810);
    // The same machine measured both: saturating the model measures more than starving it.
    expect(saturated.perf).toBeGreaterThan(starved.perf);
  });
});

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, [CLI, 'benchmark', ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolveRun({ code, stdout, stderr }));
    cleanups.defer(() => void child.kill('SIGKILL'));
  });
}

describe('benchmarkProgressPrinter', () => {
  it('off a terminal, says every few seconds that a phase is still waiting, with the answers so far', async () => {
    let out = '';
    const p = benchmarkProgressPrinter({ write: (s: string) => (out += s) }, { tty: false, tickMs: 10, waitingEveryMs: 40 });
    cleanups.defer(() => p.stop());
    p.onProgress({ kind: 'round-start', round: 1, total: 2, requests: 4, route: '/generate' });
    p.onProgress({ kind: 'request-done', round: 1, total: 2, done: 1, ok: 0, requests: 4, failure: { at: 1, status: 503, detail: 'loading' } });
    const until = Date.now() + 10_000;
    while (!out.includes('still waiting') && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    expect(out).toContain('benchmark round 1: POST /generate answered 503: loading\n');
    expect(out).toMatch(/benchmark round 1\/2: still waiting after \d+ s \(1\/4 answered, 0 ok\)\n/);
  });
});

describe('nodeworker benchmark', () => {
  it('prints a per-round table and the perf, one progress line per round when not on a terminal, exit 0', async () => {
    const m = await sim();
    const r = await runCli(['--handler', 'tgi', '--model-url', m.url, '--runs', '2', '--concurrency', '4', '--max-tokens', '12']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(`model ${m.url}, handler /generate`);
    expect(lines[1]).toMatch(/^round\s+ok\s+workload\s+seconds\s+load\/s$/);
    expect(lines[2]).toMatch(/^\s+1\s+4\/4\s+48\s+[\d.]+\s+[\d.]+$/);
    expect(lines[3]).toMatch(/^\s+2\s+4\/4\s+48\s+[\d.]+\s+[\d.]+$/);
    expect(lines[4]).toMatch(/^perf [\d.]+ load\/s$/);
    expect(Number(lines[4]!.split(' ')[1])).toBeGreaterThan(0);
    // Progress from the first second: the warm-up is announced before anything is answered.
    expect(r.stderr).toMatch(/^benchmark warm-up: one request to POST \/generate\nbenchmark warm-up: answered in [\d.]+ s\n/);
    expect(r.stderr).toMatch(/\nbenchmark round 1\/2: 4\/4 ok, [\d.]+ load\/s in [\d.]+ s\nbenchmark round 2\/2: 4\/4 ok/);
    expect(m.stats().started).toBe(1 + 2 * 4);
  });

  it('exits 1 when no request succeeded, 2 on bad arguments; --json prints the result', async () => {
    const broken = await sim({ errorRate: 1 });
    const bad = await runCli(['--handler', 'tgi', '--model-url', broken.url, '--runs', '1', '--concurrency', '2', '--max-tokens', '4']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(`perf 0.0 load/s  (${NO_SUCCESS_ERROR}: 3 of 3 requests failed; first: POST /generate answered 500: `);
    // The first failures are listed under the table, and printed as they happen.
    expect(bad.stdout).toMatch(/first failures:\n {2}warm-up: POST \/generate answered 500: .*simulated error/);
    expect(bad.stderr).toMatch(/benchmark round 1: POST \/generate answered 500: /);

    const args = await runCli(['--handler', 'tgi', '--runs', '0']);
    expect(args.code).toBe(2);
    expect(args.stderr).toContain('--runs must be a positive integer');
    expect((await runCli(['--handler', 'no-such-handler'])).code).toBe(2);

    const m = await sim();
    const ws = workspace();
    const json = await runCli([
      '--handler',
      'tgi',
      '--model-url',
      m.url,
      '--runs',
      '2',
      '--concurrency',
      '3',
      '--max-tokens',
      '5',
      '--json',
      '--use-cache',
      '--workspace',
      ws,
    ]);
    expect(json.code).toBe(0);
    const result = JSON.parse(json.stdout) as { perf: number; rounds: unknown[]; cached: boolean };
    expect(result.rounds).toHaveLength(2);
    expect(result.cached).toBe(false);
    expect(Number(readFileSync(join(ws, BENCHMARK_CACHE_FILE), 'utf8'))).toBe(result.perf);
    const cached = await runCli(['--handler', 'tgi', '--model-url', m.url, '--json', '--use-cache', '--workspace', ws]);
    expect(JSON.parse(cached.stdout)).toEqual({ perf: result.perf, rounds: [], cached: true });
  }, 120_000); // five CLI processes: a hang guard, not a speed bound (a busy machine takes 30 s+)

  it.skipIf(spawnSync('script', ['--version']).error !== undefined)('draws a progress bar on a terminal', async () => {
    const m = await sim();
    // `script` gives the CLI a pseudo-terminal, as a user's shell would.
    const cmd = `${process.execPath} ${CLI} benchmark --handler tgi --model-url ${m.url} --runs 2 --concurrency 2 --max-tokens 4`;
    const out = await new Promise<string>((resolveOut) => {
      const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.once('exit', () => resolveOut(text));
      cleanups.defer(() => void child.kill('SIGKILL'));
    });
    // Drawn from the first second: the warm-up, then each round's answers as they come.
    expect(out).toMatch(/\r\[\.{20}\] {2}warm-up request, 0 s/);
    expect(out).toMatch(/\r\[\.{20}\] 0\/2 rounds {2}best 0\.0 load\/s {2}round 1\/2(: \d\/2 answered, \d ok)?, \d+ s/);
    expect(out).toMatch(/\r\[#{10}\.{10}\] 1\/2 rounds {2}best [\d.]+ load\/s/);
    expect(out).toMatch(/\r\[#{20}\] 2\/2 rounds/);
    expect(out).not.toContain('benchmark round 1/2:');
  });
});
