import { spawnSync } from 'node:child_process';

/**
 * External programs the suite measures with (wrk) or against (nginx): found on PATH (or in
 * /usr/sbin, where Debian puts nginx), else installed with apt-get (update first) when allowed.
 */

/** The path of `cmd` when it can be run, else null. */
export function findCommand(cmd: string): string | null {
  for (const candidate of [cmd, `/usr/sbin/${cmd}`, `/usr/bin/${cmd}`]) {
    const r = spawnSync(candidate, ['-v'], { stdio: 'ignore' });
    if (!r.error) return candidate;
  }
  return null;
}

/**
 * `cmd`'s path, installing Debian's `aptPackage` first when it is missing and `install` is true.
 * Null when it is missing and could not (or may not) be installed; `log` says what happened.
 */
export function ensureCommand(cmd: string, aptPackage: string, opts: { install: boolean; log: (line: string) => void }): string | null {
  const found = findCommand(cmd);
  if (found || !opts.install) return found;
  opts.log(`${cmd} is missing: apt-get update && apt-get install -y ${aptPackage}`);
  const sudo = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  const run = (args: string[]) => {
    const [file, ...rest] = [...sudo, ...args];
    const r = spawnSync(file!, rest, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 300_000 });
    if (r.status !== 0) opts.log(`  ${args.join(' ')} failed: ${r.error?.message ?? r.stderr?.toString().trim().split('\n').slice(-2).join(' ')}`);
    return r.status === 0;
  };
  if (run(['apt-get', 'update']) && run(['apt-get', 'install', '-y', '--no-install-recommends', aptPackage])) return findCommand(cmd);
  return null;
}
