import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Process and port helpers of the local provider. A pid is only ever signalled while it still
 * names the process first seen under it (same start time in /proc), so a recycled pid is never hit.
 */

/** Identity of a live process: its pid and its start time (clock ticks since boot; '' off Linux). */
export interface ProcId {
  pid: number;
  start: string;
}

/**
 * The start time of `pid` from /proc (Linux), '' where /proc is missing, null when it is gone.
 * A zombie counts as gone: it has exited, and an init that does not reap would keep it forever.
 */
export function procStart(pid: number): string | null {
  if (!alive(pid)) return null;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return alive(pid) ? '' : null;
  }
  // Fields counted after the command name, which sits in parentheses and may hold spaces:
  // [0] is the state (field 3), [19] the start time (field 22).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return null;
  return fields[19] ?? '';
}

/** True while a process with this pid exists (zombies included). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Still the same process as when `id` was taken. */
export function same(id: ProcId): boolean {
  const now = procStart(id.pid);
  return now !== null && now === id.start;
}

/** The command line of `pid` ('' when unreadable). */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

/**
 * Signal the process group led by `id.pid` (the model and the worker are session leaders, so
 * their group holds whatever they started), falling back to the process alone. Never throws.
 */
export function signalGroup(id: ProcId, signal: NodeJS.Signals): void {
  if (!same(id)) return;
  try {
    process.kill(-id.pid, signal);
  } catch {
    try {
      process.kill(id.pid, signal);
    } catch {
      /* gone meanwhile */
    }
  }
}

/** The pid written in a pid file, when the file exists and holds a positive integer. */
export function readPidFile(path: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** A TCP port free on `host` right now, not in `avoid`. */
export async function freePort(host: string, avoid: ReadonlySet<number> = new Set()): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, host, () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    if (!avoid.has(port)) return port;
  }
  throw new Error(`no free port on ${host} after 50 attempts`);
}

/** True when `port` can be bound on `host` now. */
export async function portFree(host: string, port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}
