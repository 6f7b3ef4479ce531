import { z } from 'zod';
import { closest } from '../common/args.js';
import { ConfigError, fieldErrors } from '../common/protocol.js';

/**
 * The worker's environment (PROTOCOL §8), parsed once at start. Every variable, its default
 * and its meaning is listed in docs/configuration.md. Each message names what is wrong and what
 * would be right; `parseWorkerEnv` lists every bad variable at once.
 */
const bool = z
  .string()
  .optional()
  .transform((v) => v !== undefined && /^(1|true|yes|on)$/i.test(v.trim()));
const port = z.coerce
  .number({ error: 'must be a port number (0-65535)' })
  .int('must be a port number (0-65535)')
  .min(0, 'must be a port number (0-65535)')
  .max(65535, 'must be a port number (0-65535)');

/** Where the model server is when nothing says otherwise (vLLM's and TGI's usual port); written here only. */
export const DEFAULT_MODEL_URL = 'http://127.0.0.1:8000';

/** The log levels LOG_LEVEL accepts (pino's). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** True for an absolute http(s) URL with a host: what a model server or an engine address must be. */
export function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

/** An http(s) URL; `localhost:8000` (a valid URL of scheme "localhost:") is refused with the fix. */
export function httpUrl(example: string) {
  return z.string().refine(isHttpUrl, { error: (iss) => `must be an http(s) URL like ${example}, got ${JSON.stringify(iss.input)}` });
}

const reportAddrs = z
  .string()
  .default('')
  .transform((s) =>
    s
      .split(',')
      .map((a) => a.trim().replace(/\/+$/, ''))
      .filter(Boolean),
  )
  .superRefine((addrs, ctx) => {
    const bad = addrs.filter((a) => !isHttpUrl(a));
    if (bad.length)
      ctx.addIssue({
        code: 'custom',
        message: `every address must be an http(s) URL like https://run.vast.ai, got ${bad.map((b) => JSON.stringify(b)).join(', ')}`,
      });
  });

const containerId = z
  .string({ error: 'not set: the instance id (an integer), sent as `id` in every report' })
  .trim()
  .regex(/^-?\d+$/, 'must be an integer (the instance id)')
  .transform(Number);

const envSchema = z.object({
  WORKER_PORT: port.default(3000),
  WORKER_HTTP_PORT: port.optional(),
  WORKER_HOST: z.string().default('0.0.0.0'),
  WORKER_MAX_CONNECTIONS: z.coerce.number().int().min(1).default(10_000),
  // Seconds a client gets to send its request head / its whole request (node:http's defaults).
  WORKER_HEADERS_TIMEOUT: z.coerce.number({ error: 'must be a number of seconds' }).gt(0, 'must be a number of seconds above 0').default(10),
  WORKER_REQUEST_TIMEOUT: z.coerce.number({ error: 'must be a number of seconds' }).gt(0, 'must be a number of seconds above 0').default(60),
  REPORT_ADDR: reportAddrs,
  MASTER_TOKEN: z.string().default(''),
  CONTAINER_ID: containerId,
  PUBLIC_IPADDR: z.string().default('127.0.0.1'),
  USE_SSL: bool,
  SSL_CERT_PATH: z.string().default('/etc/instance.crt'),
  SSL_KEY_PATH: z.string().default('/etc/instance.key'),
  UNSECURED: bool,
  STRICT_AUTH: bool,
  MODEL_SERVER_URL: httpUrl(DEFAULT_MODEL_URL).optional(),
  MODEL_LOG: z.string().optional(),
  MODEL_HEALTH_ENDPOINT: z.string().optional(),
  MODEL_SIZE_GB: z.coerce.number({ error: 'must be a number of GB' }).positive('must be a number of GB above 0').optional(),
  BACKEND: z.string().optional(),
  WORKSPACE_DIR: z.string().default(process.cwd()),
  // Where ids not yet reported to the engine survive a kill -9 (default in WORKSPACE_DIR); `off`: memory only.
  UNREPORTED_FILE: z.string().optional(),
  FORCE_UPDATE_FILE: z.string().default('/.force_update'),
  DRAIN_TIMEOUT: z.coerce.number({ error: 'must be a number of seconds' }).min(0, 'must be a number of seconds ≥ 0').default(30),
  WORKER_VERSION: z.string().optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS, { error: (iss) => `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(iss.input)}` }).default('info'),
  LOG_FILE: z.string().optional(),
});

