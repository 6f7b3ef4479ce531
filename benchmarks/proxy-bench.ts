/**
 * Proxy benchmark: what a proxy in front of the model adds, measured side by side in one run.
 *
 *   direct:  load generator → model-sim
 *   nginx:   load generator → nginx (reverse proxy, upstream keep-alive; lib/nginx.ts) → model-sim
 *   worker:  load generator → worker CLI (openai handler) → model-sim
 *   bare:    load generator → a bare node:http + undici proxy → model-sim (the floor for a Node
 *            proxy of this protocol on this machine: lib/bare-proxy.ts)
 *
 * Every server is its own process, so a proxy's CPU per request comes from /proc/PID/stat (utime +
 * stime; nginx: master + worker) divided by the requests it served. The load comes from `wrk` (one
 * thread) when installed, else from an undici generator in its own process.
 *
 * Streamed answers: the same model-sim is slowed down (/sim/control) and requests to direct, nginx
 * and the worker take turns, one at a time, each event's arrival time recorded from a raw socket;
 * "added per chunk" is, per event index, the median arrival time through the proxy minus the
 * median arrival time direct, averaged over the events (the request's own trip included).
 *
 * Run: `npm run build && node build/benchmarks/proxy-bench.js [--duration S] [--warmup S] [--concurrency 1,64,256]
 *      [--generator wrk|undici] [--no-nginx] [--no-bare] [--worker-node-args '--cpu-prof ...']`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'node:net';
import { percentile } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { hasWrk, runLoad, type LoadResult } from './lib/loadgen.js';
import { startNginx, type NginxProxy } from './lib/nginx.js';
import { cpuSeconds, startProcess, type BenchProcess } from './lib/procs.js';
import { LIB_DIR, startCliWorker, startModelSim } from './lib/stack.js';

export type BenchTarget = 'direct' | 'nginx' | 'worker' | 'bare';

export interface ProxyBenchOptions {
  /** Seconds of each measured load (default 5). */
  durationS?: number;
  /** Seconds of warm-up load before each measured one (default 1). */
  warmupS?: number;
  /** Concurrency levels (default [1, 64, 256]). */
  concurrencies?: number[];
  generator?: 'auto' | 'wrk' | 'undici';
  /** The nginx binary (from lib/tools.ts); null leaves nginx out. */
  nginx?: string | null;
  /** Also measure the bare Node proxy (default true). */
  floor?: boolean;
  /** Streamed requests per target (default 60). */
  streamRequests?: number;
  /** Events per streamed answer (default 10) and the model's token rate for them (default 200/s). */
  streamTokens?: number;
  streamTokenRate?: number;
  /** Extra node flags for the worker process (e.g. ['--cpu-prof', '--cpu-prof-dir=DIR']). */
  workerNodeArgs?: string[];
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

export interface LoadRow {
  target: BenchTarget;
  concurrency: number;
  load: LoadResult;
  /** The proxy's CPU µs per request (null for direct). */
  proxyCpuUs: number | null;
  /** model-sim CPU µs per request (for scale). */
  modelCpuUs: number;
}

export interface StreamRow {
  target: BenchTarget;
  requests: number;
  events: number;
  /** Time to the first event, ms. */
  ttfbP50: number;
  ttfbP99: number;
  /** Mean over event indexes of (median arrival through this target − median arrival direct), ms. */
  addedPerChunkMs: number;
  /** The largest of those per-event differences, ms. */
  addedPerChunkMaxMs: number;
}

export interface ProxyBenchReport {
  generator: 'wrk' | 'undici';
  cores: number;
  targets: BenchTarget[];
  loads: LoadRow[];
  streams: StreamRow[];
  streamTokenRate: number;
}

const COMPLETION = { model: 'bench', prompt: 'Say hello.', max_tokens: 1 };
const AUTH = { cost: 100, endpoint: 'bench', reqnum: 1, request_idx: 1, signature: 'unsigned', url: 'http://127.0.0.1' };

