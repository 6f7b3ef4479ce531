import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { closest } from '../common/args.js';
import { ConfigError, defineWorker, type WorkerDefinition, type WorkerSpec } from './config.js';

/**
 * Built-in handler names and the module of each. They are compiled into the package's
 * dist/handlers/ and loaded through the package's own name, so the library never imports them
 * (handlers import the library, as any custom handler does).
 */
export const BUILTIN_HANDLERS: Readonly<Record<string, string>> = {
  openai: 'openai',
  vllm: 'openai',
  tgi: 'tgi',
  comfyui: 'comfyui',
  hello: 'hello',
};

const builtinList = () => Object.keys(BUILTIN_HANDLERS).join(', ');

/**
 * Resolve `--handler NAME|PATH` (or BACKEND) to a validated worker definition. A PATH is a compiled
 * ES module whose default export is a WorkerSpec (or the result of defineWorker).
 */
export async function loadWorkerDefinition(nameOrPath: string | undefined, overrides: Partial<WorkerSpec> = {}): Promise<WorkerDefinition> {
  if (!nameOrPath) {
    throw new ConfigError([`no handler: pass --handler NAME|PATH or set BACKEND (built-in: ${builtinList()})`]);
  }
  const builtin = BUILTIN_HANDLERS[nameOrPath];
  const spec = builtin ? await loadBuiltin(builtin) : await loadModule(nameOrPath);
  return defineWorker({ ...spec, ...stripUndefined(overrides) });
}

async function loadBuiltin(module: string): Promise<WorkerSpec> {
  // A computed specifier: resolved at run time through package.json's "./handlers/*" export.
  const specifier = `nodeworker/handlers/${module}`;
  const mod = (await import(specifier)) as { default: WorkerSpec };
  return mod.default;
}

async function loadModule(path: string): Promise<WorkerSpec> {
  const file = resolve(path);
  if (!existsSync(file)) {
    const near = closest(path, Object.keys(BUILTIN_HANDLERS));
    throw new ConfigError([`handler "${path}" is neither a built-in (${builtinList()}) nor an existing file${near ? ` (did you mean ${near}?)` : ''}`]);
  }
  if (['.ts', '.mts', '.cts'].includes(extname(file))) {
    throw new ConfigError([
      `handler ${file} is TypeScript: compile it first (e.g. \`npx tsc\`, as \`npm run build\` does in a project made by \`nodeworker init\`) and pass the compiled .js file`,
    ]);
  }
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (err) {
    // V8's SyntaxError from import() names no file or line: find them (see syntaxErrorAt).
    const where = err instanceof SyntaxError ? syntaxErrorAt(file) : null;
    throw new ConfigError([`handler module ${file} failed to load: ${where ?? (err as Error).message}`]);
  }
  const exported = mod.default as WorkerSpec | WorkerDefinition | undefined;
  if (!exported || typeof exported !== 'object') throw new ConfigError([`handler module ${file} has no default export (export default defineWorker({...}))`]);
  return 'spec' in exported && 'handlers' in exported && 'benchmarkHandler' in exported ? (exported as WorkerDefinition).spec : (exported as WorkerSpec);
}

/**
 * `file:line:column: SyntaxError: …` and the line with its caret, from Node's own syntax check of
 * the file's text (`node --check`, which prints the location that import() leaves out); null
 * when the check passes (the error is then in a module it imports, named by Node's message).
 */
function syntaxErrorAt(file: string): string | null {
  const type = file.endsWith('.cjs') ? 'commonjs' : 'module';
  const r = spawnSync(process.execPath, [`--input-type=${type}`, '--check'], { input: readFileSync(file), encoding: 'utf8', timeout: 20_000 });
  const m = /^\[stdin\]:(\d+)\n([^\n]*)\n([^\n]*)\n\n(SyntaxError: [^\n]*)/.exec(r.stderr ?? '');
  if (!m) return null;
  const [, line, code, caret, message] = m;
  const column = caret!.indexOf('^') + 1;
  return `${message} at ${file}:${line}:${column}\n  ${code}\n  ${caret}`;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
