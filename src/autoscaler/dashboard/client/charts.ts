/// <reference lib="dom" />
import uPlot from 'uplot';
import { h } from './dom.js';
import type { SampleColumns, SampleKey } from './frames.js';

/**
 * The four charts of an endpoint, drawn by uPlot from the history columns: load vs capacity,
 * workers by state, queue time p50/p99, rejected load. A new row costs one `setData` per
 * chart (uPlot redraws a canvas; no DOM per point).
 */

interface SeriesSpec {
  key: SampleKey;
  label: string;
  color: string;
  dash?: number[];
}

/** One chart: its title, unit and series. */
export interface ChartSpec {
  id: string;
  title: string;
  unit: string;
  series: SeriesSpec[];
}

export const CHARTS: readonly ChartSpec[] = [
  {
    id: 'load',
    title: 'Load vs capacity',
    unit: 'load/s',
    series: [
      { key: 'load', label: 'load arrived', color: '#2563eb' },
      { key: 'capacity', label: 'ready capacity', color: '#16a34a' },
      { key: 'target', label: 'active target', color: '#ea580c', dash: [6, 4] },
    ],
  },
  {
    id: 'workers',
    title: 'Workers by state',
    unit: 'workers',
    series: [
      { key: 'ready', label: 'ready', color: '#16a34a' },
      { key: 'loading', label: 'loading', color: '#ea580c' },
      { key: 'created', label: 'created', color: '#ca8a04' },
      { key: 'starting', label: 'starting', color: '#9333ea' },
      { key: 'inactive', label: 'inactive', color: '#64748b' },
      { key: 'errored', label: 'errored', color: '#dc2626', dash: [4, 3] },
    ],
  },
  {
    id: 'queue',
    title: 'Queue time (requests routed in the last 10 s)',
    unit: 's',
    series: [
      { key: 'qp50', label: 'p50', color: '#0891b2' },
      { key: 'qp99', label: 'p99', color: '#be123c' },
    ],
  },
  {
    id: 'rejected',
    title: 'Rejected load',
    unit: 'load/s',
    series: [{ key: 'rejected', label: 'rejected', color: '#dc2626' }],
  },
];

const HEIGHT = 190;

/** One uPlot chart in its card; it follows the card's width. */
export class ChartPanel {
  readonly root: HTMLElement;
  private plot: uPlot;
  private points = 0;
  private width: number;
  private readonly observer: ResizeObserver;

  constructor(
    readonly spec: ChartSpec,
    width = 600,
  ) {
    this.width = width;
    const holder = h('div', { class: 'chart-canvas' });
    this.root = h(
      'figure',
      { class: 'chart card', 'data-chart': spec.id },
      h('figcaption', {}, `${spec.title} `, h('span', { class: 'muted' }, `(${spec.unit})`)),
      holder,
    );
    const opts: uPlot.Options = {
      width,
      height: HEIGHT,
      scales: {
        x: { time: true },
        // Zero-based: a flat line at 5 must not look like a spike.
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      series: [
        {},
        ...spec.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.6,
          ...(s.dash ? { dash: s.dash } : {}),
          points: { show: false },
          value: (_u: uPlot, v: number | null) => (v === null || v === undefined ? '–' : String(Math.round(v * 100) / 100)),
        })),
      ],
      axes: [{}, { size: 56 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    this.plot = new uPlot(opts, [[], ...spec.series.map(() => [])], holder);
    // The holder is a block: its width is the card's, whatever the canvas is, so this cannot feed back.
    this.observer = new ResizeObserver((entries) => {
      const w = Math.floor(entries[0]?.contentRect.width ?? 0);
      if (w > 0 && Math.abs(w - this.width) > 1) this.resize(w);
    });
    this.observer.observe(holder);
  }

  /** Draw `cols` (the whole history of the endpoint). */
  setData(cols: SampleColumns | undefined): void {
    const t = (cols?.t ?? []) as number[];
    this.points = t.length;
    this.plot.setData([t, ...this.spec.series.map((s) => cols?.[s.key] ?? [])] as uPlot.AlignedData);
  }

  resize(width: number): void {
    this.width = width;
    this.plot.setSize({ width, height: HEIGHT });
  }

  /** Rows drawn, and the largest value of a series (tests read these). */
  stats(): { points: number; max: Record<string, number | null> } {
    const max: Record<string, number | null> = {};
    this.spec.series.forEach((s, i) => {
      const col = (this.plot.data[i + 1] ?? []) as Array<number | null | undefined>;
      let m: number | null = null;
      for (const v of col) if (typeof v === 'number' && (m === null || v > m)) m = v;
      max[s.key] = m;
    });
    return { points: this.points, max };
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot.destroy();
  }
}
