import { EventEmitter } from 'node:events';

/**
 * The worker's one state machine; every other part reads it.
 *
 *   starting → loading → benchmarking → ready
 *   any state → errored (the model or the worker broke; error_msg says why)
 *   errored → loading | benchmarking | ready (the cause cleared, e.g. the engine's key arrived)
 *   any state → draining (SIGTERM/SIGINT: no new requests; terminal)
 *
 * A transition the table does not allow is refused (returns false), so a late event from a
 * finished phase cannot move the worker backwards.
 */
export type WorkerState = 'starting' | 'loading' | 'benchmarking' | 'ready' | 'errored' | 'draining';

const allowed: Record<WorkerState, readonly WorkerState[]> = {
  starting: ['loading', 'benchmarking', 'errored', 'draining'],
  loading: ['benchmarking', 'errored', 'draining'],
  benchmarking: ['ready', 'errored', 'draining'],
  ready: ['errored', 'draining'],
  errored: ['loading', 'benchmarking', 'ready', 'draining'],
  draining: [],
};

export const WORKER_STATES: readonly WorkerState[] = ['starting', 'loading', 'benchmarking', 'ready', 'errored', 'draining'];

export interface Transition {
  from: WorkerState;
  to: WorkerState;
  reason: string;
  at: number;
}

export class Lifecycle extends EventEmitter<{ transition: [Transition] }> {
  private current: WorkerState = 'starting';
  readonly startedAt = Date.now();
  /** When the worker first became ready (ms since epoch), or null. */
  readyAt: number | null = null;
  reason = 'started';
  get state(): WorkerState {
    return this.current;
  }

  get admitting(): boolean {
    return this.current !== 'draining';
  }

  /** Seconds from start to ready (0 before): the report's `loadtime`. */
  get loadtime(): number {
    return this.readyAt === null ? 0 : (this.readyAt - this.startedAt) / 1000;
  }

  to(next: WorkerState, reason: string): boolean {
    if (next === this.current || !allowed[this.current].includes(next)) return false;
    const t: Transition = { from: this.current, to: next, reason, at: Date.now() };
    this.current = next;
    this.reason = reason;
    if (next === 'ready' && this.readyAt === null) this.readyAt = t.at;
    this.emit('transition', t);
    return true;
  }
}
