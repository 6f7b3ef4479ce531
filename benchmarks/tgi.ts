import { benchmarkMaxTokens, filler } from './openai.js';

/**
 * Benchmark payloads for the TGI handler: same prompts as the openai generator. The TGI handler's
 * workload is max_new_tokens, exactly the tokens generated, so its perf is comparable to a
 * model's generation capacity (tokens/s).
 */
export function tgiBenchmarkPayload(i: number) {
  return { inputs: `Request ${i}: ${filler(i, 40)}`, parameters: { max_new_tokens: benchmarkMaxTokens() } };
}
