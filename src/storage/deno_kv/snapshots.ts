/**
 * Snapshots of the key-value state: written incrementally, read at `load`,
 * and the cleanup of the log and pages they replace.
 *
 * ## Why a log and snapshots
 *
 * The key-value state is kept as a log of changes (`effects_log.ts`) plus a
 * periodic snapshot, not as one Deno KV entry per key (format 1): an update of
 * a random key of a large state touches a random page of SQLite's B-tree,
 * which cost 36 µs of CPU per key on 100,000 keys against 9 µs on 1,000
 * (measured with Deno 2.9.6 on the 2-core CI machine), against one sequential
 * append per atomic commit here (etcd's bbolt keys its history by revision for
 * the same reason). The state is the snapshot plus the log after it; when the
 * log outgrows both `snapshotLogBytes` (8 MiB) and twice the last snapshot,
 * `wantsSnapshot` asks the replica for its state, which is written a slice per
 * commit, and the log it covers is then deleted (listed once per process;
 * after that by the keys the storage knows it wrote, because a listing reads
 * every value). So the file holds the state a few times over at most (a log of
 * twice the state, and two snapshots while a new one is written), plus the
 * instances not yet pruned.
 *
 * ## Writing one
 *
 * A snapshot, when a batch carries one, is written a slice per commit from
 * then on (that one included): its pages, then the switch of
 * `["meta", "snapshot"]` (itself atomic), then the deletes of what it
 * replaced; a crash anywhere in it leaves the same key-value state. A
 * key-value entry too large for a snapshot page (the key-value layer's limits
 * keep entries well under it) is refused before anything of the batch is
 * written.
 *
 * ## Installing one
 *
 * A snapshot a peer sends (`install.ts`) is written whole: its pages under
 * the next generation ({@linkcode Snapshots.place}), then the same switch,
 * made in one unit with the records and prune floor it brings, then the
 * cleanup of everything it replaced, by listing ({@linkcode Snapshots.installed}).
 * A snapshot being built is dropped: its state is no longer the replica's.
 *
 * @module
 */

import type { KvEntry } from "../../kv/state_machine.ts";
import {
  decodeMsgpack,
  decodeSnapshotPage,
  encodeMsgpack,
  encodeSnapshotPages,
  SNAPSHOT_PAGE_BYTES,
  snapshotEntryBound,
} from "../codec.ts";
import type { EffectsLog } from "./effects_log.ts";
import {
  describeKey,
  isNatural,
  LIST_BATCH,
  LOG,
  SNAPSHOT,
  SNAPSHOT_KEY,
  StorageFormatError,
} from "./keys.ts";
import type { Unit } from "./packing.ts";
import { deleteWrite, type Write, write } from "./writes.ts";

/** Default of {@linkcode SnapshotsOptions.snapshotLogBytes}. */
const DEFAULT_SNAPSHOT_LOG_BYTES = 8 * 1024 * 1024;
/** Bytes of snapshot pages (by estimate) each commit writes while a snapshot is built. */
export const SNAPSHOT_BYTES_PER_COMMIT = 256 * 1024;
/** Replaced log keys each commit deletes after a snapshot. */
export const CLEANUP_PER_COMMIT = 500;

/** Settings for {@linkcode Snapshots}. */
export interface SnapshotsOptions {
  /** The effects log the snapshots replace. */
  readonly log: EffectsLog;
  /**
   * Bytes of effects log after which a snapshot is wanted, if the log also
   * exceeds twice the last snapshot (default 8 MiB).
   */
  readonly snapshotLogBytes?: number;
}

/** A snapshot's place, as `["meta", "snapshot"]` holds it. */
export interface SnapshotMeta {
  /** The generation its pages are under. */
  readonly generation: number;
  /** Log entries up to this one are in the snapshot. */
  readonly seq: number;
  /** Its page count. */
  readonly pages: number;
}

/** A snapshot an install writes whole ({@linkcode Snapshots.place}). */
export interface PlacedSnapshot {
  /** Its place. */
  readonly meta: SnapshotMeta;
  /** The sets of its pages. */
  readonly pageWrites: readonly Write[];
  /** The set of `["meta", "snapshot"]` that switches to it. */
  readonly switchWrite: Write;
  /** Bytes of its pages. */
  readonly bytes: number;
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
  /** The log's bytes when it started: what it covers. */
  readonly logBytes: number;
}

