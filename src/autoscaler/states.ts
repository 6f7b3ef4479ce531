/**
 * The worker and endpoint states a user sees (PROTOCOL §9) and which moves between them are
 * legal. The engine refuses any other move, so a late or duplicated event cannot drag a
 * worker backwards (say, a report from a destroyed worker).
 */

export const WORKER_STATES = ['created', 'loading', 'ready', 'inactive', 'starting', 'errored', 'destroyed'] as const;
/** created → loading → ready; ready ↔ inactive (stopped: GPU not billed); inactive → starting → ready; any → errored → destroyed. */
export type WorkerState = (typeof WORKER_STATES)[number];

export const ENDPOINT_STATES = ['active', 'suspended', 'stopped'] as const;
/** active: the engine manages workers; suspended: it leaves them as they are; stopped: all made inactive. */
export type EndpointState = (typeof ENDPOINT_STATES)[number];

const NEXT: Record<WorkerState, readonly WorkerState[]> = {
  created: ['loading', 'ready', 'errored', 'destroyed'],
  loading: ['ready', 'errored', 'destroyed'],
  ready: ['inactive', 'errored', 'destroyed'],
  inactive: ['starting', 'errored', 'destroyed'],
  starting: ['ready', 'inactive', 'errored', 'destroyed'],
  errored: ['destroyed'],
  destroyed: [],
};

/** True when a worker may move from `from` to `to`. */
export function canTransition(from: WorkerState, to: WorkerState): boolean {
  return NEXT[from].includes(to);
}

/** States in which the GPU is billed (the instance runs). */
export const BILLED_STATES: ReadonlySet<WorkerState> = new Set(['created', 'loading', 'ready', 'starting']);

/** States that count against `max_workers` (everything not gone). */
export const LIVE_STATES: ReadonlySet<WorkerState> = new Set(['created', 'loading', 'ready', 'inactive', 'starting', 'errored']);
