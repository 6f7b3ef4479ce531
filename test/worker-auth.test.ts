import { createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthChecker, extractPem, fetchPublicKey, strictSignedMessage } from '../src/worker/auth.js';
import {
  authData,
  clientAgent,
  echoModel,
  envelope,
  postJson,
  startTestEngine,
  startTestModel,
  startTestWorker,
  useResources,
  waitFor,
  type TestEngine,
  type TestModel,
  type TestWorker,
} from './helpers/worker.js';

/**
 * Signatures are made here with node:crypto over the literal Python json.dumps text, not with the
 * project's own signing helpers, so the worker is checked against an independent signer.
 */
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const signText = (key: KeyObject, text: string) => createSign('sha256').update(text).sign(key, 'base64');

const PLAIN_URL = 'http://1.2.3.4:40123';
const PLAIN_MESSAGE = '{\n    "url": "http://1.2.3.4:40123"\n}';
// The url has é (U+00E9), ü (U+00FC) and 😀 (U+1F600, a surrogate pair in Python's output).
const NON_ASCII_URL = 'http://café.example:8080/ü/😀';
const NON_ASCII_MESSAGE = '{\n    "url": "http://caf\\u00e9.example:8080/\\u00fc/\\ud83d\\ude00"\n}';

describe('signatures through a running worker', () => {
  let engine: TestEngine;
  let model: TestModel;
  let worker: TestWorker;
  const agent = clientAgent(8);

  beforeAll(async () => {
    engine = await startTestEngine(publicKeyPem);
    model = await startTestModel(echoModel);
    worker = await startTestWorker({ modelUrl: model.url, unsecured: false, reportAddr: engine.url });
  });
  afterAll(async () => {
    await worker?.close();
    await model?.close();
    await engine?.close();
    await agent.close();
  });

  const post = (auth: Record<string, unknown>, payload: unknown = { q: 1 }) => postJson(worker.url + '/echo', envelope(payload, auth), { dispatcher: agent });

  it('fetched the public key from {REPORT_ADDR}/pubkey/ before becoming ready', () => {
    expect(engine.pubkeyHits).toBeGreaterThanOrEqual(1);
    expect(worker.auth.hasKey).toBe(true);
  });

  it('accepts a good signature and forwards the request', async () => {
    const r = await post(authData({ url: PLAIN_URL, signature: signText(privateKey, PLAIN_MESSAGE), request_idx: 501, reqnum: 41 }));
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ echo: { q: 1 } });
    expect(worker.auth.reqnum).toBeGreaterThanOrEqual(41);
  });

  it('accepts a good signature of a url with non-ASCII characters (\\uXXXX escapes, surrogate pairs)', async () => {
    const r = await post(authData({ url: NON_ASCII_URL, signature: signText(privateKey, NON_ASCII_MESSAGE), request_idx: 502 }));
    expect(r.status).toBe(200);
  });

  it('refuses a signature over the raw UTF-8 url (not the Python text) with an empty 401', async () => {
    const wrongText = `{\n    "url": "${NON_ASCII_URL}"\n}`;
    const r = await post(authData({ url: NON_ASCII_URL, signature: signText(privateKey, wrongText), request_idx: 503 }));
    expect(r.status).toBe(401);
    expect(r.text).toBe('');
  });

  it('refuses a signature made for another url, by another key, or garbage, with an empty 401', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const cases = [signText(privateKey, '{\n    "url": "http://1.2.3.4:40124"\n}'), signText(other, PLAIN_MESSAGE), 'bm90IGEgc2lnbmF0dXJl', '%%%', ''];
    for (const [i, signature] of cases.entries()) {
      const r = await post(authData({ url: PLAIN_URL, signature, request_idx: 600 + i }));
      expect(r.status, `case ${i}`).toBe(401);
      expect(r.text).toBe('');
    }
  });

  it('a missing signature is a 422 naming it, never a 401', async () => {
    const { signature: _omit, ...auth } = authData({ url: PLAIN_URL });
    const r = await post(auth);
    expect(r.status).toBe(422);
    expect(r.json).toEqual({ auth_data: { signature: 'missing parameter' } });
  });

  it('counts refused signatures as rejected and reports them to /delete_requests/ with success=false', async () => {
    const beforeRejected = worker.ledger.totals.rejected;
    const r = await post(authData({ url: PLAIN_URL, signature: signText(privateKey, 'something else'), request_idx: 700, cost: 5 }), { workload: 25 });
    expect(r.status).toBe(401);
    expect(worker.ledger.totals.rejected - beforeRejected).toBe(25);
    await waitFor(
      () => engine.deleteRequests.some((d) => d.success === false && d.request_idxs.includes(700)),
      5000,
      () => 'a delete post for 700',
    );
    const good = await post(authData({ url: PLAIN_URL, signature: signText(privateKey, PLAIN_MESSAGE), request_idx: 701 }));
    expect(good.status).toBe(200);
    await waitFor(
      () => engine.deleteRequests.some((d) => d.success === true && d.request_idxs.includes(701)),
      5000,
      () => 'a delete post for 701',
    );
    const all = engine.deleteRequests.flatMap((d) => d.request_idxs.map((i) => `${i}:${d.success}`));
    expect(all.filter((x) => x.startsWith('700:'))).toEqual(['700:false']);
    expect(all.filter((x) => x.startsWith('701:'))).toEqual(['701:true']);
  });

  it('keeps reqnum = max(reqnum, auth_data.reqnum) only for good signatures', async () => {
    const sig = signText(privateKey, PLAIN_MESSAGE);
    await post(authData({ url: PLAIN_URL, signature: sig, reqnum: 9000 }));
    expect(worker.auth.reqnum).toBe(9000);
    await post(authData({ url: PLAIN_URL, signature: sig, reqnum: 8000 }));
    expect(worker.auth.reqnum).toBe(9000);
    await post(authData({ url: PLAIN_URL, signature: 'bad', reqnum: 99_999 }));
    expect(worker.auth.reqnum).toBe(9000);
  });
});

