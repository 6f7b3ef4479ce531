import { echoRoute, isEchoPath } from './flavors/echo.js';
import { mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ModelCore, type CoreSettings, type ModelSimStats } from './core.js';
import { comfyuiFlavor } from './flavors/comfyui.js';
import { openaiFlavor } from './flavors/openai.js';
import { tgiFlavor } from './flavors/tgi.js';
import type { FlavorDef, LogContext, RouteEnv } from './flavors/types.js';
import { readBody, sendEmpty, sendJson } from './http-util.js';
import { startLoading } from './loading.js';
import { openModelLog } from './model-log.js';
import { resolveOptions, validateOptions, type Flavor, type ModelSimOptions } from './options.js';
import { seededRandom } from './random.js';

export type { ModelSimOptions, Flavor } from './options.js';
export type { ModelSimStats } from './core.js';
export { FLAVORS } from './options.js';

/** Run-time changes accepted by `control()` and `POST /sim/control`. */
export interface ModelSimControl {
  /** false: GET /health answers 503 (after loading). */
  health?: boolean;
  hangRate?: number;
  errorRate?: number;
  tokenRate?: number;
  capacity?: number;
  ttftMs?: number;
  /** true: crash now, exactly as --crash-after does. */
  crash?: boolean;
}

/** A running simulator. */
export interface ModelSim {
  /** http://host:port */
  url: string;
  port: number;
  /** Resolves when the model is loaded (the ready line is in the log); rejects if it crashes or closes first. */
  ready: Promise<void>;
  /** Resolves once the server has stopped, by close() or by a simulated crash. */
  closed: Promise<void>;
  /** The file grown during "downloading", when downloadDir is set. */
  downloadPath: string | undefined;
  /** A snapshot of the counters (the same object GET /sim/stats answers). */
  stats(): ModelSimStats;
  /** Change behaviour at run time; throws on an invalid value (naming it). */
  control(patch: ModelSimControl): void;
  /** Stop: shutdown lines to the log, every connection closed, every timer cleared. */
  close(): Promise<void>;
}

const FLAVOR_DEFS: Record<Flavor, FlavorDef> = { openai: openaiFlavor, tgi: tgiFlavor, comfyui: comfyuiFlavor };

/** Sizes shown in download lines when no real download is asked for. */
const NOMINAL_DOWNLOAD_BYTES: Record<Flavor, number> = { openai: 16_060_522_496, tgi: 16_060_522_496, comfyui: 6_938_078_334 };

const METRICS_EVERY_MS = 5_000;

/** Check a control patch; the problems name each wrong field. */
export function validateControl(patch: unknown): string[] {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return ['body: must be a JSON object'];
  const problems: string[] = [];
  const rate = (v: unknown) => typeof v === 'number' && v >= 0 && v <= 1;
  const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;
  const checks: Record<string, [(v: unknown) => boolean, string]> = {
    health: [(v) => typeof v === 'boolean', 'must be a boolean'],
    crash: [(v) => typeof v === 'boolean', 'must be a boolean'],
    hangRate: [rate, 'must be a number from 0 to 1'],
    errorRate: [rate, 'must be a number from 0 to 1'],
    tokenRate: [positive, 'must be a number > 0'],
    capacity: [positive, 'must be a number > 0'],
    ttftMs: [(v) => typeof v === 'number' && Number.isFinite(v) && v >= 0, 'must be a number >= 0'],
  };
  for (const [key, value] of Object.entries(patch)) {
    const check = checks[key];
    if (!check) problems.push(`${key}: is not a control (one of ${Object.keys(checks).join(', ')})`);
    else if (!check[0](value)) problems.push(`${key}: ${check[1]} (got ${JSON.stringify(value)})`);
  }
  return problems;
}

/**
 * Start a simulated model server. Resolves once it listens (every route answers 503
 * until `ready`). Throws on invalid options, listing every problem, or when it cannot listen.
 */
