import { errorBody } from '../common/protocol.js';
import { fieldErrors } from './params.js';
import type { EndpointRuntime, Registry, WorkerRecord } from './registry.js';
import { saturatedInterval } from './perf-model.js';
import { round, sameSecret } from './registry.js';
import type { RequestEntry } from './router.js';
import {
  deleteRequestsSchema,
  endpointWorkersSchema,
  fail,
  routeBodySchema,
  workerStatusSchema,
  type DeleteRequestsBody,
  type Outcome,
  type RouteBody,
  type WorkerStatusReport,
} from './wire.js';

/**
 * The protocol answers (PROTOCOL §3, §4, §9): `/route/`, `/worker_status/`, `/delete_requests/`
 * and `/get_endpoint_workers/`, answered from the registry. Like Knative's activator it routes and
 * records but decides no scaling: the two moves a report can trigger (stop a worker whose drain
 * just ended, probe a worker a client gave up on) are the scaler's, reached through `hooks`.
 *
 * A report is accepted only with the MASTER_TOKEN the engine issued to that worker.
 */

export interface ProtocolHooks {
  /** A draining worker may just have become idle: stop it if so. */
  finishDrain(w: WorkerRecord): void;
  /** A client re-routed away from worker `id`: check it now rather than after stale_after_seconds. */
  checkFailedWorker(id: number): void;
}

const LOAD_AVG_ALPHA = 0.2;

export class Protocol {
  constructor(
    private readonly reg: Registry,
    private readonly hooks: ProtocolHooks,
  ) {}

  /** `POST /route/`: a worker for a request, or its place in the queue. */
  route(raw: unknown): Outcome {
    const reg = this.reg;
    const parsed = routeBodySchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /route/ body', fieldErrors(parsed.error)) };
    const body = parsed.data;
    const ep = reg.endpoints.get(body.endpoint);
    if (!ep) return fail(404, 'endpoint', `no endpoint "${body.endpoint}"`);
    if (!reg.keyOpens(ep, body.api_key)) return fail(401, 'api_key', 'api_key does not match the endpoint');
    const out = this.routeTrusted(ep, body);
    return 'status' in out ? out : this.body(ep, out);
  }

  /**
   * `route` for an in-process caller that is trusted (the simulator): a body already typed and the
   * endpoint already known, so neither the parse nor the key check runs, and the entry itself is
   * the answer (no queue position is counted). The moves on the engine's state are `route`'s.
   */
  routeTrusted(ep: EndpointRuntime, body: Pick<RouteBody, 'cost' | 'request_idx' | 'replay_timeout'>): RequestEntry | Outcome {
    const reg = this.reg;
    let entry: RequestEntry | undefined;
    if (body.request_idx === 0) {
      if (ep.state === 'stopped') return fail(503, 'endpoint', 'endpoint is stopped');
      const now = reg.clock.now();
      ep.history.add(now, body.cost);
      ep.lastActivityAt = now;
      entry = ep.router.submit(reg.allocRequestIdx(), body.cost, body.replay_timeout);
    } else {
      if (!reg.issuedRequestIdx(body.request_idx)) return fail(404, 'request_idx', `request_idx ${body.request_idx} was never issued by this engine`);
      entry = ep.router.get(body.request_idx);
      // request_idx is one sequence across endpoints: another endpoint's live request is not this client's to re-route.
      if (!entry && this.ownedElsewhere(ep, body.request_idx)) return fail(404, 'request_idx', `request_idx ${body.request_idx} belongs to another endpoint`);
      if (entry && entry.state !== 'routed') {
        // A poll: the client is still there, so its replay_timeout starts over.
        ep.router.touch(entry, body.replay_timeout);
        if (entry.state === 'queued') ep.router.drain();
      } else if (entry && !entry.delivered) {
        // Routed from the queue since the last poll (back in line if its worker left meanwhile).
        entry = ep.router.reroute(body.request_idx, body.cost, body.replay_timeout).entry;
      } else {
        // Routed before (or finished, or forgotten): the client's failover after its worker failed it.
        if (!entry && ep.state === 'stopped') return fail(503, 'endpoint', 'endpoint is stopped');
        const out = ep.router.reroute(body.request_idx, body.cost, body.replay_timeout);
        entry = out.entry;
        ep.lastActivityAt = reg.clock.now();
        reg.log.info(
          { event: 'reroute', endpoint: ep.name, request_idx: entry.idx, failed_worker: out.failed, attempts: entry.attempts, to: entry.workerId },
          'request routed again after its worker failed it',
        );
        if (out.failed !== null) this.hooks.checkFailedWorker(out.failed);
      }
    }
    this.deliver(ep, entry);
    return entry;
  }

