import { z } from 'zod';

/**
 * Bodies of the engine's protocol routes (PROTOCOL §4 and §9), validated by zod. Reports are
 * read leniently, as the Python worker writes them: missing counters are 0, `null` is "none",
 * ids may come as numeric strings, extra keys are kept and ignored.
 */

const int = z.union([z.number().int(), z.string().regex(/^-?\d+$/, 'expected an integer').transform(Number)]);
const num = (fallback = 0) =>
  z
    .union([z.number(), z.string().regex(/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/, 'expected a number').transform(Number)])
    .nullish()
    .transform((v) => v ?? fallback);

/** `POST /route/` — a client asks for a worker. `request_idx` 0 (or absent) starts a new request. */
export const routeBodySchema = z.looseObject({
  endpoint: z.string({ error: 'endpoint name required' }).min(1, 'endpoint name required'),
  api_key: z.string({ error: 'api_key required' }),
  cost: num(100).pipe(z.number().min(0, 'cost must be ≥ 0')),
  request_idx: int.nullish().transform((v) => v ?? 0).pipe(z.number().min(0, 'request_idx must be ≥ 0')),
  replay_timeout: num(60).pipe(z.number().gt(0, 'replay_timeout must be > 0')),
});
export type RouteBody = z.output<typeof routeBodySchema>;

/** `POST /worker_status/` — PROTOCOL §4. */
export const workerStatusSchema = z.looseObject({
  id: int,
  mtoken: z.string({ error: 'mtoken required' }),
  version: z.string().nullish(),
  loadtime: num(),
  cur_load: num(),
  rej_load: num(),
  new_load: num(),
  error_msg: z.string().nullish().transform((v) => v ?? ''),
  max_perf: num(),
  cur_perf: num(),
  cur_capacity: num(),
  max_capacity: num(),
  num_requests_working: num(),
  num_requests_recieved: num(),
  additional_disk_usage: num(),
  working_request_idxs: z.array(int).nullish().transform((v) => v ?? []),
  url: z.string().nullish(),
});
export type WorkerStatusReport = z.output<typeof workerStatusSchema>;
/** A report as a worker writes it (what in-process workers hand to the engine). */
export type WorkerStatusInput = z.input<typeof workerStatusSchema>;

/** `POST /delete_requests/` — PROTOCOL §4. */
export const deleteRequestsSchema = z.looseObject({
  worker_id: int,
  mtoken: z.string({ error: 'mtoken required' }),
  request_idxs: z.array(int, { error: 'request_idxs must be a list of integers' }),
  success: z.boolean().nullish().transform((v) => v ?? true),
});
export type DeleteRequestsBody = z.output<typeof deleteRequestsSchema>;

/** `POST /get_endpoint_workers/` — `id` is the endpoint's numeric id or its name. */
export const endpointWorkersSchema = z.looseObject({
  id: z.union([z.number().int(), z.string().min(1)], { error: 'endpoint id (number) or name required' }),
  api_key: z.string({ error: 'api_key required' }),
});
export type EndpointWorkersBody = z.output<typeof endpointWorkersSchema>;

/** A 4xx/5xx answer of the engine: a message and the fields at fault. */
export interface ErrorBody {
  error: string;
  fields: Record<string, string>;
  [extra: string]: unknown;
}

/** The outcome of an engine operation: an HTTP status and a JSON body. */
export interface Outcome<T = unknown> {
  status: number;
  body: T | ErrorBody;
}

/** Build an error outcome naming one field. */
export function fail(status: number, field: string, message: string, extra: Record<string, unknown> = {}): Outcome<never> {
  return { status, body: { error: message, fields: { [field]: message }, ...extra } };
}
