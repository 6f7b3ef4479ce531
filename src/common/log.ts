import pino, { type Logger } from 'pino';

export type { Logger };

/** Keys whose values are never written to a log, wherever they appear in a logged object. */
export const SECRET_KEYS = [
  'mtoken', 'master_token', 'masterToken', 'MASTER_TOKEN', 'token', 'apiKey', 'api_key',
  'signature', 'session_auth', 'sessionAuth', 'authorization', 'Authorization', 'auth_data', 'authData',
  'cookie', 'password', 'secret', 'private_key', 'privateKey', 'privateKeyPem',
];

// Four levels deep covers every object the worker logs (e.g. {req: {headers: {authorization}}}).
const redactPaths = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`, `*.*.*.${k}`]);

/**
 * One structured JSON line per event. `LOG_LEVEL` sets the level (default info);
 * `LOG_FILE` sends lines to a file instead of stdout.
 */
export function createLogger(name: string, opts: { level?: string; destination?: string | number } = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  const dest = opts.destination ?? process.env.LOG_FILE ?? 1;
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      redact: { paths: redactPaths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest, sync: false, mkdir: true }),
  );
}

/** A token shown in a log line: enough to recognise it, not enough to use it. */
export function maskSecret(s: string | undefined | null): string {
  if (!s) return '';
  return s.length <= 4 ? '****' : `${s.slice(0, 2)}****`;
}
