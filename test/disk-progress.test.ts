import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/log.js';
import { createDiskProgress, type DiskProgress, formatProgressBar } from '../src/worker/disk-progress.js';
import { Lifecycle } from '../src/worker/lifecycle.js';
import { startLoadingProgress } from '../src/worker/status-route.js';

const MB = 2 ** 20;
const GB = 2 ** 30;

// A tmpfs (/dev/shm) is quiet and accounts writes at once; fall back to the temp dir's filesystem,
// where other processes may also write, and then assert only lower bounds.
const shm = '/dev/shm';
const quiet = (() => {
  try {
    fs.accessSync(shm, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
})();
const root = quiet ? shm : os.tmpdir();

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(root, 'disk-progress-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Write `mb` MiB of real data to a new file and flush it to the filesystem. */
function writeMb(name: string, mb: number): string {
  const file = path.join(dir, name);
  const chunk = Buffer.alloc(MB, 0x5a);
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < mb; i++) fs.writeSync(fd, chunk);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  return file;
}

/** Upper bounds only on the quiet filesystem. */
const atMost = (value: number, bound: number) => {
  if (quiet) expect(value).toBeLessThanOrEqual(bound);
};

describe('createDiskProgress', () => {
  it('measures the growth of the filesystem since start', async () => {
    const disk = await createDiskProgress({ path: dir });
    const first = await disk.sample();
    expect(first.usedSinceStartGb).toBeGreaterThanOrEqual(0);
    expect(first.progress).toBeNull();
    writeMb('weights.bin', 64);
    const after = await disk.sample();
    expect(after.usedSinceStartGb).toBeGreaterThanOrEqual((0.8 * 64 * MB) / GB);
    atMost(after.usedSinceStartGb, (1.25 * 64 * MB) / GB);
  });

  it('turns growth into progress against the model size, clamped to [0, 1]', async () => {
    const half = await createDiskProgress({ path: dir, modelSizeGb: (128 * MB) / GB });
    const tiny = await createDiskProgress({ path: dir, modelSizeGb: (8 * MB) / GB });
    const none = await createDiskProgress({ path: dir, modelSizeGb: 0 });
    writeMb('weights.bin', 64);
    const p = (await half.sample()).progress;
    expect(p).not.toBeNull();
    expect(p!).toBeGreaterThanOrEqual(0.4);
    atMost(p!, 0.65);
    expect((await tiny.sample()).progress).toBe(1);
    expect((await none.sample()).progress).toBeNull();
    expect([half.sized, tiny.sized, none.sized]).toEqual([true, true, false]);
  });

  it('progress is 0 (not unknown) before the first sample lands, when a model size is known', async () => {
    const sized = await createDiskProgress({ path: dir, modelSizeGb: 1 });
    const unsized = await createDiskProgress({ path: dir });
    // A statfs that has not answered yet (a loaded machine): the first sample is still pending.
    const pending = (d: DiskProgress): DiskProgress => ({ sized: d.sized, takeDeltaGb: () => d.takeDeltaGb(), sample: () => new Promise(() => undefined) });
    const lifecycle = new Lifecycle();
    const logger = createLogger('disk-progress-test', { level: 'silent' });
    const a = startLoadingProgress({ disk: pending(sized), lifecycle, logger, everyMs: 60_000 });
    const b = startLoadingProgress({ disk: pending(unsized), lifecycle, logger, everyMs: 60_000 });
    expect(a.last()).toBe(0);
    expect(b.last()).toBeNull();
    a.stop();
    b.stop();
  });

  it('takeDeltaGb reports each GB once and never a negative delta', async () => {
    const disk = await createDiskProgress({ path: dir });
    const file = writeMb('a.bin', 64);
    const d1 = await disk.takeDeltaGb();
    expect(d1).toBeGreaterThanOrEqual((0.8 * 64 * MB) / GB);
    atMost(d1, (1.25 * 64 * MB) / GB);
    // Nothing written since: (almost) nothing to report.
    atMost(await disk.takeDeltaGb(), (8 * MB) / GB);
    // Usage drops: the delta is 0, not negative.
    fs.rmSync(file);
    const d3 = await disk.takeDeltaGb();
    expect(d3).toBeGreaterThanOrEqual(0);
    atMost(d3, (8 * MB) / GB);
    // Growing back below the previous high is not reported again...
    writeMb('b.bin', 32);
    atMost(await disk.takeDeltaGb(), (8 * MB) / GB);
    // ...growth past it is: 32 + 64 MiB now, 64 MiB was already reported.
    writeMb('c.bin', 64);
    const d5 = await disk.takeDeltaGb();
    expect(d5).toBeGreaterThanOrEqual((0.6 * 32 * MB) / GB);
    atMost(d5, (1.5 * 32 * MB) / GB);
  });

  it('rejects a path that does not exist', async () => {
    await expect(createDiskProgress({ path: path.join(dir, 'missing') })).rejects.toThrow(/ENOENT/);
  });
});

describe('formatProgressBar', () => {
  it('draws a bar and a percentage, rounding down and clamping', () => {
    expect(formatProgressBar(0.5)).toBe('[#####.....]  50%');
    expect(formatProgressBar(0)).toBe('[..........]   0%');
    expect(formatProgressBar(1)).toBe('[##########] 100%');
    expect(formatProgressBar(0.999)).toBe('[#########.]  99%');
    expect(formatProgressBar(0.29)).toBe('[##........]  29%');
    expect(formatProgressBar(1.7)).toBe('[##########] 100%');
    expect(formatProgressBar(-0.2)).toBe('[..........]   0%');
    expect(formatProgressBar(Number.NaN)).toBe('[..........]   0%');
    expect(formatProgressBar(0.25, 20)).toBe('[#####...............]  25%');
  });
});
