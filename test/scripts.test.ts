import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import openaiWorker from '../handlers/openai.js';
import { startModelSim, type ModelSim } from '../src/model-sim/index.js';
import { arrivals, rateAt } from '../scripts/lib/patterns.js';
import { startProgress } from '../scripts/lib/progress.js';
import { startTestWorker, type TestWorker } from './helpers/worker.js';

/**
 * The load generator and the trace replay, compiled (build/scripts), run as processes for a few
 * seconds against a real worker in front of model-sim; and the pattern maths on their own.
 */
const LOAD = resolve(__dirname, '..', 'build', 'scripts', 'load.js');
const REPLAY = resolve(__dirname, '..', 'build', 'scripts', 'replay.js');
const run = promisify(execFile);

let dir: string;
let sim: ModelSim;
let worker: TestWorker;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'scripts-test-'));
  sim = await startModelSim({ flavor: 'openai', port: 0, loadSeconds: 0, tokenRate: 500, capacity: 100_000, ttftMs: 1, logFile: join(dir, 'model.log') });
  await sim.ready;
  worker = await startTestWorker({ modelUrl: sim.url, handlers: openaiWorker.handlers, perf: 100_000 });
});

afterAll(async () => {
  await worker?.close();
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

function csv(path: string): Array<Record<string, string>> {
  const [head, ...rows] = readFileSync(path, 'utf8').trim().split('\n');
  const keys = head!.split(',');
  return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [keys[i]!, v])));
}

function checkSvg(path: string): string {
  const svg = readFileSync(path, 'utf8');
  expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
  expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
  // Every series is a polyline with at least one point.
  const lines = [...svg.matchAll(/<polyline[^>]*points="([^"]*)"/g)].map((m) => m[1]!);
  expect(lines.length).toBeGreaterThanOrEqual(4);
  expect(lines.some((pts) => pts.trim().split(' ').length >= 2)).toBe(true);
  return svg;
}

describe('load.js', () => {
  it('sends a constant rate for a few seconds, shows progress, writes the CSVs and the plot', async () => {
    const out = join(dir, 'load');
    const r = await run(process.execPath, [
      LOAD,
      '--worker',
      worker.url,
      '--pattern',
      'constant',
      '--rate',
      '10',
      '--duration',
      '2',
      '--arrivals',
      'uniform',
      '--max-tokens',
      '5',
      '--prompt-tokens',
      '8',
      '--out',
      out,
      '--progress-interval',
      '0.5',
      '--bucket',
      '0.5',
    ]);
    expect(r.stdout).toMatch(/requests {3}sent 20, ok 20, errors 0, shed 0/);
    // Not a terminal: periodic lines, then the final one.
    const progress = r.stderr.split('\n').filter((l) => /^\d+\.\d\/2s {2}sent \d+/.test(l));
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(r.stderr).toMatch(/done in [\d.]+ s: sent 20, ok 20/);
    const rows = csv(join(out, 'requests.csv'));
    expect(rows).toHaveLength(20);
    expect(rows.every((row) => row.status === '200' && row.ok === '1' && row.cost === String(8 + 5))).toBe(true);
    // Evenly spaced: 0.05, 0.15, ... s.
    expect(Number(rows[1]!.planned_s) - Number(rows[0]!.planned_s)).toBeCloseTo(0.1, 2);
    const tl = csv(join(out, 'timeline.csv'));
    expect(tl.length).toBeGreaterThanOrEqual(4);
    expect(tl.slice(0, 4).every((b) => Number(b.offered_rps) === 10)).toBe(true);
    expect(tl.reduce((s, b) => s + Number(b.ok_rps) * 0.5, 0)).toBeCloseTo(20, 5);
    // Latency is recorded in the buckets where requests completed (under load the first may hold none).
    expect(Number(tl.find((b) => Number(b.ok_rps) > 0)!.p50_ms)).toBeGreaterThan(0);
    checkSvg(join(out, 'plot.svg'));
    expect(worker.ledger.totals.served).toBeGreaterThanOrEqual(20 * 13);
  });

  it('streams and records time to first byte', async () => {
    const out = join(dir, 'stream');
    await run(process.execPath, [
      LOAD,
      '--worker',
      worker.url,
      '--rate',
      '5',
      '--duration',
      '1',
      '--arrivals',
      'uniform',
      '--max-tokens',
      '20',
      '--stream',
      '--bucket',
      '0.25',
      '--out',
      out,
    ]);
    const rows = csv(join(out, 'requests.csv'));
    expect(rows).toHaveLength(5);
    for (const row of rows) {
      expect(Number(row.ttft_ms)).toBeGreaterThan(0);
      expect(Number(row.ttft_ms)).toBeLessThan(Number(row.latency_ms));
    }
    expect(checkSvg(join(out, 'plot.svg'))).toContain('time to first byte');
  });

  it('against an unreachable autoscaler: names ECONNREFUSED, keeps its own drain cancellations apart, exits 1', async () => {
    // A port nobody listens on: the client retries /route/ until the drain (1 s) cancels it.
    const port = await new Promise<number>((ok) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => ok(p));
      });
    });
    const out = join(dir, 'load-unreachable');
    const err = await run(process.execPath, [
      LOAD,
      '--autoscaler',
      `http://127.0.0.1:${port}`,
      '--endpoint',
      'e',
      '--api-key',
      'k',
      '--rate',
      '2',
      '--duration',
      '1',
      '--arrivals',
      'uniform',
      '--drain',
      '1',
      '--out',
      out,
    ]).catch((e: { code: number; stdout: string; stderr: string }) => e);
    const { code, stdout, stderr } = err as { code: number; stdout: string; stderr: string };
    expect(code, `${stdout}\n${stderr}`).toBe(1);
    expect(stderr).toMatch(/nothing succeeded \(2 sent; most common failure: DRAINED \(ECONNREFUSED\)\)/);
    expect(stdout).toMatch(/ok 0, errors 0, shed 0, cancelled by the drain 2/);
    expect(stdout).toMatch(/failures {3}DRAINED \(ECONNREFUSED\) ×2/);
    expect(csv(join(out, 'requests.csv')).map((r) => r.error)).toEqual(['DRAINED (ECONNREFUSED)', 'DRAINED (ECONNREFUSED)']);
  });

  it('refuses bad flags naming each one, with exit code 2', async () => {
    const err = await run(process.execPath, [LOAD, '--pattern', 'zigzag', '--rate=-1']).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    const stderr = (err as { stderr: string }).stderr;
    expect(stderr).toMatch(/--pattern must be one of constant, ramp, first-day/);
    expect(stderr).toMatch(/--rate must be a number/);
    expect(stderr).toMatch(/--worker or --autoscaler is required/);
  });
});

