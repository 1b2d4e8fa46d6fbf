/**
 * Replica storage on Deno KV (its SQLite backend, a local file).
 *
 * ## Layout (format 1)
 *
 * | key | value |
 * | --- | --- |
 * | `["meta", "format"]` | `1` (a number): the layout version; a file with another one is refused |
 * | `["meta", "floor"]` | the prune floor, a MessagePack array of instance numbers |
 * | `["i", owner, number, chunk]` | an instance record, MessagePack (see `codec.ts`) split into chunks of at most {@linkcode CHUNK_BYTES} bytes; chunk 0 starts with the chunk count (uint32, big-endian) |
 * | `["kv", keyBytes]` | a key-value entry, MessagePack `[version, value]`; `keyBytes` is the key's UTF-8 bytes each plus one (see `encodeKvKey`) |
 * | `["redo", chunk]` | the redo log of a unit too large for one atomic commit, present only while such a unit is applied |
 *
 * Every value written by a commit is a `Uint8Array`, so that its size is its
 * length and the packing below can respect Deno KV's limits exactly.
 *
 * A record rewritten with fewer chunks than before leaves its old higher
 * chunks behind: finding them would cost a read per write. They are harmless
 * (chunk 0's count says where the record ends) and go when the instance's
 * record is deleted, which lists and deletes every chunk.
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
 *
 * A unit that does not fit in one commit at all (a record with many large
 * commands, effects with more than 1000 changes, a delete of a long range) is
 * written through the redo log: its writes are first stored under `["redo"]`
 * (chunk 0 last, which marks the log complete), then applied in as many
 * commits as needed, the last of which deletes the marker. A crash before the
 * marker leaves the unit out; after it, the next `load` or `commit` applies it
 * again (its writes are blind sets and deletes, so applying them twice is the
 * same as once). Either way the unit is all or nothing. A single write always
 * fits in one commit: the largest key is `["kv", 1024 bytes]`, 1030 bytes
 * (limit 2048); the largest value is a chunk of 65536 bytes or an entry of a
 * 60 KiB value plus its version (limit 65536); so one set costs at most
 * 2 * 1030 + 65536 bytes of the 819200 allowed. Writes that break these
 * bounds are refused before anything of the batch is written.
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
import { instanceKey, keyNumber, keyOwner } from "../core/instance.ts";
import type { InstanceRecord } from "../core/types.ts";
import type { KvEntry, KvMutation } from "../kv/state_machine.ts";
import {
  decodeDeps,
  decodeEntry,
  decodeKvKey,
  decodeMsgpack,
  decodeRecord,
  encodeDeps,
  encodedKeyLength,
  encodeEntry,
  encodeKvKey,
  encodeMsgpack,
  encodeRecordShared,
} from "./codec.ts";
import type { LoadedState, PersistBatch, ReplicaStorage } from "./types.ts";

/** The layout version this build reads and writes. */
export const FORMAT_VERSION = 1;
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
const INSTANCES = "i";
const ENTRIES = "kv";
const REDO = "redo";
/** Entries read per round trip when listing (Deno KV reads at most 1000). */
const LIST_BATCH = 500;

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
        // log: recover as a restart would before the next call.
        this.#prepared = false;
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
    this.#prepared = true;
  }

  // --- Commit ---------------------------------------------------------------

  async #commit(batch: PersistBatch<C>): Promise<void> {
    // Build every unit before writing anything: a write that can never fit is
    // refused while the batch is still untouched.
    const units = await this.#units(batch);
    let pending: Write[] = [];
    const cost: Cost = { mutations: 0, totalBytes: 0, keyBytes: 0 };
    for (const unit of units) {
      const unitCost = costOf(unit);
      if (!fits(unitCost)) {
        if (pending.length > 0) await this.#atomic(pending);
        pending = [];
        resetCost(cost);
        await this.#writeThroughRedo(unit);
        continue;
      }
      if (!fits(sum(cost, unitCost))) {
        await this.#atomic(pending);
        pending = [];
        resetCost(cost);
      }
      accumulate(cost, unitCost);
      for (const write of unit) pending.push(write);
    }
    if (pending.length > 0) await this.#atomic(pending);
  }

  /** The batch's atomic units, in order, as writes (MemoryStorage's order, exactly). */
  async #units(batch: PersistBatch<C>): Promise<Write[][]> {
    const units: Write[][] = [];
    const effects = batch.effects;
    const applied = new Set<number>();
    // Chunks written by earlier units of this batch, so that a later delete
    // in the same batch finds them although they are not on disk yet.
    const written = new Map<number, number>();
    for (const record of batch.records) {
      switch (record.kind) {
        case "floor":
          units.push([write(FLOOR_KEY, encodeDeps(record.pruneFloor))]);
          break;
        case "delete":
          units.push(await this.#deleteWrites(record, written));
          break;
        case "instance": {
          const unit = recordWrites(record);
          const key = instanceKey(record.owner, record.number);
          written.set(key, Math.max(written.get(key) ?? 0, unit.length));
          const mutations = effects.get(key);
          if (mutations !== undefined && !applied.has(key)) {
            applied.add(key);
            for (const mutation of mutations) unit.push(effectWrite(mutation));
          }
          units.push(unit);
          break;
        }
      }
    }
    if (applied.size < effects.size) {
      for (const [key, mutations] of effects) {
        if (applied.has(key)) continue;
        units.push(mutations.map(effectWrite));
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

    const entries: [string, KvEntry][] = [];
    // Bounded by the entries stored.
    for await (const entry of this.#kv.list({ prefix: [ENTRIES] }, { batchSize: LIST_BATCH })) {
      const part = entry.key[1];
      if (entry.key.length !== 2 || !(part instanceof Uint8Array)) {
        throw new StorageFormatError(`Malformed key-value entry at key ${describeKey(entry.key)}`);
      }
      try {
        if (!(entry.value instanceof Uint8Array)) throw new Error("Value is not bytes");
        entries.push([decodeKvKey(part), decodeEntry(entry.value)]);
      } catch (error) {
        throw new StorageFormatError(
          `Malformed key-value entry at key ${describeKey(entry.key)}: ${(error as Error).message}`,
        );
      }
    }
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

/**
 * The write of one state-machine change.
 *
 * @throws {Error} if the key or entry can never fit in Deno KV.
 */
function effectWrite(mutation: KvMutation): Write {
  if (typeof mutation.key !== "string" || !mutation.key.isWellFormed()) {
    throw new Error(`Key ${JSON.stringify(mutation.key)} is not well-formed Unicode`);
  }
  const key = [ENTRIES, encodeKvKey(mutation.key)];
  const keyBytes = encodedKeyLength(key);
  if (keyBytes > DENO_KV_LIMITS.key) {
    throw new Error(
      `Key ${JSON.stringify(mutation.key.slice(0, 32))}... takes ${keyBytes} bytes in Deno KV, ` +
        `more than the ${DENO_KV_LIMITS.key} it allows`,
    );
  }
  if (mutation.kind === "delete") return { key, value: null, keyBytes };
  const value = encodeEntry(mutation.entry);
  if (value.length > DENO_KV_LIMITS.value) {
    throw new Error(
      `Entry of key ${JSON.stringify(mutation.key.slice(0, 32))} encodes to ${value.length} ` +
        `bytes, more than the ${DENO_KV_LIMITS.value} Deno KV allows in one value`,
    );
  }
  return { key, value, keyBytes };
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
