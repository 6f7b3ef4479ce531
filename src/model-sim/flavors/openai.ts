import type { ServerResponse } from 'node:http';
import { sendJson, sendRawJson, startEventStream } from '../http-util.js';
import {
  admitChecked,
  estimateTokens,
  fillerText,
  humanBytes,
  isObject,
  makeId,
  MAX_GENERATED_TOKENS,
  optionalBool,
  optionalInt,
  tokenText,
  tqdmClock,
  type Checked,
} from './common.js';
import { embeddingsRoute } from './embeddings.js';
import type { FlavorDef, LogScript, RouteEnv } from './types.js';

/** vLLM's OpenAI-compatible server: /v1/completions, /v1/chat/completions, /v1/models. */

const VLLM_VERSION = '0.6.4.post1';
const DEFAULT_MAX_TOKENS = 16;

const ERROR_TYPES: Record<number, string> = {
  400: 'BadRequestError',
  404: 'NotFoundError',
  405: 'MethodNotAllowed',
  413: 'RequestEntityTooLarge',
  500: 'InternalServerError',
};

function errorBody(status: number, message: string, field?: string): unknown {
  return { object: 'error', message, type: ERROR_TYPES[status] ?? 'Error', param: field ?? null, code: status };
}

/** vLLM's logging prefix: `INFO 05-01 10:00:00 file.py:123] `. */
function vllmLine(level: 'INFO' | 'WARNING' | 'ERROR', where: string, message: string): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return `${level} ${stamp} ${where}] ${message}`;
}

const WEIGHT_SHARDS = 4;

const script: LogScript = {
  boot: (ctx) => [
    vllmLine('INFO', 'api_server.py:585', `vLLM API server version ${VLLM_VERSION} (nodeworker model-sim)`),
    vllmLine(
      'INFO',
      'api_server.py:586',
      `args: Namespace(host='${ctx.host}', port=${ctx.port}, model='${ctx.modelName}', tokenizer=None, max_model_len=8192, dtype='auto', tensor_parallel_size=1, gpu_memory_utilization=0.9, disable_log_requests=True)`,
    ),
    vllmLine('INFO', 'config.py:350', "This model supports multiple tasks: {'generate', 'embedding'}. Defaulting to 'generate'."),
    vllmLine(
      'INFO',
      'llm_engine.py:249',
      `Initializing an LLM engine (v${VLLM_VERSION}) with config: model='${ctx.modelName}', tokenizer='${ctx.modelName}', dtype=torch.bfloat16, max_seq_len=8192, device_config=cuda, seed=0, served_model_name=${ctx.modelName}`,
    ),
    vllmLine('INFO', 'selector.py:135', 'Using Flash Attention backend.'),
    vllmLine('INFO', 'model_runner.py:1072', `Starting to load model ${ctx.modelName}...`),
    vllmLine('INFO', 'weight_utils.py:243', "Using model weights format ['*.safetensors']"),
  ],
  download: (ctx, fraction, bytesDone, secondsLeft) => {
    const pct = Math.round(fraction * 100);
    const bar = '█'.repeat(Math.floor(fraction * 10)).padEnd(10, ' ');
    const elapsed = ctx.loadSeconds * 0.5 * fraction;
    const speed = elapsed > 0 ? humanBytes(bytesDone / elapsed) + 'B/s' : '?B/s';
    return [
      `model-00001-of-00001.safetensors: ${String(pct).padStart(3)}%|${bar}| ${humanBytes(bytesDone)}/${humanBytes(ctx.downloadBytes)} [${tqdmClock(elapsed)}<${tqdmClock(secondsLeft)}, ${speed}]`,
    ];
  },
  downloaded: () => [vllmLine('INFO', 'weight_utils.py:288', 'Downloaded model weights.')],
  weights: (ctx, fraction) => {
    const done = Math.round(fraction * WEIGHT_SHARDS);
    const lines = [
      `Loading safetensors checkpoint shards: ${String(Math.round(fraction * 100)).padStart(3)}% Completed | ${done}/${WEIGHT_SHARDS} [00:0${done}<00:0${WEIGHT_SHARDS - done},  1.05it/s]`,
    ];
    if (fraction >= 1) {
      lines.push(vllmLine('INFO', 'model_runner.py:1077', `Loading model weights took ${(ctx.downloadBytes / 2 ** 30).toFixed(4)} GB`));
    }
    return lines;
  },
  warmup: () => [
    vllmLine(
      'INFO',
      'worker.py:232',
      'Memory profiling results: total_gpu_memory=79.15GiB initial_memory_usage=15.49GiB peak_torch_memory=16.19GiB memory_usage_post_profile=15.52GiB non_torch_memory=0.49GiB kv_cache_size=54.53GiB gpu_memory_utilization=0.90',
    ),
    vllmLine('INFO', 'gpu_executor.py:113', '# GPU blocks: 27919, # CPU blocks: 2048'),
    vllmLine('INFO', 'gpu_executor.py:117', 'Maximum concurrency for 8192 tokens per request: 54.53x'),
    vllmLine('INFO', 'model_runner.py:1400', 'Capturing cudagraphs for decoding. This may lead to unexpected consequences if the model is not static.'),
    vllmLine('INFO', 'model_runner.py:1528', 'Graph capturing finished in 9 secs, took 0.85 GiB'),
    vllmLine('INFO', 'launcher.py:19', 'Available routes are:'),
    vllmLine('INFO', 'launcher.py:27', 'Route: /health, Methods: GET'),
    vllmLine('INFO', 'launcher.py:27', 'Route: /v1/models, Methods: GET'),
    vllmLine('INFO', 'launcher.py:27', 'Route: /v1/chat/completions, Methods: POST'),
    vllmLine('INFO', 'launcher.py:27', 'Route: /v1/completions, Methods: POST'),
    vllmLine('INFO', 'launcher.py:27', 'Route: /v1/embeddings, Methods: POST'),
  ],
  ready: (ctx) => [
    `INFO:     Started server process [${ctx.pid}]`,
    'INFO:     Waiting for application startup.',
    'INFO:     Application startup complete.',
    `INFO:     Uvicorn running on ${ctx.url} (Press CTRL+C to quit)`,
  ],
  crash: (_ctx, reason) => [
    vllmLine('ERROR', 'engine.py:135', `RuntimeError('CUDA error: an illegal memory access was encountered') [simulated: ${reason}]`),
    'Traceback (most recent call last):',
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/engine/multiprocessing/engine.py", line 133, in start',
    '    self.run_engine_loop()',
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/worker/model_runner.py", line 1654, in execute_model',
    '    hidden_or_intermediate_states = model_executable(',
    'RuntimeError: CUDA error: an illegal memory access was encountered',
    vllmLine('ERROR', 'async_llm_engine.py:64', 'Engine background task failed'),
    'RuntimeError: Engine loop has died',
  ],
  shutdown: (ctx) => [
    'INFO:     Shutting down',
    'INFO:     Waiting for application shutdown.',
    'INFO:     Application shutdown complete.',
    `INFO:     Finished server process [${ctx.pid}]`,
  ],
  metrics: (_ctx, s) => [
    vllmLine(
      'INFO',
      'metrics.py:349',
      `Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: ${s.generationTokensPerSecond.toFixed(1)} tokens/s, Running: ${s.running} reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage: ${Math.min(99.9, s.running * 0.4).toFixed(1)}%, CPU KV cache usage: 0.0%.`,
    ),
  ],
};

