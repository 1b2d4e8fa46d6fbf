/**
 * Installing a peer's snapshot (`ReplicaStorage.install`) as one atomic unit,
 * although it spans many atomic commits:
 *
 * 1. the pages of the snapshot's state, under the next snapshot generation,
 *    which `load` does not read until `["meta", "snapshot"]` names it (as a
 *    snapshot built a slice per commit, `snapshots.ts`);
 * 2. the switch, one unit: `["meta", "snapshot"]` to the new pages, covering
 *    every effects log entry so far (so the log adds nothing to them), the
 *    prune floor set to the snapshot's prefix, the deletes of every record at
 *    or below it, the kept records that were executed rewritten with
 *    `executed: false`, and the snapshot's records. For a snapshot of a later
 *    epoch, the deletes of every record instead (none is kept) and the set of
 *    `["meta", "configuration"]` to its configuration (`configuration_key.ts`).
 *    One atomic commit when it fits, else written through the redo log
 *    (`redo_log.ts`), which the next `load` or `commit` finishes after a crash;
 * 3. cleanup: the log entries the snapshot covers and the pages of every
 *    other generation, listed and deleted (as after a snapshot whose cleanup
 *    a crash interrupted, the next commits finish what a crash leaves).
 *
 * A crash before the switch leaves the state before (new pages that nothing
 * names, overwritten or deleted by the next snapshot); from the switch on,
 * the whole new state. Everything is checked and encoded before the first
 * write, so a refused snapshot changes nothing.
 *
 * @module
 */

import { instanceKey } from "../../core/instance.ts";
import type { KvEntry } from "../../kv/state_machine.ts";
import {
  decodeRecord,
  decodeSnapshotPage,
  encodeRecordShared,
  encodeSnapshotPages,
  type RecordCodecOptions,
} from "../codec.ts";
import {
  MalformedSnapshotError,
  prunedBy,
  type SnapshotEpoch,
  snapshotRecordKeys,
} from "../snapshot_check.ts";
import type { ReplicaSnapshot } from "../types.ts";
import { configurationWrite } from "./configuration_key.ts";
import type { EffectsLog } from "./effects_log.ts";
import { floorWrite, type Instances } from "./instances.ts";
import { CommitPacker } from "./packing.ts";
import type { RedoLog } from "./redo_log.ts";
import type { Snapshots } from "./snapshots.ts";
import type { AtomicWriter, Write } from "./writes.ts";

/**
 * Most rounds of cleanup an install runs (each deletes up to
 * `CLEANUP_PER_COMMIT` log keys): far more than a log kept near twice the
 * state needs; the next commits finish whatever is left.
 */
const INSTALL_CLEANUP_ROUNDS = 1000;

/** What an install writes with: the parts of one `DenoKvStorage`. */
export interface InstallParts<C> {
  /** Makes the atomic commits. */
  readonly writer: AtomicWriter;
  /** Takes a switch too large for one commit. */
  readonly redo: RedoLog;
  /** The effects log the snapshot replaces. */
  readonly log: EffectsLog;
  /** The snapshots. */
  readonly snapshots: Snapshots;
  /** The instance records. */
  readonly instances: Instances<C>;
}

/** A checked snapshot, encoded: what {@linkcode installSnapshot} writes. */
export interface EncodedInstall {
  /** Whether it is of the store's epoch or a later one. */
  readonly epoch: SnapshotEpoch;
  /** Its state as snapshot pages. */
  readonly pages: readonly Uint8Array[];
  /** The set of `["meta", "configuration"]`, for a later epoch. */
  readonly configurationWrite?: Write;
}

/**
 * A checked snapshot of `epoch`, encoded, having checked that `load` will
 * read back every record, page and configuration as given (commands of the
 * cluster's kind, with as many rows as the epoch's positions when `codec` says,
 * entries that fit a page, versions it decodes, a configuration that fits a
 * value).
 *
 * @throws {MalformedSnapshotError} if not.
 */
