/**
 * What the dashboard tests start, and its cleanup: dashboard demos (an autoscaler with the
 * simulated provider and clients on loopback), temp dirs, and anything else to close.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { createLogger } from '../../src/common/log.js';
import { startDashboardDemo, type DashboardDemo } from '../../src/autoscaler/dashboard/demo.js';

type DemoOptions = NonNullable<Parameters<typeof startDashboardDemo>[0]>;

/**
 * Temp dirs (`tmp()`), demos (`demo()`, with this file's admin key, a silent log and `defaults`)
 * and closers (`defer()`) for each test: after it, everything is closed newest first (a close
 * that fails fails the test), then the dirs are removed.
 */
export function useDashboardScope(o: { prefix: string; adminKey: string; logName: string; defaults?: DemoOptions }) {
  const dirs: string[] = [];
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tmp = (): string => {
    const d = mkdtempSync(join(tmpdir(), o.prefix));
    dirs.push(d);
    return d;
  };
  const defer = (fn: () => Promise<void>): void => void closers.push(fn);
  const demo = async (opts: DemoOptions = {}): Promise<DashboardDemo> => {
    const d = await startDashboardDemo({ adminKey: o.adminKey, dataDir: tmp(), logger: createLogger(o.logName, { level: 'silent' }), ...o.defaults, ...opts });
    defer(() => d.close());
    return d;
  };
  return { tmp, demo, defer };
}
