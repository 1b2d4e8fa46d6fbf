/**
 * Command line linearizability checker.
 *
 * ```sh
 * deno task check-history [--max-steps N] FILE...
 * ```
 *
 * Prints one verdict line per file (format detected per file), with details
 * under each non-linearizable one. Exit status: 0 when every file is
 * linearizable, 1 when any is not, 2 when any file cannot be read or parsed
 * (or on bad usage), 3 when none is refuted but the search budget ran out on
 * some key (verdict `unknown`). 2 outranks 1, which outranks 3.
 *
 * @module
 */

import { HistoryParseError } from "./assemble.ts";
import { DEFAULT_MAX_STEPS_PER_KEY } from "./checker.ts";
import { checkHistoryFile, describeKeyFailure, formatVerdictLine } from "./report.ts";

/** Exit status of the CLI. */
export const EXIT = Object.freeze({
  linearizable: 0,
  notLinearizable: 1,
  badInput: 2,
  unknown: 3,
});

const USAGE = `Usage: check-history [--max-steps N] FILE...

Checks each history file for linearizability (per key). Formats, detected per
file: jepsen-etcd logs, porcupine EDN kv histories, epaxos-kv JSON lines.

  --max-steps N   search steps allowed per key (default ${DEFAULT_MAX_STEPS_PER_KEY})

Exit status: 0 all linearizable, 1 some not linearizable, 2 unreadable or
unparseable input, 3 undecided within the step budget.`;

interface CliArguments {
  readonly files: string[];
  readonly maxStepsPerKey: number;
  readonly help: boolean;
}

function parseArguments(args: readonly string[]): CliArguments | string {
  const files: string[] = [];
  let maxStepsPerKey = DEFAULT_MAX_STEPS_PER_KEY;
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--help" || arg === "-h") {
      help = true;
    } else if (arg === "--max-steps" || arg.startsWith("--max-steps=")) {
      const value = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : args[++i];
      const steps = Number(value);
      if (!Number.isSafeInteger(steps) || steps <= 0) {
        return `--max-steps needs a positive integer, got ${JSON.stringify(value ?? "")}`;
      }
      maxStepsPerKey = steps;
    } else if (arg === "--") {
      files.push(...args.slice(i + 1));
      break;
    } else if (arg.startsWith("-") && arg !== "-") {
      return `Unknown option ${arg}`;
    } else {
      files.push(arg);
    }
  }
  return { files, maxStepsPerKey, help };
}

/** Runs the CLI on `args`, printing verdicts; returns the exit status. */
export async function runCli(args: readonly string[]): Promise<number> {
  const parsed = parseArguments(args);
  if (typeof parsed === "string") {
    console.error(`${parsed}\n\n${USAGE}`);
    return EXIT.badInput;
  }
  if (parsed.help) {
    console.log(USAGE);
    return EXIT.linearizable;
  }
  if (parsed.files.length === 0) {
    console.error(USAGE);
    return EXIT.badInput;
  }
  let badInput = false;
  let refuted = false;
  let undecided = false;
  for (const file of parsed.files) {
    try {
      const report = await checkHistoryFile(file, { maxStepsPerKey: parsed.maxStepsPerKey });
      console.log(formatVerdictLine(report));
      if (report.result.verdict === "not-linearizable") {
        refuted = true;
        const key = report.result.keys.find((k) => k.verdict === "not-linearizable");
        if (key !== undefined) {
          for (const line of describeKeyFailure(report.history, key)) console.log(`  ${line}`);
        }
      } else if (report.result.verdict === "unknown") {
        undecided = true;
      }
    } catch (error) {
      badInput = true;
      if (error instanceof HistoryParseError) {
        console.error(`${file}: error: ${error.message}`);
      } else if (error instanceof Deno.errors.NotFound) {
        console.error(`${file}: error: Cannot read file: no such file`);
      } else if (error instanceof Error) {
        console.error(`${file}: error: Cannot read file: ${error.message}`);
      } else {
        throw error;
      }
    }
  }
  if (badInput) return EXIT.badInput;
  if (refuted) return EXIT.notLinearizable;
  if (undecided) return EXIT.unknown;
  return EXIT.linearizable;
}

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
