/**
 * The key layout of replica storage on Deno KV and its format version: every
 * key the storage reads or writes, and the check that a file is one.
 *
 * ## Layout (format 2)
 *
 * | key | value |
 * | --- | --- |
 * | `["meta", "format"]` | `2` (a number): the layout version; a file with another one is refused |
 * | `["meta", "floor"]` | the prune floor, a MessagePack array of instance numbers |
 * | `["i", owner, number, chunk]` | an instance record, MessagePack (see `codec.ts`) split into chunks of at most `CHUNK_BYTES` bytes (`chunks.ts`); chunk 0 starts with the chunk count (uint32, big-endian) |
 * | `["e", seq, chunk]` | the effects log: the key-value changes of the executed instances of one atomic commit (their `encodeEffects` back to back), chunked like a record; `seq` counts up |
 * | `["meta", "snapshot"]` | the current snapshot, MessagePack `[generation, seq, pages]`: the key-value state after every log entry up to `seq` |
 * | `["s", generation, page]` | the snapshot's pages (`encodeSnapshotPages`) |
 * | `["redo", chunk]` | the redo log of a unit too large for one atomic commit, present only while such a unit is applied |
 * | `["meta", "configuration"]` | the configuration of the epoch the store is in, MessagePack `{epoch, members: [{id, incarnation, url, role}], nextId}`, written by the install of a snapshot of a later epoch (`install.ts`, `configuration_key.ts`); absent: epoch 1, the cluster file's configuration (so stores written before epochs read as they were) |
| `["meta", "restore"]` | in a store seeded from a backup (`restore.ts`): `[sha256, complete]` (a Deno KV value, like the format version), the backup's SHA-256 and whether seeding finished; a store whose seeding did not finish is refused |
 *
 * Keys are short on purpose: a single write must always fit in one atomic
 * commit (see `writes.ts`), and so must the redo log's chunks.
 *
 * @module
 */

/** The layout version this build reads and writes. */
export const FORMAT_VERSION = 2;

/** The layout version. */
export const FORMAT_KEY: Deno.KvKey = ["meta", "format"];
/** The prune floor. */
export const FLOOR_KEY: Deno.KvKey = ["meta", "floor"];
/** The backup a store was seeded from, and whether seeding finished. */
export const RESTORE_KEY: Deno.KvKey = ["meta", "restore"];
/** The configuration of the store's epoch, once a later epoch was installed. */
export const CONFIGURATION_KEY: Deno.KvKey = ["meta", "configuration"];
/** The current snapshot's place. */
export const SNAPSHOT_KEY: Deno.KvKey = ["meta", "snapshot"];
/** Prefix of instance record chunks, `["i", owner, number, chunk]`. */
export const INSTANCES = "i";
/** Prefix of effects log chunks, `["e", seq, chunk]`. */
export const LOG = "e";
/** Prefix of snapshot pages, `["s", generation, page]`. */
export const SNAPSHOT = "s";
/** Prefix of redo log chunks, `["redo", chunk]`. */
export const REDO = "redo";
/** Entries read per round trip when listing (Deno KV reads at most 1000). */
export const LIST_BATCH = 500;

/** A file that is not, or not any more, readable as this storage. */
export class StorageFormatError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "StorageFormatError";
  }
}

/**
 * Checks the format version of the file, setting it on a fresh one. A file
 * of another version is refused before anything is read or written, with a
 * message naming both versions.
 *
 * @throws {StorageFormatError} if the file has another format version, or
 *   holds data without one.
 */
export async function checkFormat(kv: Deno.Kv): Promise<void> {
  const format = await kv.get(FORMAT_KEY);
  if (format.versionstamp === null) {
    for await (const entry of kv.list({ prefix: [] }, { limit: 1 })) {
      throw new StorageFormatError(
        `File holds data (key ${describeKey(entry.key)}) but no storage format version; ` +
          "it is not an epaxos-kv store",
      );
    }
    const result = await kv.atomic().check(format).set(FORMAT_KEY, FORMAT_VERSION).commit();
    if (!result.ok) throw new Error("Another process set the storage format concurrently");
  } else if (format.value !== FORMAT_VERSION) {
    throw new StorageFormatError(
      `File has storage format ${JSON.stringify(format.value)}, but this build reads only ` +
        `format ${FORMAT_VERSION}${formatHint(format.value)}`,
    );
  }
}

/**
 * What an operator can do about a store of format `found`: a later build
 * wrote it (a rolling upgrade rolled back past a format change), or an
 * earlier one that this build cannot read. Nothing was changed either way.
 */
function formatHint(found: unknown): string {
  if (typeof found !== "number") return "";
  return found > FORMAT_VERSION
    ? ": a later build wrote it; run that build (or a later one) on this data directory"
    : ": an earlier build wrote it; run that build, or replace this replica " +
      "(deno task admin replace) and start it on an empty data directory with --join";
}

/** What `["meta", "restore"]` holds: the backup a store was seeded from. */
export interface RestoreMark {
  /** The backup's SHA-256 (hex). */
  readonly sha256: string;
  /** Whether seeding finished. */
  readonly complete: boolean;
}

/**
 * The backup the store in `kv` was seeded from, if it was.
 *
 * @throws {StorageFormatError} if the mark is malformed.
 */
export async function readRestoreMark(kv: Deno.Kv): Promise<RestoreMark | undefined> {
  const mark = await kv.get(RESTORE_KEY);
  if (mark.versionstamp === null) return undefined;
  const value = mark.value;
  if (
    !Array.isArray(value) || value.length !== 2 || typeof value[0] !== "string" ||
    typeof value[1] !== "boolean"
  ) {
    throw new StorageFormatError(`Malformed restore mark at key ${describeKey(RESTORE_KEY)}`);
  }
  return { sha256: value[0], complete: value[1] };
}

/**
 * Refuses a store whose seeding from a backup did not finish: it holds part
 * of a state, which no replica may serve. Returns the mark of a store seeded
 * from a backup, if it is one.
 *
 * @throws {StorageFormatError} if seeding did not finish.
 */
export async function checkSeeded(kv: Deno.Kv): Promise<RestoreMark | undefined> {
  const mark = await readRestoreMark(kv);
  if (mark !== undefined && !mark.complete) {
    throw new StorageFormatError(
      `The store's seeding from backup ${
        mark.sha256.slice(0, 12)
      } did not finish; start it again with --restore and the same backup, ` +
        "or empty the data directory",
    );
  }
  return mark;
}

/** Whether `value` is a non-negative safe integer, as every number in a key is. */
export function isNatural(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** `key` as text for error messages, e.g. `["i", 0, 7, 0]`. */
export function describeKey(key: Deno.KvKey): string {
  const parts = key.map((part) =>
    part instanceof Uint8Array ? `<${part.length} bytes>` : JSON.stringify(
      typeof part === "bigint" ? `${part}n` : part,
    )
  );
  return `[${parts.join(", ")}]`;
}
