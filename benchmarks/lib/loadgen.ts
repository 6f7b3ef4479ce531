import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';

/**
 * Closed-loop HTTP load: `concurrency` connections, each sending the next POST as soon as the
 * previous answer is read, for `durationS` seconds. Two generators give the same result shape:
 * `wrk` (C, cheap: preferred so the generator does not starve the servers on a small machine) and
 * an undici generator run in its own process (the fallback).
 */
export interface LoadSpec {
  url: string;
  body: string;
  /** Bodies sent in turn instead of `body` (e.g. one request_idx each); each without newlines. */
  bodies?: string[];
  concurrency: number;
  durationS: number;
  /** Send `connection: close`: a new connection (and, over https, a new TLS handshake) per request (wrk only). */
  close?: boolean;
}

export interface LoadResult {
  generator: 'wrk' | 'undici';
  requests: number;
  /** Answers that were not 2xx, plus connection errors and timeouts. */
  errors: number;
  seconds: number;
  rps: number;
  /** Latency percentiles in milliseconds. */
  p50: number;
  p99: number;
  /** CPU the load generator itself used per request, µs (wrk only: its user + system time). */
  generatorCpuUs?: number;
}

/** True when `wrk` can be run. */
export function hasWrk(): boolean {
  const r = spawnSync('wrk', ['--version'], { stdio: 'ignore' });
  return !r.error;
}

// wrk's done() prints one JSON line; latencies in microseconds.
const WRK_SCRIPT = `
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_CLOSE") then wrk.headers["Connection"] = "close" end
local f = io.open(os.getenv("BENCH_BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
local many = os.getenv("BENCH_BODIES_FILE")
if many then
  local reqs, n = {}, 0
  init = function(args)
    for line in io.lines(many) do
      n = n + 1
      reqs[n] = wrk.format(nil, nil, nil, line)
    end
  end
  local i = 0
  request = function()
    i = i % n + 1
    return reqs[i]
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nWRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

/** Run one load with wrk (one thread: the machine's other core belongs to the servers). */
export function runWrk(spec: LoadSpec): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-bench-wrk-'));
  const script = join(dir, 'post.lua');
  const bodyFile = join(dir, 'body.json');
  const bodiesFile = join(dir, 'bodies.jsonl');
  writeFileSync(script, WRK_SCRIPT);
  writeFileSync(bodyFile, spec.body);
  if (spec.bodies) writeFileSync(bodiesFile, spec.bodies.join('\n') + '\n');
  return new Promise((resolve, reject) => {
    // Through bash, whose `times` then prints wrk's CPU time (children: user, system).
    const wrkArgs = ['-t1', `-c${spec.concurrency}`, `-d${Math.max(1, Math.round(spec.durationS))}s`, '--timeout', '10s', '-s', script, spec.url];
    const child = spawn('bash', ['-c', 'wrk "$@"; code=$?; times; exit $code', 'bash', ...wrkArgs], {
      env: {
        ...process.env,
        BENCH_BODY_FILE: bodyFile,
        ...(spec.bodies ? { BENCH_BODIES_FILE: bodiesFile } : {}),
        ...(spec.close ? { BENCH_CLOSE: '1' } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', (err) => {
      rmSync(dir, { recursive: true, force: true });
      reject(err);
    });
    child.once('exit', () => {
      rmSync(dir, { recursive: true, force: true });
      const m = /WRK_JSON (\{.*\})/.exec(out);
      if (!m) return reject(new Error(`wrk gave no result:\n${out}`));
      const j = JSON.parse(m[1]!) as { requests: number; duration_us: number; errors: number; p50: number; p99: number };
      const seconds = j.duration_us / 1e6;
      // `times`: the shell's line, then the children's "XmY.YYYs XmY.YYYs".
      const t = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(out.trim());
      const cpu = t ? Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]) : Number.NaN;
      resolve({
        generator: 'wrk',
        requests: j.requests,
        errors: j.errors,
        seconds,
        rps: j.requests / seconds,
        p50: j.p50 / 1000,
        p99: j.p99 / 1000,
        generatorCpuUs: (cpu * 1e6) / Math.max(1, j.requests),
      });
    });
  });
}

/** Run one load with the undici generator in a child process (this file's CLI entry). */
export function runUndiciLoad(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`load generator exited ${code}: ${out}`));
      resolve(JSON.parse(out) as LoadResult);
    });
    child.stdin.end(JSON.stringify(spec));
  });
}

/** Run a load with wrk when present, else with the undici generator. */
export function runLoad(spec: LoadSpec, prefer: 'auto' | 'wrk' | 'undici' = 'auto'): Promise<LoadResult> {
  const useWrk = prefer === 'wrk' || (prefer === 'auto' && hasWrk());
  return useWrk ? runWrk(spec) : runUndiciLoad(spec);
}

/** The undici generator itself (runs inside the child process). */
export async function undiciLoad(spec: LoadSpec): Promise<LoadResult> {
  const u = new URL(spec.url);
  const pool = new Pool(u.origin, { connections: spec.concurrency, pipelining: 1, keepAliveTimeout: 30_000 });
  const path = u.pathname + u.search;
  const headers = { 'content-type': 'application/json' };
  const latencies = new Float64Array(2 * 1024 * 1024);
  let n = 0;
  let errors = 0;
  const bodies = spec.bodies ?? [spec.body];
  const t0 = performance.now();
  const until = t0 + spec.durationS * 1000;
  const loop = async () => {
    while (performance.now() < until) {
      const s = performance.now();
      try {
        const r = await pool.request({ path, method: 'POST', headers, body: bodies[n % bodies.length] });
        await r.body.dump();
        if (r.statusCode < 200 || r.statusCode >= 300) errors++;
      } catch {
        errors++;
      }
      if (n < latencies.length) latencies[n] = performance.now() - s;
      n++;
    }
  };
  await Promise.all(Array.from({ length: spec.concurrency }, loop));
  const seconds = (performance.now() - t0) / 1000;
  await pool.close();
  const sorted = latencies.subarray(0, Math.min(n, latencies.length)).sort();
  const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : Number.NaN);
  return { generator: 'undici', requests: n, errors, seconds, rps: n / seconds, p50: pct(50), p99: pct(99) };
}

// CLI entry: read a LoadSpec as JSON on stdin, print a LoadResult as JSON.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  let input = '';
  process.stdin.on('data', (d: Buffer) => (input += d.toString()));
  process.stdin.on('end', () => {
    undiciLoad(JSON.parse(input) as LoadSpec).then(
      (r) => process.stdout.write(JSON.stringify(r)),
      (err: Error) => {
        process.stderr.write(`load generator failed: ${err.message}\n`);
        process.exitCode = 1;
      },
    );
  });
}
