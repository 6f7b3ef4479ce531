/**
 * Test helpers for the autoscaler with the local provider, whose workers are real on_start.sh runs
 * (model-sim + `nodeworker worker` from dist/) on loopback: the config these tests give it, a poll
 * that returns what it waited for, and the bookkeeping that checks no worker process outlives a test.
 */
import type { AutoscalerConfigInput } from '../../src/autoscaler/config.js';
import type { EndpointInput } from '../../src/autoscaler/params.js';
import type { LocalProvider } from '../../src/autoscaler/providers/local.js';
import { procStart } from '../../src/autoscaler/providers/local-procs.js';

/** Running (a zombie waiting for a non-reaping init has exited: it counts as gone). */
export const alive = (pid: number) => procStart(pid) !== null;

/** Poll `fn` every `everyMs` until it returns something truthy, and return that; throws after `ms`. */
export async function waitForValue<T>(what: string, fn: () => T | undefined | null | false, ms: number, everyMs = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * The local provider's whole config for these tests: workers whose model loads in a blink
 * (model-sim at `tokenRate` tokens/s) and benchmark in 8 tiny rounds, a 0.5 s engine tick, and one
 * endpoint of `cpu` machines in the work group `sim`.
 */
export function localFleetConfig(o: { tokenRate: number; keepWorkers?: boolean; endpoint: Omit<EndpointInput, 'workergroups'> }): AutoscalerConfigInput {
  return {
    provider: {
      kind: 'local',
      env: {
        MODEL_SIM_ARGS: `--load-seconds 0.2 --token-rate ${o.tokenRate} --capacity 1000 --ttft-ms 10`,
        BENCHMARK_MAX_TOKENS: '4',
        BENCHMARK_CONCURRENCY: '4',
        DRAIN_TIMEOUT: '5',
      },
      kill_timeout_seconds: 5,
      ...(o.keepWorkers ? { keep_workers_on_close: true } : {}),
    },
    engine: { tick_seconds: 0.5, stale_after_seconds: 15, probe_timeout_seconds: 2, load_timeout_seconds: 60 },
    endpoints: [{ cold_mult: 0, ...o.endpoint, workergroups: [{ name: 'sim', machine_types: [{ name: 'cpu', dollars_per_hour: 0.1 }] }] }],
  };
}

/** Add every pid the local provider runs to `seen`, every 100 ms for the rest of the file, so the end can check they all exited. */
export function rememberPids(provider: () => LocalProvider, seen: Set<number>): void {
  const remember = setInterval(() => {
    for (const p of provider().allPids()) seen.add(p);
  }, 100);
  remember.unref();
}
