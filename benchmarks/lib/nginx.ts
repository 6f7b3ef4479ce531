import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '#nodeworker/common/util.js';
import { childPids, freePort, startProcess, treeCpuSeconds, type BenchProcess } from './procs.js';

/**
 * nginx as a reverse proxy in front of the model, for comparison: one worker process, upstream
 * keep-alive, no buffering (so streamed answers pass chunk by chunk, as through the worker), no
 * access log. Everything it writes (pid, logs, temp files) stays in `dir`; `daemon off` keeps it
 * our child so stopping it is a signal to one pid.
 */
export interface NginxProxy {
  url: string;
  /** The HTTPS listener's URL (null unless started with a certificate). */
  tlsUrl: string | null;
  /** The master's pid. */
  pid: number;
  /** CPU seconds of the master and its worker together. */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** The configuration written for `startNginx` (exported for the docs and tests). */
export function nginxConfig(opts: { dir: string; port: number; upstream: string; asRoot: boolean; tls?: NginxTls & { port: number } }): string {
  const u = new URL(opts.upstream);
  const d = opts.dir;
  return `# written by benchmarks/lib/nginx.ts
daemon off;
master_process on;
worker_processes 1;
${opts.asRoot ? 'user root root;\n' : ''}pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${d}/client_body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 65s;
  tcp_nodelay on;
  upstream model {
    server ${u.hostname}:${u.port};
    keepalive 512;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:${opts.port} backlog=4096;
${LOCATION}  }
${
  opts.tls
    ? `  # TLS 1.3 only, nginx's defaults otherwise: session tickets on, no shared session cache.
  server {
    listen 127.0.0.1:${opts.tls.port} ssl backlog=4096;
    ssl_certificate ${opts.tls.cert};
    ssl_certificate_key ${opts.tls.key};
    ssl_protocols TLSv1.3;
${LOCATION}  }
`
    : ''
}}
`;
}

const LOCATION = `    location / {
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
`;

/** A certificate and key (PEM files) for nginx's HTTPS listener. */
export interface NginxTls {
  cert: string;
  key: string;
}

/**
 * Start `nginx` (path from tools.ts) proxying to `upstream`, also over HTTPS when `tls` is given;
 * resolves once it accepts connections.
 */
export async function startNginx(nginx: string, upstream: string, dir: string, tls?: NginxTls): Promise<NginxProxy> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const tlsPort = tls ? await freePort() : 0;
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConfig({ dir, port, upstream, asRoot: process.getuid?.() === 0, tls: tls ? { ...tls, port: tlsPort } : undefined }));
  // -e: the error log before the configuration is read (else nginx tries /var/log/nginx).
  const proc: BenchProcess = await startProcess(nginx, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], {});
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 10_000;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`nginx exited (${proc.child.exitCode}): ${proc.output().slice(-1000)}`);
    if (childPids(proc.pid).length > 0 && (await canConnect(port))) break;
    if (Date.now() > until) {
      await proc.stop(0);
      throw new Error(`nginx did not listen on ${url} within 10 s: ${proc.output().slice(-1000)}`);
    }
    await sleep(50);
  }
  return { url, tlsUrl: tls ? `https://127.0.0.1:${tlsPort}` : null, pid: proc.pid, cpuSeconds: () => treeCpuSeconds(proc.pid), stop: () => proc.stop() };
}

async function canConnect(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
