/**
 * Soak (issue 8.5): a secured worker process in front of model-sim under a steady open-loop load at
 * a fraction of the model's capacity (default 80 %), with random client aborts, for a long time
 * (default 20 minutes). It measures what only time shows:
 *
 * - the worker's resident memory: after warm-up, at the end, and the fitted growth in MB/hour;
 * - latency drift: p50/p99 per minute, first quarter (after warm-up) against the last quarter;
 * - lost requests: every request the worker admitted must be reported to /delete_requests/ exactly
 *   once with the right flag, and the worker's totals and reports must add up (benchmarks/lib/invariants.ts).
 *   The lost count must be 0.
 *
 * Capacity: model-sim generates `--capacity` tokens/s over all requests together; each request asks
 * for `--max-tokens`, so the model completes at most capacity / max-tokens requests a second.
 * Arrivals are Poisson at `--load` × that rate; `--abort-rate` of the requests are abandoned by their
 * client at a random moment. Half the requests stream. The worker runs the real CLI
 * (`node dist/cli.js worker --handler openai`) with its production timings and its own benchmark.
 *
 * Run: `npm run build && node build/benchmarks/soak.js --minutes 20 [--load 0.8] [--abort-rate 0.05]
 *       [--capacity 4000] [--max-tokens 40] [--warmup-minutes 1] [--out soak.json]`
 */
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Agent, request } from 'undici';
import { generateRsaKeyPair, signUrl } from '#nodeworker/common/signature.js';
import { percentile, sleep } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import {
  checkDeliveries,
  checkReports,
  checkWorkload,
  totalsFromMetrics,
  type ClientOutcome,
  type ClientRecord,
  type Delivery,
  type StatusReport,
} from './lib/invariants.js';
import { startProcess, type BenchProcess } from './lib/procs.js';
import { CLI_PATH, startModelSim, waitLogUrl, waitReady } from './lib/stack.js';

export interface SoakOptions {
  minutes: number;
  /** Fraction of the model's capacity offered (0.8). */
  load: number;
  /** Fraction of requests whose client leaves early (0.05). */
  abortRate: number;
  /** model-sim capacity, tokens/s over all requests (4000). */
  capacity: number;
  /** Tokens each request generates (40). */
  maxTokens: number;
  /** Tokens/s of one request alone (200). */
  tokenRate: number;
  /** Minutes excluded from the drift and growth baselines (1). */
  warmupMinutes: number;
  log: (line: string) => void;
}

export interface MinuteRow {
  minute: number;
  sent: number;
  completed: number;
  aborted: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
  workerRssMb: number;
}

export interface SoakResult {
  options: Omit<SoakOptions, 'log'>;
  offeredRps: number;
  workerPerf: number;
  requests: Record<ClientOutcome, number> & { total: number };
  minutes: MinuteRow[];
  /** growthMbPerHour: fitted over the run after warm-up; secondHalf…: over its second half, once the heap has settled. */
  memory: { afterWarmupMb: number; endMb: number; peakMb: number; growthMbPerHour: number; secondHalfGrowthMbPerHour: number };
  latency: { firstQuarterP99Ms: number; lastQuarterP99Ms: number; p99DriftPct: number; overallP50Ms: number; overallP99Ms: number };
  /** Problems found by the accounting invariants (must be empty). */
  problems: string[];
  /** Admitted requests not delivered exactly once with the right flag (must be 0). */
  lost: number;
}

// ---------------------------------------------------------------------------------------------
// A recording engine: public key, acknowledged reports and deletes.

interface SoakEngine {
  url: string;
  sign(url: string): string;
  statuses: StatusReport[];
  delivered: Delivery[];
  close(): Promise<void>;
}

async function startSoakEngine(): Promise<SoakEngine> {
  const keys = generateRsaKeyPair(2048);
  const statuses: StatusReport[] = [];
  const delivered: Delivery[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/pubkey/') return void res.writeHead(200, { 'content-type': 'text/plain' }).end(keys.publicKeyPem);
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return void res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"invalid JSON"}');
      }
      if (req.url === '/worker_status/') statuses.push(body as unknown as StatusReport);
      else if (req.url === '/delete_requests/') for (const idx of body.request_idxs as number[]) delivered.push({ idx, success: body.success === true });
      else return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no route","field":"path"}');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sign: (url) => signUrl(keys.privateKeyPem, url),
    statuses,
    delivered,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** Resident memory of a process in MB, from /proc (NaN off Linux). */
