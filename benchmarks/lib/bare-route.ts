/**
 * The floor under `engine-scale.ts`'s `/route/` figure: a bare node:http server that reads the
 * same POST body, parses it, and answers a route answer of the same shape and size (content-type
 * and content-length as the engine's fast path sends them), with no engine behind it. What the
 * engine serves is bounded by what this serves on the same machine with the same generator.
 *
 *   node build/benchmarks/lib/bare-route.js   (prints BARE_ROUTE_READY {"url": ...})
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

let reqnum = 0;
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { endpoint?: string; cost?: number };
    const id = 1 + (reqnum % 1000);
    const text = JSON.stringify({
      url: `http://127.0.0.1:9/w${id}`,
      request_idx: 1_000_000 + reqnum,
      reqnum: ++reqnum,
      cost: body.cost ?? 10,
      endpoint: body.endpoint ?? 'bench',
      // The engine's signature: base64 of an RSA-2048 signature (344 characters).
      signature: 'A'.repeat(344),
      worker_id: id,
      status: 'routed',
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`BARE_ROUTE_READY ${JSON.stringify({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, pid: process.pid })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
