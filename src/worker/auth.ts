import { createPublicKey, type KeyObject } from 'node:crypto';
import { request } from 'undici';
import type { Logger } from '../common/log.js';
import { pythonJsonDumps, signedUrlMessage, verifyMessage } from '../common/signature.js';
import { sleep } from '../common/util.js';
import type { AuthData } from './envelope.js';

/**
 * Signature checks of `auth_data` (PROTOCOL §2). Compatible mode: RSA/SHA-256 over the Python
 * `json.dumps({"url": url}, indent=4, sort_keys=True)` text. Strict mode (opt-in): over the whole
 * auth_data without `signature`, in the same Python format, and refused after `expires_at`.
 * Results are cached per (url, signature) in a bounded map: the compatible message covers only the
 * url, so the same pair always verifies the same way.
 */
export interface AuthCheckerOptions {
  unsecured: boolean;
  strict?: boolean;
  /**
   * Strict mode: this worker's public URL (what it reports as `url`, what the engine signs into
   * auth_data). auth_data signed for another worker's URL is refused, so a captured strict token
   * works only on the worker it was issued for (issue 21 row 8). Unset: not checked.
   */
  ownUrl?: string;
  cacheSize?: number;
  now?: () => number;
}

export class AuthChecker {
  private key: KeyObject | null = null;
  private readonly cache = new Map<string, boolean>();
  private readonly cacheSize: number;
  private readonly ownUrl: string | null;
  /** Highest reqnum seen in a request whose signature verified. */
  reqnum = 0;

  constructor(private readonly opts: AuthCheckerOptions) {
    this.cacheSize = opts.cacheSize ?? 10_000;
    this.ownUrl = opts.ownUrl ? sameUrlForm(opts.ownUrl) : null;
  }

  get hasKey(): boolean {
    return this.key !== null;
  }

  get unsecured(): boolean {
    return this.opts.unsecured;
  }

  setPublicKey(pem: string): void {
    this.key = createPublicKey(pem);
    this.cache.clear();
  }

  /**
   * True when the request may proceed. Without a key (and not unsecured) nothing verifies.
   * `withinOpenSession`: the request belongs to a session that is open now; in strict mode its
   * auth_data (the session's, checked with its expiry at create) must still carry a valid signature,
   * but its `expires_at` is not enforced again: the session's own lifetime bounds it.
   */
  check(auth: AuthData, opts?: { withinOpenSession?: boolean }): boolean {
    if (this.opts.unsecured) {
      if (auth.reqnum > this.reqnum) this.reqnum = auth.reqnum;
      return true;
    }
    if (!this.key) return false;
    const ok = this.opts.strict ? this.checkStrict(auth, opts?.withinOpenSession === true) : this.checkUrl(auth.url, auth.signature);
    if (ok && auth.reqnum > this.reqnum) this.reqnum = auth.reqnum;
    return ok;
  }

  private checkUrl(url: string, signature: string): boolean {
    const cacheKey = url + '\n' + signature;
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) return hit;
    const ok = verifyMessage(this.key!, signedUrlMessage(url), signature);
    if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(cacheKey, ok);
    return ok;
  }

  private checkStrict(auth: AuthData, skipExpiry: boolean): boolean {
    const now = (this.opts.now ?? Date.now)() / 1000;
    if (typeof auth.expires_at !== 'number' || (!skipExpiry && !(auth.expires_at > now))) return false;
    if (this.ownUrl !== null && sameUrlForm(auth.url) !== this.ownUrl) return false;
    return verifyMessage(this.key!, strictSignedMessage(auth), auth.signature);
  }
}

/** A URL in the form two spellings of one address share: scheme and host lowercased, no trailing slash. */
function sameUrlForm(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)(.*)$/i.exec(url.trim());
  const s = m ? m[1]!.toLowerCase() + m[2]! : url.trim();
  return s.replace(/\/+$/, '');
}

/** The strict-mode message: auth_data without `signature`, as Python's json.dumps(indent=4, sort_keys=True). */
export function strictSignedMessage(auth: Record<string, unknown>): string {
  const { signature: _omit, ...rest } = auth;
  return pythonJsonDumps(rest);
}

/** Extract a PEM from a /pubkey/ answer: raw PEM text, a JSON string, or JSON `{key|public_key|pubkey}`. */
export function extractPem(text: string): string | null {
  const t = text.trim();
  if (t.startsWith('-----BEGIN')) return t;
  try {
    const v = JSON.parse(t) as unknown;
    if (typeof v === 'string' && v.includes('-----BEGIN')) return v;
    if (v && typeof v === 'object') {
      for (const k of ['key', 'public_key', 'pubkey']) {
        const s = (v as Record<string, unknown>)[k];
        if (typeof s === 'string' && s.includes('-----BEGIN')) return s;
      }
    }
  } catch {
    /* not JSON */
  }
  return null;
}

/**
 * Fetch the engine's public key: `GET {addr}/pubkey/`, up to `attempts` tries with 1, 2, 4, 8 s
 * between them. Throws an Error whose message says what failed last.
 */
export async function fetchPublicKey(
  addr: string,
  opts: { attempts?: number; baseDelayMs?: number; logger?: Logger; signal?: AbortSignal } = {},
): Promise<string> {
  const attempts = opts.attempts ?? 5;
  const base = opts.baseDelayMs ?? 1000;
  let last = '';
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await sleep(base * 2 ** (i - 1), opts.signal);
    try {
      const res = await request(`${addr}/pubkey/`, { method: 'GET', headersTimeout: 10_000, bodyTimeout: 10_000, signal: opts.signal });
      const text = await res.body.text();
      if (res.statusCode !== 200) {
        last = `GET ${addr}/pubkey/ answered ${res.statusCode}`;
      } else {
        const pem = extractPem(text);
        if (pem) {
          createPublicKey(pem); // throws on a malformed key
          return pem;
        }
        last = `GET ${addr}/pubkey/ did not return a PEM public key`;
      }
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      last = `GET ${addr}/pubkey/ failed: ${(err as Error).message}`;
    }
    opts.logger?.warn({ attempt: i + 1, attempts }, last);
  }
  throw new Error(`could not get the engine's public key: ${last}`);
}
