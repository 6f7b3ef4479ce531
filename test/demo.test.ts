/**
 * `nodeworker demo` (what `npm start` runs) as a user runs it: the compiled CLI in its own
 * process, real workers under it. It must serve requests and, whether it stops by itself
 * (--duration) or on a signal, leave no process behind. A process belongs to a demo run when its
 * environment names the run's data dir (every worker's WORKSPACE_DIR lives there).
 * Needs `npm run build`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const CLI = resolve('dist/cli.js');

/** Pids of live processes whose environment mentions `marker`. */
function processesWith(marker: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (/^\S+ \(.*\) [ZX] /.test(stat)) continue; // exited, awaiting a reaper
      if (readFileSync(`/proc/${name}/environ`, 'utf8').includes(marker)) out.push(Number(name));
    } catch {
      /* gone or not ours */
    }
  }
  return out;
}

interface DemoRun {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

function runDemo(args: string[]): { run: DemoRun; dataDir: string } {
  const dataDir = mkdtempSync(join(tmpdir(), 'demo-test-'));
  const child = spawn(process.execPath, [CLI, 'demo', '--no-tty', '--data-dir', dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
    }
    // Whatever a failed run left: ended here so that one failure does not leak into other tests.
    for (const pid of processesWith(dataDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { run: { child, output: () => out, exited }, dataDir };
}

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('nodeworker demo', () => {
  it('serves requests through the autoscaler and real workers, then exits cleanly after --duration', async () => {
    const { run, dataDir } = runDemo(['--duration', '13', '--period', '30', '--max-workers', '2']);
    await until('workers running', () => processesWith(dataDir).length >= 3, 15_000);
    const code = await run.exited;
    const out = run.output();
    expect(code, out).toBe(0);
    expect(out).toMatch(/worker \d+: loading → ready \(model loaded/);
    const served = /requests: (\d+) served, (\d+) failed.* of (\d+) in/.exec(out);
    expect(served, out).not.toBeNull();
    expect(Number(served![1])).toBeGreaterThan(5);
    expect(out).toMatch(/all \d+ processes the demo started have ended/);
    // Checked from outside as well: nothing of the run is alive, no workspace is left.
    expect(processesWith(dataDir)).toEqual([]);
    expect(readdirSync(join(dataDir, 'workers')).filter((n) => n.startsWith('worker-'))).toEqual([]);
    // The engine log is there and carries no secret (MASTER_TOKENs are 48 hex characters).
    const log = readFileSync(join(dataDir, 'autoscaler.log'), 'utf8');
    expect(log).toContain('"event":"worker_state"');
    expect(log).not.toMatch(/[0-9a-f]{48}/);
  }, 60_000);

  it('stops every process it started on SIGINT', async () => {
    const { run, dataDir } = runDemo(['--max-workers', '2']);
    await until('a ready worker', () => /loading → ready/.test(run.output()), 30_000);
    const during = processesWith(dataDir);
    expect(during.length).toBeGreaterThanOrEqual(3);
    run.child.kill('SIGINT');
    const code = await run.exited;
    expect(code, run.output()).toBe(0);
    expect(run.output()).toMatch(/stopping \(SIGINT\)/);
    expect(processesWith(dataDir)).toEqual([]);
  }, 60_000);
});
