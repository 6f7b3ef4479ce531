/**
 * The dashboard's stylesheet, kept in a module (not a .css file) so the compiled server in
 * dist serves it without a copy step.
 */
export const DASHBOARD_CSS = `
:root {
  --bg: #f5f6f8; --card: #fff; --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb;
  --ok: #16a34a; --bad: #dc2626; --warn: #ea580c;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
main { max-width: 1600px; margin: 0 auto; padding: 12px 24px 40px; }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 18px; margin: 0 0 8px; }
h3 { font-size: 15px; margin: 0 0 8px; }
code { background: #eef0f3; padding: 0 4px; border-radius: 3px; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.top { display: flex; align-items: center; gap: 16px; padding: 10px 24px; background: #111827; color: #f9fafb; }
.top .muted { color: #9ca3af; }
.top #lock { margin-left: auto; }
.conn { padding: 2px 8px; border-radius: 10px; font-size: 12px; }
.conn-on { background: #14532d; color: #bbf7d0; }
.conn-wait { background: #78350f; color: #fde68a; }
.conn-off { background: #374151; color: #e5e7eb; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin: 12px 0; }
.unlock { max-width: 560px; }
button { font: inherit; padding: 5px 12px; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
button.secondary, button.more { background: #fff; color: var(--accent); }
button:disabled { opacity: .6; cursor: default; }
.tabs { display: flex; gap: 6px; flex-wrap: wrap; margin-top: 8px; }
.tab { background: #fff; color: var(--ink); border-color: var(--line); }
.tab[aria-selected="true"] { border-color: var(--accent); box-shadow: inset 0 -2px 0 var(--accent); }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600; background: #e5e7eb; color: #374151; vertical-align: middle; }
.badge.ep-active, .badge.state-ready { background: #dcfce7; color: #166534; }
.badge.ep-suspended, .badge.state-inactive { background: #e5e7eb; color: #374151; }
.badge.ep-stopped, .badge.state-errored { background: #fee2e2; color: #991b1b; }
.badge.state-loading, .badge.state-created { background: #ffedd5; color: #9a3412; }
.badge.state-starting { background: #f3e8ff; color: #6b21a8; }
.badge.state-destroyed { background: #f3f4f6; color: #9ca3af; }
.endpoint-head { display: flex; flex-wrap: wrap; align-items: center; gap: 16px; margin-top: 12px; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 6px 10px; min-width: 120px; }
.tile-label { display: block; font-size: 11px; text-transform: uppercase; letter-spacing: .03em; }
.tile-value { font-weight: 600; }
/* minmax(0, 1fr): a canvas must never widen its column (the chart follows the column, not the reverse). */
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 0 16px; }
@media (max-width: 1000px) { .charts { grid-template-columns: minmax(0, 1fr); } }
.chart { margin: 12px 0 0; min-width: 0; overflow: hidden; }
.chart figcaption { font-weight: 600; margin-bottom: 4px; }
.two-col { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; }
@media (max-width: 1000px) { .two-col { grid-template-columns: 1fr; } }
.params-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 8px 14px; }
.field { display: flex; flex-direction: column; gap: 2px; }
.field-name { font-family: ui-monospace, monospace; font-size: 12px; }
.field input, .field select { font: inherit; padding: 4px 6px; border: 1px solid #cbd5e1; border-radius: 5px; }
.field input.dirty, .field select.dirty { border-color: var(--warn); background: #fff7ed; }
.field input[aria-invalid="true"] { border-color: var(--bad); background: #fef2f2; }
.field-error { color: var(--bad); font-weight: 600; min-height: 0; }
.field-error:empty { display: none; }
.hint { font-size: 11px; }
.form-error { color: var(--bad); font-weight: 600; }
.form-error:empty { display: none; }
.form-actions { display: flex; align-items: center; gap: 10px; margin-top: 10px; }
.form-status.ok { color: var(--ok); }
.form-status.bad { color: var(--bad); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; font-size: 12px; color: var(--muted); }
/* One fixed grid of columns for every state's table, so the ready, inactive, … tables line up. */
.workers-table { table-layout: fixed; min-width: 640px; }
.workers-table th, .workers-table td { overflow: hidden; text-overflow: ellipsis; }
.workers-table th:nth-child(1) { width: 6%; }
.workers-table th:nth-child(2) { width: 14%; }
.workers-table th:nth-child(3) { width: 9%; }
.workers-table th:nth-child(4), .workers-table th:nth-child(5), .workers-table th:nth-child(6), .workers-table th:nth-child(7) { width: 8%; }
.workers-table th:nth-child(8) { width: 11%; }
/* A narrow screen scrolls a wide table inside its group, never the whole page sideways. */
.group { overflow-x: auto; max-width: 100%; }
@media (max-width: 600px) { main { padding: 8px 8px 32px; } }
.note.error { color: var(--bad); }
.group { margin: 8px 0; }
.group > summary { cursor: pointer; font-weight: 600; padding: 4px 0; }
.group .count { color: var(--muted); }
.group progress { width: 70px; vertical-align: middle; }
tr.state-errored td { background: #fef2f2; }
.report-table th { width: 120px; }
.report-table td { white-space: normal; }
/* The planned-perf cell says in words what the figure is; it wraps rather than widen a narrow page. */
.machines { overflow-x: auto; }
.machines th, .machines td[data-col="planned-perf"] { white-space: normal; }
img.timeline { max-width: min(100%, 1100px); margin-top: 10px; border: 1px solid var(--line); border-radius: 6px; }
`;
