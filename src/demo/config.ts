import type { AutoscalerConfigInput } from '../autoscaler/config.js';

/**
 * The demo's autoscaler config: the local provider (real on_start.sh workers on model-sim), one
 * endpoint `demo` whose windows are short enough that scaling is visible within a minute or two.
 *
 * Sizing, so that the engine's numbers mean what they say: model-sim generates 25 tokens/s per
 * request and 200 tokens/s in all, and the demo's requests have the benchmark's shape (a ~250
 * character prompt, 16 new tokens), so a worker's benchmarked perf (~900 load/s, ~11 requests/s)
 * is what it really serves. A peak of 24 requests/s needs two to three workers; the trough one.
 */
export interface DemoSizing {
  /** Most workers (active + inactive). */
  maxWorkers: number;
  /** Workers kept loaded (active or inactive). */
  coldWorkers: number;
  /** Tokens each demo request (and benchmark request) generates. */
  maxTokens: number;
}

export const DEFAULT_SIZING: DemoSizing = { maxWorkers: 3, coldWorkers: 2, maxTokens: 16 };

/** Model-sim flags of every demo worker: a 1.5 s "load", 25 tok/s per request, 200 tok/s in all. */
export const DEMO_MODEL_SIM_ARGS = '--load-seconds 1.5 --token-rate 25 --capacity 200 --ttft-ms 20';

/** The endpoint the demo creates. */
export const DEMO_ENDPOINT = 'demo';

/** Build the config (`dataDir` holds the signing key, the engine log and the workers' workspaces). */
export function demoConfig(sizing: DemoSizing = DEFAULT_SIZING): AutoscalerConfigInput {
  return {
    provider: {
      kind: 'local',
      kill_timeout_seconds: 8,
      env: {
        MODEL_SIM_ARGS: DEMO_MODEL_SIM_ARGS,
        BENCHMARK_MAX_TOKENS: String(sizing.maxTokens),
        BENCHMARK_CONCURRENCY: '8',
        DRAIN_TIMEOUT: '10',
      },
    },
    engine: { tick_seconds: 1, stale_after_seconds: 20, probe_timeout_seconds: 3, load_timeout_seconds: 120 },
    endpoints: [
      {
        name: DEMO_ENDPOINT,
        cold_workers: sizing.coldWorkers,
        max_workers: sizing.maxWorkers,
        min_load: 1,
        // The inactive pool is sized by cold_workers alone (cold_mult 0), so the fleet stays small.
        cold_mult: 0,
        target_util: 0.8,
        max_queue_time: 10,
        target_queue_time: 5,
        stable_window: 10,
        panic_window: 3,
        scale_down_delay: 8,
        release_delay: 300,
        cold_window: 120,
        workergroups: [
          {
            name: 'model-sim',
            search_params: 'local processes',
            launch: { backend: 'openai' },
            // expected_perf: the first recruits are sized from it until the benchmarks arrive.
            machine_types: [{ name: 'cpu', dollars_per_hour: 0.2, storage_dollars_per_hour: 0.01, expected_perf: 1000 }],
          },
        ],
      },
    ],
  };
}
