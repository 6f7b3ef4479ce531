/**
 * The keys an object schema accepts at a path of a zod (v4) schema, for did-you-mean hints on an
 * unknown field. Looks through defaults, optionals, pipes, arrays, records and unions; an index
 * in the path (`endpoints.0.max_worker`) steps into an array's element.
 */
interface Def {
  type?: string;
  shape?: Record<string, unknown>;
  innerType?: unknown;
  in?: unknown;
  out?: unknown;
  element?: unknown;
  valueType?: unknown;
  options?: unknown[];
  left?: unknown;
  right?: unknown;
}

const defOf = (schema: unknown): Def => ((schema as { _zod?: { def?: Def } })?._zod?.def ?? {}) as Def;

/** The object schemas `schema` may be, once wrappers are removed. */
function objects(schema: unknown, depth = 0): Array<Record<string, unknown>> {
  if (depth > 20) return [];
  const def = defOf(schema);
  if (def.shape) return [def.shape];
  const inner = def.innerType ?? def.in;
  if (inner) return objects(inner, depth + 1);
  if (def.options) return def.options.flatMap((o) => objects(o, depth + 1));
  if (def.left || def.right) return [...objects(def.left, depth + 1), ...objects(def.right, depth + 1)];
  return [];
}

function step(schema: unknown, segment: string, depth = 0): unknown[] {
  if (depth > 20) return [];
  const def = defOf(schema);
  if (/^\d+$/.test(segment) && (def.element || def.innerType || def.in)) {
    if (def.element) return [def.element];
    return step(def.innerType ?? def.in, segment, depth + 1);
  }
  if (def.valueType) return [def.valueType];
  return objects(schema)
    .map((shape) => shape[segment])
    .filter((s) => s !== undefined);
}

export function knownKeysAt(schema: unknown, path: readonly string[]): string[] {
  let current: unknown[] = [schema];
  for (const segment of path) current = current.flatMap((s) => step(s, segment));
  return [...new Set(current.flatMap((s) => objects(s).flatMap((shape) => Object.keys(shape))))];
}
