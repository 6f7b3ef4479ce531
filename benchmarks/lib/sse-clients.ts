import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Many concurrent streamed (SSE) requests held open, from a process of their own so the worker
 * being measured pays for none of it. Each stream is one raw keep-alive socket: request written
 * once, answer bytes only counted (events = occurrences of "data:"), so thousands cost little here.
 *
 * Protocol (lines): configured by BENCH_SSE (JSON `SseClientsSpec`); prints `OPENED {json}` once
 * every stream has its answer headers (or failed, or `openTimeoutMs` passed); then on each `stats`
 * line on stdin prints `STATS {json}`; on `close` (or stdin's end) destroys every socket, prints
 * `CLOSED {json}` and exits.
 */
export interface SseClientsSpec {
  url: string;
  path: string;
  body: string;
  count: number;
  /** Connects in flight at once while opening (default 200). */
  connectBatch?: number;
  openTimeoutMs?: number;
}

/** What the streams saw so far. */
export interface SseClientsStats {
  /** Sockets connected with their answer's status line received. */
  open: number;
  /** Streams that received at least one event. */
  streaming: number;
  /** Events received in total. */
  events: number;
  /** Connect errors, non-200 answers, and streams that ended before `close`. */
  failed: number;
  /** ms from the first connect to the last stream opened. */
  openMs: number;
}

interface Stream {
  socket: Socket;
  headers: boolean;
  events: number;
  ended: boolean;
}

async function run(spec: SseClientsSpec): Promise<void> {
  const u = new URL(spec.url);
  const port = Number(u.port);
  const request = Buffer.from(
    `POST ${spec.path} HTTP/1.1\r\nhost: ${u.host}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: ${Buffer.byteLength(spec.body)}\r\n\r\n${spec.body}`,
  );
  const streams: Stream[] = [];
  const stats: SseClientsStats = { open: 0, streaming: 0, events: 0, failed: 0, openMs: 0 };
  const t0 = performance.now();
  let settled = 0;
  let closing = false;

  const openOne = (): Promise<void> =>
    new Promise((resolve) => {
      const s: Stream = { socket: connect({ port, host: u.hostname, noDelay: true }), headers: false, events: 0, ended: false };
      streams.push(s);
      let done = false;
      const settle = () => {
        if (done) return;
        done = true;
        settled++;
        resolve();
      };
      s.socket.once('connect', () => s.socket.write(request));
      s.socket.on('data', (chunk: Buffer) => {
        if (!s.headers) {
          s.headers = true;
          if (chunk.toString('latin1', 0, 12).startsWith('HTTP/1.1 200')) {
            stats.open++;
            stats.openMs = performance.now() - t0;
          } else {
            stats.failed++;
          }
          settle();
        }
        let n = 0;
        for (let i = chunk.indexOf('data:'); i >= 0; i = chunk.indexOf('data:', i + 5)) n++;
        if (n > 0 && s.events === 0) stats.streaming++;
        s.events += n;
        stats.events += n;
      });
      const gone = () => {
        if (!s.ended && !closing) {
          s.ended = true;
          if (s.headers) stats.failed++;
        }
        if (!s.headers && !done) stats.failed++;
        settle();
      };
      s.socket.once('error', gone);
      s.socket.once('close', gone);
    });

  // Open in batches: thousands of simultaneous SYNs overflow the listen backlog and stall in retries.
  const batch = spec.connectBatch ?? 200;
  let next = 0;
  const opener = async () => {
    while (next < spec.count) {
      next++;
      await openOne();
    }
  };
  const allOpen = Promise.all(Array.from({ length: Math.min(batch, spec.count) }, opener));
  await Promise.race([allOpen, new Promise((r) => setTimeout(r, spec.openTimeoutMs ?? 60_000))]);
  process.stdout.write(`OPENED ${JSON.stringify({ ...stats, settled })}\n`);

  const rl = createInterface({ input: process.stdin });
  const finish = () => {
    closing = true;
    for (const s of streams) s.socket.destroy();
    process.stdout.write(`CLOSED ${JSON.stringify(stats)}\n`);
    process.exit(0);
  };
  rl.on('line', (line) => {
    if (line.trim() === 'stats') process.stdout.write(`STATS ${JSON.stringify(stats)}\n`);
    else if (line.trim() === 'close') finish();
  });
  rl.once('close', finish);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  run(JSON.parse(process.env.BENCH_SSE ?? '{}') as SseClientsSpec).catch((err: Error) => {
    process.stderr.write(`sse-clients: ${err.message}\n`);
    process.exit(1);
  });
}
