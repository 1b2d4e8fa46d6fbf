/**
 * Instance records and the prune floor: their writes, their keyed or listed
 * deletes, reading them at `load`, and the bookkeeping of records with more
 * than one chunk that lets deletes name their keys.
 *
 * A record is MessagePack (`codec.ts`) chunked as in `chunks.ts` under
 * `["i", owner, number, chunk]`. A record rewritten with fewer chunks than
 * before leaves its old higher chunks behind: finding them would cost a read
 * per write. They are harmless (chunk 0's count says where the record ends)
 * and go when the instance's record is deleted, with every other chunk. A
 * storage that loaded knows every chunk key in the file (most records have
 * chunk 0 only; the others are noted when listed by `load` or written), so it
 * deletes a range of instances by key; one that did not, or after a failed
 * commit, lists the range, which reads every value (about 40 listings a second
 * per replica under load, each on the commit path, were 3-5 % of the server
 * CPU per operation).
 *
 * @module
 */

import type { Deps } from "../../core/deps.ts";
import { instanceKey, isInstanceKey, keyNumber, keyOwner } from "../../core/instance.ts";
import type { InstanceRecord } from "../../core/types.ts";
import {
  decodeDeps,
  decodeRecord,
  encodeDeps,
  encodeRecordShared,
  type RecordCodecOptions,
} from "../codec.ts";
import { chunkCount, chunkWrites, concat } from "./chunks.ts";
import {
  describeKey,
  FLOOR_KEY,
  INSTANCES,
  isNatural,
  LIST_BATCH,
  StorageFormatError,
} from "./keys.ts";
import { deleteWrite, type Write, write } from "./writes.ts";

/**
 * Most keys a delete names without listing: half of an atomic commit's 1000
 * mutations, so that it rarely needs the redo log. A wider range is listed
 * instead, so that its work is bounded by the records stored, not by the range.
 */
const KEYED_DELETE_KEYS = 500;

/** A delete of the records of instances `from..to` (inclusive) of row `owner`. */
export interface InstanceRange {
  /** The row. */
  readonly owner: number;
  /** The first instance number. */
  readonly from: number;
  /** The last instance number. */
  readonly to: number;
}

/** A record being read: its chunks so far. */
interface ListedRecord {
  readonly owner: number;
  readonly number: number;
  /** The chunk count chunk 0 starts with. */
  readonly count: number;
  readonly chunks: Uint8Array[];
}

/** One chunk of a record, as listed. */
interface RecordChunk {
  readonly owner: number;
  readonly number: number;
  readonly chunk: number;
  readonly value: Uint8Array;
}

/** The instance records of a Deno KV file, and what this process knows of their chunks. */
export class Instances<C> {
  readonly #kv: Deno.Kv;
  readonly #codec: RecordCodecOptions<C>;
  /**
   * Whether every instance record chunk in the file is known here, so that
   * deletes name their keys instead of listing the range: listing reads every
   * value, about 40 round trips a second to the blocking thread under load,
   * each on the commit path. True after `load`, until a failed commit.
   */
  #deleteByKey = false;
  #keyedDeletes = 0;
  /**
   * Chunk keys on disk of instance records with more than one (the rest have
   * chunk 0 only), leftovers of a longer earlier version included, until
   * deleted. Only records over `CHUNK_BYTES` are here.
   */
  #recordChunks = new Map<number, number>();

  /** The records in `kv`, decoded with `codec`. */
  constructor(kv: Deno.Kv, codec: RecordCodecOptions<C>) {
    this.#kv = kv;
    this.#codec = codec;
  }

  /** Instance deletes that named their keys, without listing the range. */
  get keyedDeletes(): number {
    return this.#keyedDeletes;
  }

