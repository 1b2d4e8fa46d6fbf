/**
 * The sequential specification a history is checked against.
 *
 * @module
 */

/** The outcome of applying one operation to a model state. */
export type StepResult<S> =
  | { readonly ok: true; readonly state: S }
  | { readonly ok: false };

/**
 * A sequential specification of one key's state.
 *
 * The checker splits a history per key and runs the model on each key
 * separately, so a model describes a single key (or a single register).
 *
 * `output` is `undefined` when the operation is indeterminate (it timed out or
 * never completed): `step` must then accept the operation and apply its effect,
 * because the checker models "it never happened" by linearizing it after every
 * determinate operation.
 */
export interface Model<S, I, O> {
  /** Short name shown in reports, e.g. `register`. */
  readonly name: string;
  /** The state of a key before any operation. */
  init(): S;
  /** Applies `input` to `state`; rejects when `output` could not have been observed. */
  step(state: S, input: I, output: O | undefined): StepResult<S>;
  /** Whether two states are the same; used by the search's state cache. */
  equal(a: S, b: S): boolean;
  /** A 32-bit hash consistent with `equal`; used by the search's state cache. */
  hash(state: S): number;
  /**
   * Whether the operation sets the state without looking at it (a blind
   * write, such as put or delete). Optional: it lets the search place an
   * indeterminate blind write only right before an operation that can
   * observe it, which keeps histories with many timed-out writes tractable.
   * Must be `true` only if `step` accepts the operation with an unknown
   * output in every state, with a resulting state that does not depend on
   * the state before.
   */
  isBlindWrite?(input: I): boolean;
  /**
   * A string equal for two inputs exactly when the inputs are equal.
   * Optional: it lets the search treat indeterminate operations with equal
   * inputs as interchangeable.
   */
  inputKey?(input: I): string;
  /**
   * Optional: one key's inputs rewritten so that writes of values no
   * operation of the key can observe all write one placeholder value. Must
   * return inputs (one per operation, in order) under which `step` accepts
   * exactly the same sequences. It lets the state cache and reduction 3 of the
   * search treat those writes as one state and one input: with many timed-out
   * writes of unique values, the difference between a search of seconds and
   * one that runs out of budget.
   */
  mergeUnobservedWrites?(
    operations: readonly { readonly input: I; readonly output: O | undefined }[],
  ): I[];
  /** One line describing an operation, e.g. `cas 1 -> 2 = false`. */
  describeOperation(input: I, output: O | undefined): string;
  /** One line describing a state, e.g. `"v1"` or `absent`. */
  describeState(state: S): string;
}

/** The rejection every model returns; shared so that rejecting allocates nothing. */
export const REJECTED: StepResult<never> = Object.freeze({ ok: false });

/** Returns a 32-bit FNV-1a hash of a string's UTF-16 code units. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  }
  return hash | 0;
}
