/**
 * Memory of the /delete_requests/ backlog: how much a million ended request_idxs waiting for the
 * engine take in the worker's `IdQueue` (Float64Array chunks), next to a plain `number[]`, and how
 * long it takes to hand them out in 10 000-id posts (peek + drop, as the reporter does).
 *
 *   npm run build && node build/benchmarks/backlog-memory.js [--ids 1000000]
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { benchArgs } from './lib/args.js';
import { IdQueue } from '#nodeworker/worker/id-queue.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap + array buffers after a full collection (bytes). */
function used(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(2)} MiB`;

function main(): void {
  const args = benchArgs('backlog-memory', '[--ids N]', { ids: 'string' });
  const n = Number(args.ids ?? 1_000_000);
  // Realistic ids: large integers as the engine hands them out.
  const base = 9_000_000_000;

  const before = used();
  const q = new IdQueue();
  for (let i = 0; i < n; i++) q.push(base + i);
  const afterQueue = used();
  const queueBytes = afterQueue - before;
  const reportedBytes = q.bytes();

  const before2 = used();
  const arr: number[] = [];
  for (let i = 0; i < n; i++) arr.push(base + i);
  const arrayBytes = used() - before2;

  const t0 = performance.now();
  let drained = 0;
  while (q.size > 0) {
    const ids = q.peek(10_000);
    drained += ids.length;
    q.drop(ids.length);
  }
  const drainMs = performance.now() - t0;

  const result = {
    ids: n,
    idQueueBytes: queueBytes,
    idQueueBytesPerId: +(queueBytes / n).toFixed(2),
    idQueueReported: reportedBytes,
    numberArrayBytes: arrayBytes,
    numberArrayBytesPerId: +(arrayBytes / n).toFixed(2),
    drainMs: +drainMs.toFixed(1),
    drained,
  };
  process.stdout.write(
    [
      `backlog of ${n.toLocaleString('en')} request_idxs:`,
      `  IdQueue (Float64Array chunks): ${mib(queueBytes)} (${result.idQueueBytesPerId} bytes/id)`,
      `  number[] for comparison:       ${mib(arrayBytes)} (${result.numberArrayBytesPerId} bytes/id)`,
      `  handing them out in 10 000-id posts (peek + drop): ${result.drainMs} ms`,
      JSON.stringify(result),
      '',
    ].join('\n'),
  );
  if (arr.length !== n) throw new Error('unreachable');
}

main();