/** A validated generation request. */
interface GenerationRequest {
  model: string;
  tokens: number;
  stream: boolean;
  includeUsage: boolean;
  promptTokens: number;
}

function common(body: Record<string, unknown>, modelName: string, promptTokens: number): Checked<GenerationRequest> {
  if (body.model !== undefined && body.model !== null && typeof body.model !== 'string') {
    return { ok: false, field: 'model', message: `model must be a string (got ${JSON.stringify(body.model)})` };
  }
  // Chat accepts max_completion_tokens as the newer spelling of max_tokens.
  const tokenKey = body.max_tokens === undefined && body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
  const tokens = optionalInt(body, tokenKey, tokenKey, DEFAULT_MAX_TOKENS, 1, MAX_GENERATED_TOKENS);
  if (!tokens.ok) return tokens;
  const stream = optionalBool(body, 'stream', 'stream');
  if (!stream.ok) return stream;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObject(so)) return { ok: false, field: 'stream_options', message: 'stream_options must be an object' };
    const iu = optionalBool(so, 'include_usage', 'stream_options.include_usage');
    if (!iu.ok) return iu;
    includeUsage = iu.value;
  }
  return {
    ok: true,
    value: { model: typeof body.model === 'string' ? body.model : modelName, tokens: tokens.value, stream: stream.value, includeUsage, promptTokens },
  };
}

function parseCompletion(body: unknown, modelName: string): Checked<GenerationRequest> {
  if (!isObject(body)) return { ok: false, field: 'body', message: 'body must be a JSON object' };
  const prompt = body.prompt;
  let promptTokens: number;
  if (typeof prompt === 'string') promptTokens = estimateTokens(prompt);
  else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((p) => typeof p === 'string')) {
    promptTokens = estimateTokens((prompt as string[]).join(''));
  } else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((p) => Number.isInteger(p))) {
    promptTokens = prompt.length;
  } else if (prompt === undefined || prompt === null) {
    return { ok: false, field: 'prompt', message: 'prompt: Field required' };
  } else {
    return { ok: false, field: 'prompt', message: 'prompt must be a string, a list of strings or a list of token ids' };
  }
  return common(body, modelName, promptTokens);
}

