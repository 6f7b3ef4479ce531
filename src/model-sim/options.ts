/**
 * The simulator's options: one table gives each option's flag, type, range, default
 * and help line, so `--help`, the CLI's flag parsing and the programmatic API's
 * validation cannot drift apart.
 */

/** The model servers the simulator can imitate. */
export const FLAVORS = ['openai', 'tgi', 'comfyui'] as const;
export type Flavor = (typeof FLAVORS)[number];
/** Other names of a flavor, as the worker's handler names have them (`--handler vllm` is openai). */
export const FLAVOR_ALIASES: Readonly<Record<string, Flavor>> = { vllm: 'openai' };

/** How to start a simulator; every field but `flavor` is optional (defaults in OPTION_SPECS). */
export interface ModelSimOptions {
  flavor: Flavor;
  /** 0 = an ephemeral port (the programmatic default). */
  port?: number;
  host?: string;
  /** Where model log lines are appended (created with its directory); stdout when unset. */
  logFile?: string;
  /** Seconds from start to the ready log line. */
  loadSeconds?: number;
  /** Tokens/s of one request on its own (comfyui: work units/s of the one running job). */
  tokenRate?: number;
  /** Tokens/s of all concurrent requests together (continuous batching). */
  capacity?: number;
  /** Time to first token, ms; does not use capacity. */
  ttftMs?: number;
  /** Fraction of model requests answered 500. */
  errorRate?: number;
  /** Crash once this many model requests have been admitted. */
  crashAfter?: number;
  /** Fraction of model requests never answered. */
  hangRate?: number;
  /** Seed of the error/hang choices; random when unset. */
  seed?: number;
  /** With downloadBytes: a file under this directory grows to downloadBytes while "downloading". */
  downloadDir?: string;
  downloadBytes?: number;
  /** Name the model reports in logs and answers. */
  modelName?: string;
  /** On a crash, exit the process with code 1 (CLI) instead of closing the server (default false). */
  exitOnCrash?: boolean;
}

/** Options after defaults are applied. */
export interface ResolvedOptions {
  flavor: Flavor;
  port: number;
  host: string;
  logFile: string | undefined;
  loadSeconds: number;
  tokenRate: number;
  capacity: number;
  ttftMs: number;
  errorRate: number;
  crashAfter: number | undefined;
  hangRate: number;
  seed: number;
  downloadDir: string | undefined;
  downloadBytes: number;
  modelName: string;
  exitOnCrash: boolean;
}

type Kind = 'int' | 'number' | 'string' | 'flavor';

interface OptionSpec {
  key: keyof ModelSimOptions;
  flag: string;
  kind: Kind;
  min?: number;
  /** When true, `min` itself is not allowed. */
  minExclusive?: boolean;
  max?: number;
  /** Shown in --help. */
  defaultText: string;
  help: string;
  metavar: string;
}

/** Default model name per flavor. */
export const DEFAULT_MODEL: Record<Flavor, string> = {
  openai: 'sim/Llama-3.1-8B-Instruct',
  tgi: 'sim/Llama-3.1-8B-Instruct',
  comfyui: 'sd_xl_base_1.0.safetensors',
};

/** Port the CLI uses when --port is not given: the real server's usual port. */
export const CLI_DEFAULT_PORT: Record<Flavor, number> = { openai: 8000, tgi: 8080, comfyui: 8188 };

export const DEFAULTS = {
  host: '127.0.0.1',
  loadSeconds: 2,
  tokenRate: 50,
  capacity: 1000,
  ttftMs: 50,
  errorRate: 0,
  hangRate: 0,
} as const;

