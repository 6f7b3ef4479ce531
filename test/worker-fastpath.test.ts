/**
 * The request path's two shortcuts (issue 7): the listener's fast lane (server.ts), which reads
 * plain `POST <route> HTTP/1.1` requests itself and hands every other request to node:http, and
 * the model client (model-client.ts), which speaks HTTP/1.1 to the model itself. Real sockets on
 * loopback: raw clients that write exact bytes, and raw models that answer exact bytes.
 */
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { openSocket } from './helpers/raw-http.js';
import { SCHEMES } from './helpers/tls.js';
import { authData, clientAgent, echoModel, envelope, ledgerAudit, postJson, startTestModel, startTestWorker, useResources, waitFor } from './helpers/worker.js';

const res = useResources();
const agent = clientAgent(16);
const tlsAgent = clientAgent(16, { tls: true });
afterAll(async () => {
  await agent.close();
  await tlsAgent.close();
});

/** The HTTP text of a POST to `path` with `body` (and extra header lines). */
function post(path: string, body: string, extra = ''): string {
  return `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${extra}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** A raw client connection: write bytes, read complete answers (content-length or chunked) in order. */
async function rawClient(url: string): Promise<{
  socket: Socket;
  write(s: string | Buffer): void;
  answers(n: number, timeoutMs?: number): Promise<RawAnswer[]>;
  closed: Promise<void>;
  close(): void;
}> {
  const socket = await openSocket(url);
  socket.on('error', () => undefined);
  let buf = Buffer.alloc(0);
  const waiting: Array<() => void> = [];
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (const w of waiting.splice(0)) w();
  });
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  void closed.then(() => {
    for (const w of waiting.splice(0)) w();
  });
  return {
    socket,
    write: (s) => void socket.write(s),
    closed,
    close: () => void socket.destroy(),
    async answers(n, timeoutMs = 5000) {
      const out: RawAnswer[] = [];
      const until = Date.now() + timeoutMs;
      while (out.length < n) {
        const parsed = parseAnswer(buf);
        if (parsed) {
          out.push(parsed.answer);
          buf = buf.subarray(parsed.length);
          continue;
        }
        if (socket.destroyed || Date.now() > until)
          throw new Error(`got ${out.length} of ${n} answers; pending bytes: ${JSON.stringify(buf.toString('latin1').slice(0, 300))}`);
        await new Promise<void>((r) => {
          waiting.push(r);
          setTimeout(r, 50);
        });
      }
      return out;
    },
  };
}

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One complete answer at the start of `buf`, or null. */
function parseAnswer(buf: Buffer): { answer: RawAnswer; length: number } | null {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return null;
  const lines = buf.toString('latin1', 0, headEnd).split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let at = headEnd + 4;
  if (headers['transfer-encoding'] === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const nl = buf.indexOf('\r\n', at);
      if (nl < 0) return null;
      const size = parseInt(buf.toString('latin1', at, nl), 16);
      if (buf.length < nl + 2 + size + 2) return null;
      parts.push(buf.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
      if (size === 0) break;
    }
    return { answer: { status, headers, body: Buffer.concat(parts).toString('utf8') }, length: at };
  }
  const len = Number(headers['content-length'] ?? 0);
  if (buf.length < at + len) return null;
  return { answer: { status, headers, body: buf.toString('utf8', at, at + len) }, length: at + len };
}

// Every fast-lane case runs over plain HTTP and over TLS (USE_SSL): the same lane reads both.
for (const scheme of SCHEMES)
  describe(`fast lane (${scheme})`, () => {
    const tls = scheme === 'https';
    const dispatcher = tls ? tlsAgent : agent;
    it('answers pipelined requests in order, handing a non-handler request to node:http mid-connection', async () => {
      const model = await res.add(startTestModel(echoModel));
      const w = await res.add(startTestWorker({ modelUrl: model.url, tls }));
      const c = await rawClient(w.url);
      res.defer(() => c.close());
      const one = JSON.stringify(envelope({ n: 1 }));
      const two = JSON.stringify(envelope({ n: 2 }));
      const three = JSON.stringify(envelope({ n: 3 }));
      // Three handler requests and a GET in one write: the GET (and what follows it) goes to node:http.
      c.write(post('/echo', one) + post('/echo', two) + 'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n' + post('/echo', three));
      const a = await c.answers(4);
      expect(a.map((x) => x.status)).toEqual([200, 200, 200, 200]);
      expect(JSON.parse(a[0]!.body)).toEqual({ echo: { n: 1 } });
      expect(JSON.parse(a[1]!.body)).toEqual({ echo: { n: 2 } });
      expect(JSON.parse(a[2]!.body).state).toBe('ready');
      expect(JSON.parse(a[3]!.body)).toEqual({ echo: { n: 3 } });
      // The connection is still good after the hand-over.
      c.write(post('/echo', JSON.stringify(envelope({ n: 4 }))));
      expect(JSON.parse((await c.answers(1))[0]!.body)).toEqual({ echo: { n: 4 } });
      ledgerAudit(w);
    });

    it('serves a request that arrives a few bytes at a time', async () => {
      const model = await res.add(startTestModel(echoModel));
      const w = await res.add(startTestWorker({ modelUrl: model.url, tls }));
      const c = await rawClient(w.url);
      res.defer(() => c.close());
      const text = post('/echo', JSON.stringify(envelope({ slow: 'drip' })));
      for (let i = 0; i < text.length; i += 7) {
        c.write(text.slice(i, i + 7));
        await new Promise((r) => setTimeout(r, 2));
      }
      const [a] = await c.answers(1);
      expect(a!.status).toBe(200);
      expect(JSON.parse(a!.body)).toEqual({ echo: { slow: 'drip' } });
      // A body of many reads (under the fast lane's 1 MiB), byte for byte.
      const prompt = 'p'.repeat(600 * 1024);
      const big = await postJson(w.url + '/echo', envelope({ prompt }), { dispatcher });
      expect(big.status).toBe(200);
      expect((big.json as { echo: { prompt: string } }).echo.prompt).toBe(prompt);
    });

    it('hands chunked bodies, Expect: 100-continue, HTTP/1.0 and large bodies to node:http, which serves them', async () => {
      const model = await res.add(startTestModel(echoModel));
      const w = await res.add(startTestWorker({ modelUrl: model.url, spec: { maxBodyBytes: 4 * 1024 * 1024 }, tls }));
      const body = JSON.stringify(envelope({ how: 'chunked' }));
      const chunked = await rawClient(w.url);
      res.defer(() => chunked.close());
      chunked.write(`POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
      expect(JSON.parse((await chunked.answers(1))[0]!.body)).toEqual({ echo: { how: 'chunked' } });

      const expect100 = await rawClient(w.url);
      res.defer(() => expect100.close());
      const b2 = JSON.stringify(envelope({ how: 'expect' }));
      expect100.write(`POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: ${b2.length}\r\n\r\n`);
      const [cont] = await expect100.answers(1);
      expect(cont!.status).toBe(100);
      expect100.write(b2);
      expect(JSON.parse((await expect100.answers(1))[0]!.body)).toEqual({ echo: { how: 'expect' } });

      const http10 = await rawClient(w.url);
      res.defer(() => http10.close());
      const b3 = JSON.stringify(envelope({ how: 'http/1.0' }));
      http10.write(`POST /echo HTTP/1.0\r\ncontent-length: ${b3.length}\r\n\r\n${b3}`);
      expect(JSON.parse((await http10.answers(1))[0]!.body)).toEqual({ echo: { how: 'http/1.0' } });

      // Over the fast lane's 1 MiB: node:http streams it against the route's limit (4 MiB here).
      const big = await postJson(w.url + '/echo', envelope({ prompt: 'z'.repeat(2 * 1024 * 1024) }), { dispatcher });
      expect(big.status).toBe(200);
      expect((big.json as { echo: { prompt: string } }).echo.prompt.length).toBe(2 * 1024 * 1024);
      ledgerAudit(w);
    });

    it('closes the connection after an answer to "connection: close", and refuses malformed heads like node:http', async () => {
      const model = await res.add(startTestModel(echoModel));
      const w = await res.add(startTestWorker({ modelUrl: model.url, tls }));
      const c = await rawClient(w.url);
      res.defer(() => c.close());
      c.write(post('/echo', JSON.stringify(envelope({ bye: true })), 'connection: close\r\n'));
      const [a] = await c.answers(1);
      expect(a!.status).toBe(200);
      expect(a!.headers.connection).toBe('close');
      await c.closed;

      for (const bad of [
        'POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!',
        'POST /echo HTTP/1.1\r\nhost: x\r\n folded: header\r\ncontent-length: 2\r\n\r\n{}',
        'POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n',
      ]) {
        const b = await rawClient(w.url);
        res.defer(() => b.close());
        b.write(bad);
        const [answer] = await b.answers(1);
        expect(answer!.status, bad).toBe(400);
        expect(JSON.parse(answer!.body).field).toBe('request');
      }
      // A request without Host is an HTTP/1.1 error node:http answers.
      const noHost = await rawClient(w.url);
      res.defer(() => noHost.close());
      noHost.write('POST /echo HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}');
      expect((await noHost.answers(1))[0]!.status).toBe(400);
    });

    // A client that only half-closes still reads, and gets its answer (issue 21 row 10,
    // test/worker-request-end.test.ts); one that closes its socket is gone: found out by the probe.
    it('a client that closes its socket mid-request cancels it, and the model connection is closed', async () => {
      let modelSawClose: Promise<number> | null = null;
      const model = await res.add(
        startTestModel((_q, _r, _b, conn) => {
          modelSawClose = conn.closed; // never answers
        }),
      );
      const w = await res.add(startTestWorker({ modelUrl: model.url, tls }));
      const c = await rawClient(w.url);
      c.write(post('/echo', JSON.stringify(envelope({ workload: 5 }))));
      await waitFor(() => modelSawClose !== null);
      c.close();
      await modelSawClose;
      await waitFor(() => w.ledger.totals.cancelled === 5);
      ledgerAudit(w);
    });
  });

