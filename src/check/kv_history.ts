/**
 * This project's history format: JSON lines of invocation and completion
 * events on a get / put / delete / cas store (see `README.md` beside this file),
 * and a recorder that writes it.
 *
 * @module
 */

import { HistoryParseError, OperationAssembler, type Outcome } from "./assemble.ts";
import { checkOperations, type CheckOptions, type CheckResult } from "./checker.ts";
import type { History, Operation } from "./history.ts";
import { type KvInput, kvModel, type KvOutput, type OptionalValue } from "./models.ts";

/** The kind of a history event. */
export type KvEventType = "invoke" | "ok" | "fail" | "info";

/** The operations of this project's store. */
export type KvFunction = "get" | "put" | "delete" | "cas";

/**
 * One line of a JSON-lines history.
 *
 * - `invoke`: the client sent the request.
 * - `ok`: it took effect; a get's `value` is what it read (`null` = absent).
 * - `fail`: it certainly did not take effect. For a cas this means the
 *   comparison failed (the value differed from `from`); for the others the
 *   operation is dropped.
 * - `info`: the outcome is unknown (timeout, crash); so is an invocation that
 *   never completes.
 */
export interface KvEvent {
  /** The client; at most one operation outstanding per process. */
  readonly process: number | string;
  /** What happened. */
  readonly type: KvEventType;
  /** The operation. */
  readonly f: KvFunction;
  /** The key. */
  readonly key: string;
  /** put: the value written; get completion: the value read, `null` = absent. */
  readonly value?: OptionalValue;
  /** cas: the expected value; `null` = only if absent. */
  readonly from?: OptionalValue;
  /** cas: the new value. */
  readonly to?: string;
  /** Informational wall-clock or simulated time; line order is what counts. */
  readonly time?: number;
}

/** A request, as passed to {@linkcode HistoryRecorder.prototype.invoke}. */
export type KvCall =
  | { readonly f: "get"; readonly key: string }
  | { readonly f: "put"; readonly key: string; readonly value: string }
  | { readonly f: "delete"; readonly key: string }
  | { readonly f: "cas"; readonly key: string; readonly from: OptionalValue; readonly to: string };

const EVENT_TYPES: ReadonlySet<string> = new Set(["invoke", "ok", "fail", "info"]);
const FUNCTIONS: ReadonlySet<string> = new Set(["get", "put", "delete", "cas"]);

/** Options naming the input in error messages. */
export interface SourceOptions {
  /** The input's label in error messages, e.g. a file name. Default `history`. */
  readonly source?: string;
}

/** Operations assembled from a list of events, plus how many events there were. */
export interface AssembledKvHistory extends History<OptionalValue, KvInput, KvOutput> {
  /** Invocations and completions read. */
  readonly eventCount: number;
}

function isOptionalString(value: unknown): value is OptionalValue {
  return value === null || typeof value === "string";
}

/** Checks the shape of one event; returns what is wrong, or `undefined`. */
function validateEvent(event: Record<string, unknown>): string | undefined {
  const { process, type, f, key } = event;
  if (typeof process !== "number" && typeof process !== "string") {
    return `"process" must be a number or a string`;
  }
  if (typeof type !== "string" || !EVENT_TYPES.has(type)) {
    return `"type" must be one of invoke, ok, fail, info`;
  }
  if (typeof f !== "string" || !FUNCTIONS.has(f)) {
    return `"f" must be one of get, put, delete, cas`;
  }
  if (typeof key !== "string") return `"key" must be a string`;
  if (event.time !== undefined && typeof event.time !== "number") return `"time" must be a number`;
  if (f === "put" && type === "invoke" && typeof event.value !== "string") {
    return `a put invocation needs a string "value"`;
  }
  if (f === "get" && type === "ok" && !isOptionalString(event.value)) {
    return `a get completion needs "value": a string, or null for absent`;
  }
  if (f === "cas" && type === "invoke") {
    if (!("from" in event) || !isOptionalString(event.from)) {
      return `a cas invocation needs "from": a string, or null for only-if-absent`;
    }
    if (typeof event.to !== "string") return `a cas invocation needs a string "to"`;
  }
  return undefined;
}

