/**
 * model-sim beyond completions (issue 16): `POST /v1/embeddings` (openai flavor) and the generic
 * `POST /echo[/…]` of every flavor, directly and through a worker running a custom handler.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { startModelSim, type ModelSim, type ModelSimOptions } from '../src/model-sim/index.js';
import { embed } from '../src/model-sim/flavors/embeddings.js';
import { defineHandler } from '../src/worker/config.js';
import { clientAgent, envelope, ledgerAudit, postJson, startTestWorker, useResources } from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(8);
afterAll(() => agent.close());

async function sim(opts: Omit<ModelSimOptions, 'port' | 'loadSeconds'>): Promise<ModelSim> {
  const dir = mkdtempSync(join(tmpdir(), 'model-sim-routes-'));
  res.defer(() => rmSync(dir, { recursive: true, force: true }));
  const s = await res.add(
    startModelSim({ port: 0, loadSeconds: 0, ttftMs: 0, tokenRate: 10_000, capacity: 100_000, logFile: join(dir, 'model.log'), ...opts }),
  );
  await s.ready;
  return s;
}

const post = async (url: string, body: unknown) => {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as any };
};

describe('POST /v1/embeddings', () => {
  it('answers one unit vector per input, the same vector for the same text, with usage', async () => {
    const model = await sim({ flavor: 'openai' });
    const r = await post(`${model.url}/v1/embeddings`, { input: ['a cat', 'a dog', 'a cat'], dimensions: 8 });
    expect(r.status).toBe(200);
    expect(r.json.object).toBe('list');
    expect(r.json.data).toHaveLength(3);
    const [a, b, c] = r.json.data.map((d: { embedding: number[] }) => d.embedding) as number[][];
    expect(a).toHaveLength(8);
    expect(Math.hypot(...a!)).toBeCloseTo(1, 6);
    expect(c).toEqual(a);
    expect(b).not.toEqual(a);
    expect(r.json.usage.prompt_tokens).toBe(6);
    expect(model.stats().finished).toBe(1);

    const b64 = await post(`${model.url}/v1/embeddings`, { input: 'a cat', dimensions: 8, encoding_format: 'base64' });
    const floats = Array.from(new Float32Array(new Uint8Array(Buffer.from(b64.json.data[0].embedding, 'base64')).buffer));
    for (const [i, x] of floats.entries()) expect(x).toBeCloseTo(embed('a cat', 8)[i]!, 6);
  });

  it('answers bad input with a 400 naming the field', async () => {
    const model = await sim({ flavor: 'openai' });
    for (const [body, field] of [
      [{}, 'input'],
      [{ input: 42 }, 'input'],
      [{ input: 'x', dimensions: 0 }, 'dimensions'],
      [{ input: 'x', encoding_format: 'hex' }, 'encoding_format'],
      [[1, 2], 'body'],
    ] as const) {
      const r = await post(`${model.url}/v1/embeddings`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.param, JSON.stringify(body)).toBe(field);
    }
    expect(model.stats().started).toBe(0);
  });
});

describe('POST /echo', () => {
  it('answers {path, body} on every flavor, admitted and counted like a model request', async () => {
    for (const flavor of ['openai', 'tgi', 'comfyui'] as const) {
      const model = await sim({ flavor });
      const r = await post(`${model.url}/echo/any/path`, { hello: [1, 2] });
      expect(r.status, flavor).toBe(200);
      expect(r.json).toEqual({ path: '/echo/any/path', body: { hello: [1, 2] } });
      expect(model.stats().finished, flavor).toBe(1);
      expect((await post(`${model.url}/echoes`, {})).status, flavor).toBe(404);
    }
  });

  it('honours the error rate', async () => {
    const model = await sim({ flavor: 'tgi', errorRate: 1 });
    expect((await post(`${model.url}/echo`, { x: 1 })).status).toBe(500);
  });
});

describe('a custom handler tested against model-sim', () => {
  it('an embeddings handler serves through the worker, its workload being the input length', async () => {
    const model = await sim({ flavor: 'openai' });
    const embeddings = defineHandler({
      route: '/embed',
      upstreamPath: '/v1/embeddings',
      allowParallelRequests: true,
      payload: z.object({ texts: z.array(z.string()).min(1) }),
      workload: (p) => p.texts.join('').length,
      toModelRequest: (p) => ({ input: p.texts, dimensions: 4 }),
      toClientResponse: (body, status) =>
        status === 200 ? { vectors: (body as { data: Array<{ embedding: number[] }> }).data.map((d) => d.embedding) } : body,
      benchmark: { generator: (i) => ({ texts: [`text ${i}`] }), runs: 1, concurrency: 2 },
    });
    const w = await res.add(startTestWorker({ modelUrl: model.url, handlers: [embeddings] }));
    const r = await postJson(w.url + '/embed', envelope({ texts: ['one', 'two'] }), { dispatcher: agent });
    expect(r.status).toBe(200);
    expect(r.json.vectors).toEqual([embed('one', 4), embed('two', 4)]);
    expect(w.ledger.totals.served).toBe(6);
    ledgerAudit(w);
  });
});
