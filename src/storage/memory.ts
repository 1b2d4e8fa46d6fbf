/**
 * In-memory storage: the reference implementation of the storage contract, and
 * the simulator's disk. What it holds survives a simulated crash; what the
 * replica held in memory does not.
 *
 * @module
 */

import { type Configuration, positionCount } from "../core/configuration.ts";
import type { Deps } from "../core/deps.ts";
import { instanceKey } from "../core/instance.ts";
import type { InstanceRecord } from "../core/types.ts";
import type { KvEntry, KvMutation } from "../kv/state_machine.ts";
import {
  checkReplicaSnapshot,
  copyConfiguration,
  epochOf,
  prunedBy,
  snapshotRecordKeys,
} from "./snapshot_check.ts";
import {
  type EpochStart,
  type LoadedState,
  type PersistBatch,
  type ReplicaSnapshot,
  type ReplicaStorage,
  SnapshotEpochError,
} from "./types.ts";

/** Storage held in memory; synchronous underneath, asynchronous to fit the interface. */
export class MemoryStorage<C> implements ReplicaStorage<C> {
  readonly #records = new Map<number, InstanceRecord<C>>();
  readonly #entries = new Map<string, KvEntry>();
  #pruneFloor: Deps | undefined;
  #configuration: Configuration | undefined;
  #commits = 0;
  #snapshots = 0;
  #installs = 0;
  readonly #snapshotEveryCommits: number | undefined;

  /**
   * Creates empty storage. With `snapshotEveryCommits`, it asks for a
   * snapshot (`wantsSnapshot`) after every that many commits, as log-based
   * storage does when its log grows, so that callers' snapshot path runs in
   * tests and the simulator.
   */
  constructor(options: { readonly snapshotEveryCommits?: number } = {}) {
    this.#snapshotEveryCommits = options.snapshotEveryCommits;
  }

  /** {@linkcode ReplicaStorage.wantsSnapshot}: every `snapshotEveryCommits` commits, if set. */
  wantsSnapshot(): boolean {
    const every = this.#snapshotEveryCommits;
    return every !== undefined && every > 0 && this.#commits % every === every - 1;
  }

  /** Number of snapshots committed so far. */
  get snapshots(): number {
    return this.#snapshots;
  }

  /** Number of batches committed so far. */
  get commits(): number {
    return this.#commits;
  }

  /** Number of instance records held. */
  get recordCount(): number {
    return this.#records.size;
  }

  /** Number of key-value entries held. */
  get entryCount(): number {
    return this.#entries.size;
  }

