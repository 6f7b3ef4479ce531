import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseFlags, usageFailed, type Flags } from '../../../common/args.js';
import { createLogger } from '../../../common/log.js';
import { readConfigFile } from '../../config.js';
import { VastEmulator } from './emulator.js';

const USAGE = `usage: nodeworker vast-emulator --market FILE [--port N] [--data-dir DIR] [--api-key-file FILE]

A Vast.ai API emulator on 127.0.0.1 (the /api/v0 calls the Vast provider makes). Its offers are
the market FILE's machine types; its instances are real local processes (on_start.sh with
model-sim and the worker). Faults: POST /admin/faults (see docs/providers.md).

  --market FILE        YAML/JSON: machine_types: [{gpu_name, count, dph_base, storage_cost,
                       model_sim_args, ...}], and an optional emulator: section (create_seconds,
                       loading_seconds, start_seconds, rate_limits, instance_env, foreign_instances)
  --port N             port (default 8900; 0 = any free port)
  --data-dir DIR       instances' workspaces (default ~/.local/state/nodeworker/vast-emulator)
  --api-key-file FILE  the account key clients must send (default: env VAST_API_KEY)`;

/** `nodeworker vast-emulator`: runs until SIGINT/SIGTERM/SIGHUP. */
export async function runVastEmulatorCli(argv: string[]): Promise<number> {
  let args: Flags;
  try {
    args = parseFlags(argv, { market: 'string', port: 'string', 'data-dir': 'string', 'api-key-file': 'string' });
  } catch (err) {
    return usageFailed('nodeworker vast-emulator', err, 'nodeworker vast-emulator --help');
  }
  if (args.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (typeof args.market !== 'string') {
    process.stderr.write(`nodeworker vast-emulator: --market FILE is required\n\n${USAGE}\n`);
    return 2;
  }
  const port = args.port === undefined ? 8900 : Number(args.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`nodeworker vast-emulator: --port must be an integer 0..65535, got ${String(args.port)}\n`);
    return 2;
  }
  let apiKey = process.env.VAST_API_KEY?.trim() ?? '';
  if (typeof args['api-key-file'] === 'string') {
    try {
      apiKey = readFileSync(args['api-key-file'], 'utf8').trim();
    } catch {
      process.stderr.write(`nodeworker vast-emulator: cannot read --api-key-file ${args['api-key-file']}\n`);
      return 2;
    }
  }
  if (apiKey.length < 8) {
    process.stderr.write('nodeworker vast-emulator: set VAST_API_KEY (at least 8 characters) or --api-key-file\n');
    return 2;
  }
  const dataDir = typeof args['data-dir'] === 'string' ? args['data-dir'] : join(homedir(), '.local', 'state', 'nodeworker', 'vast-emulator');
  const logger = createLogger('vast-emulator');
  let emu: VastEmulator;
  try {
    const file = readConfigFile(args.market) as Record<string, unknown> | null;
    const { emulator, ...market } = file ?? {};
    emu = new VastEmulator({ options: { ...((emulator as object) ?? {}), api_key: apiKey }, market, dataDir, logger });
    await emu.listen(port);
  } catch (err) {
    process.stderr.write(`nodeworker vast-emulator: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  process.stderr.write(`vast emulator listening on ${emu.url}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
    process.once('SIGHUP', resolve);
  });
  await emu.close();
  return 0;
}
