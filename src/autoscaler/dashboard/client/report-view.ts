/// <reference lib="dom" />
import { fmt, h } from './dom.js';

/**
 * The last `nodeworker simulate` run: the headline figures of its report.json (cost against
 * the oracle, queue time, requests, workers) and its timeline.svg. Fetched with the admin
 * key whenever the stream says the file changed.
 */

export type AuthedFetch = (path: string) => Promise<Response>;

// biome-ignore lint/suspicious/noExplicitAny: the simulate report is read loosely, field by field, for display only
type Json = Record<string, any>;

function row(label: string, value: string): HTMLTableRowElement {
  return h('tr', {}, h('th', {}, label), h('td', {}, value));
}

/** Render the report (or why there is none) into `root`. */
export async function renderReport(root: HTMLElement, get: AuthedFetch): Promise<void> {
  const res = await get('/admin/dashboard/report');
  const title = h('h3', {}, 'Last simulation');
  const body = (await res.json().catch(() => ({}))) as { dir?: string; report?: Json | null; message?: string; error?: string };
  if (res.status !== 200 || !body.report) {
    root.replaceChildren(title, h('p', { class: 'muted' }, body.message ?? body.error ?? `HTTP ${res.status}`));
    return;
  }
  const { dir, report: r } = body as { dir: string; report: Json };
  const n = (v: unknown, d = 2) => fmt(typeof v === 'number' ? v : null, d);
  const table = h(
    'table',
    { class: 'report-table' },
    row('trace', `${r.trace?.requests ?? '?'} requests over ${n(r.trace?.spanSeconds, 0)} s, speed ${n(r.trace?.speed)}, panic ${r.panic ? 'on' : 'off'}`),
    row('cost', `$${n(r.cost?.dollars, 3)} (${n(r.cost?.gpuHours, 3)} GPU-h, storage $${n(r.cost?.storageDollars, 3)})`),
    row('oracle', `fluid $${n(r.oracle?.fluid?.dollars, 3)}, whole workers $${n(r.oracle?.wholeWorkers?.dollars, 3)} (${r.oracle?.machine ?? '?'})`),
    row('× oracle', `${n(r.costRatio?.vsFluid)} × fluid, ${n(r.costRatio?.vsWholeWorkers)} × whole workers`),
    row('queue time', `p50 ${n(r.queueTime?.p50)} s, p90 ${n(r.queueTime?.p90)} s, p99 ${n(r.queueTime?.p99)} s, max ${n(r.queueTime?.max)} s`),
    row('latency', `p50 ${n(r.latency?.p50)} s, p99 ${n(r.latency?.p99)} s`),
    row(
      'requests',
      `served ${r.requests?.served ?? '?'}, rejected ${r.requests?.rejected ?? '?'}, timed out ${r.requests?.timedOut ?? '?'}, lost ${r.requests?.lost ?? '?'}, unfinished ${r.requests?.unfinished ?? '?'}`,
    ),
    row(
      'workers',
      `recruited ${r.workers?.recruited ?? '?'}, errored ${r.workers?.errored ?? '?'}, max live ${r.workers?.maxLive ?? '?'}; panic episodes ${r.panicEpisodes ?? '?'}`,
    ),
    row('run', `${n(r.simulatedSeconds, 0)} simulated s in ${n(r.wallSeconds)} s`),
  );
  const parts: Node[] = [title, h('p', { class: 'muted' }, `${dir}/report.json`), table];
  if (r.trace?.attribution) parts.push(h('p', { class: 'muted small' }, `Trace: ${String(r.trace.attribution)}`));
  const svg = await get('/admin/dashboard/report/timeline.svg');
  if (svg.status === 200) {
    const url = URL.createObjectURL(await svg.blob());
    const img = h('img', { class: 'timeline', alt: 'simulation timeline: load vs capacity, workers by state, queue', src: url });
    img.addEventListener('load', () => URL.revokeObjectURL(url), { once: true });
    parts.push(img);
  }
  root.replaceChildren(...parts);
}
