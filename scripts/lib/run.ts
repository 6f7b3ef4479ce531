import { sleep } from '#nodeworker/common/util.js';
import type { BuiltRequest } from './payloads.js';
import { ms, startProgress } from './progress.js';
import { Recorder } from './recorder.js';
import type { Target } from './target.js';

/**
 * Runs a plan of arrivals open-loop: each request is sent at its planned time whether or not
 * earlier ones have answered (as real users do), up to `maxInflight` open at once (later ones are
 * recorded as shed, error "SHED"). When the plan ends, open requests get `drainS` to finish, then
 * are cancelled. Progress goes to stderr; the CSVs and the plot to `outDir`.
 */
export interface Planned {
  /** Seconds from the start. */
  atS: number;
  build: () => BuiltRequest;
}

export interface RunOptions {
  target: Target;
  plan: Planned[];
  /** Planned length of the run, s (the timeline's end). */
  durationS: number;
  timeoutMs: number;
  maxInflight: number;
  drainS: number;
  bucketS: number;
  outDir: string;
  title: string;
  footer?: string;
  progressIntervalS?: number;
  /** Force the progress style (default: stderr's TTY-ness). */
  tty?: boolean;
  /** Stop sending (e.g. on SIGINT); open requests still drain. */
  stop?: AbortSignal;
}

export interface RunResult {
  sent: number;
  ok: number;
  /** Failed requests: the target's failures (not shed, not cancelled by the drain). */
  errors: number;
  shed: number;
  /** Still open when the drain time ran out, cancelled by this run: apart from errors. */
  drained: number;
  /** Errors (drained ones included) by their error text, most frequent first. */
  errorCauses: Array<[string, number]>;
  p50: number;
  p95: number;
  p99: number;
  /** Load of ok requests per second of the run. */
  throughput: number;
  elapsedS: number;
  files: { requests: string; timeline: string; plot: string };
}

export async function runPlan(o: RunOptions): Promise<RunResult> {
  const rec = new Recorder();
  const cancel = new AbortController();
  const t0 = performance.now();
  const nowS = () => (performance.now() - t0) / 1000;
  let inflight = 0;
  let sent = 0;
  let nextId = 0;
  const open = new Set<Promise<void>>();

  const progress = startProgress(
    () => {
      const t = nowS();
      const s = rec.summary(t, 10);
      const all = rec.summary();
      return (
        // Shed arrivals are recorded as failed rows: count them apart, as the summary does.
        `${t.toFixed(1)}/${o.durationS}s  sent ${sent}  ok ${all.ok}  err ${all.errors - rec.shed.length}  shed ${rec.shed.length}  open ${inflight}` +
        `  | last 10 s: ${(s.ok / Math.min(10, Math.max(t, 0.001))).toFixed(1)} ok/s  p50 ${ms(s.p50)}  p95 ${ms(s.p95)}  ${(s.load / Math.min(10, Math.max(t, 0.001))).toFixed(0)} load/s`
      );
    },
    { intervalS: o.progressIntervalS, tty: o.tty },
  );

  for (const p of o.plan) {
    if (o.stop?.aborted) break;
    const wait = p.atS * 1000 - (performance.now() - t0);
    if (wait > 1) {
      try {
        await sleep(wait, o.stop);
      } catch {
        break;
      }
    }
    rec.planArrival(p.atS);
    const id = ++nextId;
    const req = p.build();
    const sentS = nowS();
    if (inflight >= o.maxInflight) {
      rec.add({
        id,
        plannedS: p.atS,
        sentS,
        doneS: sentS,
        latencyMs: 0,
        cost: req.cost,
        route: req.route,
        ok: false,
        status: 0,
        ttftMs: null,
        attempts: 0,
        error: 'SHED',
      });
      rec.shed.push(p.atS);
      continue;
    }
    inflight++;
    sent++;
    const t = performance.now();
    const done = o.target.send(req, o.timeoutMs, cancel.signal).then((outcome) => {
      inflight--;
      // Cancelled by our own drain: not the target's failure; kept apart from errors (and the plot).
      if (!outcome.ok && cancel.signal.aborted) {
        const cause = outcome.error.replace(/^ABORTED ?/, '');
        outcome = { ...outcome, error: cause ? `DRAINED (${cause})` : 'DRAINED' };
        rec.drained.push(p.atS);
      }
      rec.add({ id, plannedS: p.atS, sentS, doneS: nowS(), latencyMs: performance.now() - t, cost: req.cost, route: req.route, ...outcome });
    });
    open.add(done);
    void done.finally(() => open.delete(done));
  }

  // Let what is open finish, then cancel the rest.
  const drained = Promise.all([...open]);
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), o.drainS * 1000).unref?.());
  if ((await Promise.race([drained.then(() => 'ok' as const), timer])) === 'timeout') {
    cancel.abort(new Error('drain timeout'));
    await Promise.all([...open]);
  }
  const elapsedS = nowS();
  const all = rec.summary();
  const result = {
    sent,
    ok: all.ok,
    errors: all.errors - rec.shed.length - rec.drained.length,
    shed: rec.shed.length,
    drained: rec.drained.length,
    errorCauses: rec.errorCauses(),
    p50: all.p50,
    p95: all.p95,
    p99: all.p99,
    throughput: all.load / Math.max(elapsedS, 1e-9),
    elapsedS,
  };
  progress.stop(
    `done in ${elapsedS.toFixed(1)} s: sent ${sent}, ok ${result.ok}, errors ${result.errors}, shed ${result.shed}; ` +
      `latency p50 ${ms(result.p50)} p95 ${ms(result.p95)} p99 ${ms(result.p99)}; ${result.throughput.toFixed(1)} load/s`,
  );
  const files = rec.write(o.outDir, { bucketS: o.bucketS, endS: Math.max(o.durationS, elapsedS), title: o.title, footer: o.footer });
  return { ...result, files };
}
