/**
 * nodeworker's public API for template authors: define a worker and its handlers, start it, or
 * talk to an endpoint with the client.
 */
export { defineWorker, defineHandler, ConfigError } from './worker/config.js';
export type { WorkerSpec, HandlerSpec, BenchmarkSpec, LogActions, LifecycleHook, WorkerDefinition, ResolvedHandler } from './worker/config.js';
export { parseWorkerEnv } from './worker/env.js';
export type { WorkerEnv } from './worker/env.js';
export { resolveWorkerConfig, DEFAULT_MODEL_URL } from './worker/worker-config.js';
export type { WorkerConfig } from './worker/worker-config.js';
export { startWorker } from './worker/worker.js';
export type { RunningWorker, WorkerOptions, WorkerExtension } from './worker/worker.js';
export { defaultExtensions } from './worker/extensions.js';
export { runBenchmark, benchmarkProgressPrinter } from './worker/benchmark.js';
export type { BenchmarkResult, BenchmarkFailure, BenchmarkProgress } from './worker/benchmark.js';
export { signedUrlMessage, signUrl, verifyUrl, generateRsaKeyPair } from './common/signature.js';
export { startModelSim } from './model-sim/index.js';
export type { ModelSimOptions, ModelSim } from './model-sim/index.js';
export { Serverless } from './client/index.js';
export { promptTokens, benchmarkPrompt } from './common/tokens.js';