  /** The last persisted prune floor, if any. */
  async readPruneFloor(): Promise<Deps | undefined> {
    const floor = await this.#kv.get(FLOOR_KEY);
    if (floor.versionstamp === null) return undefined;
    if (!(floor.value instanceof Uint8Array)) {
      throw new StorageFormatError(`Malformed prune floor at key ${describeKey(FLOOR_KEY)}`);
    }
    try {
      return decodeDeps(floor.value, this.#codec.replicas);
    } catch (error) {
      throw new StorageFormatError(
        `Malformed prune floor at key ${describeKey(FLOOR_KEY)}: ${(error as Error).message}`,
      );
    }
  }

  /**
   * Every record in the file, noting the chunk keys of those with more than
   * one; deletes list their range until {@linkcode loaded}.
   *
   * @throws {StorageFormatError} if a record is malformed.
   */
  async readRecords(): Promise<InstanceRecord<C>[]> {
    const records: InstanceRecord<C>[] = [];
    let listed: ListedRecord | undefined;
    this.#deleteByKey = false;
    this.#recordChunks.clear();
    // Bounded by the records stored; chunks come in key order, so each
    // record's chunks are consecutive and in order.
    for await (const entry of this.#kv.list({ prefix: [INSTANCES] }, { batchSize: LIST_BATCH })) {
      const { owner, number, chunk, value } = checkRecordChunk(entry);
      // Chunks come in order: the last one seen of a record is its highest.
      if (chunk > 0 && isInstanceKey(owner, number)) {
        this.#recordChunks.set(instanceKey(owner, number), chunk + 1);
      }
      if (listed !== undefined && (listed.owner !== owner || listed.number !== number)) {
        records.push(decodeListedRecord(listed, this.#codec));
        listed = undefined;
      }
      if (listed === undefined) {
        listed = startRecord(entry.key, { owner, number, chunk, value });
      } else if (chunk < listed.count) {
        if (chunk !== listed.chunks.length) {
          throw new StorageFormatError(
            `Malformed instance record at key ${describeKey(entry.key)}: chunk ` +
              `${listed.chunks.length} is missing`,
          );
        }
        listed.chunks.push(value);
      }
      // Chunks at or past the count are left over from a longer earlier version.
    }
    if (listed !== undefined) records.push(decodeListedRecord(listed, this.#codec));
    return records;
  }

  /** Notes a successful `load`: every chunk key in the file is known here. */
  loaded(): void {
    this.#deleteByKey = true;
  }

  /** Forgets that every chunk key is known: deletes list until the next `load`. */
  failed(): void {
    this.#deleteByKey = false;
  }

  /**
   * The chunk writes of `record`, noted in `written` (chunk counts by instance
   * key of the batch's records so far) and in the chunk bookkeeping.
   */
  recordWrites(record: InstanceRecord<C>, written: Map<number, number>): Write[] {
    const { owner, number } = record;
    if (!isNatural(owner) || !isNatural(number)) {
      throw new Error(`Instance record names no valid instance: ${owner}.${number}`);
    }
    // Copied out at once: the encoding is a view of a shared buffer.
    const writes = chunkWrites([INSTANCES, owner, number], encodeRecordShared(record));
    const key = instanceKey(owner, number);
    written.set(key, Math.max(written.get(key) ?? 0, writes.length));
    // Only where the key names exactly this record, as in `load`.
    const exact = isInstanceKey(owner, number);
    if (exact && writes.length > (this.#recordChunks.get(key) ?? 1)) {
      this.#recordChunks.set(key, writes.length);
    }
    return writes;
  }

  /**
   * Deletes of every chunk of the instances of `range`; `written` has the
   * chunks written by earlier units of this batch, so that a delete finds them
   * although they are not on disk yet.
   */
  async deleteWrites(range: InstanceRange, written: ReadonlyMap<number, number>): Promise<Write[]> {
    const { owner, from, to } = range;
    if (!Number.isSafeInteger(owner) || !Number.isSafeInteger(from) || !Number.isSafeInteger(to)) {
      throw new Error(`Delete record names no valid range: ${owner}.${from}..${to}`);
    }
    if (from > to) return [];
    const exact = isInstanceKey(owner, to);
    const chunksOf = this.#forgetChunks(range, exact);
    let extraChunks = 0;
    for (const chunks of chunksOf.values()) extraChunks += chunks - 1;
    if (this.#deleteByKey && exact && to - from + 1 + extraChunks <= KEYED_DELETE_KEYS) {
      this.#keyedDeletes++;
      return keyedDeleteWrites(range, chunksOf);
    }
    return await this.#listedDeleteWrites(range, written);
  }

  /**
   * Deletes of every instance record chunk in the file (an install of a later
   * epoch drops every record), listed; the chunk bookkeeping forgets them all.
   */
  async deleteAllWrites(): Promise<Write[]> {
    const writes: Write[] = [];
    // Bounded by the chunks stored.
    for await (const entry of this.#kv.list({ prefix: [INSTANCES] }, { batchSize: LIST_BATCH })) {
      writes.push(deleteWrite(entry.key));
    }
    this.#recordChunks.clear();
    return writes;
  }

  /**
   * Forgets the multi-chunk records of `range`, which its delete removes
   * either way: by number when the range is the smaller, else by a scan.
   * Their chunk counts by instance number.
   */
  #forgetChunks({ owner, from, to }: InstanceRange, exact: boolean): Map<number, number> {
    const chunksOf = new Map<number, number>();
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
    return chunksOf;
  }

  /** Deletes of the chunks of `range` listed on disk or written earlier in the batch. */
  async #listedDeleteWrites(
    { owner, from, to }: InstanceRange,
    written: ReadonlyMap<number, number>,
  ): Promise<Write[]> {
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
    return keys.map(deleteWrite);
  }
}

/** The write of a prune floor. */
export function floorWrite(pruneFloor: Deps): Write {
  return write(FLOOR_KEY, encodeDeps(pruneFloor));
}

/**
 * Chunk 0 of every number in `range` (deleting a missing key is a no-op), and
 * the further chunks of the few records that have them (`chunksOf`).
 */
function keyedDeleteWrites(
  { owner, from, to }: InstanceRange,
  chunksOf: ReadonlyMap<number, number>,
): Write[] {
  const writes: Write[] = [];
  for (let number = from; number <= to; number++) {
    const chunks = chunksOf.get(number) ?? 1;
    for (let chunk = 0; chunk < chunks; chunk++) {
      writes.push(deleteWrite([INSTANCES, owner, number, chunk]));
    }
  }
  return writes;
}

/** The parts of a listed record chunk's key and its value, checked. */
function checkRecordChunk(entry: Deno.KvEntry<unknown>): RecordChunk {
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
  return { owner, number, chunk, value };
}

/** A record whose first listed chunk is `first`, which must be chunk 0 with a count. */
function startRecord(key: Deno.KvKey, first: RecordChunk): ListedRecord {
  const { owner, number, chunk, value } = first;
  if (chunk !== 0 || value.length < 4) {
    throw new StorageFormatError(
      `Malformed instance record at key ${describeKey(key)}: no chunk 0 with a count`,
    );
  }
  const count = chunkCount(value);
  if (count < 1) {
    throw new StorageFormatError(
      `Malformed instance record at key ${describeKey(key)}: chunk count is 0`,
    );
  }
  return { owner, number, count, chunks: [value] };
}

/** The record `listed` holds, checked against its key. */
function decodeListedRecord<C>(
  listed: ListedRecord,
  codec: RecordCodecOptions<C>,
): InstanceRecord<C> {
  const { owner, number, count, chunks } = listed;
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
  return record;
}
