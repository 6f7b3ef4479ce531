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
generated into DIR/admin_key.`;

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
    running = await startAutoscaler({
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
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A closed terminal too: the local provider's workers are ended, not orphaned.
    process.once('SIGHUP', stop);
  });
  await running.close();
  return 0;
}