export function encodeInstall<C>(
  snapshot: ReplicaSnapshot<C>,
  epoch: SnapshotEpoch,
  codec: RecordCodecOptions<C>,
): EncodedInstall {
  const configuration = epoch === "later" ? configurationWrite(snapshot.configuration!) : undefined;
  for (const record of snapshot.records) {
    try {
      decodeRecord(encodeRecordShared(record), codec);
    } catch (error) {
      throw new MalformedSnapshotError(
        `Snapshot record ${record.owner}.${record.number} is not storable: ` +
          (error as Error).message,
      );
    }
  }
  let pages: Uint8Array[];
  const state = new Map<string, KvEntry>();
  try {
    pages = encodeSnapshotPages(snapshot.entries);
    for (const page of pages) decodeSnapshotPage(page, state);
  } catch (error) {
    throw new MalformedSnapshotError(
      `Snapshot entries are not storable: ${(error as Error).message}`,
    );
  }
  if (state.size !== snapshot.entries.length) {
    throw new MalformedSnapshotError("Snapshot entries do not read back as written");
  }
  return { epoch, pages, configurationWrite: configuration };
}

/**
 * Installs a checked snapshot, `encoded` (see the module documentation). On
 * a failure, what is on disk is the state before or after and the parts must
 * forget what they know, as after a failed commit.
 */
export async function installSnapshot<C>(
  parts: InstallParts<C>,
  snapshot: ReplicaSnapshot<C>,
  encoded: EncodedInstall,
): Promise<void> {
  const { writer, redo, log, snapshots, instances } = parts;
  const prefix = snapshot.executedPrefix;
  const written = new Map<number, number>();
  const switchWrites = encoded.epoch === "later"
    // A fresh instance space: every record held is of an older epoch. The
    // snapshot's records come after, so one of the same key is set again.
    ? await instances.deleteAllWrites()
    : await sameEpochWrites(instances, snapshot, written);
  for (const record of snapshot.records) {
    for (const w of instances.recordWrites(record, written)) switchWrites.push(w);
  }
  switchWrites.push(floorWrite(prefix));
  if (encoded.configurationWrite !== undefined) switchWrites.push(encoded.configurationWrite);
  const placed = snapshots.place(encoded.pages);
  switchWrites.push(placed.switchWrite);

  await writer.commitInOrder(placed.pageWrites);
  const packer = new CommitPacker({ writer, log, redo });
  await packer.add({ writes: switchWrites });
  await packer.flush();
  snapshots.installed(placed);
  // Every record chunk key is known again: those listed, less the deleted, plus the written.
  instances.loaded();

  for (let round = 0; snapshots.cleaning && round < INSTALL_CLEANUP_ROUNDS; round++) {
    for (const unit of await snapshots.work()) await packer.add(unit);
    await packer.flush();
  }
}

/**
 * The switch's writes for the held records in the same epoch: the deletes of
 * every record at or below the prefix, and the kept executed records
 * rewritten with `executed: false` (noted in `written`).
 */
async function sameEpochWrites<C>(
  instances: Instances<C>,
  snapshot: ReplicaSnapshot<C>,
  written: Map<number, number>,
): Promise<Write[]> {
  const prefix = snapshot.executedPrefix;
  // Listing the records also notes their chunk keys, for the deletes.
  const held = await instances.readRecords();
  const writes: Write[] = [];
  for (let row = 0; row < prefix.length; row++) {
    if (prefix[row]! < 1) continue;
    const range = { owner: row, from: 1, to: prefix[row]! };
    for (const w of await instances.deleteWrites(range, new Map())) writes.push(w);
  }
  const replaced = snapshotRecordKeys(snapshot);
  for (const record of held) {
    if (prunedBy(prefix, record) || !record.executed) continue;
    if (replaced.has(instanceKey(record.owner, record.number))) continue;
    // Its effects are not in the snapshot's state: it executes again.
    const again = { ...record, executed: false };
    for (const w of instances.recordWrites(again, written)) writes.push(w);
  }
  return writes;
}
