/**
 * The built-in handlers' benchmark payloads (what the worker fires at the model at start-up to
 * measure its perf), one generator per handler.
 */
import { benchmarkPrompt } from 'nodeworker';

/**
 * Benchmark payloads for the openai (vLLM) handler: prompts of a few hundred characters and
 * BENCHMARK_MAX_TOKENS generated tokens (default 256), fired BENCHMARK_CONCURRENCY at a time
 * (default 32). How to pick both so the benchmark saturates the model and time to first token
 * stays small next to a round: docs/benchmark.md.
 */

/** Default requests per round of the built-in LLM handlers. */
export const DEFAULT_BENCHMARK_CONCURRENCY = 32;
/** Default generated tokens per benchmark request of the built-in LLM handlers. */
export const DEFAULT_BENCHMARK_MAX_TOKENS = 256;

function positiveIntFromEnv(name: string, fallback: number): number {
  const n = Number(process.env[name]);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

// Read once, when the handler module loads at start-up (the benchmark CLI sets it before loading).
const MAX_TOKENS = positiveIntFromEnv('BENCHMARK_MAX_TOKENS', DEFAULT_BENCHMARK_MAX_TOKENS);
const COMFYUI_STEPS = positiveIntFromEnv('BENCHMARK_COMFYUI_STEPS', 20);

/** Tokens each benchmark request generates: BENCHMARK_MAX_TOKENS at start-up (default 256). */
export function benchmarkMaxTokens(): number {
  return MAX_TOKENS;
}

/** Requests per benchmark round: BENCHMARK_CONCURRENCY, read when a handler module loads (default 32). */
export function benchmarkConcurrency(): number {
  return positiveIntFromEnv('BENCHMARK_CONCURRENCY', DEFAULT_BENCHMARK_CONCURRENCY);
}

export function openaiBenchmarkPayload(i: number) {
  return { model: 'benchmark', prompt: `Request ${i}: ${benchmarkPrompt(i, 40)}`, max_tokens: benchmarkMaxTokens(), temperature: 0 };
}

/**
 * Benchmark payloads for the TGI handler: same prompts as the openai generator. The TGI handler's
 * workload is max_new_tokens, exactly the tokens generated, so its perf is comparable to a
 * model's generation capacity (tokens/s).
 */
export function tgiBenchmarkPayload(i: number) {
  return { inputs: `Request ${i}: ${benchmarkPrompt(i, 40)}`, parameters: { max_new_tokens: benchmarkMaxTokens() } };
}

/**
 * Benchmark payloads for the comfyui handler: one small text-to-image job per request, with the
 * constant workload (no `cost`), so the measured perf is "constant workloads per second". Set
 * BENCHMARK_COMFYUI_STEPS to make each job longer or shorter on a real ComfyUI.
 */
export function benchmarkSteps(): number {
  return COMFYUI_STEPS;
}

export function comfyuiBenchmarkPayload(i: number) {
  return {
    input: {
      request_id: `benchmark-${i}`,
      modifier: 'Text2Image',
      modifications: { prompt: `a lighthouse on a cliff at dusk, study ${i}`, width: 512, height: 512, steps: benchmarkSteps(), seed: 1000 + i },
    },
  };
}

/** Benchmark payloads for the hello handler: greetings of 32 tokens for a rotating cast of names. */
const NAMES = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret', 'Ken'];

export function helloBenchmarkPayload(i: number) {
  return { name: NAMES[i % NAMES.length]!, max_tokens: 32, stream: false };
}
