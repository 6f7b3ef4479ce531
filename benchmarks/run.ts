/**
 * The performance suite (issue 7): `npm run bench`. Runs every measurement in one go on loopback,
 * side by side (model-sim direct, nginx in front of it, the worker in front of it, and a bare Node
 * proxy as the floor), prints one table, then each target with its measured ratio and PASS/MISS.
 *
 *   npm run bench                       # the full suite (~4 minutes)
 *   node build/benchmarks/run.js --quick # a few seconds: tiny loads, undici generator (the smoke test)
 *   options: --generator wrk|undici  --duration S  --json FILE  --skip a,b (proxy, streams, readiness, overhead, ablation, engine, extras, simulate)
 *
 * Installs Debian's nginx and wrk with apt-get when missing (not in --quick mode).
 *
 *   npm run bench -- --vs nginx          # the worker against nginx, every row 3 times: medians, spreads, ratios (vs-nginx.ts)
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.js';
import { measureLogwatchLatency, type LogwatchLatency } from './logwatch-latency.js';
import { formatAblation, runAblationBench, type AblationReport } from './ablation-bench.js';
import { evaluateEngineScale, formatEngineScale, runEngineScale, type EngineScaleReport } from './engine-scale.js';
import { runOverheadBench, type OverheadReport } from './overhead-bench.js';
import { formatProxyBench, runProxyBench, type BenchTarget, type ProxyBenchReport } from './proxy-bench.js';
import { measurePerfAccuracy, measureReadyLatency, type AccuracyRow, type ReadyLatency } from './readiness-bench.js';
import { runStreamsBench, type StreamsBenchReport } from './streams-bench.js';
import { ensureCommand } from './lib/tools.js';
import { LIB_DIR } from './lib/stack.js';
import { SIMULATE_TARGETS, type SimulateScaleResult } from './simulate-scale.js';

export type SuiteSection = 'proxy' | 'streams' | 'readiness' | 'overhead' | 'ablation' | 'engine' | 'extras' | 'simulate';
export const SECTIONS: SuiteSection[] = ['proxy', 'streams', 'readiness', 'overhead', 'ablation', 'engine', 'extras', 'simulate'];

export interface SuiteOptions {
  /** A tiny run (seconds): short loads, few samples, no installs, no slow extras. */
  quick?: boolean;
  generator?: 'auto' | 'wrk' | 'undici';
  /** Seconds of each measured load of the proxy benchmark. */
  durationS?: number;
  skip?: SuiteSection[];
  /** Install nginx/wrk with apt-get when missing (default: true unless quick). */
  install?: boolean;
  log?: (line: string) => void;
}

/** Where and when the suite ran. */
export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  node: string;
  /** 1-minute load average at the start and at the end of the run. */
  loadStart: number;
  loadEnd: number;
  date: string;
}

/** The extra figures from the older single-purpose benchmarks. */
export interface ExtrasReport {
  logwatch: LogwatchLatency | null;
  /** Ledger + metrics hooks, ns CPU per request (reporting-cost.js). */
  hooksNs: { ledger: number; withMetrics: number } | null;
  /** /delete_requests/ backlog bytes per request_idx (backlog-memory.js). */
  backlogBytesPerId: number | null;
  /** Throughput and CPU cost of the unreported-ids file, percent (unreported-cost.js). */
  unreportedCost: { rpsPercent: number; cpuPercent: number; fileCpuPercent: number } | null;
}

export interface SuiteReport {
  quick: boolean;
  machine: MachineInfo;
  seconds: number;
  proxy: ProxyBenchReport | null;
  streams: StreamsBenchReport | null;
  ready: ReadyLatency | null;
  accuracy: AccuracyRow[] | null;
  overhead: OverheadReport | null;
  /** What each request-path optimisation buys (before/after in this run). */
  ablation: AblationReport | null;
  /** The autoscaler at scale: /route/ with 1,000 workers and 10,000 open requests (engine-scale.js). */
  engine: EngineScaleReport | null;
  extras: ExtrasReport | null;
  /** One simulated hour of the code trace at ×100 (quick mode: ×1), in its own process (simulate-scale.js). */
  simulate: SimulateScaleResult | null;
  /** Sections that failed, with the reason (the rest of the suite still runs). */
  failures: Array<{ section: SuiteSection; error: string }>;
}

