import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderChart } from '#nodeworker/autoscaler/simulate/svg.js';
import { percentile } from '#nodeworker/common/util.js';
import type { Outcome } from './target.js';

/**
 * What a run records: one row per request, and from them a timeline of fixed buckets (offered
 * and completed rate, errors, throughput in load/s, latency percentiles). Written as two CSV
 * files and one SVG chart.
 */
export interface RequestRecord extends Outcome {
  id: number;
  /** Planned arrival, s from the start. */
  plannedS: number;
  /** Actually sent, s from the start. */
  sentS: number;
  /** Answer complete, s from the start. */
  doneS: number;
  latencyMs: number;
  cost: number;
  route: string;
}

export interface Bucket {
  /** Start of the bucket, s. */
  t: number;
  /** Requests planned to arrive in the bucket, per second. */
  offeredRps: number;
  /** Requests that completed (ok or not) in the bucket, per second. */
  completedRps: number;
  okRps: number;
  errorRps: number;
  /** Load (cost) of the ok completions, per second. */
  throughput: number;
  p50: number;
  p95: number;
  p99: number;
  /** Mean time to first byte of streamed answers, ms (NaN when none). */
  ttft: number;
}

export class Recorder {
  readonly records: RequestRecord[] = [];
  /** Planned arrivals that were not sent because `maxInflight` requests were already open. */
  readonly shed: number[] = [];
  /** Planned times of requests the run's own drain cancelled (error "DRAINED …"). */
  readonly drained: number[] = [];

  /** Failed rows by error text (shed ones left out), most frequent first: what went wrong, named. */
  errorCauses(): Array<[string, number]> {
    const counts = new Map<string, number>();
    for (const r of this.records) if (!r.ok && r.error !== 'SHED') counts.set(r.error, (counts.get(r.error) ?? 0) + 1);
    return [...counts].sort((a, b) => b[1] - a[1]);
  }
  private planned: number[] = [];

  planArrival(atS: number): void {
    this.planned.push(atS);
  }

  add(r: RequestRecord): void {
    this.records.push(r);
  }

  /** Latency percentiles and counts of everything so far (or of the last `windowS` seconds). */
  summary(nowS?: number, windowS?: number) {
    const rows = windowS !== undefined && nowS !== undefined ? this.records.filter((r) => r.doneS > nowS - windowS) : this.records;
    const ok = rows.filter((r) => r.ok);
    const lat = ok.map((r) => r.latencyMs);
    return {
      done: rows.length,
      ok: ok.length,
      errors: rows.length - ok.length,
      p50: percentile(lat, 50),
      p95: percentile(lat, 95),
      p99: percentile(lat, 99),
      load: ok.reduce((s, r) => s + r.cost, 0),
    };
  }

  timeline(bucketS: number, endS: number): Bucket[] {
    const n = Math.max(1, Math.ceil(endS / bucketS));
    const buckets = Array.from({ length: n }, () => ({ planned: 0, done: [] as RequestRecord[] }));
    const at = (s: number) => Math.min(n - 1, Math.max(0, Math.floor(s / bucketS)));
    for (const p of this.planned) buckets[at(p)]!.planned++;
    for (const r of this.records) buckets[at(r.doneS)]!.done.push(r);
    return buckets.map((b, i) => {
      const ok = b.done.filter((r) => r.ok);
      const lat = ok.map((r) => r.latencyMs);
      const ttfts = ok.map((r) => r.ttftMs).filter((v): v is number => v !== null);
      return {
        t: i * bucketS,
        offeredRps: b.planned / bucketS,
        completedRps: b.done.length / bucketS,
        okRps: ok.length / bucketS,
        // The run's own drain cancellations are not the target's errors: left out of the plot.
        errorRps: b.done.filter((r) => !r.ok && !r.error.startsWith('DRAINED')).length / bucketS,
        throughput: ok.reduce((s, r) => s + r.cost, 0) / bucketS,
        p50: percentile(lat, 50),
        p95: percentile(lat, 95),
        p99: percentile(lat, 99),
        ttft: ttfts.length ? ttfts.reduce((a, c) => a + c, 0) / ttfts.length : Number.NaN,
      };
    });
  }

  /** Write requests.csv, timeline.csv and plot.svg into `dir`; returns their paths. */
  write(dir: string, opts: { bucketS: number; endS: number; title: string; footer?: string }): { requests: string; timeline: string; plot: string } {
    mkdirSync(dir, { recursive: true });
    const paths = { requests: join(dir, 'requests.csv'), timeline: join(dir, 'timeline.csv'), plot: join(dir, 'plot.svg') };
    const reqHeader = 'id,planned_s,sent_s,done_s,latency_ms,ttft_ms,status,ok,attempts,cost,route,error';
    const reqRows = [...this.records]
      .sort((a, b) => a.id - b.id)
      .map((r) =>
        [
          r.id,
          r.plannedS.toFixed(3),
          r.sentS.toFixed(3),
          r.doneS.toFixed(3),
          r.latencyMs.toFixed(1),
          r.ttftMs === null ? '' : r.ttftMs.toFixed(1),
          r.status,
          r.ok ? 1 : 0,
          r.attempts,
          r.cost,
          csvCell(r.route),
          csvCell(r.error),
        ].join(','),
      );
    writeFileSync(paths.requests, [reqHeader, ...reqRows].join('\n') + '\n');
    const tl = this.timeline(opts.bucketS, opts.endS);
    const num = (v: number, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '');
    const tlRows = tl.map((b) =>
      [
        b.t.toFixed(1),
        num(b.offeredRps, 2),
        num(b.completedRps, 2),
        num(b.okRps, 2),
        num(b.errorRps, 2),
        num(b.throughput),
        num(b.p50),
        num(b.p95),
        num(b.p99),
        num(b.ttft),
      ].join(','),
    );
    writeFileSync(
      paths.timeline,
      ['t_s,offered_rps,completed_rps,ok_rps,error_rps,throughput_load_per_s,p50_ms,p95_ms,p99_ms,ttft_ms', ...tlRows].join('\n') + '\n',
    );
    writeFileSync(paths.plot, plot(tl, opts.title, opts.footer));
    return paths;
  }
}

function csvCell(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Latency over time (top) and throughput over time (bottom), one point per bucket. */
export function plot(tl: Bucket[], title: string, footer?: string): string {
  const x = tl.map((b) => b.t);
  const hasTtft = tl.some((b) => Number.isFinite(b.ttft));
  return renderChart({
    title,
    x,
    xLabel: 'time (s)',
    footer,
    panels: [
      {
        title: 'latency of completed requests',
        yLabel: 'ms',
        series: [
          { name: 'p50', color: '#1f77b4', values: tl.map((b) => b.p50) },
          { name: 'p95', color: '#d62728', values: tl.map((b) => b.p95) },
          ...(hasTtft ? [{ name: 'time to first byte', color: '#2ca02c', values: tl.map((b) => b.ttft), dashed: true }] : []),
        ],
      },
      {
        title: 'throughput',
        yLabel: 'requests/s',
        series: [
          { name: 'offered', color: '#7f7f7f', values: tl.map((b) => b.offeredRps), dashed: true },
          { name: 'completed ok', color: '#1f77b4', values: tl.map((b) => b.okRps) },
          { name: 'errors', color: '#d62728', values: tl.map((b) => b.errorRps) },
        ],
      },
      {
        title: 'served load',
        yLabel: 'load/s',
        series: [{ name: 'load of ok requests', color: '#9467bd', values: tl.map((b) => b.throughput) }],
      },
    ],
  });
}
