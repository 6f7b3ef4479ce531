import type { WorkerSpec } from '../src/worker/config.js';

/** Built-in handlers, selected with `--handler NAME` or the BACKEND environment variable. */
export const BUILTIN_HANDLERS: Record<string, () => Promise<WorkerSpec>> = {
  openai: async () => (await import('./openai.js')).default,
  vllm: async () => (await import('./openai.js')).default,
  tgi: async () => (await import('./tgi.js')).default,
  comfyui: async () => (await import('./comfyui.js')).default,
  hello: async () => (await import('./hello.js')).default,
};
