/**
 * Log lines for a person at a terminal: `12:00:01.234 INFO  worker: ready perf=812.5 url=…`.
 * It formats pino's JSON lines after redaction, so nothing hidden from the JSON is shown here.
 */

const LEVEL_COLOUR: Record<string, string> = { trace: '90', debug: '36', info: '32', warn: '33', error: '31', fatal: '35' };
const OMIT = new Set(['level', 'time', 'msg', 'pid', 'name', 'hostname']);

/** One JSON log line as one human line (the JSON itself when it is not an object). */
export function prettyLine(json: string, colour = false): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.trimEnd();
  }
  if (typeof rec !== 'object' || rec === null) return json.trimEnd();
  const time = typeof rec.time === 'string' ? rec.time.slice(11, 23) : '';
  const level = String(rec.level ?? '').toLowerCase();
  const label = level.toUpperCase().padEnd(5);
  const shownLevel = colour && LEVEL_COLOUR[level] ? `\x1b[${LEVEL_COLOUR[level]}m${label}\x1b[0m` : label;
  const fields = Object.entries(rec)
    .filter(([k]) => !OMIT.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s="]/.test(v) ? v : JSON.stringify(v)}`);
  const head = `${time} ${shownLevel} ${rec.name ? `${String(rec.name)}: ` : ''}${typeof rec.msg === 'string' ? rec.msg : ''}`;
  return fields.length > 0 ? `${head} ${colour ? `\x1b[2m${fields.join(' ')}\x1b[0m` : fields.join(' ')}` : head;
}

/** Where pretty lines go: stdout, or a file (pino's SonicBoom) with LOG_FORMAT=pretty. */
export interface LineSink {
  write(chunk: string): boolean;
}

/** A pino destination writing pretty lines to `out`. */
export function prettyStream(out: LineSink, colour: boolean): { write(chunk: string): boolean; flush(cb?: (err?: Error) => void): void } {
  return {
    write(chunk: string): boolean {
      const lines = chunk.split('\n').filter((l) => l.length > 0);
      return out.write(lines.map((l) => prettyLine(l, colour)).join('\n') + '\n');
    },
    flush(cb?: (err?: Error) => void): void {
      // Lines were handed to `out` synchronously; let its pending writes go first.
      setImmediate(() => cb?.());
    },
  };
}