/** The targets, as numbers (see `evaluateTargets`). */
export const TARGETS = {
  cpuVsNginx: 2.5,
  pyworkerRps: 1600,
  throughputVsPyworker: 20,
  addedP50MsC1: 0.3,
  addedPerChunkMs: 1,
  streams: 5000,
  streamsRssMb: 256,
  readyMs: 50,
  perfTolerance: 0.05,
  partsCost: 0.05,
} as const;

export interface TargetResult {
  name: string;
  goal: string;
  measured: string;
  /** The ratio or figure compared with the goal; NaN when not measured. */
  value: number;
  status: 'PASS' | 'MISS' | 'n/a';
}

function machine(): Omit<MachineInfo, 'loadEnd' | 'seconds'> {
  let cpuModel = 'unknown';
  try {
    cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpuModel;
  } catch {
    /* not Linux */
  }
  return { nproc: availableParallelism(), cpuModel, node: process.version, loadStart: loadavg()[0]!, date: new Date().toISOString() };
}

/** Run the suite; a section that fails is recorded and the others still run. */
export async function runSuite(opts: SuiteOptions = {}): Promise<SuiteReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const quick = opts.quick ?? false;
  const skip = new Set(opts.skip ?? []);
  const install = opts.install ?? !quick;
  const t0 = performance.now();
  const m = machine();
  log(`bench: ${m.nproc} cores (${m.cpuModel}), node ${m.node}, load average ${m.loadStart.toFixed(2)}${quick ? ', quick mode' : ''}`);
  const generator = opts.generator ?? (quick ? 'undici' : 'auto');
  if (generator !== 'undici' && !ensureCommand('wrk', 'wrk', { install, log })) log('bench: wrk is not available: the undici generator is used');
  const nginx = skip.has('proxy') ? null : ensureCommand('nginx', 'nginx', { install, log });
  if (!skip.has('proxy') && !nginx) log('bench: nginx is not available: its rows are left out');

  const report: SuiteReport = {
    quick,
    machine: { ...m, loadEnd: Number.NaN },
    seconds: 0,
    proxy: null,
    streams: null,
    ready: null,
    accuracy: null,
    overhead: null,
    ablation: null,
    engine: null,
    extras: null,
    simulate: null,
    failures: [],
  };
  const section = async (name: SuiteSection, fn: () => Promise<void>) => {
    if (skip.has(name)) return;
    const s0 = performance.now();
    try {
      await fn();
    } catch (err) {
      const error = (err as Error).message ?? String(err);
      report.failures.push({ section: name, error });
      log(`bench: ${name} failed: ${error}`);
    }
    log(`bench: ${name} took ${((performance.now() - s0) / 1000).toFixed(1)} s`);
  };

  await section('proxy', async () => {
    report.proxy = await runProxyBench(
      quick
        ? {
            durationS: opts.durationS ?? 0.5,
            warmupS: 0,
            concurrencies: [1, 8],
            generator,
            nginx,
            floor: false,
            streamRequests: 5,
            streamTokens: 4,
            streamTokenRate: 500,
            log,
          }
        : { durationS: opts.durationS ?? 5, warmupS: 1, concurrencies: [1, 64, 256], generator, nginx, log },
    );
  });
  await section('streams', async () => {
    report.streams = await runStreamsBench(quick ? { streams: 50, holdS: 1, tokenRate: 5, log } : { streams: TARGETS.streams, holdS: 10, tokenRate: 2, log });
  });
  await section('readiness', async () => {
    report.ready = await measureReadyLatency(quick ? 2 : 20);
    log(`bench: ready line → ready p50 ${report.ready.p50Ms} ms, p99 ${report.ready.p99Ms} ms`);
    if (!quick) {
      report.accuracy = await measurePerfAccuracy({ capacities: [500, 5000, 50_000] });
      for (const r of report.accuracy) log(`bench: perf at capacity ${r.capacity}: ${r.perf} (ratio ${r.ratio})`);
    }
  });
  await section('overhead', async () => {
    report.overhead = await runOverheadBench(
      quick
        ? { durationS: 0.5, warmupS: 0, rounds: 1, concurrency: 8, generator, log }
        : { durationS: 3, warmupS: 1, rounds: 6, concurrency: 64, generator, log },
    );
  });
  await section('ablation', async () => {
    report.ablation = await runAblationBench(
      quick
        ? { durationS: 0.3, warmupS: 0, rounds: 1, concurrency: 8, generator, log }
        : { durationS: 3, warmupS: 1, rounds: 3, concurrency: 64, generator, log },
    );
  });
  await section('engine', async () => {
    report.engine = await runEngineScale(
      quick
        ? { workers: 100, open: 1000, durationS: 2, concurrency: 8, generator, log }
        : { workers: 1000, open: 10_000, durationS: opts.durationS ?? 10, concurrency: 64, generator, log },
    );
  });
  await section('extras', async () => {
    const extras: ExtrasReport = { logwatch: null, hooksNs: null, backlogBytesPerId: null, unreportedCost: null };
    extras.logwatch = await measureLogwatchLatency(quick ? 5 : 50);
    if (!quick) {
      const cost = await runJsonScript(join(LIB_DIR, '..', 'reporting-cost.js'), ['--seconds', '1', '--rounds', '1']);
      extras.hooksNs = { ledger: Number(cost.hooksLedgerNs), withMetrics: Number(cost.hooksWithMetricsNs) };
      const backlog = await runJsonScript(join(LIB_DIR, '..', 'backlog-memory.js'), []);
      extras.backlogBytesPerId = Number(backlog.idQueueBytesPerId);
      const unreported = await runJsonScript(join(LIB_DIR, '..', 'unreported-cost.js'), ['--duration', '2', '--rounds', '4']);
      extras.unreportedCost = {
        rpsPercent: Number(unreported.rpsCostPercent),
        cpuPercent: Number(unreported.cpuCostPercent),
        fileCpuPercent: Number(unreported.fileCpuPercentOfRequest),
      };
    }
    report.extras = extras;
  });
  await section('simulate', async () => {
    const r = await runJsonScript(join(LIB_DIR, '..', 'simulate-scale.js'), ['--rate', quick ? '1' : '100']);
    report.simulate = r as unknown as SimulateScaleResult;
    log(`bench: simulate ×${r.rate}: ${r.wallSeconds} s wall, ${r.cpuSeconds} s CPU (${r.gcSeconds} s GC), peak RSS ${r.maxRssMb} MB`);
  });
  report.machine.loadEnd = loadavg()[0]!;
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

