import { describe, expect, it } from 'vitest';
import { EngineError, workerView, type TransitionEvent } from '../src/autoscaler/registry.js';
import { addTestWorker, endpointCfg, testRegistry } from './helpers/engine-parts.js';

/** The registry alone: the one owner of endpoints, workergroups, workers and ids. */

function engineError(f: () => unknown): EngineError {
  try {
    f();
  } catch (err) {
    if (err instanceof EngineError) return err;
    throw err;
  }
  throw new Error('no EngineError thrown');
}

describe('registry', () => {
  it('numbers endpoints and workergroups once each, and refuses a taken name with 409 naming the field', () => {
    const { reg } = testRegistry();
    const a = reg.addEndpoint(endpointCfg('a'));
    const b = reg.addEndpoint(endpointCfg('b'));
    expect([a.id, b.id]).toEqual([1, 2]);
    expect(reg.workergroupId('a', 'wg')).toBe(1);
    expect(reg.workergroupId('b', 'wg')).toBe(2);
    expect(reg.workergroupById(2)?.endpoint.name).toBe('b');
    const dup = engineError(() => reg.addEndpoint(endpointCfg('a')));
    expect(dup.status).toBe(409);
    expect(dup.fields).toHaveProperty('name');
    const wg = engineError(() => reg.addWorkergroup('a', endpointCfg('a').workergroups[0]!));
    expect(wg.status).toBe(409);
    const gone = engineError(() => reg.removeWorkergroup('a', 'nope'));
    expect([gone.status, Object.keys(gone.fields)]).toEqual([404, ['workergroup']]);
    reg.removeEndpoint('b');
    expect(reg.workergroupById(2)).toBeNull();
    // Ids are never reused: the next endpoint is 3 although 2 is gone.
    expect(reg.addEndpoint(endpointCfg('c')).id).toBe(3);
  });

  it('an update is validated as a whole; a bad value is 400 naming the field and changes nothing', () => {
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a', { max_workers: 4 }));
    const err = engineError(() => reg.updateEndpoint('a', { max_workers: -1 } as never));
    expect(err.status).toBe(400);
    expect(Object.keys(err.fields).join(' ')).toContain('max_workers');
    expect(reg.endpoints.get('a')!.params.max_workers).toBe(4);
    reg.updateEndpoint('a', { max_workers: 9 } as never);
    expect(reg.endpoints.get('a')!.params.max_workers).toBe(9);
  });

  it('allows only the legal moves, emits each with its reason, and never drags a worker back', () => {
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const seen: TransitionEvent[] = [];
    reg.on('transition', (e) => seen.push(e));
    const w = addTestWorker(reg, 'a');
    expect(seen.map((e) => [e.from, e.to])).toEqual([[null, 'created']]);
    expect(reg.transition(w, 'inactive', 'not from created')).toBe(false);
    expect(reg.transition(w, 'loading', 'booted')).toBe(true);
    expect(reg.transition(w, 'errored', 'broke')).toBe(true);
    expect(w.errorMsg).toBe('broke');
    expect(reg.transition(w, 'ready', 'late report')).toBe(false);
    expect(w.state).toBe('errored');
    expect(seen.map((e) => e.to)).toEqual(['created', 'loading', 'errored']);
  });

  it('a ready worker is routable only with a url and a perf, and not while draining', () => {
    const { reg } = testRegistry();
    reg.addEndpoint(endpointCfg('a'));
    const w = addTestWorker(reg, 'a');
    reg.transition(w, 'ready', 'test');
    expect(reg.routable('a')).toEqual([]);
    w.url = 'http://127.0.0.1:9';
    w.maxPerf = 10;
    expect(reg.routable('a').map((r) => r.id)).toEqual([w.id]);
    w.draining = true;
    expect(reg.routable('a')).toEqual([]);
  });

  it('request_idx is one sequence across endpoints; only issued ones are known', () => {
    const { reg } = testRegistry();
    const ids = [reg.allocRequestIdx(), reg.allocRequestIdx(), reg.allocRequestIdx()];
    expect(new Set(ids).size).toBe(3);
    expect(reg.issuedRequestIdx(ids[2]!)).toBe(true);
    expect(reg.issuedRequestIdx(ids[2]! + 1)).toBe(false);
    expect(reg.issuedRequestIdx(0)).toBe(false);
  });

  it('the account key opens every endpoint, another endpoint key does not; views carry no token', () => {
    const { reg } = testRegistry({ accountKey: 'account-key-5678' });
    const a = reg.addEndpoint(endpointCfg('a'));
    reg.addEndpoint(endpointCfg('b'));
    expect(reg.keyOpens(a, 'a-key-1234')).toBe(true);
    expect(reg.keyOpens(a, 'account-key-5678')).toBe(true);
    expect(reg.keyOpens(a, 'b-key-1234')).toBe(false);
    const w = addTestWorker(reg, 'a');
    expect(JSON.stringify(workerView(w))).not.toContain(w.mtoken);
    expect(JSON.stringify(reg.snapshot('test'))).not.toContain(w.mtoken);
  });
});
