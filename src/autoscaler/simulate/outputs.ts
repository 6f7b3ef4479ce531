import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORKER_STATES } from '../states.js';
import type { SimulationResult, TimelineRow } from './run.js';
import { renderChart } from './svg.js';
import { TRACE_ATTRIBUTION } from './trace.js';

/** Files a simulation run writes into its output directory. */
export interface SimulationFiles {
  report: string;
  timeline: string;
  plot: string;
}

/** The timeline as CSV: one row per sample, workers per state as columns. */
export function timelineCsv(rows: readonly TimelineRow[]): string {
  const header = ['t_s', 'load_per_s', 'ready_capacity', 'queued', 'panicking', ...WORKER_STATES];
  const lines = [header.join(',')];
  for (const r of rows) {
    lines.push([r.t, round(r.load), round(r.readyCapacity), r.queued, r.panicking ? 1 : 0, ...WORKER_STATES.map((s) => r.states[s])].join(','));
  }
  return lines.join('\n') + '\n';
}

/** The plot: load vs ready capacity (panic periods shaded), workers by state, queued requests. */
export function timelineSvg(result: SimulationResult): string {
  const rows = result.timeline;
  const x = rows.map((r) => r.t);
  const bands: Array<[number, number]> = [];
  let from = -1;
  rows.forEach((r, i) => {
    if (r.panicking && from < 0) from = i;
    if (!r.panicking && from >= 0) {
      bands.push([from, i]);
      from = -1;
    }
  });
  if (from >= 0) bands.push([from, rows.length - 1]);
  const rep = result.report;
  return renderChart({
    title: `nodeworker simulate: ${rep.trace.requests} requests, $${rep.cost.dollars.toFixed(2)} (${rep.costRatio.vsFluid}× oracle), queue p99 ${rep.queueTime.p99}s, panic ${rep.panic ? 'on' : 'off'}`,
    x,
    xLabel: 'seconds since the first request',
    footer: `trace: ${TRACE_ATTRIBUTION}`,
    panels: [
      {
        title: 'Load arrived vs ready capacity (load/s)',
        yLabel: 'load/s',
        series: [
          { name: 'load arrived', color: '#1f77b4', values: rows.map((r) => r.load) },
          { name: 'ready capacity', color: '#d62728', values: rows.map((r) => r.readyCapacity) },
        ],
        bands,
        bandLabel: 'panic mode',
      },
      {
        title: 'Workers by state',
        yLabel: 'workers',
        series: [
          { name: 'ready', color: '#2ca02c', values: rows.map((r) => r.states.ready) },
          { name: 'inactive', color: '#7f7f7f', values: rows.map((r) => r.states.inactive) },
          { name: 'created+loading', color: '#ff7f0e', values: rows.map((r) => r.states.created + r.states.loading) },
          { name: 'starting', color: '#9467bd', values: rows.map((r) => r.states.starting) },
          { name: 'errored', color: '#d62728', values: rows.map((r) => r.states.errored), dashed: true },
        ],
      },
      {
        title: 'Requests waiting in the global queue',
        yLabel: 'requests',
        series: [{ name: 'queued', color: '#8c564b', values: rows.map((r) => r.queued) }],
      },
    ],
  });
}

/** Write report.json, timeline.csv and timeline.svg into `outDir` (created if needed). */
export function writeSimulationOutputs(outDir: string, result: SimulationResult): SimulationFiles {
  mkdirSync(outDir, { recursive: true });
  const files: SimulationFiles = {
    report: join(outDir, 'report.json'),
    timeline: join(outDir, 'timeline.csv'),
    plot: join(outDir, 'timeline.svg'),
  };
  writeFileSync(files.timeline, timelineCsv(result.timeline));
  writeFileSync(files.plot, timelineSvg(result));
  writeFileSync(files.report, JSON.stringify({ ...result.report, files }, null, 2) + '\n');
  return files;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