/** Run a compiled benchmark script and parse the last JSON object line it prints. */
function runJsonScript(script: string, args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.once('error', reject);
    child.once('exit', (code) => {
      const line = out
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{'));
      if (code !== 0 || !line) return reject(new Error(`${script} exited ${code}: ${err.slice(-500)}`));
      resolve(JSON.parse(line) as Record<string, unknown>);
    });
  });
}

const f = (n: number | null | undefined, digits = 1) => (n === null || n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));

/** Each target of the issue with the measured figure, its ratio to the goal's base, and PASS/MISS. */
export function evaluateTargets(r: SuiteReport): TargetResult[] {
  const out: TargetResult[] = [];
  const judge = (name: string, goal: string, value: number, ok: (v: number) => boolean, measured: string) =>
    out.push({ name, goal, measured, value, status: Number.isFinite(value) ? (ok(value) ? 'PASS' : 'MISS') : 'n/a' });
  const loads = r.proxy?.loads ?? [];
  const at = (t: BenchTarget, c: number) => loads.find((l) => l.target === t && l.concurrency === c);
  const cMid = loads.some((l) => l.concurrency === 64) ? 64 : Math.max(...loads.map((l) => l.concurrency), 0);

  const w = at('worker', cMid);
  const n = at('nginx', cMid);
  const cpuRatio = (w?.proxyCpuUs ?? Number.NaN) / (n?.proxyCpuUs ?? Number.NaN);
  judge(
    `worker CPU per proxied request vs nginx (c=${cMid})`,
    `≤ ${TARGETS.cpuVsNginx}x`,
    cpuRatio,
    (v) => v <= TARGETS.cpuVsNginx,
    `${f(w?.proxyCpuUs)} µs vs ${f(n?.proxyCpuUs)} µs = ${f(cpuRatio, 2)}x`,
  );

  const tput = (w?.load.rps ?? Number.NaN) / TARGETS.pyworkerRps;
  const d = at('direct', cMid);
  // The CPU every request costs on this machine through the worker: load generator + worker + model.
  const budget = w ? (w.load.generatorCpuUs ?? Number.NaN) + (w.proxyCpuUs ?? Number.NaN) + w.modelCpuUs : Number.NaN;
  const ceiling = (r.machine.nproc * 1e6) / budget;
  judge(
    `worker throughput (c=${cMid}) vs PyWorker's ${TARGETS.pyworkerRps} req/s`,
    `≥ ${TARGETS.throughputVsPyworker}x`,
    tput,
    (v) => v >= TARGETS.throughputVsPyworker,
    `${f(w?.load.rps, 0)} req/s = ${f(tput, 2)}x (nginx ${f((n?.load.rps ?? Number.NaN) / TARGETS.pyworkerRps, 2)}x, model-sim direct ${f((d?.load.rps ?? Number.NaN) / TARGETS.pyworkerRps, 2)}x; ` +
      `CPU per request: wrk ${f(w?.load.generatorCpuUs)} + worker ${f(w?.proxyCpuUs)} + model-sim ${f(w?.modelCpuUs)} µs = ${f(budget)} µs, so ${r.machine.nproc} cores allow ≤ ${f(ceiling, 0)} req/s)`,
  );

  const added = (at('worker', 1)?.load.p50 ?? Number.NaN) - (at('direct', 1)?.load.p50 ?? Number.NaN);
  judge(
    'p50 latency added over direct (c=1)',
    `≤ ${TARGETS.addedP50MsC1} ms`,
    added,
    (v) => v <= TARGETS.addedP50MsC1,
    `${f(at('worker', 1)?.load.p50, 3)} − ${f(at('direct', 1)?.load.p50, 3)} = ${f(added, 3)} ms (${f(added / TARGETS.addedP50MsC1, 2)}x the limit)`,
  );

  const ws = r.proxy?.streams.find((s) => s.target === 'worker');
  judge(
    'streaming: delay added per chunk over direct',
    `≤ ${TARGETS.addedPerChunkMs} ms`,
    ws?.addedPerChunkMs ?? Number.NaN,
    (v) => v <= TARGETS.addedPerChunkMs,
    `${f(ws?.addedPerChunkMs, 3)} ms mean, ${f(ws?.addedPerChunkMaxMs, 3)} ms worst event (TTFB ${f(ws?.ttfbP50, 3)} ms)`,
  );

  const s = r.streams;
  const allOpen = s ? s.open >= s.streams && s.streaming >= s.streams : false;
  judge(
    `${s?.streams ?? TARGETS.streams} concurrent SSE streams: worker RSS`,
    `≤ ${TARGETS.streamsRssMb} MB, all streaming`,
    s ? s.rssMb : Number.NaN,
    (v) => v <= TARGETS.streamsRssMb && allOpen,
    s ? `${f(s.rssMb)} MB = ${f(s.rssMb / TARGETS.streamsRssMb, 2)}x the limit; ${s.streaming}/${s.streams} streaming, lag p99 ${f(s.lagP99Ms, 2)} ms` : '–',
  );

  judge(
    'model ready line → worker ready (p99)',
    `≤ ${TARGETS.readyMs} ms`,
    r.ready?.p99Ms ?? Number.NaN,
    (v) => v <= TARGETS.readyMs,
    r.ready ? `${f(r.ready.p99Ms, 2)} ms (p50 ${f(r.ready.p50Ms, 2)}, ${r.ready.samples} samples)` : '–',
  );

  const worst = r.accuracy?.length ? r.accuracy.reduce((a, b) => (Math.abs(b.ratio - 1) > Math.abs(a.ratio - 1) ? b : a)) : null;
  judge(
    'benchmark perf vs configured capacity (worst)',
    `within ±${TARGETS.perfTolerance * 100}%`,
    worst ? worst.ratio : Number.NaN,
    (v) => Math.abs(v - 1) <= TARGETS.perfTolerance,
    r.accuracy?.length ? r.accuracy.map((a) => `${a.capacity}: ${a.ratio.toFixed(3)}`).join(', ') : '–',
  );

  const sim = r.simulate;
  // CPU time is what the run costs whatever the neighbours do; wall time on shared cores measures them too.
  judge(
    `simulated hour of the code trace ×${sim?.rate ?? 100}: CPU time`,
    `≤ ${SIMULATE_TARGETS.seconds} s`,
    sim && sim.rate >= 100 ? sim.cpuSeconds : Number.NaN,
    (v) => v <= SIMULATE_TARGETS.seconds,
    sim ? `${f(sim.cpuSeconds)} s (GC pauses ${f(sim.gcSeconds)} s) for ${sim.requests} requests` : '–',
  );
  judge(
    `simulated hour of the code trace ×${sim?.rate ?? 100}: wall time`,
    `≤ ${SIMULATE_TARGETS.seconds} s`,
    sim && sim.rate >= 100 ? sim.wallSeconds : Number.NaN,
    (v) => v <= SIMULATE_TARGETS.seconds,
    sim ? `${f(sim.wallSeconds)} s (${f(sim.cpuSeconds)} s CPU) for ${sim.requests} requests` : '–',
  );
  judge(
    `simulated hour of the code trace ×${sim?.rate ?? 100}: peak RSS`,
    `≤ ${SIMULATE_TARGETS.rssMb} MB`,
    sim && sim.rate >= 100 ? sim.maxRssMb : Number.NaN,
    (v) => v <= SIMULATE_TARGETS.rssMb,
    sim ? `${sim.maxRssMb} MB` : '–',
  );

  const o = r.overhead;
  judge(
    'reporter + /metrics + signatures: throughput cost',
    `≤ ${TARGETS.partsCost * 100}%`,
    o ? o.rpsCost : Number.NaN,
    (v) => v <= TARGETS.partsCost,
    o
      ? `${f(o.rpsCost * 100)}% (median of ${o.rounds} paired rounds, spread ${f(Math.min(...o.rpsCosts) * 100)}…${f(Math.max(...o.rpsCosts) * 100)}%; ` +
          `medians ${f(o.offRps, 0)} → ${f(o.onRps, 0)} req/s, CPU/req ${f(o.offCpuUs)} → ${f(o.onCpuUs)} µs, paired CPU cost ${f(o.cpuCost * 100)}%)`
      : '–',
  );
  return out;
}

