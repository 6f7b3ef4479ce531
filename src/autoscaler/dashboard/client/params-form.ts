/// <reference lib="dom" />
import { h, setText } from './dom.js';
import type { EndpointSummary } from './frames.js';

/**
 * An endpoint's state and scaling parameters as a form. Saving sends only the fields that
 * differ from the engine's values to `PATCH /admin/endpoints/:name`, as typed (a number when
 * it reads as one, else the text), so the admin API's own zod validation decides and each
 * message it names lands beside its field. A field being edited is never overwritten by a
 * live update.
 */

/** One line of help per parameter (docs/autoscaler.md, "The policy"). */
const HINTS: Record<string, string> = {
  max_workers: 'hard cap on workers',
  min_load: 'floor of the active target, load/s; 0 allows zero active workers',
  cold_workers: 'workers with the model loaded or loading kept at least',
  cold_mult: 'inactive capacity = long-horizon load × this',
  min_cold_load: 'inactive capacity target, load/s',
  target_util: 'active target = anticipated load / this (0 < x ≤ 1)',
  inactivity_timeout: 's since the last request before zero active; 0 no gate, < 0 never',
  max_queue_time: 's of expected queue a worker may hold before the router skips it',
  target_queue_time: 'observed queue time (s) above which scale-up is aggressive; 0 off',
  queue_order: 'smallest: waiting requests by cost (one that waited 2 × target_queue_time first); arrival: first come first served',
  stable_window: 's of the stable load average',
  panic_window: 's of the panic load average; 0 turns panic off',
  panic_threshold: 'panic when panic demand ≥ this × ready capacity',
  scale_down_delay: 's the target must stay low before a ready worker is stopped',
  release_delay: 's inactive before a worker may be released',
  cold_window: 's of load history sizing the inactive pool',
};

/** The result of a PATCH, as the page's API helper returns it. */
export interface PatchResult {
  status: number;
  body: { error?: string; fields?: Record<string, string> } & Record<string, unknown>;
}

export type PatchEndpoint = (name: string, body: Record<string, unknown>) => Promise<PatchResult>;

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

export class ParamsForm {
  readonly root: HTMLFormElement;
  private readonly inputs = new Map<string, HTMLInputElement | HTMLSelectElement>();
  private readonly errors = new Map<string, HTMLElement>();
  private readonly general: HTMLElement;
  private readonly status: HTMLElement;
  private readonly save: HTMLButtonElement;
  private readonly grid: HTMLElement;
  private server: Record<string, string> = {};

