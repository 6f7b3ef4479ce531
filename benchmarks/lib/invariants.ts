/**
 * The accounting invariants every fault scenario, fuzz run and soak must keep (issue 8, point 2),
 * written once and checked against what really crossed the wire:
 *
 * 1. Deliveries: every request the worker admitted (or rejected with 401/429) is named exactly once
 *    in an acknowledged `/delete_requests/`, with `success` true for success and cancelled, false
 *    for error and rejected; a request refused before admission (413/422/410/503) is never named,
 *    and no request_idx the clients never sent appears.
 * 2. Workload: received = served + errored + cancelled + still pending (the worker's own totals),
 *    and those totals match what the clients saw, request by request.
 * 3. Reports: summed over the acknowledged `/worker_status/` posts, `cur_perf` is the served total,
 *    `rej_load` the rejected total, `num_requests_recieved` the number of admitted requests, and
 *    `new_load` lies between received − cancelled and received; the last report shows nothing
 *    working. (Reports carry neither errored nor pending, so the identity itself is checked on
 *    the worker's totals, and the reports are checked against those.)
 *
 * Each check returns a list of problems (empty when the invariant holds), so a test can poll until
 * the worker has caught up and then assert `toEqual([])` with every problem named.
 */

/** What a client saw for one request. */
export type ClientOutcome =
  /** A complete 2xx answer (a stream that ended with its last event). */
  | 'success'
  /** A 5xx answer, or an answer cut off part way (the worker gave up on the model). */
  | 'error'
  /** The client itself gave up before the answer was complete. */
  | 'aborted'
  /** 401 or 429: refused by the ledger, still reported (success=false). */
  | 'rejected'
  /** 4xx before admission (410, 413, 422) or 503 draining: never reaches the ledger. */
  | 'refused';

export interface ClientRecord {
  requestIdx: number;
  workload: number;
  outcome: ClientOutcome;
  status?: number;
}

/** A request_idx as an acknowledged /delete_requests/ carried it. */
export interface Delivery {
  idx: number;
  success: boolean;
}

/** The worker's own workload totals since start (ledger totals, or /metrics). */
export interface WorkerTotals {
  received: number;
  served: number;
  errored: number;
  cancelled: number;
  rejected: number;
  /** Load started and not ended. */
  pending: number;
  /** Requests admitted (started), sessions included; undefined when the source cannot tell. */
  started?: number;
}

/** The fields of a worker_status body these checks read. */
export interface StatusReport {
  cur_load: number;
  rej_load: number;
  new_load: number;
  cur_perf: number;
  num_requests_working: number;
  num_requests_recieved: number;
  working_request_idxs: number[];
}

export interface DeliveryOptions {
  /**
   * An aborted request may also have failed at the model at the same moment (crash, 500), so its
   * flag may be false. Default false: an abort is a cancellation, reported with success=true.
   */
  abortedMayError?: boolean;
}

const EPS = 1e-6;
const near = (a: number, b: number) => Math.abs(a - b) <= EPS * Math.max(1, Math.abs(a), Math.abs(b));

/** Invariant 1: each admitted request_idx delivered exactly once with the right flag. */
export function checkDeliveries(records: readonly ClientRecord[], delivered: readonly Delivery[], opts: DeliveryOptions = {}): string[] {
  const problems: string[] = [];
  const seen = new Map<number, Delivery[]>();
  for (const d of delivered) {
    const list = seen.get(d.idx);
    if (list) list.push(d);
    else seen.set(d.idx, [d]);
  }
  const known = new Set<number>();
  const say = (p: string) => {
    if (problems.length < 20) problems.push(p);
    else if (problems.length === 20) problems.push('… more problems not listed');
  };
  for (const r of records) {
    if (known.has(r.requestIdx)) {
      say(`request_idx ${r.requestIdx} was sent twice by the test (ids must be unique)`);
      continue;
    }
    known.add(r.requestIdx);
    const got = seen.get(r.requestIdx) ?? [];
    if (got.length > 1) {
      say(`request_idx ${r.requestIdx} (${r.outcome}) delivered ${got.length} times`);
      continue;
    }
    const flag = got[0]?.success;
    switch (r.outcome) {
      case 'success':
        if (flag !== true)
          say(`request_idx ${r.requestIdx} succeeded for the client but was ${flag === undefined ? 'never delivered' : 'delivered with success=false'}`);
        break;
      case 'error':
      case 'rejected':
        if (flag !== false)
          say(
            `request_idx ${r.requestIdx} (${r.outcome}, status ${r.status ?? '-'}) was ${flag === undefined ? 'never delivered' : 'delivered with success=true'}`,
          );
        break;
      case 'refused':
        if (flag !== undefined) say(`request_idx ${r.requestIdx} was refused before admission (status ${r.status ?? '-'}) but delivered`);
        break;
      case 'aborted':
        // Admitted or not depends on where the client left; if admitted, it ended as cancelled (or served).
        if (flag === false && !opts.abortedMayError) say(`request_idx ${r.requestIdx} was aborted by its client but delivered with success=false`);
        break;
    }
  }
  for (const idx of seen.keys()) if (!known.has(idx)) say(`request_idx ${idx} was delivered but no client sent it`);
  return problems;
}

