/**
 * Under npm (`npm start`, `npx nodeworker …`), npm runs the command through `sh -c`, and on SIGTERM
 * it signals that shell, which dies without passing the signal on: the node process below is left
 * running with no parent. This guard notices the parent going away (the process is re-parented)
 * and calls `onOrphaned` once, so the process stops as if it had been signalled.
 *
 * Only under npm (npm sets npm_command / npm_lifecycle_event): a process started with nohup or
 * from on_start.sh is meant to outlive whoever started it.
 */
export function stopWhenOrphanedUnderNpm(onOrphaned: (why: string) => void, env: NodeJS.ProcessEnv = process.env, periodMs = 500): () => void {
  if (!env.npm_command && !env.npm_lifecycle_event) return () => undefined;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onOrphaned(`the parent process (pid ${parent}, npm's shell) exited`);
  }, periodMs);
  timer.unref(); // never what keeps the process alive
  return () => clearInterval(timer);
}
