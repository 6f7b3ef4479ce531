import { describe, expect, it } from 'vitest';
import { loadSimulationConfig } from '../src/autoscaler/simulate/config.js';
import { traceVariants } from '../src/autoscaler/simulate/patterns.js';
import { runSimulation } from '../src/autoscaler/simulate/run.js';
import { loadTrace } from '../src/autoscaler/simulate/trace.js';
import { CODE_TRACE } from './helpers/trace.js';

/**
 * Issue 22's criterion for the default policy on the `--compare` rows at ×1 that no other test
 * covers: cost ≤ KPA's and share of requests over target_queue_time ≤ KPA's. (The shipped trace,
 * its second half and shuffled gaps, step ×4, conversation-like and the idle hour are in
 * simulate-policy.test.ts; the ×10 code trace's first 20 minutes in simulate-scale.test.ts; the
 * first day, diurnal and the ×10/×100 overlays, slower, in docs/autoscaler.md with their commands.)
 * Seeded, deterministic runs; no timing is asserted.
 */

const config = loadSimulationConfig();
const code = loadTrace(CODE_TRACE).requests;
const variants = traceVariants('code', code);

async function both(requests: Parameters<typeof runSimulation>[0]['requests']) {
  const def = await runSimulation({ config, requests, policy: 'default' });
  const kpa = await runSimulation({ config, requests, policy: 'kpa' });
  return { d: def.report, k: kpa.report };
}

describe('the default policy against KPA on the compare rows', () => {
  for (const name of ['code:first-half', 'code:rate-x0.5', 'code:rate-x2']) {
    it(`${name}: cheaper, and no more requests over the target`, async () => {
      const w = variants.find((v) => v.name === name)!;
      const { d, k } = await both(w.requests);
      expect(d.requests.lost).toBe(0);
      expect(d.cost.dollars).toBeLessThanOrEqual(k.cost.dollars);
      expect(d.queueTime.overTargetShare).toBeLessThanOrEqual(k.queueTime.overTargetShare);
    });
  }
});
