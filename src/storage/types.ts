/**
 * What a replica persists, and the interface every storage implements.
 *
 * @module
 */

import type { Configuration } from "../core/configuration.ts";
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
  /**
   * The whole key-value state as it is after this batch's effects, given when
   * {@linkcode ReplicaStorage.wantsSnapshot} asked for it: storage may then
   * replace the changes it logged so far with it. The last atomic unit of the
   * batch; it changes nothing that `load` returns (the state is the same).
   */
  readonly snapshot?: readonly (readonly [string, KvEntry])[];
}

/** What storage held when a replica starts. */
export interface LoadedState<C> {
  /** Every instance record not deleted. */
  readonly records: readonly InstanceRecord<C>[];
  /** The last persisted prune floor, if any. */
  readonly pruneFloor: Deps | undefined;
  /** The key-value state as of the last executed marker persisted. */
  readonly entries: readonly (readonly [string, KvEntry])[];
  /**
   * The configuration of the last epoch installed ({@linkcode ReplicaStorage.install}
   * of a snapshot of a later epoch); absent if none ever was: the replica is
   * in epoch 1, whose configuration is the cluster file's.
   */
  readonly configuration?: Configuration;
}

/**
 * A replica's durable state. Contract (checked by the shared suite in
 * `tests/storage/contract.ts`):
 * - `commit` applies a batch so that, after a crash at any point, what `load`
 *   returns is the state before the batch plus a prefix of its atomic units
 *   (one per record, with its effects), never a partial unit; after `commit`
 *   resolves, all of it.
 * - `load` returns the latest record of each instance, without deleted ones,
 *   and the key-value state the effects (and snapshots) add up to.
 */
export interface ReplicaStorage<C> {
  /** Reads everything persisted. */
  load(): PromiseLike<LoadedState<C>>;
  /**
   * Persists a batch durably. A promise-like, so that the simulator's disk can
   * complete it on virtual time, calling back synchronously.
   */
  commit(batch: PersistBatch<C>): PromiseLike<void>;
  /**
   * Whether the next batch should carry a {@linkcode PersistBatch.snapshot}
   * (storage that logs changes asks when its log has grown enough). Absent:
   * never.
   */
  wantsSnapshot?(): boolean;
  /**
   * Replaces what this replica holds with a snapshot from a peer
   * ({@linkcode ReplicaSnapshot}), as one atomic unit: after a crash at any
   * point `load` returns either the state before or all of the state after.
   * Every check comes before the first change: a refused snapshot changes
   * nothing.
   *
   * Epochs: let E be the stored epoch (that of `load`'s `configuration`, 1
   * without one) and S the snapshot's (that of its `configuration`, 1
   * without one). An epoch is a fresh instance space: the instance records of
   * one say nothing about another's.
   *
   * S = E (the same epoch): after it, `load` returns
   * - `pruneFloor`: the snapshot's `executedPrefix`;
   * - `records`: the snapshot's records; every record held before whose number
   *   is above the prefix of its row and that is not among the snapshot's
   *   records, kept, with `executed: false` (its effects are not in the
   *   snapshot's state; it executes again); none at or below the prefix;
   * - `entries`: the snapshot's entries;
   * - `configuration`: unchanged (a snapshot's configuration, if it carries
   *   one, equals the stored one; with none stored, the epoch-1 configuration
   *   a snapshot carries is not stored: it is the cluster file's).
   *
   * S > E (a later epoch: the replica executed the configuration change that
   * ends epoch E, or fell behind it): after it, `load` returns
   * - `pruneFloor`: the snapshot's `executedPrefix`, whatever the floor was
   *   (it is not compared with it);
   * - `records`: the snapshot's records only; every record held before is
   *   dropped, executed or not, above the prefix or not;
   * - `entries`: the snapshot's entries;
   * - `configuration`: the snapshot's.
   *
   * The snapshot's `executedPrefix` has a row per position of its
   * configuration when it carries one (`positionCount`: a member's position
   * is its id, so removed members leave empty rows); otherwise a row per
   * replica of the current epoch.
   *
   * Must not be called while a `commit` is in flight.
   *
   * @throws {SnapshotEpochError} if S < E, or if S = E and the snapshot
   *   carries a configuration other than the stored one (nothing changes).
   * @throws {SnapshotBelowFloorError} if S = E and the snapshot's prefix is
   *   below the persisted prune floor in some row (nothing changes: this
   *   replica is ahead of the snapshot there).
   * @throws {MalformedSnapshotError} (`snapshot_check.ts`) if the snapshot is
   *   malformed: among others, a configuration that is not valid
   *   (`configurationProblem`), or a prefix whose rows are not its positions
   *   (nothing changes).
   */
  install(snapshot: ReplicaSnapshot<C>): PromiseLike<void>;
  /**
   * Starts a later epoch on the state held, in place (the replica executed
   * the configuration change that ends the stored epoch, and the state after
   * it is the new epoch's first): one atomic unit that applies `effects`
   * (the mutations of executions not yet persisted, in order), drops every
   * instance record, sets the prune floor to zeros over the new
   * configuration's positions, and stores the configuration. After it, `load`
   * returns what {@linkcode ReplicaStorage.install} of a snapshot of that
   * state would, without writing the state again (a snapshot of 100,000 keys
   * took about half a second to write). Optional: without it the driver
   * installs a snapshot.
   *
   * Must not be called while a `commit` is in flight.
   *
   * @throws {SnapshotEpochError} if `configuration` is not of a later epoch
   *   than the store's (nothing changes).
   */
  startEpoch?(start: EpochStart): PromiseLike<void>;
  /** Releases the storage. */
  close(): void;
}

