import { managementExtension } from './management.js';
import { metricsExtension, type MetricsExtensionOptions } from './metrics.js';
import { sessionsExtension, type SessionOptions } from './sessions.js';
import type { WorkerExtension } from './worker.js';

/**
 * The optional parts every CLI-started worker runs with: sessions (PROTOCOL §6, with the internal
 * /session/end listener), management (`/pyworker/update`, §7), Prometheus metrics (`/metrics`) and
 * the request log (admission and first byte, keyed by the request id `rid`).
 */
export interface DefaultExtensionOptions {
  sessions?: SessionOptions | false;
  metrics?: Omit<MetricsExtensionOptions, 'sessions'> | false;
  management?: boolean;
  requestLog?: boolean;
}

export function defaultExtensions(opts: DefaultExtensionOptions = {}): WorkerExtension[] {
  const out: WorkerExtension[] = [];
  const sessions = opts.sessions === false ? null : sessionsExtension(opts.sessions);
  if (sessions) out.push(sessions);
  if (opts.management !== false) out.push(managementExtension());
  if (opts.metrics !== false) out.push(metricsExtension({ ...opts.metrics, sessions: sessions ? sessions.store : undefined }));
  if (opts.requestLog !== false) out.push(requestLogExtension());
  return out;
}

/**
 * Debug lines for the middle of a request's life, with the same `rid` the request path logs its
 * end with, so one request can be followed from admission to the end. Never logs auth_data.
 */
export function requestLogExtension(): WorkerExtension {
  return {
    name: 'request-log',
    setup(ctx) {
      const log = ctx.logger;
      // Skip the work entirely unless debug lines are wanted (this runs on the hot path).
      if (!log.isLevelEnabled('debug')) return {};
      return {
        observer: {
          onAdmitted: (e) =>
            log.debug({ rid: e.id, request_idx: e.requestIdx, route: e.route, workload: e.workload, session: e.sessionBound }, 'request admitted'),
          onFirstByte: (e, ms) => log.debug({ rid: e.id, request_idx: e.requestIdx, route: e.route, ms }, 'first byte from the model'),
        },
      };
    },
  };
}
