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
 *    `executed: false`, and the snapshot's records. One atomic commit when it
 *    fits, else written through the redo log (`redo_log.ts`), which the next
 *    `load` or `commit` finishes after a crash;
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
import { MalformedSnapshotError, prunedBy, snapshotRecordKeys } from "../snapshot_check.ts";
import type { ReplicaSnapshot } from "../types.ts";
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

/**
 * The snapshot's state as snapshot pages, having checked that `load` will
 * read back every record and page as given (commands of the cluster's kind,
 * entries that fit a page, versions it decodes).
 *
 * @throws {MalformedSnapshotError} if not.
 */
export function encodeInstall<C>(
  snapshot: ReplicaSnapshot<C>,
  codec: RecordCodecOptions<C>,
): Uint8Array[] {
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
  return pages;
}

/**
 * Installs a checked snapshot whose state `pages` holds (see the module
 * documentation). On a failure, what is on disk is the state before or after
 * and the parts must forget what they know, as after a failed commit.
 */
export async function installSnapshot<C>(
  parts: InstallParts<C>,
  snapshot: ReplicaSnapshot<C>,
  pages: readonly Uint8Array[],
): Promise<void> {
  const { writer, redo, log, snapshots, instances } = parts;
  const prefix = snapshot.executedPrefix;
  // Listing the records also notes their chunk keys, for the deletes.
  const held = await instances.readRecords();
  const switchWrites: Write[] = [];
  for (let row = 0; row < prefix.length; row++) {
    if (prefix[row]! < 1) continue;
    const range = { owner: row, from: 1, to: prefix[row]! };
    for (const w of await instances.deleteWrites(range, new Map())) switchWrites.push(w);
  }
  const replaced = snapshotRecordKeys(snapshot);
  const written = new Map<number, number>();
  for (const record of held) {
    if (prunedBy(prefix, record) || !record.executed) continue;
    if (replaced.has(instanceKey(record.owner, record.number))) continue;
    // Its effects are not in the snapshot's state: it executes again.
    const again = { ...record, executed: false };
    for (const w of instances.recordWrites(again, written)) switchWrites.push(w);
  }
  for (const record of snapshot.records) {
    for (const w of instances.recordWrites(record, written)) switchWrites.push(w);
  }
  switchWrites.push(floorWrite(prefix));
  const placed = snapshots.place(pages);
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