describe('the public key', () => {
  const res = useResources();

  it('is fetched again until the engine serves it', async () => {
    const engine = await res.add(startTestEngine(publicKeyPem, { pubkeyFailures: 2 }));
    const pem = await fetchPublicKey(engine.url, { attempts: 5, baseDelayMs: 10 });
    expect(pem.trim()).toBe(publicKeyPem.trim());
    expect(engine.pubkeyHits).toBe(3);
  });

  it('gives up after the given attempts, saying what failed last', async () => {
    const engine = await res.add(startTestEngine(null));
    await expect(fetchPublicKey(engine.url, { attempts: 4, baseDelayMs: 5 })).rejects.toThrow(/could not get the engine's public key: .*answered 503/);
    expect(engine.pubkeyHits).toBe(4);
  });

  it('a secured worker becomes ready once a late key arrives', async () => {
    const engine = await res.add(startTestEngine(publicKeyPem, { pubkeyFailures: 2 }));
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(startTestWorker({ modelUrl: model.url, unsecured: false, reportAddr: engine.url, timings: { pubkeyBaseDelayMs: 10 } }));
    expect(w.auth.hasKey).toBe(true);
    const r = await postJson(w.url + '/echo', envelope({}, authData({ url: PLAIN_URL, signature: signText(privateKey, PLAIN_MESSAGE) })));
    expect(r.status).toBe(200);
  });

  it('a secured worker without the key refuses every request with 401 and is not ready', async () => {
    const engine = await res.add(startTestEngine(null));
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(
      startTestWorker({ modelUrl: model.url, unsecured: false, reportAddr: engine.url, waitReady: false, timings: { pubkeyBaseDelayMs: 10_000 } }),
    );
    const r = await postJson(w.url + '/echo', envelope({}, authData({ url: PLAIN_URL, signature: signText(privateKey, PLAIN_MESSAGE) })));
    expect(r.status).toBe(401);
    expect(w.lifecycle.state).not.toBe('ready');
  });

  it('extractPem accepts raw PEM, a JSON string, or {key|public_key|pubkey}', () => {
    expect(extractPem(publicKeyPem)).toBe(publicKeyPem.trim());
    expect(extractPem(JSON.stringify(publicKeyPem))).toBe(publicKeyPem);
    expect(extractPem(JSON.stringify({ public_key: publicKeyPem }))).toBe(publicKeyPem);
    expect(extractPem('{"nope": 1}')).toBeNull();
    expect(extractPem('hello')).toBeNull();
  });

  it('strict mode: an expired auth_data is refused, unless it belongs to an open session; a tampered one never passes', () => {
    let nowMs = 1_000_000_000_000;
    const checker = new AuthChecker({ unsecured: false, strict: true, now: () => nowMs });
    checker.setPublicKey(publicKeyPem);
    const fields = { cost: 100, endpoint: 'ep', reqnum: 3, request_idx: 42, url: PLAIN_URL, expires_at: nowMs / 1000 + 60 };
    const auth = { ...fields, signature: signText(privateKey, strictSignedMessage(fields)) };
    expect(checker.check(auth as never)).toBe(true);
    nowMs += 120_000; // past expires_at
    expect(checker.check(auth as never)).toBe(false);
    expect(checker.check(auth as never, { withinOpenSession: true })).toBe(true);
    const repriced = { ...auth, cost: 1 };
    expect(checker.check(repriced as never, { withinOpenSession: true })).toBe(false);
    expect(checker.check({ ...auth, expires_at: undefined } as never, { withinOpenSession: true })).toBe(false);
  });

  it('AuthChecker caches verdicts per (url, signature) and forgets them when the key changes', () => {
    const checker = new AuthChecker({ unsecured: false });
    const auth = authData({ url: PLAIN_URL, signature: signText(privateKey, PLAIN_MESSAGE) });
    expect(checker.check(auth as never)).toBe(false); // no key yet
    checker.setPublicKey(publicKeyPem);
    expect(checker.check(auth as never)).toBe(true);
    expect(checker.check(auth as never)).toBe(true);
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    checker.setPublicKey(other);
    expect(checker.check(auth as never)).toBe(false);
  });
});
