import { z } from 'zod';
import { ConfigError, formatIssues } from './config.js';

/**
 * The worker's environment (PROTOCOL §8), parsed once at start. Every variable, its default
 * and its meaning is listed in the README's configuration reference.
 */
const bool = z
  .string()
  .optional()
  .transform((v) => v !== undefined && /^(1|true|yes|on)$/i.test(v.trim()));
const port = z.coerce.number().int().min(0).max(65535);

const envSchema = z.object({
  WORKER_PORT: port.default(3000),
  WORKER_HTTP_PORT: port.optional(),
  WORKER_HOST: z.string().default('0.0.0.0'),
  WORKER_MAX_CONNECTIONS: z.coerce.number().int().min(1).default(10_000),
  REPORT_ADDR: z
    .string()
    .default('')
    .transform((s) => s.split(',').map((a) => a.trim().replace(/\/+$/, '')).filter(Boolean))
    .pipe(z.array(z.url('REPORT_ADDR entries must be URLs like https://run.vast.ai'))),
  MASTER_TOKEN: z.string().default(''),
  CONTAINER_ID: z.coerce.number({ message: 'CONTAINER_ID must be an integer' }).int('CONTAINER_ID must be an integer'),
  PUBLIC_IPADDR: z.string().default('127.0.0.1'),
  USE_SSL: bool,
  SSL_CERT_PATH: z.string().default('/etc/instance.crt'),
  SSL_KEY_PATH: z.string().default('/etc/instance.key'),
  UNSECURED: bool,
  STRICT_AUTH: bool,
  MODEL_SERVER_URL: z.url().optional(),
  MODEL_LOG: z.string().optional(),
  MODEL_HEALTH_ENDPOINT: z.string().optional(),
  MODEL_SIZE_GB: z.coerce.number().positive().optional(),
  BACKEND: z.string().optional(),
  WORKSPACE_DIR: z.string().default(process.cwd()),
  FORCE_UPDATE_FILE: z.string().default('/.force_update'),
  DRAIN_TIMEOUT: z.coerce.number().min(0).default(30),
  WORKER_VERSION: z.string().optional(),
});

export type WorkerEnv = z.output<typeof envSchema> & {
  /** Port of the plain-HTTP listener that serves only /session/end. */
  workerHttpPort: number;
  /** The worker's public URL as reported to the engine. */
  publicUrl: string;
};

export function parseWorkerEnv(env: NodeJS.ProcessEnv = process.env): WorkerEnv {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error.issues));
  const e = parsed.data;
  const publicPort = env[`VAST_TCP_PORT_${e.WORKER_PORT}`] ?? String(e.WORKER_PORT);
  const scheme = e.USE_SSL ? 'https' : 'http';
  return {
    ...e,
    workerHttpPort: e.WORKER_HTTP_PORT ?? (e.WORKER_PORT === 0 ? 0 : e.WORKER_PORT + 1),
    publicUrl: `${scheme}://${e.PUBLIC_IPADDR}:${publicPort}`,
  };
}
