/**
 * The performance suite must not rot (issue 7): `node build/benchmarks/run.js --quick` runs every
 * section end to end on tiny loads (undici generator, nothing installed) and its formatter prints
 * the one table and every target. No figure is judged here (timings belong to the benchmark, not
 * to tests); what is checked is that every section measured something real and without errors.
 * Needs the compiled tree (`npm run build`, as `npm test` does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SuiteReport } from '../benchmarks/run.js';

const dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
let child: ChildProcess | null = null;

afterAll(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('npm run bench (quick mode)', () => {
  it('runs every section and prints the table with every target', async () => {
    const jsonFile = join(dir, 'report.json');
    const run = spawn(process.execPath, ['build/benchmarks/run.js', '--quick', '--json', jsonFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = run;
    let out = '';
    let err = '';
    run.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    run.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const code = await new Promise<number | null>((resolve) => run.once('exit', (c) => resolve(c)));
    expect(code, `stderr:\n${err}`).toBe(0);

    // The one table, side by side, and the targets.
    expect(out).toMatch(/^\| measure \| direct \|( nginx \|)? worker \|/m);
    for (const row of [
      'small JSON c=1: req/s',
      'small JSON c=8: proxy CPU µs/request',
      'streamed: time to first byte',
      'open SSE streams: RSS MB',
      'model ready line → ready',
      'reporter + metrics + signatures off → on',
    ]) {
      expect(out).toContain(row);
    }
    const targets = out.split('\n').filter((l) => /^\| .* \| (PASS|MISS|n\/a) \|$/.test(l));
    // 8 of the worker, 7 of the autoscaler at scale (4 in wall time, 3 in its CPU time), 3 of the simulator (CPU, wall, RSS).
    expect(targets).toHaveLength(18);
    // Judged on the event-loop thread's own CPU where Linux gives it (the label says so), else on the process's.
    expect(out).toMatch(/^\| autoscaler, 100 workers: tick CPU( \(event-loop thread\))? \|/m);
    expect(out).toMatch(/^\| autoscaler, 100 workers: \/route\/ throughput \|/m);
    expect(out).toContain('| stock (node:http + undici) |');

    const report = JSON.parse(readFileSync(jsonFile, 'utf8')) as SuiteReport;
    expect(report.failures).toEqual([]);
    const loads = report.proxy!.loads;
    expect(loads.length).toBeGreaterThanOrEqual(4);
    for (const l of loads) {
      expect(l.load.requests, `${l.target} c=${l.concurrency}`).toBeGreaterThan(0);
      expect(l.load.errors, `${l.target} c=${l.concurrency}`).toBe(0);
    }
    expect(loads.find((l) => l.target === 'worker')!.proxyCpuUs).toBeGreaterThan(0);
    expect(report.proxy!.streams.find((s) => s.target === 'worker')!.events).toBeGreaterThan(0);
    expect(report.streams!.streaming).toBe(report.streams!.streams);
    expect(report.streams!.rssMb).toBeGreaterThan(0);
    expect(report.ready!.samples).toBe(2);
    expect(report.overhead!.errors).toBe(0);
    expect(report.overhead!.onRps).toBeGreaterThan(0);
    expect(report.ablation!.rows.map((r) => r.errors)).toEqual([0, 0, 0, 0]);
    expect(report.extras!.logwatch!.p50Ms).toBeGreaterThan(0);
    // The autoscaler at scale: every worker ready, /route/ answered without errors, ticks and saves seen.
    const eng = report.engine!;
    expect(eng.engine.readyWorkers).toBe(100);
    expect(eng.load.requests).toBeGreaterThan(0);
    expect(eng.load.errors).toBe(0);
    expect(eng.engine.routed).toBeGreaterThan(0);
    expect(eng.engine.ticks).toBeGreaterThan(0);
    expect(eng.cpuPerCallUs).toBeGreaterThan(0);
    // The loop's hold at a 1 ms period: at least the period itself, and measured in the window.
    expect(eng.engine.loopHoldMaxMs).toBeGreaterThanOrEqual(1);
    expect(eng.engine.loopHoldP99Ms).toBeGreaterThanOrEqual(1);
    // The simulator section (×1 in quick mode): the whole trace served, in its own process.
    expect(report.simulate!.rate).toBe(1);
    expect(report.simulate!.requests).toBe(8819);
    expect(report.simulate!.timedOut).toBe(0);
    expect(report.simulate!.maxRssMb).toBeGreaterThan(0);
    expect(report.simulate!.cpuSeconds).toBeGreaterThan(0);
    expect(report.simulate!.gcSeconds).toBeGreaterThanOrEqual(0);
  }, 180_000); // about 50 s alone (fixed-length load runs); generous for a loaded machine
});
