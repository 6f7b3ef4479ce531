import { ConfigError } from '../common/protocol.js';
import { unreportedPath } from './unreported.js';
import type { LogActions, WorkerDefinition } from './config.js';
import { checkWorkerEnv, DEFAULT_MODEL_URL, isHttpUrl, type EnvSource, type WorkerEnv } from './env.js';
import { WORKER_VERSION } from './version.js';

/**
 * The worker's one resolved configuration: the handler spec and the environment merged once at
 * start, every default filled in. The worker, its extensions, the benchmark CLI and the start-up
 * failure report read this; nothing reads `process.env` after it is built.
 *
 * Precedence, per setting: the command line (`--model-url`) > the handler spec > the environment
 * > the default.
 */

export { DEFAULT_MODEL_URL };
export const DEFAULT_MODEL_TIMEOUT_MS = 300_000;
/** The whole answer of the model, streams included, within an hour (issue 21 row 16). */
export const DEFAULT_MODEL_ANSWER_TIMEOUT_MS = 3_600_000;
export const DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024;
export const DEFAULT_MAX_SESSIONS = 10;

/** Who start-up failures and reports go to (PROTOCOL §4, §7). */
export interface ReportTarget {
  addrs: string[];
  containerId: number;
  masterToken: string;
  version: string;
  publicUrl: string;
}

export interface WorkerConfig {
  /** The parsed variables, for parts that read one of their own (e.g. FORCE_UPDATE_FILE). */
  env: WorkerEnv;
  model: {
    url: string;
    timeoutMs: number;
    /** The whole answer (trailers included) within this many ms; 0 = no limit. */
    answerTimeoutMs: number;
    /** `GET {url}{healthPath}` must answer 200 before ready; null: wait `noHealthWaitMs` instead. */
    healthPath: string | null;
    logFile: string | null;
    sizeGb: number | null;
    logActions: LogActions;
  };
  listen: {
    host: string;
    port: number;
    /** The plain-HTTP listener serving only /session/end. */
    internalPort: number;
    tls: { certPath: string; keyPath: string } | null;
    maxBodyBytes: number;
    /** Open client connections at most, per listener (WORKER_MAX_CONNECTIONS). */
    maxConnections: number;
    /** ms a client gets for its request head, and for its whole request (body included). */
    headersTimeoutMs: number;
    requestTimeoutMs: number;
  };
  report: ReportTarget;
  auth: { unsecured: boolean; strict: boolean };
  maxSessions: number;
  workspaceDir: string;
  /** The file that keeps ids not yet reported across a kill -9 (unreported.ts); null: memory only. */
  unreportedFile: string | null;
  forceUpdateFile: string;
  drainTimeoutMs: number;
  log: { level: string; file: string | null };
}

export interface ResolveOverrides {
  /** `--model-url`: wins over the handler spec and MODEL_SERVER_URL. */
  modelUrl?: string;
}

/** The model server's URL, by the precedence above (the benchmark CLI asks for it alone). */
export function resolveModelUrl(
  definition: WorkerDefinition | null,
  env: Pick<WorkerEnv, 'MODEL_SERVER_URL'> | null,
  overrides: ResolveOverrides = {},
): string {
  return overrides.modelUrl ?? definition?.spec.modelServerUrl ?? env?.MODEL_SERVER_URL ?? DEFAULT_MODEL_URL;
}

function overrideProblems(overrides: ResolveOverrides): Record<string, string> {
  const out: Record<string, string> = {};
  if (overrides.modelUrl !== undefined && !isHttpUrl(overrides.modelUrl)) {
    out['--model-url'] = `must be an http(s) URL like ${DEFAULT_MODEL_URL}, got ${JSON.stringify(overrides.modelUrl)}`;
  }
  return out;
}

