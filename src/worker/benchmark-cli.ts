import { Pool } from 'undici';
import { parseFlags, usageFailed, type Flags } from '../common/args.js';
import { benchmarkProgressPrinter, describeFailure, runBenchmark, type BenchmarkResult } from './benchmark.js';
import { checkWorkerEnv } from './env.js';
import { resolveModelUrl } from './worker-config.js';
import { ConfigError } from './config.js';
import { loadWorkerDefinition } from './load-definition.js';

const HELP = `usage: nodeworker benchmark --handler NAME|PATH [--model-url URL] [--runs N] [--concurrency N]
                           [--max-tokens N] [--workspace DIR] [--use-cache] [--json]

Measures a running model server's perf (load/s) with the handler's benchmark, as the worker
does at start: a warm-up request, then N rounds of C concurrent requests; perf = best round.
Prints the per-round table and the perf; exits 1 when no request succeeded, 2 on bad arguments.

  --runs N          rounds (default: the handler's, else 8)
  --concurrency N   requests fired at once per round (default: the handler's, else 10; 1 when
                    the handler is not parallel). Pick it so the model saturates:
                    concurrency >= capacity / one request's token rate (see docs/benchmark.md)
  --max-tokens N    tokens generated per benchmark request by the built-in LLM generators
                    (sets BENCHMARK_MAX_TOKENS; default 256)
  --use-cache       read and write the .has_benchmark cache in --workspace (default
                    $WORKSPACE_DIR or the current directory); by default it is neither read nor written
  --json            print the result as one JSON object instead of the table
`;

function int(v: string | boolean | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isInteger(n) || n < 1) throw new ConfigError([`--${name} must be a positive integer, got ${JSON.stringify(v)}`]);
  return n;
}

/** An http(s) URL, or a ConfigError naming the flag (exit 2, as the help says). */
function httpUrl(raw: string, flag: string): URL {
  let url: URL | null = null;
  try {
    url = new URL(raw);
  } catch {
    /* reported below */
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new ConfigError([`${flag} must be an http(s) URL such as http://127.0.0.1:8000, got ${JSON.stringify(raw)}`]);
  }
  return url;
}

export async function runBenchmarkCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseFlags(argv, {
      handler: 'string',
      'model-url': 'string',
      runs: 'string',
      concurrency: 'string',
      'max-tokens': 'string',
      workspace: 'string',
      'use-cache': 'boolean',
      json: 'boolean',
    });
  } catch (err) {
    return usageFailed('nodeworker benchmark', err, 'nodeworker benchmark --help');
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let runs: number | undefined;
  let concurrency: number | undefined;
  let definition: Awaited<ReturnType<typeof loadWorkerDefinition>>;
  try {
    runs = int(args.runs, 'runs');
    concurrency = int(args.concurrency, 'concurrency');
    // The built-in generators read it when their module loads, just below: the flag is the variable.
    const maxTokens = int(args['max-tokens'], 'max-tokens');
    if (maxTokens !== undefined) process.env.BENCHMARK_MAX_TOKENS = String(maxTokens);
    if (typeof args['model-url'] === 'string') httpUrl(args['model-url'], '--model-url');
    const handler = typeof args.handler === 'string' ? args.handler : process.env.BACKEND;
    definition = await loadWorkerDefinition(handler);
  } catch (err) {
    process.stderr.write(`nodeworker benchmark: ${(err as Error).message}\n`);
    return 2;
  }
  const modelUrl = resolveModelUrl(definition, checkWorkerEnv(process.env, { containerIdRequired: false }).env ?? null, {
    modelUrl: (typeof args['model-url'] === 'string' && args['model-url']) || undefined,
  });
  const pool = new Pool(modelUrl, { connections: 1024 });
  const progress = benchmarkProgressPrinter(process.stderr, { tty: process.stderr.isTTY === true });
  try {
    const useCache = args['use-cache'] === true;
    const result = await runBenchmark({
      handler: definition.benchmarkHandler,
      model: pool,
      runs,
      concurrency,
      workspaceDir: useCache ? (typeof args.workspace === 'string' ? args.workspace : (process.env.WORKSPACE_DIR ?? process.cwd())) : undefined,
      useCache,
      writeCache: useCache,
      onProgress: progress.onProgress,
    });
    if (args.json) {
      process.stdout.write(JSON.stringify(result) + '\n');
    } else {
      const rows = result.rounds.map(
        (r) =>
          `${String(r.round).padStart(5)}  ${`${r.ok}/${r.requests}`.padStart(8)}  ${r.workload.toFixed(0).padStart(10)}  ${r.seconds.toFixed(3).padStart(8)}  ${r.throughput.toFixed(1).padStart(12)}`,
      );
      process.stdout.write(
        [
          `model ${modelUrl}, handler ${definition.benchmarkHandler.route}${result.cached ? ' (cached perf)' : ''}`,
          result.rounds.length ? `round        ok    workload   seconds   load/s` : '',
          ...rows,
          `perf ${result.perf.toFixed(1)} load/s${result.error ? `  (${result.error})` : ''}`,
          ...failureLines(result, definition.benchmarkHandler.upstreamPath),
        ]
          .filter(Boolean)
          .join('\n') + '\n',
      );
    }
    return result.error ? 1 : 0;
  } catch (err) {
    process.stderr.write(`nodeworker benchmark: ${(err as Error).message}\n`);
    return 1;
  } finally {
    progress.stop();
    await pool.destroy();
  }
}

/** Under the table, when requests failed: the first ones and why (status and body, or the error). */
function failureLines(result: BenchmarkResult, route: string): string[] {
  const failures = result.failures ?? [];
  if (failures.length === 0) return [];
  return ['first failures:', ...failures.map((f) => `  ${f.at === 'warmup' ? 'warm-up' : `round ${f.at}`}: ${describeFailure(route, f)}`)];
}
