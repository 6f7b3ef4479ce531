import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/autoscaler/clock.js';
import { SimulatedProvider } from '../src/autoscaler/providers/simulated.js';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import { beats, meanRow, type CompareRow } from '../src/autoscaler/simulate/compare.js';
import { oracleCost } from '../src/autoscaler/simulate/oracle.js';
import { patternByName, stepPattern } from '../src/autoscaler/simulate/patterns.js';
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

/** A worker spec for the simulated provider (only the id and the prices matter to it). */
function workerSpec(workerId: number, dollarsPerHour: number, storageDollarsPerHour: number) {
  return {
    workerId,
    masterToken: 't',
    reportAddrs: [],
    endpoint: 'e',
    workergroup: 'g',
    machineType: 'm',
    searchParams: '',
    launch: {},
    dollarsPerHour,
    storageDollarsPerHour,
  };
}

describe('the simulated provider bills GPU time by what it was spent on', () => {
  it('splits boot and load, a request on the model, idleness and a start from inactive', async () => {
    const clock = new FakeClock(0);
    const provider = new SimulatedProvider({
      clock,
      seed: 1,
      defaults: { boot_time: 10, load_time: 20, start_time: 5, failure_rate: 0, crash_rate_per_hour: 0, perf: 100 },
    });
    const { id } = await provider.create(workerSpec(1, 3.6, 0.36));
    clock.advanceTo(30_000); // booted at 10 s, loaded at 30 s: 30 s not serving
    let done = -1;
    expect(provider.submit(id, { idx: 1, workload: 500, onDone: (t) => (done = t) })).toBe('accepted');
    clock.advanceTo(40_000); // 5 s working (500 load at perf 100), then 5 s idle
    expect(done).toBe(35_000);
    await provider.stop(id);
    clock.advanceTo(100_000); // 60 s stopped: storage only
    await provider.start(id);
    clock.advanceTo(110_000); // 5 s starting, then 5 s idle
    const b = provider.billing();
    const s = (h: number) => Math.round(h * 3600 * 1000) / 1000;
    expect(s(b.breakdown.notServing.hours)).toBe(35);
    expect(s(b.breakdown.working.hours)).toBe(5);
    expect(s(b.breakdown.idle.hours)).toBe(10);
    expect(s(b.gpuHours)).toBe(50);
    expect(s(b.storageHours)).toBe(60);
    expect(b.breakdown.working.dollars).toBeCloseTo(0.005, 9); // 5 s at $3.6/h
    expect(b.dollars).toBeCloseTo(0.05 + 0.006, 9);
    provider.resetBilling();
    clock.advanceTo(112_000);
    expect(s(provider.billing().breakdown.idle.hours)).toBe(2);
    await provider.close();
  });
});

