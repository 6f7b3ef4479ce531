/**
 * A raw HTTP/1.1 client for tests that must see exact bytes: it writes whatever it is given and
 * reads answers with a strict parser that also judges framing (a well-framed answer has one
 * status line, token header names, header values without control characters, at most one
 * Content-Length and never with Transfer-Encoding, and exactly the body its framing says).
 */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { testCert } from './tls.js';

export interface RawAnswer {
  status: number;
  /** Lowercased names; repeated headers keep every value. */
  headers: Record<string, string[]>;
  body: Buffer;
  /** Framing problems found (empty for a well-framed answer). */
  problems: string[];
}

/** Parse one answer at the start of `buf`: null when more bytes are needed (or, with `ended`, never come). */
export function parseRawAnswer(buf: Buffer, ended: boolean): { answer: RawAnswer; length: number; complete: boolean } | null {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return null;
  const lines = buf.toString('latin1', 0, headEnd).split('\r\n');
  const problems: string[] = [];
  const m = /^HTTP\/1\.[01] (\d{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?$/.exec(lines[0]!);
  if (!m) problems.push(`malformed status line ${JSON.stringify(lines[0])}`);
  const status = m ? Number(m[1]) : 0;
  const headers: Record<string, string[]> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    const name = l.slice(0, i).toLowerCase();
    if (i <= 0 || !/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(name)) problems.push(`malformed header line ${JSON.stringify(l)}`);
    const value = l.slice(i + 1).trim();
    if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) problems.push(`control character in ${name}`);
    headers[name] ??= [];
    headers[name].push(value);
  }
  const cl = headers['content-length'];
  const te = headers['transfer-encoding'];
  if (cl && cl.length > 1) problems.push(`${cl.length} content-length headers`);
  if (cl && !/^\d+$/.test(cl[0]!)) problems.push(`content-length ${JSON.stringify(cl[0])}`);
  if (cl && te) problems.push('both content-length and transfer-encoding');
  let at = headEnd + 4;
  const noBody = (status >= 100 && status < 200) || status === 204 || status === 304;
  if (noBody) return { answer: { status, headers, body: Buffer.alloc(0), problems }, length: at, complete: true };
  if (te) {
    if (te.join(',').toLowerCase() !== 'chunked') problems.push(`transfer-encoding ${te.join(',')}`);
    const parts: Buffer[] = [];
    for (;;) {
      const nl = buf.indexOf('\r\n', at);
      if (nl < 0) return ended ? { answer: { status, headers, body: Buffer.concat(parts), problems }, length: buf.length, complete: false } : null;
      const size = parseInt(buf.toString('latin1', at, nl), 16);
      if (!Number.isFinite(size)) {
        problems.push('bad chunk size');
        return { answer: { status, headers, body: Buffer.concat(parts), problems }, length: buf.length, complete: false };
      }
      if (buf.length < nl + 2 + size + 2) {
        return ended
          ? { answer: { status, headers, body: Buffer.concat([...parts, buf.subarray(nl + 2)]), problems }, length: buf.length, complete: false }
          : null;
      }
      parts.push(buf.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
      if (size === 0) break;
    }
    return { answer: { status, headers, body: Buffer.concat(parts), problems }, length: at, complete: true };
  }
  if (!cl) {
    // Until close.
    if (!ended) return null;
    return { answer: { status, headers, body: buf.subarray(at), problems }, length: buf.length, complete: true };
  }
  const len = /^\d+$/.test(cl[0]!) ? Number(cl[0]) : Number.NaN;
  // An unreadable length frames nothing: whatever comes until the close is the (broken) answer.
  if (!Number.isFinite(len)) return ended ? { answer: { status, headers, body: buf.subarray(at), problems }, length: buf.length, complete: true } : null;
  if (buf.length < at + len) {
    return ended ? { answer: { status, headers, body: buf.subarray(at), problems }, length: buf.length, complete: false } : null;
  }
  return { answer: { status, headers, body: buf.subarray(at, at + len), problems }, length: at + len, complete: true };
}

export interface RawExchange {
  /** Complete answers in order. */
  answers: RawAnswer[];
  /** An answer whose head came but whose body was cut by the close (null: none). */
  cut: RawAnswer | null;
  /** Bytes after the last answer that are no answer. */
  rest: Buffer;
  /** The server closed the connection. */
  closed: boolean;
}

export interface RawConnection {
  socket: Socket;
  write(data: string | Buffer): void;
  /**
   * Wait for `n` answers (or the close, or `timeoutMs`); then, when `quietMs` is given, for that
   * long without new bytes. Answers are taken off the buffer.
   */
  read(n: number, opts?: { timeoutMs?: number; quietMs?: number }): Promise<RawExchange>;
  close(): void;
}

/**
 * A connected socket to `url`'s host and port: TCP for http:, TLS for https: (trusting only the
 * shared test certificate, helpers/tls.ts), resolved once bytes can be written.
 */
export async function openSocket(url: string): Promise<Socket> {
  const u = new URL(url);
  const port = Number(u.port);
  const socket =
    u.protocol === 'https:'
      ? tlsConnect({ host: u.hostname, port, ca: testCert().ca, ALPNProtocols: ['http/1.1'] }).setNoDelay(true)
      : connect({ host: u.hostname, port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    socket.once(u.protocol === 'https:' ? 'secureConnect' : 'connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** Open a connection to `url`'s host and port (TLS for https:). */
export async function rawConnect(url: string): Promise<RawConnection> {
  const socket = await openSocket(url);
  socket.on('error', () => undefined);
  let buf = Buffer.alloc(0);
  let closed = false;
  let lastData = performance.now();
  let wake: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    lastData = performance.now();
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  const nap = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(() => {
        wake = null;
        r();
      }, ms);
      wake = () => {
        clearTimeout(t);
        wake = null;
        r();
      };
    });
  return {
    socket,
    write: (data) => void socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data),
    close: () => socket.destroy(),
    async read(n, opts = {}) {
      const until = performance.now() + (opts.timeoutMs ?? 5000);
      const answers: RawAnswer[] = [];
      let cut: RawAnswer | null = null;
      const take = () => {
        for (;;) {
          const p = parseRawAnswer(buf, closed);
          if (!p || buf.length === 0) return;
          if (!p.complete) {
            cut = p.answer;
            buf = buf.subarray(p.length);
            return;
          }
          answers.push(p.answer);
          buf = buf.subarray(p.length);
        }
      };
      for (;;) {
        take();
        if (answers.length >= n || closed || performance.now() > until || cut) break;
        await nap(Math.max(1, Math.min(50, until - performance.now())));
      }
      if (opts.quietMs) {
        while (!closed && performance.now() < until && performance.now() - lastData < opts.quietMs) await nap(opts.quietMs);
        take();
      }
      return { answers, cut, rest: buf, closed };
    },
  };
}

/** The text of a POST to `path` with a JSON `body` (and extra header lines, each ending in CRLF). */
export function rawPost(path: string, body: string, extra = ''): string {
  return `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${extra}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}
