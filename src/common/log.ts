import pino, { type Logger } from 'pino';
import { prettyStream } from './log-pretty.js';

export type { Logger };

/** Keys whose values are never written to a log, wherever they appear in a logged object. */
export const SECRET_KEYS = [
  'mtoken',
  'master_token',
  'masterToken',
  'MASTER_TOKEN',
  'token',
  'apiKey',
  'api_key',
  'signature',
  'session_auth',
  'sessionAuth',
  'authorization',
  'Authorization',
  'auth_data',
  'authData',
  'cookie',
  'password',
  'secret',
  'private_key',
  'privateKey',
  'privateKeyPem',
];

// Four levels deep covers every object the worker logs (e.g. {req: {headers: {authorization}}}).
const redactPaths = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`, `*.*.*.${k}`]);

/** How log lines are written: one JSON object a line, or a human line (pretty) for a terminal. */
export type LogFormat = 'json' | 'pretty';

/**
 * One structured event per line. `LOG_LEVEL` sets the level (default info); `LOG_FILE` sends
 * lines to a file instead of stdout; `LOG_FORMAT` (json|pretty) picks the format, by default
 * pretty when the lines go to a terminal and JSON otherwise (files, pipes, log collectors).
 */
export function createLogger(name: string, opts: { level?: string; destination?: string | number; format?: LogFormat } = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  const dest = opts.destination ?? process.env.LOG_FILE ?? 1;
  const options = {
    name,
    level,
    base: { pid: process.pid },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  const format = opts.format ?? logFormatFromEnv(dest);
  if (format === 'pretty') {
    const toStdout = dest === 1 || dest === '/dev/stdout';
    const out = toStdout ? process.stdout : pino.destination({ dest, sync: true, mkdir: true });
    return pino(options, prettyStream(out, toStdout && process.stdout.isTTY === true && !process.env.NO_COLOR));
  }
  return pino(options, pino.destination({ dest, sync: false, mkdir: true }));
}

/** LOG_FORMAT when set; else pretty only for stdout on a terminal. */
function logFormatFromEnv(dest: string | number): LogFormat {
  const set = process.env.LOG_FORMAT?.trim().toLowerCase();
  if (set === 'json' || set === 'pretty') return set;
  return dest === 1 && process.stdout.isTTY === true ? 'pretty' : 'json';
}

/** A token shown in a log line: enough to recognise it, not enough to use it. */
export function maskSecret(s: string | undefined | null): string {
  if (!s) return '';
  return s.length <= 4 ? '****' : `${s.slice(0, 2)}****`;
}
