/**
 * A small command-line parser shared by the CLIs: `--name value`,
 * `--name=value`, repeatable options, boolean flags, positional arguments.
 *
 * @module
 */

/** Parsed arguments. */
export interface ParsedArgs {
  /** Positional arguments, in order. */
  readonly positional: readonly string[];
  /** Options by name; repeated options keep every value. */
  readonly options: ReadonlyMap<string, readonly string[]>;
  /** Flags that were given. */
  readonly flags: ReadonlySet<string>;
}

/** A usage error: the message says what is wrong. */
export class UsageError extends Error {
  /** Creates a usage error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Parses `args`. `flags` names the options that take no value; every other
 * `--name` takes one. Unknown names are refused.
 */
export function parseArgs(
  args: readonly string[],
  spec: { readonly options: readonly string[]; readonly flags?: readonly string[] },
): ParsedArgs {
  const positional: string[] = [];
  const options = new Map<string, string[]>();
  const flags = new Set<string>();
  const flagNames = new Set(spec.flags ?? []);
  const optionNames = new Set(spec.options);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    const match = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/.exec(arg);
    if (match === null) {
      positional.push(arg);
      continue;
    }
    const name = match[1]!;
    if (flagNames.has(name)) {
      if (match[2] !== undefined) throw new UsageError(`--${name} takes no value`);
      flags.add(name);
      continue;
    }
    if (!optionNames.has(name)) throw new UsageError(`Unknown option --${name}`);
    const value = match[2] ?? args[++i];
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    options.set(name, [...(options.get(name) ?? []), value]);
  }
  return { positional, options, flags };
}

/** The last value of option `name`, or `fallback`. */
export function option(args: ParsedArgs, name: string, fallback?: string): string | undefined {
  const values = args.options.get(name);
  return values === undefined ? fallback : values[values.length - 1];
}

/** Option `name` as an integer in `[min, max]`, or `fallback`. */
export function integerOption(
  args: ParsedArgs,
  name: string,
  range: { readonly min: number; readonly max: number; readonly fallback?: number },
): number | undefined {
  const text = option(args, name);
  if (text === undefined) return range.fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new UsageError(
      `--${name} must be an integer from ${range.min} to ${range.max}, got ${text}`,
    );
  }
  return value;
}
