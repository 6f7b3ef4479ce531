import { z } from 'zod';
import { defineHandler, type WorkerSpec } from 'nodeworker';
import { benchmarkConcurrency, tgiBenchmarkPayload } from './benchmark-payloads.js';

/**
 * Hugging Face text-generation-inference: /generate and /generate_stream.
 * Workload = max_new_tokens (what the GPU spends on decoding).
 */
export const tgiPayload = z.looseObject({
  inputs: z.string({ message: 'inputs must be a string (the prompt)' }),
  parameters: z
    .looseObject({
      max_new_tokens: z.number().int().positive().max(1_000_000).default(20),
      temperature: z.number().gt(0).optional(),
      top_p: z.number().gt(0).lt(1).optional(),
    })
    .default({ max_new_tokens: 20 }),
});

export const generate = defineHandler({
  route: '/generate',
  allowParallelRequests: true,
  maxQueueTime: 30,
  payload: tgiPayload,
  workload: (p) => p.parameters.max_new_tokens,
  benchmark: { generator: tgiBenchmarkPayload, runs: 8, concurrency: benchmarkConcurrency() },
});

export const generateStream = defineHandler({
  route: '/generate_stream',
  allowParallelRequests: true,
  maxQueueTime: 30,
  payload: tgiPayload,
  workload: (p) => p.parameters.max_new_tokens,
});

const worker: WorkerSpec = {
  healthPath: '/health',
  logActions: {
    onLoad: ['"message":"Connected","target":"text_generation_router"'],
    onError: ['Error: WebserverFailed', 'Error: DownloadError', 'Error: ShardCannotStart'],
    onInfo: ['"message":"Starting download process."', '"message":"Successfully downloaded weights', '"message":"Starting shard"'],
  },
  handlers: [generate, generateStream],
};
export default worker;
