/**
 * Proxy benchmark: what the worker adds on the request path, measured side by side in one run.
 *
 *   direct:  load generator → model-sim
 *   worker:  load generator → worker → model-sim
 *   bare:    load generator → a bare node:http + undici proxy → model-sim (the floor for a Node
 *            proxy on this machine: benchmarks/lib/bare-proxy.ts)
 *
 * model-sim and the worker run as separate processes (`node dist/cli.js ...`), so the worker's CPU
 * per proxied request comes from /proc/PID/stat (utime + stime) of the worker process alone,
 * divided by the requests it served. The load comes from `wrk` when installed (one thread), else
 * from an undici generator in its own process. Time to first byte of a streamed answer is measured
 * from this process, one request at a time.
 *
 * Run: `npm run build && node dist/benchmarks/proxy-bench.js [--duration S] [--generator wrk|undici]`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { parseArgs, percentile, sleep } from '../src/common/util.js';
import { hasWrk, runLoad, type LoadResult } from './lib/loadgen.js';
import { cpuSeconds, startProcess, type BenchProcess } from './lib/procs.js';

export interface ProxyBenchOptions {
  /** Seconds of each measured load (default 8). */
  durationS?: number;
  /** Seconds of warm-up load before each measured one (default 2). */
  warmupS?: number;
  /** Concurrency levels (default [1, 64]). */
  concurrencies?: number[];
  /** Streamed requests for the time-to-first-byte figure (default 300 per target). */
  ttfbRequests?: number;
  generator?: 'auto' | 'wrk' | 'undici';
  /** Also measure the bare Node proxy (default true). */
  floor?: boolean;
  /** The compiled CLI (default: dist/cli.js next to this file's dist/benchmarks/). */
  cliPath?: string;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

export type BenchTarget = 'direct' | 'worker' | 'bare';

export interface LoadRow {
  target: BenchTarget;
  concurrency: number;
  load: LoadResult;
  /** The proxy's CPU µs per request (worker and bare rows). */
  workerCpuUs: number | null;
  /** model-sim CPU µs per request (for scale). */
  modelCpuUs: number;
}

export interface TtfbRow {
  target: BenchTarget;
  requests: number;
  p50: number;
  p99: number;
}

export interface ProxyBenchReport {
  generator: 'wrk' | 'undici';
  cores: number;
  loads: LoadRow[];
  ttfb: TtfbRow[];
}

/** Targets the worker is compared against (issue 2); shown with the table, never asserted. */
export const PROXY_TARGETS = { cpuUsPerRequest: 50, throughputRatioC64: 0.5, addedP50MsC1: 0.3 } as const;

const COMPLETION = { model: 'bench', prompt: 'Say hello.', max_tokens: 1 };
const STREAMED = { model: 'bench', prompt: 'Say hello.', max_tokens: 16, stream: true };
const AUTH = { cost: 100, endpoint: 'bench', reqnum: 1, request_idx: 1, signature: 'unsigned', url: 'http://127.0.0.1' };