/** The body each target gets: the worker wants the envelope, the others the bare payload. */
export function bodyFor(target: BenchTarget, payload: unknown): string {
  return JSON.stringify(target === 'worker' || target === 'bare' ? { auth_data: AUTH, payload } : payload);
}

/** Run the whole benchmark: starts and stops its own model-sim, nginx, worker and bare proxy. */
export async function runProxyBench(opts: ProxyBenchOptions = {}): Promise<ProxyBenchReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const durationS = opts.durationS ?? 5;
  const warmupS = opts.warmupS ?? 1;
  const concurrencies = opts.concurrencies ?? [1, 64, 256];
  const generator: 'wrk' | 'undici' = opts.generator === 'undici' || (opts.generator !== 'wrk' && !hasWrk()) ? 'undici' : 'wrk';
  const dir = mkdtempSync(join(tmpdir(), 'proxy-bench-'));
  const procs: Array<{ stop(): Promise<void> }> = [];
  try {
    const sim = await startModelSim({ dir });
    procs.push(sim);
    const worker = await startCliWorker({ dir, modelUrl: sim.ready, nodeArgs: opts.workerNodeArgs });
    procs.push(worker);
    let nginx: NginxProxy | null = null;
    if (opts.nginx) {
      nginx = await startNginx(opts.nginx, sim.ready, join(dir, 'nginx'));
      procs.push(nginx);
    }
    let bare: BenchProcess | null = null;
    if (opts.floor !== false) {
      bare = await startProcess(process.execPath, [join(LIB_DIR, 'bare-proxy.js'), sim.ready], { readyLine: /bare-proxy listening on (http:\/\/[\d.:]+)\s/ });
      procs.push(bare);
    }
    const targets: BenchTarget[] = ['direct', ...(nginx ? (['nginx'] as const) : []), 'worker', ...(bare ? (['bare'] as const) : [])];
    const origin = (t: BenchTarget) => (t === 'direct' ? sim.ready : t === 'nginx' ? nginx!.url : t === 'worker' ? worker.ready : bare!.ready);
    const proxyCpu = (t: BenchTarget): (() => number) | null =>
      t === 'worker' ? () => cpuSeconds(worker.pid) : t === 'bare' ? () => cpuSeconds(bare!.pid) : t === 'nginx' ? () => nginx!.cpuSeconds() : null;
    log(`proxy-bench: ${generator}; model-sim ${sim.ready}, worker ${worker.ready}${nginx ? `, nginx ${nginx.url}` : ''}${bare ? `, bare ${bare.ready}` : ''}`);

    const loads: LoadRow[] = [];
    for (const c of concurrencies) {
      for (const target of targets) {
        const url = `${origin(target)}/v1/completions`;
        const body = bodyFor(target, COMPLETION);
        const cpu = proxyCpu(target);
        if (warmupS > 0) await runLoad({ url, body, concurrency: c, durationS: warmupS }, generator);
        const p0 = cpu ? cpu() : 0;
        const m0 = cpuSeconds(sim.pid);
        const load = await runLoad({ url, body, concurrency: c, durationS }, generator);
        const p1 = cpu ? cpu() : 0;
        const m1 = cpuSeconds(sim.pid);
        const served = Math.max(1, load.requests - load.errors);
        const row: LoadRow = { target, concurrency: c, load, proxyCpuUs: cpu ? ((p1 - p0) * 1e6) / served : null, modelCpuUs: ((m1 - m0) * 1e6) / served };
        loads.push(row);
        log(
          `proxy-bench: ${target.padEnd(6)} c=${String(c).padEnd(3)} ${load.rps.toFixed(0).padStart(6)} req/s, p50 ${load.p50.toFixed(3)} ms, p99 ${load.p99.toFixed(3)} ms, errors ${load.errors}` +
            (row.proxyCpuUs !== null ? `, proxy CPU ${row.proxyCpuUs.toFixed(1)} µs/req` : ''),
        );
      }
    }

    // Streamed answers need a model that takes its time: the same model-sim, slowed down, behind
    // the same (warm) proxies.
    const tokenRate = opts.streamTokenRate ?? 200;
    const control = await fetch(`${sim.ready}/sim/control`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tokenRate }),
    });
    if (!control.ok) throw new Error(`model-sim refused /sim/control: ${control.status}`);
    const streamTargets = targets.filter((t) => t !== 'bare'); // the bare proxy buffers answers
    const streams = await measureStreams(streamTargets, origin, opts.streamRequests ?? 60, opts.streamTokens ?? 10);
    for (const s of streams)
      log(
        `proxy-bench: streamed ${s.target}: TTFB p50 ${s.ttfbP50.toFixed(3)} ms, added per chunk ${s.addedPerChunkMs.toFixed(3)} ms (max ${s.addedPerChunkMaxMs.toFixed(3)})`,
      );
    return { generator, cores: availableParallelism(), targets, loads, streams, streamTokenRate: tokenRate };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Streamed completions, the targets taking turns one request at a time (so drift on the machine
 * hits them alike); per request, the arrival time of every SSE event from the moment of sending.
 * The client is a raw keep-alive socket per target (an HTTP client library would add its own
 * delays between the socket and the timestamps); every target answers SSE with chunked encoding.
 */
