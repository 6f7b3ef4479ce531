import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The root of the nodeworker package this code runs from. src/ and dist/ mirror each other at the
 * same depth below it, so the one fixed relative step holds for the sources (vitest) and the build.
 */
export const PACKAGE_ROOT: string = fileURLToPath(new URL('../../', import.meta.url));

/** A file of the package, by its path from the package root (e.g. `on_start.sh`, `data/…`). */
export function packagePath(...parts: string[]): string {
  return join(PACKAGE_ROOT, ...parts);
}