/** Every option, in --help order. */
export const OPTION_SPECS: readonly OptionSpec[] = [
  {
    key: 'flavor',
    flag: 'flavor',
    kind: 'flavor',
    metavar: 'openai|vllm|tgi|comfyui',
    defaultText: 'openai',
    help: 'which server to imitate: vLLM (OpenAI API; vllm is another name of openai), TGI, ComfyUI (api wrapper)',
  },
  {
    key: 'port',
    flag: 'port',
    kind: 'int',
    min: 0,
    max: 65535,
    metavar: 'N',
    defaultText: '8000 / 8080 / 8188 by flavor; 0 = ephemeral',
    help: 'port to listen on',
  },
  { key: 'host', flag: 'host', kind: 'string', metavar: 'ADDR', defaultText: DEFAULTS.host, help: 'address to listen on' },
  { key: 'logFile', flag: 'log-file', kind: 'string', metavar: 'PATH', defaultText: 'stdout', help: 'append model log lines to this file (created)' },
  {
    key: 'loadSeconds',
    flag: 'load-seconds',
    kind: 'number',
    min: 0,
    metavar: 'S',
    defaultText: String(DEFAULTS.loadSeconds),
    help: 'seconds of downloading/loading before the ready log line; every route answers 503 until then',
  },
  {
    key: 'tokenRate',
    flag: 'token-rate',
    kind: 'number',
    min: 0,
    minExclusive: true,
    metavar: 'TOK/S',
    defaultText: String(DEFAULTS.tokenRate),
    help: 'tokens/s of one request on its own (comfyui: work units/s of the running job)',
  },
  {
    key: 'capacity',
    flag: 'capacity',
    kind: 'number',
    min: 0,
    minExclusive: true,
    metavar: 'TOK/S',
    defaultText: String(DEFAULTS.capacity),
    help: 'tokens/s of all concurrent requests together: each gets min(token-rate, capacity/active)',
  },
  {
    key: 'ttftMs',
    flag: 'ttft-ms',
    kind: 'number',
    min: 0,
    metavar: 'MS',
    defaultText: String(DEFAULTS.ttftMs),
    help: 'time to first token (uses no capacity); 0 with a huge rate answers 1-token requests at once',
  },
  {
    key: 'errorRate',
    flag: 'error-rate',
    kind: 'number',
    min: 0,
    max: 1,
    metavar: 'F',
    defaultText: String(DEFAULTS.errorRate),
    help: 'fraction of model requests answered 500',
  },
  {
    key: 'crashAfter',
    flag: 'crash-after',
    kind: 'int',
    min: 1,
    metavar: 'N',
    defaultText: 'never',
    help: 'when the Nth model request is admitted, log a crash and exit 1 with requests still open',
  },
  {
    key: 'hangRate',
    flag: 'hang-rate',
    kind: 'number',
    min: 0,
    max: 1,
    metavar: 'F',
    defaultText: String(DEFAULTS.hangRate),
    help: 'fraction of model requests never answered (until the client leaves)',
  },
  { key: 'seed', flag: 'seed', kind: 'int', metavar: 'N', defaultText: 'random', help: 'seed of the error/hang choices (same seed, same choices)' },
  {
    key: 'downloadDir',
    flag: 'download-dir',
    kind: 'string',
    metavar: 'DIR',
    defaultText: 'none',
    help: 'with --download-bytes: "download" the model into a file under DIR',
  },
  {
    key: 'downloadBytes',
    flag: 'download-bytes',
    kind: 'int',
    min: 0,
    metavar: 'N',
    defaultText: 'none',
    help: 'bytes written to that file, growing over the download phase',
  },
  {
    key: 'modelName',
    flag: 'model-name',
    kind: 'string',
    metavar: 'NAME',
    defaultText: `${DEFAULT_MODEL.openai} (comfyui: ${DEFAULT_MODEL.comfyui})`,
    help: 'model name shown in logs and answers',
  },
];

/** One problem with the options, naming the option (`flag` is the CLI spelling). */
export interface OptionProblem {
  key: string;
  flag: string;
  message: string;
}