describe('TLS listener (USE_SSL)', () => {
  /** The head of the first answer on `socket` to `text`, as raw bytes. */
  const headOf = (socket: Socket, text: string) =>
    new Promise<string>((resolve) => {
      let got = '';
      const onData = (d: Buffer) => {
        got += d.toString('latin1');
        const end = got.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        resolve(got.slice(0, end));
      };
      socket.on('data', onData);
      socket.write(text);
    });

  it('TLS connections are read by the fast lane (its lowercase keep-alive lines), node:http only when the lane is off', async () => {
    const model = await res.add(startTestModel(echoModel));
    for (const fastLane of [true, false]) {
      const w = await res.add(startTestWorker({ modelUrl: model.url, tls: true, requestPath: { fastLane } }));
      expect(w.url).toMatch(/^https:/);
      const socket = await openSocket(w.url);
      res.defer(() => void socket.destroy());
      const head = await headOf(socket, post('/echo', JSON.stringify(envelope({ lane: fastLane }))));
      expect(head).toMatch(/^HTTP\/1\.1 200 /);
      // The fast lane writes its own framing lines; node:http writes "Connection: keep-alive".
      if (fastLane) expect(head).toContain('\r\nconnection: keep-alive\r\nkeep-alive: timeout=65');
      else expect(head).toContain('\r\nConnection: keep-alive');
    }
  });

  it('keeps a TLS connection alive across requests and resumes a session from its ticket (no full handshake)', async () => {
    const { connect: tlsConnect } = await import('node:tls');
    const { testCert } = await import('./helpers/tls.js');
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(startTestWorker({ modelUrl: model.url, tls: true }));
    const { port } = new URL(w.url);
    const open = (session?: Buffer) =>
      new Promise<TLSSocket>((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: Number(port), ca: testCert().ca, session });
        s.once('secureConnect', () => resolve(s));
        s.once('error', reject);
      });
    const first = await open();
    res.defer(() => void first.destroy());
    // TLS 1.3 tickets come after the handshake: take the first one the server sends.
    const ticket = new Promise<Buffer>((r) => first.once('session', r));
    expect(first.getProtocol()).toBe('TLSv1.3');
    expect(first.alpnProtocol).toBe(false); // no ALPN asked: HTTP/1.1 all the same
    for (let n = 0; n < 3; n++) {
      const head = await headOf(first, post('/echo', JSON.stringify(envelope({ n }))));
      expect(head).toMatch(/^HTTP\/1\.1 200 [\s\S]*keep-alive: timeout=65/);
    }
    expect(first.destroyed).toBe(false);
    const session = await ticket;
    first.end();
    const second = await open(session);
    res.defer(() => void second.destroy());
    expect(second.isSessionReused()).toBe(true);
    expect(await headOf(second, post('/echo', JSON.stringify(envelope({ resumed: true }))))).toMatch(/^HTTP\/1\.1 200 /);
    // A client that asks for a ticket the worker never issued gets a full handshake, and is served.
    const forged = Buffer.from(session);
    forged.fill(0x41, Math.floor(forged.length / 2));
    const third = await open(forged).catch(() => open());
    res.defer(() => void third.destroy());
    expect(third.isSessionReused()).toBe(false);
    expect(await headOf(third, post('/echo', JSON.stringify(envelope({ full: true }))))).toMatch(/^HTTP\/1\.1 200 /);
    ledgerAudit(w);
  });

  it('a client that connects and never finishes its TLS handshake is dropped after the header timeout', async () => {
    const { connect: tcpConnect } = await import('node:net');
    const model = await res.add(startTestModel(echoModel));
    const w = await res.add(startTestWorker({ modelUrl: model.url, tls: true, timings: { headersTimeoutMs: 300 } }));
    const raw = tcpConnect(Number(new URL(w.url).port), '127.0.0.1');
    raw.on('error', () => undefined);
    res.defer(() => void raw.destroy());
    const closed = new Promise<void>((r) => raw.once('close', () => r()));
    raw.write(Buffer.from([0x16, 0x03, 0x01])); // the start of a ClientHello, and then nothing
    await closed;
    expect(raw.destroyed).toBe(true);
    // The worker still serves.
    const socket = await openSocket(w.url);
    res.defer(() => void socket.destroy());
    expect(await headOf(socket, post('/echo', JSON.stringify(envelope({ after: 1 }))))).toMatch(/^HTTP\/1\.1 200 /);
  });
});

