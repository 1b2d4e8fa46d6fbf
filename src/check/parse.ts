/**
 * Parsers for the three history formats the checker reads, and format
 * detection:
 *
 * - `jepsen-log`: jepsen-etcd logs (`INFO  jepsen.util - 3	:invoke	:cas	[1 2]`),
 *   checked against {@linkcode registerModel}.
 * - `porcupine-kv`: porcupine's EDN kv histories, checked against
 *   {@linkcode kvAppendModel}.
 * - `json-lines`: this project's format (see `kv_history.ts`), checked against
 *   {@linkcode kvModel}.
 *
 * @module
 */

import { HistoryParseError, OperationAssembler, type Outcome } from "./assemble.ts";
import { type EdnValue, isKeyword, parseEdnMap } from "./edn.ts";
import type { History } from "./history.ts";
import { parseKvJsonLines, type SourceOptions } from "./kv_history.ts";
import {
  type KvAppendInput,
  kvAppendModel,
  type KvAppendOutput,
  type KvAppendState,
  type OptionalValue,
  type RegisterInput,
  registerModel,
  type RegisterOutput,
} from "./models.ts";

/** The history formats the checker reads. */
export type HistoryFormat = "jepsen-log" | "porcupine-kv" | "json-lines";

/** A parsed history file. */
export interface ParsedHistory<S = unknown, I = unknown, O = unknown> {
  /** The format it was read as. */
  readonly format: HistoryFormat;
  /** The operations and the model they must satisfy. */
  readonly history: History<S, I, O>;
  /** Invocations and completions read (noise lines excluded). */
  readonly eventCount: number;
}

/** The key under which a jepsen log's single register is reported. */
export const REGISTER_KEY = "register";

const JEPSEN_EVENT = /jepsen\.util - (\d+)\s+:(\S+)\s+:(\S+)\s*(.*?)\s*$/;
const JEPSEN_TYPES: ReadonlySet<string> = new Set(["invoke", "ok", "fail", "info"]);

type JepsenValue =
  | { readonly kind: "scalar"; readonly value: OptionalValue }
  | { readonly kind: "pair"; readonly from: OptionalValue; readonly to: OptionalValue }
  | { readonly kind: "keyword"; readonly name: string };

function parseJepsenScalar(token: string): OptionalValue | undefined {
  if (token === "nil") return null;
  if (/^-?\d+$/.test(token)) return token;
  return undefined;
}

function parseJepsenValue(text: string): JepsenValue | undefined {
  const pair = /^\[\s*(\S+)\s+(\S+)\s*\]$/.exec(text);
  if (pair !== null) {
    const from = parseJepsenScalar(pair[1]);
    const to = parseJepsenScalar(pair[2]);
    if (from === undefined || to === undefined) return undefined;
    return { kind: "pair", from, to };
  }
  if (/^:\S+$/.test(text)) return { kind: "keyword", name: text.slice(1) };
  const value = parseJepsenScalar(text);
  return value === undefined ? undefined : { kind: "scalar", value };
}

/**
 * Parses a jepsen-etcd log: one register, read / write / cas. Lines that are
 * not `jepsen.util` client events (including nemesis events) are ignored.
 *
 * `:fail` of a cas means the comparison failed; `:fail` of a read or write
 * means it did not happen; `:info` and missing completions are indeterminate.
 *
 * @throws {HistoryParseError} when a client event line is malformed
 */
export function parseJepsenLog(
  text: string,
  options: SourceOptions = {},
): ParsedHistory<OptionalValue, RegisterInput, RegisterOutput> {
  const source = options.source ?? "history";
  const assembler = new OperationAssembler<RegisterInput, RegisterOutput>({
    source,
    isRead: (input) => input.f === "read",
  });
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const match = JEPSEN_EVENT.exec(lines[i]);
    if (match === null) continue;
    const [, process, type, f, rawValue] = match;
    const line = i + 1;
    const fail = (detail: string): never => {
      throw new HistoryParseError(detail, { source, line });
    };
    if (!JEPSEN_TYPES.has(type)) fail(`unknown event type :${type}`);
    if (f !== "read" && f !== "write" && f !== "cas") fail(`unknown operation :${f}`);
    const value = parseJepsenValue(rawValue);
    if (value === undefined) fail(`cannot read value ${JSON.stringify(rawValue)}`);
    if (type === "invoke") {
      let input: RegisterInput;
      if (f === "read") {
        input = { f: "read" };
      } else if (f === "write") {
        if (value?.kind !== "scalar" || value.value === null) fail("a write needs an integer");
        input = { f: "write", value: (value as { value: string }).value };
      } else {
        if (value?.kind !== "pair" || value.to === null) fail("a cas needs [from to]");
        const pair = value as { from: OptionalValue; to: string };
        input = { f: "cas", from: pair.from, to: pair.to };
      }
      assembler.invoke(process, { line, f, key: REGISTER_KEY, input });
      continue;
    }
    const outcome = (): Outcome<RegisterOutput> => {
      if (type === "info") return { kind: "indeterminate" };
      if (type === "fail") {
        return f === "cas" ? { kind: "completed", output: { ok: false } } : { kind: "dropped" };
      }
      if (f === "read") {
        if (value?.kind !== "scalar") return fail("a read completion needs a value or nil");
        return { kind: "completed", output: { value: value.value } };
      }
      return { kind: "completed", output: f === "cas" ? { ok: true } : {} };
    };
    assembler.complete(process, { line, f, outcome });
  }
  return {
    format: "jepsen-log",
    history: { model: registerModel, operations: assembler.finish() },
    eventCount: assembler.eventCount,
  };
}