describe('the simulated provider: silent deaths per hour of running', () => {
  const spec = (workerId: number) => workerSpec(workerId, 1, 0.1);
  // 360 deaths an hour: one every 10 s on average.
  const make = (clock: FakeClock, seed = 5) =>
    new SimulatedProvider({ clock, seed, defaults: { boot_time: 0, load_time: 0, start_time: 0, failure_rate: 0, crash_rate_per_hour: 360 } });
  /** When the worker dies if it runs from `from` on without a stop (100 ms steps). */
  const deathTime = async (provider: SimulatedProvider, clock: FakeClock, id: number): Promise<number> => {
    for (let t = clock.now(); t < 3_600_000; t += 100) {
      clock.advanceTo(t);
      if (!(await provider.probe(id))) return t;
    }
    throw new Error('never died');
  };

  it('a stop pauses the death clock and a start resumes it: a stopped worker is not spared', async () => {
    const c1 = new FakeClock(0);
    const p1 = make(c1);
    const { id } = await p1.create(spec(1));
    const runFor = await deathTime(p1, c1, id); // the running time this worker has before it dies
    expect(runFor).toBeGreaterThan(0);
    await p1.close();

    const c2 = new FakeClock(0);
    const p2 = make(c2);
    await p2.create(spec(1));
    const half = Math.floor(runFor / 200) * 100; // run about half of it, then stop for 500 s
    c2.advanceTo(half);
    expect(await p2.probe(id)).toBe(true);
    await p2.stop(id);
    c2.advanceTo(half + 500_000);
    await p2.start(id);
    const diedAt = await deathTime(p2, c2, id);
    // The same running time in all: it dies runFor - half after the restart (± one 100 ms step).
    expect(Math.abs(diedAt - (half + 500_000 + (runFor - half)))).toBeLessThanOrEqual(100);
    await p2.close();
  });

  it('each worker draws its own death: other workers and the order of creation do not move it', async () => {
    const alone = new FakeClock(0);
    const pa = make(alone, 9);
    await pa.create(spec(2));
    const t2 = await deathTime(pa, alone, 2);
    await pa.close();

    const both = new FakeClock(0);
    const pb = make(both, 9);
    await pb.create(spec(1)); // created first: it takes its own draw, not worker 2's
    await pb.create(spec(2));
    expect(Math.abs((await deathTime(pb, both, 2)) - t2)).toBeLessThanOrEqual(100);
    await pb.close();
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
    // The GPU time splits into working, idle and not serving; working is the trace's work at the true perf.
    const b = report.cost.breakdown;
    expect(b.working.hours + b.idle.hours + b.notServing.hours).toBeCloseTo(report.cost.gpuHours, 3);
    // Within 3%: the warm-up's last requests (the trace's end, replayed) are still served in the first
    // billed seconds, and the trace's last ones may finish after the billed minutes.
    expect(Math.abs(b.working.hours - report.oracle.fluid.gpuHours) / report.oracle.fluid.gpuHours).toBeLessThan(0.03);
    // Over the target: the requests slower than target_queue_time, consistent with the p99.
    expect(report.queueTime.target).toBe(10);
    expect(report.queueTime.overTargetShare > 0.01).toBe(report.queueTime.p99 > 10);

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
    // Draws: --draws only with --compare, --draw only with --pattern, both whole numbers.
    expect(await runSimulateCli(['--trace', TRACE, '--draws', '3'])).toBe(2);
    expect(await runSimulateCli(['--compare', '--draws', '0'])).toBe(2);
    expect(await runSimulateCli(['--compare', '--draws', '2.5'])).toBe(2);
    expect(await runSimulateCli(['--trace', TRACE, '--draw', '1'])).toBe(2);
    expect(await runSimulateCli(['--pattern', 'step-x4', '--draw', '-1'])).toBe(2);
    expect(existsSync(join(out, 'engine.log'))).toBe(false);
  });

  it('--compare --draws 2: a row per workload and policy, patterns averaged over two draws, the verdict against the baseline', async () => {
    const out = tmp();
    // A short trace keeps this quick: its first ten minutes.
    const lines = readFileSync(TRACE, 'utf8').trim().split('\n');
    const t0 = parseTimestamp(lines[1]!.split(',')[0]!);
    const short = join(out, 'short.csv');
    writeFileSync(short, lines.filter((l, i) => i === 0 || parseTimestamp(l.split(',')[0]!) - t0 < 600_000).join('\n') + '\n');
    // --no-scale: the ×10 and ×100 rows are left out here (simulate-scale.test.ts covers them).
    expect(await runSimulateCli(['--compare', '--trace', short, '--draws', '2', '--no-scale', '--out', out])).toBe(0);
    const rows = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as CompareRow[];
    const workloads = [...new Set(rows.map((r) => r.workload))];
    expect(workloads).toEqual([
      'short',
      'short:first-half',
      'short:second-half',
      'short:rate-x0.5',
      'short:rate-x2',
      'short:shuffled-gaps',
      'step-x4',
      'first-day-2x',
      'diurnal',
      'idle-hour',
      'conversation-like',
    ]);
    expect(rows).toHaveLength(22);
    for (const r of rows) {
      expect(r.draws).toBe(r.workload.startsWith('short') ? 1 : 2);
      expect(r.lost).toBe(0);
      if (r.policy === 'default') {
        expect(r.beatsBaseline).toBeGreaterThanOrEqual(0);
        expect(r.beatsBaseline).toBeLessThanOrEqual(r.draws);
      }
    }
    const md = readFileSync(join(out, 'compare.md'), 'utf8');
    expect(md).toContain('| step-x4 | default | 2 |');
    expect(md).toMatch(/\| (yes|no) \([0-2] of 2 draws\) \|/);
  }, 240_000); // about 20 s alone; the patterns and draws make it the slowest simulate case on a loaded machine

  it('draws of a pattern are other arrivals from the same rates; the compare row is their mean', () => {
    const a = patternByName('step-x4', 0)!;
    const b = patternByName('step-x4', 1)!;
    expect(a.requests).toEqual(stepPattern().requests); // draw 0 is the table's usual seed
    expect(b.requests.length).not.toBe(a.requests.length);
    const load = (w: typeof a, from: number, to: number) =>
      w.requests.filter((r) => r.at >= from && r.at < to).reduce((s, r) => s + r.workload, 0) / (to - from);
    for (const w of [a, b]) {
      expect(load(w, 0, 1200)).toBeGreaterThan(500); // 600 load/s, then 4× for the middle 20 minutes
      expect(load(w, 0, 1200)).toBeLessThan(700);
      expect(load(w, 1200, 2400) / load(w, 0, 1200)).toBeGreaterThan(3.5);
      expect(load(w, 1200, 2400) / load(w, 0, 1200)).toBeLessThan(4.5);
    }
    const row = (dollars: number, p99: number, lost: number): CompareRow => ({
      workload: 'w',
      policy: 'default',
      requests: 100,
      dollars,
      vsFluid: 2,
      vsWholeWorkers: 1.5,
      foresightVsWholeWorkers: 1,
      p50: 0.1,
      p99,
      overTarget: 0,
      lost,
      retried: 0,
      activations: 4,
      wallSeconds: 1,
      draws: 1,
    });
    const m = meanRow([row(1, 2, 1), row(3, 4, 2)]);
    expect(m).toMatchObject({ dollars: 2, p99: 3, lost: 3, activations: 4, draws: 2, wallSeconds: 2 });
    expect(beats(row(1, 2, 0), row(2, 2, 0))).toBe(true); // cheaper at an equal p99
    expect(beats(row(1, 2.1, 0), row(2, 2, 0))).toBe(false); // cheaper but slower
    expect(beats(row(2, 1, 0), row(2, 2, 0))).toBe(false); // faster at the same cost
  });
});
