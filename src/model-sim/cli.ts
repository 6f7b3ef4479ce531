import { parseFlags, usageFailed, type Flags } from '../common/args.js';
import { startModelSim, type ModelSimOptions } from './index.js';
import { helpText, OPTION_SPECS, optionsFromFlags } from './options.js';

/**
 * `nodeworker model-sim [options]`: run a simulated model server until SIGTERM/SIGINT
 * (exit 0). Bad flags exit 2 with every problem listed; a failed listen exits 1; a
 * simulated crash exits 1 from inside the simulator.
 */
export async function runModelSimCli(argv: string[]): Promise<number | void> {
  let flags: Flags;
  try {
    flags = parseFlags(argv, Object.fromEntries(OPTION_SPECS.map((s) => [s.flag, 'string' as const])));
  } catch (err) {
    return usageFailed('model-sim', err, 'nodeworker model-sim --help');
  }
  if (flags.help) {
    process.stdout.write(helpText() + '\n');
    return 0;
  }
  const { options, problems } = optionsFromFlags(flags);
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`model-sim: ${p.key === '_' ? p.flag : `--${p.flag}`} ${p.message}\n`);
    process.stderr.write('Run `nodeworker model-sim --help` for the options.\n');
    return 2;
  }
  const opts = { ...(options as unknown as ModelSimOptions), exitOnCrash: true };
  let sim: Awaited<ReturnType<typeof startModelSim>>;
  try {
    sim = await startModelSim(opts);
  } catch (err) {
    process.stderr.write(`model-sim: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  process.stdout.write(`model-sim listening on ${sim.url} (flavor ${opts.flavor})\n`);

  const running = sim;
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      running.close().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