  constructor(
    private readonly endpoint: string,
    private readonly patch: PatchEndpoint,
  ) {
    this.grid = h('div', { class: 'params-grid' });
    this.general = h('p', { class: 'form-error', 'data-field': '(body)', role: 'alert' });
    this.status = h('span', { class: 'form-status muted', role: 'status' });
    this.save = h('button', { type: 'submit' }, 'Save changes');
    const reset = h('button', { type: 'button', class: 'secondary' }, 'Reset');
    reset.addEventListener('click', () => this.resetAll());
    this.root = h(
      'form',
      { class: 'params card', 'data-endpoint': endpoint, novalidate: true, autocomplete: 'off' },
      h('h3', {}, 'Parameters'),
      this.grid,
      this.general,
      h('div', { class: 'form-actions' }, this.save, reset, this.status),
    );
    this.root.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submit();
    });
  }

  /** Show the engine's current values; fields the user is editing keep what they typed. */
  update(ep: EndpointSummary): void {
    const values: Record<string, string> = { state: ep.state };
    for (const [k, v] of Object.entries(ep.params)) values[k] = String(v);
    for (const [name, value] of Object.entries(values)) {
      let input = this.inputs.get(name);
      if (!input) input = this.addField(name, value);
      if (input.dataset.dirty !== '1' && input.value !== value) input.value = value;
    }
    this.server = values;
  }

  private addField(name: string, value: string): HTMLInputElement | HTMLSelectElement {
    let input: HTMLInputElement | HTMLSelectElement;
    if (name === 'state') {
      input = h('select', { name }, ...['active', 'suspended', 'stopped'].map((s) => h('option', { value: s }, s)));
    } else if (name === 'queue_order') {
      input = h('select', { name }, ...['smallest', 'arrival'].map((s) => h('option', { value: s }, s)));
    } else {
      // type=text, not number: the browser must not swallow what it cannot parse; the API says what is wrong.
      input = h('input', { name, type: 'text', inputmode: 'decimal', spellcheck: 'false' });
    }
    input.value = value;
    const mark = () => {
      input.dataset.dirty = input.value !== this.server[name] ? '1' : '';
      input.classList.toggle('dirty', input.dataset.dirty === '1');
    };
    input.addEventListener('input', mark);
    input.addEventListener('change', mark);
    const error = h('small', { class: 'field-error', 'data-field': name, role: 'alert' });
    const hint = name === 'state' ? 'active: managed; suspended: left alone; stopped: all stopped, new requests 503' : (HINTS[name] ?? '');
    this.grid.append(
      h('label', { class: 'field', 'data-field': name }, h('span', { class: 'field-name' }, name), input, error, h('small', { class: 'hint muted' }, hint)),
    );
    this.inputs.set(name, input);
    this.errors.set(name, error);
    return input;
  }

  /** The changed fields, as the admin API will read them. */
  changes(): Record<string, unknown> {
    const body: Record<string, unknown> = {};
    for (const [name, input] of this.inputs) {
      const raw = input.value.trim();
      if (raw === this.server[name]) continue;
      body[name] = name !== 'state' && NUMBER.test(raw) ? Number(raw) : raw;
    }
    return body;
  }

  private clearErrors(): void {
    for (const e of this.errors.values()) setText(e, '');
    for (const input of this.inputs.values()) input.removeAttribute('aria-invalid');
    setText(this.general, '');
  }

  private resetAll(): void {
    for (const [name, input] of this.inputs) {
      input.value = this.server[name] ?? '';
      input.dataset.dirty = '';
      input.classList.remove('dirty');
    }
    this.clearErrors();
    setText(this.status, '');
  }

  private async submit(): Promise<void> {
    const body = this.changes();
    this.clearErrors();
    if (Object.keys(body).length === 0) {
      setText(this.status, 'nothing changed');
      return;
    }
    this.save.disabled = true;
    setText(this.status, 'saving…');
    try {
      const res = await this.patch(this.endpoint, body);
      if (res.status === 200) {
        for (const name of Object.keys(body)) {
          const input = this.inputs.get(name);
          const v = res.body[name];
          if (!input) continue;
          input.dataset.dirty = '';
          input.classList.remove('dirty');
          if (v !== undefined) {
            input.value = String(v);
            this.server[name] = String(v);
          }
        }
        setText(
          this.status,
          `saved: ${Object.entries(body)
            .map(([k, v]) => `${k} = ${String(v)}`)
            .join(', ')}`,
        );
        this.status.className = 'form-status ok';
        return;
      }
      const fields = res.body.fields ?? {};
      const other: string[] = [];
      for (const [field, message] of Object.entries(fields)) {
        const el = this.errors.get(field);
        if (el) {
          setText(el, message);
          this.inputs.get(field)?.setAttribute('aria-invalid', 'true');
        } else other.push(`${field}: ${message}`);
      }
      setText(
        this.general,
        [res.body.error && other.length === 0 && Object.keys(fields).length === 0 ? res.body.error : '', ...other].filter(Boolean).join('; '),
      );
      setText(this.status, `not saved (${res.status}${res.body.error ? `: ${res.body.error}` : ''})`);
      this.status.className = 'form-status bad';
    } catch (err) {
      setText(this.general, `request failed: ${(err as Error).message}`);
      setText(this.status, 'not saved');
      this.status.className = 'form-status bad';
    } finally {
      this.save.disabled = false;
    }
  }
}
