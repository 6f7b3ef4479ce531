import { z } from 'zod';
import { errorBody, wireNumber, workerStatusSchema, type ErrorBody, type WorkerStatusInput, type WorkerStatusReport } from '../common/protocol.js';

/**
 * Bodies of the engine's protocol routes (PROTOCOL §4 and §9), validated by zod. Reports are
 * read leniently, as the Python worker writes them: missing counters are 0, `null` is "none",
 * ids may come as numeric strings, extra keys are kept and ignored.
 */

const num = wireNumber;

/**
 * An id on the wire (request_idx, worker_id): a safe integer ≥ 0, as a JSON number or a string of
 * decimal digits. "0x10", "1e3", 1e300 or 2^53 are refused, never read as some other id.
 */
export const wireId = z.union(
  [
    z.number().int('must be an integer').min(0, 'must be ≥ 0').max(Number.MAX_SAFE_INTEGER, 'must be a safe integer (< 2^53)'),
    z
      .string()
      .regex(/^\d{1,16}$/, 'must be a decimal integer')
      .transform(Number)
      .pipe(z.number().max(Number.MAX_SAFE_INTEGER, 'must be a safe integer (< 2^53)')),
  ],
  { error: 'must be a safe integer ≥ 0' },
);

/** `POST /route/` — a client asks for a worker. `request_idx` 0 (or absent) starts a new request. */
export const routeBodySchema = z.looseObject({
  endpoint: z.string({ error: 'endpoint name required' }).min(1, 'endpoint name required'),
  api_key: z.string({ error: 'api_key required' }),
  cost: num(100).pipe(z.number().min(0, 'cost must be ≥ 0')),
  request_idx: wireId.nullish().transform((v) => v ?? 0),
  replay_timeout: num(60).pipe(z.number().gt(0, 'replay_timeout must be > 0')),
});
export type RouteBody = z.output<typeof routeBodySchema>;

/** `POST /worker_status/` — PROTOCOL §4; the schema is shared with the worker. */
export { workerStatusSchema, type WorkerStatusReport, type WorkerStatusInput };

/** `POST /delete_requests/` — PROTOCOL §4. */
export const deleteRequestsSchema = z.looseObject({
  worker_id: wireId,
  mtoken: z.string({ error: 'mtoken required' }),
  request_idxs: z.array(wireId, { error: 'request_idxs must be a list of integers' }),
  success: z
    .boolean()
    .nullish()
    .transform((v) => v ?? true),
});
export type DeleteRequestsBody = z.output<typeof deleteRequestsSchema>;

/** `POST /get_endpoint_workers/` — `id` is the endpoint's numeric id or its name. */
export const endpointWorkersSchema = z.looseObject({
  id: z.union([z.number().int(), z.string().min(1)], { error: 'endpoint id (number) or name required' }),
  api_key: z.string({ error: 'api_key required' }),
});
export type EndpointWorkersBody = z.output<typeof endpointWorkersSchema>;

export type { ErrorBody };

/** The outcome of an engine operation: an HTTP status and a JSON body. */
export interface Outcome<T = unknown> {
  status: number;
  body: T | ErrorBody;
}

/** Build an error outcome naming one field. */
export function fail(status: number, field: string, message: string, extra: Record<string, unknown> = {}): Outcome<never> {
  return { status, body: errorBody(message, field, extra) };
}
