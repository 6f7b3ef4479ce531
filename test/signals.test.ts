/**
 * SIGTERM to `npm start` or `npx …` reaches the worker (issue 25 item 6): npm signals its `sh -c`
 * shell, which dies without passing the signal on; the worker must not be left running with no
 * parent. Real processes: npm, its shell, the worker (dist/cli.js; needs `npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, expect, it } from 'vitest';

const REPO = resolve(__dirname, '..');
const CLI = join(REPO, 'dist', 'cli.js');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const dir = mkdtempSync(join(tmpdir(), 'signals-'));
const started: number[] = [];

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

afterAll(() => {
  for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function waitUntil(what: string, cond: () => boolean, ms = 180_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Run `npm args` in the project; resolves with npm's process and the worker's pid (from its log). */
async function npmWorker(args: string[]): Promise<{ npm: ChildProcess; workerPid: number; out: () => string }> {
  // Without `exec` in the script, as a user's own script may be: the guard must still end the worker.
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'signals', version: '1.0.0', private: true, scripts: { start: `node ${JSON.stringify(CLI)} worker --handler hello` } }),
  );
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k))),
    CONTAINER_ID: '3',
    UNSECURED: 'true',
    WORKER_PORT: '0',
    WORKER_HTTP_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    MODEL_SERVER_URL: 'http://127.0.0.1:9',
    LOG_FORMAT: 'json',
    DRAIN_TIMEOUT: '1',
  };
  const npm = spawn(NPM, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(npm.pid!);
  let out = '';
  npm.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  npm.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  let workerPid = 0;
  await waitUntil(`the worker's listening line\n${out}`, () => {
    const line = out.split('\n').find((l) => l.includes('"worker listening"'));
    if (line) workerPid = (JSON.parse(line) as { pid: number }).pid;
    return workerPid > 0;
  });
  started.push(workerPid);
  return { npm, workerPid, out: () => out };
}

it('SIGTERM to `npm start` ends the worker it started', async () => {
  const { npm, workerPid, out } = await npmWorker(['start']);
  expect(workerPid).not.toBe(npm.pid);
  npm.kill('SIGTERM');
  await waitUntil(`the worker (pid ${workerPid}) to exit\n${out()}`, () => !alive(workerPid));
}, 400_000); // hang guards: npm itself takes tens of seconds to start on a busy machine

it('SIGTERM to `npm exec` (what npx runs) ends the worker it started', async () => {
  const { npm, workerPid, out } = await npmWorker(['exec', '--', 'node', CLI, 'worker', '--handler', 'hello']);
  npm.kill('SIGTERM');
  await waitUntil(`the worker (pid ${workerPid}) to exit\n${out()}`, () => !alive(workerPid));
}, 400_000); // hang guards: npm itself takes tens of seconds to start on a busy machine
