/**
 * A hostile model server on raw TCP (issue 14): it reads HTTP/1.1 requests itself and answers each
 * with exact bytes, well-formed or not. Which answer a request gets is chosen by the request body:
 * a JSON object with `"shape": "<name>"` gets that shape (see SHAPES); any other body gets a
 * well-formed 200 echo `{"echo": <body>}` on a keep-alive connection. Reusable by any test that
 * puts something in front of a model (the worker, undici, the model client).
 *
 *   const model = await startHostileModel();
 *   // worker in front of model.url; send payload {shape: 'lf-in-value'} → expect a 502 JSON
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/** What the client in front of the worker should end up with for a shape. */
export type Expect =
  /** the model's status passed on, with this body (a well-framed answer) */
  | { pass: number; body?: string }
  /** a 502 JSON error naming the model */
  | { bad: true }
  /** the connection to the model failed: the protocol's empty 500 */
  | { failed: true }
  /** the model took too long: 504 JSON */
  | { timeout: true }
  /** headers went out before the answer broke: the client is cut off mid-answer */
  | { cut: true };

export interface Shape {
  /** The answer, as the model writes it; 'hang' writes nothing; 'reset' / 'close' end the connection. */
  answer: (echo: string) => Array<string | Buffer | 'reset' | 'close' | 'hang' | { pauseMs: number }>;
  expect: Expect;
  /** The answer is not a JSON body a handler can echo (the shape keeps the connection afterwards anyway). */
  note: string;
}

