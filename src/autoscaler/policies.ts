import { decide, type PolicyInput, type PolicyOutput } from './policy.js';
import { decideKpa } from './policy-kpa.js';

/** The scaling policies the engine can run: this engine's own and the Knative-KPA-style baseline. */
export const POLICIES = { default: decide, kpa: decideKpa } as const satisfies Record<string, (input: PolicyInput) => PolicyOutput>;
export type PolicyName = keyof typeof POLICIES;
export const POLICY_NAMES = Object.keys(POLICIES) as PolicyName[];

/** The policy function named `name`. */
export function policyByName(name: PolicyName): (input: PolicyInput) => PolicyOutput {
  return POLICIES[name];
}