function describe(spec: OptionSpec): string {
  const parts: string[] = [];
  if (spec.kind === 'int') parts.push('an integer');
  else if (spec.kind === 'number') parts.push('a number');
  if (spec.min !== undefined && spec.max !== undefined && !spec.minExclusive) parts.push(`from ${spec.min} to ${spec.max}`);
  else {
    if (spec.min !== undefined) parts.push(spec.minExclusive ? `> ${spec.min}` : `>= ${spec.min}`);
    if (spec.max !== undefined) parts.push(`<= ${spec.max}`);
  }
  return parts.join(' ');
}

/** Check one value against its spec; a message when it is wrong. */
function checkValue(spec: OptionSpec, value: unknown): string | undefined {
  switch (spec.kind) {
    case 'flavor':
      return typeof value === 'string' && (FLAVORS as readonly string[]).includes(value)
        ? undefined
        : `must be one of ${FLAVORS.join(', ')} (got ${JSON.stringify(value)})`;
    case 'string':
      return typeof value === 'string' && value.length > 0 ? undefined : `must be a non-empty string (got ${JSON.stringify(value)})`;
    case 'int':
    case 'number': {
      const bad = `must be ${describe(spec)} (got ${JSON.stringify(value)})`;
      if (typeof value !== 'number' || !Number.isFinite(value)) return bad;
      if (spec.kind === 'int' && !Number.isSafeInteger(value)) return bad;
      if (spec.min !== undefined && (spec.minExclusive ? value <= spec.min : value < spec.min)) return bad;
      if (spec.max !== undefined && value > spec.max) return bad;
      return undefined;
    }
  }
}

/** Every problem with a programmatic options object (unknown keys included). */
export function validateOptions(opts: Record<string, unknown>): OptionProblem[] {
  const problems: OptionProblem[] = [];
  const known = new Set<string>([...OPTION_SPECS.map((s) => s.key), 'exitOnCrash']);
  for (const key of Object.keys(opts)) {
    if (!known.has(key)) problems.push({ key, flag: key, message: 'is not an option' });
  }
  for (const spec of OPTION_SPECS) {
    const value = opts[spec.key];
    if (value === undefined) {
      if (spec.key === 'flavor') problems.push({ key: spec.key, flag: spec.flag, message: `is required (${FLAVORS.join(', ')})` });
      continue;
    }
    const message = checkValue(spec, value);
    if (message) problems.push({ key: spec.key, flag: spec.flag, message });
  }
  if (opts.exitOnCrash !== undefined && typeof opts.exitOnCrash !== 'boolean') {
    problems.push({ key: 'exitOnCrash', flag: 'exitOnCrash', message: 'must be a boolean' });
  }
  if ((opts.downloadDir === undefined) !== (opts.downloadBytes === undefined)) {
    const missing = opts.downloadDir === undefined ? 'downloadDir' : 'downloadBytes';
    const spec = OPTION_SPECS.find((s) => s.key === missing)!;
    problems.push({ key: missing, flag: spec.flag, message: 'is required with --download-dir/--download-bytes (give both)' });
  }
  return problems;
}

/** Apply defaults to valid options (call validateOptions first). */
export function resolveOptions(opts: ModelSimOptions): ResolvedOptions {
  return {
    flavor: opts.flavor,
    port: opts.port ?? 0,
    host: opts.host ?? DEFAULTS.host,
    logFile: opts.logFile,
    loadSeconds: opts.loadSeconds ?? DEFAULTS.loadSeconds,
    tokenRate: opts.tokenRate ?? DEFAULTS.tokenRate,
    capacity: opts.capacity ?? DEFAULTS.capacity,
    ttftMs: opts.ttftMs ?? DEFAULTS.ttftMs,
    errorRate: opts.errorRate ?? DEFAULTS.errorRate,
    crashAfter: opts.crashAfter,
    hangRate: opts.hangRate ?? DEFAULTS.hangRate,
    seed: opts.seed ?? Math.floor(Math.random() * 2 ** 31),
    downloadDir: opts.downloadDir,
    downloadBytes: opts.downloadBytes ?? 0,
    modelName: opts.modelName ?? DEFAULT_MODEL[opts.flavor],
    exitOnCrash: opts.exitOnCrash ?? false,
  };
}

