import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateRsaKeyPair, signUrl, type KeyPair } from '#nodeworker/common/signature.js';

/**
 * The worker-facing half of an engine for the overhead benchmark: `GET /pubkey/` from a real RSA
 * key pair, `POST /worker_status/` and `/delete_requests/` acknowledged and counted. `authData`
 * signs like the engine does (PROTOCOL §2: the Python-format message over the url).
 */
export interface BenchEngine {
  url: string;
  keys: KeyPair;
  counts: { status: number; deletes: number; ids: number };
  /** A signed auth_data for `workerUrl`, request number `i`. */
  authData(workerUrl: string, i: number, cost?: number): Record<string, unknown>;
  close(): Promise<void>;
}

export async function startBenchEngine(): Promise<BenchEngine> {
  const keys = generateRsaKeyPair(2048);
  const counts = { status: 0, deletes: 0, ids: 0 };
  const signatures = new Map<string, string>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/pubkey/') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end(keys.publicKeyPem);
        return;
      }
      if (req.url === '/worker_status/') counts.status++;
      else if (req.url === '/delete_requests/') {
        counts.deletes++;
        try {
          counts.ids += (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { request_idxs: number[] }).request_idxs.length;
        } catch {
          /* counted as a post all the same */
        }
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no such route","field":"path"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    keys,
    counts,
    authData(workerUrl, i, cost = 100) {
      let signature = signatures.get(workerUrl);
      if (!signature) {
        signature = signUrl(keys.privateKeyPem, workerUrl);
        signatures.set(workerUrl, signature);
      }
      return { cost, endpoint: 'bench', reqnum: i, request_idx: i, signature, url: workerUrl };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
