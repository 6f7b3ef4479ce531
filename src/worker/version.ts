import { readFileSync } from 'node:fs';
import { packagePath } from '../common/package-root.js';

/** The package version, read once: the `version` field of every report and `nodeworker --version`. */
export const WORKER_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'nodeworker' && pkg.version) return pkg.version;
  } catch {
    /* an unreadable package.json: report the placeholder below */
  }
  return '0.0.0';
})();
