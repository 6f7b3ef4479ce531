import type { z } from 'zod';
import { authDataSchema, fieldErrors as issueFields, type AuthData } from '../common/protocol.js';

export { MAX_AUTH_DEPTH, nestedDeeperThan, type AuthData } from '../common/protocol.js';

/**
 * The client's request envelope (PROTOCOL §2): `{auth_data, payload, session_id?}`.
 * Parsing never throws: it returns either the envelope or the exact 422 body the PyWorker gives.
 */
export interface Envelope {
  auth_data: AuthData;
  payload: unknown;
  session_id: string | null;
}

export type EnvelopeResult = { ok: true; envelope: Envelope } | { ok: false; status: number; body: Record<string, unknown> };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validate `auth_data` with the protocol's schema; returns per-field problems (empty when fine). */
export function checkAuthData(raw: unknown): { auth?: AuthData; problems: Record<string, string> | string } {
  if (raw === undefined) return { problems: 'field missing' };
  if (!isObject(raw)) return { problems: 'must be an object' };
  const parsed = authDataSchema.safeParse(raw);
  return parsed.success ? { auth: parsed.data, problems: {} } : { problems: issueFields(parsed.error) };
}

/** A payload's zod issues as the 422 body's `{field.path: message}`. */
export function fieldErrors(error: z.ZodError): Record<string, string> {
  return issueFields(error, '', '(payload)');
}

/** Parse the body text of a handler request. */
export function parseEnvelope(text: string): EnvelopeResult {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, status: 422, body: { error: 'invalid JSON' } };
  }
  return checkEnvelope(body);
}

/** Check an already parsed body; the 422 body names every wrong field at once. */
export function checkEnvelope(body: unknown): EnvelopeResult {
  if (!isObject(body)) return { ok: false, status: 422, body: { error: 'invalid JSON: the body must be an object with auth_data and payload' } };
  const errors: Record<string, unknown> = {};
  const { auth, problems } = checkAuthData(body.auth_data);
  if (typeof problems === 'string' || Object.keys(problems).length > 0) errors.auth_data = problems;
  if (body.payload === undefined) errors.payload = 'field missing';
  const sid = body.session_id;
  if (sid !== undefined && sid !== null && typeof sid !== 'string' && typeof sid !== 'number') errors.session_id = 'must be a string or null';
  if (Object.keys(errors).length > 0) return { ok: false, status: 422, body: errors };
  return {
    ok: true,
    envelope: { auth_data: auth!, payload: body.payload, session_id: sid === undefined || sid === null ? null : String(sid) },
  };
}

// ---------------------------------------------------------------------------------------------
// The payload's own bytes, so the model gets exactly what the client wrote without a re-serialization.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const PAYLOAD_KEY = Buffer.from('"payload"', 'latin1');

function isJsonSpace(c: number | undefined): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function skipSpace(b: Buffer, i: number): number {
  while (isJsonSpace(b[i])) i++;
  return i;
}

/** Index just past the string that opens at `i` (a quote), or -1. */
function stringEnd(b: Buffer, i: number): number {
  let from = i + 1;
  for (;;) {
    const q = b.indexOf(QUOTE, from);
    if (q < 0) return -1;
    let slashes = 0;
    for (let k = q - 1; k > i && b[k] === BACKSLASH; k--) slashes++;
    if ((slashes & 1) === 0) return q + 1; // an even run of backslashes does not escape the quote
    from = q + 1;
  }
}

/** Index just past the JSON value that starts at `i`, or -1. */
function valueEnd(b: Buffer, i: number): number {
  const c = b[i];
  if (c === QUOTE) return stringEnd(b, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    while (i < b.length) {
      const d = b[i]!;
      if (d === QUOTE) {
        i = stringEnd(b, i);
        if (i < 0) return -1;
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if ((d === 0x7d || d === 0x5d) && --depth === 0) return i + 1;
      i++;
    }
    return -1;
  }
  while (i < b.length) {
    const d = b[i]!;
    if (d === 0x2c || d === 0x7d || d === 0x5d || isJsonSpace(d)) break;
    i++;
  }
  return i;
}

/** True when the key string at [start, end) (quotes included) is "payload", however it is escaped. */
function isPayloadKey(b: Buffer, start: number, end: number): boolean {
  if (end - start === PAYLOAD_KEY.length && b.compare(PAYLOAD_KEY, 0, PAYLOAD_KEY.length, start, end) === 0) return true;
  const slash = b.indexOf(BACKSLASH, start);
  if (slash < 0 || slash >= end) return false; // no escape: the bytes above were the only spelling
  try {
    return JSON.parse(b.toString('utf8', start, end)) === 'payload';
  } catch {
    return false;
  }
}

/**
 * The byte range `[start, end)` of the top-level `payload` value in `body`, a JSON object that
 * JSON.parse has already accepted; the last `payload` key wins, as in JSON.parse. Null when the
 * body is not an object or has no payload. Strings are skipped with a native search for the quote,
 * so a long prompt costs little.
 */
export function payloadSpan(body: Buffer): [number, number] | null {
  let i = skipSpace(body, 0);
  if (body[i] !== 0x7b) return null;
  i = skipSpace(body, i + 1);
  let found: [number, number] | null = null;
  while (i < body.length && body[i] !== 0x7d) {
    if (body[i] !== QUOTE) return null;
    const keyEnd = stringEnd(body, i);
    if (keyEnd < 0) return null;
    const wanted = isPayloadKey(body, i, keyEnd);
    i = skipSpace(body, keyEnd);
    if (body[i] !== 0x3a) return null;
    const start = skipSpace(body, i + 1);
    const end = valueEnd(body, start);
    if (end < 0) return null;
    if (wanted) found = [start, end];
    i = skipSpace(body, end);
    if (body[i] === 0x2c) i = skipSpace(body, i + 1);
    else if (body[i] !== 0x7d) return null;
  }
  return found;
}
