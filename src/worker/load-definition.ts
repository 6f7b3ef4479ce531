import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { BUILTIN_HANDLERS } from '../../handlers/index.js';
import { ConfigError, defineWorker, type WorkerDefinition, type WorkerSpec } from './config.js';

/**
 * Resolve `--handler NAME|PATH` (or BACKEND) to a validated worker definition. A PATH is a compiled
 * ES module whose default export is a WorkerSpec (or the result of defineWorker).
 */
export async function loadWorkerDefinition(nameOrPath: string | undefined, overrides: Partial<WorkerSpec> = {}): Promise<WorkerDefinition> {
  if (!nameOrPath) {
    throw new ConfigError([`no handler: pass --handler NAME|PATH or set BACKEND (built-in: ${Object.keys(BUILTIN_HANDLERS).join(', ')})`]);
  }
  let spec: WorkerSpec;
  const builtin = BUILTIN_HANDLERS[nameOrPath];
  if (builtin) {
    spec = await builtin();
  } else {
    const file = resolve(nameOrPath);
    if (!existsSync(file)) {
      throw new ConfigError([`handler "${nameOrPath}" is neither a built-in (${Object.keys(BUILTIN_HANDLERS).join(', ')}) nor an existing file`]);
    }
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (err) {
      throw new ConfigError([`handler module ${file} failed to load: ${(err as Error).message}`]);
    }
    const exported = mod.default as WorkerSpec | WorkerDefinition | undefined;
    if (!exported || typeof exported !== 'object') throw new ConfigError([`handler module ${file} has no default export (export default defineWorker({...}))`]);
    spec = 'spec' in exported && 'handlers' in exported && 'benchmarkHandler' in exported ? (exported as WorkerDefinition).spec : (exported as WorkerSpec);
  }
  return defineWorker({ ...spec, ...stripUndefined(overrides) });
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
