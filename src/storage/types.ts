/**
 * What a replica persists, and the interface every storage implements.
 *
 * @module
 */

import type { Deps } from "../core/deps.ts";
import type { InstanceRecord, StorageRecord } from "../core/types.ts";
import type { KvEntry, KvMutation } from "../kv/state_machine.ts";

/** Everything one Ready (plus the effects of the previous one's executions) persists. */
export interface PersistBatch<C> {
  /**
   * The core's records, applied in order. An instance record that marks an
   * instance executed carries that instance's state-machine changes with it
   * (`effects`), in the same atomic unit.
   */
  readonly records: readonly StorageRecord<C>[];
  /** State-machine changes by instance key (`instanceKey(owner, number)`). */
  readonly effects: ReadonlyMap<number, readonly KvMutation[]>;
}

/** What storage held when a replica starts. */
export interface LoadedState<C> {
  /** Every instance record not deleted. */
  readonly records: readonly InstanceRecord<C>[];
  /** The last persisted prune floor, if any. */
  readonly pruneFloor: Deps | undefined;
  /** The key-value state as of the last executed marker persisted. */
  readonly entries: readonly (readonly [string, KvEntry])[];
}

/**
 * A replica's durable state. Contract (checked by the shared suite in
 * `tests/storage/contract.ts`):
 * - `commit` applies a batch so that, after a crash at any point, what `load`
 *   returns is the state before the batch plus a prefix of its atomic units
 *   (one per record, with its effects), never a partial unit; after `commit`
 *   resolves, all of it.
 * - `load` returns the latest record of each instance, without deleted ones.
 */
export interface ReplicaStorage<C> {
  /** Reads everything persisted. */
  load(): Promise<LoadedState<C>>;
  /** Persists a batch durably. */
  commit(batch: PersistBatch<C>): Promise<void>;
  /** Releases the storage. */
  close(): void;
}
