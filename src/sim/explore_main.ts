/**
 * `deno task explore`: bounded exhaustive exploration of the core (see
 * `explore.ts` for what is explored and what is not).
 *
 * ```
 * deno task explore [--depth N] [--drops N] [--ticks N] [--crashes N] [--commands 2|3] [--max-states N]
 * deno task explore --replay [--commands 2|3] < path.txt
 * ```
 *
 * Prints the figures of the search; exits 0 when every invariant held on
 * every path. On a violation it prints the invariant, the path to it (one
 * event per line, with what each event sent and applied) and the replicas'
 * states, and exits 1; the path's event lines, fed back with `--replay` on
 * standard input, reproduce it. Bad arguments exit 2 with a one-line reason.
 *
 * @module
 */

import {
  checkBounds,
  CI_EXPLORE_BOUND,
  DEFAULT_MAX_STATES,
  explore,
  type ExploreOptions,
  type ExploreResult,
  replayExploration,
} from "./explore.ts";

/** A parsed command line. */
export interface ExploreArguments {
  /** The bounds. */
  readonly options: ExploreOptions;
  /** Whether to replay a path read from standard input instead of searching. */
  readonly replay: boolean;
}

const FLAGS = ["depth", "drops", "ticks", "crashes", "commands", "max-states"] as const;

/**
 * Parses `args`; missing bounds take {@linkcode CI_EXPLORE_BOUND}'s.
 *
 * @throws {TypeError} with a one-line reason on a bad argument.
 */
export function parseExploreArguments(args: readonly string[]): ExploreArguments {
  const values = new Map<string, number>();
  let replay = false;
  let barrier: ExploreOptions["barrier"];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--replay") {
      replay = true;
      continue;
    }
    const barrierMatch = /^--barrier(?:=(.*))?$/.exec(arg);
    if (barrierMatch !== null) {
      const text = barrierMatch[1] ?? args[++i];
      if (text !== "fenced" && text !== "unfenced") {
        throw new TypeError(`--barrier must be fenced or unfenced, got ${text}`);
      }
      barrier = text;
      continue;
    }
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (match === null) throw new TypeError(`Unexpected argument: ${arg}`);
    const name = match[1]!;
    if (!(FLAGS as readonly string[]).includes(name)) {
      throw new TypeError(`Unknown option --${name}`);
    }
    const text = match[2] ?? args[++i];
    if (text === undefined) throw new TypeError(`Missing value for --${name}`);
    const value = Number(text);
    if (text.trim() === "" || !Number.isInteger(value)) {
      throw new TypeError(`--${name} needs a whole number, got ${text}`);
    }
    values.set(name, value);
  }
  const options: ExploreOptions = {
    depth: values.get("depth") ?? CI_EXPLORE_BOUND.depth,
    drops: values.get("drops") ?? CI_EXPLORE_BOUND.drops,
    ticks: values.get("ticks") ?? CI_EXPLORE_BOUND.ticks,
    crashes: values.get("crashes") ?? CI_EXPLORE_BOUND.crashes,
    commands: (values.get("commands") ?? CI_EXPLORE_BOUND.commands) as 2 | 3,
    maxStates: values.get("max-states") ?? DEFAULT_MAX_STATES,
    ...(barrier === undefined ? {} : { barrier }),
  };
  try {
    checkBounds(options);
  } catch (error) {
    // checkBounds names the option as in ExploreOptions: name the flag instead.
    throw new TypeError(`--${(error as Error).message.replace(/^maxStates/, "max-states")}`);
  }
  return { options, replay };
}

/** Renders a result's figures as lines. */
export function describeExploreResult(options: ExploreOptions, result: ExploreResult): string[] {
  const types = Object.entries(result.messageTypes).filter(([, count]) => count > 0)
    .map(([type, count]) => `${type}=${count}`).join(" ");
  return [
    `bound: n=3 commands=${options.commands} depth=${options.depth} drops=${options.drops} ` +
    `ticks=${options.ticks} crashes=${options.crashes}` +
    (options.barrier === undefined ? "" : ` barrier=${options.barrier}`),
    `states explored ${result.explored}, distinct ${result.distinct}${
      result.truncated
        ? ` (stopped at --max-states ${options.maxStates ?? DEFAULT_MAX_STATES})`
        : ""
    }, replica states ${result.replicaStates}, max depth ${result.maxDepth}, ` +
    `quiescent ${result.quiescent} (settled ${result.settled}), time ${result.elapsedMs} ms`,
    `distinct messages: ${types}`,
  ];
}

/** Runs what `args` asks for, writing lines to `log`; returns the exit code. */
export function runExplore(
  args: ExploreArguments,
  log: (line: string) => void,
  input: () => string = () => "",
): number {
  if (args.replay) {
    const replayed = replayExploration(args.options, input().split("\n"));
    for (const line of replayed.trace) log(line);
    if (replayed.violation === undefined) log("replay: every invariant held");
    return replayed.violation === undefined ? 0 : 1;
  }
  const result = explore(args.options);
  for (const line of describeExploreResult(args.options, result)) log(line);
  if (result.violation === undefined) {
    log(
      result.truncated
        ? "ok so far: every invariant held in the states explored before the search stopped"
        : "ok: every invariant held on every path",
    );
    return 0;
  }
  log("");
  for (const line of result.violation.trace) log(line);
  log("");
  log(`reproduce: deno task explore --replay --commands ${args.options.commands} < path.txt`);
  log("with path.txt holding the event lines above (indented lines may stay)");
  return 1;
}

async function readStdin(): Promise<string> {
  return await new Response(Deno.stdin.readable).text();
}

if (import.meta.main) {
  let args: ExploreArguments;
  try {
    args = parseExploreArguments(Deno.args);
  } catch (error) {
    console.error(`${(error as Error).message}
usage: deno task explore [--depth N] [--drops N] [--ticks N] [--crashes N] [--commands 2|3] [--max-states N]
       deno task explore --replay [--commands 2|3] < path.txt`);
    Deno.exit(2);
  }
  const text = args.replay ? await readStdin() : "";
  try {
    Deno.exit(runExplore(args, (line) => console.log(line), () => text));
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(2);
  }
}
