/**
 * on_start.sh end to end (issue 3 §8): the real script from this checkout starts model-sim and a
 * worker process, which reports to a recording engine on loopback. Every process is stopped after
 * each test: the script's supervisor by SIGTERM (it drains the worker and stops the model), and
 * anything left over by killing its process group.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startEngine, type TestEngine } from './helpers/engine.js';
import { freePort, useResources } from './helpers/worker.js';

const SCRIPT = resolve('on_start.sh');

const cleanups = useResources();

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Run {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  /** Model and worker pids as written to the workspace's pid files (read once they exist). */
  pids: number[];
}

/** Start on_start.sh in its own process group; stop it (and the groups it made) after the test. */
function runOnStart(env: Record<string, string>): Run {
  const child = spawn('bash', [SCRIPT], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-100_000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-100_000)));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const run: Run = { child, output: () => out, exited, pids: [] };
  const ws = env.WORKSPACE_DIR!;
  // Remember the model/worker pids (their own sessions: not in the script's group).
  const grab = setInterval(() => {
    for (const f of ['.model.pid', '.worker.pid']) {
      try {
        const pid = Number(readFileSync(join(ws, f), 'utf8').trim());
        if (pid > 0 && !run.pids.includes(pid)) run.pids.push(pid);
      } catch {
        /* not yet */
      }
    }
  }, 20);
  cleanups.defer(async () => {
    clearInterval(grab);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 15_000);
      await exited;
      clearTimeout(t);
    }
    for (const pid of run.pids) {
      if (!alive(pid)) continue;
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
  return run;
}

async function engine(): Promise<TestEngine> {
  const e = await startEngine();
  cleanups.defer(() => e.close());
  return e;
}

