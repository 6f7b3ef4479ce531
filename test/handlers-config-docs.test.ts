import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { engineTimingSchema } from '../src/autoscaler/config.js';
import { DEFAULT_PARAMS } from '../src/autoscaler/params.js';
import { parseWorkerEnv } from '../src/worker/env.js';

/**
 * docs/configuration.md against the code: every option of WorkerSpec / HandlerSpec /
 * BenchmarkSpec, every environment variable the worker, on_start.sh, the handlers and the tools
 * read, and every autoscaler parameter with its default must be on the page.
 */
const ROOT = resolve(__dirname, '..');
const doc = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');
const mentioned = (name: string) => doc.includes('`' + name + '`');

/** Property names of `export interface NAME { ... }` in a source file. */
function interfaceKeys(file: string, name: string): string[] {
  const src = readFileSync(join(ROOT, file), 'utf8');
  const start = src.indexOf(`export interface ${name}`);
  expect(start, `interface ${name} in ${file}`).toBeGreaterThanOrEqual(0);
  const open = src.indexOf('{', start);
  let depth = 0;
  let end = open;
  for (; end < src.length; end++) {
    if (src[end] === '{') depth++;
    else if (src[end] === '}' && --depth === 0) break;
  }
  const body = src.slice(open + 1, end);
  return [...body.matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]!);
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The documented default in a table row `| \`key\` | default | ...`. */
function documentedDefault(key: string): string | undefined {
  return new RegExp('^\\| `' + key + '` \\| ([^|]+) \\|', 'm').exec(doc)?.[1]?.trim();
}

describe('docs/configuration.md', () => {
  it('lists every option of WorkerSpec, HandlerSpec, BenchmarkSpec and LogActions', () => {
    const missing: string[] = [];
    for (const key of interfaceKeys('src/worker/config.ts', 'WorkerSpec')) if (key !== 'logActions' && !mentioned(key)) missing.push(`WorkerSpec.${key}`);
    for (const key of interfaceKeys('src/worker/config.ts', 'LogActions')) if (!mentioned(`logActions.${key}`)) missing.push(`logActions.${key}`);
    for (const key of interfaceKeys('src/worker/config.ts', 'HandlerSpec')) if (!mentioned(key)) missing.push(`HandlerSpec.${key}`);
    for (const key of interfaceKeys('src/worker/config.ts', 'BenchmarkSpec')) if (!mentioned(key)) missing.push(`BenchmarkSpec.${key}`);
    expect(missing).toEqual([]);
  });

  it("lists every variable of the worker's environment", () => {
    // The schema's keys (optional ones included), and what parsing really yields.
    const src = readFileSync(join(ROOT, 'src', 'worker', 'env.ts'), 'utf8');
    const schema = src.slice(src.indexOf('const envSchema'), src.indexOf('});', src.indexOf('const envSchema')));
    const names = new Set([...schema.matchAll(/^ {2}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1]!));
    for (const k of Object.keys(parseWorkerEnv({ CONTAINER_ID: '1' }))) if (/^[A-Z][A-Z0-9_]+$/.test(k)) names.add(k);
    expect(names.size).toBeGreaterThan(15);
    expect([...names].filter((n) => !mentioned(n))).toEqual([]);
  });

  it('lists every variable read by the code, the handlers, the scripts and on_start.sh', () => {
    const files = [...sourceFiles(join(ROOT, 'src')), ...sourceFiles(join(ROOT, 'handlers')), ...sourceFiles(join(ROOT, 'scripts'))];
    const read = new Set<string>();
    for (const f of files)
      for (const m of readFileSync(f, 'utf8').matchAll(/(?:process\.env\.|process\.env\[\s*'|FromEnv\(\s*')([A-Z][A-Z0-9_]+)/g)) read.add(m[1]!);
    // The shell's own and the inherited ones are not configuration.
    const notConfig = new Set(['PATH', 'HOME', 'CI']);
    const onStart = readFileSync(join(ROOT, 'on_start.sh'), 'utf8');
    for (const m of onStart.matchAll(/\$\{([A-Z][A-Z0-9_]+):-/g)) read.add(m[1]!);
    const missing = [...read].filter((n) => !notConfig.has(n) && !mentioned(n) && !mentioned(`${n}_<WORKER_PORT>`));
    expect(missing).toEqual([]);
  });

  it('gives every endpoint parameter and engine timing with its real default', () => {
    const wrong: string[] = [];
    for (const [key, value] of Object.entries({ ...DEFAULT_PARAMS, ...engineTimingSchema.parse({}) })) {
      const shown = documentedDefault(key);
      const same = typeof value === 'string' ? shown?.trim() === value : shown !== undefined && Number(shown.replace(/\s/g, '')) === value;
      if (!same) wrong.push(`${key}: code ${value}, doc ${shown}`);
    }
    expect(wrong).toEqual([]);
  });
});
