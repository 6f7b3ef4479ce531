/**
 * `npm run bench -- --vs nginx` (issue 24): the worker against nginx in one run, every row of the
 * issue's table three times, medians, spreads and ratios.
 *
 *   wrk (1 thread) → nginx (1 worker process, TLS 1.3 on its https port) → model-sim
 *   wrk (1 thread) → worker CLI (plain) / worker CLI (USE_SSL, same certificate) → model-sim
 *
 * One model-sim serves every proxy; the same self-signed RSA-2048 certificate (made here by openssl)
 * serves both HTTPS listeners. Within a run the targets take turns row by row, so drift on the
 * machine hits them alike; each row's ratio is computed per run (worker ÷ nginx) and the median of
 * the runs is printed with its spread (min–max). CPU per request is utime + stime from
 * /proc/PID/stat (nginx: master + worker) over the requests served.
 *
 * Rows: TLS keep-alive c=64; TLS with a new connection (full handshake: wrk resumes no sessions)
 * per request c=64; plain keep-alive c=64; plain c=1; SSE delay added per chunk and time to first
 * byte added, each over model-sim direct (raw keep-alive sockets, targets taking turns); 1,000 open
 * SSE streams at 10 events/s each (CPU share of one core and RSS while they flow). A PyWorker
 * already running in front of the same kind of model can be given (`--pyworker URL [--pyworker-pid
 * PID] [--pyworker-model URL]`, the last a nodeworker model-sim it proxies to): it gets the plain
 * c=64 row. `--worker-cli PATH` measures another build's dist/cli.js (a
 * before/after on one machine); model-sim is always this build's.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { sleep } from '#nodeworker/common/util.js';
import { runWrk, type LoadResult } from './lib/loadgen.js';
import { startNginx, type NginxProxy } from './lib/nginx.js';
import { childPids, cpuSeconds, rssBytes, startProcess, treeCpuSeconds, type BenchProcess } from './lib/procs.js';
import type { SseClientsStats } from './lib/sse-clients.js';
import { LIB_DIR, startCliWorker, startModelSim } from './lib/stack.js';
import { bodyFor, measureStreams } from './proxy-bench.js';
import type { VsNginxReport, VsRow } from './lib/vs-format.js';

export { formatVsNginx, meetsGoal, type VsNginxReport, type VsRow } from './lib/vs-format.js';

export interface VsNginxOptions {
  /** The nginx binary (lib/tools.ts). */
  nginx: string;
  /** Runs of every row (default 3). */
  runs?: number;
  /** Seconds of each measured load (default 5) and of the warm-up before it (default 1). */
  durationS?: number;
  warmupS?: number;
  /** Streamed requests per target per run for the SSE rows (default 40). */
  streamRequests?: number;
  /** Open streams and their hold, seconds (defaults 1000 and 5). */
  openStreams?: number;
  holdS?: number;
  /** Another build's CLI for the worker (default: this build's dist/cli.js). */
  workerCli?: string;
  /** A running PyWorker (plain HTTP) and its pid for CPU (optional). */
  pyworker?: { url: string; pid: number | null /** The model-sim it proxies to (counts its requests); null: wrk's count. */; modelUrl: string | null };
  log?: (line: string) => void;
}

const COMPLETION = { model: 'bench', prompt: 'Say hello.', max_tokens: 1 };
const FD_LIMIT = 65_535;

