import { seededRandom, type Random } from '../../common/random.js';
import type { EndpointParams } from '../params.js';
import type { TraceRequest } from './trace.js';

/**
 * Traffic the policy was not tuned on, for `simulate --compare` and the tests: synthetic load
 * patterns (step ×4, the first-day pattern, a diurnal ramp, an idle hour) and variants of a real
 * trace (halves, rate-scaled, shuffled gaps, a smoother conversation-like trace). All seeded:
 * the same seed gives the same requests.
 */

/** A named workload, with the parameters it needs (the idle hour allows scaling to zero). */
export interface Workload {
  name: string;
  requests: TraceRequest[];
  params?: Partial<EndpointParams>;
  /** Checks a run of this workload must also pass (the idle hour's wake-up). */
  note?: string;
}

/** Arrivals of a Poisson process whose rate (requests/s) follows `rateAt(t)`, over `seconds`. */
function poisson(rand: Random, seconds: number, rateAt: (t: number) => number, workload: (r: Random) => Request): TraceRequest[] {
  const out: TraceRequest[] = [];
  const peak = Math.max(1e-9, ...Array.from({ length: Math.ceil(seconds) + 1 }, (_, t) => rateAt(t)));
  // Thinning (Lewis–Shedler): candidates at the peak rate, kept in proportion to the rate at their time.
  let t = 0;
  for (;;) {
    t += -Math.log(1 - rand()) / peak;
    if (t >= seconds) break;
    if (rand() * peak > rateAt(t)) continue;
    const { context, generated } = workload(rand);
    out.push({ at: t, contextTokens: context, generatedTokens: generated, workload: generated + 0.1 * context });
  }
  return out;
}

interface Request {
  context: number;
  generated: number;
}

/** Code-completion-like requests: long prompts, short outputs (mean workload ≈ 230). */
function codeRequest(r: Random): Request {
  const context = Math.round(500 + -Math.log(1 - r()) * 1500);
  const generated = Math.max(1, Math.round(-Math.log(1 - r()) * 30));
  return { context, generated };
}

/** Conversation-like requests: shorter prompts, longer outputs (mean workload ≈ 330). */
function chatRequest(r: Random): Request {
  const context = Math.round(200 + -Math.log(1 - r()) * 800);
  const generated = Math.max(1, Math.round(-Math.log(1 - r()) * 230));
  return { context, generated };
}

const MEAN_CODE = 0.1 * 2000 + 30;
const MEAN_CHAT = 0.1 * 1000 + 230;

/** Base load of the synthetic patterns, load/s: about the shipped code trace's hourly mean. */
export const PATTERN_BASE_LOAD = 600;

/** Step ×4: 20 min at the base load, 20 min at four times it, 20 min back. */
export function stepPattern(seed = 11, base = PATTERN_BASE_LOAD): Workload {
  const rate = (t: number) => (t >= 1200 && t < 2400 ? 4 * base : base) / MEAN_CODE;
  return { name: 'step-x4', requests: poisson(seededRandom(seed), 3600, rate, codeRequest) };
}

/** The first day: the expected load, then twice it for 10 min and back for 10 min, three times. */
export function firstDayPattern(seed = 12, base = PATTERN_BASE_LOAD): Workload {
  const rate = (t: number) => (Math.floor(t / 600) % 2 === 1 ? 2 * base : base) / MEAN_CODE;
  return { name: 'first-day-2x', requests: poisson(seededRandom(seed), 3600, rate, codeRequest) };
}

/** A diurnal ramp: from a fifth of the base load up to twice it and back over the hour (a day compressed). */
export function diurnalPattern(seed = 13, base = PATTERN_BASE_LOAD): Workload {
  const rate = (t: number) => (base * (0.2 + 1.8 * Math.sin((Math.PI * t) / 3600) ** 2)) / MEAN_CHAT;
  return { name: 'diurnal', requests: poisson(seededRandom(seed), 3600, rate, chatRequest) };
}

/** Seconds of silence in the idle hour; the wake-up request comes after it. */
export const IDLE_SECONDS = 3600;
/** The idle pattern's inactivity_timeout: zero active workers are allowed this long after the last request. */
export const IDLE_TIMEOUT = 300;

/**
 * An idle hour: 5 min of load, an hour of nothing, then a single request. With min_load 0 and
 * inactivity_timeout 300 the endpoint may scale to zero during the silence and must wake for the last request.
 */
export function idlePattern(seed = 14, base = PATTERN_BASE_LOAD): Workload {
  const rand = seededRandom(seed);
  const requests = poisson(rand, 300, () => base / MEAN_CODE, codeRequest);
  requests.push({ at: 300 + IDLE_SECONDS, contextTokens: 1000, generatedTokens: 50, workload: 150 });
  return { name: 'idle-hour', requests, params: { min_load: 0, inactivity_timeout: IDLE_TIMEOUT }, note: 'scale to zero, then wake' };
}

