import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import openaiWorker, { promptTokens } from '../handlers/openai.js';
import tgiWorker from '../handlers/tgi.js';
import { startModelSim, type ModelSim, type ModelSimOptions } from '../src/model-sim/index.js';
import { authData, clientAgent, envelope, ledgerAudit, postJson, startTestWorker, useResources, waitFor } from './helpers/worker.js';

/** The request path against the model simulator, through the built-in openai and tgi handlers. */
const res = useResources();
const agent = clientAgent(16);
afterAll(() => agent.close());

async function sim(opts: Omit<ModelSimOptions, 'port' | 'loadSeconds'>): Promise<ModelSim> {
  const dir = mkdtempSync(join(tmpdir(), 'worker-modelsim-'));
  res.defer(() => rmSync(dir, { recursive: true, force: true }));
  // The model's log goes to a file, as on a real instance, not into the test output.
  const s = await res.add(startModelSim({ port: 0, loadSeconds: 0, logFile: join(dir, 'model.log'), ...opts }));
  await s.ready;
  return s;
}

describe('through the openai handler to model-sim', () => {
  it('answers a completion and counts prompt tokens + max_tokens as its workload', async () => {
    const model = await sim({ flavor: 'openai', tokenRate: 10_000, capacity: 100_000, ttftMs: 0 });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: openaiWorker.handlers }));
    const payload = { model: 'm', prompt: 'Twelve chars', max_tokens: 5 };
    const r = await postJson(w.url + '/v1/completions', envelope(payload), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(r.json.object).toBe('text_completion');
    expect(r.json.usage.completion_tokens).toBe(5);
    expect(w.ledger.totals.served).toBe(promptTokens(payload.prompt) + 5);
    expect(model.stats().finished).toBe(1);
    ledgerAudit(w);
  });

  it('streams: the first events reach the client while the model is still generating', async () => {
    // 40 tokens at 20 tokens/s: about 2 s of generation.
    const model = await sim({ flavor: 'openai', tokenRate: 20, capacity: 1000, ttftMs: 0 });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: openaiWorker.handlers }));
    const r = await request(w.url + '/v1/completions', {
      method: 'POST',
      body: JSON.stringify(envelope({ prompt: 'hi', max_tokens: 40, stream: true })),
      dispatcher: agent,
    });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/text\/event-stream/);
    let text = '';
    let sawEarlyEvent = false;
    for await (const chunk of r.body) {
      text += String(chunk);
      if (!sawEarlyEvent && text.includes('data: {')) {
        const s = model.stats();
        // The model has not finished this request, yet its first tokens are here.
        expect(s.finished).toBe(0);
        expect(s.inFlight).toBe(1);
        sawEarlyEvent = true;
      }
    }
    expect(sawEarlyEvent).toBe(true);
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(text.match(/"text":/g)?.length).toBe(40);
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.served).toBe(promptTokens('hi') + 40);
  });

  it('a client that leaves mid-stream aborts the model request (the simulator counts it aborted)', async () => {
    const model = await sim({ flavor: 'openai', tokenRate: 20, capacity: 1000, ttftMs: 0 });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: openaiWorker.handlers }));
    const ac = new AbortController();
    const r = await request(w.url + '/v1/completions', {
      method: 'POST',
      body: JSON.stringify(envelope({ prompt: 'hi', max_tokens: 200, stream: true }, authData({ request_idx: 31 }))),
      dispatcher: agent,
      signal: ac.signal,
    });
    const it = r.body[Symbol.asyncIterator]();
    expect(String((await it.next()).value)).toContain('data: ');
    ac.abort();
    await waitFor(
      () => model.stats().aborted === 1,
      2000,
      () => `model-sim to count the abort: ${JSON.stringify(model.stats())}`,
    );
    expect(model.stats().inFlight).toBe(0);
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.cancelled).toBe(promptTokens('hi') + 200);
    expect(ledgerAudit(w)).toEqual({ succeeded: [31], failed: [] });
  });

  it('a model answering 500 is counted errored', async () => {
    const model = await sim({ flavor: 'openai', errorRate: 1, ttftMs: 0, seed: 1 });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: openaiWorker.handlers }));
    const r = await postJson(
      w.url + '/v1/chat/completions',
      envelope({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }, authData({ request_idx: 9 })),
      { dispatcher: agent },
    );
    expect(r.status).toBe(500);
    expect(model.stats().errored).toBe(1);
    expect(ledgerAudit(w)).toEqual({ succeeded: [], failed: [9] });
  });

  it('a payload the handler refuses never reaches the model', async () => {
    const model = await sim({ flavor: 'openai', ttftMs: 0 });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: openaiWorker.handlers }));
    const r = await postJson(w.url + '/v1/chat/completions', envelope({ messages: [], max_tokens: 0 }), { dispatcher: agent });
    expect(r.status).toBe(422);
    expect(Object.keys(r.json.payload).sort()).toEqual(['max_tokens', 'messages']);
    expect(model.stats().started).toBe(0);
    expect(w.ledger.totals.requests).toBe(0);
  });
});

describe('through the tgi handler to model-sim', () => {
  it('streams /generate_stream and counts max_new_tokens', async () => {
    const model = await sim({ flavor: 'tgi', tokenRate: 200, capacity: 1000, ttftMs: 0 });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: tgiWorker.handlers }));
    const r = await request(w.url + '/generate_stream', {
      method: 'POST',
      body: JSON.stringify(envelope({ inputs: 'hello', parameters: { max_new_tokens: 12 } })),
      dispatcher: agent,
    });
    expect(r.statusCode).toBe(200);
    const text = await r.body.text();
    expect(text.match(/^data:/gm)?.length).toBe(12);
    await waitFor(() => w.ledger.totals.ended === 1);
    expect(w.ledger.totals.served).toBe(12);
    expect(model.stats().finished).toBe(1);
  });
});
