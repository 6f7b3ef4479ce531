import { createPublicKey, createSign, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signedUrlMessage, verifyUrl } from '../src/common/signature.js';

/**
 * The message the engine signs is Python's json.dumps({"url": url}, indent=4, sort_keys=True).
 * The expected strings below are written out literally (what CPython prints), not computed.
 */
describe('signedUrlMessage', () => {
  it('is the four-space indented Python text for a plain url, with "/" unescaped', () => {
    expect(signedUrlMessage('http://1.2.3.4:40123')).toBe('{\n    "url": "http://1.2.3.4:40123"\n}');
    expect(signedUrlMessage('https://a.b/c/d?e=f&g=h')).toBe('{\n    "url": "https://a.b/c/d?e=f&g=h"\n}');
  });

  it('escapes non-ASCII as lowercase \\uXXXX', () => {
    // python3 -c 'import json; print(json.dumps({"url": "http://café.example/ü"}, indent=4, sort_keys=True))'
    expect(signedUrlMessage('http://café.example/ü')).toBe('{\n    "url": "http://caf\\u00e9.example/\\u00fc"\n}');
    expect(signedUrlMessage('http://例え.jp')).toBe('{\n    "url": "http://\\u4f8b\\u3048.jp"\n}');
  });

  it('writes astral characters as a surrogate pair', () => {
    expect(signedUrlMessage('http://x/😀')).toBe('{\n    "url": "http://x/\\ud83d\\ude00"\n}');
  });

  it('escapes quotes, backslashes, control characters and DEL as Python does', () => {
    expect(signedUrlMessage('a"b\\c')).toBe('{\n    "url": "a\\"b\\\\c"\n}');
    expect(signedUrlMessage('a\nb\tc\rd\be\ff')).toBe('{\n    "url": "a\\nb\\tc\\rd\\be\\ff"\n}');
    expect(signedUrlMessage('\u0001\u001f\u007f~ ')).toBe('{\n    "url": "\\u0001\\u001f\\u007f~ "\n}');
  });
});

describe('verifyUrl', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sign = (text: string) => createSign('sha256').update(text).sign(privateKey, 'base64');

  it('accepts a signature made independently over the literal Python text, non-ASCII included', () => {
    const url = 'http://café.example:8080/😀';
    const sig = sign('{\n    "url": "http://caf\\u00e9.example:8080/\\ud83d\\ude00"\n}');
    expect(verifyUrl(publicKey, url, sig)).toBe(true);
    expect(verifyUrl(createPublicKey(publicKey.export({ type: 'spki', format: 'pem' })), url, sig)).toBe(true);
  });

  it('refuses a signature of another url, of the raw UTF-8 text, or a malformed one', () => {
    const url = 'http://café.example';
    expect(verifyUrl(publicKey, url, sign(signedUrlMessage('http://cafe.example')))).toBe(false);
    expect(verifyUrl(publicKey, url, sign('{\n    "url": "http://café.example"\n}'))).toBe(false);
    expect(verifyUrl(publicKey, url, '')).toBe(false);
    expect(verifyUrl(publicKey, url, 'not base64!')).toBe(false);
    expect(verifyUrl(publicKey, url, 'AAAA')).toBe(false);
  });
});
