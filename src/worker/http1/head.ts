import { STATUS_CODES } from 'node:http';

/**
 * The one HTTP/1.1 head grammar of the worker, used by both sides it speaks itself: the fast lane
 * reading client requests (fast-lane.ts) and the model client reading the model's answers
 * (model-client.ts), and by the writer of every answer head the worker sends. The rules are
 * llhttp's strict ones, so a head either side accepts is one node:http would accept too:
 *   - header names are RFC 9110 tokens, with nothing between the name and its colon;
 *   - header values may hold visible ASCII, space, tab and obs-text (0x80-0xff), nothing else:
 *     no CR, no LF, no NUL, no other control character, no DEL;
 *   - Content-Length is digits only.
 */

/** RFC 9110 token characters (header names). */
const TOKEN = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TOKEN[c.charCodeAt(0)] = 1;

/** Token check of `s` characters [start, end). */
export function isToken(s: string, start: number, end: number): boolean {
  if (end <= start) return false;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TOKEN[c] !== 1) return false;
  }
  return true;
}

/** Field value characters [start, end): tab, 0x20-0x7e and obs-text; never CR, LF, NUL, other controls or DEL. */
export function isFieldValue(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

/** A Content-Length value [vs, ve): its number, or -1 when it is not 1 to 15 digits. */
export function contentLengthOf(s: string, vs: number, ve: number): number {
  if (ve <= vs || ve - vs > 15) return -1;
  for (let i = vs; i < ve; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
  }
  return Number(s.slice(vs, ve));
}

/**
 * Called for each header line of a head: name is [start, colon), the value [vs, ve) with the
 * optional whitespace around it cut off, the line ends at `end`. Returns false to stop (the head
 * is refused).
 */
export type HeaderVisitor = (text: string, start: number, colon: number, vs: number, ve: number, end: number) => boolean;

/**
 * Walk the header lines of `text` (the head without its blank line) from `pos` (just after the
 * start line). False when a line breaks the grammar or `visit` refused one.
 */
export function forEachHeader(text: string, pos: number, visit: HeaderVisitor): boolean {
  while (pos < text.length) {
    let end = text.indexOf('\r\n', pos);
    if (end < 0) end = text.length;
    const colon = text.indexOf(':', pos);
    if (colon < 0 || colon > end || !isToken(text, pos, colon)) return false;
    let vs = colon + 1;
    let ve = end;
    while (vs < ve && (text.charCodeAt(vs) === 0x20 || text.charCodeAt(vs) === 0x09)) vs++;
    while (ve > vs && (text.charCodeAt(ve - 1) === 0x20 || text.charCodeAt(ve - 1) === 0x09)) ve--;
    if (!isFieldValue(text, vs, ve)) return false;
    if (!visit(text, pos, colon, vs, ve, end)) return false;
    pos = end + 2;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Writing answer heads.

/** Header values of an answer, as node:http takes them. */
export type OutgoingHeaders = Record<string, string | number | string[]>;

/**
 * Headers that frame a message or belong to one connection: the worker writes its own and never
 * copies these from anyone (the model's answer, a handler's headers).
 */
export const FRAMING_HEADERS = new Set([
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'trailers',
  'proxy-connection',
]);

/** A header the worker refuses to write (a name that is no token, a value with a control character). */
export class InvalidHeaderError extends Error {
  readonly code = 'ERR_INVALID_CHAR';
  constructor(name: string) {
    super(`invalid character in header ${JSON.stringify(name.slice(0, 64))}`);
  }
}

const statusLines = new Map<number, string>();
/** `HTTP/1.1 <status> <reason>` and its CRLF (cached for the common statuses). */
export function statusLine(status: number): string {
  let line = statusLines.get(status);
  if (line === undefined) {
    line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    if (statusLines.size < 128) statusLines.set(status, line);
  }
  return line;
}

let dateLine = '';
let dateUntil = 0;
/** The `date` header line, rebuilt at most once a second (what node:http sends). */
export function currentDateLine(): string {
  const now = Date.now();
  if (now >= dateUntil) {
    dateLine = `date: ${new Date(now).toUTCString()}\r\n`;
    dateUntil = now - (now % 1000) + 1000;
  }
  return dateLine;
}

/**
 * Header lines for `headers`, minus the framing ones; a `date` line unless the caller gave one.
 * Throws InvalidHeaderError (as node:http's writeHead throws ERR_INVALID_CHAR) rather than write
 * a name or value that could end the line early.
 */
export function headerLines(headers: OutgoingHeaders): string {
  let out = '';
  let hasDate = false;
  for (const name in headers) {
    const lower = name.toLowerCase();
    if (FRAMING_HEADERS.has(lower)) continue;
    if (!isToken(name, 0, name.length)) throw new InvalidHeaderError(name);
    if (lower === 'date') hasDate = true;
    const v = headers[name]!;
    if (Array.isArray(v)) {
      for (const one of v) {
        if (!isFieldValue(one, 0, one.length)) throw new InvalidHeaderError(name);
        out += `${name}: ${one}\r\n`;
      }
    } else {
      const s = typeof v === 'string' ? v : String(v);
      if (!isFieldValue(s, 0, s.length)) throw new InvalidHeaderError(name);
      out += `${name}: ${s}\r\n`;
    }
  }
  return hasDate ? out : out + currentDateLine();
}

/** A status whose answer has no body and no framing headers (RFC 9112 §6.3). */
export function bodiless(status: number): boolean {
  return status < 200 || status === 204 || status === 304;
}
