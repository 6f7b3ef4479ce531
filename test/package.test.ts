/**
 * What `npm pack` ships (issue 16): what runs (dist/, its types, the built-in handlers, the YAML
 * configs, the dashboard client, on_start.sh) and the README and docs; never a key, a test, a
 * TypeScript source, a benchmark, a script, a run output or CI glue. A private key left in the
 * tree by an autoscaler run (the finding) is planted and must stay out.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

const REPO = resolve(__dirname, '..');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const planted: string[] = [];

function plant(rel: string, text: string): void {
  const file = join(REPO, rel);
  if (existsSync(file)) return;
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, text);
  planted.push(rel.split('/')[0]!);
}

let files: string[];
let pack: { entryCount: number; size: number; unpackedSize: number };
beforeAll(() => {
  plant('autoscaler-data/engine_key.pem', '-----BEGIN PRIVATE KEY-----\nplanted by test/package.test.ts\n-----END PRIVATE KEY-----\n');
  plant('load-results/load-test/requests.csv', 'id\n1\n');
  // --ignore-scripts: `npm test` has just built; packing must not rebuild under the running suite.
  const out = execFileSync(NPM, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const [result] = JSON.parse(out) as Array<typeof pack & { files: Array<{ path: string }> }>;
  pack = result!;
  files = result!.files.map((f) => f.path);
}, 60_000);
afterAll(() => {
  for (const dir of planted) rmSync(join(REPO, dir), { recursive: true, force: true });
});

it('ships what runs: the CLI, the library and its types, the handlers, configs, dashboard client, on_start.sh, docs', () => {
  for (const f of [
    'package.json',
    'README.md',
    'on_start.sh',
    'dist/cli.js',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/client/index.js',
    'dist/client/index.d.ts',
    'dist/handlers/openai.js',
    'dist/handlers/openai.d.ts',
    'dist/handlers/hello.js',
    'dist/autoscaler/simulate.default.yaml',
    'dist/autoscaler/autoscaler.example.yaml',
    'dist/autoscaler/autoscaler.vast.yaml',
    'dist/autoscaler/vast-market.example.yaml',
    'dist/autoscaler/providers/vast/emulator-cli.js',
    'dist/autoscaler/dashboard/client/app.js',
    'docs/autoscaler.md',
    'docs/providers.md',
    // simulate --compare/--frontier default to it, from any directory (issue 25 item 8); its licence note beside it
    'data/azure-llm-2023-code.csv',
    'data/README.md',
    'LICENSE',
  ]) {
    expect(files, f).toContain(f);
  }
});

it('ships no key, secret, test, source, benchmark, script, run output, map or CI file', () => {
  const forbidden = files.filter(
    (f) =>
      /\.(pem|key|crt|p12|tgz|map|tsbuildinfo)$/.test(f) ||
      /(^|\/)(\.env|admin_key|engine_key[^/]*)$/.test(f) ||
      /(^|\/)(test|tests|__tests__)\//.test(f) ||
      /\.test\.[jt]s$/.test(f) ||
      (/\.ts$/.test(f) && !/\.d\.ts$/.test(f)) ||
      (/^data\//.test(f) && !['data/azure-llm-2023-code.csv', 'data/README.md'].includes(f)) ||
      /^(src|handlers|benchmarks|scripts|build|\.ci|\.artifacts|autoscaler-data|load-results|node_modules)\//.test(f),
  );
  expect(forbidden).toEqual([]);
});

it('every shipped module has a source (a stale build must not ship deleted code)', () => {
  const orphans = files
    .filter((f) => f.startsWith('dist/') && f.endsWith('.js'))
    .map((f) => f.slice('dist/'.length).replace(/\.js$/, '.ts'))
    .filter((rel) => !existsSync(join(REPO, 'src', rel)) && !(rel.startsWith('handlers/') && existsSync(join(REPO, rel))));
  expect(orphans).toEqual([]);
});

it('is small, and the browser driver used only by a test is not a runtime dependency', () => {
  // Before issue 16: 664 files, 3.9 MB unpacked (tests, sources, benchmarks, maps, a private key).
  expect(pack.entryCount).toBeLessThan(400);
  // Since issues 23 and 25: the Vast provider and emulator, and the 320 KB trace `simulate` replays.
  expect(pack.unpackedSize).toBeLessThan(2_500_000);
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
  expect(Object.keys(pkg.dependencies)).not.toContain('playwright-core');
  expect(Object.keys(pkg.devDependencies)).toContain('playwright-core');
});

it('pins exactly the dependency whose private internals src/worker/logwatch.ts relies on, and ships the MIT licence it declares', () => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; license: string };
  expect(pkg.dependencies['tail-file']).toMatch(/^\d+\.\d+\.\d+$/);
  expect(pkg.license).toBe('MIT');
  expect(readFileSync(join(REPO, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n/);
});
