/**
 * Replica storage on Deno KV (its SQLite backend, a local file).
 *
 * ## Layout (format 2)
 *
 * | key | value |
 * | --- | --- |
 * | `["meta", "format"]` | `2` (a number): the layout version; a file with another one is refused |
 * | `["meta", "floor"]` | the prune floor, a MessagePack array of instance numbers |
 * | `["i", owner, number, chunk]` | an instance record, MessagePack (see `codec.ts`) split into chunks of at most {@linkcode CHUNK_BYTES} bytes; chunk 0 starts with the chunk count (uint32, big-endian) |
 * | `["e", seq, chunk]` | the effects log: the key-value changes of the executed instances of one atomic commit (their `encodeEffects` back to back), chunked like a record; `seq` counts up |
 * | `["meta", "snapshot"]` | the current snapshot, MessagePack `[generation, seq, pages]`: the key-value state after every log entry up to `seq` |
 * | `["s", generation, page]` | the snapshot's pages (`encodeSnapshotPages`) |
 * | `["redo", chunk]` | the redo log of a unit too large for one atomic commit, present only while such a unit is applied |
 *
 * ## Why a log and snapshots
 *
 * The key-value state is kept as a log of changes plus a periodic snapshot,
 * not as one Deno KV entry per key (format 1): an update of a random key of a
 * large state touches a random page of SQLite's B-tree, which cost 36 µs of
 * CPU per key on 100,000 keys against 9 µs on 1,000 (measured with Deno 2.9.6
 * on the 2-core CI machine), against one sequential append per atomic commit
 * here (etcd's bbolt keys its history by revision for the same reason). The
 * state is the snapshot plus the log after it; when the log outgrows both
 * {@linkcode DenoKvStorageOptions.snapshotLogBytes} (8 MiB) and twice the
 * last snapshot, `wantsSnapshot` asks the replica for its state, which is
 * written a slice per commit, and the log it covers is then deleted (listed
 * once per process; after that by the keys the storage knows it wrote,
 * because a listing reads every value). So the
 * file holds the state a few times over at most (a log of twice the state,
 * and two snapshots while a new one is written), plus the instances not yet
 * pruned.
 *
 * Every value written by a commit is a `Uint8Array`, so that its size is its
 * length and the packing below can respect Deno KV's limits exactly.
 *
 * A record rewritten with fewer chunks than before leaves its old higher
 * chunks behind: finding them would cost a read per write. They are harmless
 * (chunk 0's count says where the record ends) and go when the instance's
 * record is deleted, with every other chunk. A storage that loaded knows every
 * chunk key in the file (most records have chunk 0 only; the others are noted
 * when listed by `load` or written), so it deletes a range of instances by key;
 * one that did not, or after a failed commit, lists the range, which reads
 * every value (about 40 listings a second per replica under load, each on the
 * commit path, were 3-5 % of the server CPU per operation).
 *
 * ## Commits
 *
 * A batch is a sequence of atomic units (one per record, an instance record
 * with its execution effects; then one per leftover set of effects), exactly
 * as in `MemoryStorage`. Units are packed greedily, in order, into
 * as few `kv.atomic()` commits as Deno KV's limits allow (1000 mutations,
 * 800 KiB of keys and values, 80 KiB of keys per commit: `ext/kv/config.rs`
 * and `op_kv_atomic_write` in denoland/deno, checked against Deno 2.9.6 by
 * `tests/storage/storage_test.ts`); a unit is never split between commits.
 * A snapshot, when the batch carries one, is written a slice per commit from
 * then on (this one included): its pages, then the switch of
 * `["meta", "snapshot"]` (itself atomic), then the deletes of what it
 * replaced; a crash anywhere in it leaves the same key-value state.
 *
 * A unit that does not fit in one commit at all (a record with many large
 * commands, effects with more than 1000 changes, a delete of a long range) is
 * written through the redo log: its writes are first stored under `["redo"]`
 * (chunk 0 last, which marks the log complete), then applied in as many
 * commits as needed, the last of which deletes the marker. A crash before the
 * marker leaves the unit out; after it, the next `load` or `commit` applies it
 * again (its writes are blind sets and deletes, so applying them twice is the
 * same as once). Either way the unit is all or nothing. A single write always
 * fits in one commit: keys are short (`["i", owner, number, chunk]`,
 * `["e", seq, chunk]`, `["s", generation, page]`), and every value is a chunk
 * or page of at most 65536 bytes; so one set costs far less than the 819200
 * bytes allowed. A key-value entry too large for a snapshot page (the key-value
 * layer's limits keep entries well under it) is refused before anything of the
 * batch is written.
 *
 * ## Durability
 *
 * Deno opens the SQLite file in WAL mode and leaves `synchronous` at SQLite's
 * default, FULL (`ext/kv/sqlite.rs` in denoland/deno; the newer
 * `ext/kv/impl/sqlite_backend.ts` does the same), under which SQLite syncs the
 * WAL file at every transaction commit (sqlite.org/pragma.html#pragma_synchronous).
 * So an atomic commit is on disk when its promise resolves, and `commit`
 * resolves after its last atomic commit. Deno documents the same guarantee
 * ("Data is instantly durable once a transaction is committed", deno.com/kv),
 * and `strace` of Deno 2.9.6 shows one `fsync` of the WAL per atomic commit.
 *
 * @module
 */

import type { Deps } from "../core/deps.ts";
import { instanceKey, isInstanceKey, keyNumber, keyOwner } from "../core/instance.ts";
import type { InstanceRecord } from "../core/types.ts";
import type { KvEntry, KvMutation } from "../kv/state_machine.ts";
import {
  decodeDeps,
  decodeEffectsStream,
  decodeMsgpack,
  decodeRecord,
  decodeSnapshotPage,
  encodeDeps,
  encodedKeyLength,
  encodeEffects,
  encodeMsgpack,
  encodeRecordShared,
  encodeSnapshotPages,
  SNAPSHOT_PAGE_BYTES,
  snapshotEntryBound,
} from "./codec.ts";
import type { LoadedState, PersistBatch, ReplicaStorage } from "./types.ts";