/** Run the whole benchmark: starts and stops its own model-sim and worker processes. */
export async function runProxyBench(opts: ProxyBenchOptions = {}): Promise<ProxyBenchReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const durationS = opts.durationS ?? 8;
  const warmupS = opts.warmupS ?? 2;
  const concurrencies = opts.concurrencies ?? [1, 64];
  const cli = opts.cliPath ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
  const generator: 'wrk' | 'undici' = opts.generator === 'undici' || (opts.generator !== 'wrk' && !hasWrk()) ? 'undici' : 'wrk';
  const dir = mkdtempSync(join(tmpdir(), 'proxy-bench-'));
  const procs: BenchProcess[] = [];
  try {
    log(`proxy-bench: load generator ${generator}; starting model-sim and worker from ${cli}`);
    const sim = await startProcess(
      process.execPath,
      [cli, 'model-sim', '--flavor', 'openai', '--port', '0', '--host', '127.0.0.1', '--load-seconds', '0', '--token-rate', '1000000',
        '--capacity', '1000000000', '--ttft-ms', '0', '--log-file', join(dir, 'model.log')],
      { readyLine: /model-sim listening on (http:\/\/[\d.:]+)\s/ },
    );
    procs.push(sim);
    const modelUrl = sim.ready;
    await waitHttp(`${modelUrl}/health`, 200, 20_000);

    writeFileSync(join(dir, '.has_benchmark'), '1000000000');
    const worker = await startProcess(process.execPath, [cli, 'worker', '--handler', 'openai', '--model-url', modelUrl], {
      env: {
        ...process.env, WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '1', UNSECURED: 'true', WORKSPACE_DIR: dir,
        REPORT_ADDR: '', MODEL_LOG: '', LOG_LEVEL: 'info', LOG_FILE: join(dir, 'worker.log'),
      },
      // The worker logs to a file here; its URL is read from that file below.
    });
    procs.push(worker);
    const workerUrl = await waitLogUrl(join(dir, 'worker.log'), 20_000);
    await waitReady(workerUrl, 30_000);
    log(`proxy-bench: model-sim ${modelUrl} (pid ${sim.pid}), worker ${workerUrl} (pid ${worker.pid})`);
    let bare: BenchProcess | null = null;
    if (opts.floor !== false) {
      bare = await startProcess(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), 'lib', 'bare-proxy.js'), modelUrl], {
        readyLine: /bare-proxy listening on (http:\/\/[\d.:]+)\s/,
      });
      procs.push(bare);
    }
    const targets: BenchTarget[] = bare ? ['direct', 'worker', 'bare'] : ['direct', 'worker'];
    const origin = (t: BenchTarget) => (t === 'direct' ? modelUrl : t === 'worker' ? workerUrl : bare!.ready);
    const proxyPid = (t: BenchTarget) => (t === 'worker' ? worker.pid : t === 'bare' ? bare!.pid : null);

    const directBody = JSON.stringify(COMPLETION);
    const workerBody = JSON.stringify({ auth_data: AUTH, payload: COMPLETION });
    const loads: LoadRow[] = [];
    for (const c of concurrencies) {
      for (const target of targets) {
        const url = `${origin(target)}/v1/completions`;
        const body = target === 'direct' ? directBody : workerBody;
        const pid = proxyPid(target);
        if (warmupS > 0) await runLoad({ url, body, concurrency: c, durationS: warmupS }, generator);
        const w0 = pid === null ? 0 : cpuSeconds(pid);
        const m0 = cpuSeconds(sim.pid);
        const load = await runLoad({ url, body, concurrency: c, durationS }, generator);
        const w1 = pid === null ? 0 : cpuSeconds(pid);
        const m1 = cpuSeconds(sim.pid);
        const served = Math.max(1, load.requests - load.errors);
        const row: LoadRow = {
          target,
          concurrency: c,
          load,
          workerCpuUs: pid === null ? null : ((w1 - w0) * 1e6) / served,
          modelCpuUs: ((m1 - m0) * 1e6) / served,
        };
        loads.push(row);
        log(`proxy-bench: ${target} c=${c}: ${load.rps.toFixed(0)} req/s, p50 ${load.p50.toFixed(3)} ms, p99 ${load.p99.toFixed(3)} ms, errors ${load.errors}` +
          (row.workerCpuUs !== null ? `, proxy CPU ${row.workerCpuUs.toFixed(1)} µs/req` : ''));
      }
    }

    const ttfb: TtfbRow[] = [];
    // The bare proxy buffers answers, so only direct and worker stream.
    for (const target of ['direct', 'worker'] as const) {
      const body = JSON.stringify(target === 'direct' ? STREAMED : { auth_data: AUTH, payload: STREAMED });
      const times = await measureTtfb(origin(target), '/v1/completions', body, opts.ttfbRequests ?? 300);
      ttfb.push({ target, requests: times.length, p50: percentile(times, 50), p99: percentile(times, 99) });
      log(`proxy-bench: streamed TTFB ${target}: p50 ${percentile(times, 50).toFixed(3)} ms`);
    }
    return { generator, cores: (await import('node:os')).availableParallelism(), loads, ttfb };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Time from sending a streamed request to its first body chunk, one request at a time. */
async function measureTtfb(origin: string, path: string, body: string, n: number): Promise<number[]> {
  const pool = new Pool(origin, { connections: 1, pipelining: 1 });
  const times: number[] = [];
  try {
    for (let i = 0; i < n + 20; i++) {
      const t0 = performance.now();
      const r = await pool.request({ path, method: 'POST', headers: { 'content-type': 'application/json' }, body });
      let first = -1;
      for await (const _chunk of r.body) {
        if (first < 0) first = performance.now() - t0;
      }
      if (r.statusCode !== 200) throw new Error(`streamed request to ${origin}${path} answered ${r.statusCode}`);
      if (i >= 20) times.push(first); // the first 20 warm up the connection and the JIT
    }
  } finally {
    await pool.close();
  }
  return times;
}

