import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Pool, type Dispatcher } from 'undici';

/**
 * The floor for the proxy benchmark: the least a Node proxy of this protocol must do (read the
 * envelope, parse it, forward the payload with undici, answer in one write) and nothing else: no
 * validation, no ledger, no admission, no metrics. The worker's figures are read against it.
 *
 * Run: `node build/benchmarks/lib/bare-proxy.js http://127.0.0.1:8000 [connections] [pipelining]` → prints its URL.
 */
export async function startBareProxy(
  modelUrl: string,
  port = 0,
  poolOpts: { connections?: number; pipelining?: number } = {},
): Promise<{ url: string; close(): Promise<void> }> {
  const pool = new Pool(modelUrl, { connections: poolOpts.connections ?? 512, pipelining: poolOpts.pipelining ?? 1, keepAliveTimeout: 60_000 });
  const headers = { 'content-type': 'application/json' };
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let payload: string;
      try {
        payload = JSON.stringify((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { payload: unknown }).payload);
      } catch {
        res.writeHead(422, headers).end('{"error":"invalid JSON"}');
        return;
      }
      const parts: Buffer[] = [];
      let status = 0;
      let type = 'application/json';
      const handler: Dispatcher.DispatchHandler = {
        // undici treats a handler without onRequestStart as one of its legacy shape.
        onRequestStart: () => undefined,
        onResponseStart: (_c, s, h) => {
          status = s;
          type = String(h['content-type'] ?? type);
        },
        onResponseData: (_c, chunk) => void parts.push(chunk),
        onResponseEnd: () => {
          const body = Buffer.concat(parts);
          res.writeHead(status, { 'content-type': type, 'content-length': body.length });
          res.end(body);
        },
        onResponseError: () => {
          if (!res.headersSent) res.writeHead(500, { 'content-length': 0 }).end();
          else res.destroy();
        },
      };
      pool.dispatch({ path: req.url ?? '/', method: 'POST', headers, body: payload }, handler);
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await pool.close();
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const modelUrl = process.argv[2];
  if (!modelUrl) {
    process.stderr.write('usage: bare-proxy.js MODEL_URL\n');
    process.exit(2);
  }
  const [connections, pipelining] = process.argv.slice(3).map(Number);
  startBareProxy(modelUrl, 0, { connections: connections || undefined, pipelining: pipelining || undefined }).then(
    (p) => {
      process.stdout.write(`bare-proxy listening on ${p.url}\n`);
      const stop = () => void p.close().then(() => process.exit(0));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    },
    (err: Error) => {
      process.stderr.write(`bare-proxy: ${err.message}\n`);
      process.exit(1);
    },
  );
}