/** The suite's one table (every row measured in this run), the targets, and the details. */
export function formatSuite(r: SuiteReport): string {
  const lines: string[] = [];
  const mach = r.machine;
  lines.push(
    `Machine: ${mach.nproc} cores, ${mach.cpuModel}, Node ${mach.node}; load average ${f(mach.loadStart, 2)} at start, ${f(mach.loadEnd, 2)} at end; ${mach.date}; ${f(r.seconds, 0)} s${r.quick ? ' (quick mode: tiny loads, figures not meaningful)' : ''}.`,
  );
  lines.push('');
  const targets: BenchTarget[] = r.proxy?.targets ?? ['direct', 'nginx', 'worker'];
  const cols = targets.map((t) => (t === 'bare' ? 'bare Node proxy' : t));
  lines.push(`| measure | ${cols.join(' | ')} |`);
  lines.push(`| --- | ${targets.map(() => '---:').join(' | ')} |`);
  const row = (label: string, cell: (t: BenchTarget) => string) => lines.push(`| ${label} | ${targets.map(cell).join(' | ')} |`);
  const loads = r.proxy?.loads ?? [];
  const concurrencies = [...new Set(loads.map((l) => l.concurrency))];
  for (const c of concurrencies) {
    const get = (t: BenchTarget) => loads.find((l) => l.target === t && l.concurrency === c);
    row(`small JSON c=${c}: req/s`, (t) => f(get(t)?.load.rps, 0));
    row(`small JSON c=${c}: p50 / p99 ms`, (t) => (get(t) ? `${f(get(t)!.load.p50, 3)} / ${f(get(t)!.load.p99, 2)}` : '–'));
    row(`small JSON c=${c}: proxy CPU µs/request`, (t) => (t === 'direct' ? '–' : f(get(t)?.proxyCpuUs)));
  }
  const streamed = r.proxy?.streams ?? [];
  if (streamed.length) {
    const sget = (t: BenchTarget) => streamed.find((s) => s.target === t);
    row('streamed: time to first byte p50 / p99 ms', (t) => (sget(t) ? `${f(sget(t)!.ttfbP50, 3)} / ${f(sget(t)!.ttfbP99, 2)}` : '–'));
    row('streamed: delay added per chunk over direct, ms (mean / worst)', (t) =>
      sget(t) && t !== 'direct' ? `${f(sget(t)!.addedPerChunkMs, 3)} / ${f(sget(t)!.addedPerChunkMaxMs, 3)}` : '–',
    );
  }
  const only = (v: string) => (t: BenchTarget) => (t === 'worker' ? v : '–');
  const s = r.streams;
  if (s) {
    row(`${s.streams} open SSE streams: streaming / open`, only(`${s.streaming} / ${s.open}`));
    row(`${s.streams} open SSE streams: RSS MB (idle)`, only(`${f(s.rssMb)} (${f(s.rssIdleMb)})`));
    row(`${s.streams} open SSE streams: event-loop lag p50 / p99 / max ms`, only(`${f(s.lagP50Ms, 2)} / ${f(s.lagP99Ms, 2)} / ${f(s.lagMaxMs, 2)}`));
    row(`${s.streams} open SSE streams: events/s, worker CPU`, only(`${f(s.eventsPerS, 0)}, ${f(s.workerCpuShare * 100, 0)}% of a core`));
  }
  if (r.ready) row('model ready line → ready p50 / p99 ms', only(`${f(r.ready.p50Ms, 2)} / ${f(r.ready.p99Ms, 2)}`));
  if (r.accuracy) for (const a of r.accuracy) row(`benchmark perf / capacity ${a.capacity}`, only(a.ratio.toFixed(3)));
  const o = r.overhead;
  if (o) {
    row(
      `reporter + metrics + signatures off → on, c=${o.concurrency}: req/s (medians); throughput cost (median of paired rounds)`,
      only(`${f(o.offRps, 0)} → ${f(o.onRps, 0)}; ${f(o.rpsCost * 100)}%`),
    );
    row(
      `reporter + metrics + signatures off → on: CPU µs/request (medians); CPU cost (paired)`,
      only(`${f(o.offCpuUs)} → ${f(o.onCpuUs)}; ${f(o.cpuCost * 100)}%`),
    );
  }
  const x = r.extras;
  if (x?.logwatch) row('log line → log watch event p50 / p99 ms', only(`${f(x.logwatch.p50Ms, 2)} / ${f(x.logwatch.p99Ms, 2)}`));
  if (x?.hooksNs) row('ledger / ledger + metrics hooks, ns CPU per request', only(`${x.hooksNs.ledger} / ${x.hooksNs.withMetrics}`));
  if (x?.backlogBytesPerId !== null && x?.backlogBytesPerId !== undefined)
    row('/delete_requests/ backlog, bytes per request_idx', only(f(x.backlogBytesPerId, 2)));
  if (x?.unreportedCost)
    row(
      'unreported-ids file (kill -9 safe): its CPU per request / end to end req/s, CPU per request',
      only(`${f(x.unreportedCost.fileCpuPercent, 2)}% / ${f(x.unreportedCost.rpsPercent)}%, ${f(x.unreportedCost.cpuPercent)}%`),
    );
  lines.push('');

  lines.push('| target | goal | measured | result |', '| --- | --- | --- | --- |');
  for (const t of evaluateTargets(r)) lines.push(`| ${t.name} | ${t.goal} | ${t.measured} | ${t.status} |`);
  if (r.engine) {
    for (const t of evaluateEngineScale(r.engine))
      lines.push(`| autoscaler, ${r.engine.workers} workers: ${t.name} | ${t.goal} | ${t.measured} | ${t.status} |`);
  }
  if (r.failures.length) {
    lines.push('', 'Sections that failed:');
    for (const fl of r.failures) lines.push(`- ${fl.section}: ${fl.error}`);
  }
  if (r.ablation)
    lines.push('', 'What each request-path optimisation buys (same run, same load, worker processes side by side):', '', formatAblation(r.ablation));
  if (r.engine)
    lines.push(
      '',
      'The autoscaler at scale (engine-scale.js):',
      '',
      ...formatEngineScale(r.engine)
        .split('\n')
        .map((l) => `    ${l}`),
    );
  if (r.proxy) lines.push('', '<details><summary>proxy benchmark detail</summary>', '', formatProxyBench(r.proxy), '', '</details>');
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs(
    'run',
    '[--quick] [--json FILE] [--generator wrk|undici] [--duration S] [--skip SECTION,...]\n' +
      '   or: --vs nginx [--runs N] [--duration S] [--open-streams N] [--hold S] [--worker-cli PATH] [--pyworker URL [--pyworker-pid PID] [--pyworker-model URL]] [--json FILE]',
    {
      quick: 'boolean',
      json: 'string',
      generator: 'string',
      duration: 'string',
      skip: 'string',
      vs: 'string',
      runs: 'string',
      'open-streams': 'string',
      hold: 'string',
      'worker-cli': 'string',
      pyworker: 'string',
      'pyworker-pid': 'string',
      'pyworker-model': 'string',
    },
  );
  if (args.vs !== undefined) {
    process.exitCode = await vsNginxMain(args);
  } else runSuiteMain(args);
}

