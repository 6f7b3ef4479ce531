/**
 * hello: the smallest complete handler, to read first.
 *
 * A worker sits beside one model server. Clients never call the model directly: they POST
 * `{auth_data, payload}` to the worker, the worker checks the payload against a schema, works out
 * how much the request costs (its workload), forwards it to the model and sends the answer back.
 *
 * This one offers `POST /hello` with a payload like `{"name": "Ada"}` and answers
 * `{"greeting": "..."}`, using an OpenAI-compatible model server (vLLM, or
 * `nodeworker model-sim --flavor openai`) to write the greeting.
 *
 * Run it:   nodeworker model-sim --flavor openai --port 8000 --log-file /tmp/model.log &
 *           MODEL_LOG=/tmp/model.log UNSECURED=true CONTAINER_ID=1 nodeworker worker --handler hello
 * Call it:  curl -s localhost:3000/hello -H 'content-type: application/json' \
 *             -d '{"auth_data":{"cost":1,"endpoint":"e","reqnum":1,"request_idx":1,"signature":"","url":""},
 *                  "payload":{"name":"Ada"}}'
 */
import { z } from 'zod';
import { defineHandler, type WorkerSpec } from 'nodeworker';
import { helloBenchmarkPayload } from './benchmark-payloads.js';

// 1. What a client may send. zod checks it; a bad payload gets a 422 naming the field,
//    e.g. {"payload": {"name": "name must be a string of 1 to 100 characters"}}.
export const helloPayload = z.object({
  name: z.string({ message: 'name must be a string of 1 to 100 characters' }).min(1, 'name must not be empty').max(100, 'name must be at most 100 characters'),
  // How many tokens the model may write; a longer greeting costs more.
  max_tokens: z.number({ message: 'max_tokens must be a number' }).int('max_tokens must be an integer').min(1).max(512).default(16),
  // true: the model's tokens are streamed back as server-sent events while it writes them.
  stream: z.boolean({ message: 'stream must be true or false' }).default(false),
});
export type HelloPayload = z.infer<typeof helloPayload>;

export const hello = defineHandler<HelloPayload>({
  // 2. Where clients send it, and where the model gets it.
  route: '/hello',
  upstreamPath: '/v1/completions',

  // 3. The model batches requests, so many can run at once.
  allowParallelRequests: true,

  payload: helloPayload,

  // 4. The workload: what this request costs the GPU, in the same unit as the benchmark
  //    (tokens here). The engine divides it by the worker's perf to predict queue time.
  workload: (p) => p.max_tokens,

  // 5. Turn the client's payload into the model's request...
  toModelRequest: (p) => ({ prompt: `Write a short, friendly greeting for ${p.name}.`, max_tokens: p.max_tokens, stream: p.stream }),

  // 6. ...and the model's JSON answer into ours (streamed answers are passed through as they are).
  toClientResponse: (body, status) => {
    if (status !== 200) return body;
    const text = (body as { choices?: Array<{ text?: string }> }).choices?.[0]?.text ?? '';
    return { greeting: text.trim() };
  },

  // 7. How the worker measures its perf (workload per second) once the model is up.
  benchmark: { generator: helloBenchmarkPayload, runs: 3, concurrency: 8 },
});

// 8. The worker: which log lines mean "model ready" or "model broken", and its handlers.
const worker: WorkerSpec = {
  healthPath: '/health',
  logActions: {
    onLoad: ['Application startup complete.'],
    onError: ['Traceback (most recent call last):', 'RuntimeError:'],
    onInfo: ['Starting vLLM API server'],
  },
  handlers: [hello],
};
export default worker;