/** Merge a validated definition and a parsed environment; throws ConfigError on a bad override. */
export function resolveWorkerConfig(definition: WorkerDefinition, env: WorkerEnv, overrides: ResolveOverrides = {}): WorkerConfig {
  const problems = overrideProblems(overrides);
  if (Object.keys(problems).length) throw ConfigError.listing('invalid configuration', problems);
  const spec = definition.spec;
  return {
    env,
    model: {
      url: resolveModelUrl(definition, env, overrides).replace(/\/+$/, ''),
      timeoutMs: spec.modelTimeoutMs ?? DEFAULT_MODEL_TIMEOUT_MS,
      answerTimeoutMs: spec.modelAnswerTimeoutMs ?? DEFAULT_MODEL_ANSWER_TIMEOUT_MS,
      healthPath: spec.healthPath ?? env.MODEL_HEALTH_ENDPOINT ?? null,
      logFile: spec.modelLogFile ?? env.MODEL_LOG ?? null,
      sizeGb: spec.modelSizeGb ?? env.MODEL_SIZE_GB ?? null,
      logActions: { onLoad: spec.logActions?.onLoad ?? [], onError: spec.logActions?.onError ?? [], onInfo: spec.logActions?.onInfo ?? [] },
    },
    listen: {
      host: env.WORKER_HOST,
      port: env.WORKER_PORT,
      internalPort: env.workerHttpPort,
      tls: env.USE_SSL ? { certPath: env.SSL_CERT_PATH, keyPath: env.SSL_KEY_PATH } : null,
      maxBodyBytes: spec.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      maxConnections: env.WORKER_MAX_CONNECTIONS,
      headersTimeoutMs: Math.round(env.WORKER_HEADERS_TIMEOUT * 1000),
      requestTimeoutMs: Math.round(env.WORKER_REQUEST_TIMEOUT * 1000),
    },
    report: reportTargetOf(env),
    auth: { unsecured: env.UNSECURED, strict: env.STRICT_AUTH },
    maxSessions: spec.maxSessions ?? DEFAULT_MAX_SESSIONS,
    workspaceDir: env.WORKSPACE_DIR,
    unreportedFile: env.UNREPORTED_FILE === 'off' ? null : (env.UNREPORTED_FILE ?? unreportedPath(env.WORKSPACE_DIR)),
    forceUpdateFile: env.FORCE_UPDATE_FILE,
    drainTimeoutMs: env.DRAIN_TIMEOUT * 1000,
    log: { level: env.LOG_LEVEL, file: env.LOG_FILE ?? null },
  };
}

function reportTargetOf(env: WorkerEnv): ReportTarget {
  return {
    addrs: env.REPORT_ADDR,
    containerId: env.CONTAINER_ID,
    masterToken: env.MASTER_TOKEN,
    version: env.WORKER_VERSION ?? WORKER_VERSION,
    publicUrl: env.publicUrl,
  };
}

/**
 * Build the configuration from the raw environment and a way to load the handler, collecting the
 * problems of both (and of the overrides) so a bad start lists every one at once.
 */
export async function loadWorkerConfig(
  raw: EnvSource,
  loadDefinition: (backend: string | undefined) => Promise<WorkerDefinition>,
  opts: ResolveOverrides & { handler?: string } = {},
): Promise<{ definition: WorkerDefinition; config: WorkerConfig }> {
  const { env, problems } = checkWorkerEnv(raw);
  const lines = Object.entries({ ...problems, ...overrideProblems(opts) }).map(([k, v]) => `${k}: ${v}`);
  let definition: WorkerDefinition | null = null;
  try {
    definition = await loadDefinition(opts.handler ?? env?.BACKEND ?? (raw.BACKEND || undefined));
  } catch (err) {
    // A definition's own problems come listed already: add them line by line.
    if (err instanceof ConfigError && err.problems.length) lines.push(...err.problems);
    else lines.push((err as Error).message);
  }
  if (lines.length || !env || !definition) throw ConfigError.listing('invalid configuration', lines);
  return { definition, config: resolveWorkerConfig(definition, env, opts) };
}

/**
 * Who to tell about a failed start when the environment did not parse: the same parse with every
 * bad variable dropped (its default stands in; a report with a default id beats no report).
 * Null when there is nowhere valid to report to.
 */
export function salvageReportTarget(raw: EnvSource): ReportTarget | null {
  const env: EnvSource = { ...raw };
  // Each pass drops the variables the last one named; a pass without problems ends it.
  for (let pass = 0; pass < 3; pass++) {
    const r = checkWorkerEnv(env, { containerIdRequired: false });
    if (r.env) return r.env.REPORT_ADDR.length ? reportTargetOf({ ...r.env, CONTAINER_ID: r.env.CONTAINER_ID ?? 0 }) : null;
    for (const key of Object.keys(r.problems)) delete env[key.split('.')[0]!];
  }
  return null;
}
