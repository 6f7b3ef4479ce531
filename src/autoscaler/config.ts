import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { closest } from '../common/args.js';
import { ConfigError } from '../common/protocol.js';
import { knownKeysAt } from '../common/schema-keys.js';
import { endpointSchema, fieldErrors } from './params.js';

/**
 * The engine's config file (JSON or YAML): the admin key, the provider, timings and the
 * endpoints to create at start. Parsed once by zod; a bad file stops start-up with every
 * problem listed.
 */

/** Engine timings, in seconds. Defaults are the live values; tests shrink them. */
export const engineTimingSchema = z.strictObject({
  /** How often the policy runs and queued requests are checked. */
  tick_seconds: z.number().gt(0).default(1),
  /** A worker whose reports stop this long is probed on GET /healthz (PROTOCOL: 30 s). */
  stale_after_seconds: z.number().gt(0).default(30),
  /** How long the /healthz probe may take before the worker counts as dead. */
  probe_timeout_seconds: z.number().gt(0).default(5),
  /** A worker still created/loading after this long is errored (model never loaded). */
  load_timeout_seconds: z.number().gt(0).default(1800),
  /** A routed request not yet seen in its worker's reports stops counting as that worker's load after this. */
  unreported_ttl_seconds: z.number().gt(0).default(60),
  /** A request_idx never named by /delete_requests/ is forgotten after this. */
  request_ttl_seconds: z.number().gt(0).default(3600),
});
export type EngineTiming = z.output<typeof engineTimingSchema>;

export const providerConfigSchema = z.looseObject({
  /**
   * `simulated` is built in; `local` and `vast` register themselves (providers/index.ts), others with
   * `registerProvider`. Each kind's options are validated by its factory's own zod schema
   * (`vastConfigSchema` in providers/vast/config.ts), every bad field named `provider.<field>`.
   */
  kind: z.string().min(1).default('simulated'),
});
export type ProviderConfig = z.output<typeof providerConfigSchema>;

export const autoscalerConfigSchema = z.strictObject({
  /** Key for /admin/ (header `Authorization: Bearer <key>`). Env AUTOSCALER_ADMIN_KEY wins; generated when neither is set. */
  admin_key: z.string().min(8, 'at least 8 characters').optional(),
  /**
   * The account key: what the Vast SDK sends (its VAST_API_KEY) to `GET /api/v0/endptjobs/`,
   * `POST /update_workers/` and `/get_endpoint_workers/`. Env AUTOSCALER_ACCOUNT_KEY wins;
   * generated into `<data dir>/account_key` when neither is set.
   */
  account_key: z.string().min(8, 'at least 8 characters').optional(),
  /** Keep the engine's state (endpoints, workers, learned perf, pending requests) in `<data dir>/engine-state.jsonl` and resume it at start. */
  persist: z.boolean().default(true),
  /** PEM file of the RSA private key that signs routes; default: `<data dir>/engine_key.pem`, created at first start. */
  private_key_path: z.string().optional(),
  /** Directory for the key and generated admin key (default: the user's state dir, see data-dir.ts). */
  data_dir: z.string().optional(),
  /** The address workers report to (their REPORT_ADDR); default the server's own URL. */
  public_url: z.string().url().optional(),
  /**
   * Opt-in strict signing (docs/security.md): /route/ answers are signed whole with an expiry
   * `ttl_seconds` ahead, so captured auth_data cannot be replayed later or have its cost changed.
   * Workers must run with STRICT_AUTH=true (e.g. in the provider's `env`).
   */
  strict_auth: z.strictObject({ ttl_seconds: z.number().gt(0).default(300) }).optional(),
  provider: providerConfigSchema.default({ kind: 'simulated' }),
  engine: engineTimingSchema.default(engineTimingSchema.parse({})),
  endpoints: z.array(endpointSchema).default([]),
});
export type AutoscalerConfig = z.output<typeof autoscalerConfigSchema>;
export type AutoscalerConfigInput = z.input<typeof autoscalerConfigSchema>;

/** A config that did not parse: `fields` names every bad field (shared with the worker). */
export { ConfigError };

/** Validate a config object (from a file or from code); throws ConfigError listing every problem. */
export function parseAutoscalerConfig(input: unknown, source = 'config'): AutoscalerConfig {
  const parsed = autoscalerConfigSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const fields = fieldErrors(parsed.error);
    // An unknown key next to a known one of nearly the same name (max_worker): say which.
    for (const [key, message] of Object.entries(fields)) {
      if (message !== 'unknown field') continue;
      const path = key.split('.');
      const near = closest(path.at(-1)!, knownKeysAt(autoscalerConfigSchema, path.slice(0, -1)));
      if (near) fields[key] = `unknown field (did you mean ${near}?)`;
    }
    const lines = Object.entries(fields).map(([k, v]) => `  ${k}: ${v}`);
    throw new ConfigError(`${source} is invalid:\n${lines.join('\n')}`, fields);
  }
  const names = new Set<string>();
  for (const [i, ep] of parsed.data.endpoints.entries()) {
    if (names.has(ep.name))
      throw new ConfigError(`${source} is invalid:\n  endpoints.${i}.name: duplicate endpoint "${ep.name}"`, { [`endpoints.${i}.name`]: 'duplicate' });
    names.add(ep.name);
    const wgs = new Set<string>();
    for (const [j, wg] of ep.workergroups.entries()) {
      if (wgs.has(wg.name)) {
        const key = `endpoints.${i}.workergroups.${j}.name`;
        throw new ConfigError(`${source} is invalid:\n  ${key}: duplicate workergroup "${wg.name}"`, { [key]: 'duplicate' });
      }
      wgs.add(wg.name);
    }
  }
  return parsed.data;
}

/** Read a JSON (`.json`) or YAML (anything else) file into a plain value. */
export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${path} is not valid ${extname(path) === '.json' ? 'JSON' : 'YAML'}: ${withLineAndColumn((err as Error).message, text)}`);
  }
}

/** JSON.parse names a character position: add the line and column, and show the line (YAML's errors have them already). */
function withLineAndColumn(message: string, text: string): string {
  const m = / at position (\d+)/.exec(message);
  if (!m || /line \d+/.test(message)) return message;
  const pos = Math.min(Number(m[1]), text.length);
  const before = text.slice(0, pos).split('\n');
  const line = before.length;
  const column = before.at(-1)!.length + 1;
  const source = text.split('\n')[line - 1] ?? '';
  return `${message.replace(m[0], '')} at line ${line}, column ${column}\n  ${source}\n  ${' '.repeat(column - 1)}^`;
}

/** Read and validate the engine config file. */
export function loadAutoscalerConfig(path: string): AutoscalerConfig {
  return parseAutoscalerConfig(readConfigFile(path), path);
}
