import { Agent, request } from 'undici';
import { Serverless, ServerlessError, type Endpoint } from '#nodeworker/client/index.js';
import type { BuiltRequest } from './payloads.js';

/**
 * Where the load goes: an endpoint through the autoscaler (with the client: routing, queueing,
 * retries), or one worker directly (UNSECURED workers only: the auth_data is not signed).
 */
export interface Outcome {
  ok: boolean;
  /** Final HTTP status, or 0 when there was none (connection error, timeout). */
  status: number;
  /** Time to the first byte of a streamed answer, ms (null when not streamed or failed). */
  ttftMs: number | null;
  /** Tries the client made (1 for direct calls). */
  attempts: number;
  /** Short error code or reason when not ok. */
  error: string;
}

export interface Target {
  readonly description: string;
  send(req: BuiltRequest, timeoutMs: number, signal: AbortSignal): Promise<Outcome>;
  close(): Promise<void>;
}

/** Through the autoscaler with the client. */
export function autoscalerTarget(opts: { autoscalerUrl: string; endpoint: string; apiKey: string; maxAttempts?: number }): Target {
  const client = new Serverless({
    autoscalerUrl: opts.autoscalerUrl,
    apiKey: opts.apiKey,
    connections: 1024,
    retry: opts.maxAttempts ? { maxAttempts: opts.maxAttempts } : undefined,
  });
  const ep: Endpoint = client.endpoint(opts.endpoint);
  return {
    description: `endpoint "${opts.endpoint}" via ${opts.autoscalerUrl}`,
    async send(req, timeoutMs, signal) {
      const t0 = performance.now();
      // The last retried failure: when the request ends aborted or out of tries, its real cause
      // (ECONNREFUSED…) is named instead of only ABORTED.
      let lastRetry = '';
      const onRetry = (r: { reason: string }) => {
        lastRetry = r.reason;
      };
      try {
        if (req.stream) {
          const stream = await ep.request(req.route, req.payload, { cost: req.cost, stream: true, timeout: timeoutMs, signal, onRetry });
          let ttft: number | null = null;
          for await (const _ of stream.chunks()) if (ttft === null) ttft = performance.now() - t0;
          return { ok: true, status: stream.status, ttftMs: ttft, attempts: 1, error: '' };
        }
        const r = await ep.request(req.route, req.payload, { cost: req.cost, timeout: timeoutMs, signal, onRetry });
        return { ok: true, status: r.status, ttftMs: null, attempts: r.attempts, error: '' };
      } catch (err) {
        const status = typeof (err as { status?: unknown }).status === 'number' ? (err as { status: number }).status : 0;
        const attempts = Array.isArray((err as { attempts?: unknown }).attempts) ? (err as { attempts: unknown[] }).attempts.length : 1;
        const code = err instanceof ServerlessError ? err.code : shortError(err);
        const cause = systemCode(`${(err as Error)?.message ?? ''} ${lastRetry}`);
        return { ok: false, status, ttftMs: null, attempts, error: cause && cause !== code ? `${code} ${cause}` : code };
      }
    },
    close: () => client.close(),
  };
}

/** Straight to one worker, unsigned (the worker must run with UNSECURED=true). */
export function workerTarget(workerUrl: string): Target {
  const base = workerUrl.replace(/\/+$/, '');
  const agent = new Agent({ connections: 1024, keepAliveTimeout: 30_000 });
  let n = 0;
  return {
    description: `worker ${base} (direct, unsigned)`,
    async send(req, timeoutMs, signal) {
      const idx = ++n;
      const authData = { cost: req.cost, endpoint: 'direct', reqnum: idx, request_idx: idx, signature: '', url: base };
      const t0 = performance.now();
      try {
        const r = await request(base + req.route, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ auth_data: authData, payload: req.payload }),
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        });
        let ttft: number | null = null;
        for await (const _ of r.body) if (ttft === null) ttft = performance.now() - t0;
        const ok = r.statusCode >= 200 && r.statusCode < 300;
        return { ok, status: r.statusCode, ttftMs: req.stream && ok ? ttft : null, attempts: 1, error: ok ? '' : `HTTP ${r.statusCode}` };
      } catch (err) {
        return { ok: false, status: 0, ttftMs: null, attempts: 1, error: shortError(err) };
      }
    },
    close: () => agent.close(),
  };
}

/** A system or undici error code named in a text ("connection refused (ECONNREFUSED)"), if any. */
export function systemCode(text: string): string | null {
  return /\b(E[A-Z]{3,}|UND_ERR_[A-Z_]+)\b/.exec(text)?.[1] ?? null;
}

function shortError(err: unknown): string {
  const code = (err as { code?: unknown })?.code ?? (err as { cause?: { code?: unknown } })?.cause?.code;
  if (typeof code === 'string') return code;
  if ((err as Error)?.name === 'TimeoutError' || (err as Error)?.name === 'AbortError') return 'TIMEOUT';
  return (err as Error)?.message?.slice(0, 60) ?? String(err);
}