/** The layout version this build reads and writes. */
export const FORMAT_VERSION = 2;
/** Largest chunk payload of a record or redo log, in bytes (Deno KV's 64 KiB value limit, less the 4-byte count). */
export const CHUNK_BYTES = 65536 - 4;

/** Deno KV's limits on one atomic commit (denoland/deno `ext/kv/config.rs`). */
export const DENO_KV_LIMITS = {
  /** Mutations per atomic commit. */
  mutations: 1000,
  /** Bytes of keys and values per commit: each key counts once, a set's key once more, plus its value. */
  totalBytes: 800 * 1024,
  /** Bytes of the keys of set mutations per commit. */
  keyBytes: 80 * 1024,
  /** Bytes of one encoded key. */
  key: 2048,
  /** Bytes of one value. */
  value: 65536,
} as const;

const FORMAT_KEY: Deno.KvKey = ["meta", "format"];
const FLOOR_KEY: Deno.KvKey = ["meta", "floor"];
const SNAPSHOT_KEY: Deno.KvKey = ["meta", "snapshot"];
const INSTANCES = "i";
const LOG = "e";
const SNAPSHOT = "s";
const REDO = "redo";
/** Default of {@linkcode DenoKvStorageOptions.snapshotLogBytes}. */
const DEFAULT_SNAPSHOT_LOG_BYTES = 8 * 1024 * 1024;
/** Bytes of snapshot pages (by estimate) each commit writes while a snapshot is built. */
export const SNAPSHOT_BYTES_PER_COMMIT = 256 * 1024;
/** Replaced log keys each commit deletes after a snapshot. */
export const CLEANUP_PER_COMMIT = 500;
/** An upper bound of the encoded length of a log key `["e", seq, chunk]`. */
const LOG_KEY_BYTES = 40;
/** Entries read per round trip when listing (Deno KV reads at most 1000). */
const LIST_BATCH = 500;
/**
 * Most keys a delete names without listing: half of an atomic commit's 1000
 * mutations, so that it rarely needs the redo log. A wider range is listed
 * instead, so that its work is bounded by the records stored, not by the range.
 */
const KEYED_DELETE_KEYS = 500;

/** Settings for {@linkcode DenoKvStorage}. */
export interface DenoKvStorageOptions<C> {
  /** Whether a decoded value is a well-formed command: a record with anything else is refused. */
  readonly isCommand: (value: unknown) => value is C;
  /** Cluster size: when given, loaded owners and vectors are checked against it. */
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
}

/** An atomic unit of a batch: writes, and the effects it logs. */
interface Unit {
  readonly writes: readonly Write[];
  /** `encodeEffects` of the unit's instance, when it has changes. */
  readonly effects?: Uint8Array;
}

/** A snapshot being written, a slice per commit. */
interface SnapshotBuild {
  readonly generation: number;
  /** The log entries it covers: up to this one. */
  readonly seq: number;
  readonly entries: readonly (readonly [string, KvEntry])[];
  /** The next entry to write. */
  next: number;
  /** Pages written so far. */
  pages: number;
  /** Bytes of pages written so far. */
  bytes: number;
  /** `logBytes` when it started: what it covers. */
  readonly logBytes: number;
}

/** The current snapshot's place. */
interface SnapshotMeta {
  readonly generation: number;
  /** Log entries up to this one are in the snapshot. */
  readonly seq: number;
  readonly pages: number;
}

/** A file that is not, or not any more, readable as this storage. */
export class StorageFormatError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "StorageFormatError";
  }
}

/** Thrown by the {@linkcode DenoKvStorageOptions.crashAfterCommits} failpoint. */
export class FailpointCrash extends Error {
  /** Creates the error. */
  constructor(commits: number) {
    super(`Failpoint crashed the commit after ${commits} atomic commits`);
    this.name = "FailpointCrash";
  }
}

/** One write of a unit: a set (with `value`) or a delete. */
interface Write {
  readonly key: Deno.KvKey;
  readonly value: Uint8Array | null;
  /** `encodedKeyLength(key)`. */
  readonly keyBytes: number;
}

/** What a group of writes costs against {@linkcode DENO_KV_LIMITS}. */
interface Cost {
  mutations: number;
  totalBytes: number;
  keyBytes: number;
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
  readonly #options: DenoKvStorageOptions<C>;
  /** Whether the format was checked and no redo log is pending since the last failure. */
  #prepared = false;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();
  #atomicCommits = 0;
  /** Atomic commits of the batch being committed, for the failpoint; undefined outside `commit`. */
  #batchCommits: number | undefined;
  #redoUnits = 0;
  /** The last effects log sequence number used. */
  #logSeq = 0;
  /** Bytes of effects log written since the current snapshot (as far as known). */
  #logBytes = 0;
  /** Bytes of the current snapshot. */
  #snapshotBytes = 0;
  #snapshot: SnapshotMeta | undefined;
  #snapshotsWritten = 0;
  /** The snapshot being written, if any. */
  #building: SnapshotBuild | undefined;
  /** The snapshot whose replaced log and pages are still being deleted, if any. */
  #cleanup: SnapshotMeta | undefined;
  /** Whether `load` ran in this process, so every log entry after the snapshot is known here. */
  #loaded = false;
  /**
   * Whether every log entry and snapshot page in the file is known here, so
   * that cleanup can delete by key instead of listing (which reads every
   * value: up to 500 log entries and then every page of two snapshots, 10 to
   * 110 ms per commit with 100,000 keys). True after a listed cleanup of a
   * snapshot this process wrote, in a process that loaded, until a failure
   * or a restart: that listing also removed whatever an attempt interrupted
   * before (pages past the count of the generation it reused).
   */
  #keyedCleanup = false;
  /** In keyed cleanup, every log entry up to this sequence number is deleted. */
  #cleanedThrough = 0;
  /**
   * The last log entry on disk: a commit's own entry is written after its
   * cleanup's deletes, so keyed cleanup stops short of entries not yet written.
   */
  #writtenLogSeq = 0;
  /** Chunk counts of log entries with more than one chunk (the rest have one), until deleted. */
  #logChunks = new Map<number, number>();
  /**
   * Whether every instance record chunk in the file is known here, so that
   * deletes name their keys instead of listing the range: listing reads every
   * value, about 40 round trips a second to the blocking thread under load,
   * each on the commit path. True after `load`, until a failed commit.
   */
  #deleteByKey = false;
  #keyedDeleteCount = 0;
  /**
   * Chunk keys on disk of instance records with more than one (the rest have
   * chunk 0 only), leftovers of a longer earlier version included, until
   * deleted. Only records over {@linkcode CHUNK_BYTES} are here.
   */
  #recordChunks = new Map<number, number>();
  /** Snapshots replaced since the last cleanup finished, whose pages are to be deleted. */
  #replaced: SnapshotMeta[] = [];
  /** The generation of the last snapshot this process wrote and switched to. */
  #builtGeneration: number | undefined;
  #keyedCleanups = 0;

