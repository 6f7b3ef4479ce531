#!/usr/bin/env node
/**
 * `nodeworker <command>`: each command lives in its own module and is loaded
 * only when asked for, so `nodeworker model-sim` does not pay for the autoscaler.
 */
import { closest } from './common/args.js';
import { WORKER_VERSION } from './worker/version.js';

type Command = { summary: string; load: () => Promise<(argv: string[]) => Promise<number | void>> };

const commands: Record<string, Command> = {
  worker: {
    summary: 'run a worker beside a model server (--handler NAME|PATH)',
    load: async () => (await import('./worker/cli.js')).runWorkerCli,
  },
  'model-sim': {
    summary: 'run the model simulator (--flavor openai|tgi|comfyui --port N ...)',
    load: async () => (await import('./model-sim/cli.js')).runModelSimCli,
  },
  benchmark: {
    summary: "measure a model server's perf with a handler's benchmark (--handler NAME)",
    load: async () => (await import('./worker/benchmark-cli.js')).runBenchmarkCli,
  },
  autoscaler: {
    summary: 'run the reference autoscaler (--config FILE --port N)',
    load: async () => (await import('./autoscaler/cli.js')).runAutoscalerCli,
  },
  'vast-emulator': {
    summary: 'a Vast.ai API emulator whose instances are real local workers (--port N --market FILE)',
    load: async () => (await import('./autoscaler/providers/vast/emulator-cli.js')).runVastEmulatorCli,
  },
  simulate: {
    summary: 'replay a request trace against the autoscaler policy (--trace FILE)',
    load: async () => (await import('./autoscaler/simulate-cli.js')).runSimulateCli,
  },
  init: {
    summary: 'create a custom worker project (worker.ts, a test against model-sim, README)',
    load: async () => (await import('./init/cli.js')).runInitCli,
  },
  demo: {
    summary: 'the local demo: autoscaler, real workers, load and a live status table (what `npm start` runs)',
    load: async () => (await import('./demo/cli.js')).runDemoCli,
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'usage: nodeworker <command> [options]',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    "Run `nodeworker <command> --help` for a command's options; `nodeworker --version` prints the version.",
  ].join('\n');
}

export async function main(argv: string[]): Promise<number | void> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-v' || name === 'version') {
    process.stdout.write(`${WORKER_VERSION}\n`);
    return 0;
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    const near = closest(name, Object.keys(commands));
    process.stderr.write(`nodeworker: unknown command "${name}"${near ? ` (did you mean ${near}?)` : ''}\n\n${usage()}\n`);
    return 2;
  }
  const run = await command.load();
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (typeof code === 'number') process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`nodeworker: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
