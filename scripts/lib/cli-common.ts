import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags, type Flags, type FlagTypes } from '#nodeworker/common/args.js';
import { BACKENDS, type Backend } from './payloads.js';
import { ms } from './progress.js';
import type { RunResult } from './run.js';
import { autoscalerTarget, workerTarget, type Target } from './target.js';

/** Options both scripts share: where the load goes, what it looks like, where results go. */
export interface CommonOptions {
  target: Target;
  backend: Backend;
  stream: boolean;
  timeoutMs: number;
  maxInflight: number;
  drainS: number;
  bucketS: number;
  outDir: string;
  progressIntervalS: number;
}

export const COMMON_HELP = `Where the load goes (one of):
  --autoscaler URL --endpoint NAME --api-key KEY
                       through the autoscaler with nodeworker's client (routing, queueing,
                       retries); the key may also come from $API_KEY
  --worker URL         straight to one worker, unsigned: the worker must run with UNSECURED=true

What it sends:
  --backend NAME       openai (default; /v1/completions), openai-chat, tgi, comfyui, hello
  --stream             ask for streamed answers (records time to first byte)

Run and output:
  --timeout S          per request, routing and retries included (default 120)
  --max-inflight N     open requests at most; arrivals beyond are recorded as shed (default 512)
  --drain S            after the last arrival, wait this long for open requests (default 30)
  --bucket S           timeline bucket (default 1)
  --out DIR            where requests.csv, timeline.csv and plot.svg go
                       (default ./load-results/<script>-<time>)
  --progress-interval S  seconds between progress lines when stderr is not a terminal (default 5)`;

/** The flags both scripts take (all take a value but --stream). */
export const COMMON_FLAGS: FlagTypes = {
  worker: 'string',
  autoscaler: 'string',
  endpoint: 'string',
  'api-key': 'string',
  backend: 'string',
  stream: 'boolean',
  timeout: 'string',
  'max-inflight': 'string',
  drain: 'string',
  bucket: 'string',
  out: 'string',
  'progress-interval': 'string',
};

/** Parse a script's command line strictly: its own flags and the common ones; UsageError otherwise. */
export function parseScriptFlags(argv: string[], own: FlagTypes): Flags {
  return parseFlags(argv, { ...COMMON_FLAGS, ...own });
}

export class OptionProblems {
  readonly list: string[] = [];
  add(flag: string, message: string): void {
    this.list.push(`--${flag} ${message}`);
  }
}

/** A number flag: absent → fallback; otherwise it must be finite and within [min, max]. */
export function numberFlag(
  args: Record<string, unknown>,
  flag: string,
  fallback: number,
  p: OptionProblems,
  min = 0,
  max = Number.POSITIVE_INFINITY,
  integer = false,
): number {
  const raw = args[flag];
  if (raw === undefined) return fallback;
  const v = typeof raw === 'string' ? Number(raw) : Number.NaN;
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    p.add(flag, `must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max === Number.POSITIVE_INFINITY ? '∞' : max} (got ${JSON.stringify(raw)})`);
    return fallback;
  }
  return v;
}

export function stringFlag(args: Record<string, unknown>, flag: string, p: OptionProblems): string | undefined {
  const raw = args[flag];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || raw === '') {
    p.add(flag, 'needs a value');
    return undefined;
  }
  return raw;
}