  /** Wraps `kv`; nothing is read until {@linkcode prepare}, `load` or `commit`. */
  constructor(kv: Deno.Kv, options: DenoKvStorageOptions<C>) {
    this.#kv = kv;
    this.#options = options;
  }

  /** Atomic commits made by `commit` so far (all batches). */
  get atomicCommits(): number {
    return this.#atomicCommits;
  }

  /** Units so far too large for one atomic commit, written through the redo log. */
  get redoUnits(): number {
    return this.#redoUnits;
  }

  /** Snapshots written by this instance. */
  get snapshotsWritten(): number {
    return this.#snapshotsWritten;
  }

  /** Instance deletes that named their keys, without listing the range. */
  get keyedDeletes(): number {
    return this.#keyedDeleteCount;
  }

  /** Cleanups after a snapshot finished by deleting known keys, without listing. */
  get keyedCleanups(): number {
    return this.#keyedCleanups;
  }

  /** Bytes of effects log since the current snapshot (counted since `load` or opening). */
  get logBytes(): number {
    return this.#logBytes;
  }

  /** Whether the effects log has grown enough to be replaced by a snapshot. */
  wantsSnapshot(): boolean {
    if (this.#building !== undefined) return false;
    const threshold = this.#options.snapshotLogBytes ?? DEFAULT_SNAPSHOT_LOG_BYTES;
    return this.#logBytes >= Math.max(threshold, 2 * this.#snapshotBytes);
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
      this.#batchCommits = 0;
      try {
        await this.#commit(batch);
      } catch (error) {
        // What is on disk is a prefix of the batch, maybe with a pending redo
        // log: recover as a restart would before the next call. A snapshot
        // being built starts over when asked for again.
        this.#prepared = false;
        this.#building = undefined;
        this.#cleanup = undefined;
        // An interrupted snapshot may have left pages nobody tracks: list again.
        this.#keyedCleanup = false;
        this.#deleteByKey = false;
        throw error;
      } finally {
        this.#batchCommits = undefined;
      }
    });
  }

  /** Closes the underlying `Deno.Kv`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#kv.close();
  }

  #serialize<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("Storage is closed"));
    const run = this.#queue.then(operation);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #prepare(): Promise<void> {
    if (this.#prepared) return;
    const format = await this.#kv.get(FORMAT_KEY);
    if (format.versionstamp === null) {
      for await (const entry of this.#kv.list({ prefix: [] }, { limit: 1 })) {
        throw new StorageFormatError(
          `File holds data (key ${describeKey(entry.key)}) but no storage format version; ` +
            "it is not an epaxos-kv store",
        );
      }
      const result = await this.#kv.atomic().check(format).set(FORMAT_KEY, FORMAT_VERSION)
        .commit();
      if (!result.ok) throw new Error("Another process set the storage format concurrently");
    } else if (format.value !== FORMAT_VERSION) {
      throw new StorageFormatError(
        `File has storage format ${JSON.stringify(format.value)}, but this build reads only ` +
          `format ${FORMAT_VERSION}`,
      );
    }
    await this.#replayRedo();
    this.#snapshot = await this.#readSnapshotMeta();
    // Whatever the last run left of its cleanup is finished by the next commits,
    // listing what is there.
    this.#cleanup = this.#snapshot;
    this.#keyedCleanup = false;
    let last = this.#snapshot?.seq ?? 0;
    for await (const entry of this.#kv.list({ prefix: [LOG] }, { limit: 1, reverse: true })) {
      const seq = entry.key[1];
      if (!isNatural(seq)) throw new StorageFormatError(`Unexpected key ${describeKey(entry.key)}`);
      last = Math.max(last, seq);
    }
    this.#logSeq = Math.max(this.#logSeq, last);
    this.#writtenLogSeq = this.#logSeq;
    this.#prepared = true;
  }

  async #readSnapshotMeta(): Promise<SnapshotMeta | undefined> {
    const meta = await this.#kv.get(SNAPSHOT_KEY);
    if (meta.versionstamp === null) return undefined;
    let value: unknown;
    try {
      if (!(meta.value instanceof Uint8Array)) throw new Error("not bytes");
      value = decodeMsgpack(meta.value);
    } catch (error) {
      throw new StorageFormatError(
        `Malformed snapshot at key ${describeKey(SNAPSHOT_KEY)}: ${(error as Error).message}`,
      );
    }
    if (!Array.isArray(value) || value.length !== 3 || !value.every(isNatural)) {
      throw new StorageFormatError(
        `Malformed snapshot at key ${describeKey(SNAPSHOT_KEY)}: not [generation, seq, pages]`,
      );
    }
    const [generation, seq, pages] = value as number[];
    return { generation: generation!, seq: seq!, pages: pages! };
  }

  // --- Commit ---------------------------------------------------------------

  async #commit(batch: PersistBatch<C>): Promise<void> {
    // Build every unit before writing anything: a write that can never fit is
    // refused while the batch is still untouched.
    const units = await this.#units(batch);
    if (batch.snapshot !== undefined) checkSnapshotEntries(batch.snapshot);
    // The atomic commit being filled: its writes, and the effects of its
    // units, which go out as one log entry (one sequence number per commit,
    // not per instance, so that a snapshot deletes few log keys).
    let writes: Write[] = [];
    let effects: Uint8Array[] = [];
    let seq: number | undefined;
    const cost: Cost = { mutations: 0, totalBytes: 0, keyBytes: 0 };
    const flush = async () => {
      if (seq !== undefined) {
        for (const w of this.#logWrites(seq, concat(effects, 0))) writes.push(w);
      }
      if (writes.length > 0) await this.#atomic(writes);
      if (seq !== undefined) this.#writtenLogSeq = Math.max(this.#writtenLogSeq, seq);
      writes = [];
      effects = [];
      seq = undefined;
      resetCost(cost);
    };
    const add = async (unit: Unit) => {
      const unitCost = costOf(unit.writes);
      if (unit.effects !== undefined) accumulate(unitCost, logCost(unit.effects.length));
      if (!fits(unitCost)) {
        await flush();
        const own = [...unit.writes];
        if (unit.effects !== undefined) {
          this.#logBytes += unit.effects.length;
          for (const w of this.#logWrites(++this.#logSeq, unit.effects)) own.push(w);
        }
        await this.#writeThroughRedo(own);
        this.#writtenLogSeq = Math.max(this.#writtenLogSeq, this.#logSeq);
        return;
      }
      if (!fits(sum(cost, unitCost))) await flush();
      accumulate(cost, unitCost);
      for (const w of unit.writes) writes.push(w);
      if (unit.effects !== undefined) {
        seq ??= ++this.#logSeq;
        effects.push(unit.effects);
        this.#logBytes += unit.effects.length;
      }
    };
    for (const unit of units) await add(unit);
    // A snapshot is of the state after every log entry so far (this batch's
    // included); it is written a slice per commit from now on.
    if (batch.snapshot !== undefined) this.#startSnapshot(batch.snapshot);
    for (const unit of await this.#snapshotWork()) await add(unit);
    await flush();
  }

  /** The chunk writes of log entry `seq`, its chunk count noted for keyed cleanup. */
  #logWrites(seq: number, effects: Uint8Array): Write[] {
    const writes = chunkWrites([LOG, seq], effects);
    if (writes.length > 1) this.#logChunks.set(seq, writes.length);
    return writes;
  }

  #startSnapshot(entries: readonly (readonly [string, KvEntry])[]): void {
    this.#building = {
      generation: (this.#snapshot?.generation ?? 0) + 1,
      seq: this.#logSeq,
      entries,
      next: 0,
      pages: 0,
      bytes: 0,
      logBytes: this.#logBytes,
    };
  }

  /**
   * This commit's share of snapshot work, as units after the batch's: the
   * next pages of the snapshot being built (about
   * {@linkcode SNAPSHOT_BYTES_PER_COMMIT}); when the last is written, the
   * switch of `["meta", "snapshot"]` to it; after the switch, deletes of the
   * log entries and pages it replaced (at most {@linkcode CLEANUP_PER_COMMIT}
   * log keys). Spreading it keeps one snapshot of a large state from
   * stalling every request for the time of writing it whole. A crash
   * anywhere leaves the old snapshot and the log after it, or the new one.
   */
  async #snapshotWork(): Promise<Unit[]> {
    const units: Unit[] = [];
    const building = this.#building;
    if (building !== undefined) {
      let end = building.next;
      let estimate = 0;
      while (end < building.entries.length && estimate < SNAPSHOT_BYTES_PER_COMMIT) {
        const [key, entry] = building.entries[end]!;
        estimate += snapshotEntryBound(key, entry);
        end++;
      }
      for (const page of encodeSnapshotPages(building.entries.slice(building.next, end))) {
        units.push({ writes: [write([SNAPSHOT, building.generation, building.pages++], page)] });
        building.bytes += page.length;
      }
      building.next = end;
      if (end >= building.entries.length) {
        const meta: SnapshotMeta = {
          generation: building.generation,
          seq: building.seq,
          pages: building.pages,
        };
        units.push({
          writes: [write(SNAPSHOT_KEY, encodeMsgpack([meta.generation, meta.seq, meta.pages]))],
        });
        // In memory at once: a failed commit resets all of it (see `commit`).
        if (this.#snapshot !== undefined) this.#replaced.push(this.#snapshot);
        this.#snapshot = meta;
        this.#builtGeneration = meta.generation;
        this.#building = undefined;
        this.#cleanup = meta;
        this.#snapshotsWritten++;
        this.#logBytes = Math.max(0, this.#logBytes - building.logBytes);
        this.#snapshotBytes = building.bytes;
      }
    }
    const cleanup = this.#cleanup;
    if (cleanup !== undefined && this.#keyedCleanup) {
      // Every log entry after `#cleanedThrough` exists (or was never written,
      // and deleting it is a no-op), with one chunk unless `#logChunks` says.
      let deleted = 0;
      const through = Math.min(cleanup.seq, this.#writtenLogSeq);
      while (this.#cleanedThrough < through && deleted < CLEANUP_PER_COMMIT) {
        const seq = ++this.#cleanedThrough;
        const chunks = this.#logChunks.get(seq) ?? 1;
        this.#logChunks.delete(seq);
        for (let chunk = 0; chunk < chunks; chunk++) {
          units.push({ writes: [deleteWrite([LOG, seq, chunk])] });
        }
        deleted += chunks;
      }
      if (this.#cleanedThrough >= cleanup.seq) {
        // The log is done: the pages of the snapshots this one replaced.
        for (const replaced of this.#replaced) {
          for (let page = 0; page < replaced.pages; page++) {
            units.push({ writes: [deleteWrite([SNAPSHOT, replaced.generation, page])] });
          }
        }
        this.#replaced = [];
        this.#cleanup = undefined;
        this.#keyedCleanups++;
      }
    } else if (cleanup !== undefined) {
      // The listing sees the log on disk: entries written so far.
      const listedThrough = Math.min(cleanup.seq, this.#writtenLogSeq);
      let deleted = 0;
      const covered = this.#kv.list(
        { start: [LOG], end: [LOG, cleanup.seq + 1] },
        { limit: CLEANUP_PER_COMMIT, batchSize: LIST_BATCH },
      );
      for await (const entry of covered) {
        units.push({ writes: [deleteWrite(entry.key)] });
        deleted++;
      }
      if (deleted < CLEANUP_PER_COMMIT) {
        // The log is done: the pages of older snapshots, and pages past the
        // count of this one (left by an interrupted attempt), bounded by them.
        // Newer generations are being built.
        for await (
          const entry of this.#kv.list({ prefix: [SNAPSHOT] }, { batchSize: LIST_BATCH })
        ) {
          const [, generation, page] = entry.key;
          if (
            !isNatural(generation) || generation < cleanup.generation ||
            (generation === cleanup.generation && (!isNatural(page) || page >= cleanup.pages))
          ) {
            units.push({ writes: [deleteWrite(entry.key)] });
          }
        }
        this.#cleanup = undefined;
        // If this process wrote this snapshot (and loaded the log), it knows
        // from now on every key it will have to delete: the log after this
        // snapshot and the pages of the snapshots it switches away from.
        this.#replaced = [];
        this.#cleanedThrough = listedThrough;
        for (const seq of this.#logChunks.keys()) {
          if (seq <= listedThrough) this.#logChunks.delete(seq);
        }
        this.#keyedCleanup = this.#loaded && cleanup.generation === this.#builtGeneration;
      }
    }
    return units;
  }

  /** The batch's atomic units, in order (MemoryStorage's order, exactly). */
  async #units(batch: PersistBatch<C>): Promise<Unit[]> {
    const units: Unit[] = [];
    const effects = batch.effects;
    const applied = new Set<number>();
    // Chunks written by earlier units of this batch, so that a later delete
    // in the same batch finds them although they are not on disk yet.
    const written = new Map<number, number>();
    for (const record of batch.records) {
      switch (record.kind) {
        case "floor":
          units.push({ writes: [write(FLOOR_KEY, encodeDeps(record.pruneFloor))] });
          break;
        case "delete":
          units.push({ writes: await this.#deleteWrites(record, written) });
          break;
        case "instance": {
          const writes = recordWrites(record);
          const key = instanceKey(record.owner, record.number);
          written.set(key, Math.max(written.get(key) ?? 0, writes.length));
          // Only where the key names exactly this record, as in `load`.
          const exact = isInstanceKey(record.owner, record.number);
          if (exact && writes.length > (this.#recordChunks.get(key) ?? 1)) {
            this.#recordChunks.set(key, writes.length);
          }
          const mutations = effects.get(key);
          let logged: Uint8Array | undefined;
          if (mutations !== undefined && !applied.has(key)) {
            applied.add(key);
            logged = logEffects(record.owner, record.number, mutations);
          }
          units.push({ writes, effects: logged });
          break;
        }
      }
    }
    if (applied.size < effects.size) {
      for (const [key, mutations] of effects) {
        if (applied.has(key)) continue;
        const logged = logEffects(keyOwner(key), keyNumber(key), mutations);
        if (logged !== undefined) units.push({ writes: [], effects: logged });
      }
    }
    return units;
  }

  /** Deletes of every chunk of instances `from..to` of row `owner`. */
  async #deleteWrites(
    { owner, from, to }: { readonly owner: number; readonly from: number; readonly to: number },
    written: ReadonlyMap<number, number>,
  ): Promise<Write[]> {
    if (!Number.isSafeInteger(owner) || !Number.isSafeInteger(from) || !Number.isSafeInteger(to)) {
      throw new Error(`Delete record names no valid range: ${owner}.${from}..${to}`);
    }
    if (from > to) return [];
    // Forget the range's multi-chunk records, which this delete removes
    // either way: by number when the range is the smaller, else by a scan.
    const exact = isInstanceKey(owner, to);
    const chunksOf = new Map<number, number>();
    let extraChunks = 0;
    if (exact && to - from < this.#recordChunks.size) {
      for (let number = from; number <= to; number++) {
        const key = instanceKey(owner, number);
        const chunks = this.#recordChunks.get(key);
        if (chunks === undefined) continue;
        chunksOf.set(number, chunks);
        this.#recordChunks.delete(key);
      }
    } else {
      for (const [key, chunks] of this.#recordChunks) {
        const number = keyNumber(key);
        if (keyOwner(key) !== owner || number < from || number > to) continue;
        chunksOf.set(number, chunks);
        this.#recordChunks.delete(key);
      }
    }
    for (const chunks of chunksOf.values()) extraChunks += chunks - 1;
    if (this.#deleteByKey && exact && to - from + 1 + extraChunks <= KEYED_DELETE_KEYS) {
      // Chunk 0 of every number in the range (deleting a missing key is a
      // no-op), and the further chunks of the few records that have them.
      this.#keyedDeleteCount++;
      const writes: Write[] = [];
      for (let number = from; number <= to; number++) {
        const chunks = chunksOf.get(number) ?? 1;
        for (let chunk = 0; chunk < chunks; chunk++) {
          writes.push(deleteWrite([INSTANCES, owner, number, chunk]));
        }
      }
      return writes;
    }
    const keys: Deno.KvKey[] = [];
    const seen = new Set<string>();
    const add = (number: number, chunk: number) => {
      const id = `${number}/${chunk}`;
      if (seen.has(id)) return;
      seen.add(id);
      keys.push([INSTANCES, owner, number, chunk]);
    };
    // Bounded by the chunks stored in the range.
    const listed = this.#kv.list(
      { start: [INSTANCES, owner, from], end: [INSTANCES, owner, to + 1] },
      { batchSize: LIST_BATCH },
    );
    for await (const entry of listed) {
      const [, , number, chunk] = entry.key;
      if (typeof number !== "number" || typeof chunk !== "number") {
        throw new StorageFormatError(`Unexpected key ${describeKey(entry.key)}`);
      }
      add(number, chunk);
    }
    for (const [key, chunks] of written) {
      const number = keyNumber(key);
      if (keyOwner(key) !== owner || number < from || number > to) continue;
      for (let chunk = 0; chunk < chunks; chunk++) add(number, chunk);
    }
    return keys.map((key) => ({ key, value: null, keyBytes: encodedKeyLength(key) }));
  }

  /**
   * Writes a unit too large for one atomic commit, all or nothing, through the
   * redo log (see the module documentation).
   */
  async #writeThroughRedo(unit: readonly Write[]): Promise<void> {
    this.#redoUnits++;
    const log = encodeMsgpack(unit.map((w) => [w.key, w.value]));
    const chunks = chunkWrites([REDO], log);
    // Chunk 0 last: its presence says the log is complete.
    await this.#writeInOrder([...chunks.slice(1), chunks[0]!]);
    await this.#applyLogged(unit, chunks.length);
  }

  /** Applies a logged unit, deleting the log's marker in the last commit, then the rest of the log. */
  async #applyLogged(unit: readonly Write[], logChunks: number): Promise<void> {
    const marker = deleteWrite([REDO, 0]);
    await this.#writeInOrder([...unit, marker]);
    const rest: Write[] = [];
    for (let chunk = 1; chunk < logChunks; chunk++) rest.push(deleteWrite([REDO, chunk]));
    await this.#writeInOrder(rest);
  }

  /** Finishes a unit whose redo log is complete, and clears any incomplete log. */
  async #replayRedo(): Promise<void> {
    const chunks: Uint8Array[] = [];
    const keys: Deno.KvKey[] = [];
    // Bounded by the chunks of one log.
    for await (const entry of this.#kv.list({ prefix: [REDO] }, { batchSize: LIST_BATCH })) {
      if (!(entry.value instanceof Uint8Array) || typeof entry.key[1] !== "number") {
        throw new StorageFormatError(`Malformed redo log chunk at key ${describeKey(entry.key)}`);
      }
      keys.push(entry.key);
      chunks[entry.key[1]] = entry.value;
    }
    if (keys.length === 0) return;
    if (chunks[0] === undefined) {
      // Crashed while writing the log: the unit never happened.
      await this.#writeInOrder(keys.map(deleteWrite));
      return;
    }
    const bytes = assembleChunks(
      chunks,
      (reason) =>
        new StorageFormatError(`Malformed redo log at key ${describeKey([REDO, 0])}: ${reason}`),
    );
    const unit = decodeRedo(bytes);
    let last = 0;
    for (const key of keys) last = Math.max(last, key[1] as number);
    await this.#applyLogged(unit, last + 1);
  }

  /** Commits `writes` in order, as many per atomic commit as fit (writes are their own units). */
  async #writeInOrder(writes: readonly Write[]): Promise<void> {
    let pending: Write[] = [];
    const cost: Cost = { mutations: 0, totalBytes: 0, keyBytes: 0 };
    for (const w of writes) {
      const one = costOf([w]);
      if (!fits(sum(cost, one))) {
        await this.#atomic(pending);
        pending = [];
        resetCost(cost);
      }
      accumulate(cost, one);
      pending.push(w);
    }
    if (pending.length > 0) await this.#atomic(pending);
  }

  async #atomic(writes: readonly Write[]): Promise<void> {
    const crashAfter = this.#options.crashAfterCommits;
    if (
      crashAfter !== undefined && this.#batchCommits !== undefined &&
      this.#batchCommits >= crashAfter
    ) {
      throw new FailpointCrash(this.#batchCommits);
    }
    const operation = this.#kv.atomic();
    for (const w of writes) {
      if (w.value === null) operation.delete(w.key);
      else operation.set(w.key, w.value);
    }
    const result = await operation.commit();
    // No checks, so a commit either succeeds or throws.
    if (!result.ok) throw new Error("Atomic commit failed without checks");
    if (this.#batchCommits !== undefined) this.#batchCommits++;
    this.#atomicCommits++;
  }

  // --- Load -----------------------------------------------------------------

  async #load(): Promise<LoadedState<C>> {
    const codec = { isCommand: this.#options.isCommand, replicas: this.#options.replicas };
    let pruneFloor: Deps | undefined;
    const floor = await this.#kv.get(FLOOR_KEY);
    if (floor.versionstamp !== null) {
      if (!(floor.value instanceof Uint8Array)) {
        throw new StorageFormatError(`Malformed prune floor at key ${describeKey(FLOOR_KEY)}`);
      }
      try {
        pruneFloor = decodeDeps(floor.value, this.#options.replicas);
      } catch (error) {
        throw new StorageFormatError(
          `Malformed prune floor at key ${describeKey(FLOOR_KEY)}: ${(error as Error).message}`,
        );
      }
    }

    const records: InstanceRecord<C>[] = [];
    let current: { owner: number; number: number; count: number; chunks: Uint8Array[] } | undefined;
    const finish = () => {
      if (current === undefined) return;
      const { owner, number, count, chunks } = current;
      const key = [INSTANCES, owner, number, 0];
      if (chunks.length < count) {
        throw new StorageFormatError(
          `Malformed instance record at key ${describeKey(key)}: chunk ${chunks.length} of ` +
            `${count} is missing`,
        );
      }
      let record: InstanceRecord<C>;
      try {
        record = decodeRecord(concat(chunks, 4), codec);
      } catch (error) {
        throw new StorageFormatError(
          `Malformed instance record at key ${describeKey(key)}: ${(error as Error).message}`,
        );
      }
      if (record.owner !== owner || record.number !== number) {
        throw new StorageFormatError(
          `Malformed instance record at key ${describeKey(key)}: it holds instance ` +
            `${record.owner}.${record.number}`,
        );
      }
      records.push(record);
      current = undefined;
    };
    this.#deleteByKey = false;
    this.#recordChunks.clear();
    // Bounded by the records stored; chunks come in key order, so each
    // record's chunks are consecutive and in order.
    for await (const entry of this.#kv.list({ prefix: [INSTANCES] }, { batchSize: LIST_BATCH })) {
      const [, owner, number, chunk] = entry.key;
      const value = entry.value;
      if (
        entry.key.length !== 4 || !isNatural(owner) || !isNatural(number) || !isNatural(chunk) ||
        !(value instanceof Uint8Array)
      ) {
        throw new StorageFormatError(
          `Malformed instance record chunk at key ${describeKey(entry.key)}`,
        );
      }
      // Chunks come in order: the last one seen of a record is its highest.
      if (chunk > 0 && isInstanceKey(owner, number)) {
        this.#recordChunks.set(instanceKey(owner, number), chunk + 1);
      }
      if (current !== undefined && (current.owner !== owner || current.number !== number)) finish();
      if (current === undefined) {
        if (chunk !== 0 || value.length < 4) {
          throw new StorageFormatError(
            `Malformed instance record at key ${describeKey(entry.key)}: no chunk 0 with a count`,
          );
        }
        const count = new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
        if (count < 1) {
          throw new StorageFormatError(
            `Malformed instance record at key ${describeKey(entry.key)}: chunk count is 0`,
          );
        }
        current = { owner, number, count, chunks: [value] };
      } else if (chunk < current.count) {
        if (chunk !== current.chunks.length) {
          throw new StorageFormatError(
            `Malformed instance record at key ${describeKey(entry.key)}: chunk ` +
              `${current.chunks.length} is missing`,
          );
        }
        current.chunks.push(value);
      }
      // Chunks at or past the count are left over from a longer earlier version.
    }
    finish();

    // The key-value state: the snapshot, then the log after it, in order.
    const state = new Map<string, KvEntry>();
    const snapshot = this.#snapshot;
    let snapshotBytes = 0;
    if (snapshot !== undefined) {
      let pages = 0;
      // Bounded by the snapshot's pages.
      const listed = this.#kv.list({ prefix: [SNAPSHOT, snapshot.generation] }, {
        batchSize: LIST_BATCH,
      });
      for await (const entry of listed) {
        // Pages past the count are left over from an interrupted snapshot of
        // the same generation, which the next snapshot deletes.
        if (isNatural(entry.key[2]) && entry.key[2] >= snapshot.pages) break;
        if (entry.key[2] !== pages || !(entry.value instanceof Uint8Array)) {
          throw new StorageFormatError(
            `Malformed snapshot at key ${describeKey(entry.key)}: page ${pages} expected`,
          );
        }
        try {
          decodeSnapshotPage(entry.value, state);
        } catch (error) {
          throw new StorageFormatError(
            `Malformed snapshot page at key ${describeKey(entry.key)}: ${(error as Error).message}`,
          );
        }
        snapshotBytes += entry.value.length;
        pages++;
      }
      if (pages !== snapshot.pages) {
        throw new StorageFormatError(
          `Snapshot ${snapshot.generation} has ${pages} of its ${snapshot.pages} pages`,
        );
      }
    }
    let logBytes = 0;
    let logEntry: { seq: number; chunks: Uint8Array[] } | undefined;
    const applyLogEntry = () => {
      if (logEntry === undefined) return;
      const key = [LOG, logEntry.seq, 0];
      let effects;
      try {
        const bytes = assembleChunks(logEntry.chunks, (reason) => new Error(reason));
        logBytes += bytes.length;
        effects = decodeEffectsStream(bytes);
      } catch (error) {
        throw new StorageFormatError(
          `Malformed effects log entry at key ${describeKey(key)}: ${(error as Error).message}`,
        );
      }
      for (const instance of effects) {
        for (const mutation of instance.mutations) {
          if (mutation.kind === "set") state.set(mutation.key, mutation.entry);
          else state.delete(mutation.key);
        }
      }
      if (logEntry.chunks.length > 1) this.#logChunks.set(logEntry.seq, logEntry.chunks.length);
      logEntry = undefined;
    };
    // Bounded by the log (at most about twice the state, see wantsSnapshot).
    const log = this.#kv.list({ start: [LOG, (snapshot?.seq ?? 0) + 1], end: [LOG + "\0"] }, {
      batchSize: LIST_BATCH,
    });
    for await (const entry of log) {
      const [, seq, chunk] = entry.key;
      if (
        entry.key.length !== 3 || !isNatural(seq) || !isNatural(chunk) ||
        !(entry.value instanceof Uint8Array)
      ) {
        throw new StorageFormatError(
          `Malformed effects log chunk at key ${describeKey(entry.key)}`,
        );
      }
      if (logEntry !== undefined && logEntry.seq !== seq) applyLogEntry();
      logEntry ??= { seq, chunks: [] };
      logEntry.chunks[chunk] = entry.value;
    }
    applyLogEntry();
    this.#logBytes = logBytes;
    this.#snapshotBytes = snapshotBytes;
    this.#loaded = true;
    this.#deleteByKey = true;
    const entries = [...state];
    return { records, pruneFloor, entries };
  }
}

