import { z } from 'zod';

/**
 * The wire shapes every side shares (PROTOCOL §2, §4, §9): the worker checks `auth_data` with the
 * schema the engine's route answer is built from, the engine reads `worker_status` with the schema
 * the worker's reports are typed by, and every 4xx body and every refused config is made by the
 * same few functions below. One definition each, so the two ends cannot drift apart.
 */

// ---------------------------------------------------------------------------------------------
// Numbers as the Python side writes them: sometimes numeric strings.

/** A finite number, or a string holding one (the engine's cost is a string in some versions). */
function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  return undefined;
}

/**
 * A field checked by `check` (undefined = wrong kind, said with `message`); absent or null is
 * `missing parameter` unless optional. Plain functions, not zod chains: this runs on every request.
 */
function field<T>(check: (v: unknown) => T | undefined, message: string, optional = false) {
  return z.unknown().transform((v, ctx): T | undefined => {
    if (v === undefined || (v === null && !optional)) {
      if (!optional) ctx.addIssue({ code: 'custom', message: 'missing parameter' });
      return undefined;
    }
    const out = check(v);
    if (out === undefined) ctx.addIssue({ code: 'custom', message });
    return out;
  });
}

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const nonNegative = (v: unknown) => {
  const n = toNumber(v);
  return n !== undefined && n >= 0 ? n : undefined;
};
const integer = (v: unknown) => {
  const n = toNumber(v);
  return n !== undefined && Number.isInteger(n) ? n : undefined;
};

// ---------------------------------------------------------------------------------------------
// auth_data (PROTOCOL §2) and the route answer it is copied from (§9).

/** How deep auth_data (and session_auth) may nest: they are hashed and signed by recursive code. */
export const MAX_AUTH_DEPTH = 32;

/** True when `value` nests arrays/objects deeper than `max` levels; iterative, so any depth is safe to ask about. */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}

const authDataFields = {
  cost: field(nonNegative, 'must be a non-negative number') as z.ZodType<number, unknown>,
  endpoint: field(str, 'must be a string') as z.ZodType<string, unknown>,
  reqnum: field(integer, 'must be an integer') as z.ZodType<number, unknown>,
  request_idx: field(integer, 'must be an integer') as z.ZodType<number, unknown>,
  signature: field(str, 'must be a string') as z.ZodType<string, unknown>,
  url: field(str, 'must be a string') as z.ZodType<string, unknown>,
  /** Strict mode only: when the signature stops being valid (unix seconds). */
  expires_at: (field(toNumber, 'must be a number (unix seconds)', true) as z.ZodType<number, unknown>).optional(),
};

/**
 * Extra keys are ignored, but they are hashed (sessions) and signed (strict mode) by recursive code.
 * Primitives cannot nest: the walk and its allocations are skipped for them.
 */
const shallowExtra = z
  .unknown()
  .refine((v) => typeof v !== 'object' || v === null || !nestedDeeperThan(v, MAX_AUTH_DEPTH - 1), `nested deeper than ${MAX_AUTH_DEPTH} levels`);

/** `auth_data` as a worker accepts it: the six required keys (numbers may be numeric strings), extra keys kept. */
export const authDataSchema = z.object(authDataFields).catchall(shallowExtra);
export type AuthData = z.output<typeof authDataSchema>;

/**
 * `POST /route/`'s answer once a worker is chosen: auth_data plus what the engine adds. The client
 * forwards it verbatim; a Vast engine may omit `worker_id` and `status`.
 */
export const routeAnswerSchema = z.looseObject({
  ...authDataFields,
  url: z.string({ error: 'must be a string' }).min(1, 'must not be empty'),
  worker_id: z.number().int().optional(),
  status: z.string().optional(),
});
export type RouteAnswer = z.output<typeof routeAnswerSchema>;

// ---------------------------------------------------------------------------------------------
// worker_status (PROTOCOL §4), read leniently as the Python worker writes it.

const int = z.union([
  z.number().int(),
  z
    .string()
    .regex(/^-?\d+$/, 'expected an integer')
    .transform(Number),
]);
const num = (fallback = 0) =>
  z
    .union([
      z.number(),
      z
        .string()
        .regex(/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/, 'expected a number')
        .transform(Number),
    ])
    .nullish()
    .transform((v) => v ?? fallback);

/** The wire's integer: a number, or a string of digits. */
export const wireInt = int;
/** The wire's number with a default for missing or null. */
export const wireNumber = num;

