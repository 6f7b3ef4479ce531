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
  /** Dependency spec of nodeworker (default: what the installed copy came from, `file:<checkout>` from a checkout; see defaultNodeworkerSpec). */
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
 * How a new project depends on this nodeworker unless told. A git checkout gives `file:<checkout>`,
 * so unreleased changes are used. An installed copy (under a node_modules directory, npx's cache
 * included) gives what it was installed from, since `^<version>` only installs when a registry
 * holds that version: a registry install gives `^<version>`, a git install its git url, a tarball
 * or directory install its absolute `file:` path (the installed package directory itself when that
 * path is gone).
 */
export function defaultNodeworkerSpec(root: string = PACKAGE_ROOT): string {
  const clean = root.replace(/[\\/]+$/, '');
  const parts = clean.split(sep);
  const at = parts.lastIndexOf('node_modules');
  if (at < 0) return `file:${clean}`;
  const project = parts.slice(0, at).join(sep) || sep;
  const resolved = installedFrom(project, parts.slice(at + 1).join('/'));
  if (resolved === undefined || /^https?:/.test(resolved) || /^[~^<>=\d]/.test(resolved)) return `^${packageVersion(clean)}`;
  if (resolved.startsWith('file:')) {
    const target = resolve(project, resolved.slice('file:'.length));
    return existsSync(target) ? `file:${target}` : `file:${clean}`;
  }
  return resolved; // git+https://…, github:…: installs again the same way
}

/**
 * Where npm says the package at node_modules/<name> of `project` came from: the `resolved` of its
 * lockfile entry, else the spec in the project's package.json. Undefined when neither says.
 */
function installedFrom(project: string, name: string): string | undefined {
  for (const lock of [join(project, 'node_modules', '.package-lock.json'), join(project, 'package-lock.json')]) {
    try {
      const parsed = JSON.parse(readFileSync(lock, 'utf8')) as { packages?: Record<string, { resolved?: unknown }> };
      const resolved = parsed.packages?.[`node_modules/${name}`]?.resolved;
      if (typeof resolved === 'string' && resolved !== '') return resolved;
    } catch {
      // no lockfile, or not one npm wrote: try the next source
    }
  }
  try {
    const pkg = JSON.parse(readFileSync(join(project, 'package.json'), 'utf8')) as Record<string, Record<string, unknown> | undefined>;
    for (const field of ['dependencies', 'devDependencies', 'optionalDependencies']) {
      const spec = pkg[field]?.[name];
      if (typeof spec === 'string' && spec !== '') return /^(\.|\/)/.test(spec) ? `file:${spec}` : spec;
    }
  } catch {
    // no package.json above node_modules (npx's cache may have none)
  }
  return undefined;
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
