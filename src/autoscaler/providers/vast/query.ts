/**
 * Vast's offer query language (`gpu_name=RTX_4090 num_gpus=1 reliability>0.98`) turned into the
 * JSON query `POST /api/v0/bundles/` takes (`{"gpu_name":{"eq":"RTX 4090"}, ...}`), with the
 * conversions the Vast CLI applies: `_` in values is a space, true/false are booleans, other
 * values stay strings, `any` drops the filter, RAM is given in GB and sent in MB, durations in
 * days and sent in seconds, driver versions become one number. The emulator evaluates the same
 * JSON with `matchesQuery`.
 */

export type QueryOp = 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte' | 'in' | 'notin';
export type QueryValue = string | number | boolean | Array<string | number | boolean>;
export type OfferQuery = Record<string, Partial<Record<QueryOp, QueryValue>>>;

const OPS: Record<string, QueryOp> = { '=': 'eq', '==': 'eq', '!=': 'neq', '>': 'gt', '>=': 'gte', '<': 'lt', '<=': 'lte', in: 'in', notin: 'notin' };
/** Fields the CLI multiplies: RAM in GB → MB, duration in days → seconds. */
const MULTIPLIER: Record<string, number> = { gpu_ram: 1000, cpu_ram: 1000, duration: 86_400 };
const TERM = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|==|=|>|<|\s(?:notin|in)\s)\s*(\[[^\]]*\]|[^\s[\]]+)/;

/** A query that does not parse; `field` names the bad term. */
export class QueryError extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
  }
}

function convert(field: string, raw: string): string | number | boolean {
  const v = raw.replace(/_/g, ' ');
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (field === 'driver_version') {
    const parts = v.split('.').map((p) => Number(p));
    if (parts.length > 0 && parts.every((p) => Number.isInteger(p) && p >= 0)) {
      const [a = 0, b = 0, c = 0] = parts;
      return a * 1_000_000 + b * 1000 + c;
    }
  }
  const mult = MULTIPLIER[field];
  if (mult !== undefined) {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new QueryError(`${field}: "${raw}" is not a number`, field);
    return n * mult;
  }
  return v;
}

/** Parse a query string; throws QueryError naming the first term it cannot read. */
export function parseQuery(text: string): OfferQuery {
  const out: OfferQuery = {};
  let rest = text.trim();
  while (rest.length > 0) {
    const m = TERM.exec(rest);
    if (!m)
      throw new QueryError(
        `search_params: cannot read "${rest.split(/\s+/)[0]}" (want field<op>value, op one of = != > >= < <= in notin)`,
        rest.split(/[\s=<>!]/)[0] || rest,
      );
    const [whole, field, rawOp, rawValue] = m as unknown as [string, string, string, string];
    const op = OPS[rawOp.trim()]!;
    rest = rest.slice(whole.length).trim();
    if (rawValue === 'any') {
      delete out[field];
      continue;
    }
    let value: QueryValue;
    if (rawValue.startsWith('[')) {
      const items = rawValue
        .slice(1, -1)
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
      value = items.map((s) => convert(field, s));
    } else {
      value = convert(field, rawValue);
    }
    if ((op === 'in' || op === 'notin') !== Array.isArray(value))
      throw new QueryError(`${field}: "${rawOp.trim()}" ${op === 'in' || op === 'notin' ? 'needs a [list]' : 'takes a single value'}`, field);
    out[field] = { ...(out[field] ?? {}), [op]: value };
  }
  return out;
}

/** Turn "4090"-like strings into numbers for comparisons; other values as they are. */
function num(v: unknown): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  return null;
}

function same(a: unknown, b: unknown): boolean {
  const x = num(a);
  const y = num(b);
  if (x !== null && y !== null) return x === y;
  return String(a) === String(b);
}

/** Does `record` satisfy `query`? Fields the record lacks fail every filter on them. */
export function matchesQuery(record: Record<string, unknown>, query: OfferQuery): boolean {
  for (const [field, ops] of Object.entries(query)) {
    const have = record[field];
    for (const [op, want] of Object.entries(ops) as Array<[QueryOp, QueryValue]>) {
      if (have === undefined) return false;
      switch (op) {
        case 'eq':
          if (!same(have, want)) return false;
          break;
        case 'neq':
          if (same(have, want)) return false;
          break;
        case 'in':
          if (!(Array.isArray(want) && want.some((w) => same(have, w)))) return false;
          break;
        case 'notin':
          if (Array.isArray(want) && want.some((w) => same(have, w))) return false;
          break;
        default: {
          const x = num(have);
          const y = num(want);
          if (x === null || y === null) return false;
          if (op === 'gt' && !(x > y)) return false;
          if (op === 'gte' && !(x >= y)) return false;
          if (op === 'lt' && !(x < y)) return false;
          if (op === 'lte' && !(x <= y)) return false;
        }
      }
    }
  }
  return true;
}
