import { z } from 'zod';
import { defineHandler, type WorkerSpec } from 'nodeworker';
import { comfyuiBenchmarkPayload } from './benchmark-payloads.js';

/**
 * ComfyUI behind its API wrapper (Vast's ComfyUI template): `POST /generate/sync` runs one
 * workflow and answers when the images are written. ComfyUI executes one prompt at a time, so the
 * handler is not parallel: the worker queues requests FIFO and the engine sees the real wait.
 *
 * Workload: a constant COMFYUI_WORKLOAD (100) per image job, because the cost of a workflow cannot
 * be read from its JSON; a client that knows better sends `input.cost` (e.g. steps × resolution
 * factor) and that number is used instead, for this request only.
 */
export const COMFYUI_WORKLOAD = 100;

export const comfyuiPayload = z.looseObject({
  input: z.looseObject(
    {
      /** Your id for the job; the wrapper makes one when it is missing. */
      request_id: z.string({ message: 'request_id must be a string' }).optional(),
      /** A full ComfyUI API-format workflow (node id → node). */
      workflow_json: z.record(z.string(), z.unknown(), { message: 'workflow_json must be an object: an API-format ComfyUI workflow' }).optional(),
      /** A named workflow modifier of the wrapper, with its modifications. */
      modifier: z.string({ message: 'modifier must be a string' }).optional(),
      modifications: z.record(z.string(), z.unknown(), { message: 'modifications must be an object' }).optional(),
      /** This request's workload, overriding the constant. */
      cost: z.number({ message: 'cost must be a number (the workload of this job)' }).positive('cost must be > 0').max(1e9).optional(),
      steps: z.number({ message: 'steps must be a number' }).int('steps must be an integer').positive('steps must be > 0').optional(),
    },
    { message: 'input must be an object: {request_id?, workflow_json? | modifier?, modifications?, cost?}' },
  ),
});

export type ComfyuiPayload = z.infer<typeof comfyuiPayload>;

/** The workload of one job: `input.cost` when given, else the constant. */
export function comfyuiWorkload(p: ComfyuiPayload): number {
  return p.input.cost ?? COMFYUI_WORKLOAD;
}

export const generateSync = defineHandler({
  route: '/generate/sync',
  // ComfyUI runs one prompt at a time: queue here, in order, where the wait is counted.
  allowParallelRequests: false,
  // One image job takes seconds to minutes: allow a longer queue than the LLM handlers.
  maxQueueTime: 60,
  payload: comfyuiPayload,
  workload: comfyuiWorkload,
  benchmark: { generator: comfyuiBenchmarkPayload, runs: 3, concurrency: 1 },
});

const worker: WorkerSpec = {
  healthPath: '/health',
  logActions: {
    onLoad: ['To see the GUI go to: '],
    onError: ['MetadataIncompleteBuffer', 'Value not in list: ', '[ERROR] Provisioning Script failed', 'Traceback (most recent call last):'],
    onInfo: ['"message":"Downloading', '"message":"Downloaded', 'Prompt executed in'],
  },
  handlers: [generateSync],
};
export default worker;