/** Run every row `runs` times; starts and stops model-sim, both workers and nginx. */
export async function runVsNginx(opts: VsNginxOptions): Promise<VsNginxReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const runs = opts.runs ?? 3;
  const durationS = opts.durationS ?? 5;
  const warmupS = opts.warmupS ?? 1;
  const dir = mkdtempSync(join(tmpdir(), 'vs-nginx-'));
  const procs: Array<{ stop(): Promise<void> }> = [];
  const loadStart = loadavg()[0]!;
  try {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const sim = await startModelSim({ dir, fdLimit: FD_LIMIT });
    procs.push(sim);
    // Each worker has a workspace of its own (its benchmark cache, logs and state files).
    const plain = await startCliWorker({ dir: mkdtempSync(join(dir, 'plain-')), modelUrl: sim.ready, cli: opts.workerCli, fdLimit: FD_LIMIT });
    procs.push(plain);
    const tls = await startCliWorker({
      dir: mkdtempSync(join(dir, 'tls-')),
      modelUrl: sim.ready,
      cli: opts.workerCli,
      fdLimit: FD_LIMIT,
      env: { USE_SSL: 'true', SSL_CERT_PATH: cert, SSL_KEY_PATH: key },
      ca: readFileSync(cert),
    });
    procs.push(tls);
    const nginx: NginxProxy = await startNginx(opts.nginx, sim.ready, join(dir, 'nginx'), { cert, key });
    procs.push(nginx);
    log(
      `vs-nginx: model-sim ${sim.ready}; worker ${plain.ready} and ${tls.ready}; nginx ${nginx.url} and ${nginx.tlsUrl}; ${runs} runs of ${durationS} s loads`,
    );

    const rows: VsRow[] = [];
    const row = (name: string, unit: string, kind: VsRow['kind'], goal: number): VsRow => {
      const r: VsRow = { name, unit, kind, goal, worker: [], nginx: [], compare: [], notes: [] };
      rows.push(r);
      return r;
    };
    const loads = [
      { r: row('TLS 1.3, keep-alive, c=64: CPU per request', 'µs', 'ratio', 1.5), tls: true, close: false, c: 64 },
      { r: row('TLS 1.3, new connection per request, c=64: CPU per request', 'µs', 'ratio', 1.3), tls: true, close: true, c: 64 },
      { r: row('plain, keep-alive, c=64: CPU per request', 'µs', 'ratio', 1.5), tls: false, close: false, c: 64 },
      { r: row('plain, c=1: CPU per request', 'µs', 'ratio', 2), tls: false, close: false, c: 1 },
    ];
    const sse = row('SSE: delay added per chunk over direct', 'ms', 'added', 0.1);
    const ttfb = row('SSE: time to first byte added over direct', 'ms', 'added', 0.3);
    const open = row(`${opts.openStreams ?? 1000} open streams, 10 events/s each: CPU share of a core`, '%', 'ratio', 1.3);
    const py = opts.pyworker ? { rps: [] as number[], cpuUs: [] as number[] } : null;

    // JIT warm-up before anything is measured (nginx needs none; the workers start cold).
    for (const origin of [plain.ready, tls.ready])
      await runWrk({ url: `${origin}/v1/completions`, body: bodyFor('worker', COMPLETION), concurrency: 64, durationS: 3 * warmupS });

    for (let run = 1; run <= runs; run++) {
      log(`vs-nginx: run ${run} of ${runs}`);
      await setTokenRate(sim.ready, 1e9);
      for (const l of loads) {
        const measured: Record<'worker' | 'nginx', LoadResult & { cpuUs: number }> = {} as never;
        for (const target of ['nginx', 'worker'] as const) {
          const origin = target === 'nginx' ? (l.tls ? nginx.tlsUrl! : nginx.url) : l.tls ? tls.ready : plain.ready;
          const cpu = target === 'nginx' ? () => nginx.cpuSeconds() : () => cpuSeconds((l.tls ? tls : plain).pid);
          measured[target] = await measureLoad(`${origin}/v1/completions`, bodyFor(target, COMPLETION), l.c, l.close, durationS, warmupS, cpu, sim.ready);
        }
        l.r.worker.push(measured.worker.cpuUs);
        l.r.nginx.push(measured.nginx.cpuUs);
        l.r.compare.push(measured.worker.cpuUs / measured.nginx.cpuUs);
        l.r.notes.push(
          `req/s ${measured.worker.rps.toFixed(0)} vs ${measured.nginx.rps.toFixed(0)}, errors ${measured.worker.errors}/${measured.nginx.errors}, p50 ${measured.worker.p50.toFixed(2)} vs ${measured.nginx.p50.toFixed(2)} ms, wrk CPU ${(measured.worker.generatorCpuUs ?? Number.NaN).toFixed(1)} vs ${(measured.nginx.generatorCpuUs ?? Number.NaN).toFixed(1)} µs/req`,
        );
        log(`vs-nginx:   ${l.r.name}: worker ${measured.worker.cpuUs.toFixed(1)} µs, nginx ${measured.nginx.cpuUs.toFixed(1)} µs; ${l.r.notes.at(-1)}`);
      }
      if (py) {
        const cpu = py && opts.pyworker!.pid ? () => treeCpuSeconds(opts.pyworker!.pid!) : () => Number.NaN;
        const m = await measureLoad(
          `${opts.pyworker!.url}/v1/completions`,
          bodyFor('worker', COMPLETION),
          64,
          false,
          durationS,
          warmupS,
          cpu,
          opts.pyworker!.modelUrl,
        );
        py.rps.push(m.rps);
        py.cpuUs.push(m.cpuUs);
        log(`vs-nginx:   PyWorker plain c=64: ${m.rps.toFixed(0)} req/s, ${m.cpuUs.toFixed(1)} µs CPU per request, errors ${m.errors}`);
      }

      // Streamed answers need a model that takes its time: 200 tokens/s, 10 events per answer.
      await setTokenRate(sim.ready, 200);
      const origin = (t: string) => (t === 'direct' ? sim.ready : t === 'nginx' ? nginx.url : plain.ready);
      const streams = await measureStreams(['direct', 'nginx', 'worker'], origin, opts.streamRequests ?? 40, 10);
      const s = Object.fromEntries(streams.map((x) => [x.target, x]));
      sse.worker.push(s.worker!.addedPerChunkMs);
      sse.nginx.push(s.nginx!.addedPerChunkMs);
      sse.compare.push(s.worker!.addedPerChunkMs - s.nginx!.addedPerChunkMs);
      ttfb.worker.push(s.worker!.ttfbP50 - s.direct!.ttfbP50);
      ttfb.nginx.push(s.nginx!.ttfbP50 - s.direct!.ttfbP50);
      ttfb.compare.push(s.worker!.ttfbP50 - s.direct!.ttfbP50);
      log(
        `vs-nginx:   SSE added per chunk: worker ${s.worker!.addedPerChunkMs.toFixed(3)} ms, nginx ${s.nginx!.addedPerChunkMs.toFixed(3)} ms; TTFB added: worker ${ttfb.worker.at(-1)!.toFixed(3)} ms, nginx ${ttfb.nginx.at(-1)!.toFixed(3)} ms`,
      );

      // Many slow streams: 10 tokens/s each.
      await setTokenRate(sim.ready, 10);
      const held: Record<'worker' | 'nginx', { share: number; rssMb: number; events: number; open: number }> = {} as never;
      for (const target of ['nginx', 'worker'] as const) {
        const pid = target === 'nginx' ? nginx.pid : plain.pid;
        const cpu = target === 'nginx' ? () => nginx.cpuSeconds() : () => cpuSeconds(plain.pid);
        const rss = target === 'nginx' ? () => [nginx.pid, ...childPids(nginx.pid)].reduce((a, p) => a + rssBytes(p), 0) : () => rssBytes(pid);
        // Streams long enough to outlast the hold, short enough to end on their own should a proxy
        // fail to pass the clients' close on to the model.
        const maxTokens = 10 * ((opts.holdS ?? 5) + 30);
        held[target] = await holdStreams(
          origin(target),
          bodyFor(target, { ...COMPLETION, max_tokens: maxTokens, stream: true }),
          opts.openStreams ?? 1000,
          opts.holdS ?? 5,
          cpu,
          rss,
        );
        // The next measurement starts once the model has seen every stream end.
        await waitModelIdle(sim.ready, 60_000);
      }
      open.worker.push(held.worker.share * 100);
      open.nginx.push(held.nginx.share * 100);
      open.compare.push(held.worker.share / held.nginx.share);
      open.notes.push(
        `RSS ${held.worker.rssMb.toFixed(0)} MB vs ${held.nginx.rssMb.toFixed(0)} MB, events/s ${held.worker.events.toFixed(0)} vs ${held.nginx.events.toFixed(0)}, streams open ${held.worker.open} vs ${held.nginx.open}`,
      );
      log(
        `vs-nginx:   open streams: worker ${(held.worker.share * 100).toFixed(1)}%, nginx ${(held.nginx.share * 100).toFixed(1)}% of a core; ${open.notes.at(-1)}`,
      );
    }
    return {
      date: new Date().toISOString(),
      cores: availableParallelism(),
      node: process.version,
      nginxVersion: nginxVersion(opts.nginx),
      workerCli: opts.workerCli ?? 'this build (dist/cli.js)',
      runs,
      durationS,
      loadStart,
      loadEnd: loadavg()[0]!,
      rows,
      pyworker: py,
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Wait until model-sim has no request in flight (GET /sim/stats). */
async function waitModelIdle(simUrl: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const stats = (await fetch(`${simUrl}/sim/stats`).then((r) => r.json())) as { inFlight: number };
    if (stats.inFlight === 0) return;
    if (Date.now() > until) throw new Error(`model-sim still has ${stats.inFlight} requests in flight after ${timeoutMs} ms`);
    await sleep(200);
  }
}

async function setTokenRate(simUrl: string, tokenRate: number): Promise<void> {
  const r = await fetch(`${simUrl}/sim/control`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tokenRate }) });
  if (!r.ok) throw new Error(`model-sim refused /sim/control: ${r.status}`);
}