// --- Writes -----------------------------------------------------------------

function write(key: Deno.KvKey, value: Uint8Array): Write {
  return { key, value, keyBytes: encodedKeyLength(key) };
}

function deleteWrite(key: Deno.KvKey): Write {
  return { key, value: null, keyBytes: encodedKeyLength(key) };
}

/** The chunk writes of one record. */
function recordWrites<C>(record: InstanceRecord<C>): Write[] {
  const { owner, number } = record;
  if (!isNatural(owner) || !isNatural(number)) {
    throw new Error(`Instance record names no valid instance: ${owner}.${number}`);
  }
  // Copied out at once: the encoding is a view of a shared buffer.
  return chunkWrites([INSTANCES, owner, number], encodeRecordShared(record));
}

/** The encoded effects of one instance, or undefined for no changes. */
function logEffects(
  owner: number,
  number: number,
  mutations: readonly KvMutation[],
): Uint8Array | undefined {
  if (mutations.length === 0) return undefined;
  for (const mutation of mutations) {
    if (typeof mutation.key !== "string" || !mutation.key.isWellFormed()) {
      throw new Error(`Key ${JSON.stringify(mutation.key)} is not well-formed Unicode`);
    }
  }
  return encodeEffects(owner, number, mutations);
}

/**
 * Refuses a snapshot with an entry too large for a page, before anything is
 * written (pages are encoded later, a slice per commit).
 */
