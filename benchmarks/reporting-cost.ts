/**
 * What reporting and metrics cost on the hot path: requests/s through an in-process worker with
 * the reporter, sessions, management and /metrics on (scraped every second, reports to a loopback
 * engine) against the same worker with all of them off (no REPORT_ADDR, no extensions).
 *
 * First, the hooks alone: CPU ns per request of the ledger's bookkeeping with and without the
 * metrics hooks (ledger.onEnd listener, first-byte and duration observations), no I/O.
 * Then end to end. Everything runs in this one process (model stub, engine stub, worker, undici load loop at a fixed
 * concurrency), so the absolute numbers are modest; the comparison is what matters. Rounds alternate
 * off/on to spread drift over both.
 *
 *   npm run build && node build/benchmarks/reporting-cost.js [--seconds 4] [--rounds 2] [--concurrency 32]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { z } from 'zod';
import { createLogger } from '#nodeworker/common/log.js';
import { sleep } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { defineWorker } from '#nodeworker/worker/config.js';
import { parseWorkerEnv } from '#nodeworker/worker/env.js';
import { defaultExtensions } from '#nodeworker/worker/extensions.js';
import { FifoGate } from '#nodeworker/worker/admission.js';
import { Ledger } from '#nodeworker/worker/ledger.js';
import { Lifecycle } from '#nodeworker/worker/lifecycle.js';
import { WorkerMetrics } from '#nodeworker/worker/metrics.js';
import { startWorker, type RunningWorker } from '#nodeworker/worker/worker.js';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A model that answers every POST at once with a small JSON body. */
function modelStub(): Server {
  const body = '{"id":"x","choices":[{"text":"hello"}]}';
  return createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length }).end(body));
  });
}

/** An engine that acknowledges every report and counts them. */
function engineStub(counts: { status: number; deletes: number; ids: number }): Server {
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/worker_status/') counts.status++;
      if (req.url === '/delete_requests/') {
        counts.deletes++;
        counts.ids += (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { request_idxs: number[] }).request_idxs.length;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
}

async function startBenchWorker(modelUrl: string, on: boolean, engineUrl: string, workspace: string): Promise<RunningWorker> {
  const definition = defineWorker({
    modelServerUrl: modelUrl,
    handlers: [
      {
        route: '/v1/completions',
        payload: z.looseObject({ prompt: z.string() }),
        workload: () => 100,
        maxQueueTime: null,
        benchmark: { dataset: [{ prompt: 'x' }] },
      },
    ],
  });
  const env = parseWorkerEnv({
    WORKER_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    CONTAINER_ID: '1',
    UNSECURED: 'true',
    WORKSPACE_DIR: workspace,
    ...(on ? { REPORT_ADDR: engineUrl, MASTER_TOKEN: 'bench' } : {}),
  });
  const w = await startWorker({
    definition,
    env,
    logger: createLogger('bench', { level: 'warn', destination: 2 }),
    timings: { noHealthWaitMs: 0 },
    extensions: on ? defaultExtensions() : [],
  });
  const until = Date.now() + 10_000;
  while (w.lifecycle.state !== 'ready') {
    if (Date.now() > until) throw new Error(`worker not ready: ${w.lifecycle.reason}`);
    await sleep(10);
  }
  return w;
}

/**
 * Fire requests at `concurrency` for `seconds`; returns completed 200s per second and this
 * process's CPU µs per request (load loop, worker and model together: the same in both modes
 * except for what is being measured, and less sensitive than req/s to other load on the machine).
 */
async function load(url: string, concurrency: number, seconds: number, scrapeMetrics: boolean): Promise<{ rps: number; cpuUs: number; errors: number }> {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1 });
  let ok = 0;
  let errors = 0;
  let idx = 1;
  const end = performance.now() + seconds * 1000;
  const one = async () => {
    while (performance.now() < end) {
      const i = idx++;
      const body = JSON.stringify({
        auth_data: { cost: 100, endpoint: 'bench', reqnum: i, request_idx: i, signature: 'x', url: 'http://127.0.0.1' },
        payload: { prompt: 'Say hello.' },
      });
      try {
        const r = await pool.request({ path: '/v1/completions', method: 'POST', headers: { 'content-type': 'application/json' }, body });
        await r.body.dump();
        if (r.statusCode === 200) ok++;
        else errors++;
      } catch {
        errors++;
      }
    }
  };
  const scraper = scrapeMetrics
    ? (async () => {
        while (performance.now() < end) {
          await sleep(1000);
          const r = await pool.request({ path: '/metrics', method: 'GET' }).catch(() => null);
          await r?.body.dump();
        }
      })()
    : Promise.resolve();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all([...Array.from({ length: concurrency }, one), scraper]);
  const cpu = process.cpuUsage(cpu0);
  const elapsed = (performance.now() - t0) / 1000;
  await pool.close();
  return { rps: ok / elapsed, cpuUs: (cpu.user + cpu.system) / Math.max(ok, 1), errors };
}

