/**
 * Benchmark payloads for the openai (vLLM) handler: prompts of a few hundred characters and
 * BENCHMARK_MAX_TOKENS generated tokens (default 256), fired BENCHMARK_CONCURRENCY at a time
 * (default 32). How to pick both so the benchmark saturates the model and time to first token
 * stays small next to a round: docs/benchmark.md.
 */
const WORDS = 'the model answers questions about code data science history and music with short precise sentences'.split(' ');

/** Default requests per round of the built-in LLM handlers. */
export const DEFAULT_BENCHMARK_CONCURRENCY = 32;
/** Default generated tokens per benchmark request of the built-in LLM handlers. */
export const DEFAULT_BENCHMARK_MAX_TOKENS = 256;

function positiveIntFromEnv(name: string, fallback: number): number {
  const n = Number(process.env[name]);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

/** Tokens each benchmark request generates: BENCHMARK_MAX_TOKENS, read per payload (default 256). */
export function benchmarkMaxTokens(): number {
  return positiveIntFromEnv('BENCHMARK_MAX_TOKENS', DEFAULT_BENCHMARK_MAX_TOKENS);
}

/** Requests per benchmark round: BENCHMARK_CONCURRENCY, read when a handler module loads (default 32). */
export function benchmarkConcurrency(): number {
  return positiveIntFromEnv('BENCHMARK_CONCURRENCY', DEFAULT_BENCHMARK_CONCURRENCY);
}

export function filler(i: number, words: number): string {
  const out: string[] = [];
  for (let k = 0; k < words; k++) out.push(WORDS[(i * 7 + k) % WORDS.length]!);
  return out.join(' ');
}

export function openaiBenchmarkPayload(i: number) {
  return { model: 'benchmark', prompt: `Request ${i}: ${filler(i, 40)}`, max_tokens: benchmarkMaxTokens(), temperature: 0 };
}