/** The snapshots of a Deno KV file, as far as this process knows them. */
export class Snapshots {
  readonly #kv: Deno.Kv;
  readonly #log: EffectsLog;
  readonly #threshold: number;
  #snapshot: SnapshotMeta | undefined;
  /** Bytes of the current snapshot. */
  #bytes = 0;
  #written = 0;
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
  /** Snapshots replaced since the last cleanup finished, whose pages are to be deleted. */
  #replaced: SnapshotMeta[] = [];
  /** The generation of the last snapshot this process wrote and switched to. */
  #builtGeneration: number | undefined;
  #keyedCleanups = 0;

  /** The snapshots in `kv`; nothing is read until {@linkcode prepare}. */
  constructor(kv: Deno.Kv, options: SnapshotsOptions) {
    this.#kv = kv;
    this.#log = options.log;
    this.#threshold = options.snapshotLogBytes ?? DEFAULT_SNAPSHOT_LOG_BYTES;
  }

  /** Snapshots written by this process. */
  get written(): number {
    return this.#written;
  }

  /** Cleanups after a snapshot finished by deleting known keys, without listing. */
  get keyedCleanups(): number {
    return this.#keyedCleanups;
  }

  /** The last log entry the current snapshot covers (0 without one). */
  get seq(): number {
    return this.#snapshot?.seq ?? 0;
  }

  /** Whether the effects log has grown enough to be replaced by a snapshot. */
  wanted(): boolean {
    if (this.#building !== undefined) return false;
    return this.#log.bytes >= Math.max(this.#threshold, 2 * this.#bytes);
  }

  /**
   * Reads the current snapshot's place. Whatever the last run left of its
   * cleanup is finished by the next commits, listing what is there.
   */
  async prepare(): Promise<void> {
    this.#snapshot = await readSnapshotMeta(this.#kv);
    this.#cleanup = this.#snapshot;
    this.#keyedCleanup = false;
  }

  /**
   * Applies the current snapshot's pages to `state`; their bytes, which
   * {@linkcode loaded} takes once the rest of `load` succeeded.
   *
   * @throws {StorageFormatError} if a page is malformed or missing.
   */
  async readPages(state: Map<string, KvEntry>): Promise<number> {
    const snapshot = this.#snapshot;
    if (snapshot === undefined) return 0;
    let bytes = 0;
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
      bytes += entry.value.length;
      pages++;
    }
    if (pages !== snapshot.pages) {
      throw new StorageFormatError(
        `Snapshot ${snapshot.generation} has ${pages} of its ${snapshot.pages} pages`,
      );
    }
    return bytes;
  }

  /** Notes a successful `load`: every log entry after the snapshot is known here. */
  loaded(snapshotBytes: number): void {
    this.#bytes = snapshotBytes;
    this.#loaded = true;
  }

