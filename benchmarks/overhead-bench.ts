/**
 * What the worker's optional parts cost on the request path: the same request mix through two
 * worker processes that differ only in them (lib/worker-proc.ts), side by side in one run.
 *
 *   off: UNSECURED, no engine (no reporter), no extensions
 *   on:  signatures checked with a real RSA key from a test engine's /pubkey/ (every request
 *        carries the engine's signature), reports to that engine (/worker_status/ and
 *        /delete_requests/ every second), sessions + management + /metrics + request log, and
 *        /metrics scraped every second during the load
 *
 * Both run at once on one model-sim and take turns under load, in pairs whose order alternates
 * (off→on, on→off, ...), so drift on the machine hits both alike; each pair gives one cost, and
 * the figure is the median of those paired costs (on this shared VM a 3 s load moves ±20% from one
 * run to the next, far more than the parts cost). Bodies differ by request_idx and
 * reqnum (1,000 in turn), as an engine's would; the compatible signature covers only the worker's
 * url, so it is the same for all of them (PROTOCOL §2).
 *
 * Run: `npm run build && node build/benchmarks/overhead-bench.js [--duration 3] [--rounds 6] [--concurrency 64]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '#nodeworker/common/util.js';
import { benchArgs } from './lib/args.js';
import { startBenchEngine } from './lib/engine-stub.js';
import { hasWrk, runLoad } from './lib/loadgen.js';
import { cpuSeconds, type BenchProcess } from './lib/procs.js';
import { startModelSim, startPartsWorker } from './lib/stack.js';

export interface OverheadOptions {
  durationS?: number;
  warmupS?: number;
  rounds?: number;
  concurrency?: number;
  generator?: 'auto' | 'wrk' | 'undici';
  log?: (line: string) => void;
}

export interface OverheadReport {
  concurrency: number;
  rounds: number;
  generator: 'wrk' | 'undici';
  /** Medians over rounds. */
  offRps: number;
  onRps: number;
  offCpuUs: number;
  onCpuUs: number;
  /** Median over rounds of (off − on) / off in each pair: the share of throughput the parts cost. */
  rpsCost: number;
  /** Median over rounds of (on − off) / off CPU per request in each pair. */
  cpuCost: number;
  /** The paired throughput costs of every round (their spread shows the noise). */
  rpsCosts: number[];
  errors: number;
  /** What the engine received during the run. */
  engine: { status: number; deletes: number; ids: number };
  /** /metrics scrapes answered during the "on" loads. */
  scrapes: number;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;
/** The true median (mean of the middle two for an even count): costs can be negative either side. */
function medianOf(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function runOverheadBench(opts: OverheadOptions = {}): Promise<OverheadReport> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const durationS = opts.durationS ?? 3;
  const warmupS = opts.warmupS ?? 1;
  const rounds = opts.rounds ?? 6;
  const concurrency = opts.concurrency ?? 64;
  const generator: 'wrk' | 'undici' = opts.generator === 'undici' || (opts.generator !== 'wrk' && !hasWrk()) ? 'undici' : 'wrk';
  const dir = mkdtempSync(join(tmpdir(), 'overhead-bench-'));
  const engine = await startBenchEngine();
  const procs: BenchProcess[] = [];
  try {
    const sim = await startModelSim({ dir });
    procs.push(sim);
    const off = await startPartsWorker({ dir, modelUrl: sim.ready, extensions: false, engineUrl: null });
    procs.push(off);
    const on = await startPartsWorker({ dir, modelUrl: sim.ready, extensions: true, engineUrl: engine.url });
    procs.push(on);
    log(`overhead-bench: off ${off.ready}, on ${on.ready} (engine ${engine.url}), ${generator} c=${concurrency}`);
    const payload = { model: 'bench', prompt: 'Say hello.', max_tokens: 1 };
    const bodies = Array.from({ length: 1000 }, (_, i) => JSON.stringify({ auth_data: engine.authData(on.ready, i + 1), payload }));
    const result = { off: { rps: [] as number[], cpu: [] as number[] }, on: { rps: [] as number[], cpu: [] as number[] } };
    let errors = 0;
    let scrapes = 0;
    for (let r = 0; r < rounds; r++) {
      for (const mode of r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const w = mode === 'off' ? off : on;
        const spec = { url: `${w.ready}/v1/completions`, body: bodies[0]!, bodies, concurrency, durationS };
        if (warmupS > 0 && r === 0) await runLoad({ ...spec, durationS: warmupS }, generator); // later rounds are warm
        let loading = true;
        const scraper =
          mode === 'on'
            ? (async () => {
                while (loading) {
                  await sleep(1000);
                  if (!loading) break;
                  const ok = await fetch(`${w.ready}/metrics`).then(
                    (x) => x.text().then(() => x.ok),
                    () => false,
                  );
                  if (ok) scrapes++;
                }
              })()
            : Promise.resolve();
        const c0 = cpuSeconds(w.pid);
        const load = await runLoad(spec, generator);
        const c1 = cpuSeconds(w.pid);
        loading = false;
        await scraper;
        const served = Math.max(1, load.requests - load.errors);
        errors += load.errors;
        result[mode].rps.push(load.rps);
        result[mode].cpu.push(((c1 - c0) * 1e6) / served);
        log(
          `overhead-bench: round ${r + 1} ${mode.padEnd(3)} ${load.rps.toFixed(0)} req/s, ${(((c1 - c0) * 1e6) / served).toFixed(1)} µs CPU/req${load.errors ? `, ${load.errors} errors` : ''}`,
        );
      }
    }
    await sleep(1500); // the last reports of the run reach the engine
    const offRps = median(result.off.rps);
    const onRps = median(result.on.rps);
    const offCpuUs = median(result.off.cpu);
    const onCpuUs = median(result.on.cpu);
    const rpsCosts = result.off.rps.map((o, i) => (o - result.on.rps[i]!) / o);
    const cpuCosts = result.off.cpu.map((o, i) => (result.on.cpu[i]! - o) / o);
    return {
      concurrency,
      rounds,
      generator,
      offRps,
      onRps,
      offCpuUs,
      onCpuUs,
      rpsCost: medianOf(rpsCosts),
      cpuCost: medianOf(cpuCosts),
      rpsCosts,
      errors,
      engine: { ...engine.counts },
      scrapes,
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs('overhead-bench', '[--duration S] [--rounds N] [--concurrency N]', { duration: 'string', rounds: 'string', concurrency: 'string' });
  const num = (k: string) => (typeof args[k] === 'string' ? Number(args[k]) : undefined);
  runOverheadBench({ durationS: num('duration'), rounds: num('rounds'), concurrency: num('concurrency') }).then(
    (r) => process.stdout.write(JSON.stringify(r, null, 2) + '\n'),
    (err: Error) => {
      process.stderr.write(`overhead-bench failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
