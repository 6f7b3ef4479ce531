/**
 * Issue 14, point 7: a transient failure of the model health check (connections reset, the worker
 * out of file descriptors) does not mark a healthy model failed; one that lasts is reported.
 * The EMFILE case runs for real, in a child process with a small open-file limit.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startHealthcheck, type Healthcheck } from '../src/worker/healthcheck.js';
import { startTestWorker, waitFor } from './helpers/worker.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A /health endpoint on raw TCP: 200, or every connection reset while `reset` is set. */
async function flakyModel(): Promise<{ url: string; state: { reset: boolean; hits: number } }> {
  const state = { reset: false, hits: 0 };
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.once('data', () => {
      state.hits++;
      if (state.reset) return void s.resetAndDestroy();
      s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/health`, state };
}

describe('health check: transient failures', () => {
  it('connection resets for a while are waited out, not reported; resets that last are', async () => {
    const model = await flakyModel();
    const failures: string[] = [];
    const hc: Healthcheck = startHealthcheck({
      url: model.url,
      intervalMs: 40,
      startupIntervalMs: 20,
      timeoutMs: 1000,
      transientGraceMs: 1500,
      onFailure: (m) => failures.push(m),
    });
    cleanups.push(() => hc.stop());
    expect(await hc.waitForFirstSuccess(5000)).toBe(true);
    model.state.reset = true;
    const hits = model.state.hits;
    await waitFor(
      () => model.state.hits >= hits + 5,
      5000,
      () => 'five reset probes',
    );
    expect(hc.lastOk()).toBe(false);
    model.state.reset = false;
    await waitFor(
      () => hc.lastOk() === true,
      5000,
      () => 'a passing probe',
    );
    expect(failures).toEqual([]);
    // Now resets that outlast the grace: reported, naming the reset.
    model.state.reset = true;
    await waitFor(
      () => failures.length > 0,
      8000,
      () => 'a reported failure',
    );
    expect(failures[0]).toMatch(/connection reset by the model server/);
  });

  // npm test builds first: the child imports the compiled module.
  const dist = join(__dirname, '..', 'dist', 'worker', 'healthcheck.js');
  it('the worker out of file descriptors (EMFILE) for a moment: not reported, and the check passes again', () => {
    expect(existsSync(dist), `${dist}: run npm run build first`).toBe(true);
    // A child with a small open-file limit: a 200 /health server, the check, then every free fd taken for a while.
    const script = `
      import { createServer } from 'node:http';
      import { openSync, closeSync } from 'node:fs';
      import { startHealthcheck } from ${JSON.stringify(dist)};
      const server = createServer((q, s) => s.end('{}'));
      await new Promise((r) => server.listen(0, '127.0.0.1', r));
      const failures = [];
      const hc = startHealthcheck({ url: 'http://127.0.0.1:' + server.address().port + '/health', intervalMs: 50, startupIntervalMs: 20, timeoutMs: 1000, transientGraceMs: 5000, onFailure: (m) => failures.push(m) });
      const ok = await hc.waitForFirstSuccess(5000);
      const fds = [];
      try { for (;;) fds.push(openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
      let sawEmfile = false;
      for (let i = 0; i < 100 && !sawEmfile; i++) { await new Promise((r) => setTimeout(r, 20)); sawEmfile = hc.lastOk() === false; }
      for (const fd of fds) closeSync(fd);
      let back = false;
      for (let i = 0; i < 200 && !back; i++) { await new Promise((r) => setTimeout(r, 20)); back = hc.lastOk() === true; }
      hc.stop();
      server.close();
      console.log(JSON.stringify({ ok, held: fds.length, sawEmfile, back, failures }));
    `;
    const r = spawnSync('bash', ['-c', `ulimit -n 256 && exec "${process.execPath}" --input-type=module -e "$SCRIPT"`], {
      env: { ...process.env, SCRIPT: script },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    expect(line, r.stderr).toMatch(/^\{/);
    const out = JSON.parse(line) as { ok: boolean; held: number; sawEmfile: boolean; back: boolean; failures: string[] };
    expect(out.ok).toBe(true);
    expect(out.held).toBeGreaterThan(100);
    expect(out.sawEmfile).toBe(true);
    expect(out.back).toBe(true);
    expect(out.failures).toEqual([]);
  });

  it('a worker errored by a lasting transient failure is ready again, error_msg cleared, once the check passes', async () => {
    const model = await flakyModel();
    const root = model.url.replace(/\/health$/, '');
    const w = await startTestWorker({ modelUrl: root, spec: { healthPath: '/health' }, timings: { healthIntervalMs: 100 } });
    cleanups.push(() => w.close());
    expect(w.lifecycle.state).toBe('ready');
    model.state.reset = true;
    await waitFor(
      () => w.lifecycle.state === 'errored',
      10_000,
      () => `errored by lasting resets (state ${w.lifecycle.state})`,
    );
    expect(w.ledger.errorMsg).toMatch(/reset/);
    model.state.reset = false;
    await waitFor(
      () => w.lifecycle.state === 'ready',
      10_000,
      () => `ready again (state ${w.lifecycle.state})`,
    );
    expect(w.ledger.errorMsg).toBe('');
  });
});
