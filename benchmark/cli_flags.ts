// Command-line flags on top of node:util parseArgs. A command declares each flag once (value
// placeholder, help, default, parser) and gets typed values, its usage text, and one-line
// errors that name the flag and the value, all before it starts any runtime. parseArgs runs
// non-strict so that the errors are ours: its strict messages name no value and no near miss.
import { parseArgs } from 'node:util';

/** A bad command line: one line on stderr, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A flag that takes a value: `parse` turns the text into it or throws (see `bad`). */
export interface ValueFlag<T> {
  /** The value's placeholder in the usage: `N`, `cuda|cpu`. */
  value: string;
  help: string;
  /** How the command defaults, as the usage says it (it may depend on other flags). */
  default?: string;
  parse: (raw: string, flag: string) => T;
}

/** A flag without a value. */
export interface Switch {
  help: string;
}

export type FlagSpecs = Record<string, ValueFlag<unknown> | Switch>;

/** The values a command line gave (absent: not given; the command applies its defaults). */
export type FlagValues<F extends FlagSpecs> = {
  [K in keyof F]?: F[K] extends ValueFlag<infer T> ? T : boolean;
};

/** Positional arguments a command takes, e.g. result files. */
export interface Positionals {
  /** Placeholder in the usage: `[FILE]`, `FILE...`. */
  usage: string;
  help: string;
  min: number;
  max: number;
}

export interface ParsedLine<F extends FlagSpecs> {
  help: boolean;
  values: FlagValues<F>;
  positionals: string[];
}

const quote = (raw: string) => (raw === '' || /\s/.test(raw) ? JSON.stringify(raw) : raw);

/** The error for a value that does not parse: `--iters abc: expected an integer >= 1`. */
export function bad(flag: string, raw: string, expected: string): UsageError {
  return new UsageError(`${flag} ${quote(raw)}: ${expected}`);
}

const isValueFlag = (f: ValueFlag<unknown> | Switch): f is ValueFlag<unknown> => 'parse' in f;

/** Edit distance, for the "did you mean" of a mistyped flag. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

function nearest(name: string, known: string[]): string {
  const best = known.map((k) => ({ k, d: distance(name, k) })).sort((x, y) => x.d - y.d)[0];
  return best && best.d <= 2 ? ` (did you mean --${best.k}?)` : '';
}

/** Parses `argv` against `flags`; `--help`/`-h` anywhere wins over every other check. */
export function parseFlags<F extends FlagSpecs>(
  argv: string[],
  flags: F,
  positionals?: Positionals,
): ParsedLine<F> {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, f] of Object.entries(flags))
    options[name] = { type: isValueFlag(f) ? 'string' : 'boolean' };
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help'))
    return { help: true, values: {}, positionals: [] };
  const values: Record<string, unknown> = {};
  const rest: string[] = [];
  tokens.forEach((t, i) => {
    if (t.kind === 'option-terminator') return;
    if (t.kind === 'positional') {
      rest.push(t.value);
      return;
    }
    const spec = flags[t.name];
    if (!spec) {
      const next = tokens[i + 1];
      const value = t.value ?? (next?.kind === 'positional' ? next.value : undefined);
      throw new UsageError(
        `unknown flag ${t.rawName}${value !== undefined ? ` ${quote(value)}` : ''}${nearest(t.name, Object.keys(flags))}`,
      );
    }
    if (!isValueFlag(spec)) {
      if (t.inlineValue) throw new UsageError(`${t.rawName}=${t.value}: ${t.rawName} takes no value`);
      values[t.name] = true;
      return;
    }
    // Non-strict parseArgs takes the next word as the value even when it is a flag.
    if (t.value === undefined || (!t.inlineValue && t.value.startsWith('--')))
      throw new UsageError(
        `${t.rawName}: missing its value (${spec.value})${t.value ? `, got the flag ${t.value}` : ''}`,
      );
    values[t.name] = spec.parse(t.value, t.rawName);
  });
  const min = positionals?.min ?? 0,
    max = positionals?.max ?? 0;
  if (rest.length > max)
    throw new UsageError(
      `unexpected argument ${quote(rest[max]!)}${max === 0 ? ' (this command takes flags only)' : ''}`,
    );
  if (rest.length < min) throw new UsageError(`missing ${positionals!.usage}`);
  return { help: false, values: values as FlagValues<F>, positionals: rest };
}

/** The usage text: a synopsis, the description, then one line per flag with its default. */
export function usage(
  synopsis: string,
  description: string,
  flags: FlagSpecs,
  positionals?: Positionals,
): string {
  const rows: [string, string][] = [];
  if (positionals) rows.push([positionals.usage, positionals.help]);
  for (const [name, f] of Object.entries(flags)) {
    const left = isValueFlag(f) ? `--${name} ${f.value}` : `--${name}`;
    const right = isValueFlag(f) && f.default !== undefined ? `${f.help} (default: ${f.default})` : f.help;
    rows.push([left, right]);
  }
  rows.push(['--help, -h', 'print this and exit']);
  const width = Math.max(...rows.map(([l]) => l.length));
  const flagsTitle = positionals ? 'arguments and flags:' : 'flags:';
  return [
    `usage: ${synopsis}`,
    '',
    description,
    '',
    flagsTitle,
    ...rows.map(([l, r]) => `  ${l.padEnd(width)}  ${r}`),
  ].join('\n');
}

// Value parsers. Each returns the `parse` of a ValueFlag.

/** An integer in [min, max]; `even` for sizes that are halved. */
export function integer(o: {
  min: number;
  max?: number;
  even?: boolean;
}): (raw: string, flag: string) => number {
  const range = o.max === undefined ? `>= ${o.min}` : `in [${o.min}, ${o.max}]`;
  const expected = `expected ${o.even ? 'an even' : 'an'} integer ${range}`;
  return (raw, flag) => {
    const x = Number(raw);
    if (!/^[+-]?\d+$/.test(raw) || x < o.min || (o.max !== undefined && x > o.max) || (o.even && x % 2 !== 0))
      throw bad(flag, raw, expected);
    return x;
  };
}

/** A finite decimal number >= min. */
export function decimal(o: { min: number }): (raw: string, flag: string) => number {
  return (raw, flag) => {
    const x = Number(raw);
    if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw) || !Number.isFinite(x) || x < o.min)
      throw bad(flag, raw, `expected a number >= ${o.min}`);
    return x;
  };
}

/** One of `choices`. */
export function choice<T extends string>(choices: readonly T[]): (raw: string, flag: string) => T {
  return (raw, flag) => {
    if (!(choices as readonly string[]).includes(raw))
      throw bad(flag, raw, `expected one of ${choices.join(', ')}`);
    return raw as T;
  };
}

/** A comma-separated list, every item one of `choices` (`what` names them in the message), no item twice. */
export function list<T extends string>(
  choices: readonly T[],
  what = choices.join(', '),
): (raw: string, flag: string) => T[] {
  return (raw, flag) => {
    const items = raw.split(',');
    const unknown = items.filter((x) => !(choices as readonly string[]).includes(x));
    if (unknown.length) throw bad(flag, raw, `unknown ${unknown.map(quote).join(', ')} (${what})`);
    const twice = items.find((x, i) => items.indexOf(x) !== i);
    if (twice !== undefined) throw bad(flag, raw, `${twice} given twice`);
    return items as T[];
  };
}

/** Any non-empty text (a path, a filter). */
export function text(): (raw: string, flag: string) => string {
  return (raw, flag) => {
    if (raw === '') throw bad(flag, raw, 'expected a non-empty value');
    return raw;
  };
}
