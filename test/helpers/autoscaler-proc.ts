/**
 * A real autoscaler process (`node dist/cli.js autoscaler`) for black-box tests of the engine's
 * persistence: a config with the simulated provider and no workers (every /route/ answers
 * "queued" with a fresh request_idx), started on a data dir the test owns. Needs `npm run build`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli.js');

/** Endpoints `e1` and `e2` (keys `e1-key-1234`, `e2-key-1234`), no workers ever. */
export function writeNoWorkerConfig(dir: string): string {
  const ep = (name: string) => ({
    name,
    api_key: `${name}-key-1234`,
    cold_workers: 0,
    max_workers: 0,
    cold_mult: 0,
    min_load: 0,
    workergroups: [{ name: 'wg', machine_types: [{ name: 'gpu', dollars_per_hour: 1 }] }],
  });
  const path = join(dir, 'autoscaler.json');
  writeFileSync(path, JSON.stringify({ provider: { kind: 'simulated' }, engine: { tick_seconds: 0.2 }, endpoints: [ep('e1'), ep('e2')] }));
  return path;
}

export interface AutoscalerProc {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  /** What it logged (pino writes to stdout). */
  stdout: () => string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
}

/** Start one; resolves once it listens, rejects with its stderr if it exits first. */
export function startAutoscalerProc(o: { config: string; dataDir: string; port?: number; args?: string[] }): Promise<AutoscalerProc> {
  const child = spawn(process.execPath, [CLI, 'autoscaler', '--config', o.config, '--data-dir', o.dataDir, '--port', String(o.port ?? 0), ...(o.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, AUTOSCALER_ADMIN_KEY: 'proc-admin-key-1234' },
  });
  let err = '';
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    out += d;
  });
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  return new Promise((resolve, reject) => {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      err += d;
      const m = /autoscaler listening on (http:\/\/\S+)/.exec(err);
      if (m) resolve({ child, url: m[1]!, stderr: () => err, stdout: () => out, exited });
    });
    void exited.then((code) => reject(new Error(`autoscaler exited (${code}) before listening:\n${err}`)));
  });
}

/** Run one that is expected to refuse to start: its exit code and stderr. */
export async function refusedStart(o: { config: string; dataDir: string; args?: string[] }): Promise<{ code: number | string; stderr: string }> {
  try {
    const p = await startAutoscalerProc(o);
    p.child.kill('SIGKILL');
    await p.exited;
    return { code: 0, stderr: `it started:\n${p.stderr()}` };
  } catch (err) {
    const text = String(err);
    const code = /exited \((\S+)\)/.exec(text)?.[1] ?? '?';
    return { code: Number.isNaN(Number(code)) ? code : Number(code), stderr: text };
  }
}

/** End it (SIGTERM by default) and wait for the exit. */
export async function stopProc(p: AutoscalerProc, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}

export async function post(url: string, body: unknown, raw?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw ?? JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A new request on endpoint `ep`: its request_idx. */
export async function routeNew(p: AutoscalerProc, ep = 'e1'): Promise<number> {
  const r = await post(`${p.url}/route/`, { endpoint: ep, api_key: `${ep}-key-1234`, cost: 10 });
  if (r.status !== 200 || typeof r.body.request_idx !== 'number') throw new Error(`route: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.request_idx;
}