function inputOf(event: KvEvent): KvInput {
  switch (event.f) {
    case "get":
      return { f: "get" };
    case "put":
      return { f: "put", value: event.value as string };
    case "delete":
      return { f: "delete" };
    case "cas":
      return { f: "cas", from: event.from as OptionalValue, to: event.to as string };
  }
}

function outcomeOf(event: KvEvent): Outcome<KvOutput> {
  switch (event.type) {
    case "info":
      return { kind: "indeterminate" };
    case "fail":
      return event.f === "cas" ? { kind: "completed", output: { ok: false } } : { kind: "dropped" };
    default:
      if (event.f === "get") return { kind: "completed", output: { value: event.value ?? null } };
      if (event.f === "cas") return { kind: "completed", output: { ok: true } };
      return { kind: "completed", output: {} };
  }
}

function newAssembler(source: string): OperationAssembler<KvInput, KvOutput> {
  return new OperationAssembler<KvInput, KvOutput>({
    source,
    isRead: (input) => input.f === "get",
  });
}

function feed(
  assembler: OperationAssembler<KvInput, KvOutput>,
  located: { readonly event: KvEvent; readonly line: number },
): void {
  const { event, line } = located;
  if (event.type === "invoke") {
    assembler.invoke(event.process, { line, f: event.f, key: event.key, input: inputOf(event) });
  } else {
    assembler.complete(event.process, {
      line,
      f: event.f,
      key: event.key,
      outcome: () => outcomeOf(event),
    });
  }
}

/**
 * Turns events in real-time order into operations of {@linkcode kvModel}.
 * Event numbers in errors are 1-based.
 *
 * @throws {HistoryParseError} when an event is malformed or out of protocol
 */
export function kvHistoryFromEvents(
  events: readonly KvEvent[],
  options: SourceOptions = {},
): AssembledKvHistory {
  const source = options.source ?? "history";
  const assembler = newAssembler(source);
  for (let i = 0; i < events.length; i++) {
    const problem = validateEvent(events[i] as unknown as Record<string, unknown>);
    if (problem !== undefined) throw new HistoryParseError(problem, { source, line: i + 1 });
    feed(assembler, { event: events[i], line: i + 1 });
  }
  return { model: kvModel, operations: assembler.finish(), eventCount: assembler.eventCount };
}

/**
 * Parses a JSON-lines history. Empty lines and lines starting with `#` are
 * ignored; line numbers in errors are the file's.
 *
 * @throws {HistoryParseError} when a line is not a valid event
 */
export function parseKvJsonLines(text: string, options: SourceOptions = {}): AssembledKvHistory {
  const source = options.source ?? "history";
  const assembler = newAssembler(source);
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      throw new HistoryParseError(`not JSON (${(error as Error).message})`, {
        source,
        line: i + 1,
      });
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new HistoryParseError("expected a JSON object", { source, line: i + 1 });
    }
    const problem = validateEvent(parsed as Record<string, unknown>);
    if (problem !== undefined) throw new HistoryParseError(problem, { source, line: i + 1 });
    feed(assembler, { event: parsed as KvEvent, line: i + 1 });
  }
  return { model: kvModel, operations: assembler.finish(), eventCount: assembler.eventCount };
}

/** Serializes events as JSON lines, one event per line, ending with a newline. */
export function formatKvJsonLines(events: readonly KvEvent[]): string {
  return events.map((event) => JSON.stringify(event) + "\n").join("");
}

/**
 * Checks an in-memory history of this project's store, without a file.
 *
 * @throws {HistoryParseError} when an event is malformed or out of protocol
 */
export function checkKvEvents(
  events: readonly KvEvent[],
  options: CheckOptions & SourceOptions = {},
): CheckResult {
  const history = kvHistoryFromEvents(events, options);
  return checkOperations(history.model, history.operations, options);
}

/** Options of {@linkcode HistoryRecorder}. */
export interface HistoryRecorderOptions {
  /** Stamps each event's informational `time` (e.g. the simulator's clock). */
  readonly now?: () => number;
}

/**
 * Records a client history of this project's store as it happens.
 *
 * @example
 * ```ts
 * import { HistoryRecorder } from "./mod.ts";
 *
 * const recorder = new HistoryRecorder();
 * recorder.invoke(0, { f: "put", key: "a", value: "v1" });
 * recorder.ok(0);
 * recorder.invoke(1, { f: "get", key: "a" });
 * recorder.ok(1, { value: "v1" });
 * await Deno.writeTextFile("history.jsonl", recorder.toJsonLines());
 * console.log(recorder.check().verdict); // "linearizable"
 * ```
 */