function checkSnapshotEntries(entries: readonly (readonly [string, KvEntry])[]): void {
  for (const entry of entries) {
    // An upper bound of the encoding; only entries near the limit are encoded.
    if (snapshotEntryBound(entry[0], entry[1]) > SNAPSHOT_PAGE_BYTES) {
      encodeSnapshotPages([entry]);
    }
  }
}

/** `bytes` as chunk sets under `prefix`, chunk 0 prefixed with the chunk count. */
function chunkWrites(prefix: readonly (string | number)[], bytes: Uint8Array): Write[] {
  const count = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
  const writes: Write[] = [];
  for (let chunk = 0; chunk < count; chunk++) {
    const part = bytes.subarray(chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES);
    let value: Uint8Array;
    if (chunk === 0) {
      value = new Uint8Array(4 + part.length);
      new DataView(value.buffer).setUint32(0, count);
      value.set(part, 4);
    } else {
      value = part.slice();
    }
    writes.push(write([...prefix, chunk], value));
  }
  return writes;
}

function decodeRedo(bytes: Uint8Array): Write[] {
  const fail = (reason: string) =>
    new StorageFormatError(`Malformed redo log at key ${describeKey([REDO, 0])}: ${reason}`);
  let value: unknown;
  try {
    value = decodeMsgpack(bytes);
  } catch (error) {
    throw fail((error as Error).message);
  }
  if (!Array.isArray(value)) throw fail("not an array of writes");
  return value.map((item: unknown) => {
    if (!Array.isArray(item) || item.length !== 2) throw fail("a write is not a [key, value] pair");
    const [key, data] = item;
    if (
      !Array.isArray(key) || key.length === 0 ||
      !key.every((part) =>
        typeof part === "string" || isNatural(part) || part instanceof Uint8Array
      )
    ) {
      throw fail("a write has a malformed key");
    }
    if (data !== null && !(data instanceof Uint8Array)) throw fail("a write has a malformed value");
    return { key, value: data, keyBytes: encodedKeyLength(key) };
  });
}