/** Invariant 2: the worker's totals add up and match what the clients saw. */
export function checkWorkload(records: readonly ClientRecord[], delivered: readonly Delivery[], t: WorkerTotals, opts: DeliveryOptions = {}): string[] {
  const problems: string[] = [];
  if (!near(t.received, t.served + t.errored + t.cancelled + t.pending)) {
    problems.push(`received ${t.received} != served ${t.served} + errored ${t.errored} + cancelled ${t.cancelled} + pending ${t.pending}`);
  }
  const flag = new Map(delivered.map((d) => [d.idx, d.success]));
  let ok = 0;
  let failed = 0;
  let rejected = 0;
  let abortedOk = 0;
  let abortedFailed = 0;
  for (const r of records) {
    if (r.outcome === 'success') ok += r.workload;
    else if (r.outcome === 'error') failed += r.workload;
    else if (r.outcome === 'rejected') rejected += r.workload;
    else if (r.outcome === 'aborted' && flag.has(r.requestIdx)) {
      if (flag.get(r.requestIdx)) abortedOk += r.workload;
      else abortedFailed += r.workload;
    }
  }
  if (!near(t.served + t.cancelled, ok + abortedOk)) {
    problems.push(`served ${t.served} + cancelled ${t.cancelled} != workload the clients saw succeed ${ok} + aborted after admission ${abortedOk}`);
  }
  if (!near(t.errored, failed + abortedFailed))
    problems.push(`errored ${t.errored} != workload the clients saw fail ${failed}${opts.abortedMayError ? ` + aborted and failed ${abortedFailed}` : ''}`);
  if (!near(t.rejected, rejected)) problems.push(`rejected ${t.rejected} != workload the clients saw refused with 401/429 ${rejected}`);
  if (!near(t.received, ok + failed + abortedOk + abortedFailed))
    problems.push(`received ${t.received} != workload of every admitted request ${ok + failed + abortedOk + abortedFailed}`);
  return problems;
}

/** Invariant 3: reports summed add up to the worker's totals, and the last one shows nothing working. */
export function checkReports(reports: readonly StatusReport[], t: WorkerTotals): string[] {
  const problems: string[] = [];
  if (reports.length === 0) return ['no worker_status report was acknowledged'];
  let served = 0;
  let rejected = 0;
  let newLoad = 0;
  let started = 0;
  for (const r of reports) {
    served += r.cur_perf;
    rejected += r.rej_load;
    newLoad += r.new_load;
    started += r.num_requests_recieved;
  }
  if (!near(served, t.served)) problems.push(`sum of cur_perf over reports ${served} != served ${t.served}`);
  if (!near(rejected, t.rejected)) problems.push(`sum of rej_load over reports ${rejected} != rejected ${t.rejected}`);
  if (newLoad + EPS < t.received - t.cancelled || newLoad > t.received + EPS) {
    problems.push(`sum of new_load over reports ${newLoad} is outside [received − cancelled, received] = [${t.received - t.cancelled}, ${t.received}]`);
  }
  if (t.started !== undefined && started !== t.started) problems.push(`sum of num_requests_recieved over reports ${started} != admitted requests ${t.started}`);
  const last = reports[reports.length - 1]!;
  if (last.cur_load !== 0 || last.num_requests_working !== 0 || last.working_request_idxs.length !== 0) {
    problems.push(
      `the last report still shows work: cur_load ${last.cur_load}, num_requests_working ${last.num_requests_working}, working_request_idxs [${last.working_request_idxs.slice(0, 10).join(',')}]`,
    );
  }
  return problems;
}

/** Every invariant at once. */
export function checkAccounting(input: {
  records: readonly ClientRecord[];
  delivered: readonly Delivery[];
  reports: readonly StatusReport[];
  totals: WorkerTotals;
  options?: DeliveryOptions;
}): string[] {
  return [
    ...checkDeliveries(input.records, input.delivered, input.options),
    ...checkWorkload(input.records, input.delivered, input.totals, input.options),
    ...checkReports(input.reports, input.totals),
  ];
}

/** A Prometheus text exposition as `name{labels}` → value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

/**
 * A worker's totals from its `/metrics` (nodeworker_workload_total, nodeworker_requests_total).
 * `pending` is the current load, which equals the pending load whenever no request runs inside a
 * session (true in every scenario that uses this).
 */
export function totalsFromMetrics(text: string): WorkerTotals {
  const m = parseMetrics(text);
  const kind = (k: string) => m.get(`nodeworker_workload_total{kind="${k}"}`) ?? 0;
  let started = 0;
  for (const [key, value] of m) {
    if (key.startsWith('nodeworker_requests_total{') && /outcome="(success|error|cancelled)"/.test(key)) started += value;
  }
  started += m.get('nodeworker_requests_working') ?? 0;
  return {
    received: kind('received'),
    served: kind('served'),
    errored: kind('errored'),
    cancelled: kind('cancelled'),
    rejected: kind('rejected'),
    pending: m.get('nodeworker_current_load') ?? 0,
    started,
  };
}

/** A worker's totals from its ledger (in-process workers). */
export function totalsFromLedger(ledger: {
  totals: { received: number; served: number; errored: number; cancelled: number; rejected: number };
  snapshot(): { workloadPending: number };
}): WorkerTotals {
  const t = ledger.totals;
  return {
    received: t.received,
    served: t.served,
    errored: t.errored,
    cancelled: t.cancelled,
    rejected: t.rejected,
    pending: ledger.snapshot().workloadPending,
  };
}
