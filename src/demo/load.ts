import { setMaxListeners } from 'node:events';
import { Serverless, type Endpoint } from '../client/index.js';
import { benchmarkPrompt, promptTokens } from '../common/tokens.js';
import { percentile } from '../common/util.js';

/**
 * The demo's load generator: an open loop (arrivals do not wait for answers, like independent
 * users) whose rate follows a slow wave between a trough and a peak, each request sent the way a
 * real client sends it — `/route/` at the autoscaler (polling while queued), then the worker with
 * the answer as `auth_data` — through `src/client`. It keeps what the status table shows:
 * requests/s offered and served, and latency percentiles over a recent window.
 */
export interface LoadOptions {
  autoscalerUrl: string;
  apiKey: string;
  endpoint: string;
  /** Requests per second at the top of the wave. */
  peakRps: number;
  /** Fraction of the peak at the bottom of the wave (default 0.15). */
  troughFraction?: number;
  /** Seconds of one wave, trough to trough (default 90). */
  periodSeconds?: number;
  /** Tokens each request generates (default 16). */
  maxTokens?: number;
  /** Requests in flight at most; arrivals beyond it are counted as dropped (default 300). */
  maxInflight?: number;
}

/** A finished request: when it ended, how long it took, how it went. */
interface Sample {
  at: number;
  ms: number;
  ok: boolean;
}

/** Counters since the start and a recent window for rates and percentiles. */
export interface LoadStats {
  /** Requests/s the wave asks for now. */
  targetRps: number;
  sent: number;
  ok: number;
  failed: number;
  dropped: number;
  inflight: number;
  /** Over the window: requests/s sent, answered with 2xx, and load/s sent. */
  sentRps: number;
  okRps: number;
  loadPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  /** The most recent failure (no secrets: the client's messages carry none). */
  lastError: string | null;
}

const WINDOW_MS = 10_000;

/** The request rate of the wave at `t` seconds: trough at 0, peak at half a period. */
export function waveRps(t: number, peak: number, troughFraction: number, period: number): number {
  const phase = 0.5 - 0.5 * Math.cos((2 * Math.PI * t) / period);
  return peak * (troughFraction + (1 - troughFraction) * phase);
}

/** A demo request: the benchmark's shape, so the benchmarked perf holds for it. Cost = its workload. */
export function demoPayload(i: number, maxTokens: number): { payload: { model: string; prompt: string; max_tokens: number }; cost: number } {
  const prompt = `Request ${i}: ${benchmarkPrompt(i, 40)}`;
  return { payload: { model: 'demo', prompt, max_tokens: maxTokens }, cost: promptTokens(prompt) + maxTokens };
}

export class LoadGenerator {
  private readonly client: Serverless;
  private readonly ep: Endpoint;
  private readonly ac = new AbortController();
  private readonly inflight = new Set<Promise<void>>();
  private readonly recent: Sample[] = [];
  private readonly sentAt: Array<{ at: number; cost: number }> = [];
  private readonly all: number[] = [];
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;
  private carry = 0;
  private lastTick = 0;
  private n = 0;
  private counts = { sent: 0, ok: 0, failed: 0, dropped: 0 };
  private lastError: string | null = null;

  constructor(private readonly opts: LoadOptions) {
    this.client = new Serverless({ autoscalerUrl: opts.autoscalerUrl, apiKey: opts.apiKey, maxPollInterval: 500, timeout: 60_000 });
    this.ep = this.client.endpoint(opts.endpoint);
    // Every request in flight listens to the one stop signal.
    setMaxListeners((opts.maxInflight ?? 300) + 50, this.ac.signal);
  }

  /** Start sending. */
  start(): void {
    this.startedAt = Date.now();
    this.lastTick = this.startedAt;
    this.timer = setInterval(() => this.tick(), 50);
  }

  private targetRps(now: number): number {
    return waveRps((now - this.startedAt) / 1000, this.opts.peakRps, this.opts.troughFraction ?? 0.15, this.opts.periodSeconds ?? 90);
  }

  private tick(): void {
    const now = Date.now();
    this.carry += (this.targetRps(now) * (now - this.lastTick)) / 1000;
    this.lastTick = now;
    while (this.carry >= 1) {
      this.carry -= 1;
      this.fire(now);
    }
  }

  private fire(now: number): void {
    if (this.inflight.size >= (this.opts.maxInflight ?? 300)) {
      this.counts.dropped++;
      return;
    }
    const { payload, cost } = demoPayload(this.n++, this.opts.maxTokens ?? 16);
    this.counts.sent++;
    this.sentAt.push({ at: now, cost });
    const p = this.ep
      .request('/v1/completions', payload, { cost, signal: this.ac.signal })
      .then(
        (r) => this.record(now, r.status >= 200 && r.status < 300),
        (err: Error) => {
          if (this.ac.signal.aborted) return;
          this.lastError = err.message.slice(0, 200);
          this.record(now, false);
        },
      )
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private record(startedAt: number, ok: boolean): void {
    const at = Date.now();
    const ms = at - startedAt;
    if (ok) this.counts.ok++;
    else this.counts.failed++;
    this.recent.push({ at, ms, ok });
    if (ok) this.all.push(ms);
  }

  private trim(now: number): void {
    while (this.recent.length > 0 && now - this.recent[0]!.at > WINDOW_MS) this.recent.shift();
    while (this.sentAt.length > 0 && now - this.sentAt[0]!.at > WINDOW_MS) this.sentAt.shift();
  }

  /** What the status table shows. */
  stats(): LoadStats {
    const now = Date.now();
    this.trim(now);
    const windowS = Math.max(1, Math.min(WINDOW_MS, now - this.startedAt)) / 1000;
    const okMs = this.recent.filter((s) => s.ok).map((s) => s.ms);
    return {
      targetRps: this.timer ? this.targetRps(now) : 0,
      ...this.counts,
      inflight: this.inflight.size,
      sentRps: this.sentAt.length / windowS,
      okRps: okMs.length / windowS,
      loadPerSecond: this.sentAt.reduce((s, e) => s + e.cost, 0) / windowS,
      p50Ms: pct(okMs, 50),
      p99Ms: pct(okMs, 99),
      lastError: this.lastError,
    };
  }

  /** Totals of the whole run (for the closing summary). */
  summary(): { sent: number; ok: number; failed: number; dropped: number; p50Ms: number | null; p99Ms: number | null; seconds: number } {
    return { ...this.counts, p50Ms: pct(this.all, 50), p99Ms: pct(this.all, 99), seconds: (Date.now() - this.startedAt) / 1000 };
  }

  /** Stop sending; requests in flight get `graceMs` to finish, then are abandoned. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const settled = Promise.all(this.inflight);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([settled, new Promise<void>((r) => (t = setTimeout(r, graceMs)))]);
    clearTimeout(t);
    this.ac.abort();
    await settled;
    await this.client.close();
  }
}

function pct(values: number[], p: number): number | null {
  return values.length === 0 ? null : percentile(values, p);
}
