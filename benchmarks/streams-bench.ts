/**
 * Thousands of concurrent open SSE streams through the worker: its resident memory and event-loop
 * lag while they flow (issue 7).
 *
 *   clients (own process, raw sockets) → worker CLI → model-sim (token-rate R per stream)
 *
 * Every process runs with its open-file limit raised (`ulimit -n` in a spawned shell: Node has no
 * setrlimit). Once every stream has its answer headers, the streams are held open for `holdS`
 * seconds while the worker's RSS (/proc/PID/status) is sampled, `/healthz` is timed, and at the end
 * the worker's own event-loop delay histogram is read from its /metrics (prom-client's
 * monitorEventLoopDelay, reset by the scrape before the hold, so it covers the hold alone; its
 * 10 ms sampling interval is subtracted: what is left is lag).
 *
 * Run: `npm run build && node build/benchmarks/streams-bench.js [--streams 5000] [--hold 10]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { percentile, sleep } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { cpuSeconds, rssBytes, schedSeconds, startProcess, type BenchProcess } from './lib/procs.js';
import type { SseClientsStats } from './lib/sse-clients.js';
import { LIB_DIR, startCliWorker, startModelSim } from './lib/stack.js';

export interface StreamsBenchOptions {
  /** Concurrent streams (default 5000). */
  streams?: number;
  /** Seconds the streams are held open and measured (default 10). */
  holdS?: number;
  /** Tokens/s of each stream (default 2: 2 events/s per stream through the worker). */
  tokenRate?: number;
  log?: (line: string) => void;
}

export interface StreamsBenchReport {
  streams: number;
  /** Streams whose answer headers arrived. */
  open: number;
  /** Streams that received at least one event by the end of the hold. */
  streaming: number;
  failed: number;
  /** Seconds to open every stream. */
  openS: number;
  tokenRate: number;
  /** Events per second through the worker during the hold. */
  eventsPerS: number;
  /** Worker RSS when ready and idle, and the highest sample during the hold, MB (2^20 bytes). */
  rssIdleMb: number;
  rssMb: number;
  /** (rss − idle) / open streams, KB. */
  rssPerStreamKb: number;
  /** Event-loop lag during the hold, from the worker's own histogram, ms. */
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
  /** GET /healthz round trips during the hold, ms. */
  healthzP50Ms: number;
  healthzP99Ms: number;
  /** The worker's CPU during the hold, as a share of one core. */
  workerCpuShare: number;
  /** Share of the hold the worker's main thread waited for a CPU (runnable, not running): machine contention. */
  workerRunQueueShare: number;
  /** CPU of model-sim and of the stream clients during the hold, shares of one core (for scale). */
  modelCpuShare: number;
  clientsCpuShare: number;
  /** 1-minute load average at the end of the hold. */
  loadAverage: number;
}

const FD_LIMIT = 65_535;
/** prom-client's monitorEventLoopDelay resolution: each sample is this interval plus the lag. */
const ELD_RESOLUTION_MS = 10;

