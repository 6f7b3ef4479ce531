import { closeSync, fsyncSync, openSync } from 'node:fs';

/**
 * fsync a directory so a rename or create in it survives a crash of the machine. Best effort: some
 * file systems cannot open or sync a directory, and the rename itself is still atomic there.
 */
export function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* not every file system lets a directory be opened or synced */
  }
}
