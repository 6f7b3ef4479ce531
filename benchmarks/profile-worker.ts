/**
 * Where the worker's CPU goes on the request path: the worker CLI runs under `node --cpu-prof`
 * while wrk (or the undici generator) loads it with small JSON requests; the profile is summarized
 * as self time by area (node:http, undici, the worker's own code, native/syscalls, GC) and by
 * function, in µs per request (the tables in docs/performance.md).
 *
 * Run: `npm run build && node build/benchmarks/profile-worker.js [--concurrency 64] [--duration 8] [--top 20] [--keep DIR]`
 * (`--target stock` profiles the worker with node:http + undici on the request path, as before the
 * fast lane and the model client; `--target bare` the bare Node proxy. `--tls` serves the worker
 * over HTTPS (USE_SSL, a self-signed RSA-2048 certificate made here), `--close` sends
 * `connection: close` (a new connection, a full handshake over TLS, per request), `--cli PATH`
 * profiles another build's dist/cli.js.)
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.js';
import { formatProfileSummary, summarizeProfileFile, type ProfileSummary } from './lib/cpuprofile.js';
import { runLoad, type LoadResult } from './lib/loadgen.js';
import { startProcess, type BenchProcess } from './lib/procs.js';
import { bodyFor } from './proxy-bench.js';
import { LIB_DIR, startCliWorker, startModelSim, startPartsWorker } from './lib/stack.js';

export type ProfileTarget = 'worker' | 'stock' | 'bare';

export interface ProfileRun {
  target: ProfileTarget;
  load: LoadResult;
  summary: ProfileSummary;
  /** Requests served while profiling (warm-up included: the profile covers it). */
  requests: number;
}

export async function profileWorker(
  opts: { concurrency?: number; durationS?: number; top?: number; target?: ProfileTarget; keepDir?: string; tls?: boolean; close?: boolean; cli?: string } = {},
): Promise<ProfileRun> {
  const dir = mkdtempSync(join(tmpdir(), 'profile-worker-'));
  const profDir = opts.keepDir ?? join(dir, 'prof');
  mkdirSync(profDir, { recursive: true });
  const target = opts.target ?? 'worker';
  const procs: BenchProcess[] = [];
  try {
    const sim = await startModelSim({ dir });
    procs.push(sim);
    const nodeArgs = ['--cpu-prof', `--cpu-prof-dir=${profDir}`];
    let tls: { env: Record<string, string>; ca: Buffer } | undefined;
    if (opts.tls) {
      const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '1',
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
        ],
        {
          stdio: 'ignore',
        },
      );
      tls = { env: { USE_SSL: 'true', SSL_CERT_PATH: cert, SSL_KEY_PATH: key }, ca: readFileSync(cert) };
    }
    const proxy =
      target === 'worker'
        ? await startCliWorker({ dir, modelUrl: sim.ready, nodeArgs, env: tls?.env, ca: tls?.ca, cli: opts.cli })
        : target === 'stock'
          ? await startPartsWorker({ dir, modelUrl: sim.ready, extensions: true, engineUrl: null, fastLane: false, modelClient: false, nodeArgs })
          : await startProcess(process.execPath, [...nodeArgs, join(LIB_DIR, 'bare-proxy.js'), sim.ready], {
              readyLine: /bare-proxy listening on (http:\/\/[\d.:]+)\s/,
            });
    procs.push(proxy);
    const spec = {
      url: `${proxy.ready}/v1/completions`,
      body: bodyFor(target === 'bare' ? 'bare' : 'worker', { model: 'bench', prompt: 'Say hello.', max_tokens: 1 }),
      concurrency: opts.concurrency ?? 64,
      close: opts.close,
    };
    const warm = await runLoad({ ...spec, durationS: 2 });
    const load = await runLoad({ ...spec, durationS: opts.durationS ?? 8 });
    await proxy.stop(10_000); // the profile is written at exit
    const file = readdirSync(profDir)
      .filter((f) => f.endsWith('.cpuprofile'))
      .sort()
      .pop();
    if (!file) throw new Error(`no .cpuprofile in ${profDir}`);
    return { target, load, summary: summarizeProfileFile(join(profDir, file), opts.top ?? 20), requests: warm.requests + load.requests };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs(
    'profile-worker',
    '[--concurrency N] [--duration S] [--top N] [--target worker|bare|stock] [--keep DIR] [--tls] [--close] [--cli PATH]',
    {
      tls: 'boolean',
      close: 'boolean',
      cli: 'string',
      concurrency: 'string',
      duration: 'string',
      top: 'string',
      target: 'string',
      keep: 'string',
    },
  );
  const num = (k: string) => (typeof args[k] === 'string' ? Number(args[k]) : undefined);
  profileWorker({
    concurrency: num('concurrency'),
    durationS: num('duration'),
    top: num('top'),
    target: args.target === 'bare' || args.target === 'stock' ? args.target : 'worker',
    keepDir: typeof args.keep === 'string' ? args.keep : undefined,
    tls: args.tls === true,
    close: args.close === true,
    cli: typeof args.cli === 'string' ? args.cli : undefined,
  }).then(
    (r) => {
      process.stdout.write(
        `${r.target}: ${r.load.rps.toFixed(0)} req/s at c=${args.concurrency ?? 64} under the profiler; ${r.requests} requests profiled\n\n`,
      );
      process.stdout.write(formatProfileSummary(r.summary, r.requests) + '\n');
    },
    (err: Error) => {
      process.stderr.write(`profile-worker failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