/** What {@linkcode ReplicaStorage.startEpoch} takes. */
export interface EpochStart {
  /** The new epoch's configuration. */
  readonly configuration: Configuration;
  /** Mutations of executions not yet persisted, in execution order. */
  readonly effects: readonly (readonly KvMutation[])[];
}

/**
 * What a replica that peers pruned past needs to go on: the key-value state
 * of a peer at one point of the execution order (a barrier command that
 * conflicts with every command, so every replica executes the same set of
 * instances before it), and exactly which instances that state includes.
 */
export interface ReplicaSnapshot<C> {
  /** Request id of the barrier command the state was read at (checked against a second replica's digest). */
  readonly barrier: string;
  /** Per row, every instance up to this number is executed in `entries` (the receiver's new prune floor). */
  readonly executedPrefix: Deps;
  /**
   * The instances executed in `entries` above `executedPrefix`: their records,
   * committed and `executed: true`. The receiver keeps them (its conflict
   * index must know them).
   */
  readonly records: readonly InstanceRecord<C>[];
  /** The key-value state at the barrier. */
  readonly entries: readonly (readonly [string, KvEntry])[];
  /** `stateDigestOf(entries)`: equal on every replica at the same barrier. */
  readonly digest: string;
  /**
   * The configuration of the epoch the snapshot was taken in; absent: the
   * bootstrap configuration, epoch 1. A snapshot of a later epoch than the
   * receiver's starts that epoch there ({@linkcode ReplicaStorage.install}).
   */
  readonly configuration?: Configuration;
  /**
   * The state at no barrier another replica executed (the state now, served
   * to a peer behind an epoch by a replica that restarted since the epoch
   * began): no digest elsewhere can check it. Not written to a snapshot file.
   */
  readonly unchecked?: boolean;
}

/** A snapshot was refused: the receiver already pruned past it in some row. */
export class SnapshotBelowFloorError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "SnapshotBelowFloorError";
  }
}

/**
 * A snapshot was refused for its epoch: it is of an earlier epoch than the
 * receiver's, or of the same epoch with another configuration.
 */
export class SnapshotEpochError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "SnapshotEpochError";
  }
}