/**
 * One wrk load of `warmupS + durationS` (+ a margin); the proxy's CPU µs per request and req/s are
 * taken over the `durationS` window in its middle, with the requests counted by model-sim (every
 * request of the load reaches it once). So wrk's connection set-up (64 TLS handshakes on a
 * keep-alive row) stays out of a keep-alive figure, where on a busy machine it would be most of it.
 */
async function measureLoad(
  url: string,
  body: string,
  concurrency: number,
  close: boolean,
  durationS: number,
  warmupS: number,
  cpu: () => number,
  simUrl: string | null,
): Promise<LoadResult & { cpuUs: number }> {
  if (simUrl === null) {
    // Nothing counts the requests mid-load (a PyWorker in front of a model we do not know): the whole load.
    const c0 = cpu();
    const whole = await runWrk({ url, body, concurrency, durationS: warmupS + durationS, close });
    return { ...whole, cpuUs: ((cpu() - c0) * 1e6) / Math.max(1, whole.requests - whole.errors) };
  }
  const load = runWrk({ url, body, concurrency, durationS: warmupS + durationS + 1, close });
  await sleep(warmupS * 1000 + 500);
  const c0 = cpu();
  const n0 = await modelFinished(simUrl);
  const t0 = performance.now();
  await sleep(durationS * 1000);
  const c1 = cpu();
  const n1 = await modelFinished(simUrl);
  const seconds = (performance.now() - t0) / 1000;
  const result = await load;
  const served = Math.max(1, n1 - n0);
  return { ...result, rps: served / seconds, cpuUs: ((c1 - c0) * 1e6) / served };
}