export async function measureStreams(targets: BenchTarget[], origin: (t: BenchTarget) => string, n: number, tokens: number): Promise<StreamRow[]> {
  const payload = { model: 'bench', prompt: 'Say hello.', max_tokens: tokens, stream: true };
  const clients = new Map(await Promise.all(targets.map(async (t) => [t, await openStreamClient(origin(t), '/v1/completions', bodyFor(t, payload))] as const)));
  const arrivals = new Map<BenchTarget, number[][]>(targets.map((t) => [t, []]));
  try {
    const warmup = 10;
    for (let i = 0; i < n + warmup; i++) {
      for (const t of targets) {
        const times = await clients.get(t)!.next();
        if (i >= warmup) arrivals.get(t)!.push(times);
      }
    }
  } finally {
    for (const c of clients.values()) c.close();
  }
  const medianAt = (runs: number[][], k: number) => percentile(runs.map((r) => r[k] ?? Number.NaN).filter(Number.isFinite), 50);
  const direct = arrivals.get('direct')!;
  const events = Math.min(...[...arrivals.values()].flatMap((runs) => runs.map((r) => r.length)));
  return targets.map((t) => {
    const runs = arrivals.get(t)!;
    const diffs: number[] = [];
    for (let k = 0; k < events; k++) diffs.push(medianAt(runs, k) - medianAt(direct, k));
    const first = runs.map((r) => r[0] ?? Number.NaN).filter(Number.isFinite);
    return {
      target: t,
      requests: runs.length,
      events,
      ttfbP50: percentile(first, 50),
      ttfbP99: percentile(first, 99),
      addedPerChunkMs: diffs.length ? diffs.reduce((a, b) => a + b, 0) / diffs.length : Number.NaN,
      addedPerChunkMaxMs: diffs.length ? Math.max(...diffs) : Number.NaN,
    };
  });
}

