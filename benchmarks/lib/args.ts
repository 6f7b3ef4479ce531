import { parseFlags, usageFailed, type Flags, type FlagTypes } from '#nodeworker/common/args.js';

/**
 * A benchmark's command line, parsed strictly: `--help` prints `usage` and exits 0, an unknown
 * flag or a missing value exits 2 naming it (a typo must not run an hour-long soak with defaults).
 */
export function benchArgs(script: string, usage: string, types: FlagTypes): Flags {
  let args: Flags;
  try {
    args = parseFlags(process.argv.slice(2), types);
  } catch (err) {
    process.exit(usageFailed(script, err, `node build/benchmarks/${script}.js --help`));
  }
  if (args.help) {
    process.stdout.write(`usage: node build/benchmarks/${script}.js ${usage}\n`);
    process.exit(0);
  }
  return args;
}
