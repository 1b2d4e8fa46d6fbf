/**
 * Pairs invocation and completion events into {@linkcode Operation}s; shared
 * by every parser and by the history recorder.
 *
 * @module
 */

import type { Operation } from "./history.ts";

/** A history file (or event list) that cannot be read as a history. */
export class HistoryParseError extends Error {
  /** The file name (or other label) of the input. */
  readonly source: string;
  /** The 1-based line (or event number) at fault. */
  readonly line: number;

  /** Creates an error saying what is wrong (`detail`) and where. */
  constructor(detail: string, where: { readonly source: string; readonly line: number }) {
    super(`Invalid history at ${where.source} line ${where.line}: ${detail}`);
    this.name = "HistoryParseError";
    this.source = where.source;
    this.line = where.line;
  }
}

/** What a completion event means for its operation. */
export type Outcome<O> =
  /** It completed with this output. */
  | { readonly kind: "completed"; readonly output: O }
  /** It may or may not have taken effect. */
  | { readonly kind: "indeterminate" }
  /** It certainly did not take effect and constrains nothing. */
  | { readonly kind: "dropped" };

/** An invocation still waiting for its completion. */
export interface PendingCall<I> {
  /** The operation's function name, e.g. `cas`, to match the completion's. */
  readonly f: string;
  /** The key. */
  readonly key: string;
  /** The input. */
  readonly input: I;
}

/** An invocation event. */
export interface Invocation<I> extends PendingCall<I> {
  /** The 1-based source line (or event number). */
  readonly line: number;
}

/** A completion event. */
export interface Completion<O> {
  /** The 1-based source line (or event number). */
  readonly line: number;
  /** The function name, which must match the invocation's. */
  readonly f: string;
  /** The key, if the format repeats it; must then match the invocation's. */
  readonly key?: string;
  /** What the completion means; called once the invocation is matched. */
  readonly outcome: () => Outcome<O>;
}

interface PendingSlot<I> extends PendingCall<I> {
  readonly slot: number;
  readonly invokedAt: number;
  readonly invokeLine: number;
}

/** Options of {@linkcode OperationAssembler}. */
export interface OperationAssemblerOptions<I> {
  /** The input's label in error messages, e.g. a file name. */
  readonly source: string;
  /**
   * Whether an operation constrains nothing unless its output is known (a
   * read); such operations are dropped when indeterminate.
   */
  readonly isRead: (input: I) => boolean;
}

/**
 * Turns a stream of invocations and completions, in real-time order, into
 * operations. A process has at most one operation outstanding.
 */
export class OperationAssembler<I, O> {
  #source: string;
  #isRead: (input: I) => boolean;
  #pending = new Map<number | string, PendingSlot<I>>();
  #slots: (Operation<I, O> | undefined)[] = [];
  #position = 0;
  #eventCount = 0;

  /** Creates an empty assembler. */
  constructor(options: OperationAssemblerOptions<I>) {
    this.#source = options.source;
    this.#isRead = options.isRead;
  }

  /** How many invocations and completions were fed in. */
  get eventCount(): number {
    return this.#eventCount;
  }

  /** Records an invocation by `process`. */
  invoke(process: number | string, call: Invocation<I>): void {
    const { line } = call;
    const outstanding = this.#pending.get(process);
    if (outstanding !== undefined) {
      throw new HistoryParseError(
        `process ${process} invokes an operation while its ${outstanding.f} from line ${outstanding.invokeLine} is outstanding`,
        { source: this.#source, line },
      );
    }
    this.#eventCount++;
    this.#pending.set(process, {
      f: call.f,
      key: call.key,
      input: call.input,
      slot: this.#slots.length,
      invokedAt: this.#position++,
      invokeLine: line,
    });
    this.#slots.push(undefined);
  }

  /** Records the completion of `process`'s outstanding operation. */
  complete(process: number | string, completion: Completion<O>): void {
    const { line } = completion;
    const call = this.#pending.get(process);
    if (call === undefined) {
      throw new HistoryParseError(
        `process ${process} completes ${completion.f} but has no operation outstanding`,
        { source: this.#source, line },
      );
    }
    if (call.f !== completion.f || (completion.key !== undefined && completion.key !== call.key)) {
      throw new HistoryParseError(
        `completion ${completion.f} of key ${
          JSON.stringify(completion.key ?? call.key)
        } does not match the ${call.f} of key ${
          JSON.stringify(call.key)
        } invoked at line ${call.invokeLine}`,
        { source: this.#source, line },
      );
    }
    const outcome = completion.outcome();
    this.#eventCount++;
    this.#pending.delete(process);
    const completedAt = this.#position++;
    if (outcome.kind === "dropped") return;
    if (outcome.kind === "indeterminate" && this.#isRead(call.input)) return;
    this.#slots[call.slot] = {
      process,
      key: call.key,
      input: call.input,
      output: outcome.kind === "completed" ? outcome.output : undefined,
      invokedAt: call.invokedAt,
      completedAt: outcome.kind === "completed" ? completedAt : Infinity,
      invokeLine: call.invokeLine,
      completeLine: line,
    };
  }

  /**
   * The operations in invocation order; operations still outstanding become
   * indeterminate.
   */
  finish(): Operation<I, O>[] {
    for (const [process, call] of this.#pending) {
      if (this.#isRead(call.input)) continue;
      this.#slots[call.slot] = {
        process,
        key: call.key,
        input: call.input,
        output: undefined,
        invokedAt: call.invokedAt,
        completedAt: Infinity,
        invokeLine: call.invokeLine,
      };
    }
    this.#pending.clear();
    return this.#slots.filter((operation): operation is Operation<I, O> => operation !== undefined);
  }
}
