import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { PACKAGE_ROOT } from '../common/package-root.js';
import { gitignore, packageJson, readme, tsconfigJson, workerTestTs, workerTs, type TemplateValues } from './templates.js';

/**
 * `nodeworker init DIR`: write a custom worker project. Guarantees: nothing is written unless every
 * check passed; an existing non-empty directory is left alone unless `force`; the project depends
 * on nodeworker as defaultNodeworkerSpec() says unless another spec is given.
 */
export interface ScaffoldOptions {
  dir: string;
  /** npm package name (default: the directory's name, made valid). */
  name?: string;
  /** Dependency spec of nodeworker (default: `^<version>` when installed, `file:<checkout>` from a checkout). */
  nodeworkerSpec?: string;
  /** Write into a non-empty directory, replacing files of the same names. */
  force?: boolean;
}

export interface ScaffoldResult {
  dir: string;
  name: string;
  nodeworkerSpec: string;
  files: string[];
}

/** A problem with the options, naming the option. */
export class ScaffoldError extends Error {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message);
    this.name = 'ScaffoldError';
  }
}

/**
 * How a new project depends on this nodeworker unless told: an installed copy (anywhere under a
 * node_modules directory, npx's cache included) gives `^<its version>` from the registry; a git
 * checkout gives `file:<checkout>`, so unreleased changes are used.
 */
export function defaultNodeworkerSpec(root: string = PACKAGE_ROOT): string {
  const installed = root.split(sep).includes('node_modules');
  return installed ? `^${packageVersion(root)}` : `file:${root.replace(/[\\/]+$/, '')}`;
}

function packageVersion(root: string): string {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string };
  if (!pkg.version) throw new Error(`${join(root, 'package.json')} has no version`);
  return pkg.version;
}

/** A valid npm package name from a directory name: lower case, [a-z0-9-._], not starting with . or _. */
export function packageName(raw: string): string {
  const name = raw
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[._-]+/, '')
    .replace(/-+$/, '')
    .slice(0, 214);
  return name || 'my-worker';
}

function toolVersions(root: string): TemplateValues['versions'] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
  const all = { ...pkg.dependencies, ...pkg.devDependencies };
  return {
    zod: all.zod ?? '^4.0.0',
    typescript: all.typescript ?? '^5.9.0',
    vitest: all.vitest ?? '^3.2.0',
    typesNode: all['@types/node'] ?? '^20.0.0',
  };
}

export function scaffold(opts: ScaffoldOptions): ScaffoldResult {
  if (!opts.dir) throw new ScaffoldError('DIR', 'the directory to create is required: nodeworker init DIR');
  const dir = resolve(opts.dir);
  if (existsSync(dir)) {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      throw new ScaffoldError('DIR', `${dir} exists and is not a directory`);
    }
    if (entries.length > 0 && !opts.force)
      throw new ScaffoldError('DIR', `${dir} is not empty (${entries.length} entries): choose a new directory, or pass --force to write into it`);
  }
  const name = opts.name ?? packageName(basename(dir));
  if (!/^(@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/.test(name))
    throw new ScaffoldError('--name', `"${name}" is not a valid npm package name (lower case letters, digits, - . _)`);
  const root = PACKAGE_ROOT;
  const nodeworkerSpec = opts.nodeworkerSpec ?? defaultNodeworkerSpec(root);
  if (nodeworkerSpec.trim() === '') throw new ScaffoldError('--nodeworker-spec', 'must not be empty');
  const values: TemplateValues = { name, nodeworkerSpec, versions: toolVersions(root) };
  const files: Array<[string, string]> = [
    ['package.json', packageJson(values)],
    ['tsconfig.json', tsconfigJson()],
    ['worker.ts', workerTs()],
    ['test/worker.test.ts', workerTestTs()],
    ['README.md', readme(values)],
    ['.gitignore', gitignore()],
  ];
  for (const [rel, text] of files) {
    const path = join(dir, rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
  return { dir, name, nodeworkerSpec, files: files.map(([rel]) => rel) };
}
