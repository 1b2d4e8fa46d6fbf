/**
 * The checks every storage makes of a {@linkcode ReplicaSnapshot} before
 * `install` changes anything: its shape ({@linkcode MalformedSnapshotError})
 * and that it is not behind what the replica already pruned
 * ({@linkcode SnapshotBelowFloorError}).
 *
 * @module
 */

import type { Deps } from "../core/deps.ts";
import { describeId, instanceKey, isInstanceKey } from "../core/instance.ts";
import type { InstanceRecord } from "../core/types.ts";
import { type KvEntry, stateDigestOf } from "../kv/state_machine.ts";
import { type ReplicaSnapshot, SnapshotBelowFloorError } from "./types.ts";

/** Longest version a stored entry may have (what `codec.ts` decodes). */
const MAX_VERSION_LENGTH = 256;

/** A snapshot that is not one: refused by `install`, which changes nothing. */
export class MalformedSnapshotError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "MalformedSnapshotError";
  }
}

/** What {@linkcode checkReplicaSnapshot} checks a snapshot against. */
export interface SnapshotCheckOptions {
  /** Cluster size, when the storage knows it: the prefix has a row per replica. */
  readonly replicas?: number;
  /** The persisted prune floor, if any. */
  readonly pruneFloor: Deps | undefined;
}

/**
 * Checks `snapshot` before it is installed: a prefix of one natural number per
 * row (`replicas` rows when known, as many as the persisted floor has), a
 * barrier, records above the prefix that are committed (phase 3, with a
 * command and dependencies) and executed, at most one per instance, entries
 * with distinct well-formed keys, and the digest of those entries.
 *
 * @throws {MalformedSnapshotError} naming the first problem found.
 * @throws {SnapshotBelowFloorError} if the prefix is below `pruneFloor` in
 *   some row.
 */
export function checkReplicaSnapshot<C>(
  snapshot: ReplicaSnapshot<C>,
  options: SnapshotCheckOptions,
): void {
  if (snapshot === null || typeof snapshot !== "object") {
    throw new MalformedSnapshotError("Snapshot is not an object");
  }
  const prefix = checkPrefix(snapshot.executedPrefix, options);
  if (typeof snapshot.barrier !== "string" || snapshot.barrier.length === 0) {
    throw new MalformedSnapshotError("Snapshot names no barrier");
  }
  checkRecords(snapshot.records, prefix);
  checkEntries(snapshot.entries);
  const digest = stateDigestOf(snapshot.entries);
  if (snapshot.digest !== digest) {
    throw new MalformedSnapshotError(
      `Snapshot digest ${JSON.stringify(snapshot.digest)} is not that of its entries (${digest})`,
    );
  }
  const floor = options.pruneFloor;
  if (floor === undefined) return;
  for (let row = 0; row < prefix.length; row++) {
    if (prefix[row]! < floor[row]!) {
      throw new SnapshotBelowFloorError(
        `Snapshot prefix [${prefix.join(" ")}] is below the prune floor [${floor.join(" ")}] ` +
          `in row ${row}`,
      );
    }
  }
}

/**
 * Whether a record held before an install of a snapshot with `prefix` is
 * dropped (at or below the prefix of its row); the others are kept.
 */
export function prunedBy(prefix: Deps, record: InstanceRecord<unknown>): boolean {
  return record.number <= (prefix[record.owner] ?? 0);
}

/** The instance keys of a snapshot's records. */
export function snapshotRecordKeys<C>(snapshot: ReplicaSnapshot<C>): Set<number> {
  return new Set(snapshot.records.map((record) => instanceKey(record.owner, record.number)));
}

function checkPrefix(prefix: unknown, options: SnapshotCheckOptions): Deps {
  if (
    !Array.isArray(prefix) || prefix.length === 0 ||
    !prefix.every((n) => Number.isSafeInteger(n) && n >= 0)
  ) {
    throw new MalformedSnapshotError("Snapshot prefix is not a vector of instance numbers");
  }
  const rows = options.replicas ?? options.pruneFloor?.length;
  if (rows !== undefined && prefix.length !== rows) {
    throw new MalformedSnapshotError(
      `Snapshot prefix has ${prefix.length} rows, but the cluster has ${rows}`,
    );
  }
  return prefix as Deps;
}

function checkRecords(records: unknown, prefix: Deps): void {
  if (!Array.isArray(records)) throw new MalformedSnapshotError("Snapshot records are not a list");
  const seen = new Set<number>();
  for (const record of records as unknown[]) {
    if (record === null || typeof record !== "object") {
      throw new MalformedSnapshotError("Snapshot record is not an object");
    }
    const { owner, number, phase, ballot, acceptedBallot, executed, command, deps } =
      record as Record<string, unknown>;
    if (
      !Number.isSafeInteger(owner) || (owner as number) < 0 || (owner as number) >= prefix.length ||
      !Number.isSafeInteger(number) || (number as number) < 1 ||
      !isInstanceKey(owner as number, number as number)
    ) {
      throw new MalformedSnapshotError(
        `Snapshot record names no instance of the cluster: ${String(owner)}.${String(number)}`,
      );
    }
    const id = describeId(owner as number, number as number);
    if ((number as number) <= prefix[owner as number]!) {
      throw new MalformedSnapshotError(
        `Snapshot record ${id} is at or below the prefix ${prefix[owner as number]} of its row`,
      );
    }
    if (phase !== 3 || command === undefined || deps === undefined) {
      throw new MalformedSnapshotError(`Snapshot record ${id} is not committed`);
    }
    if (executed !== true) {
      throw new MalformedSnapshotError(`Snapshot record ${id} is not executed`);
    }
    if (
      !Number.isSafeInteger(ballot) || (ballot as number) < 0 ||
      !Number.isSafeInteger(acceptedBallot) || (acceptedBallot as number) < 0
    ) {
      throw new MalformedSnapshotError(`Snapshot record ${id} has an invalid ballot`);
    }
    const key = instanceKey(owner as number, number as number);
    if (seen.has(key)) throw new MalformedSnapshotError(`Snapshot has two records of ${id}`);
    seen.add(key);
  }
}

function checkEntries(entries: unknown): void {
  if (!Array.isArray(entries)) throw new MalformedSnapshotError("Snapshot entries are not a list");
  const keys = new Set<string>();
  for (const item of entries as unknown[]) {
    if (!Array.isArray(item) || item.length !== 2 || typeof item[0] !== "string") {
      throw new MalformedSnapshotError("Snapshot entry is not a [key, entry] pair");
    }
    const [key, entry] = item as [string, KvEntry];
    const shown = JSON.stringify(key.slice(0, 32));
    if (!key.isWellFormed()) {
      throw new MalformedSnapshotError(`Snapshot entry key ${shown} is not well-formed Unicode`);
    }
    if (keys.has(key)) throw new MalformedSnapshotError(`Snapshot has two entries of key ${shown}`);
    keys.add(key);
    if (
      entry === null || typeof entry !== "object" || !(entry.value instanceof Uint8Array) ||
      typeof entry.version !== "string" || entry.version.length === 0 ||
      entry.version.length > MAX_VERSION_LENGTH
    ) {
      throw new MalformedSnapshotError(`Snapshot entry of key ${shown} is malformed`);
    }
  }
}