  /** {@linkcode ReplicaStorage.load}, synchronously. */
  loadSync(): LoadedState<C> {
    const state: LoadedState<C> = {
      records: [...this.#records.values()],
      pruneFloor: this.#pruneFloor,
      entries: [...this.#entries.entries()],
    };
    const configuration = this.#configuration;
    return configuration === undefined ? state : { ...state, configuration };
  }

  /**
   * {@linkcode ReplicaStorage.commit}, synchronously. With `units`, only the
   * first `units` atomic units are applied: a crash in the middle of a commit.
   * A snapshot, the last unit, replaces the entries (with the same state, when
   * the caller keeps the contract).
   */
  commitSync(batch: PersistBatch<C>, units = Number.POSITIVE_INFINITY): void {
    let applied = 0;
    const effects = batch.effects;
    let effectsApplied = 0;
    let appliedKeys: Set<number> | undefined;
    for (const record of batch.records) {
      if (applied >= units) return;
      applied++;
      switch (record.kind) {
        case "floor":
          this.#pruneFloor = [...record.pruneFloor];
          break;
        case "delete":
          for (let number = record.from; number <= record.to; number++) {
            this.#records.delete(instanceKey(record.owner, number));
          }
          break;
        case "instance": {
          const key = instanceKey(record.owner, record.number);
          this.#records.set(key, record);
          const mutations = effects.get(key);
          if (mutations !== undefined && !(appliedKeys?.has(key) ?? false)) {
            this.#apply(mutations);
            effectsApplied++;
            (appliedKeys ??= new Set()).add(key);
          }
          break;
        }
      }
    }
    if (effectsApplied < effects.size) {
      for (const [key, mutations] of effects) {
        if (appliedKeys?.has(key)) continue;
        if (applied >= units) return;
        applied++;
        this.#apply(mutations);
      }
    }
    if (batch.snapshot !== undefined) {
      if (applied >= units) return;
      applied++;
      this.#entries.clear();
      for (const [key, entry] of batch.snapshot) this.#entries.set(key, entry);
      this.#snapshots++;
    }
    this.#commits++;
  }

  /**
   * {@linkcode ReplicaStorage.install}, synchronously and as one step: every
   * check comes before the first change, and nothing after it can fail, so a
   * simulated crash (which falls between steps) keeps all of it or none.
   *
   * @throws {MalformedSnapshotError} if the snapshot is malformed.
   * @throws {SnapshotEpochError} if it is of an earlier epoch, or of the same
   *   one with another configuration.
   * @throws {SnapshotBelowFloorError} if it is of the same epoch and below
   *   the prune floor.
   */
  installSync(snapshot: ReplicaSnapshot<C>): void {
    const epoch = checkReplicaSnapshot(snapshot, {
      pruneFloor: this.#pruneFloor,
      configuration: this.#configuration,
    });
    const prefix = snapshot.executedPrefix;
    const replaced = snapshotRecordKeys(snapshot);
    if (epoch === "later") {
      // A fresh instance space: every record held is of an older epoch.
      this.#records.clear();
      this.#configuration = copyConfiguration(snapshot.configuration!);
    }
    for (const [key, record] of this.#records) {
      if (prunedBy(prefix, record)) this.#records.delete(key);
      else if (record.executed && !replaced.has(key)) {
        // Its effects are not in the snapshot's state: it executes again.
        this.#records.set(key, { ...record, executed: false });
      }
    }
    for (const record of snapshot.records) {
      this.#records.set(instanceKey(record.owner, record.number), record);
    }
    this.#pruneFloor = [...prefix];
    this.#entries.clear();
    for (const [key, entry] of snapshot.entries) this.#entries.set(key, entry);
    this.#installs++;
  }

  /** Number of snapshots installed so far. */
  get installs(): number {
    return this.#installs;
  }

  /** Reads everything persisted. */
  load(): Promise<LoadedState<C>> {
    return Promise.resolve(this.loadSync());
  }

  /** Persists a batch. */
  commit(batch: PersistBatch<C>): Promise<void> {
    this.commitSync(batch);
    return Promise.resolve();
  }

  /** Installs a snapshot from a peer ({@linkcode installSync}). */
  install(snapshot: ReplicaSnapshot<C>): Promise<void> {
    try {
      this.installSync(snapshot);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Starts a later epoch in place ({@linkcode ReplicaStorage.startEpoch}). */
  startEpoch(start: EpochStart): Promise<void> {
    try {
      this.startEpochSync(start);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@linkcode MemoryStorage.startEpoch}, done before it returns. */
  startEpochSync(start: EpochStart): void {
    const stored = epochOf(this.#configuration);
    if (start.configuration.epoch <= stored) {
      throw new SnapshotEpochError(
        `Epoch ${start.configuration.epoch} is not later than the store's ${stored}`,
      );
    }
    for (const mutations of start.effects) this.#apply(mutations);
    this.#records.clear();
    this.#configuration = copyConfiguration(start.configuration);
    this.#pruneFloor = new Array<number>(positionCount(start.configuration)).fill(0);
  }

  /** Nothing to release. */
  close(): void {}

  #apply(mutations: readonly KvMutation[]): void {
    for (const mutation of mutations) {
      if (mutation.kind === "set") {
        this.#entries.set(mutation.key, mutation.entry);
      } else {
        this.#entries.delete(mutation.key);
      }
    }
  }
}