/** Open `streams` SSE streams through a worker CLI and measure it while they flow. */
export async function runStreamsBench(opts: StreamsBenchOptions = {}): Promise<StreamsBenchReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const n = opts.streams ?? 5000;
  const holdS = opts.holdS ?? 10;
  const tokenRate = opts.tokenRate ?? 2;
  const dir = mkdtempSync(join(tmpdir(), 'streams-bench-'));
  const procs: BenchProcess[] = [];
  try {
    const sim = await startModelSim({ dir, tokenRate, fdLimit: FD_LIMIT });
    procs.push(sim);
    const worker = await startCliWorker({ dir, modelUrl: sim.ready, fdLimit: FD_LIMIT });
    procs.push(worker);
    await sleep(500);
    const rssIdle = rssBytes(worker.pid);
    // Long enough never to finish during the run: the clients close the streams.
    const body = JSON.stringify({
      auth_data: { cost: 100, endpoint: 'bench', reqnum: 1, request_idx: 1, signature: 'unsigned', url: 'http://127.0.0.1' },
      payload: { model: 'bench', prompt: 'Tell me a long story.', max_tokens: 100_000, stream: true },
    });
    log(`streams-bench: opening ${n} streams through ${worker.ready} (model-sim at ${tokenRate} tok/s per stream)`);
    const clients = await startProcess(process.execPath, [join(LIB_DIR, 'sse-clients.js')], {
      env: { ...process.env, BENCH_SSE: JSON.stringify({ url: worker.ready, path: '/v1/completions', body, count: n, openTimeoutMs: 15_000 + 2 * n }) },
      readyLine: /OPENED (\{.*\})/,
      timeoutMs: 60_000 + 2 * n,
      fdLimit: FD_LIMIT,
      stdin: true,
    });
    procs.push(clients);
    const opened = JSON.parse(clients.ready) as SseClientsStats;
    const lines = createInterface({ input: clients.child.stdout! });
    const nextStats = (): Promise<SseClientsStats> =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('sse-clients did not answer "stats"')), 10_000);
        const onLine = (line: string) => {
          if (!line.startsWith('STATS ')) return;
          clearTimeout(t);
          lines.off('line', onLine);
          resolve(JSON.parse(line.slice(6)) as SseClientsStats);
        };
        lines.on('line', onLine);
        clients.child.stdin!.write('stats\n');
      });
    log(`streams-bench: ${opened.open} open in ${(opened.openMs / 1000).toFixed(1)} s (${opened.failed} failed); holding ${holdS} s`);

    await sleep(1000); // every stream has had its first events
    await scrapeLag(worker.ready); // resets the worker's delay histogram: the next scrape covers the hold alone
    const s0 = await nextStats();
    const c0 = cpuSeconds(worker.pid);
    const q0 = schedSeconds(worker.pid);
    const m0 = cpuSeconds(sim.pid);
    const k0 = cpuSeconds(clients.pid);
    const t0 = performance.now();
    let rssMax = rssBytes(worker.pid);
    const healthz: number[] = [];
    while (performance.now() - t0 < holdS * 1000) {
      const h0 = performance.now();
      const r = await fetch(`${worker.ready}/healthz`).then(
        (x) => x.arrayBuffer(),
        () => null,
      );
      if (r) healthz.push(performance.now() - h0);
      rssMax = Math.max(rssMax, rssBytes(worker.pid));
      await sleep(200);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(worker.pid) - c0;
    const queued = schedSeconds(worker.pid).wait - q0.wait;
    const modelCpu = cpuSeconds(sim.pid) - m0;
    const clientsCpu = cpuSeconds(clients.pid) - k0;
    const s1 = await nextStats();
    const lag = await scrapeLag(worker.ready);
    clients.child.stdin!.end('close\n');
    const mb = (b: number) => b / 1024 / 1024;
    const report: StreamsBenchReport = {
      streams: n,
      open: s1.open,
      streaming: s1.streaming,
      failed: s1.failed,
      openS: opened.openMs / 1000,
      tokenRate,
      eventsPerS: (s1.events - s0.events) / seconds,
      rssIdleMb: mb(rssIdle),
      rssMb: mb(rssMax),
      rssPerStreamKb: (rssMax - rssIdle) / 1024 / Math.max(1, s1.open),
      lagP50Ms: lag.p50,
      lagP99Ms: lag.p99,
      lagMaxMs: lag.max,
      healthzP50Ms: percentile(healthz, 50),
      healthzP99Ms: percentile(healthz, 99),
      workerCpuShare: cpu / seconds,
      workerRunQueueShare: queued / seconds,
      modelCpuShare: modelCpu / seconds,
      clientsCpuShare: clientsCpu / seconds,
      loadAverage: loadavg()[0]!,
    };
    log(
      `streams-bench: ${report.streaming}/${n} streaming, ${report.eventsPerS.toFixed(0)} events/s, RSS ${report.rssMb.toFixed(1)} MB (idle ${report.rssIdleMb.toFixed(1)} MB), lag p99 ${report.lagP99Ms.toFixed(2)} ms, max ${report.lagMaxMs.toFixed(2)} ms; worker CPU ${(report.workerCpuShare * 100).toFixed(0)}%, waiting for a CPU ${(report.workerRunQueueShare * 100).toFixed(0)}% of the time; model-sim ${(report.modelCpuShare * 100).toFixed(0)}%, clients ${(report.clientsCpuShare * 100).toFixed(0)}%; load ${report.loadAverage.toFixed(1)}`,
    );
    return report;
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The worker's event-loop delay since the previous scrape, from its /metrics, minus the sampling interval (ms). */
async function scrapeLag(workerUrl: string): Promise<{ p50: number; p99: number; max: number }> {
  const text = await fetch(`${workerUrl}/metrics`).then((r) => r.text());
  const read = (name: string) => {
    const m = new RegExp(`^${name} ([\\d.e+-]+)$`, 'm').exec(text);
    return m ? Math.max(0, Number(m[1]) * 1000 - ELD_RESOLUTION_MS) : Number.NaN;
  };
  return { p50: read('nodejs_eventloop_lag_p50_seconds'), p99: read('nodejs_eventloop_lag_p99_seconds'), max: read('nodejs_eventloop_lag_max_seconds') };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs('streams-bench', '[--streams N] [--hold S] [--token-rate N]', { streams: 'string', hold: 'string', 'token-rate': 'string' });
  runStreamsBench({
    streams: typeof args.streams === 'string' ? Number(args.streams) : undefined,
    holdS: typeof args.hold === 'string' ? Number(args.hold) : undefined,
    tokenRate: typeof args['token-rate'] === 'string' ? Number(args['token-rate']) : undefined,
  }).then(
    (r) => process.stdout.write(JSON.stringify(r, null, 2) + '\n'),
    (err: Error) => {
      process.stderr.write(`streams-bench failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