  /**
   * Starts a snapshot of `entries`, the state after every log entry so far;
   * it is written a slice per commit from now on.
   */
  start(entries: readonly (readonly [string, KvEntry])[]): void {
    this.#building = {
      generation: (this.#snapshot?.generation ?? 0) + 1,
      seq: this.#log.seq,
      entries,
      next: 0,
      pages: 0,
      bytes: 0,
      logBytes: this.#log.bytes,
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
  async work(): Promise<Unit[]> {
    const units: Unit[] = [];
    if (this.#building !== undefined) this.#writePages(this.#building, units);
    const cleanup = this.#cleanup;
    if (cleanup !== undefined && this.#keyedCleanup) this.#cleanByKey(cleanup, units);
    else if (cleanup !== undefined) await this.#cleanByListing(cleanup, units);
    return units;
  }

  /** Whether the cleanup of what the current snapshot replaced is still to finish (in `work`). */
  get cleaning(): boolean {
    return this.#cleanup !== undefined;
  }

  /**
   * Places `pages` (the encoded state a peer's snapshot brings) as the next
   * generation, covering every log entry so far: the writes of its pages,
   * which `load` does not read before the switch, and the switch itself. Only
   * {@linkcode installed} changes what is known here.
   */
  place(pages: readonly Uint8Array[]): PlacedSnapshot {
    const meta: SnapshotMeta = {
      generation: (this.#snapshot?.generation ?? 0) + 1,
      seq: this.#log.seq,
      pages: pages.length,
    };
    let bytes = 0;
    const pageWrites = pages.map((page, index) => {
      bytes += page.length;
      return write([SNAPSHOT, meta.generation, index], page);
    });
    return { meta, pageWrites, switchWrite: metaWrite(meta), bytes };
  }

  /**
   * Notes that `placed` is the current snapshot (an install switched to it):
   * a snapshot being built is dropped (its state is not the current one any
   * more), and `work` deletes what it replaced, every log entry it covers and
   * every page of another generation, listing them. The log after it is
   * empty, so every entry of it is known here from now on.
   */
  installed(placed: PlacedSnapshot): void {
    this.#building = undefined;
    this.#snapshot = placed.meta;
    this.#builtGeneration = placed.meta.generation;
    this.#cleanup = placed.meta;
    this.#keyedCleanup = false;
    this.#replaced = [];
    this.#loaded = true;
    this.#bytes = placed.bytes;
    this.#log.shrink(this.#log.bytes);
  }

  /**
   * Forgets what a failed commit may have left half done: a snapshot being
   * built starts over when asked for again, and cleanup lists again (an
   * interrupted snapshot may have left pages nobody tracks) after the next
   * {@linkcode prepare}.
   */
  failed(): void {
    this.#building = undefined;
    this.#cleanup = undefined;
    this.#keyedCleanup = false;
  }

  /** The next pages of `building`, and the switch to it after its last. */
  #writePages(building: SnapshotBuild, units: Unit[]): void {
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
    if (end >= building.entries.length) this.#switchTo(building, units);
  }

  /** The switch of `["meta", "snapshot"]` to the finished `building`. */
  #switchTo(building: SnapshotBuild, units: Unit[]): void {
    const meta: SnapshotMeta = {
      generation: building.generation,
      seq: building.seq,
      pages: building.pages,
    };
    units.push({ writes: [metaWrite(meta)] });
    // In memory at once: a failed commit resets all of it (see `failed`).
    if (this.#snapshot !== undefined) this.#replaced.push(this.#snapshot);
    this.#snapshot = meta;
    this.#builtGeneration = meta.generation;
    this.#building = undefined;
    this.#cleanup = meta;
    this.#written++;
    this.#log.shrink(building.logBytes);
    this.#bytes = building.bytes;
  }

  /** Deletes of what `cleanup` replaced, by the keys known here. */
  #cleanByKey(cleanup: SnapshotMeta, units: Unit[]): void {
    // Every log entry after `#cleanedThrough` exists (or was never written,
    // and deleting it is a no-op), with one chunk unless the log says.
    let deleted = 0;
    const through = Math.min(cleanup.seq, this.#log.writtenSeq);
    while (this.#cleanedThrough < through && deleted < CLEANUP_PER_COMMIT) {
      const seq = ++this.#cleanedThrough;
      const chunks = this.#log.takeChunks(seq);
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
  }

  /** Deletes of what `cleanup` replaced, by listing what is on disk. */
  async #cleanByListing(cleanup: SnapshotMeta, units: Unit[]): Promise<void> {
    // The listing sees the log on disk: entries written so far.
    const listedThrough = Math.min(cleanup.seq, this.#log.writtenSeq);
    let deleted = 0;
    const covered = this.#kv.list(
      { start: [LOG], end: [LOG, cleanup.seq + 1] },
      { limit: CLEANUP_PER_COMMIT, batchSize: LIST_BATCH },
    );
    for await (const entry of covered) {
      units.push({ writes: [deleteWrite(entry.key)] });
      deleted++;
    }
    if (deleted >= CLEANUP_PER_COMMIT) return;
    // The log is done: the pages of older snapshots, and pages past the
    // count of this one (left by an interrupted attempt), bounded by them.
    // Newer generations are being built.
    for await (const entry of this.#kv.list({ prefix: [SNAPSHOT] }, { batchSize: LIST_BATCH })) {
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
    this.#log.forgetThrough(listedThrough);
    this.#keyedCleanup = this.#loaded && cleanup.generation === this.#builtGeneration;
  }
}

/**
 * Refuses a snapshot with an entry too large for a page, before anything is
 * written (pages are encoded later, a slice per commit).
 */
export function checkSnapshotEntries(entries: readonly (readonly [string, KvEntry])[]): void {
  for (const entry of entries) {
    // An upper bound of the encoding; only entries near the limit are encoded.
    if (snapshotEntryBound(entry[0], entry[1]) > SNAPSHOT_PAGE_BYTES) {
      encodeSnapshotPages([entry]);
    }
  }
}

/** The set of `["meta", "snapshot"]` to `meta`. */
function metaWrite(meta: SnapshotMeta): Write {
  return write(SNAPSHOT_KEY, encodeMsgpack([meta.generation, meta.seq, meta.pages]));
}

/** The current snapshot's place, from `["meta", "snapshot"]`. */
async function readSnapshotMeta(kv: Deno.Kv): Promise<SnapshotMeta | undefined> {
  const meta = await kv.get(SNAPSHOT_KEY);
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
