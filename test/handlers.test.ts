import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { COMFYUI_WORKLOAD } from '../handlers/comfyui.js';
import { BUILTIN_HANDLERS } from '../src/worker/load-definition.js';
import { promptTokens } from '../handlers/openai.js';
import { startModelSim, type Flavor, type ModelSim } from '../src/model-sim/index.js';
import { parseWorkerEnv } from '../src/worker/env.js';
import { loadWorkerDefinition } from '../src/worker/load-definition.js';
import { startWorker, type RunningWorker } from '../src/worker/worker.js';
import { authData, clientAgent, envelope, postJson, silentLogger, useResources, waitFor } from './helpers/worker.js';

/**
 * Every built-in handler, selected by name as BACKEND does, in front of model-sim of its flavor:
 * the worker learns readiness from the model's real log lines (the handler's log actions), runs
 * the handler's own benchmark against the simulator, then serves requests. UNSECURED, loopback.
 */
const res = useResources();
const agent = clientAgent(16);
afterAll(() => agent.close());

interface Rig {
  sim: ModelSim;
  worker: RunningWorker;
}

async function rig(backend: string, flavor: Flavor): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), `handlers-${backend}-`));
  res.defer(() => rmSync(dir, { recursive: true, force: true }));
  const logFile = join(dir, 'model.log');
  // Fast enough that the handler's real benchmark takes well under a second.
  const sim = await res.add(startModelSim({ flavor, port: 0, loadSeconds: 0.2, tokenRate: 4000, capacity: 400_000, ttftMs: 2, logFile }));
  const definition = await loadWorkerDefinition(backend, { modelServerUrl: sim.url, modelLogFile: logFile });
  const env = parseWorkerEnv({ WORKER_PORT: '0', WORKER_HOST: '127.0.0.1', CONTAINER_ID: '1', UNSECURED: 'true', WORKSPACE_DIR: dir });
  const worker = await res.add(
    startWorker({ definition, env, logger: silentLogger(), timings: { noHealthWaitMs: 0, reportTickMs: 100, healthIntervalMs: 500 } }),
  );
  await waitFor(
    () => worker.lifecycle.state === 'ready' || worker.lifecycle.state === 'errored',
    20_000,
    () => `${backend} worker ready (${worker.lifecycle.state})`,
  );
  expect(worker.lifecycle.state, worker.lifecycle.reason).toBe('ready');
  return { sim, worker };
}

/** POST through the worker and read the whole SSE answer; returns the `data` payloads. */
async function streamed(url: string, payload: unknown): Promise<{ status: number; type: string; events: string[] }> {
  const r = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(envelope(payload)), dispatcher: agent });
  const text = await r.body.text();
  const events = text
    .split(/\n\n/)
    .map((b) => b.trim())
    .filter((b) => b.startsWith('data:'))
    .map((b) => b.slice(5).trim());
  return { status: r.statusCode, type: String(r.headers['content-type']), events };
}

it('BACKEND names every built-in handler', () => {
  expect(Object.keys(BUILTIN_HANDLERS)).toEqual(expect.arrayContaining(['openai', 'vllm', 'tgi', 'comfyui', 'hello']));
});

