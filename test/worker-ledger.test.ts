import { describe, expect, it } from 'vitest';
import { Ledger, type RequestEntry } from '../src/worker/ledger.js';

/** Every request_idx waiting for /delete_requests/, by flag. */
function deletes(ledger: Ledger): { ok: number[]; failed: number[] } {
  return { ok: ledger.deleteSucceeded.peek(Infinity), failed: ledger.deleteFailed.peek(Infinity) };
}

function admit(ledger: Ledger, requestIdx: number, workload: number, extra: { sessionBound?: boolean; isSession?: boolean } = {}): RequestEntry {
  const e = ledger.create({ requestIdx, reqnum: requestIdx, workload, route: '/r', ...extra });
  ledger.start(e);
  return e;
}

describe('Ledger: request states', () => {
  it('moves created → started → success and counts it received, pending, then served', () => {
    const ledger = new Ledger();
    const e = ledger.create({ requestIdx: 7, reqnum: 3, workload: 40, route: '/r' });
    expect(e.state).toBe('created');
    expect(ledger.snapshot().counters.received).toBe(0);

    ledger.start(e);
    let s = ledger.snapshot();
    expect(e.state).toBe('started');
    expect(s.counters.received).toBe(40);
    expect(s.workloadPending).toBe(40);
    expect(s.curLoad).toBe(40);
    expect(s.numRequestsWorking).toBe(1);
    expect(s.workingRequestIdxs).toEqual([7]);
    expect(s.numRequestsReceived).toBe(1);

    expect(ledger.end(e, 'success')).toBe(true);
    s = ledger.snapshot();
    expect(e.state).toBe('success');
    expect(s.counters.served).toBe(40);
    expect(s.workloadPending).toBe(0);
    expect(s.curLoad).toBe(0);
    expect(s.workingRequestIdxs).toEqual([]);
    expect(deletes(ledger)).toEqual({ ok: [7], failed: [] });
  });

  it('ends a request exactly once: a second end or a late reject is refused and changes nothing', () => {
    const ledger = new Ledger();
    const e = admit(ledger, 1, 10);
    expect(ledger.end(e, 'cancelled')).toBe(true);
    const before = ledger.snapshot();
    expect(ledger.end(e, 'success')).toBe(false);
    expect(ledger.end(e, 'error')).toBe(false);
    expect(ledger.reject(e)).toBe(false);
    const after = ledger.snapshot();
    expect(after.counters).toEqual(before.counters);
    expect(after.version).toBe(before.version);
    expect(e.state).toBe('cancelled');
    expect(deletes(ledger)).toEqual({ ok: [1], failed: [] });
    expect(ledger.totals.ended).toBe(1);
  });

  it('refuses to end a request that never started, and to start one twice', () => {
    const ledger = new Ledger();
    const e = ledger.create({ requestIdx: 2, reqnum: 2, workload: 5, route: '/r' });
    expect(ledger.end(e, 'success')).toBe(false);
    ledger.start(e);
    ledger.start(e);
    expect(ledger.snapshot().counters.received).toBe(5);
    expect(ledger.snapshot().numRequestsWorking).toBe(1);
  });

  it('queues each ended request_idx once, with success for success/cancelled and failure for error/rejected', () => {
    const ledger = new Ledger();
    ledger.end(admit(ledger, 1, 1), 'success');
    ledger.end(admit(ledger, 2, 1), 'error');
    ledger.end(admit(ledger, 3, 1), 'cancelled');
    ledger.reject(ledger.create({ requestIdx: 4, reqnum: 4, workload: 1, route: '/r' }));
    expect(deletes(ledger)).toEqual({ ok: [1, 3], failed: [2, 4] });
    const c = ledger.snapshot().counters;
    expect(c).toEqual({ received: 3, served: 1, errored: 1, cancelled: 1, rejected: 1 });
  });

  it('keeps session-bound requests out of the working set and the delete lists, but counts their workload', () => {
    const ledger = new Ledger();
    const inSession = admit(ledger, 9, 30, { sessionBound: true });
    expect(ledger.snapshot().numRequestsWorking).toBe(0);
    expect(ledger.snapshot().counters.received).toBe(30);
    expect(ledger.expectedQueueTime()).toBe(0);
    ledger.end(inSession, 'success');
    expect(ledger.snapshot().counters.served).toBe(30);
    expect(deletes(ledger)).toEqual({ ok: [], failed: [] });
  });

  it('counts an open session in cur_load but not in the queue-time estimate', () => {
    const ledger = new Ledger();
    ledger.setMaxPerf(10);
    admit(ledger, 1, 50, { isSession: true });
    admit(ledger, 2, 20);
    expect(ledger.curLoad).toBe(70);
    expect(ledger.workingCount).toBe(2);
    expect(ledger.expectedQueueTime()).toBeCloseTo(2, 10);
  });

  it('divides queued load by max(perf, 1e-5) for the expected queue time', () => {
    const ledger = new Ledger();
    expect(ledger.expectedQueueTime()).toBe(0);
    const e = admit(ledger, 1, 1);
    expect(ledger.expectedQueueTime()).toBeCloseTo(1e5, 5);
    ledger.setMaxPerf(4);
    expect(ledger.expectedQueueTime()).toBeCloseTo(0.25, 10);
    ledger.end(e, 'success');
    expect(ledger.expectedQueueTime()).toBe(0);
  });

  it('tells end listeners about every terminal state once', () => {
    const ledger = new Ledger();
    const seen: string[] = [];
    const off = ledger.onEnd((e, outcome) => seen.push(`${e.requestIdx}:${outcome}`));
    const a = admit(ledger, 1, 1);
    ledger.end(a, 'error');
    ledger.end(a, 'success');
    ledger.reject(ledger.create({ requestIdx: 2, reqnum: 2, workload: 1, route: '/r' }));
    off();
    ledger.end(admit(ledger, 3, 1), 'success');
    expect(seen).toEqual(['1:error', '2:rejected']);
  });
});

