/**
 * Trace replay: `node build/scripts/replay.js --trace azure-llm-2023-code.csv --speed 60 --worker URL`.
 * Sends the trace's requests at their (compressed) arrival times, with GeneratedTokens as
 * max_tokens and ContextTokens as the prompt size; live progress, CSV and SVG as load.js.
 */
import { existsSync } from 'node:fs';
import { TRACE_ATTRIBUTION, loadTrace, type TraceRequest } from '#nodeworker/autoscaler/simulate/trace.js';
import { usageFailed, type Flags } from '#nodeworker/common/args.js';
import {
  badUsage,
  COMMON_HELP,
  commonOptions,
  parseScriptFlags,
  runIfMain,
  runExitCode,
  summaryText,
  numberFlag,
  OptionProblems,
  stopOnSignal,
  stringFlag,
} from './lib/cli-common.js';
import { buildRequest, type Backend } from './lib/payloads.js';
import { runPlan, type Planned } from './lib/run.js';

export const REPLAY_HELP = `usage: npm run replay -- --trace FILE (--worker URL | --autoscaler URL --endpoint NAME --api-key KEY)
                             [--speed X] [--start S] [--duration S] [options]
       (npm run replay builds first; node build/scripts/replay.js runs the last build)

Replays a request trace in the Azure LLM inference trace format (CSV: TIMESTAMP,ContextTokens,
GeneratedTokens) against an endpoint or a worker: each row is sent at its arrival time (divided by
--speed) with a prompt of ContextTokens tokens and max_tokens = GeneratedTokens. Writes
requests.csv, timeline.csv and plot.svg like load.js.

The trace shipped beside this project, azure-llm-2023-code.csv (one hour of code-completion
requests, 8,818 rows), is from the ${TRACE_ATTRIBUTION}.
Keep this attribution wherever the data or results derived from it are shared.

Trace:
  --trace FILE         the CSV (e.g. data/azure-llm-2023-code.csv)
  --speed X            compress time X-fold: 60 replays an hour in a minute (default 1)
  --start S            skip the first S seconds of the trace (trace time; default 0)
  --duration S         stop after S seconds of replay (wall time; default: the whole trace)
  --limit N            send at most N requests
  --context-scale F    multiply prompt sizes by F (default 1; < 1 for a small test machine)
  --max-tokens-cap N   cap max_tokens at N (default: none)
  --backend NAME       openai (default), openai-chat or tgi: the trace is LLM traffic

${COMMON_HELP}`;

const TRACE_BACKENDS: readonly Backend[] = ['openai', 'openai-chat', 'tgi'];

/** Run the replay; returns the exit code. */
export async function runReplayCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseScriptFlags(argv, {
      trace: 'string',
      speed: 'string',
      start: 'string',
      duration: 'string',
      limit: 'string',
      'context-scale': 'string',
      'max-tokens-cap': 'string',
    });
  } catch (err) {
    return usageFailed('replay', err, 'npm run replay -- --help');
  }
  if (args.help) {
    process.stdout.write(REPLAY_HELP + '\n');
    return 0;
  }
  const p = new OptionProblems();
  const tracePath = stringFlag(args, 'trace', p);
  if (!tracePath) p.add('trace', 'FILE is required');
  else if (!existsSync(tracePath)) p.add('trace', `${tracePath} does not exist`);
  const speed = numberFlag(args, 'speed', 1, p, 1e-6);
  const startS = numberFlag(args, 'start', 0, p, 0);
  const durationArg = args.duration === undefined ? undefined : numberFlag(args, 'duration', 0, p, 0.1);
  const limit = numberFlag(args, 'limit', Number.POSITIVE_INFINITY, p, 1, Number.POSITIVE_INFINITY, false);
  const contextScale = numberFlag(args, 'context-scale', 1, p, 0, 100);
  const cap = numberFlag(args, 'max-tokens-cap', Number.POSITIVE_INFINITY, p, 1);
  if (args.backend !== undefined && !TRACE_BACKENDS.includes(args.backend as Backend))
    p.add('backend', `must be one of ${TRACE_BACKENDS.join(', ')} for a trace of LLM requests`);
  const common = commonOptions(args, 'replay', p);
  if (!common || p.list.length > 0) {
    await common?.target.close();
    return badUsage('replay', p.list);
  }

  let trace: { requests: TraceRequest[]; skipped: number };
  try {
    trace = loadTrace(tracePath!, { speed });
  } catch (err) {
    await common.target.close();
    process.stderr.write(`replay: ${tracePath}: ${(err as Error).message}\n`);
    return 1;
  }
  // The window: from --start (trace seconds, so /speed in replay time), for --duration, at most --limit.
  const offset = startS / speed;
  let rows = trace.requests.filter((r) => r.at >= offset).map((r) => ({ ...r, at: r.at - offset }));
  if (durationArg !== undefined) rows = rows.filter((r) => r.at < durationArg);
  if (Number.isFinite(limit)) rows = rows.slice(0, Math.floor(limit));
  if (rows.length === 0) {
    await common.target.close();
    process.stderr.write(`replay: no requests in the chosen window of ${tracePath} (start ${startS} s, speed ${speed})\n`);
    return 1;
  }
  const durationS = durationArg ?? Math.max(rows.at(-1)!.at, 0.1);
  const plan: Planned[] = rows.map((r, i) => ({
    atS: r.at,
    build: () =>
      buildRequest(
        common.backend,
        {
          promptTokens: Math.max(1, Math.round(r.contextTokens * contextScale)),
          maxTokens: Math.max(1, Math.min(cap, r.generatedTokens)),
          stream: common.stream,
        },
        i,
      ),
  }));
  process.stderr.write(
    `replay: ${rows.length} requests over ${durationS.toFixed(1)} s (speed ${speed}${trace.skipped ? `, ${trace.skipped} rows skipped` : ''}) to ${common.target.description}\n` +
      `        trace: ${TRACE_ATTRIBUTION}\n`,
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
      title: `nodeworker trace replay ×${speed}: ${common.backend}, ${common.target.description}`,
      footer: `Trace: ${TRACE_ATTRIBUTION}`,
      progressIntervalS: common.progressIntervalS,
      stop: stop.signal,
    });
    process.stdout.write(summaryText(r, [`trace      ${TRACE_ATTRIBUTION}`]));
    return runExitCode('replay', r);
  } finally {
    stop.dispose();
    await common.target.close();
  }
}

runIfMain(import.meta.url, 'replay', runReplayCli);
