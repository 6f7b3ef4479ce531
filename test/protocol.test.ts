/**
 * The shared protocol module (src/common/protocol.ts): the route answer the engine builds is the
 * auth_data the worker accepts, the client refuses a route answer that is not valid auth_data
 * (against a real loopback autoscaler), and errors have one shape and list every problem.
 */
import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { authDataSchema, ConfigError, errorBody, fieldErrors, routeAnswerSchema, workerStatusSchema } from '../src/common/protocol.js';
import { RouteError, Serverless } from '../src/client/index.js';
import { checkEnvelope } from '../src/worker/envelope.js';
import { Ledger } from '../src/worker/ledger.js';
import { buildReport } from '../src/worker/reporter.js';

let servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  servers = [];
});

/** An autoscaler on loopback whose /route/ always answers `answer`. */
async function autoscaler(answer: unknown): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const answer = { url: 'http://127.0.0.1:1', request_idx: 7, reqnum: 3, cost: 100, endpoint: 'e', signature: 'c2ln', worker_id: 1, status: 'routed' };

describe('auth_data and the route answer', () => {
  it('a route answer is auth_data the worker accepts; numeric strings pass, extra keys are kept', () => {
    expect(routeAnswerSchema.safeParse(answer).success).toBe(true);
    const envelope = checkEnvelope({ auth_data: { ...answer, cost: '100' }, payload: {} });
    expect(envelope.ok && envelope.envelope.auth_data).toMatchObject({ cost: 100, worker_id: 1, status: 'routed' });
  });

  it("names every bad field, as the worker's 422 body does", () => {
    const bad = authDataSchema.safeParse({
      cost: -1,
      endpoint: 3,
      reqnum: 1.5,
      signature: null,
      url: 'u',
      expires_at: 'later',
      deep: JSON.parse('['.repeat(40) + ']'.repeat(40)),
    });
    expect(bad.success).toBe(false);
    expect(fieldErrors(bad.error!)).toEqual({
      cost: 'must be a non-negative number',
      endpoint: 'must be a string',
      reqnum: 'must be an integer',
      request_idx: 'missing parameter',
      signature: 'missing parameter',
      expires_at: 'must be a number (unix seconds)',
      deep: 'nested deeper than 32 levels',
    });
  });

  it('the client refuses a route answer that is not valid auth_data, naming the fields, without sending it anywhere', async () => {
    const url = await autoscaler({ ...answer, signature: undefined, reqnum: 'x' });
    const client = new Serverless({ autoscalerUrl: url, apiKey: 'k', retry: { maxAttempts: 1 } });
    try {
      const err = await client
        .endpoint('e')
        .request('/x', {})
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RouteError);
      expect((err as RouteError).fields).toEqual({ reqnum: 'must be an integer', signature: 'missing parameter' });
      expect((err as Error).message).toMatch(/signature/);
    } finally {
      await client.close();
    }
  });

  it("the report a worker builds is read by the engine's schema as it is written", () => {
    const ledger = new Ledger();
    const e = ledger.create({ requestIdx: 9, reqnum: 1, workload: 50, route: '/x' });
    ledger.start(e);
    ledger.setErrorMsg('boom');
    const report = buildReport({ containerId: 4, masterToken: 't', version: '1.2.3', publicUrl: 'http://w:1' }, ledger.snapshot(), 12.5, 0.25);
    expect(workerStatusSchema.parse(report)).toEqual(report);
    expect(report).toMatchObject({ id: 4, cur_load: 50, working_request_idxs: [9], error_msg: 'boom', additional_disk_usage: 0.25 });
  });

  it("a Python worker's report parses leniently as the engine reads it", () => {
    const r = workerStatusSchema.parse({ id: '12', mtoken: 't', cur_load: null, working_request_idxs: ['3'] });
    expect(r).toMatchObject({ id: 12, cur_load: 0, error_msg: '', working_request_idxs: [3] });
  });
});

describe('errors', () => {
  it('one body shape: the message, the first field, every field', () => {
    expect(errorBody('unknown session', 'session_id')).toEqual({ error: 'unknown session', field: 'session_id', fields: { session_id: 'unknown session' } });
    expect(errorBody('invalid body', { a: 'x', b: 'y' })).toEqual({ error: 'invalid body', field: 'a', fields: { a: 'x', b: 'y' } });
    expect(errorBody('internal error')).toEqual({ error: 'internal error' });
  });

  it('a ConfigError lists every problem, two of one field included, and unknown keys one by one', () => {
    const schema = z.strictObject({
      host: z
        .string()
        .min(3, 'too short')
        .regex(/^[a-z]+$/, 'lower-case letters only'),
      name: z.string(),
    });
    const parsed = schema.safeParse({ host: 'A1', extra: 1, other: 2 });
    const err = ConfigError.fromZod('config.yaml is invalid', parsed.error!);
    expect(err.message.split('\n')[0]).toBe('config.yaml is invalid:');
    expect(err.problems).toEqual([
      'host: too short',
      'host: lower-case letters only',
      'name: Invalid input: expected string, received undefined',
      'extra: unknown field',
      'other: unknown field',
    ]);
    expect(err.fields).toMatchObject({ host: 'too short', name: expect.any(String), extra: 'unknown field', other: 'unknown field' });
  });
});
