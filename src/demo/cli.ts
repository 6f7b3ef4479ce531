import { mkdtempSync, rmSync } from 'node:fs';
import { stopWhenOrphanedUnderNpm } from '../common/orphan-guard.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TransitionEvent } from '../autoscaler/engine.js';
import { procStart } from '../autoscaler/providers/local-procs.js';
import type { LocalProvider } from '../autoscaler/providers/local.js';
import { startAutoscaler, type RunningAutoscaler } from '../autoscaler/server.js';
import { createLogger } from '../common/log.js';
import { parseFlags, usageFailed, type Flags } from '../common/args.js';
import { DEFAULT_SIZING, DEMO_ENDPOINT, demoConfig } from './config.js';
import { LoadGenerator } from './load.js';
import { collectStatus, renderLine, renderTable, renderTransition, stateSummary } from './status.js';

const HELP = `usage: nodeworker demo [options]

The whole system on this machine: the reference autoscaler with the local provider, which runs
real workers (on_start.sh → model-sim + nodeworker worker, signatures verified), a load generator
that routes every request through /route/ like a real client, in a wave from a trough to a peak,
and a live status table. Ctrl-C (or SIGTERM) stops every process it started.

  --duration S       stop by itself after S seconds (default: run until Ctrl-C)
  --rps N            requests/s at the top of the load wave (default 24)
  --period S         seconds of one load wave, trough to trough (default 90)
  --max-workers N    most workers (default ${DEFAULT_SIZING.maxWorkers})
  --cold-workers N   workers kept loaded, active or inactive (default ${DEFAULT_SIZING.coldWorkers})
  --port N           the autoscaler's port (default 0: any free port)
  --data-dir DIR     keep the key, the engine log and the workspaces here (default: a temp dir,
                     removed at exit)
  --no-tty           a status line every few seconds instead of a table redrawn in place
                     (automatic when stdout is not a terminal)
`;

function positive(args: Flags, name: string, fallback: number, integer = false): number {
  const raw = args[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw === true || !Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'} (got ${JSON.stringify(raw)})`);
  }
  return n;
}

