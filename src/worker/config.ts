import { z } from 'zod';
import { ConfigError } from '../common/protocol.js';
import { DEFAULT_MODEL_URL, httpUrl } from './env.js';

export { ConfigError };

/**
 * What a template author writes: one handler per model route. Types first; `defineHandler`
 * only gives the object its type, `defineWorker` validates the whole worker once at start.
 */
export interface BenchmarkSpec<P = unknown> {
  /** Fixed payloads, used round-robin. One of dataset / generator is required. */
  dataset?: P[];
  /** Makes a payload for request `i` of the benchmark. */
  generator?: (i: number) => P;
  /** Rounds (default 8). */
  runs?: number;
  /** Requests fired at once per round (default 10; 1 when the handler is not parallel). */
  concurrency?: number;
  /** A warm-up request before the rounds (default true): true, or a payload to send. */
  warmup?: boolean | P;
}

// biome-ignore lint/suspicious/noExplicitAny: a handler without a payload schema takes any JSON payload
export interface HandlerSpec<P = any> {
  /** Path clients POST to on the worker, e.g. `/v1/completions`. */
  route: string;
  /** Path on the model server (default: same as `route`). */
  upstreamPath?: string;
  /** false: one request at a time, strict FIFO (default true). */
  allowParallelRequests?: boolean;
  /** Seconds of expected queue time above which requests get 429 (default 30; null disables). */
  maxQueueTime?: number | null;
  /** Schema of `payload`. Validation errors become 422 `{payload: {field: message}}`. */
  payload: z.ZodType<P>;
  /** The request's load (tokens for an LLM). Default 100. */
  workload?: (payload: P) => number;
  /** Turn the validated payload into the model's request body (default: the payload as received). */
  toModelRequest?: (payload: P) => unknown;
  /** Turn the model's JSON answer into the client's (default: passed through byte for byte). */
  toClientResponse?: (body: unknown, status: number) => unknown;
  /** Exactly one handler of a worker carries a benchmark. */
  benchmark?: BenchmarkSpec<P>;
}

export interface LogActions {
  onLoad: string[];
  onError: string[];
  onInfo: string[];
}

/** Starts the model itself instead of a log file telling us; calls `ready()` once it serves. */
export interface LifecycleHook {
  start(ctx: { ready: () => void; fail: (message: string) => void; info: (message: string) => void; signal: AbortSignal }): Promise<void> | void;
  stop?(): Promise<void> | void;
}

export interface WorkerSpec {
  /** Base URL of the model server (default env MODEL_SERVER_URL, else DEFAULT_MODEL_URL). */
  modelServerUrl?: string;
  /** The model's log file (default env MODEL_LOG). */
  modelLogFile?: string;
  /** Health path on the model server, e.g. `/health` (default env MODEL_HEALTH_ENDPOINT). */
  healthPath?: string;
  logActions?: Partial<LogActions>;
  /** Open sessions at most (default 10). */
  maxSessions?: number;
  /** Model size in GB for loading progress (default env MODEL_SIZE_GB). */
  modelSizeGb?: number;
  /** Milliseconds to wait for the model's answer headers before a 504 (default 300 000). */
  modelTimeoutMs?: number;
  /** Milliseconds the model's whole answer (a stream, trailers included) may take before it is cut (default 3 600 000; 0 = no limit). */
  modelAnswerTimeoutMs?: number;
  /** Largest accepted request body in bytes (default 10 MiB). */
  maxBodyBytes?: number;
  handlers: HandlerSpec[];
  lifecycle?: LifecycleHook;
}

export function defineHandler<P>(spec: HandlerSpec<P>): HandlerSpec<P> {
  return spec;
}

const fn = z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', { message: 'expected a function' });
const routePath = z.string().regex(/^\/[^\s?#]*$/, 'must be a path starting with "/"');

const benchmarkSchema = z
  .object({
    dataset: z.array(z.unknown()).min(1, 'must hold at least one payload').optional(),
    generator: fn.optional(),
    runs: z.number().int().min(1).max(1000).optional(),
    concurrency: z.number().int().min(1).max(10_000).optional(),
    warmup: z.unknown().optional(),
  })
  .refine((b) => b.dataset !== undefined || b.generator !== undefined, { message: 'needs a dataset or a generator' });

const handlerSchema = z.object({
  route: routePath,
  upstreamPath: routePath.optional(),
  allowParallelRequests: z.boolean().optional(),
  maxQueueTime: z.number().positive().nullable().optional(),
  payload: z.custom<z.ZodType>((v) => v instanceof z.ZodType, { message: 'must be a zod schema' }),
  workload: fn.optional(),
  toModelRequest: fn.optional(),
  toClientResponse: fn.optional(),
  benchmark: benchmarkSchema.optional(),
});

const workerSchema = z
  .object({
    modelServerUrl: httpUrl(DEFAULT_MODEL_URL).optional(),
    modelLogFile: z.string().min(1).optional(),
    healthPath: routePath.optional(),
    logActions: z
      .object({ onLoad: z.array(z.string().min(1)), onError: z.array(z.string().min(1)), onInfo: z.array(z.string().min(1)) })
      .partial()
      .optional(),
    maxSessions: z.number().int().min(0).optional(),
    modelSizeGb: z.number().positive().optional(),
    modelTimeoutMs: z.number().int().positive().optional(),
    modelAnswerTimeoutMs: z.number().int().min(0).optional(),
    maxBodyBytes: z.number().int().positive().optional(),
    handlers: z.array(handlerSchema).min(1, 'a worker needs at least one handler'),
    lifecycle: z.object({ start: fn, stop: fn.optional() }).optional(),
  })
  .superRefine((w, ctx) => {
    const withBenchmark = w.handlers.filter((h) => h.benchmark !== undefined).length;
    if (withBenchmark !== 1) {
      ctx.addIssue({ code: 'custom', path: ['handlers'], message: `exactly one handler must carry a benchmark (found ${withBenchmark})` });
    }
    const seen = new Set<string>();
    w.handlers.forEach((h, i) => {
      if (seen.has(h.route)) ctx.addIssue({ code: 'custom', path: ['handlers', i, 'route'], message: `duplicate route ${h.route}` });
      seen.add(h.route);
    });
  });

/** A handler with every default filled in: what the request path reads. */
export interface ResolvedHandler extends HandlerSpec {
  upstreamPath: string;
  allowParallelRequests: boolean;
  maxQueueTime: number | null;
  // biome-ignore lint/suspicious/noExplicitAny: the resolved handler erases the payload type of its spec
  workload: (payload: any) => number;
}

export interface WorkerDefinition {
  spec: WorkerSpec;
  handlers: ResolvedHandler[];
  benchmarkHandler: ResolvedHandler;
}

const defaultWorkload = () => 100;

/** Validate a worker once; throws ConfigError listing every problem. */
export function defineWorker(spec: WorkerSpec): WorkerDefinition {
  const parsed = workerSchema.safeParse(spec);
  if (!parsed.success) throw ConfigError.fromZod('invalid worker definition', parsed.error);
  const handlers: ResolvedHandler[] = spec.handlers.map((h) => ({
    ...h,
    upstreamPath: h.upstreamPath ?? h.route,
    allowParallelRequests: h.allowParallelRequests ?? true,
    maxQueueTime: h.maxQueueTime === undefined ? 30 : h.maxQueueTime,
    workload: h.workload ?? defaultWorkload,
  }));
  return { spec, handlers, benchmarkHandler: handlers.find((h) => h.benchmark)! };
}
