import { createLogger } from '../common/log.js';
import { parseFlags, usageFailed, type Flags } from '../common/args.js';
import { ConfigError } from './config.js';
import { parseWorkerEnv, type WorkerEnv } from './env.js';
import { loadWorkerDefinition } from './load-definition.js';
import { startFailureReporter } from './reporter.js';
import { WORKER_VERSION } from './version.js';
import { startWorker, type RunningWorker } from './worker.js';
import { defaultExtensions } from './extensions.js';

const HELP = `usage: nodeworker worker [--handler NAME|PATH] [--model-url URL]

Runs a worker beside a model server. Configuration comes from the environment
(PROTOCOL §8; see the README's configuration reference): WORKER_PORT, REPORT_ADDR,
MASTER_TOKEN, CONTAINER_ID, MODEL_LOG, MODEL_SERVER_URL, UNSECURED, BACKEND, ...

  --handler NAME|PATH  a built-in handler (openai, tgi, ...) or a compiled module whose
                       default export is defineWorker({...}); default: $BACKEND
  --model-url URL      the model server (default: $MODEL_SERVER_URL or http://127.0.0.1:8000)
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
  const logger = createLogger('nodeworker');
  let env: WorkerEnv | null = null;
  let worker: RunningWorker;
  try {
    env = parseWorkerEnv(process.env);
    const handler = typeof args.handler === 'string' ? args.handler : env.BACKEND;
    const definition = await loadWorkerDefinition(handler, { modelServerUrl: typeof args['model-url'] === 'string' ? args['model-url'] : undefined });
    worker = await startWorker({ definition, env, logger, extensions: defaultExtensions() });
  } catch (err) {
    return startupFailed(err as Error, env, logger);
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, inflight: worker.lifecycle.inflight }, 'draining before exit');
    // Exit only once the last log lines are written (the logger writes asynchronously).
    const flushed = () => new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 1000);
      logger.flush(() => {
        clearTimeout(t);
        resolve();
      });
    });
    void worker.drain().then(flushed, flushed).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/**
 * The worker could not start (port taken, bad config, missing key): say it on stderr and, when an
 * engine address is known, keep telling the engine every 10 s until stopped (PROTOCOL §7).
 */
function startupFailed(err: Error, env: WorkerEnv | null, logger: ReturnType<typeof createLogger>): Promise<number> | number {
  const message = err instanceof ConfigError ? err.message : `worker failed to start: ${err.message}`;
  process.stderr.write(`nodeworker: ${message}\n`);
  logger.error({ err: message }, 'start-up failed');
  const addrs = env?.REPORT_ADDR ?? (process.env.REPORT_ADDR ?? '').split(',').map((s) => s.trim().replace(/\/+$/, '')).filter(Boolean);
  if (addrs.length === 0) return 1;
  const port = process.env.WORKER_PORT ?? '3000';
  const reporter = startFailureReporter({
    addrs,
    containerId: env?.CONTAINER_ID ?? (Number.parseInt(process.env.CONTAINER_ID ?? '0', 10) || 0),
    masterToken: env?.MASTER_TOKEN ?? process.env.MASTER_TOKEN ?? '',
    version: WORKER_VERSION,
    publicUrl: env?.publicUrl ?? `http://${process.env.PUBLIC_IPADDR ?? '127.0.0.1'}:${process.env[`VAST_TCP_PORT_${port}`] ?? port}`,
    errorMsg: message.slice(0, 2000),
    logger,
  });
  return new Promise<number>((resolve) => {
    const end = () => {
      reporter.stop();
      resolve(1);
    };
    process.once('SIGTERM', end);
    process.once('SIGINT', end);
  });
}
