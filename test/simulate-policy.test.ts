import { describe, expect, it } from 'vitest';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import { latencyOracle, oracleCost } from '../src/autoscaler/simulate/oracle.js';
import {
  conversationPattern,
  diurnalPattern,
  IDLE_SECONDS,
  IDLE_TIMEOUT,
  idlePattern,
  shuffledGaps,
  slice,
  stepPattern,
} from '../src/autoscaler/simulate/patterns.js';
import { runSimulation } from '../src/autoscaler/simulate/run.js';
import { loadTrace } from '../src/autoscaler/simulate/trace.js';
import { CODE_TRACE } from './helpers/trace.js';

/**
 * The policy on the shipped trace and on traffic it was not tuned on, against the KPA baseline.
 * Every figure is a property of a seeded, deterministic simulation (no timing is asserted).
 * Figures before issue 17 on the shipped trace: 2.9× the whole-workers oracle, queue p99 33.9 s,
 * 16 requests lost.
 */

const config = loadSimulationConfig();
const code = loadTrace(CODE_TRACE).requests;

describe('the shipped code trace', () => {
  it('default: no request lost, p99, late share and cost well below the old policy, and it beats KPA on cost, p99 and late share', async () => {
    const [def, kpa] = await Promise.all([
      runSimulation({ config, requests: code, policy: 'default' }),
      runSimulation({ config, requests: code, policy: 'kpa' }),
    ]);
    const d = def.report;
    expect(d.requests.lost).toBe(0);
    expect(d.requests.served).toBe(code.length);
    // p99 15.5 s with waiting requests served smallest first (15.4 s before deaths were counted per
    // running hour) (18.0 s in arrival order; 19.6 s with
    // the burst reserve alone, 22.8 s before it).
    expect(d.queueTime.p99).toBeLessThan(16.5);
    // 3.25× with persistent bursts planned for and the reserve's memory of the hour's largest burst
    // (2.85× before: together they cost 14% more and take the late share from 10.0% to 4.0%); the
    // warm-up replays the trace's end, so the fleet it leaves is the one the trace's last minutes
    // needed. Well below KPA's (below).
    expect(d.costRatio.vsWholeWorkers).toBeLessThan(3.35);
    expect(d.cost.dollars).toBeLessThan(0.6 * kpa.report.cost.dollars);
    // Requests over the 10 s target: 1.8% (2.0% before deaths were counted per running hour) smallest first (4.0% in arrival order, 6.9% with persistent
    // bursts alone, 10.0% with the burst reserve alone, 15.4% before it, 25% before the surge test
    // and the queue budget; KPA 16.0% at 1.8× the cost). The widened frontier at this cost has
    // 2.19% (smallest first) to 2.79% (one pooled server): issue 22 asks for at most 1.2× its share.
    expect(d.queueTime.overTargetShare).toBeLessThan(0.0263);
    expect(d.queueTime.overTargetShare).toBeLessThanOrEqual(kpa.report.queueTime.overTargetShare);
    // Against the baseline: cheaper, at an equal or better p99.
    expect(d.cost.dollars).toBeLessThan(kpa.report.cost.dollars);
    expect(d.queueTime.p99).toBeLessThanOrEqual(kpa.report.queueTime.p99);
    expect(kpa.report.policy).toBe('kpa');
  });

  it('the goal (p99 ≤ 10 s at ≤ 1.5× the whole-workers oracle) needs foresight: even the clairvoyant plan pays 1.4×', () => {
    const machine = { name: 'rtx4090', perf: 800, dollarsPerHour: 0.4 };
    const minutes = Math.ceil(code[code.length - 1]!.at / 60);
    const whole = oracleCost(code, [machine], minutes).wholeWorkers.dollars;
    const plan = latencyOracle(code, machine, minutes, 10);
    expect(plan.met).toBe(true);
    expect(plan.queueTimeAtQuantile).toBeLessThanOrEqual(10);
    // Whole workers per minute alone miss the target by far; meeting it costs 1.4× with perfect knowledge.
    expect(plan.dollars / whole).toBeGreaterThan(1.35);
    expect(plan.dollars / whole).toBeLessThan(1.5);
  });
});

