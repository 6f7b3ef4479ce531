/**
 * `npm run bench -- --vs nginx` (issue 24), without running the benchmark (timings belong to the
 * benchmark): nginx's configuration with the HTTPS listener is one nginx itself accepts, the table
 * judges each row against its goal from the median of its runs, and a wrong `--vs` is refused
 * with exit 2 naming the value.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findCommand } from '../benchmarks/lib/tools.js';
import { nginxConfig } from '../benchmarks/lib/nginx.js';
import { formatVsNginx, meetsGoal, type VsNginxReport, type VsRow } from '../benchmarks/lib/vs-format.js';
import { testCert } from './helpers/tls.js';

const dir = mkdtempSync(join(tmpdir(), 'bench-vs-nginx-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bench --vs nginx', () => {
  it('writes an nginx configuration with a TLS 1.3 listener on the same upstream, which nginx -t accepts', () => {
    const { cert, key } = testCert();
    const conf = nginxConfig({ dir, port: 18080, upstream: 'http://127.0.0.1:18081', asRoot: process.getuid?.() === 0, tls: { cert, key, port: 18443 } });
    expect(conf).toMatch(/worker_processes 1;/);
    expect(conf).toMatch(/listen 127\.0\.0\.1:18443 ssl/);
    expect(conf).toMatch(/ssl_protocols TLSv1\.3;/);
    expect(conf.match(/proxy_pass http:\/\/model;/g)).toHaveLength(2);
    expect(nginxConfig({ dir, port: 18080, upstream: 'http://127.0.0.1:18081', asRoot: false })).not.toMatch(/ssl/);
    const nginx = findCommand('nginx');
    if (!nginx) return; // nginx -t needs nginx; the shape above is checked either way
    for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d), { recursive: true });
    const file = join(dir, 'nginx.conf');
    writeFileSync(file, conf);
    const r = spawnSync(nginx, ['-t', '-p', dir, '-c', file, '-e', join(dir, 'error.log')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });

  it('judges each row on the median of its runs and prints medians, spreads and ratios', () => {
    const row = (name: string, kind: VsRow['kind'], goal: number, compare: number[]): VsRow => ({
      name,
      unit: kind === 'ratio' ? 'µs' : 'ms',
      kind,
      goal,
      worker: compare.map((c) => c * 10),
      nginx: [10, 10, 10],
      compare,
      notes: [],
    });
    // One bad run does not fail a row whose median meets the goal, and the other way round.
    const ok = row('plain, c=1', 'ratio', 2, [1.5, 9, 1.8]);
    const miss = row('plain, keep-alive, c=64', 'ratio', 1.5, [1.4, 1.6, 1.7]);
    const added = row('SSE: delay added per chunk over direct', 'added', 0.1, [0.05, 0.2, 0.08]);
    expect([ok, miss, added].map(meetsGoal)).toEqual([true, false, true]);
    const report: VsNginxReport = {
      date: '2026-12-07T00:00:00.000Z',
      cores: 2,
      node: 'v20',
      nginxVersion: '1.22.1',
      workerCli: 'this build',
      runs: 3,
      durationS: 5,
      loadStart: 1,
      loadEnd: 2,
      rows: [ok, miss, added],
      pyworker: { rps: [800, 828, 900], cpuUs: [1000, 1007, 1100] },
    };
    const text = formatVsNginx(report);
    expect(text).toContain('| plain, c=1 | 18.0 µs (15.0–90.0) | 10.0 µs (10.0–10.0) | **1.80x** (1.50–9.00) | ≤ 2x | yes |');
    expect(text).toContain('**1.60x** (1.40–1.70) | ≤ 1.5x | no |');
    expect(text).toContain('**+0.080 ms** (0.050–0.200) | ≤ nginx + 0.1 ms | yes |');
    expect(text).toMatch(/PyWorker, plain, keep-alive, c=64 \| 1007\.0 µs \(1000\.0–1100\.0\), 828 req\/s/);
  });

  it('refuses a --vs other than nginx, naming it, before starting anything', () => {
    const r = spawnSync(process.execPath, ['build/benchmarks/run.js', '--vs', 'apache'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('"apache"');
  });
});
