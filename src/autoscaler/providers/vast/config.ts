import { z } from 'zod';

/**
 * The `provider:` section for `kind: vast`, and a workergroup's `launch` as the Vast provider reads
 * it. The API key is never part of the config file's values that get logged: it comes from the
 * environment (VAST_API_KEY) or from `api_key_file`.
 */

/** How an instance is launched: image or template, disk, env, on-start. Request fields override a template's. */
export const vastLaunchSchema = z.looseObject({
  /** Docker image (required unless `template_hash_id` is given). */
  image: z.string().min(1).optional(),
  /** A Vast template's hash id; its image, env and on-start apply, the fields here override them. */
  template_hash_id: z.string().min(1).optional(),
  /** Disk in GB (Vast's minimum is 8). */
  disk: z.number().min(8).optional(),
  /** Extra environment of the worker (BACKEND, MODEL_CMD, HF_TOKEN ...). */
  env: z.record(z.string(), z.string()).optional(),
  /** Shell text the instance runs at boot; default runs the image's built nodeworker on_start.sh. */
  onstart: z.string().min(1).optional(),
  /** Vast runtype (ssh, args, ...); omitted when a template is given. */
  runtype: z.string().min(1).optional(),
  /** The worker's handler (BACKEND), as for the local provider. */
  backend: z.string().min(1).optional(),
  /** Registry login for a private image, "-u USER -p TOKEN docker.io". Never logged. */
  image_login: z.string().min(1).optional(),
});
export type VastLaunch = z.output<typeof vastLaunchSchema>;

const seconds = z.number().gt(0);

export const vastConfigSchema = z.strictObject({
  kind: z.literal('vast'),
  /** API host (the emulator's URL for trials); `/api/v0` is appended. */
  base_url: z.string().url().default('https://console.vast.ai'),
  /** A file holding the API key (one line). Without it the key is read from env VAST_API_KEY. */
  api_key_file: z.string().min(1).optional(),
  /**
   * This engine's name in instance labels (`nw.<engine_id>.<endpoint>.<workergroup>`): the provider
   * touches only instances labelled with it. Default: generated once into the data dir.
   */
  engine_id: z
    .string()
    .regex(/^[A-Za-z0-9-]{1,32}$/, 'letters, digits or "-", at most 32')
    .optional(),
  /** Launch settings every workergroup starts from (a workergroup's `launch` wins field by field, env by key). */
  launch: vastLaunchSchema.default({}),
  /** The port the worker listens on inside the instance (WORKER_PORT); published as `-p N:N`. */
  worker_port: z.number().int().min(1).max(65535).default(3000),
  /**
   * Per machine type name, the extra query that picks its offers (Vast query language). Default:
   * `gpu_name=<machine type name>` (so a machine type named RTX_4090 rents RTX 4090s).
   */
  machine_queries: z.record(z.string(), z.string()).default({}),
  /** Spend guard per endpoint: no create when the endpoint's instances plus the offer would cost more per hour. */
  max_dollars_per_hour: z.number().gt(0).optional(),
  /** Log every call the provider would make and make none (no search, no instance). */
  dry_run: z.boolean().default(false),
  /** Offers asked for per search (on-demand offers only: interruptible bids are not supported). */
  offers_limit: z.number().int().min(1).max(1000).default(64),
  /** How often the account's instances are listed to follow their states. */
  poll_seconds: seconds.default(5),
  /** One HTTP call's timeout. */
  request_timeout_seconds: seconds.default(30),
  /** Tries of one call on 5xx, network errors and 429 (429 waits past the endpoint's threshold). */
  max_attempts: z.number().int().min(1).max(20).default(6),
  /** An instance still created/loading (actual_status null or loading) after this long is destroyed and replaced. */
  boot_timeout_seconds: seconds.default(1200),
  /** A started instance not running after this long is reported exited (the engine replaces it). */
  start_timeout_seconds: seconds.default(600),
  /** How long a machine whose instance failed is left out of offers. */
  avoid_machine_seconds: seconds.default(6 * 3600),
  /** Offers tried per create when offers vanish or are refused. */
  create_attempts: z.number().int().min(1).max(20).default(4),
  /**
   * Minimum seconds between two calls of one kind (Vast limits per endpoint and identity; the
   * defaults are its documented thresholds). A 429 waits past the threshold its body names.
   */
  rate_limits: z
    .strictObject({
      search: seconds.default(1),
      list: seconds.default(1),
      show: seconds.default(2),
      manage: seconds.default(1),
      destroy: seconds.default(3),
      create: seconds.default(4.5),
    })
    .default({ search: 1, list: 1, show: 2, manage: 1, destroy: 3, create: 4.5 }),
});
export type VastConfig = z.output<typeof vastConfigSchema>;
export type RateKind = keyof VastConfig['rate_limits'];
