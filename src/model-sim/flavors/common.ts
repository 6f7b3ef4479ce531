import type { ServerResponse } from 'node:http';
import { sendJson } from '../http-util.js';
import type { RouteEnv } from './types.js';
/** Pieces every flavor shares: filler text, ids, sizes, durations, input checks. */

/** Deterministic filler: token i is always the same word (with its leading space). */
const WORDS = [
  'the',
  'model',
  'answers',
  'with',
  'simulated',
  'tokens',
  'at',
  'a',
  'steady',
  'rate',
  'while',
  'many',
  'requests',
  'share',
  'one',
  'batch',
  'on',
  'its',
  'graphics',
  'card',
  'and',
  'every',
  'word',
  'here',
  'is',
  'filler',
  'so',
  'tests',
  'can',
  'count',
  'them',
  'exactly',
].map((w) => ' ' + w);

/** Text of token `i` (0-based). */
export function tokenText(i: number): string {
  return WORDS[i % WORDS.length]!;
}

const textCache = new Map<number, string>();

/** Text of the first `n` tokens. */
export function fillerText(n: number): string {
  const cached = textCache.get(n);
  if (cached !== undefined) return cached;
  const full = Math.floor(n / WORDS.length);
  let text = WORDS.join('').repeat(full);
  for (let i = full * WORDS.length; i < n; i++) text += tokenText(i);
  if (n <= 4096) textCache.set(n, text);
  return text;
}

const idPrefix = Math.random().toString(16).slice(2, 10);
let idCounter = 0;

/** A unique id like `cmpl-1a2b3c4d5` (cheap: no crypto per request). */
export function makeId(prefix: string): string {
  return `${prefix}${idPrefix}${(++idCounter).toString(16).padStart(6, '0')}`;
}

/** A rough prompt token count: ~4 characters a token, as tokenizers average on English. */
export function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/** 1.99G style, as tqdm/huggingface_hub print sizes (append the unit, e.g. 'B'). */
export function humanBytes(bytes: number, unitSep = ''): string {
  const units = ['', 'k', 'M', 'G', 'T'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toFixed(2)}${unitSep}${units[u]}`;
}

/** H:MM:SS, as Python prints a timedelta. */
export function pyDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

/** Seconds-elapsed as tqdm prints it: MM:SS. */
export function tqdmClock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

/** Result of checking one optional input field. */
export type Checked<T> = { ok: true; value: T } | { ok: false; field: string; message: string };

/** An OpenAI-style error body for a status, a message and the field at fault. */
export type ErrorBodyFn = (status: number, message: string, field?: string) => unknown;

/**
 * The common front of an OpenAI-style route: a request that failed its checks gets a 400 naming
 * the field; an admitted one may still fail with a simulated 500 (--error-rate). Returns the
 * request when it may be served, null when it was answered here.
 */
export function admitChecked<T>(res: ServerResponse, env: RouteEnv, parsed: Checked<T>, errorBody: ErrorBodyFn): T | null {
  if (!parsed.ok) {
    env.core.rejected();
    sendJson(res, 400, errorBody(400, parsed.message, parsed.field));
    return null;
  }
  const ok = env.core.admit(res, () =>
    sendJson(res, 500, errorBody(500, 'The server had an error while processing your request (simulated by --error-rate).')),
  );
  return ok ? parsed.value : null;
}

/** A plain JSON object (not an array, not null). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An optional integer field in [min, max]; `fallback` when absent or null. */
export function optionalInt(obj: Record<string, unknown>, key: string, field: string, fallback: number, min: number, max: number): Checked<number> {
  const v = obj[key];
  if (v === undefined || v === null) return { ok: true, value: fallback };
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    return { ok: false, field, message: `${field} must be an integer from ${min} to ${max} (got ${JSON.stringify(v)})` };
  }
  return { ok: true, value: v };
}

/** An optional boolean field; false when absent or null. */
export function optionalBool(obj: Record<string, unknown>, key: string, field: string): Checked<boolean> {
  const v = obj[key];
  if (v === undefined || v === null) return { ok: true, value: false };
  if (typeof v !== 'boolean') return { ok: false, field, message: `${field} must be a boolean (got ${JSON.stringify(v)})` };
  return { ok: true, value: v };
}

/** Most tokens one request may ask for (keeps answers to a sane size). */
export const MAX_GENERATED_TOKENS = 1_000_000;
