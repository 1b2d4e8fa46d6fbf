/**
 * The three sequential specifications the checker ships with.
 *
 * - {@linkcode registerModel}: one register (the jepsen-etcd logs).
 * - {@linkcode kvAppendModel}: get / put / append per key (porcupine's kv files).
 * - {@linkcode kvModel}: get / put / delete / cas per key (this project's histories).
 *
 * @module
 */

import { hashString, type Model, REJECTED, type StepResult } from "./model.ts";

/** A register's or key's value; `null` means absent (jepsen's `nil`). */
export type OptionalValue = string | null;

/** An operation on a single register. */
export type RegisterInput =
  | { readonly f: "read" }
  | { readonly f: "write"; readonly value: string }
  | { readonly f: "cas"; readonly from: OptionalValue; readonly to: string };

/**
 * What a register operation returned: `value` for a read, `ok` for a cas
 * (`false` = the comparison failed and nothing was written), nothing for a write.
 * A missing field constrains nothing.
 */
export interface RegisterOutput {
  /** The value a read returned; `null` = nil. */
  readonly value?: OptionalValue;
  /** Whether a cas applied. */
  readonly ok?: boolean;
}

/** An operation on one key of a get / put / append store. */
export type KvAppendInput =
  | { readonly f: "get" }
  | { readonly f: "put"; readonly value: string }
  | { readonly f: "append"; readonly value: string };

/** What a get / put / append operation returned: `value` for a get. */
export interface KvAppendOutput {
  /** The value a get returned; a missing key reads as `""`. */
  readonly value?: string;
}

/** An operation on one key of this project's store. */
export type KvInput =
  | { readonly f: "get" }
  | { readonly f: "put"; readonly value: string }
  | { readonly f: "delete" }
  | {
    readonly f: "cas";
    /** The expected value; `null` = only if absent (create-only). */
    readonly from: OptionalValue;
    readonly to: string;
  };

/**
 * What an operation of this project's store returned: `value` for a get, `ok`
 * for a cas (`false` = the comparison failed), nothing for put and delete.
 */
export interface KvOutput {
  /** The value a get returned; `null` = absent. */
  readonly value?: OptionalValue;
  /** Whether a cas applied. */
  readonly ok?: boolean;
}

/**
 * The placeholder every unobserved write is given: a value no operation
 * mentions, so that a state holding it is told apart from every observed one.
 */
function unobservedPlaceholder(mentioned: ReadonlySet<string>): string {
  let placeholder = "\u0000unobserved";
  while (mentioned.has(placeholder)) placeholder += "\u0000";
  return placeholder;
}

/**
 * The rewrite behind `mergeUnobservedWrites` for stores of strings read by
 * get and compared by cas. A value is observed when a get returned it or a
 * cas expected it (whatever the cas's outcome). Two states holding
 * unobserved values are indistinguishable: every get with an answer rejects
 * both (its answer is observed, or null), every cas compares false on both
 * (its `from` is observed), and writes ignore the state. So a write of an
 * unobserved value can write the placeholder instead, and `step` accepts the
 * same sequences.
 */
function mergeWritesOfUnobservedValues<I extends { readonly f: string }>(
  operations: readonly { readonly input: I; readonly output: unknown }[],
  isRead: (input: I) => boolean,
  writtenValue: (input: I) => string | undefined,
): I[] {
  const observed = new Set<string>();
  const mentioned = new Set<string>();
  for (const { input, output } of operations) {
    const read = (output as { value?: OptionalValue } | undefined)?.value;
    if (isRead(input) && typeof read === "string") observed.add(read);
    if (input.f === "cas") {
      const from = (input as unknown as { from: OptionalValue }).from;
      if (from !== null) observed.add(from);
      mentioned.add((input as unknown as { to: string }).to);
    }
    const written = writtenValue(input);
    if (written !== undefined) mentioned.add(written);
  }
  for (const value of observed) mentioned.add(value);
  const placeholder = unobservedPlaceholder(mentioned);
  return operations.map(({ input }) => {
    const written = writtenValue(input);
    if (written === undefined || observed.has(written)) return input;
    return { ...input, value: placeholder };
  });
}

function accept<S>(state: S): StepResult<S> {
  return { ok: true, state };
}

function hashOptional(value: OptionalValue): number {
  // Absent must hash apart from every string, including "".
  return value === null ? 0x5bd1e995 : hashString(value);
}

function describeOptional(value: OptionalValue, absent: string): string {
  return value === null ? absent : JSON.stringify(value);
}

function describeOutcome(output: { readonly ok?: boolean } | undefined): string {
  if (output === undefined || output.ok === undefined) return "indeterminate";
  return output.ok ? "ok" : "failed";
}

/** Applies a compare-and-set whose outcome may be known (`ok`) or not. */
function stepCas(
  state: OptionalValue,
  cas: { readonly from: OptionalValue; readonly to: string; readonly ok: boolean | undefined },
): StepResult<OptionalValue> {
  const { from, to, ok } = cas;
  const matches = state === from;
  if (ok === undefined) return accept(matches ? to : state);
  if (ok !== matches) return REJECTED;
  return accept(matches ? to : state);
}

/**
 * One register, initially nil, with read / write / cas: the model of the
 * jepsen-etcd logs. Values are kept as strings (`"3"`), nil as `null`.
 */