/** `--vs nginx`: benchmarks/vs-nginx.ts, after making sure nginx and wrk are there. */
async function vsNginxMain(args: Record<string, string | boolean | undefined>): Promise<number> {
  if (args.vs !== 'nginx') {
    process.stderr.write(`bench: --vs takes "nginx" (got ${JSON.stringify(args.vs)})\n`);
    return 2;
  }
  const log = (l: string) => process.stderr.write(l + '\n');
  const nginx = ensureCommand('nginx', 'nginx', { install: true, log });
  const wrk = ensureCommand('wrk', 'wrk', { install: true, log });
  if (!nginx || !wrk) {
    process.stderr.write(
      `bench --vs nginx needs ${[nginx ? '' : 'nginx', wrk ? '' : 'wrk'].filter(Boolean).join(' and ')}, which could not be installed here.\n` +
        'Install them as .ci/run installs its tools (Debian/Ubuntu, as root): apt-get update && apt-get install -y --no-install-recommends nginx wrk\n',
    );
    return 2;
  }
  const num = (v: unknown) => (typeof v === 'string' ? Number(v) : undefined);
  const { formatVsNginx, runVsNginx } = await import('./vs-nginx.js');
  try {
    const report = await runVsNginx({
      nginx,
      runs: num(args.runs),
      durationS: num(args.duration),
      openStreams: num(args['open-streams']),
      holdS: num(args.hold),
      workerCli: typeof args['worker-cli'] === 'string' ? args['worker-cli'] : undefined,
      pyworker:
        typeof args.pyworker === 'string'
          ? { url: args.pyworker, pid: num(args['pyworker-pid']) ?? null, modelUrl: typeof args['pyworker-model'] === 'string' ? args['pyworker-model'] : null }
          : undefined,
      log,
    });
    process.stdout.write(formatVsNginx(report) + '\n');
    if (typeof args.json === 'string') writeFileSync(args.json, JSON.stringify(report, null, 2));
    return 0;
  } catch (err) {
    process.stderr.write(`bench --vs nginx failed: ${(err as Error).stack ?? (err as Error).message}\n`);
    return 1;
  }
}

function runSuiteMain(args: Record<string, string | boolean | undefined>): void {
  const gen = args.generator;
  const skip = typeof args.skip === 'string' ? (args.skip.split(',').filter((s) => (SECTIONS as string[]).includes(s)) as SuiteSection[]) : [];
  runSuite({
    quick: args.quick === true,
    generator: gen === 'wrk' || gen === 'undici' ? gen : undefined,
    durationS: typeof args.duration === 'string' ? Number(args.duration) : undefined,
    skip,
  }).then(
    (report) => {
      process.stdout.write(formatSuite(report) + '\n');
      if (typeof args.json === 'string') writeFileSync(args.json, JSON.stringify(report, null, 2));
      if (report.failures.length) process.exitCode = 1;
    },
    (err: Error) => {
      process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
      process.exitCode = 1;
    },
  );
}
