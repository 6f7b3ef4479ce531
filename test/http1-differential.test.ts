/**
 * Issue 14, client side: differential conformance of the fast lane against node:http. A corpus of
 * valid requests and thousands of seeded byte mutations of it go, byte for byte, to two workers in
 * front of echo models: one with the fast lane, one with node:http only. For every case the two
 * must give the same answers (status and body; the echo body is exactly what reached the model).
 * A difference fails the test unless it is on ALLOWED below, with its reason. A case that differs
 * is first sent again with more patience (a slow machine must not make a difference).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRandom } from '../src/common/random.js';
import { garbageAfterClose, mutate } from './helpers/mutations.js';
import { rawConnect, type RawExchange } from './helpers/raw-http.js';
import { SCHEMES } from './helpers/tls.js';
import { authData, echoModel, envelope, ledgerAudit, startTestModel, startTestWorker, waitFor, type TestModel, type TestWorker } from './helpers/worker.js';

const MUTATIONS = Number(process.env.DIFF_MUTATIONS ?? 2000);
const SEED = Number(process.env.DIFF_SEED ?? 14);

function head(lines: string[]): string {
  return lines.map((l) => l + '\r\n').join('') + '\r\n';
}
function post(body: string, extra: string[] = [], path = '/echo', version = 'HTTP/1.1'): string {
  return head([`POST ${path} ${version}`, 'host: worker', 'content-type: application/json', ...extra, `content-length: ${Buffer.byteLength(body)}`]) + body;
}
const env = (payload: unknown, idx: number) => JSON.stringify(envelope(payload, authData({ request_idx: idx })));

/** Valid requests: what clients send, in the forms HTTP/1.1 allows. */
function corpus(): string[] {
  const b = (n: number, p: unknown = { prompt: 'hello', n }) => env(p, 900_000 + n);
  return [
    post(b(1)),
    post(b(2), [], '/echo?stream=false&x=%20'),
    post(b(3), ['connection: close']),
    post(b(4), ['connection: keep-alive']),
    head(['POST /echo HTTP/1.1', 'Host: worker', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(b(5))}`]) + b(5),
    head(['POST /echo HTTP/1.1', 'host:worker', 'content-type:\tapplication/json', `content-length:  ${Buffer.byteLength(b(6))}\t`]) + b(6),
    post(b(7), ['user-agent: curl/8.5.0', 'accept: */*', 'x-note: caf\xe9 ok']),
    post(b(8)) + post(b(9)),
    post(b(10)) + head(['GET /nope HTTP/1.1', 'host: worker']) + post(b(11)),
    head(['POST /echo HTTP/1.1', 'host: worker', 'transfer-encoding: chunked']) + `${Buffer.byteLength(b(12)).toString(16)}\r\n${b(12)}\r\n0\r\n\r\n`,
    post(b(13), ['expect: 100-continue']),
    post(b(14), ['connection: keep-alive'], '/echo', 'HTTP/1.0'),
    post(''),
    post('{"auth_data": 1}'),
    post(b(15, { prompt: 'ünïcödé ✓ 😀' })),
    post(b(16), [], '/missing'),
    post('not json') + post(b(17)),
    post(b(18, { prompt: 'x'.repeat(20_000) })),
    head(['GET /echo HTTP/1.1', 'host: worker']),
  ];
}

interface Outcome {
  answers: string[];
}

/** What a client sees: each complete answer's status and body, in order. */
function outcome(x: RawExchange): Outcome {
  const answers = x.answers.map((a) => `${a.status} ${a.body.toString('latin1')}`);
  if (x.cut) answers.push(`${x.cut.status} (cut)`);
  return { answers };
}

async function exchange(url: string, bytes: Buffer, patient: boolean): Promise<Outcome> {
  const c = await rawConnect(url);
  try {
    c.write(bytes);
    return outcome(await c.read(1, patient ? { timeoutMs: 1500, quietMs: 250 } : { timeoutMs: 400, quietMs: 50 }));
  } finally {
    c.close();
  }
}

/**
 * Differences between the two paths that are right, each with its reason (fast lane answers,
 * node:http answers). Two found by this test were fixed rather than listed: node:http's clientError
 * 400 overtook the answer to the request before the garbage (http1/client-errors.ts now answers in order), and
 * the fast lane waited for the end of a head already broken by a bare CR or LF (now handed over).
 */
const ALLOWED: Array<{ reason: string; applies: (fast: string[], http: string[]) => boolean }> = [
  {
    reason:
      'garbage right after an answer that closed the connection: node:http gives it a 400 only while the socket is still writable, which depends on timing; the answers before agree',
    applies: garbageAfterClose,
  },
];

// Over plain HTTP and over TLS (USE_SSL): both listeners hand their sockets to the same fast lane.
for (const scheme of SCHEMES)
  describe(`differential: fast lane vs node:http (${scheme})`, () => {
    const tls = scheme === 'https';
    let fastModel: TestModel;
    let httpModel: TestModel;
    let fast: TestWorker;
    let http: TestWorker;

    beforeAll(async () => {
      fastModel = await startTestModel(echoModel);
      httpModel = await startTestModel(echoModel);
      fast = await startTestWorker({ modelUrl: fastModel.url, requestPath: { fastLane: true }, tls });
      http = await startTestWorker({ modelUrl: httpModel.url, requestPath: { fastLane: false }, tls });
    });
    afterAll(async () => {
      await fast?.close();
      await http?.close();
      await fastModel?.close();
      await httpModel?.close();
    });

    it(`the corpus and ${MUTATIONS} seeded mutations of it get the same answers on both paths`, async () => {
      const base = corpus().map((s) => Buffer.from(s, 'latin1'));
      const rnd = seededRandom(SEED);
      const cases: Buffer[] = [...base];
      for (let i = 0; i < MUTATIONS; i++) cases.push(mutate(base[Math.floor(rnd() * base.length)]!, rnd));

      const differing: number[] = [];
      let next = 0;
      const worker = async () => {
        while (next < cases.length) {
          const i = next++;
          const [a, b] = await Promise.all([exchange(fast.url, cases[i]!, false), exchange(http.url, cases[i]!, false)]);
          if (JSON.stringify(a) !== JSON.stringify(b)) differing.push(i);
        }
      };
      await Promise.all(Array.from({ length: 16 }, worker));

      // Again, one at a time and with patience: only differences that stay count.
      const failures: string[] = [];
      const allowed = new Map<string, number>();
      const excusedCases: number[] = [];
      for (const i of differing) {
        const a = await exchange(fast.url, cases[i]!, true);
        const b = await exchange(http.url, cases[i]!, true);
        if (JSON.stringify(a) === JSON.stringify(b)) continue;
        const rule = ALLOWED.find((r) => r.applies(a.answers, b.answers));
        if (rule) {
          allowed.set(rule.reason, (allowed.get(rule.reason) ?? 0) + 1);
          excusedCases.push(i);
          if (process.env.DIFF_VERBOSE)
            console.log(
              `excused case ${i} ${JSON.stringify(cases[i]!.toString('latin1'))}\n  fast lane: ${a.answers.join(' ; ')}\n  node:http: ${b.answers.join(' ; ')}`,
            );
        } else
          failures.push(
            `case ${i} ${JSON.stringify(cases[i]!.toString('latin1').slice(0, 300))}:\n  fast lane: ${a.answers.join(' ; ').slice(0, 300)}\n  node:http: ${b.answers.join(' ; ').slice(0, 300)}`,
          );
      }
      expect(failures.slice(0, 10), `${failures.length} of ${cases.length} cases differ`).toEqual([]);
      // The allow-list stays short and honest: report what it excused.
      console.log(`differential (${scheme}): ${cases.length} cases, ${differing.length} differed at first, excused: ${JSON.stringify([...allowed.entries()])}`);
      // Both workers are whole afterwards.
      for (const w of [fast, http]) {
        await waitFor(
          () => w.ledger.workingCount === 0,
          10_000,
          () => 'ledger idle',
        );
        ledgerAudit(w);
        expect(w.lifecycle.state).toBe('ready');
      }
      // The valid corpus gets exactly the same answers on both paths, served (the test would be empty otherwise).
      expect(excusedCases.filter((i) => i < base.length)).toEqual([]);
      expect(fast.ledger.totals.served).toBeGreaterThan(0);
      expect(http.ledger.totals.served).toBeGreaterThan(0);
    }, 240_000);
  });