/** Requests model-sim has answered in full so far. */
async function modelFinished(simUrl: string): Promise<number> {
  return ((await fetch(`${simUrl}/sim/stats`).then((r) => r.json())) as { finished: number }).finished;
}

/** Open `n` SSE streams to `url` (lib/sse-clients.ts in its own process), hold them `holdS` seconds; the proxy's CPU share and peak RSS meanwhile. */
async function holdStreams(
  url: string,
  body: string,
  n: number,
  holdS: number,
  cpu: () => number,
  rss: () => number,
): Promise<{ share: number; rssMb: number; events: number; open: number }> {
  const clients: BenchProcess = await startProcess(process.execPath, [join(LIB_DIR, 'sse-clients.js')], {
    env: { ...process.env, BENCH_SSE: JSON.stringify({ url, path: '/v1/completions', body, count: n, openTimeoutMs: 15_000 + 2 * n }) },
    readyLine: /OPENED (\{.*\})/,
    timeoutMs: 60_000 + 2 * n,
    fdLimit: FD_LIMIT,
    stdin: true,
  });
  try {
    const lines = createInterface({ input: clients.child.stdout! });
    const stats = (): Promise<SseClientsStats> =>
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
    await sleep(1000); // every stream has had its first events
    const s0 = await stats();
    const c0 = cpu();
    const t0 = performance.now();
    let peak = rss();
    while (performance.now() - t0 < holdS * 1000) {
      await sleep(250);
      peak = Math.max(peak, rss());
    }
    const seconds = (performance.now() - t0) / 1000;
    const share = (cpu() - c0) / seconds;
    const s1 = await stats();
    // Streams that did not open in time (a machine busy with other work) are reported, not fatal.
    return { share, rssMb: peak / 1024 / 1024, events: (s1.events - s0.events) / seconds, open: s1.open };
  } finally {
    clients.child.stdin!.end('close\n');
    await clients.stop();
    await sleep(500); // the proxies see the closes before the next measurement
  }
}

/** `nginx -v` prints its version on stderr. */
function nginxVersion(nginx: string): string {
  const r = spawnSync(nginx, ['-v'], { encoding: 'utf8' });
  return /nginx\/([\w.]+)/.exec(`${r.stderr ?? ''}${r.stdout ?? ''}`)?.[1] ?? '?';
}
