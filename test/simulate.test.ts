import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/autoscaler/clock.js';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import { oracleCost } from '../src/autoscaler/simulate/oracle.js';
import { parseTimestamp, parseTrace } from '../src/autoscaler/simulate/trace.js';
import { runSimulateCli } from '../src/autoscaler/simulate-cli.js';
import { CODE_TRACE } from './helpers/trace.js';

const TRACE = CODE_TRACE;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'simulate-test-'));
  dirs.push(d);
  return d;
}

describe('trace parsing and the oracle', () => {
  it('parses the Azure format, skipping bad rows, with workload = generated + prompt_share × context', () => {
    const text = 'TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\nnot-a-time,1,1\n2023-11-16 18:17:05.4799600,100,20\n';
    const { requests, skipped } = parseTrace(text, { promptShare: 0.1 });
    expect(skipped).toBe(1);
    expect(requests.map((r) => r.at)).toEqual([0, 1.5]);
    expect(requests[0]!.workload).toBeCloseTo(10 + 480.8, 6);
    const fast = parseTrace(text, { promptShare: 0, speed: 2 });
    expect(fast.requests[1]!.at).toBeCloseTo(0.75, 9);
    expect(fast.requests[1]!.workload).toBe(20);
    expect(parseTimestamp('2023-11-16 18:17:03.5')).toBe(Date.UTC(2023, 10, 16, 18, 17, 3) + 500);
  });

  it('prices exactly the load of each minute on the best perf per dollar machine', () => {
    const requests = [
      { at: 10, contextTokens: 0, generatedTokens: 0, workload: 60_000 }, // minute 0: 1000 load/s
      { at: 70, contextTokens: 0, generatedTokens: 0, workload: 6_000 }, // minute 1: 100 load/s
    ];
    const o = oracleCost(
      requests,
      [
        { name: 'big', perf: 2000, dollarsPerHour: 4 }, // 500 per $
        { name: 'small', perf: 1000, dollarsPerHour: 1 }, // 1000 per $
      ],
      2,
    );
    expect(o.machine).toBe('small');
    expect(o.fluid.gpuHours).toBeCloseTo(66 / 3600, 9); // 66 GPU-seconds
    expect(o.fluid.dollars).toBeCloseTo(66 / 3600, 9);
    expect(o.wholeWorkers.gpuHours).toBeCloseTo(2 / 60, 9); // 1 worker each minute
    expect(o.wholeWorkers.peakWorkers).toBe(1);
  });

  it('the fake clock fires timers in time order and never early', () => {
    const clock = new FakeClock(0);
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`b@${clock.now()}`), 20);
    clock.setTimeout(() => fired.push(`a@${clock.now()}`), 10);
    const every = clock.setInterval(() => fired.push(`i@${clock.now()}`), 15);
    clock.advanceTo(31);
    clock.clearTimer(every);
    clock.advanceTo(100);
    expect(fired).toEqual(['a@10', 'i@15', 'b@20', 'i@30']);
    expect(clock.now()).toBe(100);
    expect(clock.pending()).toBe(0);
  });

  it('the default simulation config parses and overrides merge over it', () => {
    const dir = tmp();
    const over = join(dir, 'over.yaml');
    writeFileSync(over, 'endpoint:\n  max_queue_time: 5\nprovider:\n  machines:\n    rtx4090: { perf: 900 }\n');
    const base = loadSimulationConfig();
    const merged = loadSimulationConfig(over);
    expect(base.endpoint.workergroups[0]!.machine_types.length).toBe(3);
    expect(merged.endpoint.max_queue_time).toBe(5);
    expect(merged.endpoint.name).toBe(base.endpoint.name);
    expect(merged.provider.machines?.rtx4090?.perf).toBe(900);
    expect(merged.provider.machines?.h100?.perf).toBe(base.provider.machines?.h100?.perf);
    writeFileSync(over, 'endpoint:\n  target_util: 7\n');
    expect(() => loadSimulationConfig(over)).toThrow(/endpoint\.target_util/);
  });
});

describe('nodeworker simulate on the shared trace', () => {
  // Wall time (under 10 s for the hour) is measured and reported (report.wallSeconds, docs), not asserted: tests assert no timings.
  it('replays the hour and writes report.json, timeline.csv and timeline.svg', async () => {
    const out = tmp();
    const code = await runSimulateCli(['--trace', TRACE, '--out', out]);
    expect(code).toBe(0);

    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(report.trace.requests).toBe(8819);
    expect(report.trace.attribution).toMatch(/CC-BY 4\.0/);
    const r = report.requests;
    expect(r.served + r.rejected + r.timedOut + r.lost + r.unfinished).toBe(8819);
    expect(r.served).toBeGreaterThan(8000);
    // The oracle is a lower bound.
    expect(report.cost.gpuHours).toBeGreaterThan(report.oracle.fluid.gpuHours);
    expect(report.cost.dollars).toBeGreaterThan(report.oracle.fluid.dollars);
    expect(report.costRatio.vsFluid).toBeGreaterThan(1);
    expect(report.queueTime.p99).toBeGreaterThanOrEqual(report.queueTime.p50);
    expect(report.panic).toBe(true);

    const csv = readFileSync(join(out, 'timeline.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('t_s,load_per_s,ready_capacity,queued,panicking,created,loading,ready,inactive,starting,errored,destroyed');
    expect(csv.length).toBeGreaterThan(300); // a row per 10 s over the hour
    const svg = readFileSync(join(out, 'timeline.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('<polyline');
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });

  it('--no-panic turns the panic window off; bad arguments exit 2', async () => {
    const out = tmp();
    expect(await runSimulateCli(['--trace', TRACE, '--out', out, '--no-panic'])).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(report.panic).toBe(false);
    expect(report.params.panic_window).toBe(0);
    expect(report.panicEpisodes).toBe(0);
    expect(await runSimulateCli(['--out', out])).toBe(2);
    expect(await runSimulateCli(['--trace', TRACE, '--speed', 'fast'])).toBe(2);
    // Strict flags: an unknown one, a bad policy, a pattern that does not exist, contradictory modes.
    expect(await runSimulateCli(['--trace', TRACE, '--bogus'])).toBe(2);
    expect(await runSimulateCli(['--trace', TRACE, '--policy', 'hpa'])).toBe(2);
    expect(await runSimulateCli(['--pattern', 'nope'])).toBe(2);
    expect(await runSimulateCli(['--compare', '--policy', 'kpa'])).toBe(2);
    expect(await runSimulateCli(['--trace', TRACE, '--pattern', 'step-x4'])).toBe(2);
    expect(existsSync(join(out, 'engine.log'))).toBe(false);
  });
});