describe('openai (vLLM)', () => {
  it('becomes ready on "Application startup complete.", benchmarks, and serves completions and chat, streamed and not', async () => {
    const { sim, worker } = await rig('openai', 'openai');
    expect(worker.ledger.maxPerf).toBeGreaterThan(0);
    const prompt = 'Say something about the sea';
    const r = await postJson(worker.url + '/v1/completions', envelope({ prompt, max_tokens: 7 }), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(r.json.usage.completion_tokens).toBe(7);

    const chat = await postJson(worker.url + '/v1/chat/completions', envelope({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }), {
      dispatcher: agent,
    });
    expect(chat.status).toBe(200);
    expect(chat.json.object).toBe('chat.completion');

    const s = await streamed(worker.url + '/v1/completions', { prompt, max_tokens: 9, stream: true });
    expect(s.status).toBe(200);
    expect(s.type).toMatch(/text\/event-stream/);
    expect(s.events.at(-1)).toBe('[DONE]');
    expect(s.events.slice(0, -1).map((e) => JSON.parse(e).choices[0].text).length).toBe(9);

    const cs = await streamed(worker.url + '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true });
    expect(cs.events.at(-1)).toBe('[DONE]');
    expect(cs.events.filter((e) => e !== '[DONE]' && JSON.parse(e).choices[0].delta.content).length).toBe(4);

    // Workload = prompt tokens + max_tokens, per request.
    await waitFor(() => worker.ledger.totals.ended === 4);
    const chatWork = (n: number) => promptTokens('hi') + n;
    expect(worker.ledger.totals.served).toBe(promptTokens(prompt) + 7 + chatWork(3) + promptTokens(prompt) + 9 + chatWork(4));
    expect(sim.stats().finished).toBeGreaterThanOrEqual(4);
  });

  it("takes token-id prompts and chat's max_completion_tokens, and counts them in the workload", async () => {
    const { worker } = await rig('openai', 'openai');
    const ids = await postJson(worker.url + '/v1/completions', envelope({ prompt: [101, 102, 103, 104, 105], max_tokens: 2 }), { dispatcher: agent });
    expect(ids.status).toBe(200);
    const chat = await postJson(worker.url + '/v1/chat/completions', envelope({ messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 6 }), {
      dispatcher: agent,
    });
    expect(chat.status).toBe(200);
    expect(chat.json.usage.completion_tokens).toBe(6);
    await waitFor(() => worker.ledger.totals.ended === 2);
    expect(worker.ledger.totals.served).toBe(5 + 2 + promptTokens('hi') + 6);
  });

  it('a payload that breaks the schema gets a 422 naming the field, and never reaches the model', async () => {
    const { sim, worker } = await rig('openai', 'openai');
    const before = sim.stats().started;
    const bad = await postJson(worker.url + '/v1/completions', envelope({ prompt: 42, max_tokens: 5 }), { dispatcher: agent });
    expect(bad.status).toBe(422);
    expect(Object.keys(bad.json.payload)).toContain('prompt');
    const badTokens = await postJson(worker.url + '/v1/completions', envelope({ prompt: 'x', max_tokens: -3 }), { dispatcher: agent });
    expect(badTokens.status).toBe(422);
    expect(Object.keys(badTokens.json.payload)).toContain('max_tokens');
    const badChat = await postJson(worker.url + '/v1/chat/completions', envelope({ messages: [] }), { dispatcher: agent });
    expect(badChat.status).toBe(422);
    expect(badChat.json.payload.messages).toMatch(/at least one message/);
    expect(sim.stats().started).toBe(before);
  });
});

describe('tgi', () => {
  it('becomes ready on the router\'s "Connected" line and serves /generate and /generate_stream', async () => {
    const { worker } = await rig('tgi', 'tgi');
    const r = await postJson(worker.url + '/generate', envelope({ inputs: 'Once upon a time', parameters: { max_new_tokens: 6 } }), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(typeof r.json.generated_text).toBe('string');
    const s = await streamed(worker.url + '/generate_stream', { inputs: 'Once', parameters: { max_new_tokens: 5 } });
    expect(s.status).toBe(200);
    expect(s.events).toHaveLength(5);
    expect(JSON.parse(s.events.at(-1)!).details.generated_tokens).toBe(5);
    // Workload = max_new_tokens (and 20 when absent).
    const d = await postJson(worker.url + '/generate', envelope({ inputs: 'x' }), { dispatcher: agent });
    expect(d.status).toBe(200);
    await waitFor(() => worker.ledger.totals.ended === 3);
    expect(worker.ledger.totals.served).toBe(6 + 5 + 20);
  });

  it('422 names the nested field', async () => {
    const { worker } = await rig('tgi', 'tgi');
    const bad = await postJson(worker.url + '/generate', envelope({ inputs: 'x', parameters: { max_new_tokens: 'many' } }), { dispatcher: agent });
    expect(bad.status).toBe(422);
    expect(Object.keys(bad.json.payload)).toContain('parameters.max_new_tokens');
    const missing = await postJson(worker.url + '/generate_stream', envelope({ parameters: {} }), { dispatcher: agent });
    expect(missing.status).toBe(422);
    expect(missing.json.payload.inputs).toMatch(/inputs must be a string/);
  });
});

describe('comfyui', () => {
  it('becomes ready on "To see the GUI go to: ", runs one job at a time in order, constant workload with a per-request override', async () => {
    const { sim, worker } = await rig('comfyui', 'comfyui');
    // Three jobs at once: the worker queues them (FIFO) so the model never holds more than one.
    let maxAtModel = 0;
    let maxAtWorker = 0;
    const sampler = setInterval(() => {
      maxAtModel = Math.max(maxAtModel, sim.stats().inFlight);
      maxAtWorker = Math.max(maxAtWorker, worker.ledger.workingCount);
    }, 2);
    res.defer(() => clearInterval(sampler));
    // 400 work units at 4000/s: 0.1 s a job.
    const jobs = ['a', 'b', 'c'].map((id) =>
      postJson(worker.url + '/generate/sync', envelope({ input: { request_id: id, cost: 400, modifier: 'Text2Image', modifications: { prompt: id } } }), {
        dispatcher: agent,
      }),
    );
    const answers = await Promise.all(jobs);
    clearInterval(sampler);
    for (const [i, a] of answers.entries()) {
      expect(a.status).toBe(200);
      expect(a.json.id).toBe(['a', 'b', 'c'][i]);
      expect(a.json.status).toBe('completed');
    }
    expect(maxAtModel).toBe(1);
    expect(maxAtWorker).toBeGreaterThan(1);
    const plain = await postJson(worker.url + '/generate/sync', envelope({ input: { request_id: 'd', workflow_json: { '3': { class_type: 'KSampler' } } } }), {
      dispatcher: agent,
    });
    expect(plain.status).toBe(200);
    await waitFor(() => worker.ledger.totals.ended === 4);
    expect(worker.ledger.totals.served).toBe(3 * 400 + COMFYUI_WORKLOAD);
  });

  it('422 names the field', async () => {
    const { worker } = await rig('comfyui', 'comfyui');
    const bad = await postJson(worker.url + '/generate/sync', envelope({ input: { cost: -1 } }), { dispatcher: agent });
    expect(bad.status).toBe(422);
    expect(bad.json.payload['input.cost']).toMatch(/cost must be > 0/);
    const noInput = await postJson(worker.url + '/generate/sync', envelope({ prompt: 'x' }), { dispatcher: agent });
    expect(noInput.status).toBe(422);
    expect(Object.keys(noInput.json.payload)).toContain('input');
  });
});

describe('hello', () => {
  it('turns {name} into a completion and the completion into {greeting}; streams when asked', async () => {
    const { sim, worker } = await rig('hello', 'openai');
    const r = await postJson(worker.url + '/hello', envelope({ name: 'Ada', max_tokens: 5 }, authData({ cost: 5 })), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(Object.keys(r.json)).toEqual(['greeting']);
    expect(r.json.greeting.split(' ').length).toBe(5);
    const s = await streamed(worker.url + '/hello', { name: 'Grace', max_tokens: 4, stream: true });
    expect(s.status).toBe(200);
    expect(s.events.at(-1)).toBe('[DONE]');
    expect(s.events).toHaveLength(5);
    await waitFor(() => worker.ledger.totals.ended === 2);
    expect(worker.ledger.totals.served).toBe(5 + 4);
    expect(sim.stats().finished).toBeGreaterThanOrEqual(2);
  });

  it('422 names the field', async () => {
    const { worker } = await rig('hello', 'openai');
    const bad = await postJson(worker.url + '/hello', envelope({ name: '' }), { dispatcher: agent });
    expect(bad.status).toBe(422);
    expect(bad.json.payload.name).toMatch(/must not be empty/);
    const badTokens = await postJson(worker.url + '/hello', envelope({ name: 'x', max_tokens: 10_000 }), { dispatcher: agent });
    expect(badTokens.status).toBe(422);
    expect(Object.keys(badTokens.json.payload)).toEqual(['max_tokens']);
  });
});
