/**
 * The figures of `npm run bench -- --vs nginx` (../vs-nginx.ts) and their table: per row, each
 * target's figure per run, the per-run comparison, and whether the median of the runs meets the
 * row's goal. Kept apart from the runner so it can be judged without starting anything.
 */

/** One row: each target's figure per run, and the ratio worker ÷ nginx (or the difference, in ms). */
export interface VsRow {
  name: string;
  unit: string;
  /** Goal on the comparison: `ratio ≤ goal` (kind 'ratio') or `worker − reference ≤ goal` ms (kind 'added'). */
  kind: 'ratio' | 'added';
  goal: number;
  worker: number[];
  nginx: number[];
  /** Per run: worker ÷ nginx (ratio rows) or worker − nginx (added rows; for TTFB worker − direct). */
  compare: number[];
  /** Extra per-run figures worth printing (req/s, RSS). */
  notes: string[];
}

export interface VsNginxReport {
  date: string;
  cores: number;
  node: string;
  nginxVersion: string;
  workerCli: string;
  runs: number;
  durationS: number;
  loadStart: number;
  loadEnd: number;
  rows: VsRow[];
  pyworker: { rps: number[]; cpuUs: number[] } | null;
}

const median = (xs: number[]) => {
  const s = [...xs].filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–');
const spread = (xs: number[], d = 2) => `${f(Math.min(...xs), d)}–${f(Math.max(...xs), d)}`;

/** Whether a row meets its goal (on the median of its per-run comparisons). */
export function meetsGoal(r: VsRow): boolean {
  return median(r.compare) <= r.goal;
}

/** The report as a markdown table plus a status line per row. */
export function formatVsNginx(r: VsNginxReport): string {
  const lines = [
    `${r.date}: ${r.cores} cores, node ${r.node}, nginx ${r.nginxVersion}; worker: ${r.workerCli}; ${r.runs} runs, ${r.durationS} s loads; load average ${f(r.loadStart, 2)} → ${f(r.loadEnd, 2)}`,
    '',
    '| row | worker (median, spread) | nginx (median, spread) | worker vs nginx: median (spread) | goal | met |',
    '| --- | ---: | ---: | ---: | ---: | :---: |',
  ];
  for (const row of r.rows) {
    const d = row.unit === 'ms' ? 3 : 1;
    const cmp =
      row.kind === 'ratio'
        ? `**${f(median(row.compare), 2)}x** (${spread(row.compare)})`
        : `**${median(row.compare) >= 0 ? '+' : ''}${f(median(row.compare), 3)} ms** (${spread(row.compare, 3)})`;
    const goal = row.kind === 'ratio' ? `≤ ${row.goal}x` : row.name.includes('first byte') ? `≤ ${row.goal} ms added` : `≤ nginx + ${row.goal} ms`;
    lines.push(
      `| ${row.name} | ${f(median(row.worker), d)} ${row.unit} (${spread(row.worker, d)}) | ${f(median(row.nginx), d)} ${row.unit} (${spread(row.nginx, d)}) | ${cmp} | ${goal} | ${meetsGoal(row) ? 'yes' : 'no'} |`,
    );
  }
  if (r.pyworker)
    lines.push(
      `| PyWorker, plain, keep-alive, c=64 | ${f(median(r.pyworker.cpuUs))} µs (${spread(r.pyworker.cpuUs, 1)}), ${f(median(r.pyworker.rps), 0)} req/s | | | | |`,
    );
  lines.push('', 'Per run:');
  for (const row of r.rows) if (row.notes.length) lines.push(`- ${row.name}: ${row.notes.join('; ')}`);
  return lines.join('\n');
}
