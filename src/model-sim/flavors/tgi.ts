import type { ServerResponse } from 'node:http';
import { sendJson, sendRawJson, startEventStream } from '../http-util.js';
import {
  estimateTokens,
  fillerText,
  humanBytes,
  isObject,
  MAX_GENERATED_TOKENS,
  optionalBool,
  optionalInt,
  pyDuration,
  tokenText,
  type Checked,
} from './common.js';
import type { FlavorDef, LogScript, RouteEnv } from './types.js';

/** Hugging Face text-generation-inference: /generate, /generate_stream, /, /info; JSON logs. */

const TGI_VERSION = '2.4.0';
const DEFAULT_MAX_NEW_TOKENS = 16;

function errorBody(status: number, message: string): unknown {
  return { error: message, error_type: status >= 500 ? 'generation' : 'validation' };
}

function stamp(): string {
  // TGI prints microseconds.
  return new Date().toISOString().replace('Z', '000Z');
}

/** A launcher line: `{"timestamp":..,"level":..,"fields":{"message":..},"target":"text_generation_launcher"}`. */
function launcher(message: string, level = 'INFO', span?: Record<string, unknown>): string {
  const spanText = span ? `,"span":${JSON.stringify(span)},"spans":[${JSON.stringify(span)}]` : '';
  return `{"timestamp":"${stamp()}","level":"${level}","fields":{"message":${JSON.stringify(message)}},"target":"text_generation_launcher"${spanText}}`;
}

/** A router line: `{"timestamp":..,"level":..,"message":..,"target":"text_generation_router"}`. */
function router(message: string, level = 'INFO'): string {
  return `{"timestamp":"${stamp()}","level":"${level}","message":${JSON.stringify(message)},"target":"text_generation_router"}`;
}

const DOWNLOAD = { name: 'download' };
const SHARD = { rank: 0, name: 'shard-manager' };

const script: LogScript = {
  boot: (ctx) => [
    launcher(
      `Args { model_id: "${ctx.modelName}", revision: None, validation_workers: 2, sharded: None, num_shard: None, quantize: None, max_concurrent_requests: 128, max_input_tokens: None, max_total_tokens: None, hostname: "${ctx.host}", port: ${ctx.port}, json_output: true, env: false }`,
    ),
    launcher('Model supports up to 8192 but tgi will now set its default to 4096 instead.'),
    launcher('Using default cuda graphs [1, 2, 4, 8, 16, 32]'),
    launcher('Starting check and download process for ' + ctx.modelName, 'INFO', DOWNLOAD),
    launcher('Starting download process.', 'INFO', DOWNLOAD),
  ],
  download: (ctx, fraction, bytesDone, secondsLeft) => [
    launcher(
      `Download file: model-00001-of-00001.safetensors ${Math.round(fraction * 100)}% (${humanBytes(bytesDone, ' ')}B/${humanBytes(ctx.downloadBytes, ' ')}B) -- ETA: ${pyDuration(secondsLeft)}`,
      'INFO',
      DOWNLOAD,
    ),
  ],
  downloaded: (ctx) => [
    launcher(
      `Downloaded /data/models--${ctx.modelName.replace(/\//g, '--')}/model-00001-of-00001.safetensors in ${pyDuration(ctx.loadSeconds * 0.5)}.`,
      'INFO',
      DOWNLOAD,
    ),
    launcher('Successfully downloaded weights for ' + ctx.modelName, 'INFO', DOWNLOAD),
  ],
  weights: (ctx, fraction) => {
    if (fraction === 0) return [launcher('Starting shard', 'INFO', SHARD)];
    if (fraction < 1) return [launcher('Waiting for shard to be ready...', 'INFO', SHARD)];
    return [
      launcher('Server started at unix:///tmp/text-generation-server-0'),
      launcher(`Shard ready in ${(ctx.loadSeconds * 0.35).toFixed(2)}s`, 'INFO', SHARD),
    ];
  },
  warmup: () => [launcher('Starting Webserver'), router('Warming up model'), router('Setting max batch total tokens to 16384')],
  ready: () => [router('Connected')],
  crash: (_ctx, reason) => [
    launcher(
      `Shard complete standard error output:\n\nRuntimeError: CUDA error: an illegal memory access was encountered [simulated: ${reason}]`,
      'ERROR',
      SHARD,
    ),
    launcher('Shard 0 crashed', 'ERROR', SHARD),
    launcher('Shard 0 failed to start', 'ERROR'),
    launcher('Shutting down shards'),
    'Error: ShardCannotStart',
  ],
  shutdown: () => [
    launcher('Terminating webserver'),
    launcher('Waiting for webserver to gracefully shutdown'),
    launcher('webserver terminated'),
    launcher('Shutting down shards'),
    launcher('Terminating shard', 'INFO', SHARD),
    launcher('Waiting for shard to gracefully shutdown', 'INFO', SHARD),
    launcher('shard terminated', 'INFO', SHARD),
  ],
};

interface TgiRequest {
  inputs: string;
  tokens: number;
  stream: boolean;
  details: boolean;
  fullText: boolean;
}