const JSON_CT = 'content-type: application/json\r\n';
const ok = (body: string, extra = '') => `HTTP/1.1 200 OK\r\n${JSON_CT}${extra}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
const injected = '{"injected":true}';
const smuggled = `HTTP/1.1 200 OK\r\n${JSON_CT}content-length: ${injected.length}\r\n\r\n${injected}`;

/** Every answer shape of issue 14, and the usual suspects of a broken HTTP/1.1 server. */
export const SHAPES: Record<string, Shape> = {
  'ctl-in-value': { answer: () => [ok('{"a":1}', 'x-evil: a\x01b\r\n')], expect: { bad: true }, note: 'a control character in a header value' },
  'lf-in-value': {
    answer: () => [ok('{"a":1}', 'x-evil: a\nset-cookie: injected=1\r\n')],
    expect: { bad: true },
    note: 'a bare LF in a header value (header injection)',
  },
  'cr-in-value': { answer: () => [ok('{"a":1}', 'x-evil: a\rset-cookie: injected=1\r\n')], expect: { bad: true }, note: 'a bare CR in a header value' },
  'nul-in-value': { answer: () => [ok('{"a":1}', 'x-evil: a\x00b\r\n')], expect: { bad: true }, note: 'NUL in a header value' },
  'del-in-value': { answer: () => [ok('{"a":1}', 'x-evil: a\x7fb\r\n')], expect: { bad: true }, note: 'DEL in a header value' },
  'ctl-in-reason': {
    answer: () => [`HTTP/1.1 200 O\x01K\r\n${JSON_CT}content-length: 2\r\n\r\n{}`],
    expect: { bad: true },
    note: 'a control character in the reason phrase',
  },
  'chunked-and-length': {
    answer: () => {
      const data = `{"a":1}${smuggled}`;
      return [`HTTP/1.1 200 OK\r\n${JSON_CT}transfer-encoding: chunked\r\ncontent-length: 7\r\n\r\n${data.length.toString(16)}\r\n${data}\r\n0\r\n\r\n`];
    },
    expect: { bad: true },
    note: 'Transfer-Encoding chunked and Content-Length: response splitting',
  },
  'chunked-and-length-large': {
    answer: () => {
      const data = '{"a":"' + 'x'.repeat(87) + '"}';
      return [`HTTP/1.1 200 OK\r\n${JSON_CT}transfer-encoding: chunked\r\ncontent-length: 70000\r\n\r\n${data.length.toString(16)}\r\n${data}\r\n0\r\n\r\n`];
    },
    expect: { bad: true },
    note: 'chunked with a Content-Length over the small-answer size: the client hangs',
  },
  'dup-length-equal': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: 7\r\ncontent-length: 7\r\n\r\n{"a":1}`],
    expect: { pass: 200, body: '{"a":1}' },
    note: 'two equal Content-Length headers',
  },
  'dup-length-differ': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: 7\r\ncontent-length: 8\r\n\r\n{"a":1} `],
    expect: { bad: true },
    note: 'two different Content-Length headers',
  },
  'length-not-digits': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: +7\r\n\r\n{"a":1}`],
    expect: { bad: true },
    note: 'a signed Content-Length',
  },
  'status-000': {
    answer: () => [`HTTP/1.1 000 Zero\r\n${JSON_CT}content-length: 2\r\n\r\n{}`],
    expect: { bad: true },
    note: 'status 000 (not an interim answer)',
  },
  'status-099': { answer: () => [`HTTP/1.1 099 Low\r\n${JSON_CT}content-length: 2\r\n\r\n{}`], expect: { bad: true }, note: 'a status under 100' },
  'status-102': { answer: () => [`HTTP/1.1 102 Processing\r\n\r\n`, ok('{"a":1}')], expect: { bad: true }, note: '1xx other than 100/103' },
  'status-101': {
    answer: () => [`HTTP/1.1 101 Switching Protocols\r\nupgrade: evil\r\nconnection: upgrade\r\n\r\nraw bytes`],
    expect: { bad: true },
    note: 'a protocol switch nobody asked for',
  },
  'status-100-then-ok': {
    answer: () => [`HTTP/1.1 100 Continue\r\n\r\n`, ok('{"a":1}')],
    expect: { pass: 200, body: '{"a":1}' },
    note: '100 Continue before the answer (fine)',
  },
  'status-103-then-ok': {
    answer: () => [`HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n`, ok('{"a":1}')],
    expect: { pass: 200, body: '{"a":1}' },
    note: '103 Early Hints before the answer (fine)',
  },
  'status-4-digits': { answer: () => [`HTTP/1.1 2000 OK\r\n${JSON_CT}content-length: 2\r\n\r\n{}`], expect: { bad: true }, note: 'a four-digit status' },
  'http2-status-line': { answer: () => [`HTTP/2 200\r\n${JSON_CT}content-length: 2\r\n\r\n{}`], expect: { bad: true }, note: 'not HTTP/1.x' },
  garbage: { answer: () => ['this is not http\r\n\r\n'], expect: { bad: true }, note: 'no status line at all' },
  'obs-fold': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}x-a: b\r\n  folded\r\ncontent-length: 2\r\n\r\n{}`],
    expect: { bad: true },
    note: 'an obsolete folded header line',
  },
  'space-before-colon': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}x-a : b\r\ncontent-length: 2\r\n\r\n{}`],
    expect: { bad: true },
    note: 'whitespace between a header name and its colon',
  },
  'head-too-large': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}x-big: ${'a'.repeat(20_000)}\r\ncontent-length: 2\r\n\r\n{}`],
    expect: { bad: true },
    note: 'a head over 16 KiB',
  },
  'bad-chunk-size': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
    expect: { bad: true },
    note: 'a chunk size that is not hex',
  },
  'chunk-longer-than-size': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}transfer-encoding: chunked\r\n\r\n2\r\n{"a":1}\r\n0\r\n\r\n`],
    expect: { bad: true },
    note: 'chunk data longer than its size',
  },
  'chunked-stream-then-garbage': {
    answer: () => [`HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n`, { pauseMs: 30 }, 'zz\r\n'],
    expect: { cut: true },
    note: 'a streamed answer that breaks after its head went out',
  },
  'short-length': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: 100\r\n\r\n{"a":1}`, 'close'],
    expect: { failed: true },
    note: 'fewer bytes than Content-Length, then close',
  },
  'short-length-large': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: 100000\r\n\r\n{"a":1}`, { pauseMs: 30 }, 'close'],
    expect: { cut: true },
    note: 'fewer bytes than a large Content-Length (streamed): the head is out before the close',
  },
  'long-length': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: 7\r\n\r\n{"a":1}${smuggled}`],
    expect: { pass: 200, body: '{"a":1}' },
    note: 'more bytes than Content-Length (the rest is dropped)',
  },
  'reset-mid-body': {
    answer: () => [`HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n`, { pauseMs: 30 }, 'reset'],
    expect: { cut: true },
    note: 'a reset in the middle of a streamed body',
  },
  'reset-mid-small-body': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}content-length: 50\r\n\r\n{"a":`, { pauseMs: 20 }, 'reset'],
    expect: { failed: true },
    note: 'a reset in the middle of a small body',
  },
  'reset-before-head': { answer: () => ['reset'], expect: { failed: true }, note: 'a reset instead of an answer' },
  'close-before-head': { answer: () => ['close'], expect: { failed: true }, note: 'a close instead of an answer' },
  'no-content-204': {
    answer: () => [`HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello`],
    expect: { pass: 204, body: '' },
    note: '204 with a body (the body is not an answer)',
  },
  'until-close': {
    answer: () => [`HTTP/1.1 200 OK\r\n${JSON_CT}\r\n{"a":1}`, 'close'],
    expect: { pass: 200, body: '{"a":1}' },
    note: 'no length: the body ends at close (faithful pass-through)',
  },
  'model-500': {
    answer: () => [`HTTP/1.1 500 Internal Server Error\r\n${JSON_CT}content-length: 11\r\n\r\n{"oops":1} `],
    expect: { pass: 500, body: '{"oops":1} ' },
    note: 'a model error is passed on',
  },
  'hop-by-hop': {
    answer: () => [
      `HTTP/1.1 200 OK\r\n${JSON_CT}connection: x-drop, close\r\nkeep-alive: timeout=1\r\ntrailer: x\r\ncontent-length: 7\r\n\r\n{"a":1}`,
      'close',
    ],
    expect: { pass: 200, body: '{"a":1}' },
    note: "the model's hop-by-hop headers stay between model and worker",
  },
  'never-answers': { answer: () => ['hang'], expect: { timeout: true }, note: 'reads the request, never answers' },
};

