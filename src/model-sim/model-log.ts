import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The model server's own log (what a worker tails): plain lines in the flavor's
 * format, appended synchronously, so a crash line is on disk before the process exits.
 */
export interface ModelLog {
  write(lines: string | readonly string[]): void;
  close(): void;
}

/** Append to `path` (created with its directory), or write to stdout when no path is given. */
export function openModelLog(path: string | undefined): ModelLog {
  if (!path) {
    return {
      write(lines) {
        const text = typeof lines === 'string' ? lines + '\n' : lines.map((l) => l + '\n').join('');
        if (text) process.stdout.write(text);
      },
      close() {},
    };
  }
  mkdirSync(dirname(path), { recursive: true });
  let fd: number | undefined = openSync(path, 'a');
  return {
    write(lines) {
      const text = typeof lines === 'string' ? lines + '\n' : lines.map((l) => l + '\n').join('');
      if (fd !== undefined && text) writeSync(fd, text);
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
