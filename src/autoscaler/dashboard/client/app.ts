/// <reference lib="dom" />
import { h, setText } from './dom.js';
import { EndpointView } from './endpoint-view.js';
import type { Frame } from './frames.js';
import { DashboardModel, type Change } from './model.js';
import type { PatchResult } from './params-form.js';
import { renderReport } from './report-view.js';
import { readEventStream, type SseEvent } from './sse.js';

/**
 * The page's entry: asks for the admin key once (kept in this tab's sessionStorage only),
 * opens the stream, applies each frame to the model and redraws what it changed. The time
 * each frame takes (parse + apply + DOM, and to the next painted frame) is kept for the
 * browser test in `window.__dashboard`.
 */

const KEY_STORAGE = 'nodeworker.dashboard.adminKey';
const RETRY_MS = 2000;
const KEEP_TIMINGS = 300;

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

/** Per-frame timings, for the browser test and for anyone curious (`__dashboard.stats()` in the console). */
interface Timings {
  frames: number;
  /** ms from receiving a frame to the DOM updated (synchronous work). */
  renderMs: number[];
  /** ms from receiving a frame to the next animation frame (includes style and layout). */
  paintMs: number[];
}

class Dashboard {
  private readonly model = new DashboardModel();
  private view: EndpointView | null = null;
  private selected: string | null = decodeURIComponent(location.hash.slice(1)) || null;
  private abort: AbortController | null = null;
  private key: string | null = sessionStorage.getItem(KEY_STORAGE);
  private tabsKey = '';
  readonly timings: Timings = { frames: 0, renderMs: [], paintMs: [] };

  private readonly conn = byId('conn');
  private readonly clock = byId('clock');
  private readonly lock = byId<HTMLButtonElement>('lock');
  private readonly unlock = byId('unlock');
  private readonly unlockForm = byId<HTMLFormElement>('unlock-form');
  private readonly keyInput = byId<HTMLInputElement>('admin-key');
  private readonly app = byId('app');
  private readonly tabs = byId('tabs');
  private readonly none = byId('no-endpoints');
  private readonly endpointSlot = byId('endpoint');
  private readonly report = byId('report');

