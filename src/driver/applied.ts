/**
 * Which instances' effects the key-value state holds: per row, a prefix and
 * the numbers above it. The core knows what it executed and what is durable,
 * but the driver applies executions a Ready later than the core decides them,
 * so a snapshot of the state names exactly the instances the driver applied
 * (`ReplicaSnapshot.executedPrefix` and its records).
 *
 * @module
 */

import type { Deps } from "../core/deps.ts";
import type { Replica } from "../core/replica.ts";
import type { InstanceRecord } from "../core/types.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { KvStateMachine } from "../kv/state_machine.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";

/** The set of instances applied to the key-value state. */
export class AppliedSet {
  readonly #prefix: number[];
  readonly #above: Set<number>[];

  /**
   * The set after a load: every instance up to the prune floor, and the
   * records marked executed.
   */
  constructor(
    replicas: number,
    pruneFloor: Deps | undefined,
    records: Iterable<InstanceRecord<unknown>>,
  ) {
    this.#prefix = pruneFloor === undefined ? new Array<number>(replicas).fill(0) : [...pruneFloor];
    this.#above = Array.from({ length: replicas }, () => new Set<number>());
    for (const record of records) {
      if (record.executed && record.owner >= 0 && record.owner < replicas) {
        this.add(record.owner, record.number);
      }
    }
  }

  /** Notes that instance `(owner, number)` was applied. */
  add(owner: number, number: number): void {
    const prefix = this.#prefix[owner]!;
    if (number <= prefix) return;
    const above = this.#above[owner]!;
    if (number !== prefix + 1) {
      above.add(number);
      return;
    }
    let next = number;
    while (above.delete(next + 1)) next++;
    this.#prefix[owner] = next;
  }

  /** Whether instance `(owner, number)` was applied. */
  has(owner: number, number: number): boolean {
    return number <= (this.#prefix[owner] ?? 0) || this.#above[owner]?.has(number) === true;
  }

  /** Per row, every instance up to here is applied. */
  get prefix(): Deps {
    return this.#prefix;
  }

  /** The applied instances above the prefix, as `[owner, number]`, by row then number. */
  above(): [number, number][] {
    const result: [number, number][] = [];
    this.#above.forEach((numbers, owner) => {
      for (const number of [...numbers].sort((a, b) => a - b)) result.push([owner, number]);
    });
    return result;
  }
}

/**
 * The snapshot of `state` right after the barrier command `barrier` was
 * applied: `applied` names exactly the instances it holds, and `core` still
 * holds the records of those above the prefix (an instance is pruned only
 * once executed durably everywhere it counts, which puts it in the prefix).
 * The entries are immutable objects: copying the references is enough.
 */
export function snapshotAt(
  barrier: string,
  applied: AppliedSet,
  core: Replica<KvCommand>,
  state: KvStateMachine,
): ReplicaSnapshot<KvCommand> {
  // Everything the core executed durably was applied first: a shorter
  // applied prefix would ship a snapshot that claims less than the state
  // holds, or hold back the receiver's floor below what its peers pruned.
  const durable = core.executedFrontier;
  for (let row = 0; row < durable.length; row++) {
    if (applied.prefix[row]! < durable[row]!) {
      throw new Error(
        `Applied prefix [${applied.prefix.join(" ")}] is behind the durably executed ` +
          `[${durable.join(" ")}] (above: ${JSON.stringify(applied.above().slice(0, 20))})`,
      );
    }
  }
  const records = applied.above().map(([owner, number]) => {
    const record = core.instance(owner, number);
    if (record === undefined) {
      throw new Error(`Applied instance ${owner}.${number} is not held by the core`);
    }
    return { ...record, executed: true };
  });
  return {
    barrier,
    executedPrefix: [...applied.prefix],
    records,
    entries: Array.from(state.entries()),
    digest: state.digest,
  };
}
