/**
 * Faults around the worker under load (issue 8.1): clients leaving at random points, the model log
 * rotated (renamed, then truncated) while requests flow, SIGTERM with streams in flight, and a
 * workspace whose disk cannot be written (the benchmark cache). Real processes on loopback; after
 * each scenario the accounting invariants and a worker that exits by itself after SIGTERM.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmdirSync, chmodSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDeliveries, checkReports, type WorkerTotals } from '../../benchmarks/lib/invariants.js';
import {
  authMaker,
  clientAgent,
  completion,
  finishScenario,
  reportsOf,
  runLoad,
  tally,
  useStage,
  waitUntil,
  type CompletionRecord,
  type Stage,
} from './harness.js';

const stage = useStage();

/** A small deterministic random source (the scenario is the same on every run). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Send the headers and part of the body of a request, then vanish. */
async function leaveMidBody(workerUrl: string, body: string, waitMs: number): Promise<void> {
  const { hostname, port } = new URL(workerUrl);
  await new Promise<void>((resolve) => {
    const s = connect(Number(port), hostname, () => {
      s.write(`POST /v1/completions HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n`);
      s.write(body.slice(0, Math.floor(body.length / 2)));
      setTimeout(() => {
        s.destroy();
        resolve();
      }, waitMs);
    });
    s.on('error', () => resolve());
  });
}

/**
 * A workspace directory the worker cannot write: read-only for a non-root user (chmod), a
 * read-only tmpfs for root (who ignores modes); if neither works, the cache path is a directory.
 */
function unwritableWorkspace(st: Stage): { dir: string; how: string } {
  const dir = join(st.dir(), 'workspace');
  mkdirSync(dir);
  if (process.getuid?.() !== 0) {
    chmodSync(dir, 0o555);
    st.defer(() => chmodSync(dir, 0o755));
    return { dir, how: 'read-only directory' };
  }
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', dir], { stdio: 'ignore' });
    st.defer(() => {
      execFileSync('umount', [dir], { stdio: 'ignore' });
    });
    return { dir, how: 'read-only filesystem' };
  } catch {
    mkdirSync(join(dir, '.has_benchmark'));
    st.defer(() => rmdirSync(join(dir, '.has_benchmark')));
    return { dir, how: 'cache path is a directory' };
  }
}