  start(): void {
    this.unlockForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const key = this.keyInput.value.trim();
      if (!key) return this.showUnlock('the admin key is required');
      this.key = key;
      this.connect();
    });
    this.lock.addEventListener('click', () => {
      sessionStorage.removeItem(KEY_STORAGE);
      this.key = null;
      this.abort?.abort();
      this.showUnlock('');
    });
    if (this.key) this.connect();
    else this.showUnlock('');
  }

  private showUnlock(message: string): void {
    this.setConn('locked', 'off');
    this.unlock.hidden = false;
    this.app.hidden = true;
    this.lock.hidden = true;
    setText(this.unlock.querySelector('[data-field="admin_key"]')!, message);
    this.keyInput.focus();
  }

  private setConn(text: string, cls: 'on' | 'off' | 'wait'): void {
    setText(this.conn, text);
    this.conn.className = `conn conn-${cls}`;
  }

  private authed(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(path, { ...init, cache: 'no-store', headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${this.key ?? ''}` } });
  }

  private readonly patchEndpoint = async (name: string, body: Record<string, unknown>): Promise<PatchResult> => {
    const res = await this.authed(`/admin/endpoints/${encodeURIComponent(name)}`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = (await res.json().catch(() => ({ error: `HTTP ${res.status}` }))) as PatchResult['body'];
    if (res.status === 401) this.refused();
    return { status: res.status, body: json };
  };

  private refused(): void {
    sessionStorage.removeItem(KEY_STORAGE);
    this.key = null;
    this.abort?.abort();
    this.showUnlock('admin key missing or wrong');
  }

  /** Keep a stream open (reconnecting after a pause) until the key is refused or dropped. */
  private connect(): void {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    const key = this.key!;
    void (async () => {
      while (!abort.signal.aborted) {
        this.setConn('connecting…', 'wait');
        try {
          const end = await readEventStream('/admin/dashboard/stream', key, (e) => this.onEvent(e), abort.signal);
          if (end.status === 401) return this.refused();
          this.setConn(end.status === 200 ? 'stream ended, reconnecting' : `HTTP ${end.status}, retrying`, 'wait');
        } catch {
          if (abort.signal.aborted) return;
          this.setConn('disconnected, retrying', 'off');
        }
        await new Promise((r) => window.setTimeout(r, RETRY_MS));
      }
    })();
  }

  private onEvent(e: SseEvent): void {
    if (e.event !== 'init' && e.event !== 'tick') return;
    const t0 = performance.now();
    const frame = JSON.parse(e.data) as Frame;
    if (frame.kind === 'init') {
      // The stream accepted the key: keep it for this tab.
      sessionStorage.setItem(KEY_STORAGE, this.key!);
      this.unlock.hidden = true;
      this.app.hidden = false;
      this.lock.hidden = false;
      this.keyInput.value = '';
    }
    const change = this.model.apply(frame);
    this.render(change);
    const t1 = performance.now();
    this.setConn('live', 'on');
    this.timings.frames++;
    push(this.timings.renderMs, t1 - t0);
    requestAnimationFrame(() => push(this.timings.paintMs, performance.now() - t0));
  }

  private select(name: string): void {
    this.selected = name;
    history.replaceState(null, '', `#${encodeURIComponent(name)}`);
    this.render(null);
  }

  /** Redraw what `change` touched; null redraws everything (a new selection). */
  private render(change: Change | null): void {
    const m = this.model;
    // A state journal that cannot be written is said here: the engine routes on from memory.
    const store = m.store && !m.store.ok ? ` · STATE NOT SAVED: ${m.store.error ?? 'write failed'} (routing from memory, retrying)` : '';
    setText(this.clock, `engine time ${new Date(m.now).toISOString().replace('T', ' ').slice(0, 19)} · provider ${m.provider}${store}`);
    const names = [...m.endpoints.keys()].sort();
    if (!this.selected || !m.endpoints.has(this.selected)) this.selected = names[0] ?? null;
    this.renderTabs(names);
    this.none.hidden = names.length > 0;

    let fresh = change === null || change.full;
    if (this.view && this.view.name !== this.selected) {
      this.view.destroy();
      this.view = null;
    }
    if (!this.view && this.selected) {
      this.view = new EndpointView(this.selected, this.patchEndpoint);
      this.endpointSlot.replaceChildren(this.view.root);
      fresh = true;
    }
    const name = this.selected;
    if (this.view && name) {
      const ep = m.endpoints.get(name)!;
      if (fresh || change?.endpoints.has(name)) this.view.updateSummary(ep);
      if (fresh || change?.sampled.has(name)) this.view.updateCharts(m.history.get(name));
      this.view.updateWorkers(m.workersOf(name), m.now);
    }
    if (change?.reportChanged) void renderReport(this.report, (p) => this.authed(p)).catch((err: Error) => setText(this.report, `report: ${err.message}`));
  }

  private renderTabs(names: string[]): void {
    const key = names.map((n) => `${n}:${this.model.endpoints.get(n)?.state}:${n === this.selected}`).join('|');
    if (key === this.tabsKey) return;
    this.tabsKey = key;
    this.tabs.replaceChildren(
      ...names.map((n) => {
        const b = h(
          'button',
          { type: 'button', class: 'tab', 'data-endpoint': n, 'aria-selected': String(n === this.selected) },
          n,
          ' ',
          h('span', { class: `badge ep-${this.model.endpoints.get(n)?.state}` }, this.model.endpoints.get(n)?.state ?? ''),
        );
        b.addEventListener('click', () => this.select(n));
        return b;
      }),
    );
  }

  /** For the browser test: render timings, chart contents, what the model holds. */
  hook() {
    return {
      stats: () => ({ ...this.timings, workers: this.model.workers.size, ticks: this.model.ticks, selected: this.selected }),
      chart: (id: string) => this.view?.charts.find((c) => c.spec.id === id)?.stats() ?? null,
    };
  }
}

function push(list: number[], v: number): void {
  list.push(Math.round(v * 100) / 100);
  if (list.length > KEEP_TIMINGS) list.shift();
}

const dashboard = new Dashboard();
(window as unknown as { __dashboard: ReturnType<Dashboard['hook']> }).__dashboard = dashboard.hook();
dashboard.start();
