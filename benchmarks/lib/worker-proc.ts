import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '#nodeworker/common/log.js';
import { parseWorkerEnv } from '#nodeworker/worker/env.js';
import { defaultExtensions } from '#nodeworker/worker/extensions.js';
import { loadWorkerDefinition } from '#nodeworker/worker/load-definition.js';
import { startWorker } from '#nodeworker/worker/worker.js';

/**
 * A worker process (openai handler) with exactly the parts a comparison needs, so "on" and "off"
 * differ in nothing else: BENCH_EXTENSIONS=1 adds sessions, management, /metrics and the request
 * log; REPORT_ADDR turns on the reporter and signature checks (the key comes from its /pubkey/),
 * UNSECURED=true turns both off; BENCH_FAST_LANE=0 / BENCH_MODEL_CLIENT=0 turn off the request
 * path's fast lane / lean model client. The rest of the environment is the worker's own (PROTOCOL §8).
 * Prints "bench-worker listening on URL" once listening; SIGTERM closes it.
 */
async function main(): Promise<void> {
  const modelUrl = process.env.BENCH_MODEL_URL;
  if (!modelUrl) throw new Error('BENCH_MODEL_URL is not set');
  const env = parseWorkerEnv(process.env);
  const definition = await loadWorkerDefinition('openai', { modelServerUrl: modelUrl });
  const logger = createLogger('bench-worker', { level: 'warn', destination: join(env.WORKSPACE_DIR, `bench-worker-${process.pid}.log`) });
  const worker = await startWorker({
    definition,
    env,
    logger,
    extensions: process.env.BENCH_EXTENSIONS === '1' ? defaultExtensions() : [],
    requestPath: { fastLane: process.env.BENCH_FAST_LANE !== '0', modelClient: process.env.BENCH_MODEL_CLIENT !== '0' },
  });
  process.stdout.write(`bench-worker listening on ${worker.url} \n`);
  const stop = () => void worker.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: Error) => {
    process.stderr.write(`bench-worker: ${err.message}\n`);
    process.exit(1);
  });
}
