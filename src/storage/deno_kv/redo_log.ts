/**
 * The redo log: how a unit too large for one atomic commit is still written
 * all or nothing.
 *
 * A unit that does not fit in one commit at all (a record with many large
 * commands, effects with more than 1000 changes, a delete of a long range) is
 * written through the redo log: its writes are first stored under `["redo"]`
 * (chunk 0 last, which marks the log complete), then applied in as many
 * commits as needed, the last of which deletes the marker. A crash before the
 * marker leaves the unit out; after it, the next `load` or `commit` applies it
 * again (its writes are blind sets and deletes, so applying them twice is the
 * same as once). Either way the unit is all or nothing.
 *
 * The log is MessagePack `[[key, value or null], ...]`, chunked as in
 * `chunks.ts`.
 *
 * @module
 */

import { decodeMsgpack, encodedKeyLength, encodeMsgpack } from "../codec.ts";
import { assembleChunks, chunkWrites } from "./chunks.ts";
import { describeKey, isNatural, LIST_BATCH, REDO, StorageFormatError } from "./keys.ts";
import { type AtomicWriter, deleteWrite, type Write } from "./writes.ts";

/** The redo log of a Deno KV file, written and replayed through one {@linkcode AtomicWriter}. */
export class RedoLog {
  readonly #kv: Deno.Kv;
  readonly #writer: AtomicWriter;
  #units = 0;

  /** The redo log in `kv`, written by `writer`. */
  constructor(kv: Deno.Kv, writer: AtomicWriter) {
    this.#kv = kv;
    this.#writer = writer;
  }

  /** Units written through the redo log so far. */
  get units(): number {
    return this.#units;
  }

  /**
   * Writes a unit too large for one atomic commit, all or nothing, through the
   * redo log (see the module documentation).
   */
  async write(unit: readonly Write[]): Promise<void> {
    this.#units++;
    const log = encodeMsgpack(unit.map((w) => [w.key, w.value]));
    const chunks = chunkWrites([REDO], log);
    // Chunk 0 last: its presence says the log is complete.
    await this.#writer.commitInOrder([...chunks.slice(1), chunks[0]!]);
    await this.#apply(unit, chunks.length);
  }

  /** Finishes a unit whose redo log is complete, and clears any incomplete log. */
  async replay(): Promise<void> {
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
      await this.#writer.commitInOrder(keys.map(deleteWrite));
      return;
    }
    const bytes = assembleChunks(chunks, redoFormatError);
    const unit = decodeRedo(bytes);
    let last = 0;
    for (const key of keys) last = Math.max(last, key[1] as number);
    await this.#apply(unit, last + 1);
  }

  /** Applies a logged unit, deleting the log's marker in the last commit, then the rest of the log. */
  async #apply(unit: readonly Write[], logChunks: number): Promise<void> {
    const marker = deleteWrite([REDO, 0]);
    await this.#writer.commitInOrder([...unit, marker]);
    const rest: Write[] = [];
    for (let chunk = 1; chunk < logChunks; chunk++) rest.push(deleteWrite([REDO, chunk]));
    await this.#writer.commitInOrder(rest);
  }
}

function redoFormatError(reason: string): StorageFormatError {
  return new StorageFormatError(`Malformed redo log at key ${describeKey([REDO, 0])}: ${reason}`);
}

/** The writes of a complete redo log. */
function decodeRedo(bytes: Uint8Array): Write[] {
  let value: unknown;
  try {
    value = decodeMsgpack(bytes);
  } catch (error) {
    throw redoFormatError((error as Error).message);
  }
  if (!Array.isArray(value)) throw redoFormatError("not an array of writes");
  return value.map((item: unknown) => {
    if (!Array.isArray(item) || item.length !== 2) {
      throw redoFormatError("a write is not a [key, value] pair");
    }
    const [key, data] = item;
    if (
      !Array.isArray(key) || key.length === 0 ||
      !key.every((part) =>
        typeof part === "string" || isNatural(part) || part instanceof Uint8Array
      )
    ) {
      throw redoFormatError("a write has a malformed key");
    }
    if (data !== null && !(data instanceof Uint8Array)) {
      throw redoFormatError("a write has a malformed value");
    }
    return { key, value: data, keyBytes: encodedKeyLength(key) };
  });
}
