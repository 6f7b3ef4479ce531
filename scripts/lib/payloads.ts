import { COMFYUI_WORKLOAD } from 'nodeworker/handlers/comfyui';
import { promptTokens } from 'nodeworker/handlers/openai';

/**
 * Request builders for the built-in handlers: given a prompt size and an output size, the route,
 * the payload and the cost to route it with. The cost is the handler's own workload of that
 * payload, so what the engine plans with is what the worker will count.
 */
export const BACKENDS = ['openai', 'openai-chat', 'tgi', 'comfyui', 'hello'] as const;
export type Backend = (typeof BACKENDS)[number];

export interface RequestShape {
  /** Prompt size in tokens (about 4 characters each). */
  promptTokens: number;
  /** Tokens to generate (comfyui: the job's cost; hello: the greeting's length). */
  maxTokens: number;
  stream: boolean;
}

export interface BuiltRequest {
  route: string;
  payload: Record<string, unknown>;
  cost: number;
  stream: boolean;
}

const WORDS = 'def return import class self value list range print index data result error while for'.split(' ');

/** A prompt of exactly `tokens` × 4 characters (the handlers' token estimate), varied by `seed`. */
export function promptOf(tokens: number, seed: number): string {
  const target = Math.max(1, tokens) * 4;
  let s = `#${seed} `;
  for (let k = 0; s.length < target; k++) s += WORDS[(seed * 7 + k) % WORDS.length] + ' ';
  return s.slice(0, target);
}

/** Build request `i` of the given shape for `backend`. */
export function buildRequest(backend: Backend, shape: RequestShape, i: number): BuiltRequest {
  const { maxTokens, stream } = shape;
  switch (backend) {
    case 'openai': {
      const prompt = promptOf(shape.promptTokens, i);
      return { route: '/v1/completions', payload: { prompt, max_tokens: maxTokens, stream }, cost: promptTokens(prompt) + maxTokens, stream };
    }
    case 'openai-chat': {
      const content = promptOf(shape.promptTokens, i);
      return {
        route: '/v1/chat/completions',
        payload: { messages: [{ role: 'user', content }], max_tokens: maxTokens, stream },
        cost: promptTokens(content) + maxTokens,
        stream,
      };
    }
    case 'tgi': {
      const inputs = promptOf(shape.promptTokens, i);
      return { route: stream ? '/generate_stream' : '/generate', payload: { inputs, parameters: { max_new_tokens: maxTokens } }, cost: maxTokens, stream };
    }
    case 'comfyui': {
      // maxTokens is the job's cost (work units); 0 keeps the handler's constant.
      const input: Record<string, unknown> = { request_id: `load-${i}`, modifier: 'Text2Image', modifications: { prompt: `load test image ${i}`, seed: i } };
      if (maxTokens > 0) input.cost = maxTokens;
      return { route: '/generate/sync', payload: { input }, cost: maxTokens > 0 ? maxTokens : COMFYUI_WORKLOAD, stream: false };
    }
    case 'hello':
      return {
        route: '/hello',
        payload: { name: `user${i}`, max_tokens: Math.min(512, Math.max(1, maxTokens)), stream },
        cost: Math.min(512, Math.max(1, maxTokens)),
        stream,
      };
  }
}
