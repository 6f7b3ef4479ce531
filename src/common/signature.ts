import { createPrivateKey, createPublicKey, createSign, createVerify, generateKeyPairSync, type KeyObject } from 'node:crypto';

/**
 * The message the engine signs for a request: exactly what Python's
 * `json.dumps({"url": url}, indent=4, sort_keys=True)` prints. Non-ASCII is
 * escaped as \uXXXX (surrogate pairs for astral characters), "/" is not escaped.
 */
export function signedUrlMessage(url: string): string {
  return `{\n    "url": ${pythonJsonString(url)}\n}`;
}

/** A string as Python's json.dumps (ensure_ascii=True) writes it. */
export function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[i];
  }
  return out + '"';
}

/** Python's json.dumps(obj, indent=4, sort_keys=True) for plain JSON values (strict-mode signing). */
export function pythonJsonDumps(value: unknown, indent = ''): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return pythonJsonString(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return value > 0 ? 'Infinity' : value < 0 ? '-Infinity' : 'NaN';
    return Number.isInteger(value) ? String(value) : pythonFloat(value);
  }
  const inner = indent + '    ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return '[\n' + value.map((v) => inner + pythonJsonDumps(v, inner)).join(',\n') + '\n' + indent + ']';
  }
  const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length === 0) return '{}';
  return '{\n' + entries.map(([k, v]) => inner + pythonJsonString(k) + ': ' + pythonJsonDumps(v, inner)).join(',\n') + '\n' + indent + '}';
}

function pythonFloat(n: number): string {
  // Python repr of floats: shortest round-trip, with exponent form like 1e-05 / 1e+16.
  const s = String(n);
  if (s.includes('e')) {
    const [m, e] = s.split('e') as [string, string];
    const sign = e.startsWith('-') ? '-' : '+';
    const digits = e.replace(/^[+-]/, '').padStart(2, '0');
    return `${m}e${sign}${digits}`;
  }
  return s.includes('.') ? s : s + '.0';
}

export interface KeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

export function generateRsaKeyPair(bits = 2048): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** RSA PKCS#1 v1.5 / SHA-256 over `message`, base64. */
export function signMessage(privateKey: KeyObject | string, message: string): string {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  return createSign('sha256').update(message).sign(key, 'base64');
}

export function signUrl(privateKey: KeyObject | string, url: string): string {
  return signMessage(privateKey, signedUrlMessage(url));
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** True when `signatureB64` is a valid signature of `message`; false for any malformed input. */
export function verifyMessage(publicKey: KeyObject | string, message: string, signatureB64: string): boolean {
  if (typeof signatureB64 !== 'string' || signatureB64.length === 0 || signatureB64.length % 4 !== 0 || !BASE64.test(signatureB64)) {
    return false;
  }
  try {
    const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
    return createVerify('sha256').update(message).verify(key, Buffer.from(signatureB64, 'base64'));
  } catch {
    return false;
  }
}

export function verifyUrl(publicKey: KeyObject | string, url: string, signatureB64: string): boolean {
  return verifyMessage(publicKey, signedUrlMessage(url), signatureB64);
}
