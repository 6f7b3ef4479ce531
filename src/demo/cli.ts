import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { parseArgs } from '../common/util.js';
import { startModelSim } from '../model-sim/index.js';
import { parseWorkerEnv } from '../worker/env.js';
import { defaultExtensions } from '../worker/extensions.js';
import { loadWorkerDefinition } from '../worker/load-definition.js';
import { startWorker } from '../worker/worker.js';

const HELP = `usage: nodeworker demo [--port N] [--model-port N]

Runs model-sim (openai flavor) and a worker in front of it on this machine, unsecured,
and prints a curl to try. Ctrl-C stops both.
`;

export async function runDemoCli(argv: string[]): Promise<number | void> {
  const args = parseArgs(argv);
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const dir = mkdtempSync(join(tmpdir(), 'nodeworker-demo-'));
  const logFile = join(dir, 'model.log');
  const sim = await startModelSim({ flavor: 'openai', port: Number(args['model-port'] ?? 0), logFile, loadSeconds: 2, tokenRate: 200, capacity: 4000, ttftMs: 30 });
  const env = parseWorkerEnv({
    ...process.env,
    WORKER_PORT: String(args.port ?? process.env.WORKER_PORT ?? 3000),
    WORKER_HOST: '127.0.0.1',
    CONTAINER_ID: process.env.CONTAINER_ID ?? '1',
    UNSECURED: 'true',
    MODEL_LOG: logFile,
    MODEL_SERVER_URL: sim.url,
    WORKSPACE_DIR: dir,
    BENCHMARK_MAX_TOKENS: process.env.BENCHMARK_MAX_TOKENS ?? '64',
  });
  process.env.BENCHMARK_MAX_TOKENS ??= '64';
  const definition = await loadWorkerDefinition('openai');
  const logger = createLogger('nodeworker', { destination: join(dir, 'worker.log') });
  const worker = await startWorker({ definition, env, logger, extensions: defaultExtensions(), timings: { noHealthWaitMs: 0 } });
  const body = JSON.stringify({
    auth_data: { cost: 64, endpoint: 'demo', reqnum: 1, request_idx: 1, signature: 'unsecured', url: worker.url },
    payload: { model: 'demo', prompt: 'Hello, GPU!', max_tokens: 32 },
  });
  process.stdout.write(
    [
      `model-sim (openai flavor) on ${sim.url}, log ${logFile}`,
      `worker on ${worker.url} (unsecured), its log in ${join(dir, 'worker.log')}`,
      '',
      'Try it:',
      `  curl -s ${worker.url}/healthz`,
      `  curl -s ${worker.url}/v1/completions -H 'content-type: application/json' -d '${body}'`,
      '',
      'Ctrl-C stops both.',
      '',
    ].join('\n'),
  );
  worker.lifecycle.on('transition', (tr) => process.stdout.write(`worker: ${tr.from} → ${tr.to} (${tr.reason})\n`));
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  process.stdout.write('stopping…\n');
  await worker.drain(5000);
  await sim.close();
  return 0;
}
