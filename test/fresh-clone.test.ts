/**
 * A new user's first hour (issue 16), from committed HEAD: clone the repository into an empty
 * temp dir (nothing beside it, HOME pointing into the temp dir), `npm ci`, `npm run simulate` on
 * the shipped trace, `npm pack`, install the tarball into an empty project, then `npx nodeworker
 * --help`, `npx nodeworker init`, and the scaffold's `npm install`, `npm run build` and `npm test`
 * (with no registry holding nodeworker: it installs from the tarball). Anything the project reads from outside its own tree, or a
 * package that does not work once installed, fails here. Packages come from the npm cache
 * (--prefer-offline); the scaffold's tools (typescript, vitest) come from the registry when the cache lacks them.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

const REPO = resolve(__dirname, '..');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

let root: string;
let env: NodeJS.ProcessEnv;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fresh-clone-'));
  const cache = execFileSync(NPM, ['config', 'get', 'cache'], { encoding: 'utf8' }).trim();
  // Nothing of the running `npm test` may leak into the clone's npm runs (npm_package_json, INIT_CWD, …).
  env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD' && !k.startsWith('VITEST')));
  Object.assign(env, {
    HOME: join(root, 'home'),
    npm_config_cache: cache,
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    XDG_STATE_HOME: '',
    CI: '1',
  });
  mkdirSync(env.HOME!);
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
}, 120_000); // two node_modules trees: slow to remove on a busy machine

/** Run a command; resolves with its stdout; on failure the error carries both outputs. */
function sh(cmd: string, args: string[], cwd: string): Promise<string> {
  const started = Date.now();
  return new Promise((ok, fail) => {
    execFile(cmd, args, { cwd, env, maxBuffer: 32 << 20, timeout: 600_000 }, (err, stdout, stderr) => {
      // Each step's time, for the report (a figure, not an assertion).
      console.log(`fresh-clone: ${cmd} ${args.slice(0, 3).join(' ')}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
      if (err) fail(new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n${stdout}\n${stderr}`));
      else ok(stdout);
    });
  });
}

it('clone → npm ci → simulate → pack → install the tarball → nodeworker --help → init → the scaffold installs, builds and passes its test', async () => {
  const clone = join(root, 'nodeworker');
  await sh('git', ['clone', '--quiet', '--no-hardlinks', REPO, clone], root);
  expect(readdirSync(root).sort()).toEqual(['home', 'nodeworker']);

  await sh(NPM, ['ci', '--prefer-offline'], clone); // runs `prepare`: the build
  expect(existsSync(join(clone, 'dist', 'cli.js'))).toBe(true);

  const sim = await sh(NPM, ['run', 'simulate'], clone);
  expect(sim).toMatch(/wrote\s+.*report\.json/);
  const report = JSON.parse(readFileSync(join(clone, '.artifacts', 'simulate', 'report.json'), 'utf8')) as Record<string, unknown>;
  expect(Object.keys(report).length).toBeGreaterThan(0);

  const packed = await sh(NPM, ['pack', '--ignore-scripts', '--pack-destination', root], clone);
  const tarball = join(root, packed.trim().split('\n').at(-1)!.trim());
  expect(existsSync(tarball), packed).toBe(true);

  const project = join(root, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'first-try', version: '1.0.0', private: true }));
  await sh(NPM, ['install', '--prefer-offline', tarball], project);

  const help = await sh(NPM, ['exec', '--offline', '--', 'nodeworker', '--help'], project);
  expect(help).toMatch(/usage: nodeworker <command>/);
  for (const command of ['worker', 'model-sim', 'benchmark', 'autoscaler', 'simulate', 'init', 'demo']) expect(help).toContain(`  ${command}`);

  await sh(NPM, ['exec', '--offline', '--', 'nodeworker', 'init', 'my-worker'], project);
  const created = JSON.parse(readFileSync(join(project, 'my-worker', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  // No registry holds nodeworker: the scaffold depends on the tarball the user installed from.
  expect(created.dependencies.nodeworker).toBe(`file:${tarball}`);

  // The steps `init` prints, in the scaffold: install (nodeworker from the tarball, the rest from
  // the npm cache or the registry), build, and its own test against the model simulator.
  const scaffold = join(project, 'my-worker');
  await sh(NPM, ['install', '--prefer-offline'], scaffold);
  await sh(NPM, ['run', 'build'], scaffold);
  expect(existsSync(join(scaffold, 'dist', 'worker.js'))).toBe(true);
  const tested = await sh(NPM, ['test'], scaffold);
  expect(tested.replace(/\x1b\[[0-9;]*m/g, '')).toMatch(/Tests\s+4 passed \(4\)/);

  // The shipped trace is found from the installed package, whatever the working directory (issue 25 item 8).
  const frontier = await sh(NPM, ['exec', '--offline', '--', 'nodeworker', 'simulate', '--frontier', '--out', join(root, 'frontier')], project);
  expect(frontier).toMatch(/swept \d+ points/);
  expect(existsSync(join(root, 'frontier', 'frontier.json'))).toBe(true);

  // The built-in handlers resolve inside the installed package (by its own name, not by a path).
  const loaded = await sh(
    process.execPath,
    ['--input-type=module', '-e', "const m = await import('nodeworker/handlers/openai'); console.log(typeof m.default.handlers)"],
    join(project, 'node_modules', 'nodeworker'),
  );
  expect(loaded.trim()).toBe('object');

  // Nothing built or installed refers back to the checkout the clone came from.
  const grep = spawnSync('grep', ['-rlF', REPO, join(clone, 'dist'), join(project, 'node_modules', 'nodeworker')], { encoding: 'utf8' });
  expect(grep.status, grep.stderr).toBe(1); // 1: no match
  expect(grep.stdout).toBe('');
}, 1_800_000); // a hang guard: `npm ci` alone took 4 min on the busy shared machine