/** CPU ns per request of ledger create/start/end, with or without the metrics hooks. */
function hooksCost(n: number): { ledgerNs: number; withMetricsNs: number } {
  const run = (withMetrics: boolean): number => {
    const ledger = new Ledger();
    const m = withMetrics ? new WorkerMetrics({ ledger, lifecycle: new Lifecycle(), gate: new FifoGate() }, { defaultMetrics: false }) : null;
    if (m) ledger.onEnd(m.onLedgerEnd);
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const e = ledger.create({ requestIdx: i, reqnum: i, workload: 10, route: '/v1/completions' });
      ledger.start(e);
      m?.observer.onFirstByte?.(e, 3.2);
      ledger.end(e, 'success');
      m?.observer.onFinished?.(e, 200, 5.1);
    }
    const c = process.cpuUsage(t0);
    return ((c.user + c.system) * 1000) / n;
  };
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < 3; r++) {
    a.push(run(false));
    b.push(run(true));
  }
  return { ledgerNs: Math.min(...a), withMetricsNs: Math.min(...b) };
}

async function main(): Promise<void> {
  const args = benchArgs('reporting-cost', '[--seconds S] [--rounds N] [--concurrency N]', { seconds: 'string', rounds: 'string', concurrency: 'string' });
  const seconds = Number(args.seconds ?? 4);
  const rounds = Number(args.rounds ?? 2);
  const concurrency = Number(args.concurrency ?? 32);
  const hooks = hooksCost(500_000);
  process.stderr.write(`hooks: ledger ${hooks.ledgerNs.toFixed(0)} ns/request, ledger + metrics hooks ${hooks.withMetricsNs.toFixed(0)} ns/request\n`);
  const workspace = mkdtempSync(join(tmpdir(), 'reporting-cost-'));
  writeFileSync(join(workspace, '.has_benchmark'), '1000');
  const model = modelStub();
  const counts = { status: 0, deletes: 0, ids: 0 };
  const engine = engineStub(counts);
  const modelUrl = await listen(model);
  const engineUrl = await listen(engine);
  const results: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const cpuUs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      for (const mode of ['off', 'on'] as const) {
        const w = await startBenchWorker(modelUrl, mode === 'on', engineUrl, workspace);
        await load(w.url, concurrency, 1, false); // warm-up
        const { rps, cpuUs: us, errors } = await load(w.url, concurrency, seconds, mode === 'on');
        if (mode === 'on') await w.reporter.flush(5000);
        await w.close();
        results[mode].push(rps);
        cpuUs[mode].push(us);
        process.stderr.write(
          `round ${r + 1} ${mode.padEnd(3)}: ${rps.toFixed(0)} req/s, ${us.toFixed(0)} µs CPU/request${errors ? ` (${errors} errors)` : ''}\n`,
        );
      }
    }
  } finally {
    model.close();
    engine.close();
    model.closeAllConnections();
    engine.closeAllConnections();
    rmSync(workspace, { recursive: true, force: true });
  }
  // Medians: one disturbed round (other processes on the machine) must not move the figure.
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;
  const off = median(results.off);
  const on = median(results.on);
  const cpuOff = median(cpuUs.off);
  const cpuOn = median(cpuUs.on);
  const summary = {
    concurrency,
    seconds,
    rounds,
    hooksLedgerNs: Math.round(hooks.ledgerNs),
    hooksWithMetricsNs: Math.round(hooks.withMetricsNs),
    offRps: Math.round(off),
    onRps: Math.round(on),
    rpsCostPercent: +(((off - on) / off) * 100).toFixed(1),
    offCpuUsPerRequest: +cpuOff.toFixed(1),
    onCpuUsPerRequest: +cpuOn.toFixed(1),
    cpuCostPercent: +(((cpuOn - cpuOff) / cpuOff) * 100).toFixed(1),
    reports: counts,
  };
  process.stdout.write(
    [
      `metrics hooks on the hot path: ${summary.hooksWithMetricsNs - summary.hooksLedgerNs} ns CPU/request (ledger alone ${summary.hooksLedgerNs} ns)`,
      `through the worker, concurrency ${concurrency}, ${seconds} s × ${rounds} rounds each (medians):`,
      `  reporter + metrics + sessions + management off: ${summary.offRps} req/s, ${summary.offCpuUsPerRequest} µs CPU/request`,
      `  reporter + metrics + sessions + management on:  ${summary.onRps} req/s, ${summary.onCpuUsPerRequest} µs CPU/request (/metrics scraped every 1 s)`,
      `  cost: ${summary.rpsCostPercent} % req/s, ${summary.cpuCostPercent} % CPU/request   (engine got ${counts.status} worker_status, ${counts.deletes} delete_requests carrying ${counts.ids} ids)`,
      JSON.stringify(summary),
      '',
    ].join('\n'),
  );
}

main().catch((err: Error) => {
  process.stderr.write(`reporting-cost: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
