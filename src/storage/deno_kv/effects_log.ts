/**
 * The effects log: the key-value changes of executed instances, one entry per
 * atomic commit, under `["e", seq, chunk]`.
 *
 * An entry holds the `encodeEffects` of every executed instance of its commit
 * back to back, chunked as in `chunks.ts`; one sequence number per commit, not
 * per instance, so that a snapshot deletes few log keys. The key-value state
 * is the current snapshot plus the entries after its `seq` (see
 * `snapshots.ts` for why a log and snapshots, and for the log's cleanup).
 *
 * {@linkcode EffectsLog} keeps what the storage knows of the log: the last
 * sequence number used and written, the bytes since the snapshot, and the
 * chunk counts of the few entries with more than one chunk, so that cleanup
 * can delete entries by key.
 *
 * @module
 */

import type { KvEntry, KvMutation } from "../../kv/state_machine.ts";
import { decodeEffectsStream, encodeEffects } from "../codec.ts";
import { assembleChunks, CHUNK_BYTES, chunkWrites } from "./chunks.ts";
import { describeKey, isNatural, LIST_BATCH, LOG, StorageFormatError } from "./keys.ts";
import type { Cost, Write } from "./writes.ts";

/** An upper bound of the encoded length of a log key `["e", seq, chunk]`. */
const LOG_KEY_BYTES = 40;

/** A log entry being read: its chunks so far. */
interface ListedEntry {
  readonly seq: number;
  readonly chunks: Uint8Array[];
}

/** What this process knows of the effects log of a Deno KV file. */
export class EffectsLog {
  readonly #kv: Deno.Kv;
  /** The last sequence number used. */
  #seq = 0;
  /** Bytes of log written since the current snapshot (as far as known). */
  #bytes = 0;
  /**
   * The last entry on disk: a commit's own entry is written after its
   * cleanup's deletes, so keyed cleanup stops short of entries not yet written.
   */
  #writtenSeq = 0;
  /** Chunk counts of entries with more than one chunk (the rest have one), until deleted. */
  #chunks = new Map<number, number>();

  /** The effects log in `kv`; nothing is read until {@linkcode prepare}. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** The last sequence number used. */
  get seq(): number {
    return this.#seq;
  }

  /** Bytes of log since the current snapshot (counted since `load` or opening). */
  get bytes(): number {
    return this.#bytes;
  }

  /** The last entry on disk, as far as this process wrote or found. */
  get writtenSeq(): number {
    return this.#writtenSeq;
  }

  /**
   * Finds the last entry on disk, so that new entries follow it; `snapshotSeq`
   * is the current snapshot's, which the log may have been cleaned up to.
   */
  async prepare(snapshotSeq: number): Promise<void> {
    let last = snapshotSeq;
    for await (const entry of this.#kv.list({ prefix: [LOG] }, { limit: 1, reverse: true })) {
      const seq = entry.key[1];
      if (!isNatural(seq)) throw new StorageFormatError(`Unexpected key ${describeKey(entry.key)}`);
      last = Math.max(last, seq);
    }
    this.#seq = Math.max(this.#seq, last);
    this.#writtenSeq = this.#seq;
  }

  /**
   * Applies every entry after `afterSeq` to `state`, in order, and counts
   * their bytes as the log since the snapshot.
   *
   * @throws {StorageFormatError} if an entry is malformed.
   */
  async load(afterSeq: number, state: Map<string, KvEntry>): Promise<void> {
    let bytes = 0;
    let listed: ListedEntry | undefined;
    const apply = (entry: ListedEntry) => {
      bytes += applyLogEntry(entry, state);
      if (entry.chunks.length > 1) this.#chunks.set(entry.seq, entry.chunks.length);
    };
    // Bounded by the log (at most about twice the state, see `Snapshots.wanted`).
    const log = this.#kv.list({ start: [LOG, afterSeq + 1], end: [LOG + "\0"] }, {
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
      if (listed !== undefined && listed.seq !== seq) {
        apply(listed);
        listed = undefined;
      }
      listed ??= { seq, chunks: [] };
      listed.chunks[chunk] = entry.value;
    }
    if (listed !== undefined) apply(listed);
    this.#bytes = bytes;
  }

  /** Takes the next sequence number, for an entry about to be written. */
  next(): number {
    return ++this.#seq;
  }

  /** Counts `bytes` of effects into the log since the snapshot. */
  grow(bytes: number): void {
    this.#bytes += bytes;
  }

  /** Takes away the `bytes` a new snapshot covers. */
  shrink(bytes: number): void {
    this.#bytes = Math.max(0, this.#bytes - bytes);
  }

  /** The chunk writes of entry `seq`, its chunk count noted for keyed cleanup. */
  writes(seq: number, effects: Uint8Array): Write[] {
    const writes = chunkWrites([LOG, seq], effects);
    if (writes.length > 1) this.#chunks.set(seq, writes.length);
    return writes;
  }

  /** Notes that every entry up to `seq` was committed. */
  written(seq: number): void {
    this.#writtenSeq = Math.max(this.#writtenSeq, seq);
  }

  /** The chunk count of entry `seq`, which is about to be deleted, forgotten. */
  takeChunks(seq: number): number {
    const chunks = this.#chunks.get(seq) ?? 1;
    this.#chunks.delete(seq);
    return chunks;
  }

  /** Forgets the chunk counts of entries up to `seq`, which were deleted. */
  forgetThrough(seq: number): void {
    for (const known of this.#chunks.keys()) {
      if (known <= seq) this.#chunks.delete(known);
    }
  }
}

/** The encoded effects of one instance, or undefined for no changes. */
export function logEffects(
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
 * An upper bound of what `bytes` of effects add to a commit's log entry: its
 * share of chunks, each with a key and a count.
 */
export function logCost(bytes: number): Cost {
  const chunks = Math.max(1, Math.ceil(bytes / CHUNK_BYTES));
  return {
    mutations: chunks,
    totalBytes: bytes + chunks * (4 + 2 * LOG_KEY_BYTES),
    keyBytes: chunks * LOG_KEY_BYTES,
  };
}

/** Applies one listed entry's changes to `state`; its bytes. */
function applyLogEntry(entry: ListedEntry, state: Map<string, KvEntry>): number {
  let bytes;
  let effects;
  try {
    bytes = assembleChunks(entry.chunks, (reason) => new Error(reason));
    effects = decodeEffectsStream(bytes);
  } catch (error) {
    throw new StorageFormatError(
      `Malformed effects log entry at key ${describeKey([LOG, entry.seq, 0])}: ${
        (error as Error).message
      }`,
    );
  }
  for (const instance of effects) {
    for (const mutation of instance.mutations) {
      if (mutation.kind === "set") state.set(mutation.key, mutation.entry);
      else state.delete(mutation.key);
    }
  }
  return bytes.length;
}
