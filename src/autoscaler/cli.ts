import { spawn } from 'node:child_process';
import type { Server as NetServer, Socket } from 'node:net';
import { parseFlags, usageFailed, type Flags } from '../common/args.js';
import { ConfigError } from './config.js';
import { startAutoscaler } from './server.js';

const USAGE = `usage: nodeworker autoscaler --config FILE [--port N] [--host H] [--data-dir DIR] [--repair]

Runs the reference autoscaler (the serverless engine): /route/, /worker_status/,
/delete_requests/, /pubkey/, /get_endpoint_workers/ and the admin API under /admin/.

  --config FILE    JSON or YAML engine config (endpoints, workergroups, provider); see docs/autoscaler.md
  --port N         port to listen on (default 8080; 0 = any free port)
  --host H         interface (default 127.0.0.1)
  --data-dir DIR   where the signing key and a generated admin key are kept (default: env
                   AUTOSCALER_DATA_DIR, else the config's data_dir, else
                   $XDG_STATE_HOME/nodeworker/autoscaler or ~/.local/state/nodeworker/autoscaler)
  --repair         start even if the state journal (DIR/engine-state.jsonl) is damaged: keep every
                   intact record and move the damaged file aside (without it, damage other than a
                   torn last record stops start-up with a message naming the file and byte offset)

The admin key comes from env AUTOSCALER_ADMIN_KEY, else the config's admin_key, else it is
generated into DIR/admin_key.

SIGUSR2 reloads without refusing a connection: a new process (same arguments) is started and given
the listening socket; this one stops accepting, finishes the requests in flight, saves its state and
exits; the new one restores the state, adopts the workers and serves the connections that waited.
SIGTERM/SIGINT/SIGHUP stop (connections are refused until a new process listens).`;

/** Env of a reload's successor: it waits for the socket and the predecessor's last save on its IPC channel. */
const RELOAD_ENV = 'NODEWORKER_AUTOSCALER_RELOAD';

/** In a reload's successor: the inherited socket (already accepting: connections are held unread) once the predecessor saved. */
function awaitPredecessor(): Promise<{ listener: NetServer; pending: Socket[] }> {
  return new Promise((resolve, reject) => {
    let got: { listener: NetServer; pending: Socket[] } | null = null;
    const timer = setTimeout(() => reject(new Error('reload: the previous process did not hand over within 60 s')), 60_000);
    process.on('message', (msg: unknown, handle: unknown) => {
      if (msg === 'nodeworker:listener' && handle) {
        const listener = handle as NetServer;
        const pending: Socket[] = [];
        listener.on('connection', (s: Socket) => pending.push(s));
        got = { listener, pending };
      } else if (msg === 'nodeworker:saved' && got) {
        clearTimeout(timer);
        process.channel?.unref();
        resolve(got);
      }
    });
    // Messages sent before a listener exists are lost: the predecessor waits for this.
    process.send!('nodeworker:waiting');
  });
}

/** `nodeworker autoscaler`: runs until SIGINT/SIGTERM/SIGHUP; returns the exit code. */
export async function runAutoscalerCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseFlags(argv, { config: 'string', port: 'string', host: 'string', 'data-dir': 'string', repair: 'boolean' });
  } catch (err) {
    return usageFailed('nodeworker autoscaler', err, 'nodeworker autoscaler --help');
  }
  if (args.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (typeof args.config !== 'string') {
    process.stderr.write(`nodeworker autoscaler: --config FILE is required\n\n${USAGE}\n`);
    return 2;
  }
  const port = args.port === undefined ? 8080 : Number(args.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`nodeworker autoscaler: --port must be an integer 0..65535, got ${String(args.port)}\n`);
    return 2;
  }
  let running: Awaited<ReturnType<typeof startAutoscaler>>;
  try {
    const inherited = process.env[RELOAD_ENV] === '1' && process.send ? await awaitPredecessor() : undefined;
    delete process.env[RELOAD_ENV];
    running = await startAutoscaler({
      ...(inherited ? { inherited } : {}),
      config: args.config,
      port,
      host: typeof args.host === 'string' ? args.host : undefined,
      dataDir: typeof args['data-dir'] === 'string' ? args['data-dir'] : process.env.AUTOSCALER_DATA_DIR || undefined,
      repair: args.repair === true,
    });
  } catch (err) {
    const msg = err instanceof ConfigError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`nodeworker autoscaler: ${msg}\n`);
    return 1;
  }
  process.stderr.write(
    `autoscaler listening on ${running.url}\ndashboard: ${running.url}/dashboard (admin key: ${running.adminKeyFile ? `in ${running.adminKeyFile}` : 'from AUTOSCALER_ADMIN_KEY or the config'})\n`,
  );
  const how = await new Promise<'stop' | 'reload'>((resolve) => {
    const stop = () => resolve('stop');
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A closed terminal too: the local provider's workers are ended, not orphaned.
    process.once('SIGHUP', stop);
    process.once('SIGUSR2', () => resolve('reload'));
  });
  if (how === 'stop') {
    await running.close();
    return 0;
  }
  return reload(running);
}

/**
 * SIGUSR2: start the successor with the same arguments, send it the listening socket, hand over
 * (stop accepting, finish, save), tell it the state is saved, and exit without ending the workers.
 */
async function reload(running: Awaited<ReturnType<typeof startAutoscaler>>): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [RELOAD_ENV]: '1' },
  });
  const sent = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 60_000);
    child.once('exit', () => resolve(false));
    child.on('message', (msg) => {
      if (msg !== 'nodeworker:waiting') return;
      clearTimeout(timer);
      child.send('nodeworker:listener', running.listener, (err) => resolve(!err));
    });
  });
  if (!sent) {
    process.stderr.write('nodeworker autoscaler: reload failed (the new process did not take the socket); still serving\n');
    child.kill('SIGKILL');
    return runAgain(running);
  }
  await running.handOver();
  await new Promise<void>((resolve) => child.send('nodeworker:saved', () => resolve()));
  child.disconnect();
  child.unref();
  process.stderr.write(`autoscaler handed over to pid ${child.pid}\n`);
  // The workers (and the provider's timers) are the successor's now: leave without closing them.
  process.exit(0);
}

/** A failed reload: keep serving until the next signal. */
async function runAgain(running: Awaited<ReturnType<typeof startAutoscaler>>): Promise<number> {
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await running.close();
  return 0;
}
