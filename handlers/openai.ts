import { z } from 'zod';
import { defineHandler, promptTokens, type WorkerSpec } from 'nodeworker';
import { benchmarkConcurrency, openaiBenchmarkPayload } from './benchmark-payloads.js';

/** This handler's prompt-size rule (4 characters a token), also used by the load scripts. */
export { promptTokens };

/**
 * vLLM's OpenAI-compatible server: /v1/completions and /v1/chat/completions, streamed or not.
 * Workload = prompt tokens (estimated at 4 characters a token) + max_tokens: what the GPU spends.
 */
const sampling = {
  model: z.string().optional(),
  max_tokens: z.number().int().positive().max(1_000_000).default(16),
  stream: z.boolean().optional(),
  temperature: z.number().min(0).optional(),
  top_p: z.number().gt(0).max(1).optional(),
};

export const completionPayload = z.looseObject({
  // vLLM also takes token ids: one list, or a list of lists.
  prompt: z.union([z.string(), z.array(z.string()), z.array(z.number().int()), z.array(z.array(z.number().int()))], {
    message: 'prompt must be a string, a list of strings, or token ids (a list of integers)',
  }),
  ...sampling,
});

export const chatPayload = z.looseObject({
  messages: z
    .array(z.looseObject({ role: z.string({ message: 'each message needs a role' }), content: z.union([z.string(), z.array(z.unknown()), z.null()]) }))
    .min(1, 'messages must hold at least one message'),
  ...sampling,
  /** The newer spelling of max_tokens for chat; when given it is the limit vLLM applies. */
  max_completion_tokens: z.number().int().positive().max(1_000_000).optional(),
});

function chatText(messages: z.infer<typeof chatPayload>['messages']): string {
  return messages.map((m) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? ''))).join('\n');
}

export const completions = defineHandler({
  route: '/v1/completions',
  allowParallelRequests: true,
  maxQueueTime: 30,
  payload: completionPayload,
  workload: (p) => promptTokens(p.prompt) + p.max_tokens,
  benchmark: { generator: openaiBenchmarkPayload, runs: 8, concurrency: benchmarkConcurrency() },
});

export const chatCompletions = defineHandler({
  route: '/v1/chat/completions',
  allowParallelRequests: true,
  maxQueueTime: 30,
  payload: chatPayload,
  workload: (p) => promptTokens(chatText(p.messages)) + (p.max_completion_tokens ?? p.max_tokens),
});

const worker: WorkerSpec = {
  healthPath: '/health',
  logActions: {
    onLoad: ['Application startup complete.'],
    onError: ['Traceback (most recent call last):', 'RuntimeError:', 'CUDA out of memory', 'ERROR:    Application startup failed'],
    onInfo: ['Loading model weights', 'Downloading', 'Starting vLLM API server'],
  },
  handlers: [completions, chatCompletions],
};
export default worker;
