/**
 * The reference autoscaler's public API: the server, the engine, the policy, the providers and
 * the simulation. See docs/autoscaler.md.
 */
export { startAutoscaler, type StartAutoscalerOptions, type RunningAutoscaler } from './server.js';
export {
  Engine,
  EngineError,
  httpProbe,
  type EngineOptions,
  type EngineEvents,
  type WorkerRecord,
  type EndpointRuntime,
  type TransitionEvent,
} from './engine.js';
export {
  decide,
  INITIAL_MEMORY,
  type PolicyInput,
  type PolicyOutput,
  type Decision,
  type Plan,
  type PolicyWorker,
  type MachineChoice,
  type PolicyMemory,
} from './policy.js';
export { EndpointRouter, type RouteAnswer, type RequestEntry } from './router.js';
export { createRealClock, FakeClock, type Clock } from './clock.js';
export { loadAutoscalerConfig, parseAutoscalerConfig, ConfigError, type AutoscalerConfig, type AutoscalerConfigInput } from './config.js';
export { DEFAULT_PARAMS, endpointSchema, workergroupSchema, type EndpointParams, type EndpointConfig, type WorkergroupConfig } from './params.js';
export { WORKER_STATES, ENDPOINT_STATES, type WorkerState, type EndpointState } from './states.js';
export { registerProvider, createProvider, providerKinds } from './providers/index.js';
export type { Provider, ProviderContext, ProviderFactory, ProviderEvent, WorkerSpec, WorkerHandle, EngineLink } from './providers/types.js';
export { LocalProvider, localConfigSchema, localLaunchSchema, localProviderFactory, type LocalConfig } from './providers/local.js';
export { VastProvider, vastProviderFactory } from './providers/vast/provider.js';
export { vastConfigSchema, vastLaunchSchema, type VastConfig, type VastLaunch } from './providers/vast/config.js';
export { VastEmulator, emulatorOptionsSchema, faultsSchema } from './providers/vast/emulator.js';
export { parseQuery, matchesQuery } from './providers/vast/query.js';
export { SimulatedProvider, type SimMachine, type SimJob, type SimBilling } from './providers/simulated.js';
export { runSimulation, type SimulationReport, type SimulationResult, type TimelineRow } from './simulate/run.js';
export { loadSimulationConfig, type SimulationConfig } from './simulate/config.js';
export { loadTrace, parseTrace, TRACE_ATTRIBUTION, type TraceRequest } from './simulate/trace.js';