export type WorkerEnv = z.output<typeof envSchema> & {
  /** Port of the plain-HTTP listener that serves only /session/end. */
  workerHttpPort: number;
  /** The worker's public URL as reported to the engine. */
  publicUrl: string;
};

/** The variables a command reads, as an object (process.env, or a test's literal). */
export type EnvSource = Record<string, string | undefined>;

/** Empty strings count as unset, as a shell's `VAR=` means. */
function withoutEmpty(env: EnvSource): EnvSource {
  const out: EnvSource = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && (v !== '' || k === 'REPORT_ADDR' || k === 'MASTER_TOKEN')) out[k] = v;
  return out;
}

/**
 * Every problem of the environment, by variable (empty when it is fine). `containerIdRequired`
 * false: for commands that do not report (the benchmark).
 */
export function checkWorkerEnv(env: EnvSource, opts: { containerIdRequired?: boolean } = {}): { env?: WorkerEnv; problems: Record<string, string> } {
  const schema = opts.containerIdRequired === false ? envSchema.extend({ CONTAINER_ID: containerId.optional() }) : envSchema;
  const parsed = schema.safeParse(withoutEmpty(env));
  if (!parsed.success) return { problems: withHints(fieldErrors(parsed.error, '', '(environment)'), env) };
  const e = parsed.data as z.output<typeof envSchema>;
  const publicPort = env[`VAST_TCP_PORT_${e.WORKER_PORT}`] || String(e.WORKER_PORT);
  const scheme = e.USE_SSL ? 'https' : 'http';
  return {
    env: {
      ...e,
      workerHttpPort: e.WORKER_HTTP_PORT ?? (e.WORKER_PORT === 0 ? 0 : e.WORKER_PORT + 1),
      publicUrl: `${scheme}://${e.PUBLIC_IPADDR}:${publicPort}`,
    },
    problems: {},
  };
}

/** Parse the environment once; throws ConfigError naming every bad variable. */
export function parseWorkerEnv(env: EnvSource = process.env): WorkerEnv {
  const { env: parsed, problems } = checkWorkerEnv(env);
  if (!parsed) throw ConfigError.listing('invalid environment', problems);
  return parsed;
}

/** Every variable the worker reads (the schema's, plus the per-port public port family). */
export const WORKER_ENV_NAMES: readonly string[] = Object.keys(envSchema.shape);

/**
 * Names people write for a worker variable that are too far from it for an edit-distance match:
 * the generic names of other servers and the PyWorker's own spellings.
 */
const ENV_ALIASES: Record<string, string> = {
  PORT: 'WORKER_PORT',
  HOST: 'WORKER_HOST',
  MODEL_URL: 'MODEL_SERVER_URL',
  MODEL_SERVER: 'MODEL_SERVER_URL',
  MODEL_LOG_FILE: 'MODEL_LOG',
  HEALTH_ENDPOINT: 'MODEL_HEALTH_ENDPOINT',
  HANDLER: 'BACKEND',
};

/**
 * Variables that are set, not read by the worker, and look like a worker variable that is not set
 * (`CONTAINERID` for CONTAINER_ID, `MODEL_URL` for MODEL_SERVER_URL, `PORT` for WORKER_PORT):
 * unknown name → the name meant. Other variables of the environment are none of the worker's business.
 */
export function envNearMisses(env: EnvSource): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || WORKER_ENV_NAMES.includes(name)) continue;
    const meant = ENV_ALIASES[name] ?? (name.length >= 6 && /^[A-Z0-9_]+$/.test(name) ? closest(name, WORKER_ENV_NAMES) : null);
    if (meant && env[meant] === undefined) out.set(name, meant);
  }
  return out;
}

/** Did-you-mean hints for start-up warnings: one sentence per near miss. */
export function envHints(env: EnvSource): string[] {
  return [...envNearMisses(env)].map(([name, meant]) => `${name} is set but not read: did you mean ${meant}?`);
}

/** The problems of a bad environment, each missing variable's with the near miss that was set instead. */
function withHints(problems: Record<string, string>, env: EnvSource): Record<string, string> {
  const out = { ...problems };
  for (const [name, meant] of envNearMisses(env)) if (out[meant] !== undefined) out[meant] += ` (${name} is set: did you mean ${meant}?)`;
  return out;
}
