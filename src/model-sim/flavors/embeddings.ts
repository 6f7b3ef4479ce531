import type { ServerResponse } from 'node:http';
import { sendJson } from '../http-util.js';
import { admitChecked, estimateTokens, isObject, makeId, optionalInt, type Checked, type ErrorBodyFn } from './common.js';
import type { RouteEnv } from './types.js';

/**
 * vLLM's `POST /v1/embeddings` (OpenAI API): one unit-length vector per input, the same vector
 * for the same text, so handlers other than completions can be tested against the simulator.
 * The work is the prompt's prefill: one generated-token's worth of capacity per 16 input tokens.
 */

const DEFAULT_DIMENSIONS = 64;
const MAX_DIMENSIONS = 4096;
const PREFILL_TOKENS_PER_UNIT = 16;

interface EmbeddingRequest {
  model: string;
  inputs: string[];
  promptTokens: number;
  dimensions: number;
  base64: boolean;
}

function parse(body: unknown, modelName: string): Checked<EmbeddingRequest> {
  if (!isObject(body)) return { ok: false, field: 'body', message: 'body must be a JSON object' };
  const input = body.input;
  let inputs: string[];
  let promptTokens: number;
  if (typeof input === 'string') {
    inputs = [input];
    promptTokens = estimateTokens(input);
  } else if (Array.isArray(input) && input.length > 0 && input.every((s) => typeof s === 'string')) {
    inputs = input as string[];
    promptTokens = inputs.reduce((n, s) => n + estimateTokens(s), 0);
  } else if (Array.isArray(input) && input.length > 0 && input.every((t) => Number.isInteger(t))) {
    inputs = [JSON.stringify(input)];
    promptTokens = input.length;
  } else if (Array.isArray(input) && input.length > 0 && input.every((l) => Array.isArray(l) && l.length > 0 && l.every((t) => Number.isInteger(t)))) {
    inputs = (input as number[][]).map((l) => JSON.stringify(l));
    promptTokens = (input as number[][]).reduce((n, l) => n + l.length, 0);
  } else if (input === undefined || input === null) {
    return { ok: false, field: 'input', message: 'input: Field required' };
  } else {
    return { ok: false, field: 'input', message: 'input must be a string, a non-empty list of strings, or token ids' };
  }
  if (body.model !== undefined && body.model !== null && typeof body.model !== 'string') {
    return { ok: false, field: 'model', message: `model must be a string (got ${JSON.stringify(body.model)})` };
  }
  const dimensions = optionalInt(body, 'dimensions', 'dimensions', DEFAULT_DIMENSIONS, 1, MAX_DIMENSIONS);
  if (!dimensions.ok) return dimensions;
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') {
    return { ok: false, field: 'encoding_format', message: `encoding_format must be "float" or "base64" (got ${JSON.stringify(format)})` };
  }
  return {
    ok: true,
    value: { model: typeof body.model === 'string' ? body.model : modelName, inputs, promptTokens, dimensions: dimensions.value, base64: format === 'base64' },
  };
}

/** A deterministic unit vector for `text` (FNV-1a seed, xorshift stream). */
export function embed(text: string, dimensions: number): number[] {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  let s = h || 1;
  const v: number[] = [];
  for (let i = 0; i < dimensions; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    v.push(s / 0xffffffff - 0.5);
  }
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}

function encode(vector: number[], base64: boolean): number[] | string {
  return base64 ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector;
}

/** The route, with the flavor's error body shape. */
export function embeddingsRoute(errorBody: ErrorBodyFn) {
  return (res: ServerResponse, body: unknown, env: RouteEnv): void => {
    const r = admitChecked(res, env, parse(body, env.modelName), errorBody);
    if (r === null) return;
    env.core.generate(res, Math.max(1, Math.ceil(r.promptTokens / PREFILL_TOKENS_PER_UNIT)), false, {
      progress() {},
      done() {
        sendJson(res, 200, {
          id: makeId('embd-'),
          object: 'list',
          created: Math.floor(Date.now() / 1000),
          model: r.model,
          data: r.inputs.map((text, index) => ({ index, object: 'embedding', embedding: encode(embed(text, r.dimensions), r.base64) })),
          usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens, completion_tokens: 0 },
        });
      },
    });
  };
}