// --- Packing ----------------------------------------------------------------

function costOf(writes: readonly Write[]): Cost {
  const cost: Cost = { mutations: writes.length, totalBytes: 0, keyBytes: 0 };
  for (const w of writes) {
    // Deno counts every mutation's key, and a set's key again with its value.
    cost.totalBytes += w.keyBytes;
    if (w.value !== null) {
      cost.totalBytes += w.keyBytes + w.value.length;
      cost.keyBytes += w.keyBytes;
    }
  }
  return cost;
}

/**
 * An upper bound of what `bytes` of effects add to a commit's log entry: its
 * share of chunks, each with a key and a count.
 */
function logCost(bytes: number): Cost {
  const chunks = Math.max(1, Math.ceil(bytes / CHUNK_BYTES));
  return {
    mutations: chunks,
    totalBytes: bytes + chunks * (4 + 2 * LOG_KEY_BYTES),
    keyBytes: chunks * LOG_KEY_BYTES,
  };
}

function sum(a: Cost, b: Cost): Cost {
  return {
    mutations: a.mutations + b.mutations,
    totalBytes: a.totalBytes + b.totalBytes,
    keyBytes: a.keyBytes + b.keyBytes,
  };
}

function accumulate(total: Cost, extra: Cost): void {
  total.mutations += extra.mutations;
  total.totalBytes += extra.totalBytes;
  total.keyBytes += extra.keyBytes;
}

