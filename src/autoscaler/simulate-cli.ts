import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { packagePath } from '../common/package-root.js';
import { parseArgs } from 'node:util';
import { POLICY_NAMES, type PolicyName } from './policies.js';
import { compareTable, defaultWorkloads, runCompare } from './simulate/compare.js';
import { loadSimulationConfig, defaultSimulationConfigPath, type SimulationConfig } from './simulate/config.js';
import { DEFAULT_FRONTIER_FLOORS, SERVINGS, scaledSizes, frontierHeadlines, frontierMarkdown, reactiveFrontier, type Serving } from './simulate/frontier.js';
import { oracleCost } from './simulate/oracle.js';
import { DEFAULT_SIM_MACHINE } from './providers/simulated.js';
import { writeSimulationOutputs } from './simulate/outputs.js';
import { overlaid, patternByName, syntheticPatterns } from './simulate/patterns.js';
import { readConfigFile } from './config.js';
import { runSimulation } from './simulate/run.js';
import { loadTrace, type TraceRequest } from './simulate/trace.js';

/** The one-hour Azure trace, shipped in the package (data/), found from the package root, not the cwd. */
const SHIPPED_TRACE = packagePath('data', 'azure-llm-2023-code.csv');

const USAGE = `usage: nodeworker simulate (--trace FILE | --pattern NAME [--draw K]) [--rate K] [--max-workers N] [--policy default|kpa] [--speed X] [--config FILE] [--out DIR] [--no-panic] [--log]
       nodeworker simulate --compare [--trace FILE]... [--draws N] [--no-scale] [--config FILE] [--out DIR]
       nodeworker simulate --frontier [--trace FILE | --pattern NAME] [--rate K] [--config FILE] [--out DIR] [--serving pooled|workers|smallest]

Replays a request trace (CSV: TIMESTAMP,ContextTokens,GeneratedTokens) against the autoscaler's
own policy and router with a simulated fleet on a fake clock, and reports cost (GPU-hours, $)
against an oracle that knows the future, queue time p50/p99, and workers by state over time.

  --trace FILE    the trace (CSV; with --compare: repeatable); --compare and --frontier default to
                  the shipped one, ${SHIPPED_TRACE}
  --pattern NAME  a synthetic workload instead: ${syntheticPatterns()
    .map((p) => p.name)
    .join(', ')}
  --draw K        with --pattern: the K-th draw of its random arrivals (0, the default, is the
                  compare table's first draw; 1, 2, … use other seeds)
  --policy NAME   default (this engine's policy) or kpa (the Knative-KPA-style baseline); default: default
  --compare       both policies on every trace given (default: the shipped one), its variants
                  (halves, rate ×0.5/×2, shuffled gaps), its ×10 and ×100 overlays (--rate) and
                  the synthetic patterns; prints a table and writes compare.json and compare.md
                  into --out
  --no-scale      with --compare: leave out the ×10 and ×100 rows (each trace overlaid 10 and
                  100 times, max_workers scaled alike; the ×100 runs take a minute or more each)
  --draws N       with --compare: draw each synthetic pattern N times (other seeds) and report
                  the means, and in how many draws the default beat the baseline; default 1
  --frontier      the reactive frontier: an idealised family of causal controllers (instant
                  detection, free stopped workers, start_time to serve; rate window, backlog
                  drain, headroom, memory of recent peaks, floors) swept over its parameters on one
                  trace or pattern (default: the shipped trace; with --rate its floors, fleet sizes
                  and cap scale by K); prints the Pareto frontier of cost vs queue p99 and writes
                  frontier.json and frontier.md into --out
  --serving MODE  with --frontier: pooled (one fluid server of the ready capacity, default),
                  workers (each ready worker serves one request at a time, oldest first) or
                  smallest (separate workers, a free one takes the smallest waiting request)
  --rate K        K time-shifted copies of the trace or pattern overlaid (seeded, deterministic;
                  a fractional K thins): K times the traffic with the same shape of bursts.
                  endpoint.max_workers is scaled by K unless --max-workers or the --config file gives it
  --max-workers N the endpoint's max_workers, whatever --rate is
  --speed X       compress time X-fold (X=2: the same requests in half the time); default 1
  --config FILE   JSON/YAML merged over the default config (${defaultSimulationConfigPath()})
  --out DIR       where report.json, timeline.csv, timeline.svg go (default .artifacts/simulate)
  --no-panic      turn the panic window off (panic_window 0)
  --log           write the engine's JSON log to DIR/engine.log`;

