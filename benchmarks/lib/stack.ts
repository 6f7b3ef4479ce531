import { readFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, fetch as undiciFetch } from 'undici';
import { sleep } from '#nodeworker/common/util.js';
import { startProcess, type BenchProcess } from './procs.js';

/**
 * The processes the suite measures, each started from the compiled tree (`dist/`) as users run
 * them: model-sim, the worker CLI, and the worker with chosen parts (lib/worker-proc.ts).
 */

const here = dirname(fileURLToPath(import.meta.url));
/** The package's CLI (dist/cli.js), found through the package's import map. */
export const CLI_PATH = fileURLToPath(import.meta.resolve('#nodeworker/cli.js'));
/** Compiled benchmark helpers (lib/*.js). */
export const LIB_DIR = here;

export interface ModelSimOptions {
  dir: string;
  /** Tokens/s of one request (default 1e9: answers at once). */
  tokenRate?: number;
  ttftMs?: number;
  capacity?: number;
  fdLimit?: number;
  cli?: string;
}

/** A fast model-sim (openai flavor); `ready` is its URL. */
export async function startModelSim(o: ModelSimOptions): Promise<BenchProcess> {
  const sim = await startProcess(
    process.execPath,
    [
      o.cli ?? CLI_PATH,
      'model-sim',
      '--flavor',
      'openai',
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--load-seconds',
      '0',
      '--token-rate',
      String(o.tokenRate ?? 1e9),
      '--capacity',
      String(o.capacity ?? 1e12),
      '--ttft-ms',
      String(o.ttftMs ?? 0),
      '--log-file',
      join(o.dir, `model-${Date.now()}.log`),
    ],
    { readyLine: /model-sim listening on (http:\/\/[\d.:]+)\s/, fdLimit: o.fdLimit },
  );
  await waitHttp(`${sim.ready}/health`, 200, 20_000);
  return sim;
}

export interface CliWorkerOptions {
  dir: string;
  modelUrl: string;
  /** Extra environment (UNSECURED, REPORT_ADDR, ...). Default: UNSECURED, no engine. */
  env?: Record<string, string>;
  /** Node flags before the script (e.g. --cpu-prof). */
  nodeArgs?: string[];
  fdLimit?: number;
  cli?: string;
  /** The CA that signed the worker's certificate, when it serves HTTPS (USE_SSL in `env`). */
  ca?: Buffer;
}

/** `node dist/cli.js worker --handler openai` with a cached perf; `ready` is its URL once ready. */
export async function startCliWorker(o: CliWorkerOptions): Promise<BenchProcess> {
  writeFileSync(join(o.dir, '.has_benchmark'), '1000000000');
  const logFile = join(o.dir, `worker-${Date.now()}-${Math.random().toString(36).slice(2, 6)}.log`);
  const proc = await startProcess(process.execPath, [...(o.nodeArgs ?? []), o.cli ?? CLI_PATH, 'worker', '--handler', 'openai', '--model-url', o.modelUrl], {
    env: {
      ...process.env,
      WORKER_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '1',
      UNSECURED: 'true',
      WORKSPACE_DIR: o.dir,
      REPORT_ADDR: '',
      MODEL_LOG: '',
      LOG_LEVEL: 'info',
      LOG_FILE: logFile,
      ...o.env,
    },
    fdLimit: o.fdLimit,
  });
  try {
    const url = await waitLogUrl(logFile, 20_000);
    await waitReady(url, 30_000, o.ca);
    return { ...proc, ready: url };
  } catch (err) {
    await proc.stop(0);
    throw err;
  }
}

/** Options of lib/worker-proc.ts: a worker with exactly the parts a comparison needs. */
export interface PartsWorkerOptions {
  dir: string;
  modelUrl: string;
  /** Sessions, management, /metrics, request log. */
  extensions: boolean;
  /** The engine: reports go there and the public key comes from there; null = UNSECURED, no reporter. */
  engineUrl: string | null;
  /** The request path's fast lane and lean model client (default on). */
  fastLane?: boolean;
  modelClient?: boolean;
  /** Node flags before the script (e.g. --cpu-prof). */
  nodeArgs?: string[];
  fdLimit?: number;
  /** Extra environment (e.g. UNREPORTED_FILE=off), over the rest. */
  env?: Record<string, string>;
}

/** A worker process with chosen parts (lib/worker-proc.js); `ready` is its URL once ready. */
export async function startPartsWorker(o: PartsWorkerOptions): Promise<BenchProcess> {
  writeFileSync(join(o.dir, '.has_benchmark'), '1000000000');
  const proc = await startProcess(process.execPath, [...(o.nodeArgs ?? []), join(LIB_DIR, 'worker-proc.js')], {
    env: {
      ...process.env,
      BENCH_MODEL_URL: o.modelUrl,
      BENCH_EXTENSIONS: o.extensions ? '1' : '0',
      BENCH_FAST_LANE: o.fastLane === false ? '0' : '1',
      BENCH_MODEL_CLIENT: o.modelClient === false ? '0' : '1',
      WORKER_PORT: '0',
      WORKER_HOST: '127.0.0.1',
      CONTAINER_ID: '1',
      WORKSPACE_DIR: o.dir,
      MODEL_LOG: '',
      ...(o.engineUrl ? { REPORT_ADDR: o.engineUrl, MASTER_TOKEN: 'bench-token', UNSECURED: '' } : { REPORT_ADDR: '', UNSECURED: 'true' }),
      ...o.env,
    },
    readyLine: /bench-worker listening on (http:\/\/[\d.:]+)\s/,
    fdLimit: o.fdLimit,
  });
  try {
    await waitReady(proc.ready, 30_000);
    return proc;
  } catch (err) {
    await proc.stop(0);
    throw err;
  }
}

/** Poll `url` until it answers `status`. */
export async function waitHttp(url: string, status: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.status === status) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > until) throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** The worker CLI's URL, from its "worker listening" log line. */
export async function waitLogUrl(file: string, timeoutMs: number): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const m = /"url":"(https?:\/\/[\d.:]+)"[^\n]*"msg":"worker listening"/.exec(text);
    if (m) return m[1]!;
    if (Date.now() > until) throw new Error(`the worker did not log its URL within ${timeoutMs} ms; log:\n${text.slice(-2000)}`);
    await sleep(50);
  }
}

/** Poll the worker's /healthz until its state is `ready` (trusting `ca` over https). */
export async function waitReady(workerUrl: string, timeoutMs: number, ca?: Buffer): Promise<void> {
  const until = Date.now() + timeoutMs;
  const dispatcher = ca ? new Agent({ connect: { ca } }) : undefined;
  try {
    await pollReady(workerUrl, until, timeoutMs, dispatcher);
  } finally {
    await dispatcher?.close();
  }
}

async function pollReady(workerUrl: string, until: number, timeoutMs: number, dispatcher: Agent | undefined): Promise<void> {
  for (;;) {
    const state = await undiciFetch(`${workerUrl}/healthz`, { dispatcher }).then(
      (r) => r.json() as Promise<{ state: string; reason?: string }>,
      () => null,
    );
    if (state?.state === 'ready') return;
    if (Date.now() > until) throw new Error(`the worker was not ready within ${timeoutMs} ms (state ${state?.state ?? 'unreachable'}: ${state?.reason ?? ''})`);
    await sleep(50);
  }
}
