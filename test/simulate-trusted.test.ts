import { describe, expect, it } from 'vitest';
import type { Engine } from '../src/autoscaler/engine.js';
import { workerView } from '../src/autoscaler/engine.js';
import { simulationConfigSchema } from '../src/autoscaler/simulate/config.js';
import { runSimulation, type SimulationResult } from '../src/autoscaler/simulate/run.js';
import type { TraceRequest } from '../src/autoscaler/simulate/trace.js';

/**
 * The simulator sends /route/, reports and deletes through the engine's trusted in-process entry
 * points (no zod parse, plain token compare, the route entry as answer). These must move the engine
 * exactly as the validated entry points do: the same run through both ends in the same engine
 * state and the same report, on a run that goes through failed loads, crashes, re-routes, the
 * worker's own 429s and failed deletes. And the trusted entry points still refuse a wrong token.
 */

/** 20 minutes: a steady base, two bursts well over what the fleet holds, a quiet tail. */
function trace(): TraceRequest[] {
  const out: TraceRequest[] = [];
  for (let t = 0; t < 1200; t++) {
    const perSecond = (t >= 200 && t < 320) || (t >= 700 && t < 760) ? 12 : t >= 1000 ? 1 : 4;
    for (let k = 0; k < perSecond; k++) {
      const workload = 40 + ((t * 7 + k * 13) % 90);
      out.push({ at: t + k / perSecond, contextTokens: 0, generatedTokens: workload, workload });
    }
  }
  return out;
}

const config = simulationConfigSchema.parse({
  warmup_seconds: 120,
  drain_seconds: 120,
  sample_seconds: 5,
  endpoint: {
    name: 'trusted',
    api_key: 'trusted-test-key',
    max_workers: 12,
    workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }],
  },
  provider: {
    kind: 'simulated',
    // Seed 12: with deaths counted per hour of running, this seed's run has crashes under load
    // (16 re-routes). A low 429 limit, failing loads and frequent crashes: every report and
    // delete path is taken.
    seed: 12,
    worker_max_queue_time: 3,
    defaults: { perf: 250, boot_time: 2, load_time: 20, start_time: 4, failure_rate: 0.25, crash_rate_per_hour: 4, perf_noise: 0.05 },
  },
});

interface EngineState {
  snapshot: Record<string, unknown>;
  workers: Array<Record<string, unknown>>;
  pending: unknown[];
}

function stateOf(engine: Engine): EngineState {
  return {
    snapshot: engine.snapshot(),
    workers: [...engine.workers.values()].map(workerView),
    pending: [...engine.endpoints.values()].map((ep) => ({ name: ep.name, open: ep.router.exportPending(), reqnum: ep.router.lastReqnum() })),
  };
}

async function run(validated: boolean): Promise<{ result: SimulationResult; state: EngineState }> {
  let state: EngineState | null = null;
  const result = await runSimulation({
    config,
    requests: trace(),
    validated,
    atEnd: (engine) => {
      state = stateOf(engine);
    },
  });
  if (!state) throw new Error('atEnd was not called');
  return { result, state };
}

describe('the trusted in-process path against the validated one', () => {
  it('gives the same engine state and the same report for the same run', async () => {
    const trusted = await run(false);
    const validated = await run(true);

    // The run is one that exercises the paths (otherwise equality would prove little).
    const r = trusted.result.report;
    expect(r.requests.total).toBeGreaterThan(5000);
    expect(r.requests.retries).toBeGreaterThan(0);
    expect(r.workers.errored).toBeGreaterThan(0);
    expect(r.queueTime.max).toBeGreaterThan(3);
    const rejected = (trusted.state.workers as Array<{ rejLoad: number }>).reduce((n, w) => n + w.rejLoad, 0);
    expect(rejected).toBeGreaterThan(0);
    expect((trusted.state.snapshot.endpoints as Array<{ requests: { failed: number } }>)[0]!.requests.failed).toBeGreaterThan(0);

    expect(trusted.state).toEqual(validated.state);
    const { wallSeconds: _a, ...trustedReport } = trusted.result.report;
    const { wallSeconds: _b, ...validatedReport } = validated.result.report;
    expect(trustedReport).toEqual(validatedReport);
    expect(trusted.result.timeline).toEqual(validated.result.timeline);
    expect(trusted.result.waits).toEqual(validated.result.waits);
  }, 60_000);

  it('refuses a wrong token or an unknown worker on the trusted entry points, and changes nothing', async () => {
    const refused: Array<{ status: number; field: unknown }> = [];
    let before: EngineState | null = null;
    let after: EngineState | null = null;
    await runSimulation({
      config,
      requests: trace().slice(0, 2000),
      atEnd: (engine) => {
        const w = [...engine.workers.values()].find((x) => x.state === 'ready' || x.state === 'inactive');
        if (!w) throw new Error('no worker to report for');
        const report = {
          id: w.id,
          mtoken: `${w.mtoken}x`,
          version: 'simulated',
          loadtime: 1,
          cur_load: 999,
          rej_load: 0,
          new_load: 999,
          error_msg: 'forged',
          max_perf: 1,
          cur_perf: 0,
          cur_capacity: 0,
          max_capacity: 0,
          num_requests_working: 0,
          num_requests_recieved: 0,
          additional_disk_usage: 0,
          working_request_idxs: [],
        };
        before = stateOf(engine);
        const field = (o: { status: number; body: unknown }) => ({ status: o.status, field: (o.body as { field?: unknown }).field });
        refused.push(field(engine.workerStatusTrusted(report)));
        refused.push(field(engine.workerStatusTrusted({ ...report, id: 987_654, mtoken: w.mtoken })));
        refused.push(field(engine.deleteRequestsTrusted({ worker_id: w.id, mtoken: '', request_idxs: [1, 2, 3], success: false })));
        // The validated path still names the wrong field of a malformed body.
        refused.push(field(engine.workerStatus({ ...report, mtoken: w.mtoken, cur_load: 'lots' })));
        after = stateOf(engine);
      },
    });
    expect(refused).toEqual([
      { status: 401, field: 'mtoken' },
      { status: 404, field: 'id' },
      { status: 401, field: 'mtoken' },
      { status: 400, field: 'cur_load' },
    ]);
    expect(after).toEqual(before);
  }, 60_000);
});
