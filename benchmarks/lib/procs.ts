import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Child processes for benchmarks: start a command, wait for the line that says it is up, read its
 * CPU time from /proc, stop it. Benchmarks measure separate processes so that the load generator's
 * CPU is never charged to the server being measured.
 */
export interface BenchProcess {
  child: ChildProcess;
  pid: number;
  /** The first capture group of `readyLine` (e.g. the URL the process listens on); '' without one. */
  ready: string;
  /** Everything the process wrote so far (stdout and stderr), for error messages. */
  output(): string;
  /** Stop with SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** A line of output that says the process is up; its first capture group becomes `ready`. */
  readyLine?: RegExp;
  timeoutMs?: number;
  cwd?: string;
  /** Raise the open-file limit to this before the command starts (for thousands of sockets). */
  fdLimit?: number;
  /** Keep a pipe to the process's stdin (`child.stdin`). */
  stdin?: boolean;
}

/**
 * Spawn `cmd args` and resolve once its output matches `readyLine` (within `timeoutMs`), or as soon
 * as it has spawned when no `readyLine` is given.
 */
export function startProcess(cmd: string, args: string[], opts: StartOptions): Promise<BenchProcess> {
  return new Promise((resolve, reject) => {
    // Node cannot raise its own fd limit (no setrlimit): a shell raises it (to the hard limit when it
    // may not go higher), then becomes the command (same pid).
    const [file, argv]: [string, string[]] = opts.fdLimit
      ? ['bash', ['-c', `ulimit -n ${opts.fdLimit} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`, 'bash', cmd, ...args]]
      : [cmd, args];
    const child = spawn(file, argv, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let out = '';
    let settled = false;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const proc: Omit<BenchProcess, 'ready'> = {
      child,
      pid: child.pid ?? -1,
      output: () => out,
      async stop(graceMs = 3000) {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(t);
      },
    };
    const timer = setTimeout(
      () => fail(new Error(`${cmd} ${args.join(' ')} did not become ready within ${opts.timeoutMs ?? 20_000} ms; output:\n${out.slice(-2000)}`)),
      opts.timeoutMs ?? 20_000,
    );
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void proc.stop(0).then(() => reject(err));
    };
    const onData = (d: Buffer) => {
      // Keep only the tail: a process that logs a lot must not grow this without bound.
      out = (out + d.toString('utf8')).slice(-64 * 1024);
      if (settled || !opts.readyLine) return;
      const m = opts.readyLine.exec(out);
      if (m) {
        settled = true;
        clearTimeout(timer);
        resolve({ ...proc, ready: m[1] ?? m[0] });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => fail(err));
    if (!opts.readyLine) {
      child.once('spawn', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ...proc, ready: '' });
      });
    }
    child.once('exit', (code, signal) => fail(new Error(`${cmd} exited (${code ?? signal}) before it was ready; output:\n${out.slice(-2000)}`)));
  });
}

let clockTicks: number | null = null;

/** Clock ticks per second of /proc/PID/stat times (CLK_TCK, almost always 100). */
function ticksPerSecond(): number {
  if (clockTicks === null) {
    // /proc/self/auxv would be exact; the kernel's USER_HZ is 100 on every Linux we run on.
    clockTicks = Number(process.env.CLK_TCK) || 100;
  }
  return clockTicks;
}

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat; NaN off Linux. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds of a process and of its direct children (nginx: master + workers). */
export function treeCpuSeconds(pid: number): number {
  let total = cpuSeconds(pid);
  for (const child of childPids(pid)) total += cpuSeconds(child);
  return total;
}

/** Direct children of a process, from /proc (empty off Linux). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Resident memory of a process in bytes (VmRSS from /proc/PID/status); NaN off Linux. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * Time a process spent running and waiting for a CPU (on a run queue), in seconds, summed over its
 * threads' main one (/proc/PID/schedstat). The wait tells machine contention apart from a slow process.
 */
export function schedSeconds(pid: number): { run: number; wait: number } {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number);
    return { run: (run ?? Number.NaN) / 1e9, wait: (wait ?? Number.NaN) / 1e9 };
  } catch {
    return { run: Number.NaN, wait: Number.NaN };
  }
}

/** A free TCP port on 127.0.0.1 (bound and released: good enough for a benchmark). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
