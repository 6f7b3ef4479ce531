/**
 * A small hand-written SVG line chart (no plotting package): stacked panels sharing one time
 * axis, each with its own y scale, series as polylines, a legend and tick labels.
 */

export interface Series {
  name: string;
  color: string;
  values: readonly number[];
  /** Dashed line. */
  dashed?: boolean;
}

export interface Panel {
  title: string;
  yLabel: string;
  series: Series[];
  /** Shaded x ranges (e.g. panic periods), as [fromIndex, toIndex). */
  bands?: Array<[number, number]>;
  bandColor?: string;
  bandLabel?: string;
}

export interface ChartOptions {
  title: string;
  /** x value of each point (seconds). */
  x: readonly number[];
  xLabel: string;
  /** A small line under the chart (credits). */
  footer?: string;
  panels: Panel[];
  width?: number;
  panelHeight?: number;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A "nice" tick step for a range (1, 2, 5 × 10^k). */
export function niceStep(range: number, ticks = 5): number {
  if (!(range > 0)) return 1;
  const raw = range / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 ? `${Math.round(v / 100) / 10}k` : String(Math.round(v * 100) / 100));

/** Render the chart as a standalone SVG document. */
export function renderChart(o: ChartOptions): string {
  const width = o.width ?? 1000;
  const ph = o.panelHeight ?? 220;
  const left = 70;
  const right = 170;
  const top = 40;
  const gap = 50;
  const plotW = width - left - right;
  const height = top + o.panels.length * (ph + gap) + (o.footer ? 24 : 10);
  const xMin = o.x[0] ?? 0;
  const xMax = o.x[o.x.length - 1] ?? 1;
  const xs = (v: number) => left + ((v - xMin) / Math.max(xMax - xMin, 1e-9)) * plotW;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`);
  o.panels.forEach((p, pi) => {
    const y0 = top + pi * (ph + gap);
    const all = p.series.flatMap((s) => s.values.filter((v) => Number.isFinite(v)));
    const yMax = Math.max(1e-9, ...all) * 1.05;
    const ys = (v: number) => y0 + ph - (v / yMax) * ph;
    out.push(`<g>`);
    out.push(`<text x="${left}" y="${y0 - 6}" font-weight="bold">${esc(p.title)}</text>`);
    for (const [a, b] of p.bands ?? []) {
      const xa = xs(o.x[a] ?? xMin);
      const xb = xs(o.x[Math.min(b, o.x.length - 1)] ?? xMax);
      out.push(`<rect x="${xa.toFixed(1)}" y="${y0}" width="${Math.max(1, xb - xa).toFixed(1)}" height="${ph}" fill="${p.bandColor ?? '#fde2e2'}"/>`);
    }
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${ph}" fill="none" stroke="#999"/>`);
    const yStep = niceStep(yMax);
    for (let v = 0; v <= yMax; v += yStep) {
      const y = ys(v);
      out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#eee"/>`);
      out.push(`<text x="${left - 5}" y="${(y + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
    }
    const xStep = niceStep(xMax - xMin, 8);
    for (let v = Math.ceil(xMin / xStep) * xStep; v <= xMax; v += xStep) {
      const x = xs(v);
      out.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${y0 + ph}" y2="${y0 + ph + 4}" stroke="#999"/>`);
      out.push(`<text x="${x.toFixed(1)}" y="${y0 + ph + 16}" text-anchor="middle">${fmt(v)}</text>`);
    }
    out.push(`<text transform="translate(${left - 50},${y0 + ph / 2}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}</text>`);
    p.series.forEach((s, si) => {
      const pts: string[] = [];
      s.values.forEach((v, i) => {
        if (Number.isFinite(v) && o.x[i] !== undefined) pts.push(`${xs(o.x[i]!).toFixed(1)},${ys(v).toFixed(1)}`);
      });
      out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.4"${s.dashed ? ' stroke-dasharray="5,3"' : ''} points="${pts.join(' ')}"/>`);
      const ly = y0 + 12 + si * 16;
      out.push(
        `<line x1="${left + plotW + 10}" x2="${left + plotW + 30}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5,3"' : ''}/>`,
      );
      out.push(`<text x="${left + plotW + 35}" y="${ly}">${esc(s.name)}</text>`);
    });
    if (p.bands && p.bands.length > 0 && p.bandLabel) {
      const ly = y0 + 12 + p.series.length * 16;
      out.push(`<rect x="${left + plotW + 10}" y="${ly - 9}" width="20" height="10" fill="${p.bandColor ?? '#fde2e2'}"/>`);
      out.push(`<text x="${left + plotW + 35}" y="${ly}">${esc(p.bandLabel)}</text>`);
    }
    out.push(`</g>`);
  });
  const axisY = top + o.panels.length * (ph + gap) - gap + 34;
  out.push(`<text x="${left + plotW / 2}" y="${axisY}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  if (o.footer) out.push(`<text x="${width / 2}" y="${height - 6}" text-anchor="middle" font-size="9" fill="#555">${esc(o.footer)}</text>`);
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}
