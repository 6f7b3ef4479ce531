import { parseArgs } from 'node:util';

/**
 * Strict command-line parsing shared by every command and script: an unknown flag, a flag missing
 * its value or a stray argument is a UsageError naming it (the command exits 2), never ignored.
 */

/** A flag's kind; `--help`/`-h` is always known. */
export type FlagTypes = Record<string, 'string' | 'boolean'>;

/** Parsed flags by name (string or boolean, as declared) and the positional arguments in `_`. */
export type Flags = Record<string, string | boolean | undefined> & { _: string[] };

/** The command line cannot be run as given; the message names the flag or argument. Exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface ParseFlagsOptions {
  /** Positional arguments allowed (default none). */
  positionals?: boolean;
}

/**
 * Parse `argv` against `types`; throws UsageError on anything else. Every unknown flag, missing
 * value and stray argument is named at once (a first pass over parseArgs' tokens), then
 * parseArgs in strict mode reads the values.
 */
export function parseFlags(argv: string[], types: FlagTypes, opts: ParseFlagsOptions = {}): Flags {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, type] of Object.entries(types)) options[name] = { type };
  const allowPositionals = opts.positionals === true;
  const problems = structuralProblems(argv, options, allowPositionals);
  if (problems.length > 0) throw new UsageError(problems.join('; '));
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals });
    return { ...values, _: positionals } as unknown as Flags;
  } catch (err) {
    throw new UsageError(usageMessage(err as Error & { code?: string }, Object.keys(options)));
  }
}

function structuralProblems(argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>, allowPositionals: boolean): string[] {
  const problems: string[] = [];
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  // The word right after an unknown flag is taken as its value, not reported as a stray argument.
  let unknownAt = -2;
  for (const t of tokens) {
    if (t.kind === 'option') {
      const declared = Object.hasOwn(options, t.name) ? options[t.name] : undefined;
      if (!declared) {
        const near = closest(t.name, Object.keys(options));
        problems.push(`unknown option ${t.rawName}${near ? ` (did you mean --${near}?)` : ''}`);
        if (t.inlineValue !== true) unknownAt = t.index;
      } else if (declared.type === 'string' && t.value === undefined) problems.push(`${t.rawName} needs a value`);
      else if (declared.type === 'boolean' && t.value !== undefined) problems.push(`${t.rawName} takes no value`);
    } else if (t.kind === 'positional' && !allowPositionals && t.index !== unknownAt + 1) problems.push(`unexpected argument ${JSON.stringify(t.value)}`);
  }
  return problems;
}

function usageMessage(err: Error & { code?: string }, known: string[]): string {
  const quoted = /'([^']+)'/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const flag = quoted || err.message;
      const near = closest(flag.replace(/^-+/, '').split('=')[0]!, known);
      return `unknown option ${flag}${near ? ` (did you mean --${near}?)` : ''}`;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const flag = quoted.split(' ')[0] ?? quoted;
      if (/does not take an argument/.test(err.message)) return `${flag} takes no value`;
      if (/ambiguous/.test(err.message)) return `${flag} needs a value (for a value starting with "-", write ${flag}=VALUE)`;
      return `${flag} needs a value`;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${JSON.stringify(quoted)}`;
    default:
      return err.message;
  }
}

/** The known name nearest to a misspelt one (edit distance ≤ 2), for a did-you-mean hint; null when none is that near. */
export function closest(name: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** Print a usage error and where the options are listed; returns exit code 2. */
export function usageFailed(program: string, err: unknown, helpCommand: string): number {
  process.stderr.write(`${program}: ${(err as Error).message}\nRun \`${helpCommand}\` for the options.\n`);
  return 2;
}
