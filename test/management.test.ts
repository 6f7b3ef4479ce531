import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bearerToken, managementExtension, tokenMatches } from '../src/worker/management.js';
import { clientAgent, postJson, startTestModel, startTestWorker, useResources, echoModel } from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(8);
afterAll(() => agent.close());

const TOKEN = 'master-Tk-93jd0QmZ';

async function setup(token = TOKEN) {
  const dir = mkdtempSync(join(tmpdir(), 'mgmt-'));
  res.defer(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, 'sub', '.force_update');
  const model = await res.add(startTestModel(echoModel));
  const w = await res.add(
    startTestWorker({ modelUrl: model.url, env: { MASTER_TOKEN: token, FORCE_UPDATE_FILE: marker }, extensions: [managementExtension()] }),
  );
  const update = (headers: Record<string, string>) => postJson(w.url + '/pyworker/update', {}, { dispatcher: agent, headers });
  return { w, marker, update };
}

describe('POST /pyworker/update', () => {
  it('with the right bearer token writes the marker file and answers {ok: true}', async () => {
    const { marker, update } = await setup();
    expect(existsSync(marker)).toBe(false);
    const r = await update({ authorization: `Bearer ${TOKEN}` });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ ok: true });
    expect(existsSync(marker)).toBe(true);
    expect(Number.isNaN(Date.parse(readFileSync(marker, 'utf8').trim()))).toBe(false);
    // The scheme is case-insensitive, as HTTP says.
    expect((await update({ authorization: `bearer ${TOKEN}` })).status).toBe(200);
  });

  it('answers 401 JSON naming the header for a missing, malformed or wrong token, and writes nothing', async () => {
    const { marker, update } = await setup();
    for (const headers of <Array<Record<string, string>>>[
      {},
      { authorization: TOKEN },
      { authorization: `Basic ${TOKEN}` },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
      { authorization: 'Bearer ' },
    ]) {
      const r = await update(headers);
      expect(r.status, JSON.stringify(headers)).toBe(401);
      expect(r.json).toEqual({ error: expect.any(String), field: 'authorization' });
    }
    expect(existsSync(marker)).toBe(false);
  });

  it('refuses everyone when MASTER_TOKEN is empty', async () => {
    const { marker, update } = await setup('');
    expect((await update({ authorization: 'Bearer ' })).status).toBe(401);
    expect((await update({ authorization: 'Bearer x' })).status).toBe(401);
    expect(existsSync(marker)).toBe(false);
  });

  it('answers 500 JSON when the marker cannot be written, and keeps serving', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mgmt-ro-'));
    res.defer(() => rmSync(dir, { recursive: true, force: true }));
    const blocker = join(dir, 'file');
    (await import('node:fs')).writeFileSync(blocker, 'x');
    const model = await res.add(startTestModel(echoModel));
    // The marker's directory is a regular file: mkdir fails.
    const w = await res.add(
      startTestWorker({ modelUrl: model.url, env: { MASTER_TOKEN: TOKEN, FORCE_UPDATE_FILE: join(blocker, 'marker') }, extensions: [managementExtension()] }),
    );
    const r = await postJson(w.url + '/pyworker/update', {}, { dispatcher: agent, headers: { authorization: `Bearer ${TOKEN}` } });
    expect(r.status).toBe(500);
    expect(r.json.error).toContain('could not write');
    expect(
      (
        await postJson(
          w.url + '/echo',
          { auth_data: { cost: 1, endpoint: 'e', reqnum: 1, request_idx: 1, signature: 's', url: 'u' }, payload: {} },
          { dispatcher: agent },
        )
      ).status,
    ).toBe(200);
  });
});

describe('token helpers', () => {
  it('tokenMatches is exact', () => {
    expect(tokenMatches('abc', 'abc')).toBe(true);
    expect(tokenMatches('abc', 'abd')).toBe(false);
    expect(tokenMatches('abc', 'abcd')).toBe(false);
    expect(tokenMatches('abc', '')).toBe(false);
    expect(tokenMatches('', '')).toBe(false);
    expect(tokenMatches('abc', undefined)).toBe(false);
  });

  it('bearerToken reads the Authorization header', () => {
    expect(bearerToken('Bearer a.b-c')).toBe('a.b-c');
    expect(bearerToken('  bearer   tok  ')).toBe('tok');
    expect(bearerToken('Basic x')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
    expect(bearerToken('Bearer')).toBeNull();
  });
});