export interface HostileRequest {
  shape: string | null;
  body: string;
}

export interface HostileModel {
  url: string;
  port: number;
  /** Every request, in arrival order. */
  requests: HostileRequest[];
  /** Connections open now. */
  open(): number;
  close(): Promise<void>;
}

/** Start the hostile model on 127.0.0.1 (ephemeral port). */
export async function startHostileModel(): Promise<HostileModel> {
  const requests: HostileRequest[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    let busy = false;
    const next = (): void => {
      if (busy || socket.destroyed) return;
      const headEnd = buf.indexOf('\r\n\r\n');
      if (headEnd < 0) return;
      const head = buf.toString('latin1', 0, headEnd);
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      const length = m ? Number(m[1]) : 0;
      if (buf.length < headEnd + 4 + length) return;
      const body = buf.toString('utf8', headEnd + 4, headEnd + 4 + length);
      buf = buf.subarray(headEnd + 4 + length);
      let shape: string | null = null;
      try {
        const parsed = JSON.parse(body) as { shape?: unknown };
        if (parsed && typeof parsed.shape === 'string' && SHAPES[parsed.shape]) shape = parsed.shape;
      } catch {
        /* not JSON: echo it */
      }
      requests.push({ shape, body });
      const echo = `{"echo":${body || 'null'}}`;
      if (shape === null) {
        socket.write(ok(echo));
        return next();
      }
      busy = true;
      void play(socket, SHAPES[shape]!.answer(echo)).then(() => {
        busy = false;
        next();
      });
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      next();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    open: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Write the steps of an answer in order; after 'hang', 'reset' or 'close' nothing more is written on the connection. */
async function play(socket: Socket, steps: ReturnType<Shape['answer']>): Promise<void> {
  for (const step of steps) {
    if (socket.destroyed) return;
    if (step === 'hang') return new Promise<void>(() => undefined);
    if (step === 'reset') return void socket.resetAndDestroy();
    if (step === 'close') return void socket.end();
    if (typeof step === 'object' && !Buffer.isBuffer(step)) {
      await new Promise((r) => setTimeout(r, step.pauseMs));
      continue;
    }
    socket.write(typeof step === 'string' ? Buffer.from(step, 'latin1') : step);
  }
}