/** `POST /worker_status/`: missing counters are 0, `null` is "none", ids may be numeric strings, extra keys kept. */
export const workerStatusSchema = z.looseObject({
  id: int,
  mtoken: z.string({ error: 'mtoken required' }),
  version: z.string().nullish(),
  loadtime: num(),
  cur_load: num(),
  rej_load: num(),
  new_load: num(),
  error_msg: z
    .string()
    .nullish()
    .transform((v) => v ?? ''),
  max_perf: num(),
  cur_perf: num(),
  cur_capacity: num(),
  max_capacity: num(),
  num_requests_working: num(),
  num_requests_recieved: num(),
  additional_disk_usage: num(),
  working_request_idxs: z
    .array(int)
    .nullish()
    .transform((v) => v ?? []),
  url: z.string().nullish(),
});
export type WorkerStatusReport = z.output<typeof workerStatusSchema>;
/** A report as a worker writes it. */
export type WorkerStatusInput = z.input<typeof workerStatusSchema>;

// ---------------------------------------------------------------------------------------------
// Errors: one 4xx body, one zod-issue formatter, one config error.

/**
 * Every 4xx (and the engine's 5xx) JSON body: what is wrong, the field at fault (`field`, the
 * first one) and every field with its problem (`fields`). Routes may add keys of their own.
 */
export interface ErrorBody {
  error: string;
  field?: string;
  fields?: Record<string, string>;
  [extra: string]: unknown;
}

/** An error body naming one field (a string) or several (`{field: problem}`); none for a 5xx. */
export function errorBody(error: string, fields?: string | Record<string, string>, extra: Record<string, unknown> = {}): ErrorBody {
  if (fields === undefined) return { error, ...extra };
  const map = typeof fields === 'string' ? { [fields]: error } : fields;
  const first = Object.keys(map)[0];
  return first === undefined ? { error, ...extra } : { error, field: first, fields: map, ...extra };
}

type Issues = z.ZodError | readonly z.core.$ZodIssue[];

/**
 * Zod issues as `{ "path.to.field": "message" }`: every field listed (its first problem), unknown
 * keys named one by one, `root` for a problem of the whole value. The `fields` of every 4xx body
 * and of every refused config.
 */
export function fieldErrors(error: Issues, prefix = '', root = '(body)'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, message] of issueEntries(error, prefix, root)) out[key] ??= message;
  return out;
}

/** Every issue as [field path, message], in order; a field may come more than once. */
function issueEntries(error: Issues, prefix: string, root: string): Array<[string, string]> {
  const issues = error instanceof z.ZodError ? error.issues : error;
  const out: Array<[string, string]> = [];
  for (const issue of issues) {
    const base = [prefix, ...issue.path.map(String)].filter((p) => p !== '').join('.');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push([base ? `${base}.${key}` : key, 'unknown field']);
      continue;
    }
    out.push([base || root, issue.message]);
  }
  return out;
}

/**
 * A configuration that cannot be used: the message lists every problem, one a line, each naming
 * its field; `fields` holds them by name for callers that answer in JSON.
 */
export class ConfigError extends Error {
  /** `message` as it is, or problem lines listed under "invalid configuration". */
  constructor(
    message: string | readonly string[],
    readonly fields: Record<string, string> = {},
  ) {
    super(typeof message === 'string' ? message : listed('invalid configuration', message));
    this.name = 'ConfigError';
  }

  /** `title:` then one `  - problem` line each; `problems` are lines or `{field: problem}`. */
  static listing(title: string, problems: readonly string[] | Record<string, string>): ConfigError {
    const isList = Array.isArray(problems);
    const lines = isList ? (problems as readonly string[]) : Object.entries(problems).map(([k, v]) => `${k}: ${v}`);
    return new ConfigError(listed(title, lines), isList ? {} : (problems as Record<string, string>));
  }

  /** A refused zod parse, every issue listed. */
  static fromZod(title: string, error: Issues, prefix = ''): ConfigError {
    const entries = issueEntries(error, prefix, '(config)');
    return new ConfigError(
      listed(
        title,
        entries.map(([k, v]) => `${k}: ${v}`),
      ),
      fieldErrors(error, prefix, '(config)'),
    );
  }

  /** The problem lines (the message without its title). */
  get problems(): string[] {
    return this.message
      .split('\n')
      .slice(1)
      .map((l) => l.replace(/^\s+(- )?/, ''));
  }
}

function listed(title: string, lines: readonly string[]): string {
  return `${title}:\n${lines.map((l) => `  - ${l}`).join('\n')}`;
}
