import { z } from 'zod';

/**
 * The emulator's market: machine types with prices and simulated perf (model-sim flags), and how
 * many machines of each are on offer. Read from a YAML/JSON file (`nodeworker vast-emulator
 * --market FILE`) or given in code by tests.
 */
export const machineTypeSchema = z.strictObject({
  /** As Vast spells it, with spaces ("RTX 4090"). */
  gpu_name: z.string().min(1),
  /** Machines of this type on offer (one GPU each, one instance each). */
  count: z.number().int().min(1).max(100).default(2),
  /** GPU price, $/h. */
  dph_base: z.number().min(0),
  /** Storage price, $/GB/month (Vast's unit); billed while stopped too. */
  storage_cost: z.number().min(0).default(0.1),
  reliability: z.number().min(0).max(1).default(0.99),
  gpu_ram: z.number().min(0).default(24_000),
  num_gpus: z.number().int().min(1).default(1),
  geolocation: z.string().default('Local, ZZ'),
  /** The simulated perf: model-sim flags given to this type's instances (MODEL_SIM_ARGS). */
  model_sim_args: z.string().default('--load-seconds 0.5 --token-rate 50 --capacity 200'),
});

export const marketSchema = z.strictObject({
  machine_types: z.array(machineTypeSchema).min(1, 'at least one machine type'),
});
export type Market = z.output<typeof marketSchema>;
export type MarketInput = z.input<typeof marketSchema>;
export type MachineTypeSpec = z.output<typeof machineTypeSchema>;
