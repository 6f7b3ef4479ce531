import { z } from 'zod';
import { parseProviderSection } from './section.js';
import { SimulatedProvider } from './simulated.js';
import { localProviderFactory } from './local.js';
import { vastProviderFactory } from './vast/provider.js';
import type { Provider, ProviderContext, ProviderFactory } from './types.js';

export type { Provider, ProviderContext, ProviderFactory, ProviderEvent, WorkerHandle, WorkerSpec, EngineLink } from './types.js';

/**
 * Providers by `provider.kind` in the engine config. `simulated` is built in; another provider
 * (local processes, Vast, Kubernetes) registers itself with `registerProvider(kind, factory)`
 * before `startAutoscaler` runs.
 */
const registry = new Map<string, ProviderFactory>();

/** Make `kind` available to configs. Replaces an earlier factory of the same kind. */
export function registerProvider(kind: string, factory: ProviderFactory): void {
  registry.set(kind, factory);
}

/** Kinds that can be used now. */
export function providerKinds(): string[] {
  return [...registry.keys()];
}

const simMachine = z.strictObject({
  perf: z.number().gt(0).optional(),
  boot_time: z.number().min(0).optional(),
  load_time: z.number().min(0).optional(),
  start_time: z.number().min(0).optional(),
  failure_rate: z.number().min(0).max(1).optional(),
  crash_rate_per_hour: z.number().min(0).optional(),
  perf_noise: z.number().min(0).max(1).optional(),
});

/** The `provider:` section for `kind: simulated`. */
export const simulatedConfigSchema = z.strictObject({
  kind: z.literal('simulated'),
  seed: z.number().int().optional(),
  worker_max_queue_time: z.number().gt(0).optional(),
  defaults: simMachine.optional(),
  /** Behaviour per machine type name (the workergroups' `machine_types[].name`). */
  machines: z.record(z.string(), simMachine).optional(),
});
export type SimulatedConfig = z.output<typeof simulatedConfigSchema>;

registerProvider('simulated', (ctx) => {
  const c = parseProviderSection(simulatedConfigSchema, ctx.config, 'simulated');
  return new SimulatedProvider({
    clock: ctx.clock,
    seed: c.seed,
    workerMaxQueueTime: c.worker_max_queue_time,
    defaults: c.defaults,
    machines: c.machines,
  });
});

// `local`: on_start.sh processes on this machine (providers/local.ts).
registerProvider('local', localProviderFactory);

// `vast`: rented Vast.ai instances (providers/vast/; the emulator stands in for the real API).
registerProvider('vast', vastProviderFactory);

/** Build the provider a config names; throws naming the known kinds when it is unknown. */
export async function createProvider(ctx: ProviderContext): Promise<Provider> {
  return providerFactory(ctx.config)(ctx);
}

/** The factory a config's `provider.kind` names; throws naming the known kinds when it is unknown (no side effect: a check before any key or file is made). */
export function providerFactory(config: Record<string, unknown>): ProviderFactory {
  const kind = String(config.kind ?? 'simulated');
  const factory = registry.get(kind);
  if (!factory) throw new Error(`provider.kind "${kind}" is unknown (known: ${providerKinds().join(', ')})`);
  return factory;
}
