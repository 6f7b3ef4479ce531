import { z } from 'zod';
import { fieldErrors } from '../common/protocol.js';

/**
 * Endpoint parameters, their defaults and the shapes of endpoints and workergroups, as the
 * config file and the admin API accept them. Field names follow Vast's API (PROTOCOL §9);
 * the ones after `target_queue_time` are this engine's own tuning knobs.
 */

const seconds = (what: string) => z.number({ error: `${what} must be a number of seconds` });

/** The scaling parameters of one endpoint, every one with its default. */
export const endpointParamsSchema = z.strictObject({
  /** Hard cap on workers of the endpoint, active + inactive + loading. */
  max_workers: z.number().int().min(0).default(16),
  /** Floor of active capacity in load/s; 0 allows zero active workers. */
  min_load: z.number().min(0).default(1),
  /** Workers with the model loaded (active or inactive) kept at least: Vast's `cold_workers`. */
  cold_workers: z.number().int().min(0).default(5),
  /** Inactive capacity = anticipated load (over `cold_window`) × cold_mult. */
  cold_mult: z.number().min(0).default(3),
  /** Inactive capacity target set directly, load/s. */
  min_cold_load: z.number().min(0).default(0),
  /** Active capacity = anticipated load / target_util. */
  target_util: z.number().gt(0).max(1).default(0.9),
  /** Seconds without activity before scaling to zero active is allowed; 0 = no gate; < 0 = never zero. */
  inactivity_timeout: seconds('inactivity_timeout').default(0),
  /** Seconds of expected queue a worker may hold before the router stops sending it requests (the policy may hold less: target_queue_time). */
  max_queue_time: seconds('max_queue_time').gt(0).default(30),
  /**
   * The order waiting requests get a free worker in: `smallest` (by cost; a request that waited
   * twice `target_queue_time`, or came back from a worker, goes first) or `arrival`.
   */
  queue_order: z.enum(['smallest', 'arrival']).default('smallest'),
  /** Observed queue time (s) above which the engine scales up aggressively; also the queue a worker holds at most and the horizon queued work is sized to drain in; 0 turns it off. */
  target_queue_time: seconds('target_queue_time').min(0).default(10),
  /** Seconds the stable load average looks back. */
  stable_window: seconds('stable_window').gt(0).default(60),
  /** Seconds the panic load average looks back; 0 turns the panic window off. */
  panic_window: seconds('panic_window').min(0).default(6),
  /** Panic when panic-window demand ≥ this × the capacity serving now. */
  panic_threshold: z.number().min(1).default(2),
  /** A ready worker is stopped only when the capacity target was low for this many seconds. */
  scale_down_delay: seconds('scale_down_delay').min(0).default(30),
  /** Seconds an inactive worker stays inactive before it may be released (destroyed). */
  release_delay: seconds('release_delay').min(0).default(600),
  /** Seconds of load history that size the inactive pool (Vast plans cold capacity over 1 h+). */
  cold_window: seconds('cold_window').gt(0).default(3600),
});

/** Parsed endpoint parameters: every field present. */
export type EndpointParams = z.output<typeof endpointParamsSchema>;

/** The defaults of every parameter. */
export const DEFAULT_PARAMS: EndpointParams = endpointParamsSchema.parse({});

/** A machine type a workergroup may recruit, with what it costs. */
export const machineTypeSchema = z.strictObject({
  name: z.string().min(1),
  /** GPU price while the worker runs (created, loading, ready, starting). */
  dollars_per_hour: z.number().min(0),
  /** Storage price while the worker is inactive (stopped). */
  storage_dollars_per_hour: z.number().min(0).default(0),
  /** A perf guess used until benchmarks of this type arrive. */
  expected_perf: z.number().gt(0).optional(),
  /** Vast's deep-learning perf score of the machine, shown by /get_endpoint_workers/. */
  dlperf: z.number().min(0).optional(),
});
export type MachineType = z.output<typeof machineTypeSchema>;

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" or "-", at most 64');

/** A workergroup: where workers come from (search_params, machine types) and how they launch. */
export const workergroupSchema = z.strictObject({
  name,
  /** Provider query choosing eligible machines (Vast search syntax); passed to the provider as is. */
  search_params: z.string().default(''),
  /** Provider-specific launch settings (template, image, handler, env …), passed as is. */
  launch: z.record(z.string(), z.unknown()).default({}),
  machine_types: z.array(machineTypeSchema).min(1, 'at least one machine type'),
});
export type WorkergroupConfig = z.output<typeof workergroupSchema>;
export type WorkergroupInput = z.input<typeof workergroupSchema>;

export const endpointStateSchema = z.enum(['active', 'suspended', 'stopped']);

const paramsShape = endpointParamsSchema.shape;

/** An endpoint as the config and `POST /admin/endpoints` declare it: parameters are flat, as in Vast's API. */
export const endpointSchema = z.strictObject({
  name,
  /** Clients send this with /route/; generated when missing. */
  api_key: z.string().min(8, 'at least 8 characters').optional(),
  state: endpointStateSchema.default('active'),
  ...paramsShape,
  /** Accepted as an alias of cold_workers (the name Vast's docs use). */
  min_workers: z.number().int().min(0).optional(),
  workergroups: z.array(workergroupSchema).default([]),
});
export type EndpointInput = z.input<typeof endpointSchema>;
export type EndpointConfig = z.output<typeof endpointSchema>;

/** What `PATCH /admin/endpoints/:name` accepts: any subset, no defaults applied. */
export const endpointPatchSchema = z.strictObject({
  api_key: z.string().min(8, 'at least 8 characters').optional(),
  state: endpointStateSchema.optional(),
  ...Object.fromEntries(Object.entries(paramsShape).map(([k, v]) => [k, (v as z.ZodDefault<z.ZodNumber>).unwrap().optional()])),
  min_workers: z.number().int().min(0).optional(),
}) as unknown as z.ZodType<EndpointPatch>;
export type EndpointPatch = Partial<EndpointParams> & {
  api_key?: string;
  state?: z.output<typeof endpointStateSchema>;
  min_workers?: number;
};

/** What `PATCH …/workergroups/:name` accepts. */
export const workergroupPatchSchema = z.strictObject({
  search_params: z.string().optional(),
  launch: z.record(z.string(), z.unknown()).optional(),
  machine_types: z.array(machineTypeSchema).min(1, 'at least one machine type').optional(),
});
export type WorkergroupPatch = z.output<typeof workergroupPatchSchema>;

/** Split an endpoint declaration into its parameters (with `min_workers` folded into `cold_workers`). */
export function paramsOf(ep: EndpointConfig | (EndpointPatch & Record<string, unknown>)): Partial<EndpointParams> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(paramsShape)) {
    const v = (ep as Record<string, unknown>)[key];
    if (v !== undefined) out[key] = v;
  }
  const alias = (ep as { min_workers?: number }).min_workers;
  if (alias !== undefined) out.cold_workers = alias;
  return out as Partial<EndpointParams>;
}

/** Zod issues as `{ "path.to.field": "message" }` (shared with the worker). */
export { fieldErrors };