/** A model that answers each request (read up to its body) with bytes `answer(n)` builds; n counts requests. */
async function rawModel(answer: (n: number, socket: Socket) => void): Promise<{ url: string; connections: number; requests: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const state = { connections: 0, requests: 0 };
  const server: NetServer = createNetServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const headEnd = buf.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const len = Number(/content-length: (\d+)/i.exec(buf.toString('latin1', 0, headEnd))?.[1] ?? 0);
        if (buf.length < headEnd + 4 + len) return;
        buf = buf.subarray(headEnd + 4 + len);
        answer(++state.requests, socket);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return Object.assign(state, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  });
}

/** Write `text` in pieces of `size` bytes, `gapMs` apart (answers split at awkward places). */
async function dribble(socket: Socket, bytes: Buffer, size: number, gapMs = 1): Promise<void> {
  for (let i = 0; i < bytes.length && !socket.destroyed; i += size) {
    socket.write(bytes.subarray(i, i + size));
    await new Promise((r) => setTimeout(r, gapMs));
  }
}

describe('model client', () => {
  it('reads chunked answers split anywhere (sizes, extensions, trailers) and keeps the connection', async () => {
    const body = '{"text":"a chunked answer with ünïcode"}';
    const bytes = Buffer.from(body);
    const answer = Buffer.concat([
      Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\n'),
      bytes.subarray(0, 5),
      Buffer.from(`\r\n${(bytes.length - 5).toString(16)}\r\n`),
      bytes.subarray(5),
      Buffer.from('\r\n0\r\nx-trailer: 1\r\n\r\n'),
    ]);
    const model = await res.add(rawModel((_n, s) => void dribble(s, answer, 3)));
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    for (let i = 0; i < 3; i++) {
      const r = await postJson(w.url + '/echo', envelope({ i }), { dispatcher: agent });
      expect(r.status).toBe(200);
      expect(r.json).toEqual(JSON.parse(body));
    }
    expect(model.connections).toBe(1);
  });

  it('reads answers framed by the connection closing, skips 1xx, and honours "connection: close"', async () => {
    const model = await res.add(
      rawModel((n, s) => {
        if (n === 1) s.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"framed":"by close"}');
        else if (n === 2)
          s.write('HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\n{"after":103}');
        else s.write('HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"third":3}');
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const a = await postJson(w.url + '/echo', envelope({}), { dispatcher: agent });
    expect([a.status, a.json]).toEqual([200, { framed: 'by close' }]);
    const b = await postJson(w.url + '/echo', envelope({}), { dispatcher: agent });
    expect([b.status, b.json]).toEqual([200, { after: 103 }]);
    const c = await postJson(w.url + '/echo', envelope({}), { dispatcher: agent });
    expect([c.status, c.json]).toEqual([200, { third: 3 }]);
    // Each answer ended its connection (closed by the model, then "connection: close").
    expect(model.connections).toBe(3);
    ledgerAudit(w);
  });

  it('a malformed answer head, or one over 16 KiB, a malformed chunked JSON body: a 502 JSON naming the model (issue 14), counted errored', async () => {
    const model = await res.add(
      rawModel((n, s) => {
        if (n === 1) s.write('HTTP/1.1 2OO OK\r\n\r\n');
        else if (n === 2) s.write(`HTTP/1.1 200 OK\r\nx-big: ${'y'.repeat(17 * 1024)}\r\n\r\n`);
        else s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n');
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    for (let i = 0; i < 3; i++) {
      const r = await postJson(w.url + '/echo', envelope({ workload: 2 }), { dispatcher: agent });
      expect([r.status, r.json?.field], `answer ${i + 1}`).toEqual([502, 'model']);
      expect(r.json.error).toMatch(/^the model sent a bad answer: /);
    }
    await waitFor(() => w.ledger.totals.errored === 6);
    ledgerAudit(w);
  });

  it('a connection the model closed while idle is dropped: the next request goes out on a new one', async () => {
    // Like uvicorn's keep-alive timeout: the model closes idle connections after 300 ms.
    const model = await res.add(
      rawModel((_n, s) => {
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{"ok":1}\n');
        s.setTimeout(300, () => s.destroy());
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    for (let i = 0; i < 3; i++) {
      const r = await postJson(w.url + '/echo', envelope({ i }), { dispatcher: agent });
      expect(r.status, r.text).toBe(200);
      await new Promise((r2) => setTimeout(r2, 1300)); // past the model's idle close and the worker's 1 s recheck
    }
    expect(model.connections).toBe(3);
    expect(w.ledger.totals.errored).toBe(0);
  });

  it('bytes the model sends after a complete answer retire the connection, the answer itself is served', async () => {
    const model = await res.add(rawModel((_n, s) => void s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}GARBAGE')));
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    for (let i = 0; i < 2; i++) {
      const r = await postJson(w.url + '/echo', envelope({ i }), { dispatcher: agent });
      expect([r.status, r.json]).toEqual([200, {}]);
    }
    expect(model.connections).toBe(2);
  });

  it("holds one connection per request in flight, beyond undici's old 512 (no pipelining)", async () => {
    const release: Array<() => void> = [];
    const model = await res.add(
      startTestModel((_q, r) => {
        release.push(() => r.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
      }),
    );
    const w = await res.add(startTestWorker({ modelUrl: model.url }));
    const many = clientAgent(700);
    res.defer(() => many.close());
    const all = Array.from({ length: 600 }, () => postJson(w.url + '/echo', envelope({ workload: 1 }, authData()), { dispatcher: many }));
    await waitFor(
      () => release.length === 600,
      15_000,
      () => `${release.length} of 600 at the model`,
    );
    expect(model.openConnections()).toBeGreaterThanOrEqual(600);
    for (const r of release) r();
    expect((await Promise.all(all)).every((r) => r.status === 200)).toBe(true);
  }, 30_000);
});
