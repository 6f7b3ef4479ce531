/**
 * `npm test` on a fresh machine (issue 25 item 3): every step runs even after one failed, and a
 * test needing a program from outside npm skips with its reason unless CI requires the program.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { promtoolTool } from './helpers/external-tools.js';

const REPO = resolve(__dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'test-all-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('scripts/test-all.mjs (npm test)', () => {
  /** Fake npm and npx on PATH: each records its arguments and fails when they match the sh case pattern `failOn`. */
  function run(failOn: string) {
    const bin = mkdtempSync(join(dir, 'bin-'));
    const record = join(bin, 'calls.txt');
    for (const name of ['npm', 'npx']) {
      const fake = join(bin, name);
      writeFileSync(fake, `#!/bin/sh\necho "${name} $*" >> '${record}'\ncase "$*" in ${failOn}) exit 3;; esac\nexit 0\n`);
      chmodSync(fake, 0o755);
    }
    const r = spawnSync(process.execPath, [join(REPO, 'scripts', 'test-all.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    return { status: r.status, stderr: r.stderr, calls: readFileSync(record, 'utf8').trim().split('\n') };
  }

  it('a failing vitest run still runs the fresh-clone test, and the whole fails naming the step', () => {
    const r = run('*vitest*');
    expect(r.calls).toEqual(['npm run build', 'npm run typecheck', 'npm run lint', 'npx vitest run --exclude test/fresh-clone.test.ts', 'npm run test:clone']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('FAILED: vitest (exit 3)');
  });

  it('a failing lint and a failing fresh-clone test are both named', () => {
    const r = run('*run?lint*|*test:clone*');
    expect(r.calls).toHaveLength(5);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/FAILED: lint \(exit 3\), fresh-clone \(exit 3\)/);
  });

  it('all passing exits 0; a failing build stops at once', () => {
    expect(run('*no-such-step*').status).toBe(0);
    const r = run('*build*');
    expect(r.calls).toEqual(['npm run build']);
    expect(r.status).toBe(1);
  });
});

describe('a program from outside npm', () => {
  it('missing: skipped with the reason printed; required by NODEWORKER_REQUIRE_TOOLS=1 (.ci/run): an error', () => {
    const saved = { PATH: process.env.PATH, REQ: process.env.NODEWORKER_REQUIRE_TOOLS };
    try {
      process.env.PATH = join(dir, 'empty');
      delete process.env.NODEWORKER_REQUIRE_TOOLS;
      const missing = promtoolTool();
      expect(missing.available).toBe(false);
      expect(missing.reason).toMatch(/promtool is not installed \(apt-get install prometheus; \.ci\/run installs it\)/);
      process.env.NODEWORKER_REQUIRE_TOOLS = '1';
      expect(() => promtoolTool()).toThrow(/NODEWORKER_REQUIRE_TOOLS=1 requires it/);
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.REQ === undefined) delete process.env.NODEWORKER_REQUIRE_TOOLS;
      else process.env.NODEWORKER_REQUIRE_TOOLS = saved.REQ;
    }
  });

  it('.ci/run installs them and requires them', () => {
    const ci = readFileSync(join(REPO, '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/prometheus/);
    expect(ci).toMatch(/chromium/);
    expect(ci).toMatch(/export NODEWORKER_REQUIRE_TOOLS=1\n(.*\n)*npm test/);
  });
});