const OPTIONS = {
  trace: { type: 'string', multiple: true },
  pattern: { type: 'string' },
  policy: { type: 'string' },
  compare: { type: 'boolean' },
  draws: { type: 'string' },
  draw: { type: 'string' },
  frontier: { type: 'boolean' },
  serving: { type: 'string' },
  speed: { type: 'string' },
  rate: { type: 'string' },
  'max-workers': { type: 'string' },
  'no-scale': { type: 'boolean' },
  config: { type: 'string' },
  out: { type: 'string' },
  'no-panic': { type: 'boolean' },
  log: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function usageError(message: string): number {
  process.stderr.write(`nodeworker simulate: ${message}\n\n${USAGE}\n`);
  return 2;
}

/** `nodeworker simulate`: returns the exit code. */
export async function runSimulateCli(argv: string[]): Promise<number> {
  let args: ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; strict: true; allowPositionals: false }>>['values'];
  try {
    args = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    // node:util names the flag: "Unknown option '--foo'", "Option '--trace <value>' argument missing".
    return usageError((err as Error).message);
  }
  if (args.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const policy = (args.policy ?? 'default') as PolicyName;
  if (!POLICY_NAMES.includes(policy)) return usageError(`--policy must be one of ${POLICY_NAMES.join(', ')}, got ${JSON.stringify(args.policy)}`);
  const speed = args.speed === undefined ? 1 : Number(args.speed);
  if (!(speed > 0) || !Number.isFinite(speed)) return usageError(`--speed must be a number > 0, got ${String(args.speed)}`);
  const rate = args.rate === undefined ? 1 : Number(args.rate);
  if (!(rate > 0) || !Number.isFinite(rate) || rate > 1000) return usageError(`--rate must be a number in (0, 1000], got ${String(args.rate)}`);
  const maxWorkersArg = args['max-workers'] === undefined ? undefined : Number(args['max-workers']);
  if (maxWorkersArg !== undefined && (!Number.isInteger(maxWorkersArg) || maxWorkersArg < 0))
    return usageError(`--max-workers must be a whole number ≥ 0, got ${String(args['max-workers'])}`);
  if (args['no-scale'] && !args.compare) return usageError('--no-scale goes with --compare');
  if (args.compare && args.rate !== undefined) return usageError('--compare runs its own rates (×1, ×10, ×100): drop --rate');
  const traces = args.trace ?? [];
  const draws = args.draws === undefined ? 1 : Number(args.draws);
  if (!Number.isInteger(draws) || draws < 1 || draws > 100) return usageError(`--draws must be an integer from 1 to 100, got ${String(args.draws)}`);
  if (args.draws !== undefined && !args.compare) return usageError('--draws goes with --compare (use --draw K with --pattern)');
  const draw = args.draw === undefined ? 0 : Number(args.draw);
  if (!Number.isInteger(draw) || draw < 0) return usageError(`--draw must be an integer ≥ 0, got ${String(args.draw)}`);
  if (args.draw !== undefined && !args.pattern) return usageError('--draw goes with --pattern');
  if (args.frontier) {
    const conflicts = (['compare', 'policy', 'no-panic', 'log', 'draws'] as const).filter((k) => args[k] !== undefined).map((k) => `--${k}`);
    if (conflicts.length > 0) return usageError(`--frontier cannot be combined with ${conflicts.join(', ')}: the frontier runs its own idealised controllers`);
    if (traces.length + (args.pattern ? 1 : 0) > 1)
      return usageError(`--frontier takes one --trace or --pattern, got ${traces.length + (args.pattern ? 1 : 0)}`);
    if (args.serving !== undefined && !(SERVINGS as readonly string[]).includes(args.serving))
      return usageError(`--serving must be one of ${SERVINGS.join(', ')}, got ${JSON.stringify(args.serving)}`);
  } else if (args.serving !== undefined) return usageError('--serving applies to --frontier only');
  if (args.compare && (args.pattern || args.policy)) return usageError('--compare runs every policy and pattern: drop --pattern and --policy');
  if (!args.compare && !args.frontier && traces.length + (args.pattern ? 1 : 0) !== 1)
    return usageError('give one of --trace FILE or --pattern NAME (or --compare)');
  const outDir = resolve(args.out ?? '.artifacts/simulate');
  let config: SimulationConfig;
  try {
    config = loadSimulationConfig(args.config);
    config = withMaxWorkers(config, rate, maxWorkersArg ?? configMaxWorkers(args.config));
  } catch (err) {
    process.stderr.write(`nodeworker simulate: ${(err as Error).message}\n`);
    return 1;
  }
  const load = (file: string): TraceRequest[] | null => {
    try {
      const trace = loadTrace(file, { promptShare: config.workload.prompt_share, speed });
      if (trace.requests.length > 0) return trace.requests;
      process.stderr.write(`nodeworker simulate: ${file} holds no requests\n`);
    } catch (err) {
      process.stderr.write(`nodeworker simulate: ${(err as Error).message}\n`);
    }
    return null;
  };

  const unknownPattern = () =>
    usageError(
      `--pattern must be one of ${syntheticPatterns()
        .map((x) => x.name)
        .join(', ')}, got ${JSON.stringify(args.pattern)}`,
    );
  if (args.frontier) {
    let requests: TraceRequest[] | null;
    let file: string;
    if (args.pattern) {
      const p = patternByName(args.pattern, draw);
      if (!p) return unknownPattern();
      requests = p.requests.map((r) => ({ ...r, at: r.at / speed }));
      file = `pattern:${p.name}`;
    } else {
      file = traces[0] ?? SHIPPED_TRACE;
      requests = load(file);
    }
    if (!requests) return 1;
    return runFrontier(config, overlaid(requests, rate), file, outDir, args.config, (args.serving ?? 'pooled') as Serving, rate);
  }

  if (args.compare) {
    const files = traces.length > 0 ? traces : [SHIPPED_TRACE];
    const named: Array<{ name: string; requests: TraceRequest[] }> = [];
    for (const f of files) {
      const requests = load(f);
      if (!requests) return 1;
      named.push({ name: basename(f).replace(/\.csv$/, ''), requests });
    }
    const progress = process.stderr.isTTY
      ? (done: number, total: number, label: string) => process.stderr.write(`\r${done}/${total} ${label}\x1b[K${done === total ? '\n' : ''}`)
      : undefined;
    const rows = await runCompare({
      config,
      workloads: defaultWorkloads(named, draws, { maxWorkers: config.endpoint.max_workers, rates: args['no-scale'] ? [] : undefined }),
      policies: POLICY_NAMES,
      panic: !args['no-panic'],
      onRun: progress,
    });
    const { markdown, path } = compareTable(rows, outDir);
    process.stdout.write(markdown + `\nwrote ${path}\n`);
    return 0;
  }

  let requests: TraceRequest[];
  let params: Record<string, unknown> | undefined;
  let label: string;
  if (args.pattern) {
    const p = patternByName(args.pattern, draw);
    if (!p) return unknownPattern();
    requests = speed === 1 ? p.requests : p.requests.map((r) => ({ ...r, at: r.at / speed }));
    params = p.params;
    label = `pattern ${p.name}${draw > 0 ? ` (draw ${draw})` : ''}`;
  } else {
    const r = load(traces[0]!);
    if (!r) return 1;
    requests = r;
    label = traces[0]!;
  }
  if (rate !== 1) label += ` ×${rate} (max_workers ${config.endpoint.max_workers})`;
  const result = await runSimulation({
    config,
    requests: overlaid(requests, rate),
    params,
    policy,
    panic: !args['no-panic'],
    traceFile: args.pattern ? undefined : resolve(traces[0]!),
    speed,
    logFile: args.log ? `${outDir}/engine.log` : undefined,
  });
  const files = writeSimulationOutputs(outDir, result);
  const r = result.report;
  const lines = [
    `trace        ${label}: ${r.trace.requests} requests over ${Math.round(r.trace.spanSeconds)} s, speed ${speed}, panic ${r.panic ? 'on' : 'off'}, policy ${r.policy}`,
    `config       ${args.config ? resolve(args.config) + ' over ' : ''}${defaultSimulationConfigPath()}`,
    `cost         ${r.cost.gpuHours.toFixed(3)} GPU-h, $${r.cost.dollars.toFixed(3)} (GPU $${r.cost.gpuDollars.toFixed(3)} + storage $${r.cost.storageDollars.toFixed(3)})`,
    `GPU time     working ${r.cost.breakdown.working.hours.toFixed(3)} h, idle while serving ${r.cost.breakdown.idle.hours.toFixed(3)} h, billed but not serving (booting, loading, starting) ${r.cost.breakdown.notServing.hours.toFixed(3)} h`,
    `oracle       ${r.oracle.fluid.gpuHours.toFixed(3)} GPU-h, $${r.oracle.fluid.dollars.toFixed(3)} (${r.oracle.machine}); whole workers $${r.oracle.wholeWorkers.dollars.toFixed(3)}`,
    `cost ratio   ${r.costRatio.vsFluid}× the oracle (${r.costRatio.vsWholeWorkers}× whole-worker oracle)`,
    `foresight    meeting queue p99 ≤ ${r.oracle.latency.targetQueueTime} s with foresight and instant starts costs ${r.costRatio.latencyOracleVsWholeWorkers}× the whole-worker oracle ($${r.oracle.latency.dollars.toFixed(3)})`,
    `queue time   p50 ${r.queueTime.p50} s, p99 ${r.queueTime.p99} s, max ${r.queueTime.max} s; over the ${r.queueTime.target} s target: ${r.queueTime.overTarget} (${(r.queueTime.overTargetShare * 100).toFixed(1)}%)`,
    `requests     served ${r.requests.served}, rejected ${r.requests.rejected}, timed out ${r.requests.timedOut}, lost ${r.requests.lost}, unfinished ${r.requests.unfinished}; retried after a worker failure ${r.requests.retried}`,
    `workers      recruited ${r.workers.recruited}, errored ${r.workers.errored}, max live ${r.workers.maxLive}, activations ${r.workers.activations}, stops ${r.workers.stops}; panic episodes ${r.panicEpisodes}`,
    `wall time    ${r.wallSeconds} s for ${Math.round(r.simulatedSeconds)} simulated s`,
    `wrote        ${files.report}, ${files.timeline}, ${files.plot}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** `simulate --frontier`: sweep the reactive frontier on `requests`, print it, write frontier.json and frontier.md. */
function runFrontier(
  config: SimulationConfig,
  requests: TraceRequest[],
  file: string,
  outDir: string,
  configFile: string | undefined,
  serving: Serving,
  rate = 1,
): number {
  const sim = (name: string) => ({ ...DEFAULT_SIM_MACHINE, ...config.provider.defaults, ...config.provider.machines?.[name] });
  const machines = config.endpoint.workergroups.flatMap((wg) =>
    wg.machine_types.map((m) => ({ name: m.name, dollarsPerHour: m.dollars_per_hour, perf: sim(m.name).perf })),
  );
  const minutes = Math.max(1, Math.ceil(requests[requests.length - 1]!.at / 60));
  const ep = config.endpoint;
  const best = oracleCost(requests, machines, minutes);
  if (ep.max_workers < 1) {
    process.stderr.write(`nodeworker simulate: --frontier needs endpoint.max_workers ≥ 1, got ${ep.max_workers}\n`);
    return 1;
  }
  // The config's own floor (min_load in whole workers) is swept too, whatever it is.
  const ownFloor = Math.min(ep.max_workers, Math.ceil(ep.min_load / best.perf - 1e-9));
  const floors = [...new Set([...scaledSizes(DEFAULT_FRONTIER_FLOORS, rate), ownFloor])].filter((f) => f <= ep.max_workers).sort((a, b) => a - b);
  const started = performance.now();
  const result = reactiveFrontier(requests, {
    machines,
    minutes,
    startSeconds: sim(best.machine).start_time,
    targetQueueTime: ep.target_queue_time > 0 ? ep.target_queue_time : ep.max_queue_time,
    cap: ep.max_workers,
    floors,
    serving,
    rate,
    onProgress: process.stderr.isTTY
      ? (done, total) => process.stderr.write(`\r${done}/${total} points\x1b[K${done === total ? '\n' : ''}`)
      : (done, total) => {
          if (done === total || done % 500 === 0) process.stderr.write(`${done}/${total} points\n`);
        },
  });
  const wallSeconds = (performance.now() - started) / 1000;
  const label = basename(file);
  mkdirSync(outDir, { recursive: true });
  const jsonPath = join(outDir, 'frontier.json');
  const mdPath = join(outDir, 'frontier.md');
  writeFileSync(
    jsonPath,
    JSON.stringify({ trace: { file: resolve(file), requests: requests.length }, config: configFile ? resolve(configFile) : null, ...result }, null, 2) + '\n',
  );
  const markdown = frontierMarkdown(result, label);
  writeFileSync(mdPath, markdown);
  process.stdout.write(
    [
      markdown.trimEnd(),
      '',
      ...frontierHeadlines(result),
      `swept ${result.points.length} points in ${wallSeconds.toFixed(2)} s; wrote ${jsonPath}, ${mdPath}`,
    ].join('\n') + '\n',
  );
  return 0;
}

/** The max_workers an override config file sets, if it sets one (then --rate leaves it alone). */
function configMaxWorkers(file: string | undefined): number | undefined {
  if (!file) return undefined;
  const raw = readConfigFile(file) as { endpoint?: { max_workers?: unknown } } | null;
  const v = raw?.endpoint?.max_workers;
  return typeof v === 'number' ? v : undefined;
}

/** `config` with max_workers `given`, or else scaled by `rate` (K times the traffic may need K times the fleet). */
export function withMaxWorkers(config: SimulationConfig, rate: number, given: number | undefined): SimulationConfig {
  const max = given ?? (rate > 1 ? Math.ceil(config.endpoint.max_workers * rate) : config.endpoint.max_workers);
  return max === config.endpoint.max_workers ? config : { ...config, endpoint: { ...config.endpoint, max_workers: max } };
}
