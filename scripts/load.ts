/**
 * Load generator: `node build/scripts/load.js --worker URL --pattern constant --rate 5 --duration 60`.
 * Open-loop arrivals following a pattern (constant, ramp, first-day), live progress, and a CSV +
 * SVG of latency and throughput over time.
 */
import { usageFailed, type Flags } from '#nodeworker/common/args.js';
import {
  badUsage,
  COMMON_HELP,
  parseScriptFlags,
  commonOptions,
  runIfMain,
  runExitCode,
  summaryText,
  numberFlag,
  OptionProblems,
  stopOnSignal,
  stringFlag,
} from './lib/cli-common.js';
import { arrivals, PATTERNS, type PatternName, type PatternOptions } from './lib/patterns.js';
import { buildRequest } from './lib/payloads.js';
import { runPlan, type Planned } from './lib/run.js';

export const LOAD_HELP = `usage: npm run load -- (--worker URL | --autoscaler URL --endpoint NAME --api-key KEY)
                           [--pattern constant|ramp|first-day] [options]
       (npm run load builds first; node build/scripts/load.js runs the last build)

Sends requests open-loop (at their planned times, whether or not earlier ones answered) and
writes requests.csv (one row per request), timeline.csv (per bucket: offered and completed
rate, errors, load/s, latency p50/p95/p99, time to first byte) and plot.svg.

Pattern:
  --pattern NAME       constant (default), ramp, or first-day
  --duration S         length of the run (default 60)
  --rate R             requests/s: constant's rate; first-day's expected rate (default 2)
  --from R --to R      ramp: start and end rates (default 0 → --rate)
  --cycles N           first-day: up-and-down cycles (default 3)
  --floor F            first-day: the low point as a fraction of --rate (default 0.1)
  --arrivals KIND      poisson (default: random gaps, seeded) or uniform (evenly spaced)
  --seed N             seed of the poisson arrivals (default 1)

  first-day is the pattern to run on a new endpoint's first day: three times, climb from a floor
  to twice the expected load (--rate = what the expected number of workers serve), hold, and come
  back down, so the engine recruits past its expected size, measures a variety of machines, and
  learns their perf before real traffic depends on it.

Request size:
  --prompt-tokens N    prompt size in tokens, ~4 characters each (default 100)
  --max-tokens N       tokens to generate (comfyui: the job's cost, 0 = the constant) (default 64)

${COMMON_HELP}`;

/** Run the load generator; returns the exit code. */
export async function runLoadCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseScriptFlags(argv, {
      pattern: 'string',
      duration: 'string',
      rate: 'string',
      from: 'string',
      to: 'string',
      cycles: 'string',
      floor: 'string',
      arrivals: 'string',
      seed: 'string',
      'prompt-tokens': 'string',
      'max-tokens': 'string',
    });
  } catch (err) {
    return usageFailed('load', err, 'npm run load -- --help');
  }
  if (args.help) {
    process.stdout.write(LOAD_HELP + '\n');
    return 0;
  }
  const p = new OptionProblems();
  const patternRaw = stringFlag(args, 'pattern', p) ?? 'constant';
  if (!(PATTERNS as readonly string[]).includes(patternRaw)) p.add('pattern', `must be one of ${PATTERNS.join(', ')} (got ${JSON.stringify(patternRaw)})`);
  const durationS = numberFlag(args, 'duration', 60, p, 0.1);
  const rate = numberFlag(args, 'rate', 2, p, 0);
  const pattern: PatternOptions = {
    pattern: patternRaw as PatternName,
    durationS,
    rate,
    from: numberFlag(args, 'from', 0, p, 0),
    to: numberFlag(args, 'to', rate, p, 0),
    cycles: numberFlag(args, 'cycles', 3, p, 1, 1000, true),
    floor: numberFlag(args, 'floor', 0.1, p, 0, 2),
  };
  const arrivalKind = stringFlag(args, 'arrivals', p) ?? 'poisson';
  if (arrivalKind !== 'poisson' && arrivalKind !== 'uniform') p.add('arrivals', `must be poisson or uniform (got ${JSON.stringify(arrivalKind)})`);
  const seed = numberFlag(args, 'seed', 1, p, 0, 2 ** 32, true);
  const promptTokens = numberFlag(args, 'prompt-tokens', 100, p, 1, 1_000_000, true);
  const maxTokens = numberFlag(args, 'max-tokens', 64, p, 0, 1_000_000, true);
  const common = commonOptions(args, 'load', p);
  if (!common || p.list.length > 0) {
    await common?.target.close();
    return badUsage('load', p.list);
  }

  const times = arrivals(pattern, arrivalKind as 'uniform' | 'poisson', seed);
  const shape = { promptTokens, maxTokens, stream: common.stream };
  const plan: Planned[] = times.map((atS, i) => ({ atS, build: () => buildRequest(common.backend, shape, i) }));
  process.stderr.write(
    `load: ${pattern.pattern} for ${durationS} s, ${times.length} requests planned (${arrivalKind}) to ${common.target.description}, backend ${common.backend}${common.stream ? ' (streamed)' : ''}\n`,
  );
  const stop = stopOnSignal();
  try {
    const r = await runPlan({
      target: common.target,
      plan,
      durationS,
      timeoutMs: common.timeoutMs,
      maxInflight: common.maxInflight,
      drainS: common.drainS,
      bucketS: common.bucketS,
      outDir: common.outDir,
      title: `nodeworker load: ${pattern.pattern}, ${common.backend}, ${common.target.description}`,
      progressIntervalS: common.progressIntervalS,
      stop: stop.signal,
    });
    process.stdout.write(summaryText(r));
    return runExitCode('load', r);
  } finally {
    stop.dispose();
    await common.target.close();
  }
}

runIfMain(import.meta.url, 'load', runLoadCli);
