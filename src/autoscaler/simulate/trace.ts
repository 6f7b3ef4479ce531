import { readFileSync } from 'node:fs';

/**
 * Request traces in the Azure LLM inference trace format (`TIMESTAMP,ContextTokens,GeneratedTokens`,
 * e.g. data/azure-llm-2023-code.csv: Azure Public Dataset, CC-BY 4.0, Patel et al.,
 * "Splitwise", ISCA 2024).
 *
 * Workload of a request = GeneratedTokens + prompt_share × ContextTokens. Decoding costs one
 * model step per generated token, while the prompt is prefilled in large parallel chunks; on
 * current GPUs a prompt token costs roughly a tenth of a generated one, hence the default
 * prompt_share 0.1 (configurable).
 */

export interface TraceRequest {
  /** Seconds since the first request of the trace (already divided by the replay speed). */
  at: number;
  contextTokens: number;
  generatedTokens: number;
  workload: number;
}

export const TRACE_ATTRIBUTION =
  'Azure LLM inference trace 2023 (Azure Public Dataset), CC-BY 4.0: Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024';

/** `2023-11-16 18:17:03.9799600` (any number of fraction digits; UTC assumed) → ms since epoch. */
export function parseTimestamp(s: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(s.trim());
  if (!m) return Number.NaN;
  const [, y, mo, d, h, mi, sec, frac] = m;
  const base = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec));
  return base + (frac ? Number(`0.${frac}`) * 1000 : 0);
}

/**
 * Parse a trace. Rows that do not parse are counted in `skipped`, never fatal; rows are sorted
 * by time; `speed` > 1 compresses time (speed 2 = the same requests in half the time).
 */
export function parseTrace(text: string, opts: { promptShare?: number; speed?: number } = {}): { requests: TraceRequest[]; skipped: number } {
  const promptShare = opts.promptShare ?? 0.1;
  const speed = opts.speed ?? 1;
  if (!(speed > 0)) throw new Error(`speed must be > 0, got ${speed}`);
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? '').split(',').map((h) => h.trim().toLowerCase());
  const iT = header.indexOf('timestamp');
  const iC = header.indexOf('contexttokens');
  const iG = header.indexOf('generatedtokens');
  if (iT < 0 || iC < 0 || iG < 0) throw new Error('trace header must name TIMESTAMP, ContextTokens and GeneratedTokens');
  const raw: Array<{ t: number; c: number; g: number }> = [];
  let skipped = 0;
  for (const line of lines.slice(1)) {
    if (line.trim() === '') continue;
    const cols = line.split(',');
    const t = parseTimestamp(cols[iT] ?? '');
    const c = Number(cols[iC]);
    const g = Number(cols[iG]);
    if (!Number.isFinite(t) || !Number.isFinite(c) || !Number.isFinite(g) || c < 0 || g < 0) {
      skipped++;
      continue;
    }
    raw.push({ t, c, g });
  }
  raw.sort((a, b) => a.t - b.t);
  const t0 = raw[0]?.t ?? 0;
  return {
    requests: raw.map((r) => ({
      at: (r.t - t0) / 1000 / speed,
      contextTokens: r.c,
      generatedTokens: r.g,
      workload: r.g + promptShare * r.c,
    })),
    skipped,
  };
}

/** Read and parse a trace file. */
export function loadTrace(path: string, opts: { promptShare?: number; speed?: number } = {}): { requests: TraceRequest[]; skipped: number } {
  return parseTrace(readFileSync(path, 'utf8'), opts);
}