/** Parse the shared flags; problems are collected, not thrown. */
export function commonOptions(args: Record<string, unknown>, script: string, p: OptionProblems, env: NodeJS.ProcessEnv = process.env): CommonOptions | null {
  const worker = stringFlag(args, 'worker', p);
  const autoscaler = stringFlag(args, 'autoscaler', p);
  const endpoint = stringFlag(args, 'endpoint', p);
  const apiKey = stringFlag(args, 'api-key', p) ?? env.API_KEY;
  let target: Target | null = null;
  if (worker && autoscaler) p.add('worker', 'and --autoscaler exclude each other: choose one');
  else if (worker) {
    if (!/^https?:\/\//.test(worker)) p.add('worker', `must be an http(s) URL (got ${JSON.stringify(worker)})`);
  } else if (autoscaler) {
    if (!/^https?:\/\//.test(autoscaler)) p.add('autoscaler', `must be an http(s) URL (got ${JSON.stringify(autoscaler)})`);
    if (!endpoint) p.add('endpoint', 'is required with --autoscaler');
    if (!apiKey) p.add('api-key', 'is required with --autoscaler (or set $API_KEY)');
  } else p.add('worker', 'or --autoscaler is required: where should the load go?');
  const backendRaw = stringFlag(args, 'backend', p) ?? 'openai';
  if (!(BACKENDS as readonly string[]).includes(backendRaw)) p.add('backend', `must be one of ${BACKENDS.join(', ')} (got ${JSON.stringify(backendRaw)})`);
  const timeoutS = numberFlag(args, 'timeout', 120, p, 0.1);
  const maxInflight = numberFlag(args, 'max-inflight', 512, p, 1, 100_000, true);
  const drainS = numberFlag(args, 'drain', 30, p, 0);
  const bucketS = numberFlag(args, 'bucket', 1, p, 0.1);
  const progressIntervalS = numberFlag(args, 'progress-interval', 5, p, 0.2);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const outDir = resolve(stringFlag(args, 'out', p) ?? `load-results/${script}-${stamp}`);
  if (p.list.length > 0) return null;
  if (worker) target = workerTarget(worker);
  else target = autoscalerTarget({ autoscalerUrl: autoscaler!, endpoint: endpoint!, apiKey: apiKey! });
  return {
    target,
    backend: backendRaw as Backend,
    stream: args.stream === true,
    timeoutMs: timeoutS * 1000,
    maxInflight,
    drainS,
    bucketS,
    outDir,
    progressIntervalS,
  };
}

/** Print problems and the usage line, return exit code 2. */
export function badUsage(script: string, problems: string[]): number {
  for (const p of problems) process.stderr.write(`${script}: ${p}\n`);
  process.stderr.write(`Run \`npm run ${script} -- --help\` for the options.\n`);
  return 2;
}

/** Stop sending on the first SIGINT/SIGTERM (open requests drain and results are written). */
export function stopOnSignal(): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const stop = () => {
    process.stderr.write('\nstopping: no new requests; waiting for open ones (Ctrl-C again to quit now)\n');
    ac.abort();
    process.once('SIGINT', () => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return {
    signal: ac.signal,
    dispose() {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    },
  };
}

/** True when this module is the process's entry script. */
export function isMain(metaUrl: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(fileURLToPath(metaUrl)) === realpathSync(resolve(entry));
  } catch {
    return false;
  }
}

/** The closing summary both scripts print, plus any extra lines. */
export function summaryText(r: RunResult, extra: string[] = []): string {
  return (
    [
      `requests   sent ${r.sent}, ok ${r.ok}, errors ${r.errors}, shed ${r.shed}, cancelled by the drain ${r.drained} in ${r.elapsedS.toFixed(1)} s`,
      ...(r.errorCauses.length ? [`failures   ${r.errorCauses.map(([why, n]) => `${why} ×${n}`).join(', ')}`] : []),
      `latency    p50 ${ms(r.p50)}, p95 ${ms(r.p95)}, p99 ${ms(r.p99)}`,
      `throughput ${r.throughput.toFixed(1)} load/s`,
      `wrote      ${r.files.requests}, ${r.files.timeline}, ${r.files.plot}`,
      ...extra,
    ].join('\n') + '\n'
  );
}

/**
 * The exit code of a finished run: 1 when requests were sent and none succeeded (an unreachable
 * target must not look like a run), else 0. Says why on stderr.
 */
export function runExitCode(name: string, r: RunResult): number {
  if (r.sent === 0 || r.ok > 0) return 0;
  const why = r.errorCauses[0]?.[0] ?? 'no answer';
  process.stderr.write(`${name}: nothing succeeded (${r.sent} sent; most common failure: ${why})\n`);
  return 1;
}

/** Run a script's CLI when it is the process's entry point; a thrown error becomes exit code 1. */
export function runIfMain(metaUrl: string, name: string, cli: (argv: string[]) => Promise<number>): void {
  if (!isMain(metaUrl)) return;
  cli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
