/**
 * Fixtures for the scaling policy's pure decisions (src/autoscaler/policy.ts): a fixed now, a
 * steady load history, one GPU machine type, workers of it, and a policy input that defaults
 * everything a test does not set.
 */
import type { LoadHistoryView } from '../../src/autoscaler/load-history.js';
import { DEFAULT_PARAMS, type EndpointParams } from '../../src/autoscaler/params.js';
import { INITIAL_MEMORY, type Decision, type MachineChoice, type PolicyInput, type PolicyWorker } from '../../src/autoscaler/policy.js';
import type { WorkerState } from '../../src/autoscaler/states.js';

export const NOW = 10_000_000; // ms; history starts long before

/** A history where `rate` load/s arrived every second for the last `seconds` seconds. */
export function steadyHistory(rate: number, seconds = 4000, now = NOW): LoadHistoryView {
  const start = now - seconds * 1000;
  return { start, bucketMs: 1000, loads: new Array(seconds).fill(rate), since: start };
}

/** The one machine type: perf 100 from 3 samples, $1/h. */
export const gpu: MachineChoice = { key: 'wg/gpu', workergroup: 'wg', machineType: 'gpu', dollarsPerHour: 1, perf: 100, samples: 3 };

/** A worker of `gpu`, in `state` for the last hour. */
export function worker(id: number, state: WorkerState, over: Partial<PolicyWorker> = {}): PolicyWorker {
  return { id, state, typeKey: 'wg/gpu', perf: 100, dollarsPerHour: 1, busy: false, stateSince: NOW - 3_600_000, ...over };
}

/** A policy input: active, no workers, `gpu` only, no load, an empty queue, default params (each overridable). */
export function input(over: Partial<Omit<PolicyInput, 'params'>> & { params?: Partial<EndpointParams> } = {}): PolicyInput {
  const { params, ...rest } = over;
  return {
    now: NOW,
    state: 'active',
    workers: [],
    machines: [gpu],
    history: steadyHistory(0),
    lastActivityAt: NOW - 1000,
    queue: { waiting: 0, waitingLoad: 0, queueTime: 0, workerBacklog: 0 },
    memory: INITIAL_MEMORY,
    ...rest,
    params: { ...DEFAULT_PARAMS, ...params },
  };
}

/** The decisions of one kind. */
export const kinds = (ds: Decision[], kind: Decision['kind']) => ds.filter((d) => d.kind === kind);
