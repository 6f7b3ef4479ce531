/** Certificates for the HTTPS tests, made by the openssl command-line tool. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * `openssl req -x509`: a self-signed certificate `<name>.crt` and its new RSA-2048 key `<name>.key`
 * in `dir`, for `subject`, valid `days`, with each of `extensions` as an `-addext`.
 */
export function selfSignedCert(dir: string, name: string, o: { subject: string; days: number; extensions?: string[] }): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const ext = (o.extensions ?? []).flatMap((e) => ['-addext', e]);
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', String(o.days), '-subj', o.subject, ...ext],
    {
      stdio: 'ignore',
    },
  );
  return { cert, key };
}

let shared: { dir: string; cert: string; key: string; ca: Buffer } | null = null;

/**
 * One self-signed certificate for 127.0.0.1 per test process (made on first use, removed at exit),
 * for tests that run the same case over plain HTTP and over TLS. Clients trust it as their only CA.
 */
export function testCert(): { cert: string; key: string; ca: Buffer } {
  if (!shared) {
    const dir = mkdtempSync(join(tmpdir(), 'nodeworker-tls-'));
    const { cert, key } = selfSignedCert(dir, 'loopback', { subject: '/CN=127.0.0.1', days: 1, extensions: ['subjectAltName=IP:127.0.0.1'] });
    shared = { dir, cert, key, ca: readFileSync(cert) };
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return shared;
}

/** The two schemes the client side of the fast lane is tested on. */
export const SCHEMES = ['http', 'https'] as const;
export type Scheme = (typeof SCHEMES)[number];
