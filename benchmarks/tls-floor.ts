/**
 * Node's own floor under a TLS keep-alive row (issue 24): servers that do nothing but answer a small
 * fixed JSON over TLS 1.3, loaded by wrk (`-t1 -c64`), their CPU per request from /proc. `tls`: a
 * bare tls.Server writing one buffer per request (what the fast lane does); `https`: https.Server
 * with writeHead + end (what node:http does). Neither proxies anything, so a worker over TLS
 * cannot cost less than these plus its plain-HTTP path.
 *
 * Run: `npm run build && node build/benchmarks/tls-floor.js [--duration S]`
 */
import { execFileSync, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.js';
import { runWrk } from './lib/loadgen.js';
import { cpuSeconds } from './lib/procs.js';

const BODY = '{"id":"cmpl-floor","object":"text_completion","choices":[{"text":"hi","index":0}]}';

/** In the child: serve `mode` on an ephemeral port and send the port to the parent. */
function serve(mode: 'tls' | 'https', cert: Buffer, key: Buffer): void {
  const answer = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${BODY.length}\r\nconnection: keep-alive\r\n\r\n${BODY}`);
  const server =
    mode === 'tls'
      ? createTlsServer({ cert, key }, (socket) => {
          socket.on('error', () => undefined);
          // wrk sends each request in one record: one read, one answer.
          socket.on('data', (d: Buffer) => void (d.includes('\r\n\r\n') && socket.write(answer)));
        })
      : createHttpsServer({ cert, key }, (req, res) => {
          req.resume();
          req.on('end', () => {
            res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
            res.end(BODY);
          });
        });
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as { port: number }).port));
}

export async function runTlsFloor(durationS = 4): Promise<Array<{ mode: string; rps: number; cpuUs: number }>> {
  const dir = mkdtempSync(join(tmpdir(), 'tls-floor-'));
  const out: Array<{ mode: string; rps: number; cpuUs: number }> = [];
  try {
    const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], {
      stdio: 'ignore',
    });
    for (const mode of ['tls', 'https'] as const) {
      const child = fork(fileURLToPath(import.meta.url), ['--serve', mode, cert, key], { stdio: 'ignore' });
      try {
        const port = await new Promise<number>((resolve, reject) => {
          child.once('message', (m) => resolve(Number(m)));
          child.once('exit', (code) => reject(new Error(`the ${mode} server exited (${code})`)));
        });
        const url = `https://127.0.0.1:${port}/`;
        await runWrk({ url, body: '{}', concurrency: 64, durationS: 1 });
        const c0 = cpuSeconds(child.pid!);
        const load = await runWrk({ url, body: '{}', concurrency: 64, durationS });
        out.push({ mode, rps: load.rps, cpuUs: ((cpuSeconds(child.pid!) - c0) * 1e6) / Math.max(1, load.requests) });
      } finally {
        child.kill();
      }
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const i = process.argv.indexOf('--serve');
  if (i >= 0) {
    const [mode, cert, key] = process.argv.slice(i + 1);
    serve(mode === 'https' ? 'https' : 'tls', readFileSync(cert!), readFileSync(key!));
  } else {
    const args = benchArgs('tls-floor', '[--duration S]', { duration: 'string' });
    runTlsFloor(typeof args.duration === 'string' ? Number(args.duration) : undefined).then(
      (rows) => {
        for (const r of rows)
          process.stdout.write(`${r.mode}: ${r.rps.toFixed(0)} req/s, ${r.cpuUs.toFixed(1)} µs CPU per request (connection set-up included)\n`);
      },
      (err: Error) => {
        process.stderr.write(`tls-floor failed: ${err.message}\n`);
        process.exitCode = 1;
      },
    );
  }
}
