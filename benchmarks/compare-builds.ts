/**
 * Two builds of the worker side by side: the CPU per proxied request of another build's CLI (e.g.
 * a checkout of the commit before a change, built with `npx tsc`) against this one, with nginx
 * as the yardstick, in alternating rounds on one model-sim (medians: a disturbed round on a shared
 * machine moves them less than one long run). How issue 14's before/after figures were taken.
 *
 * Run: `npm run build && node build/benchmarks/compare-builds.js --other /path/to/other/dist/cli.js
 *       [--rounds 7] [--duration 3] [--concurrency 64]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.js';
import { runLoad } from './lib/loadgen.js';
import { startNginx } from './lib/nginx.js';
import { cpuSeconds } from './lib/procs.js';
import { startCliWorker, startModelSim } from './lib/stack.js';
import { findCommand } from './lib/tools.js';
import { bodyFor } from './proxy-bench.js';

export interface BuildComparison {
  concurrency: number;
  rounds: number;
  /** Median CPU µs per request of each target, and every round's figure. */
  median: Record<'other' | 'this' | 'nginx', number>;
  rounds_us: Record<'other' | 'this' | 'nginx', number[]>;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)]!;

export async function compareBuilds(o: {
  otherCli: string;
  rounds?: number;
  durationS?: number;
  concurrency?: number;
  log?: (l: string) => void;
}): Promise<BuildComparison> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const rounds = o.rounds ?? 7;
  const durationS = o.durationS ?? 3;
  const c = o.concurrency ?? 64;
  const nginxBin = findCommand('nginx');
  if (!nginxBin) throw new Error('nginx is not installed (apt-get install nginx)');
  const dir = mkdtempSync(join(tmpdir(), 'compare-builds-'));
  const stops: Array<() => Promise<void>> = [];
  try {
    const sim = await startModelSim({ dir });
    stops.push(() => sim.stop());
    const other = await startCliWorker({ dir, modelUrl: sim.ready, cli: o.otherCli });
    stops.push(() => other.stop());
    const self = await startCliWorker({ dir, modelUrl: sim.ready });
    stops.push(() => self.stop());
    const nginx = await startNginx(nginxBin, sim.ready, join(dir, 'nginx'));
    stops.push(() => nginx.stop());
    const payload = { model: 'bench', prompt: 'Say hello.', max_tokens: 1 };
    const targets = [
      { name: 'other' as const, url: other.ready, cpu: () => cpuSeconds(other.pid), body: bodyFor('worker', payload) },
      { name: 'this' as const, url: self.ready, cpu: () => cpuSeconds(self.pid), body: bodyFor('worker', payload) },
      { name: 'nginx' as const, url: nginx.url, cpu: () => nginx.cpuSeconds(), body: bodyFor('nginx', payload) },
    ];
    const us: BuildComparison['rounds_us'] = { other: [], this: [], nginx: [] };
    for (const t of targets) await runLoad({ url: `${t.url}/v1/completions`, body: t.body, concurrency: c, durationS: 1 }, 'wrk');
    for (let r = 0; r < rounds; r++) {
      // Alternate the order so drift on the machine hits every target alike.
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        const p0 = t.cpu();
        const load = await runLoad({ url: `${t.url}/v1/completions`, body: t.body, concurrency: c, durationS }, 'wrk');
        const v = ((t.cpu() - p0) * 1e6) / Math.max(1, load.requests - load.errors);
        us[t.name].push(v);
        log(`compare-builds: round ${r + 1}/${rounds} ${t.name.padEnd(5)} ${v.toFixed(1)} µs/req, ${load.rps.toFixed(0)} req/s, errors ${load.errors}`);
      }
    }
    return { concurrency: c, rounds, median: { other: median(us.other), this: median(us.this), nginx: median(us.nginx) }, rounds_us: us };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = benchArgs('compare-builds', '--other /path/to/other/dist/cli.js [--rounds 7] [--duration 3] [--concurrency 64]', {
    other: 'string',
    rounds: 'string',
    duration: 'string',
    concurrency: 'string',
  });
  if (typeof args.other !== 'string') {
    process.stderr.write('usage: node build/benchmarks/compare-builds.js --other /path/to/other/dist/cli.js [--rounds 7] [--duration 3] [--concurrency 64]\n');
    process.exit(2);
  }
  compareBuilds({
    otherCli: args.other,
    rounds: typeof args.rounds === 'string' ? Number(args.rounds) : undefined,
    durationS: typeof args.duration === 'string' ? Number(args.duration) : undefined,
    concurrency: typeof args.concurrency === 'string' ? Number(args.concurrency) : undefined,
  }).then(
    (r) => {
      const m = r.median;
      process.stdout.write(
        `c=${r.concurrency}, median of ${r.rounds} rounds: other build ${m.other.toFixed(1)} µs/req (${(m.other / m.nginx).toFixed(2)}x nginx), ` +
          `this build ${m.this.toFixed(1)} µs/req (${(m.this / m.nginx).toFixed(2)}x nginx), nginx ${m.nginx.toFixed(1)} µs/req\n`,
      );
      process.stdout.write(JSON.stringify(r) + '\n');
    },
    (err: Error) => {
      process.stderr.write(`compare-builds failed: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
