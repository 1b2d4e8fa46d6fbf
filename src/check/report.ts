/**
 * Checking whole history files and rendering the verdicts: what the CLI and
 * the benchmark share.
 *
 * @module
 */

import {
  checkOperations,
  type CheckOptions,
  type CheckResult,
  type KeyCheckResult,
} from "./checker.ts";
import { describeOrigin, type History, type Operation } from "./history.ts";
import type { SourceOptions } from "./kv_history.ts";
import { type HistoryFormat, parseHistory } from "./parse.ts";

/** The verdict on one history file. */
export interface HistoryReport {
  /** The file's label (the path as given). */
  readonly source: string;
  /** The format it was read as. */
  readonly format: HistoryFormat;
  /** The name of the model it was checked against. */
  readonly modelName: string;
  /** Invocations and completions read. */
  readonly eventCount: number;
  /** Distinct keys. */
  readonly keyCount: number;
  /** The checker's result. */
  readonly result: CheckResult;
  /** Wall-clock milliseconds spent parsing and checking. */
  readonly ms: number;
  /** The parsed history, for explanations. */
  readonly history: History<unknown, unknown, unknown>;
}

/**
 * Checks any history in the jepsen-log, porcupine-kv or JSON-lines format,
 * given as text.
 *
 * @throws {HistoryParseError} when the text is not a valid history
 */
export function checkHistoryText(
  text: string,
  options: CheckOptions & SourceOptions = {},
): HistoryReport {
  const source = options.source ?? "history";
  const started = performance.now();
  const parsed = parseHistory(text, { source });
  const result = checkOperations(parsed.history.model, parsed.history.operations, options);
  return {
    source,
    format: parsed.format,
    modelName: parsed.history.model.name,
    eventCount: parsed.eventCount,
    keyCount: result.keys.length,
    result,
    ms: performance.now() - started,
    history: parsed.history,
  };
}

/**
 * Reads and checks a history file; see {@linkcode checkHistoryText}.
 *
 * @throws {Deno.errors.NotFound} and other read errors when the file cannot be read
 * @throws {HistoryParseError} when the file is not a valid history
 */
export async function checkHistoryFile(
  path: string | URL,
  options: CheckOptions = {},
): Promise<HistoryReport> {
  const text = await Deno.readTextFile(path);
  return checkHistoryText(text, { ...options, source: String(path) });
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/**
 * One line saying what a file's verdict is, e.g.
 * `c50-ok.txt: linearizable (3424 events, 10 keys, 85 ms)`.
 */
export function formatVerdictLine(report: HistoryReport): string {
  const { result } = report;
  const stats = `${plural(report.eventCount, "event")}, ${plural(report.keyCount, "key")}, ${
    Math.round(report.ms)
  } ms`;
  if (result.verdict === "linearizable") return `${report.source}: linearizable (${stats})`;
  const bad = result.keys.filter((key) => key.verdict === result.verdict);
  const first = bad[0];
  const more = bad.length > 1 ? `; ${plural(bad.length - 1, "more key")} too` : "";
  const label = result.verdict === "unknown" ? "unknown" : "not linearizable";
  return `${report.source}: ${label} (key ${
    JSON.stringify(first.key)
  }: ${first.explanation}${more}; ${stats})`;
}

/** Options of {@linkcode describeKeyFailure}. */
export interface DescribeKeyFailureOptions {
  /** How many operations of the longest prefix to show, from its end. Default 5. */
  readonly prefixTail?: number;
  /** How many concurrent operations left over to show. Default 8. */
  readonly concurrentLimit?: number;
}

/**
 * Lines detailing why a key is not linearizable: the end of the longest
 * linearizable prefix, then the operations that were still candidates when
 * the search got stuck.
 */
export function describeKeyFailure(
  history: History<unknown, unknown, unknown>,
  key: KeyCheckResult,
  options: DescribeKeyFailureOptions = {},
): string[] {
  const { model, operations } = history;
  const prefixTail = options.prefixTail ?? 5;
  const concurrentLimit = options.concurrentLimit ?? 8;
  const describe = (index: number): string => {
    const operation: Operation<unknown, unknown> = operations[index];
    return `${model.describeOperation(operation.input, operation.output)} (${
      describeOrigin(operation)
    })`;
  };
  const lines: string[] = [];
  const prefix = key.linearization;
  const shown = prefix.slice(Math.max(0, prefix.length - prefixTail));
  lines.push(
    `longest linearizable prefix: ${prefix.length} of ${key.operationCount} operations${
      shown.length < prefix.length ? `, ending` : ""
    }:`,
  );
  for (const index of shown) lines.push(`  ${describe(index)}`);
  if (key.blockedOperation === undefined) return lines;
  const blocked = operations[key.blockedOperation];
  lines.push(`cannot place: ${describe(key.blockedOperation)}`);
  const placed = new Set(prefix);
  const concurrent: number[] = [];
  for (let index = 0; index < operations.length; index++) {
    const operation = operations[index];
    if (
      index !== key.blockedOperation && operation.key === key.key && !placed.has(index) &&
      operation.invokedAt <= blocked.completedAt
    ) {
      concurrent.push(index);
    }
  }
  if (concurrent.length > 0) {
    lines.push(`other candidates (invoked before it returned): ${concurrent.length}`);
    for (const index of concurrent.slice(0, concurrentLimit)) lines.push(`  ${describe(index)}`);
    if (concurrent.length > concurrentLimit) {
      lines.push(`  ... and ${concurrent.length - concurrentLimit} more`);
    }
  }
  return lines;
}