describe('traffic the policy was not tuned on', () => {
  it('second half and shuffled gaps of the trace: no loss, cheaper than KPA at an equal or better p99', async () => {
    for (const requests of [slice(code, code[code.length - 1]!.at / 2, Number.POSITIVE_INFINITY), shuffledGaps(code)]) {
      const [def, kpa] = await Promise.all([runSimulation({ config, requests, policy: 'default' }), runSimulation({ config, requests, policy: 'kpa' })]);
      expect(def.report.requests.lost).toBe(0);
      expect(def.report.cost.dollars).toBeLessThan(kpa.report.cost.dollars);
      expect(def.report.queueTime.p99).toBeLessThanOrEqual(kpa.report.queueTime.p99);
    }
  });

  it('conversation-like and diurnal with twenty times the silent deaths: none lost, re-routed to a started worker, cheaper than KPA', async () => {
    // crash_rate_per_hour 1 instead of 0.05: three or more workers die under load in each run.
    const crashy = { ...config, provider: { ...config.provider, defaults: { ...config.provider.defaults, crash_rate_per_hour: 1 } } };
    for (const p of [conversationPattern(), diurnalPattern()]) {
      const [def, kpa] = await Promise.all([
        runSimulation({ config: crashy, requests: p.requests, params: p.params, policy: 'default' }),
        runSimulation({ config: crashy, requests: p.requests, params: p.params, policy: 'kpa' }),
      ]);
      expect(def.report.workers.errored).toBeGreaterThanOrEqual(3);
      expect(def.report.requests.retried).toBeGreaterThan(0);
      expect(def.report.requests.lost).toBe(0);
      expect(def.report.requests.served).toBe(p.requests.length);
      // Conversation-like 0.00% over the target against KPA's 0.17%, diurnal 0.00% against 0.99%.
      expect(def.report.queueTime.overTargetShare).toBeLessThanOrEqual(kpa.report.queueTime.overTargetShare);
      expect(def.report.queueTime.p99).toBeLessThan(6);
      expect(def.report.cost.dollars).toBeLessThan(kpa.report.cost.dollars);
    }
  });

  it('step ×4: meets the queue target and costs no more than KPA', async () => {
    const step = stepPattern();
    const [def, kpa] = await Promise.all([
      runSimulation({ config, requests: step.requests, policy: 'default' }),
      runSimulation({ config, requests: step.requests, policy: 'kpa' }),
    ]);
    expect(def.report.queueTime.p99).toBeLessThanOrEqual(config.endpoint.target_queue_time ?? 10);
    expect(def.report.requests.lost).toBe(0);
    expect(def.report.cost.dollars).toBeLessThan(kpa.report.cost.dollars);
  });

  it('idle hour: zero active workers once inactivity_timeout passed, and the next request wakes one within the start time', async () => {
    const idle = idlePattern();
    const { report, timeline } = await runSimulation({ config, requests: idle.requests, params: idle.params, policy: 'default' });
    const silence = timeline.filter((r) => r.t >= 300 + IDLE_TIMEOUT + 60 && r.t < 300 + IDLE_SECONDS);
    expect(silence.length).toBeGreaterThan(100);
    expect(silence.every((r) => r.states.ready + r.states.starting === 0)).toBe(true);
    const startTime = config.provider.defaults?.start_time ?? 15;
    // Woken within the start time plus one engine tick.
    expect(report.queueTime.last).not.toBeNull();
    expect(report.queueTime.last!).toBeLessThanOrEqual(startTime + config.engine.tick_seconds + 0.5);
    expect(report.requests.served).toBe(idle.requests.length);
  });
});
