/**
 * {@linkcode DenoKvStorage}: replica storage on Deno KV, tying the parts of
 * this folder together. It opens and checks a file (`keys.ts`), finishes a
 * unit a crash interrupted (`redo_log.ts`), loads the instance records
 * (`instances.ts`) and the key-value state (`snapshots.ts`, `effects_log.ts`),
 * commits batches packed into atomic commits (`packing.ts`, `writes.ts`) and
 * installs peers' snapshots (`install.ts`), of a later epoch too, keeping its
 * configuration (`configuration_key.ts`).
 *
 * Each part keeps its own state and forgets, on a failed commit, what the
 * failure may have made untrue; the storage then prepares again before its
 * next call, as a restart would.
 *
 * @module
 */

import { type Configuration, positionCount } from "../../core/configuration.ts";
import type { KvEntry, KvMutation } from "../../kv/state_machine.ts";
import type { RecordCodecOptions } from "../codec.ts";
import { checkReplicaSnapshot, copyConfiguration, epochOf } from "../snapshot_check.ts";
import {
  type EpochStart,
  type LoadedState,
  type PersistBatch,
  type ReplicaSnapshot,
  type ReplicaStorage,
  SnapshotEpochError,
} from "../types.ts";
import { configurationWrite, readConfiguration } from "./configuration_key.ts";
import { EffectsLog, logEffects } from "./effects_log.ts";
import { encodeInstall, installSnapshot } from "./install.ts";
import { floorWrite, Instances } from "./instances.ts";
import { checkFormat, checkSeeded } from "./keys.ts";
import { batchUnits, CommitPacker } from "./packing.ts";
import { RedoLog } from "./redo_log.ts";
import { checkSnapshotEntries, Snapshots } from "./snapshots.ts";
import { AtomicWriter } from "./writes.ts";

/** Settings for {@linkcode DenoKvStorage}. */
export interface DenoKvStorageOptions<C> {
  /** Whether a decoded value is a well-formed command: a record with anything else is refused. */
  readonly isCommand: (value: unknown) => value is C;
  /**
   * Cluster size of epoch 1, the cluster file's: when given, loaded owners
   * and vectors are checked against it. Once a later epoch is installed,
   * they are checked against the positions of its stored configuration
   * (`positionCount`: a member's position is its id) instead.
   */
  readonly replicas?: number;
  /**
   * For tests only: every `commit` throws after this many atomic commits of
   * its batch, as if the process crashed there. Off by default.
   */
  readonly crashAfterCommits?: number;
  /**
   * Bytes of effects log after which a snapshot is wanted, if the log also
   * exceeds twice the last snapshot (default 8 MiB).
   */
  readonly snapshotLogBytes?: number;
  /**
   * For `restore.ts` only: opens a store whose seeding from a backup has not
   * finished, which is otherwise refused.
   */
  readonly seeding?: boolean;
}

/**
 * Opens (creating it if needed) a Deno KV file as replica storage, checking its
 * format version (a fresh file gets the current one).
 *
 * @throws {StorageFormatError} if the file has another format version, or
 *   holds data without one.
 */
export async function openDenoKvStorage<C>(
  path: string,
  options: DenoKvStorageOptions<C>,
): Promise<DenoKvStorage<C>> {
  const kv = await Deno.openKv(path);
  const storage = new DenoKvStorage(kv, options);
  try {
    await storage.prepare();
  } catch (error) {
    storage.close();
    throw error;
  }
  return storage;
}

/**
 * Replica storage on a `Deno.Kv`, which it owns from then on (`close` closes
 * it). Calls are serialized: a `load` or `commit` waits for the previous one.
 */
