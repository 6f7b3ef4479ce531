import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageName } from '../src/init/scaffold.js';
import { loadWorkerDefinition } from '../src/worker/load-definition.js';

/**
 * `nodeworker init` as a user runs it: the compiled CLI writes a project, the project compiles
 * with its own tsconfig, and its own vitest suite passes (the worker against model-sim).
 * Dependencies come from this checkout's node_modules by symlink (nodeworker itself is linked
 * to the checkout, as the generated `file:` dependency would be) so the test needs no network.
 */
const REPO = resolve(__dirname, '..');
const CLI = join(REPO, 'dist', 'cli.js');
const run = promisify(execFile);

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'init-test-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

/** node_modules of the new project: every package of this checkout, plus nodeworker → the checkout. */
function linkDependencies(project: string): void {
  const nm = join(project, 'node_modules');
  mkdirSync(nm);
  for (const entry of readdirSync(join(REPO, 'node_modules'))) symlinkSync(join(REPO, 'node_modules', entry), join(nm, entry));
  symlinkSync(REPO, join(nm, 'nodeworker'));
}

describe('nodeworker init', () => {
  it('writes a project that builds and whose own test passes', async () => {
    const dir = join(root, 'My Worker');
    const out = await run(process.execPath, [CLI, 'init', dir]);
    expect(out.stdout).toMatch(/created my-worker/);
    for (const f of ['package.json', 'tsconfig.json', 'worker.ts', 'test/worker.test.ts', 'README.md', '.gitignore'])
      expect(existsSync(join(dir, f)), f).toBe(true);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    expect(pkg.name).toBe('my-worker');
    expect(pkg.dependencies.nodeworker).toBe(`file:${REPO}`);
    expect(pkg.devDependencies.vitest).toBe(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).devDependencies.vitest);

    linkDependencies(dir);
    await run(process.execPath, [join(dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: dir });
    expect(existsSync(join(dir, 'dist', 'worker.js'))).toBe(true);

    // What `nodeworker worker --handler dist/worker.js` loads.
    const def = await loadWorkerDefinition(join(dir, 'dist', 'worker.js'));
    expect(def.handlers.map((h) => h.route)).toEqual(['/generate']);
    expect(def.benchmarkHandler.upstreamPath).toBe('/v1/completions');
    expect(def.handlers[0]!.workload({ prompt: 'abcdefgh', max_tokens: 10, stream: false })).toBe(12);

    const test = await run(process.execPath, [join(dir, 'node_modules', 'vitest', 'vitest.mjs'), 'run'], {
      cwd: dir,
      env: { ...process.env, CI: '1', LOG_LEVEL: 'warn' },
    });
    expect(test.stdout.replace(/\x1b\[[0-9;]*m/g, '')).toMatch(/Tests\s+4 passed \(4\)/);
  }, 60_000);

  it('never tells the user to run an UNSECURED worker on every interface', async () => {
    const dir = join(root, 'loopback');
    await run(process.execPath, [CLI, 'init', dir]);
    const lines = ['README.md', 'worker.ts'].flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n'));
    const unsecured = lines.filter((l) => /UNSECURED=true\b.*nodeworker worker/.test(l));
    expect(unsecured.length).toBeGreaterThanOrEqual(2);
    for (const l of unsecured) expect(l).toMatch(/WORKER_HOST=127\.0\.0\.1\b/);
  });

  it('takes another nodeworker spec and a name', async () => {
    const dir = join(root, 'second');
    await run(process.execPath, [CLI, 'init', dir, '--nodeworker-spec', 'git+https://example.invalid/nodeworker.git#v0.1.0', '--name', 'llm-worker']);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    expect(pkg.name).toBe('llm-worker');
    expect(pkg.dependencies.nodeworker).toBe('git+https://example.invalid/nodeworker.git#v0.1.0');
    expect(readFileSync(join(dir, 'README.md'), 'utf8')).toMatch(/^# llm-worker/);
  });

  it('leaves a non-empty directory alone, and names what is wrong', async () => {
    const dir = join(root, 'busy');
    mkdirSync(dir);
    writeFileSync(join(dir, 'keep.txt'), 'mine');
    const err = await run(process.execPath, [CLI, 'init', dir]).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/is not empty.*--force/);
    expect(readdirSync(dir)).toEqual(['keep.txt']);
    const bad = await run(process.execPath, [CLI, 'init', join(root, 'x'), '--name', 'Not Valid!']).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(2);
    expect((bad as { stderr: string }).stderr).toMatch(/--name: "Not Valid!" is not a valid npm package name/);
    const none = await run(process.execPath, [CLI, 'init']).catch((e: { code: number; stderr: string }) => e);
    expect((none as { stderr: string }).stderr).toMatch(/DIR is required/);
  });

  it('makes valid package names from directory names', () => {
    expect(packageName('My Worker')).toBe('my-worker');
    expect(packageName('_private')).toBe('private');
    expect(packageName('!!!')).toBe('my-worker');
  });
});
