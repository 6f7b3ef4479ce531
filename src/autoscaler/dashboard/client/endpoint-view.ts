/// <reference lib="dom" />
import { CHARTS, ChartPanel } from './charts.js';
import { fmt, fmtDuration, h, setText } from './dom.js';
import type { EndpointSummary, SampleColumns, WorkerRow } from './frames.js';
import { ParamsForm, type PatchEndpoint } from './params-form.js';
import { plannedPerfNote } from './planned-perf.js';
import { WorkersView } from './workers-view.js';

/**
 * Everything about one endpoint: headline figures from the policy's last plan, its machine
 * types, its parameters (editable), its charts and its workers.
 */
export class EndpointView {
  readonly root: HTMLElement;
  readonly charts: ChartPanel[];
  readonly workers = new WorkersView();
  private readonly form: ParamsForm;
  private readonly title: HTMLElement;
  private readonly tiles = new Map<string, HTMLElement>();
  private readonly machines: HTMLTableSectionElement;
  private readonly chartGrid: HTMLElement;

  constructor(
    readonly name: string,
    patch: PatchEndpoint,
  ) {
    this.title = h('h2', {});
    const tileGrid = h('div', { class: 'tiles' });
    for (const [key, label] of [
      ['load', 'stable load'],
      ['target', 'active target'],
      ['capacity', 'ready capacity'],
      ['panic', 'panic'],
      ['queue', 'global queue'],
      ['requests', 'requests'],
    ] as const) {
      const value = h('span', { class: 'tile-value' }, '–');
      this.tiles.set(key, value);
      tileGrid.append(h('div', { class: 'tile', 'data-tile': key }, h('span', { class: 'tile-label muted' }, label), value));
    }
    this.machines = h('tbody');
    const machineTable = h(
      'section',
      { class: 'machines card' },
      h('h3', {}, 'Machine types'),
      h(
        'p',
        { class: 'muted small' },
        "Planned perf: load/s the engine counts on per worker of the type, learned from all of the type's workers; each worker's own benchmark is its perf in the workers table.",
      ),
      h(
        'table',
        {},
        h('thead', {}, h('tr', {}, ...['workergroup / type', '$/h', 'storage $/h', 'planned perf (load/s)'].map((c) => h('th', {}, c)))),
        this.machines,
      ),
    );
    this.form = new ParamsForm(name, patch);
    this.chartGrid = h('div', { class: 'charts' });
    this.charts = CHARTS.map((spec) => new ChartPanel(spec));
    this.chartGrid.append(...this.charts.map((c) => c.root));
    this.root = h(
      'article',
      { class: 'endpoint', 'data-endpoint': name },
      h('header', { class: 'endpoint-head' }, this.title, tileGrid),
      this.chartGrid,
      h('div', { class: 'two-col' }, this.form.root, machineTable),
      this.workers.root,
    );
  }

  /** The endpoint's summary changed. */
  updateSummary(ep: EndpointSummary): void {
    this.title.replaceChildren(
      `${ep.name} `,
      h('span', { class: `badge ep-${ep.state}` }, ep.state),
      h('span', { class: 'muted small' }, ` endpoint #${ep.id}`),
    );
    const p = ep.plan;
    const num = (k: string) => (p && typeof p[k] === 'number' ? (p[k] as number) : null);
    setText(this.tiles.get('load')!, `${fmt(num('stableLoad'))} load/s`);
    setText(this.tiles.get('target')!, `${fmt(num('activeTarget'))} load/s`);
    setText(this.tiles.get('capacity')!, `${fmt(num('readyCapacity'))} load/s`);
    // Panic mode is held for a while after the burst that started it: say so when demand is now
    // below ready capacity, instead of a bare "yes (0 load/s)".
    const panicText = () => {
      if (!p) return '–';
      if (!p.panicking) return 'no';
      const demand = num('panicLoad');
      const ready = num('readyCapacity');
      return demand !== null && ready !== null && demand < ready
        ? `held (demand ${fmt(demand)} load/s, below ready ${fmt(ready)})`
        : `yes (demand ${fmt(demand)} load/s)`;
    };
    setText(this.tiles.get('panic')!, panicText());
    setText(this.tiles.get('queue')!, `${ep.queue.waiting} waiting, ${fmtDuration(ep.queue.queueTime)}`);
    const r = ep.requests;
    setText(this.tiles.get('requests')!, `${r.routed ?? 0} routed, ${r.succeeded ?? 0} ok, ${r.failed ?? 0} failed, ${r.timedOut ?? 0} timed out`);
    this.machines.replaceChildren(
      ...ep.workergroups.flatMap((wg) =>
        wg.machine_types.map((m) =>
          h(
            'tr',
            {},
            h('td', {}, `${wg.name} / ${m.name}`),
            h('td', {}, fmt(m.dollars_per_hour, 3)),
            h('td', {}, fmt(m.storage_dollars_per_hour, 3)),
            h('td', { 'data-col': 'planned-perf' }, fmt(m.perf, 0), h('div', { class: 'muted small' }, plannedPerfNote(m))),
          ),
        ),
      ),
    );
    this.form.update(ep);
  }

  updateCharts(cols: SampleColumns | undefined): void {
    for (const c of this.charts) c.setData(cols);
  }

  updateWorkers(workers: WorkerRow[], now: number): void {
    this.workers.update(workers, now);
  }

  destroy(): void {
    for (const c of this.charts) c.destroy();
    this.root.remove();
  }
}
