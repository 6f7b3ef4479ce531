import { randomUUID } from 'node:crypto';
import { sendJson } from '../http-util.js';
import { humanBytes, isObject } from './common.js';
import type { FlavorDef, LogScript } from './types.js';

/**
 * ComfyUI behind its API wrapper: `POST /generate/sync` runs one job at a time
 * (FIFO) and answers when the image is "written". A job's cost is `input.cost`, else
 * `input.steps`, else 100 work units; it runs cost / tokenRate seconds.
 */

const DEFAULT_COST = 100;

function errorBody(_status: number, message: string, field?: string): unknown {
  return field ? { error: message, field } : { error: message };
}

function startupTime(): string {
  return new Date().toISOString().replace('T', ' ').replace('Z', '');
}

const script: LogScript = {
  boot: () => [
    '[START] Security scan',
    '[DONE] Security scan',
    '## ComfyUI-Manager: installing dependencies done.',
    `** ComfyUI startup time: ${startupTime()}`,
    '** Platform: Linux',
    '** Python version: 3.11.10 (main, Oct  3 2024, 07:29:13) [GCC 11.2.0]',
    '** Python executable: /venv/main/bin/python',
    '** ComfyUI Path: /workspace/ComfyUI',
    '** Log path: /workspace/ComfyUI/comfyui.log',
    '',
    'Prestartup times for custom nodes:',
    '   0.3 seconds: /workspace/ComfyUI/custom_nodes/ComfyUI-Manager',
    '',
  ],
  // Vast's provisioning prints download progress as JSON lines; workers echo '"message":"Downloading'.
  download: (ctx, fraction, bytesDone) => [
    JSON.stringify({
      level: 'INFO',
      message: `Downloading ${ctx.modelName}: ${Math.round(fraction * 100)}% (${humanBytes(bytesDone, ' ')}B/${humanBytes(ctx.downloadBytes, ' ')}B)`,
    }),
  ],
  downloaded: (ctx) => [JSON.stringify({ level: 'INFO', message: `Downloaded ${ctx.modelName} to /workspace/ComfyUI/models/checkpoints` })],
  weights: (_ctx, fraction) => {
    if (fraction === 0) {
      return [
        'Checkpoint files will always be loaded safely.',
        'Total VRAM 24217 MB, total RAM 128810 MB',
        'pytorch version: 2.5.1+cu124',
        'Set vram state to: NORMAL_VRAM',
        'Device: cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync',
      ];
    }
    if (fraction < 1) return [];
    return ['Using pytorch attention', '[Prompt Server] web root: /workspace/ComfyUI/web'];
  },
  warmup: () => [
    '',
    'Import times for custom nodes:',
    '   0.0 seconds: /workspace/ComfyUI/custom_nodes/websocket_image_save.py',
    '   0.4 seconds: /workspace/ComfyUI/custom_nodes/ComfyUI-Manager',
    '',
    'Starting server',
    '',
  ],
  ready: (ctx) => [`To see the GUI go to: ${ctx.url}`],
  crash: (_ctx, reason) => [
    `!!! Exception during processing !!! Error while deserializing header: MetadataIncompleteBuffer [simulated: ${reason}]`,
    'Traceback (most recent call last):',
    '  File "/workspace/ComfyUI/execution.py", line 323, in execute',
    '    output_data, output_ui, has_subgraph = get_output_data(obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb)',
    '  File "/workspace/ComfyUI/comfy/utils.py", line 34, in load_torch_file',
    '    sd = safetensors.torch.load_file(ckpt, device=device.type)',
    'safetensors_rust.SafetensorError: Error while deserializing header: MetadataIncompleteBuffer',
  ],
  shutdown: () => ['', 'Stopped server'],
};

let imageCounter = 0;

/** The comfyui flavor. */
export const comfyuiFlavor: FlavorDef = {
  name: 'comfyui',
  script,
  errorBody,
  weightsFile: 'sd_xl_base_1.0.safetensors',
  routes: {
    'POST /generate/sync': (res, body, env) => {
      const reject = (field: string, message: string) => {
        env.core.rejected();
        sendJson(res, 422, errorBody(422, message, field));
      };
      if (!isObject(body)) return reject('body', 'body must be a JSON object with an `input` object');
      const input = body.input;
      if (input === undefined || input === null) return reject('input', 'input: field required');
      if (!isObject(input)) return reject('input', 'input must be an object');
      let cost = DEFAULT_COST;
      for (const key of ['cost', 'steps'] as const) {
        const v = input[key];
        if (v === undefined || v === null) continue;
        if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
          return reject(`input.${key}`, `input.${key} must be a number > 0 (got ${JSON.stringify(v)})`);
      }
      if (typeof input.cost === 'number') cost = input.cost;
      else if (typeof input.steps === 'number') cost = input.steps;
      const id = typeof input.request_id === 'string' && input.request_id ? input.request_id : randomUUID();

      const ok = env.core.admit(res, () => sendJson(res, 500, { id, status: 'failed', error: 'Prompt execution failed (simulated by --error-rate)' }));
      if (!ok) return;
      env.log('got prompt');
      env.core.runJob(res, cost, () => {
        // ComfyUI times the execution only, not the wait in its queue.
        const seconds = cost / env.core.settings.tokenRate;
        env.log(`Prompt executed in ${seconds.toFixed(2)} seconds`);
        const filename = `ComfyUI_${String(++imageCounter).padStart(5, '0')}_.png`;
        sendJson(res, 200, {
          id,
          status: 'completed',
          message: 'Prompt executed',
          output: [{ filename, local_path: `/workspace/ComfyUI/output/${filename}`, type: 'output', subfolder: '' }],
          timings: { total_ms: Math.round(seconds * 1000) },
        });
      });
    },
  },
};
