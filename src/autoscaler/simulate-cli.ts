import { resolve } from 'node:path';
import { parseArgs } from '../common/util.js';
import { loadSimulationConfig, defaultSimulationConfigPath } from './simulate/config.js';
import { writeSimulationOutputs } from './simulate/outputs.js';
import { runSimulation } from './simulate/run.js';
import { loadTrace } from './simulate/trace.js';

const USAGE = `usage: nodeworker simulate --trace FILE [--speed X] [--config FILE] [--out DIR] [--no-panic] [--log]

Replays a request trace (CSV: TIMESTAMP,ContextTokens,GeneratedTokens) against the autoscaler's
own policy and router with a simulated fleet on a fake clock, and reports cost (GPU-hours, $)
against an oracle that knows the future, queue time p50/p99, and workers by state over time.

  --trace FILE    the trace, e.g. data/azure-llm-2023-code.csv
  --speed X       compress time X-fold (X=2: the same requests in half the time); default 1
  --config FILE   JSON/YAML merged over the default config (src/autoscaler/simulate.default.yaml)
  --out DIR       where report.json, timeline.csv, timeline.svg go (default .artifacts/simulate)
  --no-panic      turn the panic window off (panic_window 0)
  --log           write the engine's JSON log to DIR/engine.log`;

/** `nodeworker simulate`: returns the exit code. */
export async function runSimulateCli(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args.help || args.h) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (typeof args.trace !== 'string') {
    process.stderr.write(`nodeworker simulate: --trace FILE is required\n\n${USAGE}\n`);
    return 2;
  }
  const speed = args.speed === undefined ? 1 : Number(args.speed);
  if (!(speed > 0) || !Number.isFinite(speed)) {
    process.stderr.write(`nodeworker simulate: --speed must be a number > 0, got ${String(args.speed)}\n`);
    return 2;
  }
  const outDir = resolve(typeof args.out === 'string' ? args.out : '.artifacts/simulate');
  let config;
  let trace;
  try {
    config = loadSimulationConfig(typeof args.config === 'string' ? args.config : undefined);
    trace = loadTrace(args.trace, { promptShare: config.workload.prompt_share, speed });
  } catch (err) {
    process.stderr.write(`nodeworker simulate: ${(err as Error).message}\n`);
    return 1;
  }
  if (trace.requests.length === 0) {
    process.stderr.write(`nodeworker simulate: ${args.trace} holds no requests\n`);
    return 1;
  }
  const result = await runSimulation({
    config,
    requests: trace.requests,
    panic: !args['no-panic'],
    traceFile: resolve(args.trace),
    speed,
    logFile: args.log ? `${outDir}/engine.log` : undefined,
  });
  const files = writeSimulationOutputs(outDir, result);
  const r = result.report;
  const lines = [
    `trace        ${r.trace.requests} requests over ${Math.round(r.trace.spanSeconds)} s (${trace.skipped} rows skipped), speed ${speed}, panic ${r.panic ? 'on' : 'off'}`,
    `config       ${typeof args.config === 'string' ? resolve(args.config) + ' over ' : ''}${defaultSimulationConfigPath()}`,
    `cost         ${r.cost.gpuHours.toFixed(3)} GPU-h, $${r.cost.dollars.toFixed(3)} (GPU $${r.cost.gpuDollars.toFixed(3)} + storage $${r.cost.storageDollars.toFixed(3)})`,
    `oracle       ${r.oracle.fluid.gpuHours.toFixed(3)} GPU-h, $${r.oracle.fluid.dollars.toFixed(3)} (${r.oracle.machine}); whole workers $${r.oracle.wholeWorkers.dollars.toFixed(3)}`,
    `cost ratio   ${r.costRatio.vsFluid}× the oracle (${r.costRatio.vsWholeWorkers}× whole-worker oracle)`,
    `queue time   p50 ${r.queueTime.p50} s, p99 ${r.queueTime.p99} s, max ${r.queueTime.max} s`,
    `requests     served ${r.requests.served}, rejected ${r.requests.rejected}, timed out ${r.requests.timedOut}, lost ${r.requests.lost}, unfinished ${r.requests.unfinished}`,
    `workers      recruited ${r.workers.recruited}, errored ${r.workers.errored}, max live ${r.workers.maxLive}; panic episodes ${r.panicEpisodes}`,
    `wall time    ${r.wallSeconds} s for ${Math.round(r.simulatedSeconds)} simulated s`,
    `wrote        ${files.report}, ${files.timeline}, ${files.plot}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