/** `nodeworker demo`: runs until --duration or a signal; exit 0 after a clean stop. */
export async function runDemoCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseFlags(argv, {
      duration: 'string',
      rps: 'string',
      period: 'string',
      'max-workers': 'string',
      'cold-workers': 'string',
      port: 'string',
      'data-dir': 'string',
      'no-tty': 'boolean',
    });
  } catch (err) {
    return usageFailed('nodeworker demo', err, 'nodeworker demo --help');
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let duration: number | null, peakRps: number, period: number, maxWorkers: number, coldWorkers: number, port: number;
  try {
    duration = args.duration === undefined ? null : positive(args, 'duration', 0);
    peakRps = positive(args, 'rps', 24);
    period = positive(args, 'period', 90);
    maxWorkers = positive(args, 'max-workers', DEFAULT_SIZING.maxWorkers, true);
    coldWorkers = args['cold-workers'] === '0' ? 0 : positive(args, 'cold-workers', DEFAULT_SIZING.coldWorkers, true);
    port = args.port === undefined ? 0 : Number(args.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be an integer 0..65535 (got ${JSON.stringify(args.port)})`);
  } catch (err) {
    process.stderr.write(`nodeworker demo: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  const tty = process.stdout.isTTY === true && args['no-tty'] !== true;
  const ownDir = typeof args['data-dir'] !== 'string';
  const dataDir = ownDir ? mkdtempSync(join(tmpdir(), 'nodeworker-demo-')) : (args['data-dir'] as string);
  const logFile = join(dataDir, 'autoscaler.log');
  // A closed terminal (SIGHUP) makes writes fail: the demo goes on stopping, silently.
  let quiet = false;
  let hungUp = false;
  const muted = () => {
    quiet = true;
  };
  process.stdout.on('error', muted);
  process.stderr.on('error', muted);
  const out = (line: string) => void (quiet || process.stdout.write(line + '\n'));

  // Signals first: a Ctrl-C during start-up still stops whatever was started.
  let stopRequested: (why: string) => void = () => undefined;
  const stopped = new Promise<string>((resolve) => (stopRequested = resolve));
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signal === 'SIGHUP') quiet = hungUp = true;
    if (stopping) {
      if (!quiet) process.stderr.write(`\n${signal}: still stopping the workers (each gets a few seconds to drain)…\n`);
      return;
    }
    stopping = true;
    stopRequested(signal);
  };
  const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const sig of SIGNALS) process.on(sig, onSignal);
  // `npm start`: npm's SIGTERM ends its shell, not us; stop as if signalled (see orphan-guard).
  stopWhenOrphanedUnderNpm(() => onSignal('SIGTERM'));

  const logger = createLogger('autoscaler', { destination: logFile });
  let as: RunningAutoscaler | null = null;
  let load: LoadGenerator | null = null;
  const seenPids = new Set<number>();
  const transitions: TransitionEvent[] = [];
  let drawTimer: NodeJS.Timeout | null = null;
  let drawn = 0;
  try {
    out(`nodeworker demo: starting the autoscaler and up to ${maxWorkers} workers (data in ${dataDir}${ownDir ? ', removed at exit' : ''})`);
    as = await startAutoscaler({ config: demoConfig({ ...DEFAULT_SIZING, maxWorkers, coldWorkers }), dataDir, port, logger });
    const provider = as.provider as LocalProvider;
    out(`autoscaler on ${as.url}; its log: ${logFile}; each worker's output: ${join(provider.workspacesDir, 'worker-<id>', 'on_start.log')}`);
    const adminKey = process.env.AUTOSCALER_ADMIN_KEY ? 'from AUTOSCALER_ADMIN_KEY' : `in ${join(dataDir, 'admin_key')}`;
    out(`dashboard: ${as.url}/dashboard (admin key ${adminKey})`);
    out(
      `load: a wave of up to ${peakRps} requests/s every ${period} s through /route/ (src/client)${duration ? `; stopping after ${duration} s` : '; Ctrl-C to stop'}`,
    );
    as.engine.on('transition', (t) => {
      if (t.endpoint !== DEMO_ENDPOINT) return;
      transitions.push(t);
      if (transitions.length > 200) transitions.shift();
      if (!tty) out(renderTransition(t));
    });
    load = new LoadGenerator({
      autoscalerUrl: as.url,
      apiKey: as.apiKeys[DEMO_ENDPOINT]!,
      endpoint: DEMO_ENDPOINT,
      peakRps,
      periodSeconds: period,
      maxTokens: DEFAULT_SIZING.maxTokens,
    });
    const startedAt = Date.now();
    load.start();

    const running = as;
    const generator = load;
    let lastLine = 0;
    const draw = () => {
      for (const p of provider.allPids()) seenPids.add(p);
      const status = collectStatus(running.engine, DEMO_ENDPOINT, generator.stats(), startedAt, running.url);
      if (quiet) return;
      if (tty) {
        const cols = (process.stdout.columns ?? 0) > 20 ? process.stdout.columns : 120;
        const lines = [...renderTable(status), '', 'recent changes:', ...transitions.slice(-6).map((t) => `  ${renderTransition(t)}`)].map((l) =>
          l.slice(0, cols - 1),
        );
        process.stdout.write(`${drawn > 0 ? `\x1b[${drawn}F` : ''}${lines.map((l) => `\x1b[2K${l}`).join('\n')}\n\x1b[J`);
        drawn = lines.length;
      } else if (Date.now() - lastLine >= 5000) {
        lastLine = Date.now();
        out(renderLine(status));
      }
    };
    if (tty) process.stdout.write('\x1b[?25l\n');
    draw();
    drawTimer = setInterval(draw, tty ? 1000 : 500);
    const timer = duration !== null ? setTimeout(() => stopRequested('duration'), duration * 1000) : null;
    const why = await stopped;
    if (timer) clearTimeout(timer);
    clearInterval(drawTimer);
    drawTimer = null;
    if (tty && !quiet) {
      draw();
      process.stdout.write('\x1b[?25h');
    }
    out(
      `\nstopping (${why === 'duration' ? `${duration} s elapsed` : why}): the load, then every worker (SIGTERM to on_start.sh, which drains the worker and stops the model)…`,
    );
  } catch (err) {
    if (!quiet) process.stderr.write(`nodeworker demo: ${(err as Error).message}\n`);
    process.exitCode = 1;
  } finally {
    if (drawTimer) clearInterval(drawTimer);
    if (tty && !quiet) process.stdout.write('\x1b[?25h');
    await load?.stop().catch(() => undefined);
    if (as) {
      for (const p of (as.provider as LocalProvider).allPids()) seenPids.add(p);
      await as.close();
    }
    logger.flush();
    for (const sig of SIGNALS) process.off(sig, onSignal);
  }
  let code = process.exitCode === 1 || !as || !load ? 1 : 0;
  if (load) {
    const sum = load.summary();
    const counts = Object.fromEntries(['created', 'inactive', 'starting', 'errored'].map((s) => [s, transitions.filter((t) => t.to === s).length]));
    const abandoned = sum.sent - sum.ok - sum.failed - sum.dropped;
    out(
      `requests: ${sum.ok} served, ${sum.failed} failed${sum.dropped ? `, ${sum.dropped} dropped` : ''}${abandoned > 0 ? `, ${abandoned} abandoned at the stop` : ''} of ${sum.sent} in ${sum.seconds.toFixed(0)} s; latency p50 ${sum.p50Ms ?? '-'} ms, p99 ${sum.p99Ms ?? '-'} ms`,
    );
    out(
      `workers: ${counts.created} recruited, ${counts.inactive} stops, ${counts.starting} warm starts, ${counts.errored} errored; when stopped ${stateSummary(countStates(transitions), true)}`,
    );
  }
  const left = [...seenPids].filter((pid) => procStart(pid) !== null);
  if (left.length > 0) {
    out(`warning: ${left.length} process(es) still running: ${left.join(', ')}; their logs are kept in ${dataDir}`);
    code = 1;
  } else {
    out(`all ${seenPids.size} processes the demo started have ended.`);
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
  }
  if (hungUp) {
    // The terminal is gone: die by the signal, as a hung-up program does. (Exiting normally would
    // abort in Node's tty reset on a dead terminal, nodejs/node#51519, fixed after Node 20.)
    process.kill(process.pid, 'SIGHUP');
    await new Promise((r) => setTimeout(r, 1000));
  }
  return code;
}

/** Each worker's last state, counted. */
function countStates(transitions: TransitionEvent[]): Record<TransitionEvent['to'], number> {
  const last = new Map<number, TransitionEvent['to']>();
  for (const t of transitions) last.set(t.worker, t.to);
  const counts = { created: 0, loading: 0, ready: 0, inactive: 0, starting: 0, errored: 0, destroyed: 0 };
  for (const s of last.values()) counts[s]++;
  return counts;
}
