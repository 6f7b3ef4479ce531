/** Certificates for the HTTPS tests, made by the openssl command-line tool. */
import { execFileSync } from 'node:child_process';
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