function workspace(): string {
  const dir = mkdtempSync(join(tmpdir(), 'on-start-'));
  cleanups.defer(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function baseEnv(e: TestEngine, ws: string, id: number): Promise<Record<string, string>> {
  return {
    WORKSPACE_DIR: ws,
    REPORT_ADDR: e.url,
    MASTER_TOKEN: 'on-start-token',
    CONTAINER_ID: String(id),
    WORKER_HOST: '127.0.0.1',
    WORKER_PORT: String(await freePort()),
    WORKER_HTTP_PORT: String(await freePort()),
    MODEL_PORT: String(await freePort()),
    MODEL_SIM_ARGS: '--load-seconds 0.3 --token-rate 5000 --capacity 100000 --ttft-ms 2',
    BENCHMARK_MAX_TOKENS: '4',
  };
}

const readyReports = (e: TestEngine, id: number, after = 0) => e.statuses.filter((s) => s.body.id === id && s.at >= after && (s.body.loadtime as number) > 0);

describe('on_start.sh', () => {
  it('starts model-sim and the worker, which reports ready; a second run on the same workspace stops the first, rotates the log and reaches ready again', async () => {
    const e = await engine();
    const ws = workspace();
    const env = await baseEnv(e, ws, 41);
    const first = runOnStart(env);
    await until(
      () => readyReports(e, 41).length > 0,
      30_000,
      () => `ready report from the first run; output:\n${first.output().slice(-3000)}`,
    );
    const r1 = readyReports(e, 41)[0]!.body;
    expect(r1.max_perf).toBeGreaterThan(0);
    expect(r1.error_msg).toBe('');
    expect(r1.url).toBe(`http://127.0.0.1:${env.WORKER_PORT}`);
    const firstLog = readFileSync(join(ws, 'model.log'), 'utf8');
    expect(firstLog).toContain('Application startup complete.');
    expect(Number(readFileSync(join(ws, '.has_benchmark'), 'utf8'))).toBe(r1.max_perf);

    // The same machine boots again while the first run is still up.
    const second = runOnStart(env);
    expect(await first.exited).toBe(0);
    // The first worker's last report (sent while draining) also carries its loadtime: only
    // reports after the first run ended are the second worker's.
    const secondAt = Date.now();
    await until(
      () => readyReports(e, 41, secondAt).length > 0,
      30_000,
      () => `ready report from the second run; output:\n${second.output().slice(-3000)}`,
    );
    expect(readyReports(e, 41, secondAt)[0]!.body.max_perf).toBe(r1.max_perf);
    // The first boot's log was rotated away; the new log is this boot's alone.
    const old = readFileSync(join(ws, 'model.log.old'), 'utf8');
    expect(old.startsWith(firstLog)).toBe(true);
    const count = (text: string) => text.split('Application startup complete.').length - 1;
    expect(count(old)).toBe(1);
    expect(count(readFileSync(join(ws, 'model.log'), 'utf8'))).toBe(1);
    // Nothing went wrong along the way.
    expect(e.statuses.filter((s) => s.body.error_msg !== '')).toEqual([]);

    const pids = [...second.pids];
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    await until(
      () => pids.every((p) => !alive(p)),
      10_000,
      () => `model and worker gone: ${pids.filter(alive)}`,
    );
    expect(existsSync(join(ws, '.on_start.pid'))).toBe(false);
  });

  it('a broken MODEL_CMD is reported by the script, and the worker reports it too', async () => {
    const e = await engine();
    const ws = workspace();
    const env: Record<string, string> = { ...(await baseEnv(e, ws, 42)), MODEL_CMD: '/nonexistent/model-server --port 1' };
    const run = runOnStart(env);
    await until(
      () => e.statuses.some((s) => s.body.id === 42 && /model server exited with code 127/.test(s.body.error_msg as string)),
      20_000,
      () => run.output().slice(-3000),
    );
    const direct = e.statuses.find((s) => /model server exited/.test(s.body.error_msg as string))!.body;
    expect(direct).toMatchObject({ id: 42, mtoken: 'on-start-token', url: `http://127.0.0.1:${env.WORKER_PORT}` });
    // The worker read the script's marker from the model log: it is errored, and says so itself.
    await until(
      () => e.statuses.some((s) => s.body.id === 42 && /^model error: .*model server exited with code 127/.test(s.body.error_msg as string)),
      20_000,
      () => run.output().slice(-3000),
    );
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  });

  it('an install failure (empty NODEWORKER_DIR, NODEWORKER_REPO a missing path) is reported and the script exits non-zero', async () => {
    const e = await engine();
    const ws = workspace();
    const dir = join(ws, 'empty-install-dir');
    mkdirSync(dir);
    const env: Record<string, string> = {
      ...(await baseEnv(e, ws, 43)),
      NODEWORKER_DIR: dir,
      NODEWORKER_REPO: join(ws, 'no-such-repo'),
      NODEWORKER_REF: 'main',
    };
    const run = runOnStart(env);
    expect(await run.exited).not.toBe(0);
    const report = e.statuses.find((s) => s.body.id === 43)?.body;
    expect(report, run.output()).toBeDefined();
    expect(report!.error_msg).toMatch(/^install failed: git clone .*no-such-repo/);
    expect(report).toMatchObject({ mtoken: 'on-start-token', url: `http://127.0.0.1:${env.WORKER_PORT}` });
    expect(existsSync(join(ws, 'model.log'))).toBe(false);
  });

  it('a checkout whose npm ci fails (no lockfile) is reported as such, and nothing is built or started', async () => {
    const e = await engine();
    const ws = workspace();
    const dir = join(ws, 'broken-checkout');
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'broken-checkout', version: '1.0.0', scripts: { prepare: 'echo prepared > built.txt' } }));
    const env: Record<string, string> = { ...(await baseEnv(e, ws, 44)), NODEWORKER_DIR: dir };
    const run = runOnStart(env);
    expect(await run.exited).not.toBe(0);
    const report = e.statuses.find((s) => s.body.id === 44)?.body;
    expect(report, run.output()).toBeDefined();
    expect(report!.error_msg).toMatch(/^install failed: npm ci in .*broken-checkout: /);
    expect(existsSync(join(dir, 'built.txt'))).toBe(false);
    expect(existsSync(join(ws, 'model.log'))).toBe(false);
  });
});
