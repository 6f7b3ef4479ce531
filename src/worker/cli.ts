import { createLogger, type Logger } from '../common/log.js';
import { parseFlags, usageFailed, type Flags } from '../common/args.js';
import { stopWhenOrphanedUnderNpm } from '../common/orphan-guard.js';
import { ConfigError } from '../common/protocol.js';
import { envHints, LOG_LEVELS, type EnvSource } from './env.js';
import { loadWorkerDefinition } from './load-definition.js';
import { startFailureReporter } from './reporter.js';
import { DEFAULT_MODEL_URL, loadWorkerConfig, salvageReportTarget, type ReportTarget, type WorkerConfig } from './worker-config.js';
import { startWorker, type RunningWorker } from './worker.js';
import { defaultExtensions } from './extensions.js';

const HELP = `usage: nodeworker worker [--handler NAME|PATH] [--model-url URL]

Runs a worker beside a model server. Configuration comes from the environment
(PROTOCOL §8; see the README's configuration reference): WORKER_PORT, REPORT_ADDR,
MASTER_TOKEN, CONTAINER_ID, MODEL_LOG, MODEL_SERVER_URL, UNSECURED, BACKEND, ...

  --handler NAME|PATH  a built-in handler (openai, tgi, ...) or a compiled module whose
                       default export is defineWorker({...}); default: $BACKEND
  --model-url URL      the model server (default: the handler's, else $MODEL_SERVER_URL, else ${DEFAULT_MODEL_URL})
`;

export async function runWorkerCli(argv: string[]): Promise<number | void> {
  let args: Flags;
  try {
    args = parseFlags(argv, { handler: 'string', 'model-url': 'string' });
  } catch (err) {
    return usageFailed('nodeworker worker', err, 'nodeworker worker --help');
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let config: WorkerConfig | null = null;
  let logger: Logger | null = null;
  let worker: RunningWorker;
  try {
    // The environment is read here, once; everything after reads the resolved config.
    const loaded = await loadWorkerConfig(process.env, (backend) => loadWorkerDefinition(backend), {
      handler: typeof args.handler === 'string' ? args.handler : undefined,
      modelUrl: typeof args['model-url'] === 'string' ? args['model-url'] : undefined,
    });
    config = loaded.config;
    logger = createLogger('nodeworker', { level: config.log.level, destination: config.log.file ?? undefined });
    for (const hint of envHints(process.env)) logger.warn(hint);
    worker = await startWorker({ definition: loaded.definition, config, logger, extensions: defaultExtensions() });
  } catch (err) {
    return startupFailed(err as Error, config?.report ?? salvageReportTarget(process.env), logger ?? fallbackLogger(process.env));
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, inflight: worker.ledger.inflight }, 'draining before exit');
    // Exit only once the last log lines are written (the logger writes asynchronously).
    const flushed = () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000);
        logger.flush(() => {
          clearTimeout(t);
          resolve();
        });
      });
    void worker
      .drain()
      .then(flushed, flushed)
      .then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // `npm start` / `npx nodeworker worker`: npm's SIGTERM ends its shell, not us (see orphan-guard).
  stopWhenOrphanedUnderNpm((why) => stop(why));
  // Last resort. The request path catches its own errors in every socket callback (proxy.ts,
  // http1/), so the ledger stays whole; anything that still escapes is logged rather than allowed
  // to end the process and every request in flight with it.
  process.on('uncaughtException', (err) => logger.error({ err: err?.message ?? String(err), stack: err?.stack }, 'uncaught exception: kept running'));
  process.on('unhandledRejection', (why) => logger.error({ err: (why as Error)?.message ?? String(why) }, 'unhandled rejection: kept running'));
}

/** A logger for a start that failed before the config was read: LOG_LEVEL when it is valid, else info. */
function fallbackLogger(raw: EnvSource): Logger {
  const level = (LOG_LEVELS as readonly string[]).includes(raw.LOG_LEVEL ?? '') ? raw.LOG_LEVEL : 'info';
  return createLogger('nodeworker', { level, destination: raw.LOG_FILE || undefined });
}

/**
 * The worker could not start (port taken, bad config, missing key): say it on stderr and, when an
 * engine address is known, keep telling the engine every 10 s until stopped (PROTOCOL §7).
 */
function startupFailed(err: Error, target: ReportTarget | null, logger: Logger): Promise<number> | number {
  const message = err instanceof ConfigError ? err.message : `worker failed to start: ${err.message}`;
  process.stderr.write(`nodeworker: ${message}\n`);
  // Once on the screen: the log record too only when the log goes elsewhere (LOG_FILE), else the
  // same message showed twice, the second time as JSON with its newlines escaped.
  if (process.env.LOG_FILE) logger.error({ err: message }, 'start-up failed');
  if (!target || target.addrs.length === 0) return 1;
  const reporter = startFailureReporter({ ...target, errorMsg: message.slice(0, 2000), logger });
  return new Promise<number>((resolve) => {
    const end = () => {
      reporter.stop();
      resolve(1);
    };
    process.once('SIGTERM', end);
    process.once('SIGINT', end);
  });
}
