import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Journal } from '../src/autoscaler/journal.js';
import { EngineStore, IDX_RESERVE } from '../src/autoscaler/store.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/** The store alone: a registry saved to a real journal file and restored into a fresh registry. */

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function journalPath(): string {
  const d = mkdtempSync(join(tmpdir(), 'store-'));
  dirs.push(d);
  return join(d, 'state.jsonl');
}

describe('store', () => {
  it('restores endpoints, workers, pending requests and counters into a fresh registry', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const w = addTestWorker(reg, 'a');
    reg.transition(w, 'loading', 'test');
    const ep = reg.endpoints.get('a')!;
    ep.router.submit(reg.allocRequestIdx(), 100, 60);
    const j = new Journal(path);
    new EngineStore(reg, j).save(false);
    j.close();

    const fresh = testRegistry();
    const j2 = new Journal(path);
    const out = new EngineStore(fresh.reg, j2).restore();
    j2.close();
    expect(out).toEqual({ endpoints: 1, workers: 1, requests: 1 });
    const back = fresh.reg.workers.get(w.id)!;
    expect([back.state, back.mtoken]).toEqual(['loading', w.mtoken]);
    expect(fresh.reg.endpoints.get('a')!.apiKey).toBe('a-key-1234');
    // An unclean stop reserves request ids ahead: none issued before the crash is issued again.
    expect(fresh.reg.next.requestIdx).toBe(IDX_RESERVE + 1);
    expect(fresh.reg.allocWorkerId()).toBe(w.id + 1);
  });

  it('a final save reserves nothing ahead; deleted workers leave the journal', () => {
    const path = journalPath();
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const a = addTestWorker(reg, 'a');
    addTestWorker(reg, 'a');
    reg.allocRequestIdx();
    const j = new Journal(path);
    const store = new EngineStore(reg, j);
    store.save(false);
    reg.workers.delete(a.id);
    store.save(true);
    j.close();
    const fresh = testRegistry();
    const j2 = new Journal(path);
    new EngineStore(fresh.reg, j2).restore();
    j2.close();
    expect([...fresh.reg.workers.keys()]).toEqual([2]);
    expect(fresh.reg.next.requestIdx).toBe(2);
    expect(fresh.reg.next.worker).toBe(3);
  });
});
