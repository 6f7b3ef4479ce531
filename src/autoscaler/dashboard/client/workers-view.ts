/// <reference lib="dom" />
import { fmt, fmtDuration, h, setText } from './dom.js';
import { GROUP_ORDER, type WorkerRow, type WorkerStateName } from './frames.js';

/**
 * An endpoint's workers grouped by state, each group a table capped at `CAP` rows until
 * "show all" is pressed. Rows are keyed by worker id and reused: an update touches only the
 * cells whose text changed, and moves a row only when its group or order changed, so 200
 * workers cost a few hundred string comparisons per update.
 */

/** Rows shown per group before "show all". */
export const CAP = 40;

const COLUMNS = ['id', 'machine', 'in state', 'load', 'perf', 'queue', 'reqs', 'loading', 'note'] as const;

interface RowEl {
  tr: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  bar: HTMLProgressElement;
  barText: HTMLSpanElement;
}

interface Group {
  section: HTMLDetailsElement;
  count: HTMLElement;
  tbody: HTMLTableSectionElement;
  more: HTMLButtonElement;
  showAll: boolean;
  shown: number[];
}

export class WorkersView {
  readonly root: HTMLElement;
  private readonly groups = new Map<WorkerStateName, Group>();
  private readonly rows = new Map<number, RowEl>();
  private readonly summary: HTMLElement;
  private last: { workers: WorkerRow[]; now: number } = { workers: [], now: 0 };

  constructor() {
    this.summary = h('p', { class: 'muted workers-summary' });
    this.root = h('section', { class: 'workers card' }, h('h3', {}, 'Workers'), this.summary);
    for (const state of GROUP_ORDER) {
      const count = h('span', { class: 'count' }, '0');
      const tbody = h('tbody');
      const more = h('button', { type: 'button', class: 'more', hidden: true });
      const section = h(
        'details',
        { class: `group state-${state}`, 'data-state-group': state, open: state !== 'destroyed', hidden: true },
        h('summary', {}, h('span', { class: `badge state-${state}` }, state), ' ', count),
        h('table', { class: 'workers-table' }, h('thead', {}, h('tr', {}, ...COLUMNS.map((c) => h('th', {}, c)))), tbody),
        more,
      );
      const group: Group = { section, count, tbody, more, showAll: false, shown: [] };
      more.addEventListener('click', () => {
        group.showAll = !group.showAll;
        this.update(this.last.workers, this.last.now);
      });
      this.groups.set(state, group);
      this.root.append(section);
    }
  }

  /** Show `workers` (one endpoint's) as of engine time `now` (ms). */
  update(workers: WorkerRow[], now: number): void {
    this.last = { workers, now };
    const byState = new Map<WorkerStateName, WorkerRow[]>(GROUP_ORDER.map((s) => [s, []]));
    for (const w of workers) byState.get(w.state)?.push(w);
    const parts: string[] = [];
    const seen = new Set<number>();
    for (const state of GROUP_ORDER) {
      const group = this.groups.get(state)!;
      const list = byState.get(state)!;
      list.sort((a, b) => a.id - b.id);
      if (list.length > 0 && state !== 'destroyed') parts.push(`${list.length} ${state}`);
      group.section.hidden = list.length === 0;
      setText(group.count, String(list.length));
      const visible = group.showAll ? list : list.slice(0, CAP);
      group.more.hidden = list.length <= CAP;
      setText(group.more, group.showAll ? `show the first ${CAP}` : `show all ${list.length}`);
      const ids = visible.map((w) => w.id);
      for (const w of visible) {
        seen.add(w.id);
        this.fill(this.rowFor(w.id), w, now);
      }
      if (!sameIds(ids, group.shown)) {
        group.tbody.replaceChildren(...ids.map((id) => this.rows.get(id)!.tr));
        group.shown = ids;
      }
    }
    // Forget rows no longer shown (gone, or beyond a cap) so the map stays the size of the page.
    for (const id of [...this.rows.keys()]) if (!seen.has(id)) this.rows.delete(id);
    setText(this.summary, parts.length > 0 ? `${workers.filter((w) => w.state !== 'destroyed').length} workers: ${parts.join(', ')}` : 'No workers.');
  }

  private rowFor(id: number): RowEl {
    let r = this.rows.get(id);
    if (r) return r;
    const cells = COLUMNS.map(() => h('td'));
    const bar = h('progress', { max: 1 });
    const barText = h('span', { class: 'muted' });
    cells[7]!.append(bar, ' ', barText);
    const tr = h('tr', { 'data-worker-id': id }, ...cells);
    r = { tr, cells, bar, barText };
    this.rows.set(id, r);
    return r;
  }

  private fill(r: RowEl, w: WorkerRow, now: number): void {
    const c = r.cells;
    setText(c[0]!, String(w.id));
    setText(c[1]!, w.type);
    setText(c[2]!, fmtDuration((now - w.since) / 1000));
    setText(c[3]!, fmt(w.load, 1));
    setText(c[4]!, w.perf > 0 ? fmt(w.perf, 0) + (w.measured > 0 ? ` (${fmt(w.measured, 0)} measured)` : '') : '–');
    setText(c[5]!, w.queue === null ? '–' : `${fmt(w.queue, 2)} s`);
    setText(c[6]!, String(w.reqs));
    const loading = w.loadingFor !== null;
    r.bar.hidden = !loading || w.progress === null;
    if (w.progress !== null && r.bar.value !== w.progress) r.bar.value = w.progress;
    const expected = w.progress !== null && w.progress > 0 && w.loadingFor !== null ? w.loadingFor / w.progress : null;
    setText(
      r.barText,
      !loading
        ? ''
        : w.progress !== null && expected !== null
          ? `${Math.round(w.progress * 100)}% (${fmtDuration(w.loadingFor)} of ~${fmtDuration(expected)})`
          : fmtDuration(w.loadingFor),
    );
    const note = w.error ? w.error : w.draining ? 'draining' : w.reason;
    setText(c[8]!, note);
    if (c[8]!.title !== note) c[8]!.title = note;
    c[8]!.className = w.error ? 'note error' : 'note muted';
    const cls = `state-${w.state}`;
    if (r.tr.className !== cls) r.tr.className = cls;
  }
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