function resetCost(cost: Cost): void {
  cost.mutations = 0;
  cost.totalBytes = 0;
  cost.keyBytes = 0;
}

function fits(cost: Cost): boolean {
  return cost.mutations <= DENO_KV_LIMITS.mutations &&
    cost.totalBytes <= DENO_KV_LIMITS.totalBytes && cost.keyBytes <= DENO_KV_LIMITS.keyBytes;
}

// --- Helpers ----------------------------------------------------------------

/** Reassembles chunks written by {@linkcode chunkWrites}. */
function assembleChunks(
  chunks: readonly Uint8Array[],
  fail: (reason: string) => Error,
): Uint8Array {
  const first = chunks[0]!;
  if (first.length < 4) throw fail("chunk 0 has no count");
  const count = new DataView(first.buffer, first.byteOffset, 4).getUint32(0);
  if (count < 1) throw fail("chunk count is 0");
  const parts: Uint8Array[] = [];
  for (let chunk = 0; chunk < count; chunk++) {
    const part = chunks[chunk];
    if (part === undefined) throw fail(`chunk ${chunk} of ${count} is missing`);
    parts.push(part);
  }
  return concat(parts, 4);
}

/** The parts joined, without the first `skip` bytes of the first part. */
function concat(parts: readonly Uint8Array[], skip: number): Uint8Array {
  if (parts.length === 1) return parts[0]!.subarray(skip);
  let length = -skip;
  for (const part of parts) length += part.length;
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = i === 0 ? parts[i]!.subarray(skip) : parts[i]!;
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

function isNatural(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function describeKey(key: Deno.KvKey): string {
  const parts = key.map((part) =>
    part instanceof Uint8Array ? `<${part.length} bytes>` : JSON.stringify(
      typeof part === "bigint" ? `${part}n` : part,
    )
  );
  return `[${parts.join(", ")}]`;
}