  private ownedElsewhere(ep: EndpointRuntime, idx: number): boolean {
    for (const other of this.reg.endpoints.values()) if (other !== ep && other.router.get(idx)) return true;
    return false;
  }

  /** The client is given this routing's url: asking again means the worker failed it. */
  private deliver(ep: EndpointRuntime, entry: RequestEntry): void {
    if (entry.state === 'routed' && entry.answer && !entry.delivered) {
      entry.delivered = true;
      ep.router.noteChanged(entry.idx);
    }
  }

  /** The wire answer for `entry` (after `deliver`). */
  private body(ep: EndpointRuntime, entry: RequestEntry): Outcome {
    if (entry.state === 'routed' && entry.answer) return { status: 200, body: entry.answer };
    if (entry.state === 'timed_out') {
      return {
        status: 408,
        body: errorBody(
          `no worker could take the request within replay_timeout (${entry.replayTimeoutMs / 1000} s)`,
          { replay_timeout: 'elapsed while waiting for a worker' },
          { request_idx: entry.idx, status: 'timed_out' },
        ),
      };
    }
    return {
      status: 200,
      body: {
        request_idx: entry.idx,
        status: 'queued',
        endpoint: ep.name,
        cost: entry.cost,
        queue_position: ep.router.position(entry),
        waited: (this.reg.clock.now() - entry.createdAt) / 1000,
      },
    };
  }

  /**
   * The worker a report names, if `mtoken` is its own. Every caller, trusted in-process ones too,
   * compares through the digest helper: one rule for every secret in the source (security.test),
   * and since the secret side's digest is cached it is one SHA-256 per call.
   */
  private authWorker(id: number, mtoken: string, idField: string): Outcome | WorkerRecord {
    const rec = this.reg.workers.get(id);
    if (!rec || rec.state === 'destroyed') return fail(404, idField, `unknown worker ${id}`);
    if (!sameSecret(mtoken, rec.mtoken)) {
      this.reg.log.warn({ event: 'report_refused', worker: id, reason: 'mtoken mismatch' }, 'report with a wrong mtoken refused');
      return fail(401, 'mtoken', 'mtoken does not match the worker');
    }
    return rec;
  }

  /** `POST /worker_status/` (PROTOCOL §4): update the worker, move its state, route waiting requests. */
  workerStatus(raw: unknown): Outcome {
    const parsed = workerStatusSchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /worker_status/ body', fieldErrors(parsed.error)) };
    return this.applyStatus(parsed.data);
  }

  /**
   * `workerStatus` for an in-process worker (the simulated provider): the report is built typed,
   * as the schema would give it, so it is not parsed again. Same moves on the engine's state.
   */
  workerStatusTrusted(r: WorkerStatusReport): Outcome {
    return this.applyStatus(r);
  }

  private applyStatus(r: WorkerStatusReport): Outcome {
    const reg = this.reg;
    const found = this.authWorker(r.id, r.mtoken, 'id');
    if (!('typeKey' in found)) return found;
    const rec = found;
    const now = reg.clock.now();
    const prevAt = rec.lastReportAt;
    rec.lastReportAt = now;
    rec.reports++;
    if (r.url) rec.url = r.url;
    // The previous report's numbers, before this one overwrites them: the interval's start.
    const loadBefore = rec.curLoad;
    const workingBefore = rec.reqsWorking;
    rec.curLoad = Math.max(0, r.cur_load);
    rec.newLoad = Math.max(0, r.new_load);
    rec.curLoadAvg = rec.reports === 1 ? rec.curLoad : rec.curLoadAvg + LOAD_AVG_ALPHA * (rec.curLoad - rec.curLoadAvg);
    rec.reqsWorking = Math.max(0, r.num_requests_working);
    rec.diskUsage += Math.max(0, r.additional_disk_usage);
    rec.rejLoad += Math.max(0, r.rej_load);
    rec.errorMsg = r.error_msg;
    rec.loadtime = r.loadtime;
    if (r.max_perf > 0) rec.maxPerf = r.max_perf;
    const dt = prevAt === null ? 0 : (now - prevAt) / 1000;
    if (dt > 0) {
      rec.curPerf = Math.max(0, r.cur_perf) / dt;
      // Only a saturated interval measures capacity; a busy but demand-limited one never corrects the estimate.
      const saturated = saturatedInterval({
        dt,
        served: Math.max(0, r.cur_perf),
        loadBefore,
        loadAfter: rec.curLoad,
        workingBefore,
        workingAfter: rec.reqsWorking,
        rejected: Math.max(0, r.rej_load),
        believed: reg.perf.estimate(rec.typeKey) ?? rec.maxPerf,
      });
      if (saturated) {
        rec.measuredPerf = rec.measuredPerf === 0 ? rec.curPerf : rec.measuredPerf + 0.2 * (rec.curPerf - rec.measuredPerf);
        reg.perf.addMeasured(rec.typeKey, rec.curPerf);
      }
    }
    rec.lastReportBusy = rec.reqsWorking > 0;
    reg.reported(rec);
    const ep = reg.endpoints.get(rec.endpoint);
    ep?.router.markReported(rec.id, r.working_request_idxs);

    switch (rec.state) {
      case 'created':
      case 'loading':
      case 'starting':
        if (r.error_msg) reg.transition(rec, 'errored', `worker reported: ${r.error_msg}`);
        else if (r.loadtime > 0 && rec.maxPerf > 0) {
          if (!rec.benchmarked) {
            rec.benchmarked = true;
            reg.perf.addBenchmark(rec.typeKey, rec.maxPerf);
          }
          if (rec.state !== 'starting') rec.loadedAt = now;
          rec.startedAt = now;
          reg.transition(
            rec,
            'ready',
            rec.state === 'starting' ? 'started again, model loaded' : `model loaded in ${round(r.loadtime)} s, perf ${round(rec.maxPerf)}`,
          );
        } else if (rec.state === 'created') reg.transition(rec, 'loading', 'first report: model loading');
        break;
      case 'ready':
        if (r.error_msg) reg.transition(rec, 'errored', `worker reported: ${r.error_msg}`);
        break;
      default:
        // inactive/errored: a late report changes numbers only, never the state.
        break;
    }
    ep?.router.drain();
    return { status: 200, body: { ok: true } };
  }

