import type { Journal } from './journal.js';
import { endpointSchema, fieldErrors } from './params.js';
import type { Registry, WorkerRecord } from './registry.js';
import type { PendingRequest } from './router.js';

/**
 * Persistence of the registry in a journal (see journal.ts): `save` writes what changed since the
 * last save and fsyncs it (every tick, and at close); `restore` takes back an earlier run's state
 * before the config's endpoints are added (an endpoint the journal knows keeps its journal state).
 *
 * request_idx is saved IDX_RESERVE ahead except at close, so after a crash no id is issued twice.
 */

/** request_idx values reserved ahead in the journal, so ids issued just before a crash are never issued again. */
export const IDX_RESERVE = 100_000;

export interface Restored {
  endpoints: number;
  workers: number;
  requests: number;
}

export class EngineStore {
  /** Last JSON saved per journal key: only what changed is written. */
  private saved = new Map<string, string>();

  constructor(
    private readonly reg: Registry,
    readonly journal: Journal,
  ) {}

  /** Write what changed since the last save and fsync it; `final` at close (no id reserved ahead). */
  save(final = false): void {
    const reg = this.reg;
    const store = this.journal;
    const live = new Set<string>();
    const put = (kind: string, id: string, value: unknown) => {
      const key = `${kind}/${id}`;
      live.add(key);
      const json = JSON.stringify(value);
      if (this.saved.get(key) === json) return;
      this.saved.set(key, json);
      store.put(kind, id, value);
    };
    const next = reg.next;
    put('meta', 'counters', {
      nextWorkerId: next.worker,
      nextEndpointId: next.endpoint,
      nextWorkergroupId: next.workergroup,
      nextRequestIdx: next.requestIdx + (final ? 0 : IDX_RESERVE - ((next.requestIdx - 1) % IDX_RESERVE)),
    });
    put('meta', 'perf', reg.perf.snapshot());
    for (const ep of reg.endpoints.values()) {
      put('endpoint', ep.name, {
        id: ep.id,
        createdAt: ep.createdAt,
        lastActivityAt: ep.lastActivityAt,
        config: { name: ep.name, api_key: ep.apiKey, state: ep.state, ...ep.params, workergroups: [...ep.workergroups.values()] },
        wgIds: Object.fromEntries([...ep.workergroups.keys()].map((wg) => [wg, reg.wgIds.get(`${ep.name}/${wg}`)])),
      });
      put('requests', ep.name, { reqnum: ep.router.lastReqnum(), pending: ep.router.exportPending() });
    }
    for (const w of reg.workers.values()) put('worker', String(w.id), { ...w, probing: false });
    for (const key of [...this.saved.keys()]) {
      if (live.has(key)) continue;
      const slash = key.indexOf('/');
      store.delete(key.slice(0, slash), key.slice(slash + 1));
      this.saved.delete(key);
    }
    store.flush();
  }

  /** Take back the state of an earlier run into the (empty) registry. Returns what was restored. */
  restore(): Restored {
    const reg = this.reg;
    const store = this.journal;
    const out = { endpoints: 0, workers: 0, requests: 0 };
    const counters = store.get('meta', 'counters') as Record<string, number> | undefined;
    for (const [name, raw] of store.all('endpoint')) {
      const rec = raw as { id: number; createdAt: number; lastActivityAt: number | null; config: unknown; wgIds: Record<string, number> };
      const parsed = endpointSchema.safeParse(rec.config);
      if (!parsed.success) {
        reg.log.warn({ event: 'restore_skipped', endpoint: name, fields: fieldErrors(parsed.error) }, 'a remembered endpoint no longer parses: skipped');
        continue;
      }
      const ep = reg.addEndpoint(parsed.data);
      ep.id = rec.id;
      ep.createdAt = rec.createdAt;
      ep.lastActivityAt = rec.lastActivityAt;
      for (const [wg, id] of Object.entries(rec.wgIds ?? {})) if (typeof id === 'number') reg.wgIds.set(`${ep.name}/${wg}`, id);
      const reqs = store.get('requests', name) as { reqnum: number; pending: PendingRequest[] } | undefined;
      if (reqs) {
        ep.router.importPending(reqs.pending, reqs.reqnum);
        out.requests += reqs.pending.length;
      }
      out.endpoints++;
    }
    for (const raw of store.all('worker').values()) {
      const w = raw as WorkerRecord;
      if (!reg.endpoints.has(w.endpoint)) continue;
      reg.workers.set(w.id, { ...w, probing: false, updatePending: w.updatePending ?? false });
      out.workers++;
    }
    const perf = store.get('meta', 'perf') as Record<string, { benchmarks: number; benchmarkMean: number; measured: number; measuredEwma: number }> | undefined;
    // Replayed through the book's own API: n benchmarks of the mean, n measurements of the average.
    for (const [key, k] of Object.entries(perf ?? {})) {
      for (let i = 0; i < k.benchmarks; i++) reg.perf.addBenchmark(key, k.benchmarkMean);
      for (let i = 0; i < k.measured; i++) reg.perf.addMeasured(key, k.measuredEwma);
    }
    const maxId = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), 0);
    const next = reg.next;
    next.worker = Math.max(counters?.nextWorkerId ?? 1, maxId([...reg.workers.keys()]) + 1);
    next.endpoint = Math.max(counters?.nextEndpointId ?? 1, maxId([...reg.endpoints.values()].map((e) => e.id)) + 1);
    next.workergroup = Math.max(counters?.nextWorkergroupId ?? 1, maxId([...reg.wgIds.values()]) + 1);
    next.requestIdx = Math.max(next.requestIdx, counters?.nextRequestIdx ?? 1);
    if (out.endpoints > 0) reg.log.info({ event: 'restored', ...out, next_request_idx: next.requestIdx }, 'engine state restored from the journal');
    return out;
  }
}