export async function startModelSim(opts: ModelSimOptions): Promise<ModelSim> {
  const problems = validateOptions(opts as unknown as Record<string, unknown>);
  if (problems.length > 0) {
    throw new Error(`invalid model-sim options: ${problems.map((p) => `${p.key} ${p.message}`).join('; ')}`);
  }
  const o = resolveOptions(opts);
  const flavor = FLAVOR_DEFS[o.flavor];
  let downloadPath: string | undefined;
  if (o.downloadDir) {
    mkdirSync(o.downloadDir, { recursive: true });
    downloadPath = join(o.downloadDir, flavor.weightsFile);
  }
  const log = openModelLog(o.logFile);

  let loaded = false;
  let crashed = false;
  let stopping = false;
  let resolveReady!: () => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  ready.catch(() => {}); // nobody may be waiting on it when it fails
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));

  const settings: CoreSettings = {
    tokenRate: o.tokenRate,
    capacity: o.capacity,
    ttftMs: o.ttftMs,
    errorRate: o.errorRate,
    hangRate: o.hangRate,
    healthy: true,
  };
  const core = new ModelCore(settings, o.crashAfter, seededRandom(o.seed), (n) => crash(`--crash-after ${o.crashAfter}: request ${n} admitted`));
  const env: RouteEnv = { core, modelName: o.modelName, log: (lines) => log.write(lines) };

  const server = createServer((req, res) => {
    try {
      onRequest(req, res);
    } catch (err) {
      // A bug must cost one answer, never the process.
      sendJson(res, 500, flavor.errorBody(500, `model-sim internal error: ${err instanceof Error ? err.message : String(err)}`));
    }
  });

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const method = req.method ?? 'GET';
    if (path.startsWith('/sim/')) return simRoute(method, path, req, res);
    if (!loaded) {
      core.unavailable();
      req.resume();
      return sendJson(res, 503, { error: 'model is loading' });
    }
    if (path === '/health') {
      req.resume();
      if (method !== 'GET' && method !== 'HEAD') return sendJson(res, 405, flavor.errorBody(405, `method ${method} is not allowed on /health`));
      if (settings.healthy) return sendEmpty(res, 200);
      core.unavailable();
      return sendJson(res, 503, { error: 'model is unhealthy' });
    }
    const handler = flavor.routes[`${method} ${path}`] ?? (method === 'POST' && isEchoPath(path) ? echoRoute(path, flavor.errorBody) : undefined);
    if (!handler) {
      req.resume();
      core.rejected();
      const otherMethod = Object.keys(flavor.routes).some((k) => k.slice(k.indexOf(' ') + 1) === path);
      const status = otherMethod ? 405 : 404;
      return sendJson(res, status, flavor.errorBody(status, otherMethod ? `method ${method} is not allowed on ${path}` : `no route ${method} ${path}`));
    }
    if (method === 'GET' || method === 'HEAD') {
      req.resume();
      return handler(res, undefined, env);
    }
    readBody(req, (result) => {
      try {
        if (!result.ok) {
          core.rejected();
          res.shouldKeepAlive = false; // the rest of the body is not read
          return sendJson(res, result.status, flavor.errorBody(result.status, result.message, 'body'));
        }
        let body: unknown;
        try {
          body = JSON.parse(result.text);
        } catch (err) {
          core.rejected();
          return sendJson(res, 400, flavor.errorBody(400, `body is not valid JSON: ${err instanceof Error ? err.message : String(err)}`, 'body'));
        }
        if (crashed || stopping) return;
        handler(res, body, env);
      } catch (err) {
        sendJson(res, 500, flavor.errorBody(500, `model-sim internal error: ${err instanceof Error ? err.message : String(err)}`));
      }
    });
  }

  function simRoute(method: string, path: string, req: IncomingMessage, res: ServerResponse): void {
    if (path === '/sim/stats' && method === 'GET') {
      req.resume();
      return sendJson(res, 200, stats());
    }
    if (path === '/sim/control' && method === 'POST') {
      return readBody(req, (result) => {
        if (!result.ok) return sendJson(res, result.status, { error: result.message, field: 'body' });
        let patch: unknown;
        try {
          patch = JSON.parse(result.text);
        } catch {
          return sendJson(res, 400, { error: 'body is not valid JSON', field: 'body' });
        }
        const problems = validateControl(patch);
        if (problems.length > 0) {
          const field = problems[0]!.slice(0, problems[0]!.indexOf(':'));
          return sendJson(res, 400, { error: problems.join('; '), field });
        }
        const p = patch as ModelSimControl;
        if (p.crash) {
          // Answer first so the caller sees its control was taken, then crash.
          sendJson(res, 200, { ok: true, crashing: true });
          setImmediate(() => crash('POST /sim/control {"crash":true}'));
          return;
        }
        applyControl(p);
        sendJson(res, 200, { ok: true, settings });
      });
    }
    req.resume();
    sendJson(res, 404, { error: `no route ${method} ${path}`, routes: ['GET /sim/stats', 'POST /sim/control'] });
  }

  function applyControl(p: ModelSimControl): void {
    const patch: Partial<CoreSettings> = {};
    if (p.health !== undefined) patch.healthy = p.health;
    if (p.hangRate !== undefined) patch.hangRate = p.hangRate;
    if (p.errorRate !== undefined) patch.errorRate = p.errorRate;
    if (p.tokenRate !== undefined) patch.tokenRate = p.tokenRate;
    if (p.capacity !== undefined) patch.capacity = p.capacity;
    if (p.ttftMs !== undefined) patch.ttftMs = p.ttftMs;
    core.update(patch);
  }

  function stats(): ModelSimStats {
    return { flavor: o.flavor, loaded, healthy: settings.healthy, crashed, ...core.counters, active: core.active };
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    log.close();
    throw err;
  });
  // Errors after listening (e.g. a socket error) must not crash the process.
  server.on('error', (err) => process.stderr.write(`model-sim: server error: ${err.message}\n`));
  server.on('clientError', (_err, socket) => socket.destroy());

  const port = (server.address() as AddressInfo).port;
  const hostInUrl = o.host.includes(':') ? `[${o.host}]` : o.host;
  const url = `http://${hostInUrl}:${port}`;
  const ctx: LogContext = {
    modelName: o.modelName,
    host: o.host,
    port,
    url,
    pid: process.pid,
    loadSeconds: o.loadSeconds,
    downloadBytes: o.downloadBytes > 0 ? o.downloadBytes : NOMINAL_DOWNLOAD_BYTES[o.flavor],
  };

  const loading = startLoading({
    loadMs: o.loadSeconds * 1000,
    script: flavor.script,
    ctx,
    log: (lines) => log.write(lines),
    onReady: () => {
      loaded = true;
      resolveReady();
    },
    download: downloadPath ? { path: downloadPath, bytes: o.downloadBytes } : undefined,
  });

  let metricsTimer: NodeJS.Timeout | undefined;
  const metrics = flavor.script.metrics;
  if (metrics) {
    let lastTokens = 0;
    let lastAt = performance.now();
    metricsTimer = setInterval(() => {
      const tokens = core.counters.tokensGenerated;
      const now = performance.now();
      if (loaded && (core.active > 0 || tokens !== lastTokens)) {
        log.write(metrics(ctx, { generationTokensPerSecond: ((tokens - lastTokens) * 1000) / (now - lastAt), running: core.active }));
      }
      lastTokens = tokens;
      lastAt = now;
    }, METRICS_EVERY_MS);
  }

  /** Stop everything; `lines` go to the log first. */
  function shutdown(lines: readonly string[]): void {
    stopping = true;
    loading.cancel();
    core.stop();
    if (metricsTimer) clearInterval(metricsTimer);
    log.write(lines);
    log.close();
    if (!loaded) rejectReady(new Error(crashed ? 'model crashed before it was ready' : 'model-sim closed before the model was ready'));
    server.close(() => resolveClosed());
    server.closeAllConnections();
  }

  function crash(reason: string): void {
    if (crashed || stopping) return;
    crashed = true;
    const lines = flavor.script.crash(ctx, reason);
    if (o.exitOnCrash) {
      log.write(lines);
      // Abrupt on purpose: open requests and streams are cut, as when a real server dies.
      process.exit(1);
    }
    shutdown(lines);
  }

  return {
    url,
    port,
    ready,
    closed,
    downloadPath,
    stats,
    control(patch) {
      const problems = validateControl(patch);
      if (problems.length > 0) throw new Error(`invalid model-sim control: ${problems.join('; ')}`);
      if (patch.crash) crash('control {"crash":true}');
      else applyControl(patch);
    },
    async close() {
      if (!stopping) shutdown(flavor.script.shutdown(ctx));
      await closed;
    },
  };
}
