/**
 * What the unreported-ids file costs (issue 21 row 11: ids admitted and not yet reported survive a
 * kill -9 in a small file in the workspace; the goal is ≤ 5 % of throughput). Two in-process
 * workers, both reporting to a loopback engine that acknowledges everything, one with the file
 * (the default) and one with UNREPORTED_FILE=off; rounds alternate off/on to spread drift. The
 * same load loop as reporting-cost.ts: requests/s and this process's CPU µs per request.
 *
 *   npm run build && node build/benchmarks/unreported-cost.js [--seconds 4] [--rounds 3] [--concurrency 32]
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { z } from 'zod';
import { createLogger } from '#nodeworker/common/log.js';
import { sleep } from '#nodeworker/common/util.js';
import { defineWorker } from '#nodeworker/worker/config.js';
import { parseWorkerEnv } from '#nodeworker/worker/env.js';
import { UNREPORTED_FILE } from '#nodeworker/worker/unreported.js';
import { startWorker, type RunningWorker } from '#nodeworker/worker/worker.js';
import { benchArgs } from './lib/args.js';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function modelStub(): Server {
  const body = '{"id":"x","choices":[{"text":"hello"}]}';
  return createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length }).end(body));
  });
}

function engineStub(): Server {
  return createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
}

async function startBenchWorker(modelUrl: string, engineUrl: string, workspace: string, file: boolean): Promise<RunningWorker> {
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
    REPORT_ADDR: engineUrl,
    MASTER_TOKEN: 'bench',
    ...(file ? {} : { UNREPORTED_FILE: 'off' }),
  });
  const w = await startWorker({ definition, env, logger: createLogger('bench', { level: 'warn', destination: 2 }), timings: { noHealthWaitMs: 0 } });
  const until = Date.now() + 10_000;
  while (w.lifecycle.state !== 'ready') {
    if (Date.now() > until) throw new Error(`worker not ready: ${w.lifecycle.reason}`);
    await sleep(10);
  }
  return w;
}

async function load(url: string, concurrency: number, seconds: number): Promise<{ rps: number; cpuUs: number; errors: number }> {
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
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, one));
  const cpu = process.cpuUsage(cpu0);
  const elapsed = (performance.now() - t0) / 1000;
  await pool.close();
  return { rps: ok / elapsed, cpuUs: (cpu.user + cpu.system) / Math.max(ok, 1), errors };
}

async function main(): Promise<void> {
  const args = benchArgs('unreported-cost', '[--seconds S] [--rounds N] [--concurrency N]', { seconds: 'string', rounds: 'string', concurrency: 'string' });
  const seconds = Number(args.seconds ?? 4);
  const rounds = Number(args.rounds ?? 3);
  const concurrency = Number(args.concurrency ?? 32);
  const model = modelStub();
  const engine = engineStub();
  const modelUrl = await listen(model);
  const engineUrl = await listen(engine);
  const rps: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const cpuUs: Record<'off' | 'on', number[]> = { off: [], on: [] };
  let fileBytes = 0;
  try {
    for (let r = 0; r < rounds; r++) {
      for (const mode of ['off', 'on'] as const) {
        const workspace = mkdtempSync(join(tmpdir(), 'unreported-cost-'));
        writeFileSync(join(workspace, '.has_benchmark'), '1000');
        const w = await startBenchWorker(modelUrl, engineUrl, workspace, mode === 'on');
        try {
          await load(w.url, concurrency, 1); // warm-up
          const m = await load(w.url, concurrency, seconds);
          if (mode === 'on') fileBytes = Math.max(fileBytes, statSync(join(workspace, UNREPORTED_FILE)).size);
          rps[mode].push(m.rps);
          cpuUs[mode].push(m.cpuUs);
          process.stderr.write(
            `round ${r + 1} ${mode.padEnd(3)}: ${m.rps.toFixed(0)} req/s, ${m.cpuUs.toFixed(0)} µs CPU/request${m.errors ? ` (${m.errors} errors)` : ''}\n`,
          );
        } finally {
          await w.close();
          rmSync(workspace, { recursive: true, force: true });
        }
      }
    }
  } finally {
    model.closeAllConnections();
    engine.closeAllConnections();
    model.close();
    engine.close();
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;
  const summary = {
    concurrency,
    seconds,
    rounds,
    offRps: Math.round(median(rps.off)),
    onRps: Math.round(median(rps.on)),
    rpsCostPercent: +(((median(rps.off) - median(rps.on)) / median(rps.off)) * 100).toFixed(1),
    offCpuUsPerRequest: +median(cpuUs.off).toFixed(1),
    onCpuUsPerRequest: +median(cpuUs.on).toFixed(1),
    cpuCostPercent: +(((median(cpuUs.on) - median(cpuUs.off)) / median(cpuUs.off)) * 100).toFixed(1),
    fileBytesAtEnd: fileBytes,
  };
  process.stdout.write(
    [
      `unreported-ids file, concurrency ${concurrency}, ${seconds} s × ${rounds} rounds each (medians):`,
      `  off: ${summary.offRps} req/s, ${summary.offCpuUsPerRequest} µs CPU/request`,
      `  on:  ${summary.onRps} req/s, ${summary.onCpuUsPerRequest} µs CPU/request (file at the end of a round: ${fileBytes} bytes)`,
      `  cost: ${summary.rpsCostPercent} % req/s, ${summary.cpuCostPercent} % CPU/request`,
      JSON.stringify(summary),
      '',
    ].join('\n'),
  );
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err.message}\n`);
  process.exit(1);
});
