import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * A program from outside npm that some tests use (promtool, chromium). On a fresh machine it may be
 * missing: those tests then skip, with the reason printed, so `npm test` passes with nothing
 * installed by hand. `.ci/run` installs the programs and sets NODEWORKER_REQUIRE_TOOLS=1, so in CI a
 * missing one fails the file instead of skipping silently.
 */
export interface ExternalTool {
  name: string;
  available: boolean;
  /** Why the tests that need it are skipped (empty when available). */
  reason: string;
}

function tool(name: string, found: boolean, install: string): ExternalTool {
  if (found) return { name, available: true, reason: '' };
  const reason = `${name} is not installed (${install}; .ci/run installs it): the tests that need it are skipped`;
  if (process.env.NODEWORKER_REQUIRE_TOOLS === '1') throw new Error(`${reason.split(':')[0]}, and NODEWORKER_REQUIRE_TOOLS=1 requires it`);
  process.stderr.write(`SKIPPED: ${reason}\n`);
  return { name, available: false, reason };
}

/** `promtool` on the PATH (Debian package `prometheus`). */
export function promtoolTool(): ExternalTool {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8', timeout: 20_000 });
  return tool('promtool', r.status === 0, 'apt-get install prometheus');
}

/** Debian's Chromium, driven by playwright-core (no browser download is needed or made). */
export const CHROMIUM_PATH = '/usr/bin/chromium';
export function chromiumTool(): ExternalTool {
  return tool('chromium', existsSync(CHROMIUM_PATH), 'apt-get install chromium');
}