async function waitHttp(url: string, status: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.status === status) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > until) throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

async function waitLogUrl(file: string, timeoutMs: number): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const m = /"url":"(http:\/\/[\d.:]+)"[^\n]*"msg":"worker listening"/.exec(text);
    if (m) return m[1]!;
    if (Date.now() > until) throw new Error(`the worker did not log its URL within ${timeoutMs} ms; log:\n${text.slice(-2000)}`);
    await sleep(50);
  }
}

async function waitReady(workerUrl: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const state = await fetch(`${workerUrl}/healthz`).then((r) => r.json() as Promise<{ state: string }>, () => null);
    if (state?.state === 'ready') return;
    if (Date.now() > until) throw new Error(`the worker was not ready within ${timeoutMs} ms (state ${state?.state ?? 'unreachable'})`);
    await sleep(100);
  }
}

const f = (n: number | null, digits = 1) => (n === null || !Number.isFinite(n) ? '–' : n.toFixed(digits));

/** The report as a markdown table, with the targets and how the worker compares. */
export function formatProxyBench(r: ProxyBenchReport): string {
  const lines: string[] = [];
  lines.push(`Load generator: **${r.generator === 'wrk' ? 'wrk (1 thread)' : 'undici (separate process)'}**, ${r.cores} cores, small non-streaming completion (max_tokens 1).`);
  lines.push('');
  lines.push('| target | concurrency | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req | model-sim CPU µs/req |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const row of r.loads) {
    lines.push(`| ${row.target} | ${row.concurrency} | ${f(row.load.rps, 0)} | ${f(row.load.p50, 3)} | ${f(row.load.p99, 3)} | ${row.load.errors} | ${f(row.workerCpuUs)} | ${f(row.modelCpuUs)} |`);
  }
  lines.push('');
  lines.push('| streamed time to first byte | requests | p50 ms | p99 ms |');
  lines.push('| --- | ---: | ---: | ---: |');
  for (const t of r.ttfb) lines.push(`| ${t.target} | ${t.requests} | ${f(t.p50, 3)} | ${f(t.p99, 3)} |`);
  lines.push('');
  const at = (target: BenchTarget, c: number) => r.loads.find((l) => l.target === target && l.concurrency === c);
  const d64 = at('direct', 64);
  const w64 = at('worker', 64);
  const b64 = at('bare', 64);
  const cpu = w64?.workerCpuUs ?? Number.NaN;
  const d1 = at('direct', 1);
  const w1 = at('worker', 1);
  const ratio = d64 && w64 ? w64.load.rps / d64.load.rps : Number.NaN;
  const added = d1 && w1 ? w1.load.p50 - d1.load.p50 : Number.NaN;
  const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
  lines.push('| target (issue 2) | goal | measured | |');
  lines.push('| --- | --- | --- | --- |');
  lines.push(`| worker CPU per proxied request, c=64 | ≤ ${PROXY_TARGETS.cpuUsPerRequest} µs | ${f(cpu)} µs (c=1: ${f(w1?.workerCpuUs ?? null)} µs; bare Node proxy c=64: ${f(b64?.workerCpuUs ?? null)} µs) | ${mark(cpu <= PROXY_TARGETS.cpuUsPerRequest)} |`);
  const bareRatio = d64 && b64 ? b64.load.rps / d64.load.rps : Number.NaN;
  lines.push(`| throughput through the worker vs direct, c=64 | ≥ ${PROXY_TARGETS.throughputRatioC64}x | ${f(ratio, 2)}x (bare Node proxy: ${f(bareRatio, 2)}x) | ${mark(ratio >= PROXY_TARGETS.throughputRatioC64)} |`);
  lines.push(`| added p50 latency, c=1 | ≤ ${PROXY_TARGETS.addedP50MsC1} ms | ${f(added, 3)} ms | ${mark(added <= PROXY_TARGETS.addedP50MsC1)} |`);
  return lines.join('\n');
}

// Run directly: `node dist/benchmarks/proxy-bench.js`.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = parseArgs(process.argv.slice(2));
  const gen = args.generator;
  runProxyBench({
    durationS: typeof args.duration === 'string' ? Number(args.duration) : undefined,
    warmupS: typeof args.warmup === 'string' ? Number(args.warmup) : undefined,
    generator: gen === 'wrk' || gen === 'undici' ? gen : 'auto',
  }).then(
    (report) => process.stdout.write(formatProxyBench(report) + '\n'),
    (err: Error) => {
      process.stderr.write(`proxy-bench failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
