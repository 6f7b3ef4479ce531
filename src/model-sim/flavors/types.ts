import type { ServerResponse } from 'node:http';
import type { ModelCore } from '../core.js';
import type { Flavor } from '../options.js';

/** What a flavor's log lines may mention. */
export interface LogContext {
  modelName: string;
  host: string;
  port: number;
  /** http://host:port */
  url: string;
  pid: number;
  loadSeconds: number;
  /** Size shown while "downloading" (the real file's size when --download-bytes is set). */
  downloadBytes: number;
}

/** One engine-stats sample for periodic log lines. */
export interface MetricsSample {
  /** Tokens generated per second since the last sample. */
  generationTokensPerSecond: number;
  running: number;
}

/**
 * The lines one model server writes over its life, in its own format. Every function
 * returns whole lines (no trailing newline).
 */
export interface LogScript {
  /** At start: version, arguments. */
  boot(ctx: LogContext): string[];
  /** During the download phase, at 0%, 10%, ... 100%. */
  download(ctx: LogContext, fraction: number, bytesDone: number, secondsLeft: number): string[];
  /** Download finished. */
  downloaded(ctx: LogContext): string[];
  /** Loading weights, at fractions 0, 0.25, ... 1. */
  weights(ctx: LogContext, fraction: number): string[];
  /** After weights: warm-up / memory profiling / routes. */
  warmup(ctx: LogContext): string[];
  /** The model answers from now on (the worker's on_load text is among these). */
  ready(ctx: LogContext): string[];
  /** The model crashed (the worker's on_error text is among these). */
  crash(ctx: LogContext, reason: string): string[];
  /** Clean shutdown on SIGTERM/SIGINT. */
  shutdown(ctx: LogContext): string[];
  /** Optional periodic stats line while requests run (vLLM does this). */
  metrics?(ctx: LogContext, sample: MetricsSample): string[];
}

/** What a route handler can use. */
export interface RouteEnv {
  core: ModelCore;
  modelName: string;
  log(lines: string | readonly string[]): void;
}

/** A route: `body` is the parsed JSON for POST routes, undefined for GET. */
export type RouteHandler = (res: ServerResponse, body: unknown, env: RouteEnv) => void;

/** Everything that makes one flavor look like its real server. */
export interface FlavorDef {
  name: Flavor;
  script: LogScript;
  /** Keyed by "METHOD /path". GET /health and /sim/* are served by the simulator itself. */
  routes: Record<string, RouteHandler>;
  /** A 4xx/5xx body in this server's shape; `field` names the input that was wrong. */
  errorBody(status: number, message: string, field?: string): unknown;
  /** File name of the "downloaded" weights. */
  weightsFile: string;
}
