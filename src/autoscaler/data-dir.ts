import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where the autoscaler keeps its signing key and admin key when neither `--data-dir`,
 * AUTOSCALER_DATA_DIR nor the config's `data_dir` says: the user's state directory
 * ($XDG_STATE_HOME/nodeworker/autoscaler, else ~/.local/state/nodeworker/autoscaler), never the
 * working directory, so a private key cannot end up in a checkout, a commit or a package.
 */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const state = env.XDG_STATE_HOME?.startsWith('/') ? env.XDG_STATE_HOME : join(home, '.local', 'state');
  return join(state, 'nodeworker', 'autoscaler');
}
