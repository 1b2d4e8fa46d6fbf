/**
 * Replica storage on Deno KV (its SQLite backend, a local file).
 *
 * The instance records are kept one per instance; the key-value state as a
 * log of changes per atomic commit plus a periodic snapshot; a batch is packed
 * into as few atomic commits as Deno KV's limits allow, and a unit too large
 * for one goes through a redo log so that it is still all or nothing. Every
 * atomic commit is durable when it resolves.
 *
 * | file | what it holds |
 * | --- | --- |
 * | `storage.ts` | {@linkcode DenoKvStorage}: open, load, commit, install, close |
 * | `keys.ts` | the key layout (a table of every key) and the format version |
 * | `writes.ts` | writes, Deno KV's limits per atomic commit, the atomic writer, durability |
 * | `chunks.ts` | values over the 64 KiB value limit, chunked |
 * | `packing.ts` | a batch as atomic units, packed into atomic commits |
 * | `redo_log.ts` | the redo log of a unit too large for one atomic commit |
 * | `effects_log.ts` | the log of key-value changes, an entry per atomic commit |
 * | `snapshots.ts` | snapshots of the key-value state, why, and the log's cleanup |
 * | `instances.ts` | instance records, the prune floor, keyed deletes and chunk bookkeeping |
 * | `install.ts` | installing a peer's snapshot, atomically across its many commits |
 * | `configuration_key.ts` | the configuration of the store's epoch, set by an install of a later epoch |
 * | `restore.ts` | seeding an empty store from a backup |
 *
 * @module
 */

export { CHUNK_BYTES } from "./chunks.ts";
export { FORMAT_VERSION, StorageFormatError } from "./keys.ts";
export { RestoreRefusedError, seedDenoKvStore, seedingOf, type SeedOutcome } from "./restore.ts";
export { CLEANUP_PER_COMMIT, SNAPSHOT_BYTES_PER_COMMIT } from "./snapshots.ts";
export { DenoKvStorage, type DenoKvStorageOptions, openDenoKvStorage } from "./storage.ts";
export { DENO_KV_LIMITS, FailpointCrash } from "./writes.ts";