/** A smoother conversation-like trace: Poisson arrivals, slowly varying rate, longer outputs. */
export function conversationPattern(seed = 15, base = PATTERN_BASE_LOAD): Workload {
  const rate = (t: number) => (base * (1 + 0.5 * Math.sin((2 * Math.PI * t) / 1200))) / MEAN_CHAT;
  return { name: 'conversation-like', requests: poisson(seededRandom(seed), 3600, rate, chatRequest) };
}

/** Requests in [from, to) of a trace, shifted to start at 0. */
export function slice(requests: readonly TraceRequest[], from: number, to: number): TraceRequest[] {
  const part = requests.filter((r) => r.at >= from && r.at < to);
  const t0 = part[0]?.at ?? 0;
  return part.map((r) => ({ ...r, at: r.at - t0 }));
}

/** The trace with time stretched by 1/`factor` (factor 2: twice the rate, bursts half as long). */
export function rateScaled(requests: readonly TraceRequest[], factor: number): TraceRequest[] {
  return requests.map((r) => ({ ...r, at: r.at / factor }));
}

/** The same requests with their inter-arrival gaps shuffled (bursts dissolve, the mean rate stays). */
export function shuffledGaps(requests: readonly TraceRequest[], seed = 16): TraceRequest[] {
  const rand = seededRandom(seed);
  const gaps = requests.slice(1).map((r, i) => r.at - requests[i]!.at);
  for (let i = gaps.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [gaps[i], gaps[j]] = [gaps[j]!, gaps[i]!];
  }
  let t = 0;
  return requests.map((r, i) => {
    if (i > 0) t += gaps[i - 1]!;
    return { ...r, at: t };
  });
}

/** Variants of a real trace that keep its requests but change its timing. */
export function traceVariants(name: string, requests: readonly TraceRequest[]): Workload[] {
  const span = requests.length > 0 ? requests[requests.length - 1]!.at : 0;
  return [
    { name: `${name}:first-half`, requests: slice(requests, 0, span / 2) },
    { name: `${name}:second-half`, requests: slice(requests, span / 2, span + 1) },
    { name: `${name}:rate-x0.5`, requests: rateScaled(requests, 0.5) },
    { name: `${name}:rate-x2`, requests: rateScaled(requests, 2) },
    { name: `${name}:shuffled-gaps`, requests: shuffledGaps(requests) },
  ];
}

/** Seeds of the k-th draw of the patterns differ from the first draw's by k × this. */
export const SEED_STRIDE = 100;

/**
 * The synthetic patterns of the compare table, drawn with the `draw`-th seed (0: the default seeds;
 * each draw gives other Poisson arrivals and request sizes from the same rates).
 */
export function syntheticPatterns(draw = 0): Workload[] {
  const k = draw * SEED_STRIDE;
  return [stepPattern(11 + k), firstDayPattern(12 + k), diurnalPattern(13 + k), idlePattern(14 + k), conversationPattern(15 + k)];
}

/** A pattern by name (for `simulate --pattern`), drawn with the `draw`-th seed. */
export function patternByName(name: string, draw = 0): Workload | undefined {
  return syntheticPatterns(draw).find((p) => p.name === name);
}

/**
 * `simulate --rate K`: K time-shifted copies of `requests` overlaid. Copy 0 is the trace itself; copy
 * c ≥ 1 is rotated by a seeded offset in [0, span) (arrivals past the end wrap to the start), so the
 * copies' bursts fall at different times, as independent users of the same kind would send them. A
 * fractional K thins: the last copy keeps each request with probability frac(K) (K < 1 thins the
 * trace itself). Deterministic for a seed; the result is sorted by time.
 */
export function overlaid(requests: readonly TraceRequest[], rate: number, seed = 17): TraceRequest[] {
  if (!(rate > 0) || !Number.isFinite(rate)) throw new Error(`rate must be a number > 0, got ${rate}`);
  if (rate === 1 || requests.length === 0) return [...requests];
  const rand = seededRandom(seed);
  const span = requests[requests.length - 1]!.at;
  // Wrap on the billed minutes so a copy rotated past the end lands inside the same billing window.
  const period = Math.max(60, Math.ceil(span / 60) * 60);
  const whole = Math.floor(rate);
  const frac = rate - whole;
  const copies = whole + (frac > 1e-9 ? 1 : 0);
  const out: TraceRequest[] = [];
  for (let c = 0; c < copies; c++) {
    const offset = c === 0 ? 0 : rand() * period;
    const keep = c === copies - 1 && frac > 1e-9 ? frac : 1;
    for (const r of requests) {
      // The random draw is made for every request of a thinned copy so the kept set depends only on the seed.
      if (keep < 1 && rand() >= keep) continue;
      let at = r.at + offset;
      if (at >= period) at -= period;
      out.push({ ...r, at });
    }
  }
  out.sort((a, b) => a.at - b.at);
  // Time starts at the first arrival, as a parsed trace does.
  const t0 = out[0]?.at ?? 0;
  if (t0 > 0) for (const r of out) r.at -= t0;
  return out;
}