function parse(body: unknown, streamDefault: boolean | undefined): Checked<TgiRequest> {
  if (!isObject(body)) return { ok: false, field: 'body', message: 'Failed to deserialize the JSON body into the target type: expected an object' };
  const inputs = body.inputs;
  if (inputs === undefined || inputs === null) {
    return { ok: false, field: 'inputs', message: 'Failed to deserialize the JSON body into the target type: missing field `inputs`' };
  }
  if (typeof inputs !== 'string') return { ok: false, field: 'inputs', message: 'Input validation error: `inputs` must be a string' };
  if (inputs.length === 0) return { ok: false, field: 'inputs', message: 'Input validation error: `inputs` cannot be empty' };
  let parameters: Record<string, unknown> = {};
  if (body.parameters !== undefined && body.parameters !== null) {
    if (!isObject(body.parameters)) return { ok: false, field: 'parameters', message: 'Input validation error: `parameters` must be an object' };
    parameters = body.parameters;
  }
  const tokens = optionalInt(parameters, 'max_new_tokens', 'parameters.max_new_tokens', DEFAULT_MAX_NEW_TOKENS, 1, MAX_GENERATED_TOKENS);
  if (!tokens.ok) return { ...tokens, message: `Input validation error: \`max_new_tokens\` ${tokens.message.replace('parameters.max_new_tokens ', '')}` };
  const details = optionalBool(parameters, 'details', 'parameters.details');
  if (!details.ok) return details;
  const fullText = optionalBool(parameters, 'return_full_text', 'parameters.return_full_text');
  if (!fullText.ok) return fullText;
  let stream = streamDefault ?? false;
  if (streamDefault === undefined) {
    const s = optionalBool(body, 'stream', 'stream');
    if (!s.ok) return s;
    stream = s.value;
  }
  return { ok: true, value: { inputs, tokens: tokens.value, stream, details: details.value, fullText: fullText.value } };
}

/** `streamDefault`: true for /generate_stream, false for /generate, undefined for / (body's `stream`). */
function serve(res: ServerResponse, body: unknown, env: RouteEnv, streamDefault: boolean | undefined, asList: boolean): void {
  const parsed = parse(body, streamDefault);
  if (!parsed.ok) {
    env.core.rejected();
    sendJson(res, 422, errorBody(422, parsed.message));
    return;
  }
  const r = parsed.value;
  const ok = env.core.admit(res, () => sendJson(res, 500, errorBody(500, 'Request failed during generation: Server error: simulated error (--error-rate)')));
  if (!ok) return;
  const prefix = r.fullText ? r.inputs : '';
  const details = (tokens: number) => `{"finish_reason":"length","generated_tokens":${tokens},"seed":null,"prefill":[],"tokens":[]}`;

  if (!r.stream) {
    env.core.generate(res, r.tokens, false, {
      progress() {},
      done() {
        const one = `{"generated_text":${JSON.stringify(prefix + fillerText(r.tokens))}${r.details ? `,"details":${details(r.tokens)}` : ''}}`;
        sendRawJson(res, 200, asList ? `[${one}]` : one);
      },
    });
    return;
  }

  startEventStream(res);
  let sent = 0;
  env.core.generate(res, r.tokens, true, {
    progress(generated) {
      let out = '';
      for (; sent < generated; sent++) {
        const last = sent === r.tokens - 1;
        const token = `{"id":${1000 + (sent % 32)},"text":${JSON.stringify(tokenText(sent))},"logprob":-0.25,"special":false}`;
        const tail = last
          ? `"generated_text":${JSON.stringify(prefix + fillerText(r.tokens))},"details":{"finish_reason":"length","generated_tokens":${r.tokens},"seed":null,"input_length":${estimateTokens(r.inputs)}}`
          : '"generated_text":null,"details":null';
        out += `data:{"index":${sent + 1},"token":${token},"top_tokens":[],${tail}}\n\n`;
      }
      if (out && !res.destroyed) res.write(out);
    },
    done() {
      if (!res.destroyed) res.end();
    },
  });
}

/** The tgi flavor. */
export const tgiFlavor: FlavorDef = {
  name: 'tgi',
  script,
  errorBody: (status, message) => errorBody(status, message),
  weightsFile: 'model-00001-of-00001.safetensors',
  routes: {
    'POST /generate': (res, body, env) => serve(res, body, env, false, false),
    'POST /generate_stream': (res, body, env) => serve(res, body, env, true, false),
    'POST /': (res, body, env) => serve(res, body, env, undefined, true),
    'GET /info': (res, _body, env) =>
      sendJson(res, 200, {
        model_id: env.modelName,
        model_sha: null,
        model_dtype: 'torch.float16',
        model_device_type: 'cuda',
        model_pipeline_tag: 'text-generation',
        max_concurrent_requests: 128,
        max_best_of: 2,
        max_stop_sequences: 4,
        max_input_tokens: 4095,
        max_total_tokens: 4096,
        validation_workers: 2,
        max_client_batch_size: 4,
        router: 'text-generation-router',
        version: TGI_VERSION,
        sha: null,
        docker_label: null,
      }),
  },
};
