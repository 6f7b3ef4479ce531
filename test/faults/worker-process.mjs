/**
 * A worker process for the fault scenarios: what `nodeworker worker` runs (same environment, same
 * handler loading, same default extensions), with two differences a test needs:
 *  - FAULT_TIMINGS (JSON of WorkerTimings) and FAULT_SPEC (JSON of WorkerSpec fields such as
 *    modelTimeoutMs) shorten the readiness and report cadence, never the production defaults;
 *    FAULT_REQUEST_PATH (JSON, e.g. {"fastLane": false}) picks the request path;
 *  - after SIGTERM it drains and then does NOT call process.exit: the process has to end by itself,
 *    which it only does when no socket, timer or listener was leaked. If it is still alive
 *    FAULT_LEAK_MS later it prints the handles keeping it alive and exits 3.
 * Lines on stdout (the worker's log goes to LOG_FILE): `FAULT_WORKER_LISTENING <url>`,
 * `FAULT_WORKER_DRAINED`, `FAULT_WORKER_LEAK <json>`. Plain ESM over the compiled tree (dist/),
 * because test/ is not compiled.
 */
import { createLogger } from '../../dist/common/log.js';
import { parseWorkerEnv } from '../../dist/worker/env.js';
import { defaultExtensions } from '../../dist/worker/extensions.js';
import { loadWorkerDefinition } from '../../dist/worker/load-definition.js';
import { startWorker } from '../../dist/worker/worker.js';

const timings = JSON.parse(process.env.FAULT_TIMINGS ?? '{}');
const specOverrides = JSON.parse(process.env.FAULT_SPEC ?? '{}');
const leakMs = Number(process.env.FAULT_LEAK_MS ?? 5000);
// {"fastLane": false}: every request through node:http (the path TLS and chunked requests take).
const requestPath = JSON.parse(process.env.FAULT_REQUEST_PATH ?? '{}');

const logger = createLogger('nodeworker');
const env = parseWorkerEnv(process.env);
const definition = await loadWorkerDefinition(env.BACKEND, { modelServerUrl: env.MODEL_SERVER_URL, ...specOverrides });
const worker = await startWorker({ definition, env, logger, timings, extensions: defaultExtensions(), requestPath });
process.stdout.write(`FAULT_WORKER_LISTENING ${worker.url}\n`);

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  worker.drain().then(
    () => {
      logger.flush();
      process.stdout.write('FAULT_WORKER_DRAINED\n');
      // Only reached if something still holds the event loop open: name it, then fail.
      const watchdog = setTimeout(() => {
        const resources = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
        process.stdout.write(`FAULT_WORKER_LEAK ${JSON.stringify(resources)}\n`);
        process.exit(3);
      }, leakMs);
      watchdog.unref();
    },
    (err) => {
      process.stdout.write(`FAULT_WORKER_DRAIN_FAILED ${err?.message ?? err}\n`);
      process.exit(4);
    },
  );
});
