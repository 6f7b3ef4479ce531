/**
 * The Vast provider's learning phase, timed (issue 23): the autoscaler (in this process, provider
 * vast) rents from the Vast API emulator, whose instances are real on_start.sh workers running
 * model-sim at each machine type's speed. It measures, from the start of the autoscaler:
 * - learned: every machine type has a benchmark (the engine knows perf per dollar of each);
 * - converged: the fleet is `cold_workers` workers of the best type only, ready or parked;
 * and the API calls made, 429s seen, creates and destroys, and leaked instances (emulator's
 * labelled instances not in the engine's fleet) at the end, which must be 0.
 *
 * Run: `npm run build && node build/benchmarks/vast-learning.js [--runs 1] [--json FILE]`
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '#nodeworker/common/log.js';
import { VastEmulator } from '#nodeworker/autoscaler/providers/vast/emulator.js';
import type { VastProvider } from '#nodeworker/autoscaler/providers/vast/provider.js';
import { startAutoscaler } from '#nodeworker/autoscaler/server.js';
import { benchArgs } from './lib/args.js';

const KEY = 'vast-bench-account-key';
const TYPES = ['RTX_3090', 'RTX_4090', 'A100_SXM4'];
const BEST = 'RTX_4090';
const FAST = { search: 0.05, list: 0.05, show: 0.05, manage: 0.05, destroy: 0.05, create: 0.05 };

interface Run {
  learned_s: number;
  converged_s: number;
  api_calls: number;
  throttled: number;
  created: number;
  destroyed: number;
  leaked: number;
}

async function until<T>(what: string, fn: () => T | null | undefined | false, ms = 180_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function once(): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'vast-bench-'));
  const silent = createLogger('bench', { level: 'silent' });
  const emu = new VastEmulator({
    options: {
      api_key: KEY,
      rate_limits: FAST,
      create_seconds: 0.5,
      loading_seconds: 1,
      start_seconds: 0.5,
      instance_env: { BENCHMARK_MAX_TOKENS: '16', BENCHMARK_CONCURRENCY: '8' },
    },
    market: {
      machine_types: [
        { gpu_name: 'RTX 3090', count: 3, dph_base: 0.2, model_sim_args: '--load-seconds 1 --token-rate 1000 --capacity 100 --ttft-ms 10' },
        { gpu_name: 'RTX 4090', count: 4, dph_base: 0.4, model_sim_args: '--load-seconds 1 --token-rate 1000 --capacity 400 --ttft-ms 10' },
        { gpu_name: 'A100 SXM4', count: 3, dph_base: 1.0, model_sim_args: '--load-seconds 1 --token-rate 1000 --capacity 600 --ttft-ms 10' },
      ],
    },
    dataDir: join(dir, 'emulator'),
    logger: silent,
  });
  await emu.listen();
  process.env.VAST_API_KEY = KEY;
  const t0 = Date.now();
  const as = await startAutoscaler({
    dataDir: join(dir, 'as'),
    port: 0,
    adminKey: 'vast-bench-admin-key',
    dashboard: false,
    logger: silent,
    config: {
      engine: { tick_seconds: 0.5, stale_after_seconds: 15, load_timeout_seconds: 120 },
      provider: { kind: 'vast', base_url: emu.url, poll_seconds: 0.5, rate_limits: FAST, launch: { image: 'nodeworker/bench', disk: 10 } },
      endpoints: [
        {
          name: 'bench',
          cold_workers: 3,
          max_workers: 4,
          min_load: 1,
          cold_mult: 0,
          scale_down_delay: 1,
          release_delay: 2,
          workergroups: [
            {
              name: 'gpu',
              search_params: 'num_gpus=1',
              machine_types: [
                { name: 'RTX_3090', dollars_per_hour: 0.25 },
                { name: 'RTX_4090', dollars_per_hour: 0.45 },
                { name: 'A100_SXM4', dollars_per_hour: 1.1 },
              ],
            },
          ],
        },
      ],
    },
  });
  try {
    await until('every type benchmarked', () => TYPES.every((t) => (as.engine.perf.get(`gpu/${t}`)?.benchmarks ?? 0) >= 1));
    const learned = (Date.now() - t0) / 1000;
    const fleet = () => [...as.engine.workers.values()].filter((w) => w.endpoint === 'bench' && w.state !== 'destroyed');
    const ours = () => emu.list().filter((i) => String(i.label).startsWith('nw.'));
    await until('the best type only', () => {
      const f = fleet();
      const ids = new Set(f.map((w) => w.id));
      return (
        f.length === 3 &&
        f.every((w) => w.machineType === BEST && (w.state === 'ready' || w.state === 'inactive')) &&
        ours().every((i) => ids.has(Number(i.id))) &&
        ours().length === 3
      );
    });
    const converged = (Date.now() - t0) / 1000;
    const ids = new Set(fleet().map((w) => w.id));
    return {
      learned_s: learned,
      converged_s: converged,
      api_calls: emu.stats.calls,
      throttled: (as.provider as VastProvider).api.counters.throttled,
      created: emu.stats.created,
      destroyed: emu.stats.destroyed,
      leaked: ours().filter((i) => !ids.has(Number(i.id))).length,
    };
  } finally {
    await as.close();
    await emu.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const args = benchArgs('vast-learning', '[--runs N] [--json FILE]', { runs: 'string', json: 'string' });
const runs = Number(args.runs ?? 1);
const out: Run[] = [];
for (let i = 0; i < runs; i++) {
  const r = await once();
  out.push(r);
  process.stdout.write(
    `run ${i + 1}: learned ${r.learned_s.toFixed(1)} s, converged ${r.converged_s.toFixed(1)} s, ${r.api_calls} API calls, ${r.throttled} 429s, ${r.created} creates, ${r.destroyed} destroys, leaked ${r.leaked}\n`,
  );
}
if (typeof args.json === 'string') writeFileSync(args.json, JSON.stringify(out, null, 2));