describe('Ledger: snapshot and commitReport', () => {
  it('subtracts only what the report carried: increments made while the report was in flight survive', () => {
    const ledger = new Ledger();
    const a = admit(ledger, 1, 10);
    ledger.end(a, 'success');
    admit(ledger, 2, 5); // still working when the report is taken
    const snap = ledger.snapshot();
    expect(snap.counters).toEqual({ received: 15, served: 10, errored: 0, cancelled: 0, rejected: 0 });
    expect(snap.numRequestsReceived).toBe(2);

    // While the report is in flight: more arrives, ends, is rejected.
    const c = admit(ledger, 3, 7);
    ledger.end(c, 'error');
    ledger.reject(ledger.create({ requestIdx: 4, reqnum: 4, workload: 3, route: '/r' }));

    ledger.commitReport(snap);
    const next = ledger.snapshot();
    expect(next.counters).toEqual({ received: 7, served: 0, errored: 7, cancelled: 0, rejected: 3 });
    expect(next.numRequestsReceived).toBe(1);
    // Kept across reports.
    expect(next.workloadPending).toBe(5);
    expect(next.curLoad).toBe(5);
    expect(next.workingRequestIdxs).toEqual([2]);
  });

  it('a report that never got through (no commit) leaves every counter for the next one', () => {
    const ledger = new Ledger();
    ledger.end(admit(ledger, 1, 4), 'cancelled');
    const lost = ledger.snapshot();
    ledger.end(admit(ledger, 2, 6), 'success');
    const s = ledger.snapshot();
    expect(s.counters.received).toBe(10);
    expect(s.counters.cancelled).toBe(4);
    expect(s.counters.served).toBe(6);
    expect(s.numRequestsReceived).toBe(2);
    ledger.commitReport(s);
    expect(ledger.snapshot().counters).toEqual({ received: 0, served: 0, errored: 0, cancelled: 0, rejected: 0 });
    expect(lost.counters.received).toBe(4); // a snapshot is a copy, not a view
  });

  it('committing two snapshots in a row does not subtract twice', () => {
    const ledger = new Ledger();
    ledger.end(admit(ledger, 1, 4), 'success');
    const s1 = ledger.snapshot();
    ledger.commitReport(s1);
    ledger.end(admit(ledger, 2, 6), 'success');
    const s2 = ledger.snapshot();
    expect(s2.counters.served).toBe(6);
    expect(s2.numRequestsReceived).toBe(1);
    ledger.commitReport(s2);
    expect(ledger.snapshot().counters.served).toBe(0);
    expect(ledger.snapshot().numRequestsReceived).toBe(0);
    expect(ledger.totals.served).toBe(10);
  });

  it('bumps the version on every change and only then', () => {
    const ledger = new Ledger();
    const v0 = ledger.version;
    ledger.snapshot();
    expect(ledger.version).toBe(v0);
    const e = admit(ledger, 1, 1);
    const v1 = ledger.version;
    expect(v1).toBeGreaterThan(v0);
    ledger.end(e, 'success');
    expect(ledger.version).toBeGreaterThan(v1);
    const v2 = ledger.version;
    ledger.setMaxPerf(0);
    ledger.setErrorMsg('');
    expect(ledger.version).toBe(v2);
    ledger.setMaxPerf(3);
    ledger.setErrorMsg('boom');
    expect(ledger.version).toBe(v2 + 2);
    expect(ledger.snapshot().maxPerf).toBe(3);
    expect(ledger.snapshot().errorMsg).toBe('boom');
  });

  it('keeps received = served + errored + cancelled + pending over a random run', () => {
    const ledger = new Ledger();
    const live: RequestEntry[] = [];
    let seed = 12345;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 5000; i++) {
      const r = rand();
      if (r < 0.45 || live.length === 0) {
        const e = ledger.create({ requestIdx: i, reqnum: i, workload: 1 + Math.floor(rand() * 100), route: '/r' });
        if (rand() < 0.1) ledger.reject(e);
        else {
          ledger.start(e);
          live.push(e);
        }
      } else {
        const e = live.splice(Math.floor(rand() * live.length), 1)[0]!;
        ledger.end(e, (['success', 'error', 'cancelled'] as const)[Math.floor(rand() * 3)]!);
      }
      if (i % 500 === 0) ledger.commitReport(ledger.snapshot());
    }
    const t = ledger.totals;
    const s = ledger.snapshot();
    expect(t.received).toBe(t.served + t.errored + t.cancelled + s.workloadPending);
    expect(s.numRequestsWorking).toBe(live.length);
    expect(t.ended).toBe(ledger.deleteSucceeded.size + ledger.deleteFailed.size);
    expect(t.requests).toBe(t.ended + live.length);
  });
});
