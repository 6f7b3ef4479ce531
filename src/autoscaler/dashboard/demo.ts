import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createLogger, type Logger } from '../../common/log.js';
import { parseFlags, usageFailed, type Flags } from '../../common/args.js';
import { defaultDataDir } from '../data-dir.js';
import type { EndpointInput } from '../params.js';
import { SimulatedProvider } from '../providers/simulated.js';
import { startAutoscaler, type RunningAutoscaler } from '../server.js';

/**
 * A demo run for the dashboard: an autoscaler on loopback with the simulated provider on the
 * real clock, machines that boot and load in seconds (not minutes), and a load generator
 * that plays clients over HTTP: it asks `/route/` for a worker and hands each routed request
 * to the simulated worker named in the answer, so workers report real load. Used by the
 * browser test and runnable by hand:
 *
 *   npm run build && AUTOSCALER_ADMIN_KEY=change-me node dist/autoscaler/dashboard/demo.js --workers 20
 */

/** The demo endpoint's machine types: price and true perf (load/s). */
export const DEMO_MACHINES = [
  { name: 'rtx4090', dollars_per_hour: 0.4, storage_dollars_per_hour: 0.01, perf: 400 },
  { name: 'a100', dollars_per_hour: 1.1, storage_dollars_per_hour: 0.02, perf: 900 },
] as const;

/** An endpoint declaration for the demo (the admin API's shape). */
export function demoEndpoint(name: string, apiKey: string, workers: number): EndpointInput {
  return {
    name,
    api_key: apiKey,
    max_workers: workers,
    cold_workers: workers,
    workergroups: [{ name: 'gpu', machine_types: DEMO_MACHINES.map(({ perf: _perf, ...m }) => ({ ...m })) }],
  };
}

export interface DashboardDemoOptions {
  port?: number;
  host?: string;
  /** Fleet size: the endpoint's `cold_workers` and `max_workers` (default 6). */
  workers?: number;
  /** Create the endpoint at start (default true); false lets a test create it through the admin API. */
  createEndpoint?: boolean;
  endpoint?: string;
  apiKey?: string;
  adminKey?: string;
  /** Seconds from create to running, running to loaded, start to loaded (default 1, 4, 1.5). */
  bootSeconds?: number;
  loadSeconds?: number;
  startSeconds?: number;
  /** Requests per second the load generator sends (default 8) and the load of each (default 100). */
  requestsPerSecond?: number;
  requestCost?: number;
  dataDir?: string;
  /** Where the dashboard looks for the last simulate report. */
  simulateDir?: string;
  logger?: Logger;
}

export interface DashboardDemo {
  autoscaler: RunningAutoscaler;
  provider: SimulatedProvider;
  load: LoadGenerator;
  endpoint: string;
  apiKey: string;
  close(): Promise<void>;
}

/** Start the autoscaler and the load generator. */
export async function startDashboardDemo(opts: DashboardDemoOptions = {}): Promise<DashboardDemo> {
  const endpoint = opts.endpoint ?? 'demo';
  const apiKey = opts.apiKey ?? 'demo-client-key';
  const workers = opts.workers ?? 6;
  const autoscaler = await startAutoscaler({
    config: {
      provider: {
        kind: 'simulated',
        seed: 7,
        defaults: { boot_time: opts.bootSeconds ?? 1, load_time: opts.loadSeconds ?? 4, start_time: opts.startSeconds ?? 1.5, perf_noise: 0.05 },
        machines: Object.fromEntries(DEMO_MACHINES.map((m) => [m.name, { perf: m.perf }])),
      },
      endpoints: opts.createEndpoint === false ? [] : [demoEndpoint(endpoint, apiKey, workers)],
    },
    port: opts.port ?? 0,
    host: opts.host ?? '127.0.0.1',
    dataDir: opts.dataDir ?? mkdtempSync(join(tmpdir(), 'dashboard-demo-')),
    adminKey: opts.adminKey,
    logger: opts.logger,
    dashboard: opts.simulateDir ? { simulateDir: opts.simulateDir } : {},
  });
  const provider = autoscaler.provider;
  if (!(provider instanceof SimulatedProvider)) throw new Error('the demo needs the simulated provider');
  const load = new LoadGenerator({
    url: autoscaler.url,
    endpoint,
    apiKey,
    provider,
    requestsPerSecond: opts.requestsPerSecond ?? 8,
    cost: opts.requestCost ?? 100,
  });
  load.start();
  return {
    autoscaler,
    provider,
    load,
    endpoint,
    apiKey,
    async close() {
      await load.stop();
      await autoscaler.close();
    },
  };
}

