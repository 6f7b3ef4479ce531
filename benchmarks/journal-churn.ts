/**
 * The journal's cost per open request at a steady churn (issue 22 point 4, fourth round): a journal
 * holding `--live` request records, each new request put (its record encoded) and the oldest
 * deleted, `--requests` times, flushed every `--flush-every` requests (0: once, at the end); values kept in memory
 * (`put(…, keepValue = true)`, the journal's default) and not kept (`false`, what the store does for
 * open requests since round four), in alternating rounds. Prints µs per request (put + delete, the
 * flushes included) and the GC pause time per round.
 *
 *   npm run build && node build/benchmarks/journal-churn.js [--live 10000] [--requests 100000] [--flush-every 10000] [--rounds 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { Journal } from '#nodeworker/autoscaler/journal.js';
import { benchArgs } from './lib/args.js';

/** A request record as the store writes one (PendingRequest plus its endpoint). */
function record(i: number) {
  const t = 1_765_100_000_000 + i;
  return {
    idx: i,
    cost: 10,
    createdAt: t,
    replayTimeoutMs: 60_000,
    state: 'routed',
    workerId: 1 + (i % 1000),
    routedAt: t,
    answer: {
      url: `http://127.0.0.1:9/w${1 + (i % 1000)}`,
      request_idx: i,
      reqnum: i,
      cost: 10,
      endpoint: 'bench',
      signature: '',
      worker_id: 1 + (i % 1000),
      status: 'routed',
    },
    reported: false,
    expectedQueueTime: 0.1,
    lastSeenAt: t,
    avoid: [],
    attempts: 1,
    delivered: true,
    endpoint: 'bench',
  };
}

async function churn(keepValue: boolean, live: number, requests: number, flushEvery: number): Promise<{ usPerRequest: number; gcMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'journal-churn-'));
  let gcMs = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  try {
    const j = new Journal(join(dir, 'state.jsonl'));
    for (let i = 1; i <= live; i++) j.put('req', String(i), record(i), undefined, keepValue);
    j.flush();
    obs.observe({ entryTypes: ['gc'] });
    const t0 = performance.now();
    for (let i = live + 1; i <= live + requests; i++) {
      j.put('req', String(i), record(i), undefined, keepValue);
      j.delete('req', String(i - live));
      if (flushEvery > 0 && i % flushEvery === 0) j.flush();
    }
    j.flush();
    const us = ((performance.now() - t0) * 1000) / requests;
    j.close();
    // GC entries reach the observer asynchronously.
    await new Promise((r) => setTimeout(r, 50));
    return { usPerRequest: us, gcMs };
  } finally {
    obs.disconnect();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = benchArgs('journal-churn', '[--live N] [--requests N] [--flush-every N] [--rounds N]', {
    live: 'string',
    requests: 'string',
    'flush-every': 'string',
    rounds: 'string',
  });
  const live = Number(args.live ?? 10_000);
  const requests = Number(args.requests ?? 100_000);
  const flushEvery = Number(args['flush-every'] ?? 10_000);
  const rounds = Number(args.rounds ?? 3);
  process.stdout.write(`journal churn: ${live} live request records, ${requests} requests a round, a flush every ${flushEvery}\n`);
  for (let r = 0; r < rounds; r++) {
    for (const keep of [true, false]) {
      const out = await churn(keep, live, requests, flushEvery);
      process.stdout.write(
        `round ${r + 1}, values ${keep ? 'kept    ' : 'not kept'}: ${out.usPerRequest.toFixed(2)} µs per request (put + delete), GC pauses ${out.gcMs.toFixed(0)} ms\n`,
      );
    }
  }
}

void main();
