/**
 * What the unreported-ids file costs (issue 21 row 11: ids admitted and not yet reported survive a
 * kill -9 in a small file in the workspace; the goal is ≤ 5 % of throughput).
 *
 * 1. The bookkeeping alone, in this process: CPU ns per request of the ledger with and without the
 *    file attached (two records a request, one write per `--concurrency` requests, as one
 *    event-loop turn at that concurrency does, and one write per request, the worst case).
 * 2. End to end: two worker processes in front of one model-sim, both reporting to a loopback
 *    engine that acknowledges everything, one with the file (the default) and one with
 *    UNREPORTED_FILE=off, loaded in turns (order alternating) with wrk (or undici): requests/s and
 *    the worker process's CPU µs per request, medians over rounds.
 *
 *   npm run build && node build/benchmarks/unreported-cost.js [--duration 3] [--rounds 4] [--concurrency 32]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger } from '#nodeworker/worker/ledger.js';
import { UNREPORTED_FILE, UnreportedFile } from '#nodeworker/worker/unreported.js';
import { benchArgs } from './lib/args.js';
import { startBenchEngine } from './lib/engine-stub.js';
import { hasWrk, runLoad } from './lib/loadgen.js';
import { cpuSeconds, type BenchProcess } from './lib/procs.js';
import { startModelSim, startPartsWorker } from './lib/stack.js';

/** CPU ns per request of ledger create/start/end, with or without the file (a write every `perTurn` requests). */
function bookkeepingCost(n: number, perTurn: number): { offNs: number; onNs: number } {
  const run = (withFile: boolean): number => {
    const dir = mkdtempSync(join(tmpdir(), 'unreported-hooks-'));
    const ledger = new Ledger();
    const file = withFile
      ? new UnreportedFile(join(dir, UNREPORTED_FILE), {
          *working() {
            for (const e of ledger.workingEntries()) yield e.requestIdx;
          },
          succeeded: () => ledger.deleteSucceeded.peek(Number.POSITIVE_INFINITY),
          failed: () => ledger.deleteFailed.peek(Number.POSITIVE_INFINITY),
        })
      : null;
    ledger.journal = file;
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const e = ledger.create({ requestIdx: 1_000_000 + i, reqnum: i, workload: 10, route: '/v1/completions' });
      ledger.start(e);
      if (perTurn === 1) file?.flush(); // admitted and ended in different turns
      ledger.end(e, 'success');
      if (i % perTurn === perTurn - 1) {
        file?.flush();
        // What the reporter's acknowledgements do: a post per 1000 ids.
        if (ledger.deleteSucceeded.size >= 1000) {
          const { ids, mark } = ledger.peekDeletes(true, 1000);
          ledger.acknowledged(ids, true, mark);
        }
      }
    }
    const c = process.cpuUsage(t0);
    file?.close();
    rmSync(dir, { recursive: true, force: true });
    return ((c.user + c.system) * 1000) / n;
  };
  const off: number[] = [];
  const on: number[] = [];
  for (let r = 0; r < 3; r++) {
    off.push(run(false));
    on.push(run(true));
  }
  return { offNs: Math.min(...off), onNs: Math.min(...on) };
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;