export interface LoadGeneratorOptions {
  /** The autoscaler's URL. */
  url: string;
  endpoint: string;
  apiKey: string;
  provider: SimulatedProvider;
  requestsPerSecond: number;
  cost: number;
  /** Requests in flight at most; beyond it new ones are skipped (default 200). */
  maxInFlight?: number;
}

/**
 * Clients over HTTP: POST `/route/` at a steady rate; a routed request goes to its simulated
 * worker, a queued one is polled again with its request_idx. Answers that are not 200
 * (no such endpoint yet, 408, 503) are counted and the generator goes on.
 */
export class LoadGenerator {
  readonly stats = { sent: 0, routed: 0, queued: 0, refusedByWorker: 0, failed: 0 };
  private timer: NodeJS.Timeout | null = null;
  private waiting = new Set<number>();
  private inFlight = new Set<Promise<void>>();
  private credit = 0;

  constructor(private readonly opts: LoadGeneratorOptions) {}

  start(): void {
    if (this.timer) return;
    const sliceMs = 100;
    this.timer = setInterval(() => {
      this.credit += (this.opts.requestsPerSecond * sliceMs) / 1000;
      for (; this.credit >= 1; this.credit--) this.track(this.route(0));
      for (const idx of [...this.waiting]) {
        this.waiting.delete(idx);
        this.track(this.route(idx));
      }
    }, sliceMs);
    this.timer.unref();
  }

  /** Stop sending and wait for the requests in flight. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.waiting.clear();
    await Promise.all([...this.inFlight]);
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private async route(requestIdx: number): Promise<void> {
    if (requestIdx === 0) {
      if (this.inFlight.size >= (this.opts.maxInFlight ?? 200)) return;
      this.stats.sent++;
    }
    try {
      const res = await fetch(`${this.opts.url}/route/`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ endpoint: this.opts.endpoint, api_key: this.opts.apiKey, cost: this.opts.cost, request_idx: requestIdx, replay_timeout: 30 }),
        signal: AbortSignal.timeout(5000),
      });
      const body = (await res.json()) as { status?: string; request_idx?: number; worker_id?: number };
      if (res.status !== 200) {
        this.stats.failed++;
        return;
      }
      if (body.status === 'queued' && typeof body.request_idx === 'number') {
        if (requestIdx === 0) this.stats.queued++;
        if (this.timer) this.waiting.add(body.request_idx);
        return;
      }
      if (body.status === 'routed' && typeof body.worker_id === 'number' && typeof body.request_idx === 'number') {
        this.stats.routed++;
        const outcome = this.opts.provider.submit(body.worker_id, { idx: body.request_idx, workload: this.opts.cost });
        if (outcome !== 'accepted') this.stats.refusedByWorker++;
      }
    } catch {
      this.stats.failed++;
    }
  }
}

/** `node dist/autoscaler/dashboard/demo.js [--port N] [--workers N] [--rps N]`: runs until Ctrl-C. */
async function main(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseFlags(argv, { port: 'string', workers: 'string', rps: 'string', 'data-dir': 'string' });
  } catch (err) {
    return usageFailed('dashboard demo', err, 'node dist/autoscaler/dashboard/demo.js --help');
  }
  if (args.help) {
    process.stdout.write('usage: node dist/autoscaler/dashboard/demo.js [--port N] [--workers N] [--rps N] [--data-dir DIR]\n');
    return 0;
  }
  const num = (v: unknown, d: number) => (typeof v === 'string' && Number.isFinite(Number(v)) ? Number(v) : d);
  const dataDir = resolve(typeof args['data-dir'] === 'string' ? args['data-dir'] : join(dirname(defaultDataDir()), 'dashboard-demo'));
  const demo = await startDashboardDemo({
    port: num(args.port, 8080),
    workers: num(args.workers, 20),
    requestsPerSecond: num(args.rps, 20),
    dataDir,
    logger: createLogger('dashboard-demo', { level: process.env.LOG_LEVEL ?? 'warn' }),
  });
  process.stderr.write(
    `dashboard demo: ${demo.autoscaler.url}/dashboard\n` +
      `admin key: ${process.env.AUTOSCALER_ADMIN_KEY ? 'the one in AUTOSCALER_ADMIN_KEY' : `in ${join(dataDir, 'admin_key')}`}\n`,
  );
  await new Promise<void>((r) => {
    process.once('SIGINT', r);
    process.once('SIGTERM', r);
  });
  await demo.close();
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`dashboard demo: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