export const registerModel: Model<OptionalValue, RegisterInput, RegisterOutput> = {
  name: "register",
  init: () => null,
  step(state, input, output) {
    switch (input.f) {
      case "read":
        if (output?.value === undefined || output.value === state) return accept(state);
        return REJECTED;
      case "write":
        return accept(input.value);
      case "cas":
        return stepCas(state, { from: input.from, to: input.to, ok: output?.ok });
    }
  },
  equal: (a, b) => a === b,
  hash: hashOptional,
  isBlindWrite: (input) => input.f === "write",
  inputKey: (input) => JSON.stringify(input),
  mergeUnobservedWrites: (operations) =>
    mergeWritesOfUnobservedValues(
      operations,
      (input) => input.f === "read",
      (input) => input.f === "write" ? input.value : undefined,
    ),
  describeOperation(input, output) {
    switch (input.f) {
      case "read":
        return output?.value === undefined
          ? "read (indeterminate)"
          : `read -> ${describeOptional(output.value, "nil")}`;
      case "write":
        return `write ${JSON.stringify(input.value)}${
          output === undefined ? " (indeterminate)" : ""
        }`;
      case "cas":
        return `cas ${describeOptional(input.from, "nil")} -> ${JSON.stringify(input.to)} (${
          describeOutcome(output)
        })`;
    }
  },
  describeState: (state) => describeOptional(state, "nil"),
};

/**
 * A get / put / append key's value, with a polynomial hash of it kept up to
 * date on every append so that the search never rehashes the whole string.
 */
export interface KvAppendState {
  /** The value; a missing key holds `""`. */
  readonly value: string;
  /** `polynomialHash(value)`. */
  readonly hash: number;
}

const POLYNOMIAL_BASE = 0x01000193;

/**
 * The polynomial hash `sum(c[i] * B^(n-1-i)) mod 2^32` of a string and
 * `B^n`, from which `hash(a + b) = hash(a) * B^|b| + hash(b)`.
 */
function polynomialHash(text: string): { hash: number; power: number } {
  let hash = 0;
  let power = 1;
  for (let i = 0; i < text.length; i++) {
    hash = (Math.imul(hash, POLYNOMIAL_BASE) + text.charCodeAt(i)) | 0;
    power = Math.imul(power, POLYNOMIAL_BASE);
  }
  return { hash, power };
}

/** Makes a {@linkcode KvAppendState} holding `value`. */
export function kvAppendState(value: string): KvAppendState {
  return { value, hash: polynomialHash(value).hash };
}

/**
 * Keys holding strings with get / put / append, where a missing key reads as
 * `""`: the model of porcupine's kv test histories.
 */
export const kvAppendModel: Model<KvAppendState, KvAppendInput, KvAppendOutput> = {
  name: "kvAppend",
  init: () => ({ value: "", hash: 0 }),
  step(state, input, output) {
    switch (input.f) {
      case "get":
        if (output?.value === undefined || output.value === state.value) return accept(state);
        return REJECTED;
      case "put":
        return accept(kvAppendState(input.value));
      case "append": {
        const suffix = polynomialHash(input.value);
        return accept({
          value: state.value + input.value,
          hash: (Math.imul(state.hash, suffix.power) + suffix.hash) | 0,
        });
      }
    }
  },
  equal: (a, b) => a.hash === b.hash && a.value === b.value,
  hash: (state) => state.hash,
  isBlindWrite: (input) => input.f === "put",
  inputKey: (input) => JSON.stringify(input),
  describeOperation(input, output) {
    const suffix = output === undefined ? " (indeterminate)" : "";
    switch (input.f) {
      case "get":
        return output?.value === undefined
          ? "get (indeterminate)"
          : `get -> ${JSON.stringify(output.value)}`;
      case "put":
        return `put ${JSON.stringify(input.value)}${suffix}`;
      case "append":
        return `append ${JSON.stringify(input.value)}${suffix}`;
    }
  },
  describeState: (state) => JSON.stringify(state.value),
};

/**
 * Keys holding a string or nothing (`null`), with get / put / delete / cas:
 * the model of this project's own histories. A cas `from: null` succeeds only
 * when the key is absent.
 */
export const kvModel: Model<OptionalValue, KvInput, KvOutput> = {
  name: "kv",
  init: () => null,
  step(state, input, output) {
    switch (input.f) {
      case "get":
        if (output?.value === undefined || output.value === state) return accept(state);
        return REJECTED;
      case "put":
        return accept(input.value);
      case "delete":
        return accept(null);
      case "cas":
        return stepCas(state, { from: input.from, to: input.to, ok: output?.ok });
    }
  },
  equal: (a, b) => a === b,
  hash: hashOptional,
  isBlindWrite: (input) => input.f === "put" || input.f === "delete",
  inputKey: (input) => JSON.stringify(input),
  mergeUnobservedWrites: (operations) =>
    mergeWritesOfUnobservedValues(
      operations,
      (input) => input.f === "get",
      (input) => input.f === "put" ? input.value : undefined,
    ),
  describeOperation(input, output) {
    const suffix = output === undefined ? " (indeterminate)" : "";
    switch (input.f) {
      case "get":
        return output?.value === undefined
          ? "get (indeterminate)"
          : `get -> ${describeOptional(output.value, "absent")}`;
      case "put":
        return `put ${JSON.stringify(input.value)}${suffix}`;
      case "delete":
        return `delete${suffix}`;
      case "cas":
        return `cas ${describeOptional(input.from, "absent")} -> ${JSON.stringify(input.to)} (${
          describeOutcome(output)
        })`;
    }
  },
  describeState: (state) => describeOptional(state, "absent"),
};