async function main(): Promise<void> {
  const args = benchArgs('unreported-cost', '[--duration S] [--rounds N] [--concurrency N]', { duration: 'string', rounds: 'string', concurrency: 'string' });
  const durationS = Number(args.duration ?? 3);
  const rounds = Number(args.rounds ?? 6);
  const concurrency = Number(args.concurrency ?? 32);
  const batched = bookkeepingCost(200_000, concurrency);
  const single = bookkeepingCost(100_000, 1);
  process.stderr.write(
    `bookkeeping: ledger ${batched.offNs.toFixed(0)} ns/request; with the file ${batched.onNs.toFixed(0)} ns (a write per ${concurrency} requests), ${single.onNs.toFixed(0)} ns (a write per record)\n`,
  );
  const generator = hasWrk() ? 'wrk' : 'undici';
  const engine = await startBenchEngine();
  const dirs = [mkdtempSync(join(tmpdir(), 'unreported-cost-')), mkdtempSync(join(tmpdir(), 'unreported-cost-'))];
  const procs: BenchProcess[] = [];
  const rps = { off: [] as number[], on: [] as number[] };
  const cpu = { off: [] as number[], on: [] as number[] };
  let fileBytes = 0;
  try {
    const sim = await startModelSim({ dir: dirs[0]! });
    procs.push(sim);
    const off = await startPartsWorker({ dir: dirs[0]!, modelUrl: sim.ready, extensions: true, engineUrl: engine.url, env: { UNREPORTED_FILE: 'off' } });
    procs.push(off);
    const on = await startPartsWorker({ dir: dirs[1]!, modelUrl: sim.ready, extensions: true, engineUrl: engine.url });
    procs.push(on);
    const payload = { model: 'bench', prompt: 'Say hello.', max_tokens: 1 };
    const bodiesFor = (w: BenchProcess) => Array.from({ length: 1000 }, (_, i) => JSON.stringify({ auth_data: engine.authData(w.ready, i + 1), payload }));
    const bodies = { off: bodiesFor(off), on: bodiesFor(on) };
    // Warm both up first (the JIT), so that no measured round is a warm-up.
    for (const w of [off, on]) {
      const b = w === off ? bodies.off : bodies.on;
      await runLoad({ url: `${w.ready}/v1/completions`, body: b[0]!, bodies: b, concurrency, durationS: 2 }, generator);
    }
    for (let r = 0; r < rounds; r++) {
      for (const mode of r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const w = mode === 'off' ? off : on;
        const spec = { url: `${w.ready}/v1/completions`, body: bodies[mode][0]!, bodies: bodies[mode], concurrency, durationS };
        const c0 = cpuSeconds(w.pid);
        const load = await runLoad(spec, generator);
        const served = Math.max(1, load.requests - load.errors);
        const us = ((cpuSeconds(w.pid) - c0) * 1e6) / served;
        rps[mode].push(load.rps);
        cpu[mode].push(us);
        if (mode === 'on') fileBytes = Math.max(fileBytes, statSync(join(dirs[1]!, UNREPORTED_FILE)).size);
        process.stderr.write(
          `round ${r + 1} ${mode.padEnd(3)}: ${load.rps.toFixed(0)} req/s, ${us.toFixed(1)} µs worker CPU/request${load.errors ? ` (${load.errors} errors)` : ''}\n`,
        );
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await engine.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  const summary = {
    generator,
    concurrency,
    durationS,
    rounds,
    offRps: Math.round(median(rps.off)),
    onRps: Math.round(median(rps.on)),
    rpsCostPercent: +(((median(rps.off) - median(rps.on)) / median(rps.off)) * 100).toFixed(1),
    offCpuUsPerRequest: +median(cpu.off).toFixed(1),
    onCpuUsPerRequest: +median(cpu.on).toFixed(1),
    cpuCostPercent: +(((median(cpu.on) - median(cpu.off)) / median(cpu.off)) * 100).toFixed(1),
    fileBytesMax: fileBytes,
    bookkeepingOffNs: Math.round(batched.offNs),
    bookkeepingOnNs: Math.round(batched.onNs),
    bookkeepingOnePerWriteNs: Math.round(single.onNs),
    /** The file's own CPU per request (a write per `concurrency` requests) against the worker's, end to end. */
    fileCpuPercentOfRequest: +(((batched.onNs - batched.offNs) / 1000 / median(cpu.off)) * 100).toFixed(2),
  };
  process.stdout.write(
    [
      `unreported-ids file, ${generator} c=${concurrency}, ${durationS} s × ${rounds} rounds each (medians):`,
      `  off: ${summary.offRps} req/s, ${summary.offCpuUsPerRequest} µs worker CPU/request`,
      `  on:  ${summary.onRps} req/s, ${summary.onCpuUsPerRequest} µs worker CPU/request (file at most ${fileBytes} bytes)`,
      `  cost: ${summary.rpsCostPercent} % req/s, ${summary.cpuCostPercent} % worker CPU/request`,
      `  the file alone: ${summary.bookkeepingOnNs - summary.bookkeepingOffNs} ns CPU/request batched (${summary.fileCpuPercentOfRequest} % of the worker's), ${summary.bookkeepingOnePerWriteNs - summary.bookkeepingOffNs} ns with a write per record`,
      JSON.stringify(summary),
      '',
    ].join('\n'),
  );
}

main().catch((err: Error) => {
  process.stderr.write(`unreported-cost: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