  /** `POST /delete_requests/` (PROTOCOL §4): these request_idxs are over. */
  deleteRequests(raw: unknown): Outcome {
    const parsed = deleteRequestsSchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /delete_requests/ body', fieldErrors(parsed.error)) };
    return this.applyDelete(parsed.data);
  }

  /** `deleteRequests` for an in-process worker: a typed body, not parsed again. */
  deleteRequestsTrusted(b: DeleteRequestsBody): Outcome {
    return this.applyDelete(b);
  }

  private applyDelete(b: DeleteRequestsBody): Outcome {
    const found = this.authWorker(b.worker_id, b.mtoken, 'worker_id');
    if (!('typeKey' in found)) return found;
    const ep = this.reg.endpoints.get(found.endpoint);
    const deleted = ep ? ep.router.complete(found.id, b.request_idxs, b.success) : 0;
    if (found.draining && !found.updatePending) this.hooks.finishDrain(found);
    ep?.router.drain();
    return { status: 200, body: { ok: true, deleted } };
  }

  /** `POST /get_endpoint_workers/` (PROTOCOL §9). */
  endpointWorkers(raw: unknown): Outcome {
    const reg = this.reg;
    const parsed = endpointWorkersSchema.safeParse(raw);
    if (!parsed.success) return { status: 400, body: errorBody('invalid /get_endpoint_workers/ body', fieldErrors(parsed.error)) };
    const { id, api_key } = parsed.data;
    const ep = [...reg.endpoints.values()].find((e) => e.id === id || e.name === id || String(e.id) === id);
    if (!ep) return fail(404, 'id', `no endpoint ${JSON.stringify(id)}`);
    if (!reg.keyOpens(ep, api_key)) return fail(401, 'api_key', 'api_key matches neither the endpoint nor the account');
    // The SDK does float() on every number: unknown times are 0, never null.
    const secs = (ms: number | null) => (ms === null ? 0 : ms / 1000);
    const n = (v: number) => (Number.isFinite(v) ? v : 0);
    const list = reg
      .workersOf(ep.name)
      .filter((w) => w.state !== 'destroyed')
      .map((w) => ({
        id: w.id,
        status: w.state,
        cur_load: n(w.curLoad),
        new_load: n(w.newLoad),
        cur_load_rolling_avg: n(round(w.curLoadAvg)),
        cur_perf: n(round(w.curPerf)),
        perf: n(w.maxPerf),
        measured_perf: n(round(w.measuredPerf)),
        dlperf: n(w.dlperf),
        reliability: w.state === 'errored' ? 0 : Math.max(0, 1 - Math.min(1, ep.router.failureScore(w.id) / 4)),
        reqs_working: Math.round(n(w.reqsWorking)),
        disk_usage: n(w.diskUsage),
        loaded_at: n(secs(w.loadedAt)),
        started_at: n(secs(w.startedAt)),
      }));
    return { status: 200, body: list };
  }
}
