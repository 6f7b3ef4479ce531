/**
 * The invariant checker itself (benchmarks/lib/invariants.ts) must fail on every kind of accounting slip the
 * fault scenarios are meant to catch: a request reported twice, never, with the wrong flag, or one
 * nobody sent; totals that do not add up; reports that lose or double count load.
 */
import { describe, expect, it } from 'vitest';
import {
  checkAccounting,
  checkDeliveries,
  checkReports,
  checkWorkload,
  parseMetrics,
  totalsFromMetrics,
  type ClientRecord,
  type StatusReport,
  type WorkerTotals,
} from '../benchmarks/lib/invariants.js';

const records: ClientRecord[] = [
  { requestIdx: 1, workload: 10, outcome: 'success' },
  { requestIdx: 2, workload: 20, outcome: 'error' },
  { requestIdx: 3, workload: 30, outcome: 'rejected' },
  { requestIdx: 4, workload: 40, outcome: 'refused' },
  { requestIdx: 5, workload: 50, outcome: 'aborted' },
  { requestIdx: 6, workload: 60, outcome: 'aborted' },
];
// 5 was admitted and cancelled; 6 left before admission.
const delivered = [
  { idx: 1, success: true },
  { idx: 2, success: false },
  { idx: 3, success: false },
  { idx: 5, success: true },
];
const totals: WorkerTotals = { received: 80, served: 10, errored: 20, cancelled: 50, rejected: 30, pending: 0, started: 3 };
const report = (over: Partial<StatusReport>): StatusReport => ({
  cur_load: 0,
  rej_load: 0,
  new_load: 0,
  cur_perf: 0,
  num_requests_working: 0,
  num_requests_recieved: 0,
  working_request_idxs: [],
  ...over,
});
const reports = [
  report({ new_load: 30, cur_perf: 10, rej_load: 30, num_requests_recieved: 2, cur_load: 70, num_requests_working: 2, working_request_idxs: [2, 5] }),
  report({ new_load: 0, num_requests_recieved: 1 }),
];

describe('the accounting invariants', () => {
  it('hold for a consistent run', () => {
    expect(checkAccounting({ records, delivered, reports, totals })).toEqual([]);
  });

  it('catch a request delivered twice, never, with the wrong flag, or unknown', () => {
    expect(checkDeliveries(records, [...delivered, { idx: 1, success: true }])).toEqual(['request_idx 1 (success) delivered 2 times']);
    expect(
      checkDeliveries(
        records,
        delivered.filter((d) => d.idx !== 2),
      )[0],
    ).toMatch(/request_idx 2 .*never delivered/);
    expect(
      checkDeliveries(
        records,
        delivered.map((d) => (d.idx === 1 ? { idx: 1, success: false } : d)),
      )[0],
    ).toMatch(/request_idx 1 .*success=false/);
    expect(checkDeliveries(records, [...delivered, { idx: 4, success: false }])[0]).toMatch(/request_idx 4 was refused before admission/);
    expect(checkDeliveries(records, [...delivered, { idx: 99, success: true }])).toEqual(['request_idx 99 was delivered but no client sent it']);
    expect(
      checkDeliveries(
        records,
        delivered.map((d) => (d.idx === 5 ? { idx: 5, success: false } : d)),
      )[0],
    ).toMatch(/aborted .* success=false/);
    expect(
      checkDeliveries(
        records,
        delivered.map((d) => (d.idx === 5 ? { idx: 5, success: false } : d)),
        { abortedMayError: true },
      ),
    ).toEqual([]);
  });

  it('catch totals that do not add up or differ from what the clients saw', () => {
    expect(checkWorkload(records, delivered, { ...totals, pending: 5 })[0]).toMatch(/received 80 != served 10 \+ errored 20 \+ cancelled 50 \+ pending 5/);
    expect(checkWorkload(records, delivered, { ...totals, served: 0, cancelled: 60 })).toEqual([]);
    expect(checkWorkload(records, delivered, { ...totals, errored: 0, served: 30 }).join('\n')).toMatch(/errored 0 != workload the clients saw fail 20/);
    expect(checkWorkload(records, delivered, { ...totals, rejected: 0 }).join('\n')).toMatch(/rejected 0/);
  });

  it('catch reports that lose, double or misplace load', () => {
    expect(checkReports([reports[0]!, reports[0]!, reports[1]!], totals).join('\n')).toMatch(/cur_perf over reports 20 != served 10/);
    expect(checkReports([reports[1]!], totals).join('\n')).toMatch(/num_requests_recieved over reports 1 != admitted requests 3/);
    expect(checkReports([reports[1]!, reports[0]!], totals).join('\n')).toMatch(/the last report still shows work/);
    expect(checkReports([report({ new_load: 200, cur_perf: 10, rej_load: 30, num_requests_recieved: 3 })], totals).join('\n')).toMatch(
      /new_load over reports 200 is outside/,
    );
    expect(checkReports([], totals)).toEqual(['no worker_status report was acknowledged']);
  });

  it('read the worker totals from its /metrics text', () => {
    const text = [
      '# HELP nodeworker_workload_total x',
      'nodeworker_workload_total{kind="received"} 80',
      'nodeworker_workload_total{kind="served"} 10',
      'nodeworker_workload_total{kind="errored"} 20',
      'nodeworker_workload_total{kind="cancelled"} 50',
      'nodeworker_workload_total{kind="rejected"} 30',
      'nodeworker_requests_total{route="/v1/completions",outcome="success"} 1',
      'nodeworker_requests_total{route="/v1/completions",outcome="error"} 1',
      'nodeworker_requests_total{route="/v1/completions",outcome="cancelled"} 1',
      'nodeworker_requests_total{route="/v1/completions",outcome="rejected"} 1',
      'nodeworker_requests_total{route="/v1/completions",outcome="invalid"} 4',
      'nodeworker_requests_working 0',
      'nodeworker_current_load 0',
    ].join('\n');
    expect(parseMetrics(text).get('nodeworker_requests_working')).toBe(0);
    expect(totalsFromMetrics(text)).toEqual(totals);
  });
});
