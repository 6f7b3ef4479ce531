import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ConfigError, engineTimingSchema, readConfigFile } from '../config.js';
import { endpointSchema, fieldErrors } from '../params.js';
import { simulatedConfigSchema } from '../providers/index.js';

/**
 * The simulation's config: one endpoint (the same declaration the engine config takes), the
 * simulated machines behind its machine types, engine timings, and how the trace is turned
 * into requests. The default lives in `src/autoscaler/simulate.default.yaml`; a `--config`
 * file is merged over it (objects key by key, lists replaced).
 */
export const simulationConfigSchema = z.strictObject({
  workload: z.strictObject({ prompt_share: z.number().min(0).default(0.1) }).default({ prompt_share: 0.1 }),
  client: z.strictObject({ replay_timeout: z.number().gt(0).default(60) }).default({ replay_timeout: 60 }),
  /** Simulated seconds the engine runs before the first request, so the trace meets a settled fleet; not billed. */
  warmup_seconds: z.number().min(0).default(1200),
  /**
   * The last this-many seconds of the warm-up replay the end of the trace (not counted, not billed):
   * the trace meets a fleet sized for its traffic, as a live endpoint's hour follows the hour before
   * (without it, ×10 traffic meets a fleet sized for nothing and queues through a recruit's load time).
   */
  warmup_traffic_seconds: z.number().min(0).default(600),
  /** After the last arrival, at most this long is simulated for requests to finish. */
  drain_seconds: z.number().min(0).default(600),
  /** Timeline resolution (CSV rows, plot points). */
  sample_seconds: z.number().gt(0).default(10),
  endpoint: endpointSchema,
  provider: simulatedConfigSchema.default({ kind: 'simulated' }),
  engine: engineTimingSchema.default(engineTimingSchema.parse({})),
});
export type SimulationConfig = z.output<typeof simulationConfigSchema>;

/** Where the default config file is: beside the autoscaler's modules (the build copies it into dist/). */
export function defaultSimulationConfigPath(): string {
  const candidates = [new URL('../simulate.default.yaml', import.meta.url)].map((u) => fileURLToPath(u));
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new ConfigError(`cannot find simulate.default.yaml (looked in ${candidates.join(', ')})`);
  return found;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `over` merged onto `base`: objects key by key, everything else replaced. */
export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(base[k], v);
  return out;
}

/** The default config, with `overridePath` (a JSON/YAML file) merged over it, validated. */
export function loadSimulationConfig(overridePath?: string, extra?: unknown): SimulationConfig {
  let raw = readConfigFile(defaultSimulationConfigPath());
  if (overridePath) raw = deepMerge(raw, readConfigFile(overridePath));
  if (extra !== undefined) raw = deepMerge(raw, extra);
  const parsed = simulationConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const fields = fieldErrors(parsed.error);
    throw new ConfigError(
      `simulation config is invalid:\n${Object.entries(fields)
        .map(([k, v]) => `  ${k}: ${v}`)
        .join('\n')}`,
      fields,
    );
  }
  return parsed.data;
}