function parseChat(body: unknown, modelName: string): Checked<GenerationRequest> {
  if (!isObject(body)) return { ok: false, field: 'body', message: 'body must be a JSON object' };
  const messages = body.messages;
  if (messages === undefined || messages === null) return { ok: false, field: 'messages', message: 'messages: Field required' };
  if (!Array.isArray(messages) || messages.length === 0) {
    return { ok: false, field: 'messages', message: 'messages must be a non-empty list of {role, content}' };
  }
  let chars = 0;
  for (let i = 0; i < messages.length; i++) {
    const m: unknown = messages[i];
    if (!isObject(m) || typeof m.role !== 'string') {
      return { ok: false, field: `messages[${i}].role`, message: `messages[${i}].role: Field required (a string)` };
    }
    if (typeof m.content === 'string') chars += m.content.length;
    else if (Array.isArray(m.content)) chars += JSON.stringify(m.content).length;
    else if (m.content !== undefined && m.content !== null) {
      return { ok: false, field: `messages[${i}].content`, message: `messages[${i}].content must be a string or a list of parts` };
    }
  }
  return common(body, modelName, estimateTokens(' '.repeat(chars)) + 4 * messages.length);
}

function usage(r: GenerationRequest): string {
  return `{"prompt_tokens":${r.promptTokens},"total_tokens":${r.promptTokens + r.tokens},"completion_tokens":${r.tokens}}`;
}

/** Common answer path: admission, then non-streamed or streamed output. */
function serve(res: ServerResponse, env: RouteEnv, parsed: Checked<GenerationRequest>, chat: boolean): void {
  const r = admitChecked(res, env, parsed, errorBody);
  if (r === null) return;
  const id = makeId(chat ? 'chatcmpl-' : 'cmpl-');
  const created = Math.floor(Date.now() / 1000);
  const model = JSON.stringify(r.model);

  if (!r.stream) {
    env.core.generate(res, r.tokens, false, {
      progress() {},
      done() {
        const text = JSON.stringify(fillerText(r.tokens));
        const choice = chat
          ? `{"index":0,"message":{"role":"assistant","content":${text},"tool_calls":[]},"logprobs":null,"finish_reason":"length","stop_reason":null}`
          : `{"index":0,"text":${text},"logprobs":null,"finish_reason":"length","stop_reason":null}`;
        sendRawJson(
          res,
          200,
          `{"id":"${id}","object":"${chat ? 'chat.completion' : 'text_completion'}","created":${created},"model":${model},"choices":[${choice}],"usage":${usage(r)}}`,
        );
      },
    });
    return;
  }

  const head = `data: {"id":"${id}","object":"${chat ? 'chat.completion.chunk' : 'text_completion'}","created":${created},"model":${model},"choices":[`;
  startEventStream(res);
  if (chat) res.write(`${head}{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`);
  let sent = 0;
  env.core.generate(res, r.tokens, true, {
    progress(generated) {
      let out = '';
      for (; sent < generated; sent++) {
        const finish = sent === r.tokens - 1 ? '"length"' : 'null';
        const word = JSON.stringify(tokenText(sent));
        out += chat
          ? `${head}{"index":0,"delta":{"content":${word}},"logprobs":null,"finish_reason":${finish}}]}\n\n`
          : `${head}{"index":0,"text":${word},"logprobs":null,"finish_reason":${finish},"stop_reason":null}]}\n\n`;
      }
      if (out && !res.destroyed) res.write(out);
    },
    done() {
      if (res.destroyed) return;
      const tail = r.includeUsage ? `${head}],"usage":${usage(r)}}\n\n` : '';
      res.end(`${tail}data: [DONE]\n\n`);
    },
  });
}

/** The openai (vLLM) flavor. */
export const openaiFlavor: FlavorDef = {
  name: 'openai',
  script,
  errorBody,
  weightsFile: 'model-00001-of-00001.safetensors',
  routes: {
    'POST /v1/completions': (res, body, env) => serve(res, env, parseCompletion(body, env.modelName), false),
    'POST /v1/chat/completions': (res, body, env) => serve(res, env, parseChat(body, env.modelName), true),
    'POST /v1/embeddings': embeddingsRoute(errorBody),
    'GET /v1/models': (res, _body, env) =>
      sendJson(res, 200, {
        object: 'list',
        data: [
          {
            id: env.modelName,
            object: 'model',
            created: Math.floor(Date.now() / 1000),
            owned_by: 'vllm',
            root: env.modelName,
            parent: null,
            max_model_len: 8192,
          },
        ],
      }),
  },
};