function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

const median = (v: number[]) => percentile(v, 50);

interface Sent extends ClientRecord {
  at: number;
  ms: number;
}

/** Run the soak; resolves with the figures (also printed by the CLI). */
export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const dir = mkdtempSync(join(tmpdir(), 'soak-'));
  const procs: BenchProcess[] = [];
  const engine = await startSoakEngine();
  const agent = new Agent({ connections: 512, keepAliveTimeout: 10_000 });
  try {
    const sim = await startModelSim({ dir, tokenRate: o.tokenRate, capacity: o.capacity, ttftMs: 20 });
    procs.push(sim);
    const logFile = join(dir, 'worker.log');
    const worker = await startProcess(process.execPath, [CLI_PATH, 'worker', '--handler', 'openai', '--model-url', sim.ready], {
      env: {
        ...process.env,
        WORKER_PORT: '0',
        WORKER_HTTP_PORT: '0',
        WORKER_HOST: '127.0.0.1',
        CONTAINER_ID: '4242',
        MASTER_TOKEN: 'soak-token',
        REPORT_ADDR: engine.url,
        UNSECURED: '',
        WORKSPACE_DIR: dir,
        MODEL_LOG: '',
        LOG_LEVEL: 'info',
        LOG_FILE: logFile,
        BENCHMARK_MAX_TOKENS: String(o.maxTokens),
        BENCHMARK_CONCURRENCY: '64',
      },
    });
    procs.push(worker);
    const url = await waitLogUrl(logFile, 20_000);
    await waitReady(url, 120_000);
    const health = (await (await fetch(`${url}/healthz`)).json()) as { perf: number };
    const signature = engine.sign(url);

    const prompt = 'soak test prompt about the weather at sea';
    const workload = Math.ceil(prompt.length / 4) + o.maxTokens;
    const offeredRps = (o.load * o.capacity) / o.maxTokens;
    // Time to answer alone (ttft + tokens at the per-request rate): aborts fall anywhere up to 1.5× it.
    const typicalMs = 20 + (1000 * o.maxTokens) / o.tokenRate;
    o.log(
      `soak: ${o.minutes} min at ${(o.load * 100).toFixed(0)} % of ${o.capacity} tokens/s = ${offeredRps.toFixed(1)} req/s, ${(o.abortRate * 100).toFixed(0)} % aborts; worker perf ${health.perf.toFixed(0)} load/s`,
    );

    const records: Sent[] = [];
    const t0 = performance.now();
    const endAt = t0 + o.minutes * 60_000;
    let next = 1;
    let inFlight = 0;
    const inFlightDone: Array<() => void> = [];

    const one = async (idx: number): Promise<void> => {
      const stream = Math.random() < 0.5;
      const abortAfter = Math.random() < o.abortRate ? Math.random() * typicalMs * 1.5 : null;
      const at = performance.now();
      const ac = new AbortController();
      let aborted = false;
      const timer =
        abortAfter === null
          ? null
          : setTimeout(() => {
              aborted = true;
              ac.abort();
            }, abortAfter);
      const auth = { cost: workload, endpoint: 'soak', reqnum: idx, request_idx: idx, signature, url };
      let outcome: ClientOutcome;
      try {
        const res = await request(`${url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ auth_data: auth, payload: { prompt, max_tokens: o.maxTokens, stream } }),
          dispatcher: agent,
          signal: ac.signal,
        });
        const text = await res.body.text();
        const s = res.statusCode;
        if (s === 401 || s === 429) outcome = 'rejected';
        else if (s >= 500) outcome = 'error';
        else if (s >= 400) outcome = 'refused';
        else outcome = !stream || text.includes('data: [DONE]') ? 'success' : 'error';
      } catch {
        outcome = aborted ? 'aborted' : 'error';
      } finally {
        if (timer) clearTimeout(timer);
      }
      records.push({ requestIdx: idx, workload, outcome, at: at - t0, ms: performance.now() - at });
    };

    // Open loop: Poisson arrivals, whatever the answers do.
    const minutes: MinuteRow[] = [];
    let minuteStart = 0;
    const closeMinute = (): void => {
      const rows = records.slice(minuteStart);
      minuteStart = records.length;
      const done = rows.filter((r) => r.outcome === 'success').map((r) => r.ms);
      const row: MinuteRow = {
        minute: minutes.length + 1,
        sent: rows.length,
        completed: done.length,
        aborted: rows.filter((r) => r.outcome === 'aborted').length,
        failed: rows.filter((r) => r.outcome === 'error' || r.outcome === 'rejected' || r.outcome === 'refused').length,
        p50Ms: percentile(done, 50),
        p99Ms: percentile(done, 99),
        workerRssMb: rssMb(worker.pid),
      };
      minutes.push(row);
      o.log(
        `  minute ${String(row.minute).padStart(3)}: ${row.sent} answered (${row.aborted} aborted, ${row.failed} failed), p50 ${row.p50Ms.toFixed(0)} ms, p99 ${row.p99Ms.toFixed(0)} ms, worker RSS ${row.workerRssMb.toFixed(1)} MB, in flight ${inFlight}`,
      );
    };
    let nextArrival = t0;
    const rssPoints: Array<[number, number]> = [];
    let lastSample = t0;
    while (performance.now() < endAt) {
      const now = performance.now();
      while (nextArrival <= now) {
        const idx = next++;
        inFlight++;
        void one(idx).finally(() => {
          inFlight--;
          if (inFlight === 0) for (const d of inFlightDone.splice(0)) d();
        });
        nextArrival += -Math.log(1 - Math.random()) * (1000 / offeredRps);
      }
      if (now - lastSample >= 10_000) {
        lastSample = now;
        rssPoints.push([(now - t0) / 3_600_000, rssMb(worker.pid)]);
      }
      if (Math.floor((now - t0) / 60_000) > minutes.length) closeMinute();
      await sleep(Math.max(1, Math.min(20, nextArrival - performance.now())));
    }
    if (inFlight > 0) await new Promise<void>((r) => inFlightDone.push(r));
    if (records.length > minuteStart) closeMinute();
    rssPoints.push([(performance.now() - t0) / 3_600_000, rssMb(worker.pid)]);
    const total = next - 1;

    // Let the worker report everything (1 s cadence), then check the books.
    let problems: string[] = ['not checked'];
    const check = async () => {
      const totals = totalsFromMetrics(await (await fetch(`${url}/metrics`)).text());
      problems = [...checkDeliveries(records, engine.delivered), ...checkWorkload(records, engine.delivered, totals), ...checkReports(engine.statuses, totals)];
      return problems.length === 0;
    };
    for (let i = 0; i < 60 && !(await check()); i++) await sleep(500);

    // Lost: a request the worker took (answered, failed or refused by its ledger) that the engine
    // did not hear about exactly once. (Wrong flags and other slips are in `problems`.)
    const perRequest = new Map<number, number>();
    for (const d of engine.delivered) perRequest.set(d.idx, (perRequest.get(d.idx) ?? 0) + 1);
    let lost = 0;
    for (const r of records) {
      const n = perRequest.get(r.requestIdx) ?? 0;
      const admitted = r.outcome === 'success' || r.outcome === 'error' || r.outcome === 'rejected';
      if ((admitted && n !== 1) || n > 1) lost++;
    }

    const after = minutes.filter((m) => m.minute > o.warmupMinutes);
    const quarter = Math.max(1, Math.floor(after.length / 4));
    const firstP99 = median(after.slice(0, quarter).map((m) => m.p99Ms));
    const lastP99 = median(after.slice(-quarter).map((m) => m.p99Ms));
    const warm = rssPoints.filter(([h]) => h * 60 > o.warmupMinutes);
    const done = records.filter((r) => r.outcome === 'success').map((r) => r.ms);
    const count = (k: ClientOutcome) => records.filter((r) => r.outcome === k).length;
    const result: SoakResult = {
      options: {
        minutes: o.minutes,
        load: o.load,
        abortRate: o.abortRate,
        capacity: o.capacity,
        maxTokens: o.maxTokens,
        tokenRate: o.tokenRate,
        warmupMinutes: o.warmupMinutes,
      },
      offeredRps,
      workerPerf: health.perf,
      requests: { total, success: count('success'), error: count('error'), aborted: count('aborted'), rejected: count('rejected'), refused: count('refused') },
      minutes,
      memory: {
        afterWarmupMb: warm[0]?.[1] ?? Number.NaN,
        endMb: rssPoints.at(-1)?.[1] ?? Number.NaN,
        peakMb: Math.max(...rssPoints.map(([, v]) => v)),
        growthMbPerHour: slope(warm),
        secondHalfGrowthMbPerHour: slope(rssPoints.filter(([h]) => h * 60 >= o.minutes / 2)),
      },
      latency: {
        firstQuarterP99Ms: firstP99,
        lastQuarterP99Ms: lastP99,
        p99DriftPct: ((lastP99 - firstP99) / firstP99) * 100,
        overallP50Ms: percentile(done, 50),
        overallP99Ms: percentile(done, 99),
      },
      problems,
      lost,
    };
    await worker.stop(30_000);
    return result;
  } finally {
    for (const p of procs.reverse()) await p.stop().catch(() => undefined);
    await agent.close();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A short human summary of a result. */
export function formatSoak(r: SoakResult): string {
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
  return [
    `soak: ${r.options.minutes} min, ${f(r.offeredRps)} req/s offered (${f(r.options.load * 100, 0)} % of capacity), worker perf ${f(r.workerPerf, 0)} load/s`,
    `  requests: ${r.requests.total} (success ${r.requests.success}, aborted ${r.requests.aborted}, error ${r.requests.error}, rejected ${r.requests.rejected}, refused ${r.requests.refused})`,
    `  worker RSS: ${f(r.memory.afterWarmupMb)} MB after warm-up, ${f(r.memory.endMb)} MB at the end, peak ${f(r.memory.peakMb)} MB, fitted growth ${f(r.memory.growthMbPerHour, 2)} MB/hour (second half: ${f(r.memory.secondHalfGrowthMbPerHour, 2)} MB/hour)`,
    `  latency (completed): p50 ${f(r.latency.overallP50Ms, 0)} ms, p99 ${f(r.latency.overallP99Ms, 0)} ms; p99 first quarter ${f(r.latency.firstQuarterP99Ms, 0)} ms → last quarter ${f(r.latency.lastQuarterP99Ms, 0)} ms (drift ${f(r.latency.p99DriftPct)} %)`,
    `  lost requests: ${r.lost}${r.problems.length ? `; invariant problems:\n    ${r.problems.join('\n    ')}` : ' (accounting invariants hold)'}`,
  ].join('\n');
}

async function main(): Promise<void> {
  const a = benchArgs('soak', '[--minutes N] [--load F] [--abort-rate F] [--capacity N] [--max-tokens N] [--token-rate N] [--warmup-minutes N] [--out FILE]', {
    minutes: 'string',
    load: 'string',
    'abort-rate': 'string',
    capacity: 'string',
    'max-tokens': 'string',
    'token-rate': 'string',
    'warmup-minutes': 'string',
    out: 'string',
  });
  const num = (k: string, d: number) => (typeof a[k] === 'string' ? Number(a[k]) : d);
  const opts: SoakOptions = {
    minutes: num('minutes', 20),
    load: num('load', 0.8),
    abortRate: num('abort-rate', 0.05),
    capacity: num('capacity', 4000),
    maxTokens: num('max-tokens', 40),
    tokenRate: num('token-rate', 200),
    warmupMinutes: num('warmup-minutes', 1),
    log: (line) => process.stderr.write(`${line}\n`),
  };
  for (const [k, v] of Object.entries(opts)) if (typeof v === 'number' && !(v >= 0)) throw new Error(`--${k} must be a non-negative number`);
  const result = await runSoak(opts);
  process.stdout.write(`${formatSoak(result)}\n`);
  if (typeof a.out === 'string') writeFileSync(a.out, JSON.stringify(result, null, 2));
  process.exitCode = result.lost === 0 && result.problems.length === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: Error) => {
    process.stderr.write(`soak failed: ${err.stack ?? err.message}\n`);
    process.exitCode = 2;
  });
}