describe('faults around the worker under load', () => {
  it('clients abort at random points (mid-body, waiting, mid-stream): cancelled, reported success=true, model requests closed', async () => {
    const engine = await stage.engine();
    const sim = await stage.sim({ tokenRate: 500, ttftMs: 20 });
    const worker = await stage.worker({ sim, reportAddr: engine.url });
    const auth = authMaker(engine, worker.url);
    const agent = clientAgent(stage);
    const random = lcg(2024);
    const records: CompletionRecord[] = await runLoad(400, 32, async (_i) => {
      const r = random();
      const stream = random() < 0.6;
      const maxTokens = 10 + Math.floor(random() * 60);
      if (r < 0.1) {
        // Leaves while the body is half sent: never admitted, never reported.
        const a = auth(completionWorkloadOf(maxTokens));
        await leaveMidBody(
          worker.url,
          JSON.stringify({ auth_data: a, payload: { prompt: 'tell me about the sea', max_tokens: maxTokens, stream } }),
          Math.floor(random() * 30),
        );
        return { requestIdx: a.request_idx, workload: completionWorkloadOf(maxTokens), outcome: 'aborted', stream, ms: 0 } satisfies CompletionRecord;
      }
      if (r < 0.55) return completion(worker.url, auth, { dispatcher: agent, stream, maxTokens, abortAfterMs: Math.floor(random() * 150) });
      if (r < 0.7 && stream) return completion(worker.url, auth, { dispatcher: agent, stream, maxTokens, abortAfterBytes: 1 + Math.floor(random() * 2000) });
      return completion(worker.url, auth, { dispatcher: agent, stream, maxTokens });
    });
    const t = tally(records);
    expect(t.aborted).toBeGreaterThan(100);
    expect(t.success).toBeGreaterThan(100);
    expect(t.error + t.refused + t.rejected).toBe(0);
    await finishScenario({ engine, worker, records, sim });
    // The worker closed the model's connection for requests whose client left.
    expect(Number((await sim.stats()).aborted)).toBeGreaterThan(20);
  });

  it('the model log is rotated (renamed, then truncated) during load: the worker follows the new file and keeps serving', async () => {
    const engine = await stage.engine();
    const sim = await stage.sim({ tokenRate: 400 });
    const worker = await stage.worker({ sim, reportAddr: engine.url });
    const auth = authMaker(engine, worker.url);
    const agent = clientAgent(stage);
    const load = runLoad(500, 8, (i) => completion(worker.url, auth, { dispatcher: agent, stream: i % 2 === 0, maxTokens: 16 }));
    const workerLog = () => readFileSync(worker.logFile, 'utf8');

    // logrotate's default: rename, and the writer starts a new file.
    await new Promise((r) => setTimeout(r, 200));
    renameSync(sim.logFile, `${sim.logFile}.1`);
    writeFileSync(sim.logFile, '');
    appendFileSync(sim.logFile, 'INFO Loading model weights rotation-marker-renamed\n');
    await waitUntil(
      () => workerLog().includes('rotation-marker-renamed'),
      8000,
      () => 'the line written to the new file after a rename in the worker log',
    );
    // copytruncate: the same file, grown for a while, cut to zero (a tailer can only see a
    // truncation while the file is still shorter than what it had read: logwatch.ts's known limit).
    appendFileSync(
      sim.logFile,
      Array.from({ length: 200 }, (_, i) => `INFO Loading model weights shard ${i} of a long log line that fills the file before it is rotated`).join('\n') +
        '\n',
    );
    await waitUntil(
      () => workerLog().includes('shard 199 of'),
      8000,
      () => 'the lines before the truncation in the worker log',
    );
    truncateSync(sim.logFile, 0);
    appendFileSync(sim.logFile, 'INFO Loading model weights rotation-marker-truncated\n');
    await waitUntil(
      () => workerLog().includes('rotation-marker-truncated'),
      8000,
      () => 'the line written after a truncation in the worker log',
    );

    const records = await load;
    expect(tally(records)).toMatchObject({ success: 500 });
    const h = await worker.healthz();
    expect(h).toMatchObject({ state: 'ready', error_msg: '' });
    await finishScenario({ engine, worker, records, sim });
  });

  it('SIGTERM with streams in flight: every stream completes, new requests get 503 JSON, the last reports carry everything, the process exits by itself', async () => {
    const engine = await stage.engine();
    // 100 tokens at 100 tokens/s: each stream lasts ~1 s.
    const sim = await stage.sim({ tokenRate: 100, capacity: 100_000 });
    const worker = await stage.worker({ sim, reportAddr: engine.url });
    const auth = authMaker(engine, worker.url);
    const agent = clientAgent(stage, 128);
    const started: CompletionRecord[] = [];
    let firstBytes = 0;
    const inFlight = runLoad(80, 80, async () => {
      const r = await completion(worker.url, auth, { dispatcher: agent, stream: true, maxTokens: 100, abortAfterBytes: Number.POSITIVE_INFINITY });
      started.push(r);
      return r;
    });
    // Wait until the model is generating for most of them.
    await waitUntil(
      async () => {
        firstBytes = Number((await sim.stats()).active);
        return firstBytes >= 50;
      },
      5000,
      () => `streams open at the model: ${firstBytes}`,
    );
    worker.proc.child.kill('SIGTERM');
    const refused: CompletionRecord[] = [];
    await waitUntil(
      async () => {
        const r = await completion(worker.url, auth, { dispatcher: agent, maxTokens: 2 });
        refused.push(r);
        return r.status === 503;
      },
      3000,
      () => `a 503 while draining; got ${JSON.stringify(refused.at(-1))}`,
    );
    const last = refused.at(-1)!;
    expect(JSON.parse(last.detail ?? '{}').error).toMatch(/draining/);
    const records = await inFlight;
    // Streams admitted before SIGTERM all complete; the few not yet admitted were refused with 503.
    const t = tally(records);
    expect(t.success).toBeGreaterThanOrEqual(50);
    expect(t.success + t.refused, JSON.stringify(records.filter((r) => r.outcome !== 'success' && r.outcome !== 'refused').slice(0, 3))).toBe(80);
    expect(await worker.proc.exited).toBe(0);
    expect(worker.proc.output()).toContain('FAULT_WORKER_DRAINED');
    expect(worker.proc.output()).not.toContain('FAULT_WORKER_LEAK');
    // The process is gone: the invariants are checked against what the clients saw.
    const all = [...records, ...refused];
    // A probe sent before SIGTERM took effect may have been served: it counts like any request.
    const succeeded = all.filter((r) => r.outcome === 'success');
    const served = succeeded.reduce((s, r) => s + r.workload, 0);
    const totals: WorkerTotals = { received: served, served, errored: 0, cancelled: 0, rejected: 0, pending: 0, started: succeeded.length };
    expect(checkDeliveries(all, engine.delivered())).toEqual([]);
    expect(checkReports(reportsOf(engine, worker.id), totals)).toEqual([]);
    expect(Number((await sim.stats()).aborted)).toBe(0);
  });

  it('the workspace disk cannot be written: the benchmark still measures perf, a warning is logged, no error is reported', async () => {
    const engine = await stage.engine();
    const sim = await stage.sim();
    const { dir, how } = unwritableWorkspace(stage);
    const worker = await stage.worker({ sim, reportAddr: engine.url, workspace: dir, perf: null, env: { BENCHMARK_MAX_TOKENS: '4' } });
    const h = await worker.healthz();
    expect(h.perf, how).toBeGreaterThan(0);
    expect(h.error_msg).toBe('');
    expect(readFileSync(worker.logFile, 'utf8')).toMatch(/could not write the cache file/);
    const auth = authMaker(engine, worker.url);
    const agent = clientAgent(stage);
    const records = await runLoad(200, 16, (i) => completion(worker.url, auth, { dispatcher: agent, stream: i % 2 === 1 }));
    expect(tally(records)).toMatchObject({ success: 200 });
    await waitUntil(
      () => reportsOf(engine, worker.id).some((r) => (r as unknown as { max_perf: number }).max_perf > 0),
      5000,
      () => 'a report with max_perf',
    );
    await finishScenario({ engine, worker, records, sim });
  });
});

function completionWorkloadOf(maxTokens: number): number {
  return Math.ceil('tell me about the sea'.length / 4) + maxTokens;
}
