import { relative } from 'node:path';
import { parseFlags, UsageError, type Flags } from '../common/args.js';
import { scaffold, ScaffoldError } from './scaffold.js';

const HELP = `usage: nodeworker init DIR [--name NAME] [--nodeworker-spec SPEC] [--force]

Creates a custom worker project in DIR: worker.ts (one handler, defineWorker), a test that runs
it against nodeworker's model simulator, package.json, tsconfig.json and a short README.

  --name NAME              npm package name (default: DIR's name)
  --nodeworker-spec SPEC   how the project depends on nodeworker (default: what this nodeworker
                           was installed from: ^<version> from a registry, its git url, or the
                           absolute file: path of the tarball or directory; file:<this checkout>
                           when run from a git checkout), e.g. git+https://github.com/you/nodeworker.git
  --force                  write into a non-empty DIR (files of the same names are replaced)

Then: cd DIR && npm install && npm run build && npm test`;

/** `nodeworker init`: returns the exit code. */
export async function runInitCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseFlags(argv, { name: 'string', 'nodeworker-spec': 'string', force: 'boolean' }, { positionals: true });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`nodeworker init: ${err.message}\n\n${HELP}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const problems: string[] = [];
  const dir = args._[0];
  if (!dir) problems.push('DIR is required: the directory to create');
  if (args._.length > 1) problems.push(`only one DIR, got ${args._.length}: ${args._.join(' ')}`);
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`nodeworker init: ${p}\n`);
    process.stderr.write(`\n${HELP}\n`);
    return 2;
  }
  try {
    const r = scaffold({
      dir: dir!,
      name: typeof args.name === 'string' ? args.name : undefined,
      nodeworkerSpec: typeof args['nodeworker-spec'] === 'string' ? args['nodeworker-spec'] : undefined,
      force: args.force === true,
    });
    const shown = relative(process.cwd(), r.dir) || '.';
    process.stdout.write(
      [
        `created ${r.name} in ${r.dir}:`,
        ...r.files.map((f) => `  ${f}`),
        `nodeworker dependency: ${r.nodeworkerSpec}`,
        '',
        'next:',
        `  cd ${shown}`,
        '  npm install',
        '  npm run build && npm test',
        '',
      ].join('\n'),
    );
    return 0;
  } catch (err) {
    if (err instanceof ScaffoldError) {
      process.stderr.write(`nodeworker init: ${err.option}: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`nodeworker init: ${(err as Error).message}\n`);
    return 1;
  }
}