describe('replay.js', () => {
  it('replays a trace time-compressed, with ContextTokens as the prompt and GeneratedTokens as max_tokens', async () => {
    // 24 requests over 3 s of trace time, in the Azure trace's format.
    const rows = ['TIMESTAMP,ContextTokens,GeneratedTokens'];
    for (let i = 0; i < 24; i++) {
      const t = new Date(Date.UTC(2023, 10, 16, 18, 17, 3) + i * 125);
      const stamp = t.toISOString().replace('T', ' ').replace('Z', '0000');
      rows.push(`${stamp},${10 + i},${1 + (i % 7)}`);
    }
    const trace = join(dir, 'trace.csv');
    writeFileSync(trace, rows.join('\n') + '\n');
    const out = join(dir, 'replay');
    const r = await run(process.execPath, [REPLAY, '--trace', trace, '--speed', '2', '--worker', worker.url, '--out', out, '--progress-interval', '0.5']);
    expect(r.stdout).toMatch(/sent 24, ok 24, errors 0/);
    expect(r.stdout).toMatch(/CC-BY 4\.0.*Splitwise/);
    const sent = csv(join(out, 'requests.csv'));
    expect(sent).toHaveLength(24);
    sent.forEach((row, i) => {
      expect(Number(row.cost)).toBe(10 + i + 1 + (i % 7));
      // 125 ms apart in the trace, 62.5 ms at speed 2.
      expect(Number(row.planned_s)).toBeCloseTo(i * 0.0625, 2);
    });
    expect(checkSvg(join(out, 'plot.svg'))).toMatch(/Trace: .*CC-BY 4\.0/);
  });

  it('keeps the trace attribution in its help', async () => {
    const r = await run(process.execPath, [REPLAY, '--help']);
    expect(r.stdout).toMatch(/Azure LLM inference trace 2023.*CC-BY 4\.0.*Patel et al\..*Splitwise/s);
  });
});

describe('patterns', () => {
  it('first-day climbs to twice the expected rate and back, three times', () => {
    const o = { pattern: 'first-day' as const, durationS: 300, rate: 10, cycles: 3, floor: 0.1 };
    const samples = Array.from({ length: 3000 }, (_, i) => rateAt(o, i * 0.1));
    expect(Math.max(...samples)).toBeCloseTo(20, 5);
    expect(Math.min(...samples)).toBeCloseTo(1, 5);
    // Three separate stretches at the peak.
    let peaks = 0;
    samples.forEach((v, i) => {
      if (v === 20 && (i === 0 || samples[i - 1]! < 20)) peaks++;
    });
    expect(peaks).toBe(3);
    // Arrivals follow the integral of the rate.
    const expected = samples.reduce((s, v) => s + v * 0.1, 0);
    expect(Math.abs(arrivals(o, 'uniform').length - expected)).toBeLessThan(2);
    expect(Math.abs(arrivals(o, 'poisson', 7).length - expected) / expected).toBeLessThan(0.1);
  });

  it('ramp goes from --from to --to', () => {
    const o = { pattern: 'ramp' as const, durationS: 10, rate: 0, from: 2, to: 12 };
    expect(rateAt(o, 0)).toBe(2);
    expect(rateAt(o, 5)).toBe(7);
    expect(rateAt(o, 10)).toBe(12);
  });
});

describe('progress', () => {
  it('rewrites one line on a terminal', async () => {
    const stream = new PassThrough() as unknown as NodeJS.WriteStream;
    let text = '';
    (stream as unknown as PassThrough).on('data', (c: Buffer) => (text += c.toString()));
    let n = 0;
    const p = startProgress(() => `tick ${++n}`, { stream, tty: true });
    await new Promise((r) => setTimeout(r, 600));
    p.stop('finished');
    expect(text).toMatch(/^\r\x1b\[2Ktick 1\r\x1b\[2Ktick 2/);
    expect(text.endsWith('\r\x1b[2Kfinished\n')).toBe(true);
    expect(text.split('\n')).toHaveLength(2);
  });
});