/** One keep-alive connection sending the same streamed POST again and again; `next()` gives the event arrival times (ms). */
async function openStreamClient(url: string, path: string, body: string): Promise<{ next(): Promise<number[]>; close(): void }> {
  const u = new URL(url);
  const socket = connect({ host: u.hostname, port: Number(u.port), noDelay: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  const request = Buffer.from(
    `POST ${path} HTTP/1.1\r\nhost: ${u.host}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  return {
    next: () =>
      new Promise<number[]>((resolve, reject) => {
        const times: number[] = [];
        let tail = '';
        let status = '';
        const t0 = performance.now();
        const onData = (chunk: Buffer) => {
          const at = performance.now() - t0;
          const text = chunk.toString('latin1');
          if (!status) status = text.slice(0, 12);
          for (let k = text.indexOf('data:'); k >= 0; k = text.indexOf('data:', k + 5)) times.push(at);
          tail = (tail + text).slice(-7);
          if (tail.endsWith('\r\n0\r\n\r\n') || tail === '0\r\n\r\n') done(null);
        };
        const onClose = () => done(new Error(`${url} closed the stream`));
        const done = (err: Error | null) => {
          socket.off('data', onData);
          socket.off('close', onClose);
          if (err) return reject(err);
          if (status !== 'HTTP/1.1 200') return reject(new Error(`streamed request to ${url} answered ${status}`));
          resolve(times);
        };
        socket.on('data', onData);
        socket.once('close', onClose);
        socket.write(request);
      }),
    close: () => socket.destroy(),
  };
}

const f = (n: number | null | undefined, digits = 1) => (n === null || n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));

/** The benchmark's two tables (small JSON loads; streamed answers) in markdown. */
export function formatProxyBench(r: ProxyBenchReport): string {
  const lines: string[] = [];
  lines.push(
    `Small JSON completion (max_tokens 1), closed loop, ${r.generator === 'wrk' ? 'wrk (1 thread)' : 'undici generator (own process)'}, ${r.cores} cores.`,
    '',
  );
  lines.push('| target | concurrency | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req | model-sim CPU µs/req | load generator CPU µs/req |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const row of r.loads) {
    lines.push(
      `| ${row.target} | ${row.concurrency} | ${f(row.load.rps, 0)} | ${f(row.load.p50, 3)} | ${f(row.load.p99, 3)} | ${row.load.errors} | ${f(row.proxyCpuUs)} | ${f(row.modelCpuUs)} | ${f(row.load.generatorCpuUs)} |`,
    );
  }
  if (r.streams.length) {
    const s0 = r.streams[0]!;
    lines.push('', `Streamed completion: ${s0.events} events at ${r.streamTokenRate} tokens/s, ${s0.requests} requests per target taking turns.`, '');
    lines.push('| target | TTFB p50 ms | TTFB p99 ms | added per chunk over direct, mean ms | max ms |');
    lines.push('| --- | ---: | ---: | ---: | ---: |');
    for (const s of r.streams)
      lines.push(
        `| ${s.target} | ${f(s.ttfbP50, 3)} | ${f(s.ttfbP99, 3)} | ${s.target === 'direct' ? '–' : f(s.addedPerChunkMs, 3)} | ${s.target === 'direct' ? '–' : f(s.addedPerChunkMaxMs, 3)} |`,
      );
  }
  return lines.join('\n');
}

// Run directly: `node build/benchmarks/proxy-bench.js`.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs(
    'proxy-bench',
    '[--duration S] [--warmup S] [--concurrency 1,64,256] [--generator wrk|undici] [--no-nginx] [--no-bare] [--worker-node-args ARGS]',
    {
      duration: 'string',
      warmup: 'string',
      concurrency: 'string',
      generator: 'string',
      'no-nginx': 'boolean',
      'no-bare': 'boolean',
      'worker-node-args': 'string',
    },
  );
  const gen = args.generator;
  const { findCommand } = await import('./lib/tools.js');
  runProxyBench({
    durationS: typeof args.duration === 'string' ? Number(args.duration) : undefined,
    warmupS: typeof args.warmup === 'string' ? Number(args.warmup) : undefined,
    concurrencies: typeof args.concurrency === 'string' ? args.concurrency.split(',').map(Number) : undefined,
    generator: gen === 'wrk' || gen === 'undici' ? gen : 'auto',
    nginx: args['no-nginx'] ? null : findCommand('nginx'),
    floor: !args['no-bare'],
    workerNodeArgs: typeof args['worker-node-args'] === 'string' ? args['worker-node-args'].split(' ') : undefined,
  }).then(
    (report) => process.stdout.write(formatProxyBench(report) + '\n'),
    (err: Error) => {
      process.stderr.write(`proxy-bench failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