export class DenoKvStorage<C> implements ReplicaStorage<C> {
  readonly #kv: Deno.Kv;
  readonly #writer: AtomicWriter;
  readonly #redo: RedoLog;
  readonly #log: EffectsLog;
  readonly #snapshots: Snapshots;
  readonly #instances: Instances<C>;
  /** Decodes records; its `replicas` follows `#rows`. */
  readonly #codec: RecordCodecOptions<C>;
  readonly #replicas: number | undefined;
  /** The stored configuration (read when prepared, set by an install of a later epoch). */
  #configuration: Configuration | undefined;
  /** Whether the format was checked and no redo log is pending since the last failure. */
  #prepared = false;
  readonly #seeding: boolean;
  #seededFrom: string | undefined;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  /** Wraps `kv`; nothing is read until {@linkcode prepare}, `load` or `commit`. */
  constructor(kv: Deno.Kv, options: DenoKvStorageOptions<C>) {
    this.#kv = kv;
    this.#writer = new AtomicWriter(kv, options.crashAfterCommits);
    this.#seeding = options.seeding ?? false;
    this.#redo = new RedoLog(kv, this.#writer);
    this.#log = new EffectsLog(kv);
    this.#snapshots = new Snapshots(kv, {
      log: this.#log,
      snapshotLogBytes: options.snapshotLogBytes,
    });
    this.#replicas = options.replicas;
    const rows = () => this.#rows();
    this.#codec = {
      isCommand: options.isCommand,
      get replicas() {
        return rows();
      },
    };
    this.#instances = new Instances(kv, this.#codec);
  }

  /**
   * The SHA-256 of the backup this store was seeded from (`restore.ts`), or
   * `undefined` if it was not; known once prepared (as `openDenoKvStorage`
   * returns it).
   */
  get seededFrom(): string | undefined {
    return this.#seededFrom;
  }

  /** Atomic commits made by `commit` so far (all batches). */
  get atomicCommits(): number {
    return this.#writer.commits;
  }

  /** Units so far too large for one atomic commit, written through the redo log. */
  get redoUnits(): number {
    return this.#redo.units;
  }

  /** Snapshots written by this instance. */
  get snapshotsWritten(): number {
    return this.#snapshots.written;
  }

  /** Instance deletes that named their keys, without listing the range. */
  get keyedDeletes(): number {
    return this.#instances.keyedDeletes;
  }

  /** Cleanups after a snapshot finished by deleting known keys, without listing. */
  get keyedCleanups(): number {
    return this.#snapshots.keyedCleanups;
  }

  /** Bytes of effects log since the current snapshot (counted since `load` or opening). */
  get logBytes(): number {
    return this.#log.bytes;
  }

  /** Whether the effects log has grown enough to be replaced by a snapshot. */
  wantsSnapshot(): boolean {
    return this.#snapshots.wanted();
  }

  /**
   * Checks the format version (setting it on a fresh file) and finishes a
   * unit a crash interrupted. `load` and `commit` do it first if needed.
   *
   * @throws {StorageFormatError} if the file is not readable as this storage.
   */
  prepare(): Promise<void> {
    return this.#serialize(() => this.#prepare());
  }

  /** Reads everything persisted. */
  load(): Promise<LoadedState<C>> {
    return this.#serialize(async () => {
      await this.#prepare();
      return await this.#load();
    });
  }

  /** Persists a batch; durable when the promise resolves. */
  commit(batch: PersistBatch<C>): Promise<void> {
    return this.#serialize(async () => {
      await this.#prepare();
      this.#writer.beginBatch();
      try {
        await this.#commit(batch);
      } catch (error) {
        // What is on disk is a prefix of the batch, maybe with a pending redo
        // log: recover as a restart would before the next call.
        this.#failed();
        throw error;
      } finally {
        this.#writer.endBatch();
      }
    });
  }

  /**
   * Installs a peer's snapshot, atomically across crashes (see `install.ts`);
   * done when the promise resolves. Like a `commit`, it counts towards
   * `crashAfterCommits`.
   *
   * @throws {MalformedSnapshotError} if the snapshot is malformed or could not
   *   be read back (nothing changes).
   * @throws {SnapshotEpochError} if it is of an earlier epoch than the
   *   store's, or of the same one with another configuration (nothing
   *   changes).
   * @throws {SnapshotBelowFloorError} if it is of the same epoch and below
   *   the persisted prune floor (nothing changes).
   */
  install(snapshot: ReplicaSnapshot<C>): Promise<void> {
    return this.#serialize(async () => {
      await this.#prepare();
      const pruneFloor = await this.#instances.readPruneFloor();
      const configuration = this.#configuration;
      const epoch = checkReplicaSnapshot(snapshot, {
        replicas: this.#rows(),
        pruneFloor,
        configuration,
      });
      // The records of a later epoch have a row per position of its configuration.
      const codec = epoch === "same" ? this.#codec : {
        isCommand: this.#codec.isCommand,
        replicas: positionCount(snapshot.configuration!),
      };
      const encoded = encodeInstall(snapshot, epoch, codec);
      this.#writer.beginBatch();
      try {
        await installSnapshot(
          {
            writer: this.#writer,
            redo: this.#redo,
            log: this.#log,
            snapshots: this.#snapshots,
            instances: this.#instances,
          },
          snapshot,
          encoded,
        );
        if (epoch === "later") this.#configuration = copyConfiguration(snapshot.configuration!);
      } catch (error) {
        // On disk: the state before or after, maybe with a pending redo log.
        this.#failed();
        throw error;
      } finally {
        this.#writer.endBatch();
      }
    });
  }

  /**
   * Starts a later epoch in place ({@linkcode ReplicaStorage.startEpoch}):
   * one unit (through the redo log when it does not fit one commit) that
   * logs the effects, as one entry, deletes every record, sets the prune
   * floor to zeros and stores the configuration. The state's snapshot pages
   * and log stay as they are: the new epoch starts from the state they hold.
   *
   * @throws {SnapshotEpochError} if the configuration is not of a later
   *   epoch than the store's (nothing changes).
   */
  startEpoch(start: EpochStart): Promise<void> {
    return this.#serialize(async () => {
      await this.#prepare();
      const stored = epochOf(this.#configuration);
      if (start.configuration.epoch <= stored) {
        throw new SnapshotEpochError(
          `Epoch ${start.configuration.epoch} is not later than the store's ${stored}`,
        );
      }
      // The executions' net changes, in order, as one log entry.
      const net = new Map<string, KvMutation>();
      for (const mutations of start.effects) {
        for (const mutation of mutations) net.set(mutation.key, mutation);
      }
      const effects = logEffects(0, 0, [...net.values()]);
      this.#writer.beginBatch();
      try {
        const writes = await this.#instances.deleteAllWrites();
        writes.push(floorWrite(new Array<number>(positionCount(start.configuration)).fill(0)));
        writes.push(configurationWrite(start.configuration));
        const packer = new CommitPacker({ writer: this.#writer, log: this.#log, redo: this.#redo });
        await packer.add({ writes, effects });
        await packer.flush();
        this.#instances.loaded();
        this.#configuration = copyConfiguration(start.configuration);
      } catch (error) {
        this.#failed();
        throw error;
      } finally {
        this.#writer.endBatch();
      }
    });
  }

  /** Closes the underlying `Deno.Kv`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#kv.close();
  }

  /** Rows of the store's epoch: its configuration's positions, else the `replicas` option. */
  #rows(): number | undefined {
    const configuration = this.#configuration;
    return configuration === undefined ? this.#replicas : positionCount(configuration);
  }

  #serialize<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("Storage is closed"));
    const run = this.#queue.then(operation);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Forgets what a failed write may have made untrue: prepares again, as a restart would. */
  #failed(): void {
    this.#prepared = false;
    this.#snapshots.failed();
    this.#instances.failed();
  }

  async #prepare(): Promise<void> {
    if (this.#prepared) return;
    await checkFormat(this.#kv);
    if (!this.#seeding) this.#seededFrom = (await checkSeeded(this.#kv))?.sha256;
    await this.#redo.replay();
    // After the replay: an install's switch may have set it.
    this.#configuration = await readConfiguration(this.#kv);
    await this.#snapshots.prepare();
    await this.#log.prepare(this.#snapshots.seq);
    this.#prepared = true;
  }

  async #load(): Promise<LoadedState<C>> {
    const configuration = await readConfiguration(this.#kv);
    this.#configuration = configuration;
    const pruneFloor = await this.#instances.readPruneFloor();
    const records = await this.#instances.readRecords();
    // The key-value state: the snapshot, then the log after it, in order.
    const state = new Map<string, KvEntry>();
    const snapshotBytes = await this.#snapshots.readPages(state);
    await this.#log.load(this.#snapshots.seq, state);
    this.#snapshots.loaded(snapshotBytes);
    this.#instances.loaded();
    const loaded: LoadedState<C> = { records, pruneFloor, entries: [...state] };
    return configuration === undefined ? loaded : { ...loaded, configuration };
  }

  async #commit(batch: PersistBatch<C>): Promise<void> {
    // Build every unit before writing anything: a write that can never fit is
    // refused while the batch is still untouched.
    const units = await batchUnits(batch, this.#instances);
    if (batch.snapshot !== undefined) checkSnapshotEntries(batch.snapshot);
    const packer = new CommitPacker({ writer: this.#writer, log: this.#log, redo: this.#redo });
    for (const unit of units) await packer.add(unit);
    // A snapshot is of the state after every log entry so far (this batch's
    // included); it is written a slice per commit from now on.
    if (batch.snapshot !== undefined) this.#snapshots.start(batch.snapshot);
    for (const unit of await this.#snapshots.work()) await packer.add(unit);
    await packer.flush();
  }
}