export class HistoryRecorder {
  #events: KvEvent[] = [];
  #outstanding = new Map<number | string, KvEvent>();
  #now: (() => number) | undefined;

  /** Creates an empty recorder. */
  constructor(options: HistoryRecorderOptions = {}) {
    this.#now = options.now;
  }

  /** The events so far, in the order recorded. */
  get events(): readonly KvEvent[] {
    return this.#events;
  }

  /** How many operations are invoked but not yet completed. */
  get outstandingCount(): number {
    return this.#outstanding.size;
  }

  /**
   * Records that `process` sent `call`.
   *
   * @throws {Error} when `process` already has an operation outstanding
   */
  invoke(process: number | string, call: KvCall): void {
    if (this.#outstanding.has(process)) {
      throw new Error(`Process ${process} already has an operation outstanding`);
    }
    const event = this.#stamp({ process, type: "invoke", ...call });
    this.#outstanding.set(process, event);
    this.#events.push(event);
  }

  /**
   * Records that `process`'s operation took effect; a get must say what it
   * read (`null` = absent).
   *
   * @throws {Error} when nothing is outstanding, or a get gives no value
   */
  ok(process: number | string, result: { readonly value?: OptionalValue } = {}): void {
    const call = this.#outstanding.get(process);
    if (call?.f === "get" && result.value === undefined) {
      throw new Error(`Get by process ${process} must record the value read`);
    }
    this.#complete(this.#take(process), {
      type: "ok",
      ...(call?.f === "get" ? { value: result.value } : {}),
    });
  }

  /**
   * Records that `process`'s operation certainly did not take effect; for a
   * cas, that the comparison failed.
   *
   * @throws {Error} when nothing is outstanding
   */
  fail(process: number | string): void {
    this.#complete(this.#take(process), { type: "fail" });
  }

  /**
   * Records that the outcome of `process`'s operation is unknown (timeout,
   * lost connection, crash).
   *
   * @throws {Error} when nothing is outstanding
   */
  info(process: number | string): void {
    this.#complete(this.#take(process), { type: "info" });
  }

  /**
   * Withdraws `process`'s outstanding operation: it certainly never reached
   * the system (a refused connection, a 503 before anything was proposed), so
   * it is no operation at all. Unlike `fail`, this says nothing about a cas's
   * comparison, and unlike `info`, it adds no uncertainty to the search.
   *
   * @throws {Error} when nothing is outstanding
   */
  cancel(process: number | string): void {
    const call = this.#take(process);
    const index = this.#events.lastIndexOf(call);
    if (index >= 0) this.#events.splice(index, 1);
  }

  /** The history as JSON lines. */
  toJsonLines(): string {
    return formatKvJsonLines(this.#events);
  }

  /** The history as operations of {@linkcode kvModel}; outstanding ones are indeterminate. */
  toHistory(): AssembledKvHistory {
    return kvHistoryFromEvents(this.#events, { source: "recorded history" });
  }

  /** Checks the history recorded so far. */
  check(options: CheckOptions = {}): CheckResult {
    return checkKvEvents(this.#events, { ...options, source: "recorded history" });
  }

  #take(process: number | string): KvEvent {
    const call = this.#outstanding.get(process);
    if (call === undefined) {
      throw new Error(`Process ${process} has no operation outstanding`);
    }
    this.#outstanding.delete(process);
    return call;
  }

  #complete(
    call: KvEvent,
    completion: { readonly type: KvEventType; readonly value?: OptionalValue },
  ): void {
    const { process, f, key } = call;
    const { type, ...result } = completion;
    const echo: Partial<KvEvent> = f === "put"
      ? { value: call.value }
      : f === "cas"
      ? { from: call.from, to: call.to }
      : {};
    this.#events.push(this.#stamp({ process, type, f, key, ...echo, ...result }));
  }

  #stamp(event: KvEvent): KvEvent {
    return this.#now === undefined ? event : { ...event, time: this.#now() };
  }
}

/** The operations type that {@linkcode kvHistoryFromEvents} produces. */
export type KvOperation = Operation<KvInput, KvOutput>;