/**
 * Parses one of porcupine's EDN kv histories: get / put / append per key,
 * where a missing key reads as `""`. `:fail` means the operation did not
 * happen; `:info` and missing completions are indeterminate.
 *
 * @throws {HistoryParseError} when a line is not a valid event
 */
export function parsePorcupineKv(
  text: string,
  options: SourceOptions = {},
): ParsedHistory<KvAppendState, KvAppendInput, KvAppendOutput> {
  const source = options.source ?? "history";
  const assembler = new OperationAssembler<KvAppendInput, KvAppendOutput>({
    source,
    isRead: (input) => input.f === "get",
  });
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const trimmed = lines[i].trim();
    if (trimmed === "" || trimmed.startsWith(";")) continue;
    const line = i + 1;
    const fail = (detail: string): never => {
      throw new HistoryParseError(detail, { source, line });
    };
    let event: Map<string, EdnValue>;
    try {
      event = parseEdnMap(trimmed);
    } catch (error) {
      return fail(`not an EDN map (${(error as Error).message})`);
    }
    const process = event.get("process");
    const type = event.get("type");
    const f = event.get("f");
    const key = event.get("key");
    const value = event.get("value");
    if (typeof process !== "number" && typeof process !== "string") {
      fail(":process must be a number or a string");
    }
    if (!isKeyword(type) || !JEPSEN_TYPES.has(type.keyword)) {
      fail(":type must be one of :invoke, :ok, :fail, :info");
    }
    if (!isKeyword(f) || !["get", "put", "append"].includes(f.keyword)) {
      fail(":f must be one of :get, :put, :append");
    }
    if (typeof key !== "string" && typeof key !== "number") fail(":key must be a string");
    if (value !== null && value !== undefined && typeof value !== "string") {
      fail(":value must be a string or nil");
    }
    const who = process as number | string;
    const kind = (type as { keyword: string }).keyword;
    const name = (f as { keyword: string }).keyword as KvAppendInput["f"];
    const text = (value ?? null) as string | null;
    if (kind === "invoke") {
      let input: KvAppendInput;
      if (name === "get") {
        input = { f: "get" };
      } else {
        if (text === null) fail(`a ${name} needs a string :value`);
        input = { f: name, value: text as string };
      }
      assembler.invoke(who, { line, f: name, key: String(key), input });
      continue;
    }
    const outcome = (): Outcome<KvAppendOutput> => {
      if (kind === "info") return { kind: "indeterminate" };
      if (kind === "fail") return { kind: "dropped" };
      return { kind: "completed", output: name === "get" ? { value: text ?? "" } : {} };
    };
    assembler.complete(who, { line, f: name, key: String(key), outcome });
  }
  return {
    format: "porcupine-kv",
    history: { model: kvAppendModel, operations: assembler.finish() },
    eventCount: assembler.eventCount,
  };
}

/**
 * Guesses a history's format from its first meaningful line: a jepsen
 * `jepsen.util` event line, an EDN map (`{:`) or a JSON object (`{"`). Text
 * with no such line (only blank lines and `#` comments) is an empty JSON-lines
 * history; anything else gives `undefined`.
 */
export function detectHistoryFormat(text: string): HistoryFormat | undefined {
  let sawOtherText = false;
  for (const rawLine of text.split("\n")) {
    if (JEPSEN_EVENT.test(rawLine)) return "jepsen-log";
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (!sawOtherText && line.startsWith("{:")) return "porcupine-kv";
    if (!sawOtherText && line.startsWith("{")) return "json-lines";
    // Only a jepsen log may carry noise before its first event.
    sawOtherText = true;
  }
  return sawOtherText ? undefined : "json-lines";
}

/**
 * Parses a history in any of the supported formats, detected from its text.
 *
 * @throws {HistoryParseError} when the format cannot be told or the text is invalid
 */
export function parseHistory(text: string, options: SourceOptions = {}): ParsedHistory {
  const source = options.source ?? "history";
  const format = detectHistoryFormat(text);
  switch (format) {
    case "jepsen-log":
      return parseJepsenLog(text, { source });
    case "porcupine-kv":
      return parsePorcupineKv(text, { source });
    case "json-lines": {
      const { model, operations, eventCount } = parseKvJsonLines(text, { source });
      return { format, history: { model, operations }, eventCount };
    }
    case undefined: {
      const lines = text.split("\n");
      const first = lines.findIndex((line) => line.trim() !== "" && !line.trim().startsWith("#"));
      throw new HistoryParseError(
        "unknown format: expected jepsen.util event lines, EDN maps ({:process ...}) or JSON objects",
        { source, line: first + 1 },
      );
    }
  }
}
