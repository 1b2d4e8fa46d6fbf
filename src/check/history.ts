/**
 * The checker's view of a history: complete operations with invocation and
 * completion positions in real-time order.
 *
 * @module
 */

import type { Model } from "./model.ts";

/**
 * One operation of a history.
 *
 * `invokedAt` and `completedAt` place the operation in real time; only their
 * order matters. An operation A precedes B when `A.completedAt < B.invokedAt`;
 * equal positions count as concurrent. An indeterminate operation (timed out,
 * crashed, never answered) has `output: undefined` and `completedAt: Infinity`:
 * it may have taken effect at any point after its invocation, or never.
 */
export interface Operation<I, O> {
  /** The client that issued it; a process has at most one operation outstanding. */
  readonly process: number | string;
  /** The key it touched; keys are checked independently. */
  readonly key: string;
  /** What was asked. */
  readonly input: I;
  /** What was answered; `undefined` when the outcome is unknown. */
  readonly output: O | undefined;
  /** Real-time position of the invocation. */
  readonly invokedAt: number;
  /** Real-time position of the completion; `Infinity` when indeterminate. */
  readonly completedAt: number;
  /** 1-based line of the invocation in the source file, for reports. */
  readonly invokeLine?: number;
  /** 1-based line of the completion in the source file, for reports. */
  readonly completeLine?: number;
}

/** A history together with the model it must satisfy. */
export interface History<S, I, O> {
  /** The sequential specification of one key. */
  readonly model: Model<S, I, O>;
  /** The operations, in any order. */
  readonly operations: readonly Operation<I, O>[];
}

/**
 * Groups operation indices by key, keys in order of first appearance.
 * Linearizability is local (Herlihy & Wing), so each group can be checked alone.
 */
export function partitionByKey(
  operations: readonly Operation<unknown, unknown>[],
): Map<string, number[]> {
  const partitions = new Map<string, number[]>();
  for (let i = 0; i < operations.length; i++) {
    const key = operations[i].key;
    const members = partitions.get(key);
    if (members === undefined) partitions.set(key, [i]);
    else members.push(i);
  }
  return partitions;
}

/** Describes where an operation came from, e.g. `process 3, lines 12-15`. */
export function describeOrigin(operation: Operation<unknown, unknown>): string {
  const { invokeLine, completeLine } = operation;
  let where = "";
  if (invokeLine !== undefined && completeLine !== undefined) {
    where = `, lines ${invokeLine}-${completeLine}`;
  } else if (invokeLine !== undefined) {
    where = `, line ${invokeLine}`;
  }
  return `process ${operation.process}${where}`;
}