/**
 * Turn CLI flags (from parseFlags) into options. Numbers are parsed strictly
 * ("12abc" is an error); every problem is listed, nothing is thrown.
 */
export function optionsFromFlags(flags: Record<string, string | boolean | undefined> & { _: string[] }): {
  options: Record<string, unknown>;
  problems: OptionProblem[];
} {
  const options: Record<string, unknown> = {};
  const problems: OptionProblem[] = [];
  const byFlag = new Map(OPTION_SPECS.map((s) => [s.flag, s]));
  for (const arg of flags._) {
    problems.push({ key: '_', flag: arg, message: 'unexpected argument (options are --flag value)' });
  }
  for (const [flag, raw] of Object.entries(flags)) {
    if (flag === '_' || flag === 'help' || raw === undefined) continue;
    const spec = byFlag.get(flag);
    if (!spec) {
      problems.push({ key: flag, flag, message: 'is not an option (see --help)' });
      continue;
    }
    if (typeof raw !== 'string') {
      problems.push({ key: spec.key, flag, message: `needs a value (${spec.metavar})` });
      continue;
    }
    if (spec.kind === 'int' || spec.kind === 'number') {
      const n = raw.trim() === '' ? NaN : Number(raw);
      if (Number.isNaN(n)) {
        problems.push({ key: spec.key, flag, message: `must be ${describe(spec)} (got ${JSON.stringify(raw)})` });
        continue;
      }
      options[spec.key] = n;
    } else {
      options[spec.key] = spec.kind === 'flavor' ? (FLAVOR_ALIASES[raw] ?? raw) : raw;
    }
  }
  if (options.flavor === undefined && !problems.some((p) => p.key === 'flavor')) options.flavor = 'openai';
  if (options.port === undefined && typeof options.flavor === 'string' && options.flavor in CLI_DEFAULT_PORT) {
    options.port = CLI_DEFAULT_PORT[options.flavor as Flavor];
  }
  const reported = new Set(problems.map((p) => p.key));
  problems.push(...validateOptions(options).filter((p) => !reported.has(p.key)));
  return { options, problems };
}

/** The text of `nodeworker model-sim --help`. */
export function helpText(): string {
  const rows = OPTION_SPECS.map((s) => [`--${s.flag} ${s.metavar}`, `${s.help} [default: ${s.defaultText}]`] as const);
  const width = Math.max(...rows.map(([l]) => l.length));
  return [
    'usage: nodeworker model-sim [options]',
    '',
    'A simulated inference server (vLLM / TGI / ComfyUI) for testing workers: realistic log',
    'lines while loading, a health path, token-rate-limited generation that saturates at',
    '--capacity like continuous batching, streaming, injected errors, hangs and crashes.',
    '',
    'Options:',
    ...rows.map(([l, r]) => `  ${l.padEnd(width)}  ${r}`),
    `  ${'--help'.padEnd(width)}  show this text`,
    '',
    'Routes: openai  POST /v1/completions, POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models,',
    '                GET /health',
    '        tgi     POST /generate, POST /generate_stream, POST /, GET /info, GET /health',
    '        comfyui POST /generate/sync, GET /health',
    '        all     POST /echo[/ANY] (answers {path, body}, admitted like a model request),',
    '                GET /sim/stats (counters), POST /sim/control {health?, hangRate?, errorRate?,',
    '                tokenRate?, capacity?, ttftMs?, crash?}',
    'Prints "model-sim listening on http://HOST:PORT (flavor F)" once listening.',
    'Generated tokens: max_tokens (openai) / parameters.max_new_tokens (tgi), default 16.',
    'Exit codes: 0 after SIGTERM/SIGINT, 1 on a (simulated) crash or listen failure, 2 on bad flags.',
  ].join('\n');
}
