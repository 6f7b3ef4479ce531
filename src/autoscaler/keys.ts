import { randomBytes } from 'node:crypto';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateRsaKeyPair } from '../common/signature.js';

/**
 * The engine's secrets on disk: the RSA key that signs routes (generated at first start,
 * kept as `<dataDir>/engine_key.pem`, mode 0600) and, when none is configured, a generated
 * admin key in `<dataDir>/admin_key` and account key in `<dataDir>/account_key`. Restarting with the same data dir keeps both,
 * so workers that already fetched /pubkey/ keep verifying.
 */

export interface EngineKeys {
  privateKeyPem: string;
  publicKeyPem: string;
  /** Where the private key lives. */
  keyPath: string;
  /** True when this call generated the key. */
  created: boolean;
}

/** Read the key at `keyPath` (or `<dataDir>/engine_key.pem`), generating it when the default file is missing. */
export function loadOrCreateKeys(dataDir: string, keyPath?: string): EngineKeys {
  const path = keyPath ?? join(dataDir, 'engine_key.pem');
  if (existsSync(path)) {
    const privateKeyPem = readFileSync(path, 'utf8');
    let publicKeyPem: string;
    try {
      const key = createPrivateKey(privateKeyPem);
      if (key.asymmetricKeyType !== 'rsa') throw new Error(`${path} holds a ${key.asymmetricKeyType} key; an RSA key is needed`);
      publicKeyPem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
    } catch (err) {
      throw new Error(`cannot use the private key ${path}: ${(err as Error).message}`);
    }
    return { privateKeyPem, publicKeyPem, keyPath: path, created: false };
  }
  if (keyPath) throw new Error(`private_key_path ${keyPath} does not exist`);
  mkdirSync(dataDir, { recursive: true });
  const pair = generateRsaKeyPair(2048);
  writeFileSync(path, pair.privateKeyPem, { mode: 0o600 });
  chmodSync(path, 0o600);
  return { ...pair, keyPath: path, created: true };
}

/** The admin key: `configured`, else `<dataDir>/admin_key`, generated (0600) when missing. */
export function loadOrCreateAdminKey(dataDir: string, configured?: string): { key: string; path: string | null; created: boolean } {
  return loadOrCreateSecret(dataDir, 'admin_key', configured);
}

/**
 * The account key (what the Vast SDK sends as VAST_API_KEY to the console calls and to
 * /get_endpoint_workers/): `configured`, else `<dataDir>/account_key`, generated (0600) when missing.
 */
export function loadOrCreateAccountKey(dataDir: string, configured?: string): { key: string; path: string | null; created: boolean } {
  return loadOrCreateSecret(dataDir, 'account_key', configured);
}

function loadOrCreateSecret(dataDir: string, file: string, configured?: string): { key: string; path: string | null; created: boolean } {
  if (configured) return { key: configured, path: null, created: false };
  const path = join(dataDir, file);
  if (existsSync(path)) return { key: readFileSync(path, 'utf8').trim(), path, created: false };
  mkdirSync(dataDir, { recursive: true });
  const key = randomBytes(24).toString('base64url');
  writeFileSync(path, key + '\n', { mode: 0o600 });
  return { key, path, created: true };
}
