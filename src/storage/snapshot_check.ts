/**
 * The checks every storage makes of a {@linkcode ReplicaSnapshot} before
 * `install` changes anything: its shape ({@linkcode MalformedSnapshotError}),
 * its epoch against the replica's ({@linkcode SnapshotEpochError}) and, in the
 * same epoch, that it is not behind what the replica already pruned
 * ({@linkcode SnapshotBelowFloorError}).
 *
 * @module
 */

import type { LeaseConfiguration } from "../core/lease.ts";
import {
  type Configuration,
  configurationProblem,
  describeConfiguration,
  positionCount,
  sameConfiguration,
} from "../core/configuration.ts";
import type { Deps } from "../core/deps.ts";
import { describeId, instanceKey, isInstanceKey } from "../core/instance.ts";
import type { InstanceRecord } from "../core/types.ts";
import { type KvEntry, stateDigestOf } from "../kv/state_machine.ts";
import { isEncoding, isExpiry } from "../kv/entry.ts";
import { type ReplicaSnapshot, SnapshotBelowFloorError, SnapshotEpochError } from "./types.ts";

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
  /**
   * Rows of the current epoch (its number of positions: highest member id plus one), when the storage knows
   * it: a snapshot of the same epoch has a prefix row per replica.
   */
  readonly replicas?: number;
  /** The persisted prune floor, if any. */
  readonly pruneFloor: Deps | undefined;
  /** The stored configuration (`LoadedState.configuration`), if any: epoch 1 without. */
  readonly configuration?: Configuration;
}

/**
 * How a checked snapshot relates to the replica's epoch: of the `same` one
 * (its records and floor apply on top of the replica's), or of a `later` one
 * (it replaces every record, the floor and the configuration).
 */
export type SnapshotEpoch = "same" | "later";

/**
 * Checks `snapshot` before it is installed: a valid configuration if it
 * carries one (`configurationProblem`), of an epoch not before the stored one
 * and, in the same epoch, equal to the stored one; a prefix of one natural
 * number per row (a row per position of the snapshot's configuration when it
 * carries one, `positionCount`; in the same epoch, `replicas` rows when known,
 * as many as the stored configuration has positions, as many as the persisted floor has), a
 * barrier, records above the prefix that are committed (phase 3, with a
 * command and dependencies) and executed, at most one per instance, entries
 * with distinct well-formed keys (and a valid encoding and expiry where
 * they have one), and the digest of those entries. In the
 * same epoch, a prefix not below the floor.
 *
 * @returns whether the snapshot is of the same epoch or a later one.
 * @throws {MalformedSnapshotError} naming the first problem found.
 * @throws {SnapshotEpochError} if the snapshot is of an earlier epoch, or of
 *   the same one with another configuration.
 * @throws {SnapshotBelowFloorError} if the snapshot is of the same epoch and
 *   its prefix is below `pruneFloor` in some row.
 */
export function checkReplicaSnapshot<C>(
  snapshot: ReplicaSnapshot<C>,
  options: SnapshotCheckOptions,
): SnapshotEpoch {
  if (snapshot === null || typeof snapshot !== "object") {
    throw new MalformedSnapshotError("Snapshot is not an object");
  }
  const epoch = checkEpoch(snapshot.configuration, options.configuration);
  const prefix = checkPrefix(snapshot.executedPrefix, rowsOf(snapshot, epoch, options));
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
  // A later epoch is a fresh instance space: the floor of this one says nothing of it.
  if (epoch === "later" || floor === undefined) return epoch;
  for (let row = 0; row < prefix.length; row++) {
    if (prefix[row]! < floor[row]!) {
      throw new SnapshotBelowFloorError(
        `Snapshot prefix [${prefix.join(" ")}] is below the prune floor [${floor.join(" ")}] ` +
          `in row ${row}`,
      );
    }
  }
  return epoch;
}

/** The epoch of `configuration`: 1 without one (the bootstrap configuration). */
export function epochOf(configuration: Configuration | undefined): number {
  return configuration?.epoch ?? 1;
}

/**
 * A copy of a valid `configuration` with only its fields (a member's too),
 * as storage keeps it.
 */
export function copyConfiguration(configuration: Configuration): Configuration {
  return {
    epoch: configuration.epoch,
    members: configuration.members.map(({ id, incarnation, url, role }) => ({
      id,
      incarnation,
      url,
      role,
    })),
    nextId: configuration.nextId,
    ...(configuration.leases === undefined ? {} : { leases: copyLeases(configuration.leases) }),
  };
}

function copyLeases(leases: LeaseConfiguration): LeaseConfiguration {
  return {
    leaseMs: leases.leaseMs,
    renewMs: leases.renewMs,
    drift: leases.drift,
    rules: leases.rules.map(({ prefix, holders }) => ({
      prefix,
      holders: holders === "all" ? "all" : [...holders],
    })),
  };
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

/** The configuration a snapshot carries, checked against the stored one. */
function checkEpoch(carried: unknown, stored: Configuration | undefined): SnapshotEpoch {
  if (carried === undefined) {
    if (epochOf(stored) > 1) {
      throw new SnapshotEpochError(
        `Snapshot of epoch 1 (it carries no configuration) is older than this replica's ` +
          `epoch ${epochOf(stored)}`,
      );
    }
    return "same";
  }
  const problem = configurationProblem(carried);
  if (problem !== undefined) {
    throw new MalformedSnapshotError(`Snapshot configuration is invalid: ${problem}`);
  }
  const configuration = carried as Configuration;
  const epoch = configuration.epoch;
  const current = epochOf(stored);
  if (epoch < current) {
    throw new SnapshotEpochError(
      `Snapshot of epoch ${epoch} is older than this replica's epoch ${current}`,
    );
  }
  if (epoch > current) return "later";
  if (stored !== undefined && !sameConfiguration(configuration, stored)) {
    throw new SnapshotEpochError(
      `Snapshot configuration ${describeConfiguration(configuration)} is not this replica's ` +
        `${describeConfiguration(stored)} of the same epoch`,
    );
  }
  return "same";
}

/** A row count the prefix must have, and what says so (e.g. `the cluster has 3`). */
interface Rows {
  readonly count: number;
  readonly says: string;
}

/** Every row count known for `snapshot`'s prefix. */
function rowsOf<C>(
  snapshot: ReplicaSnapshot<C>,
  epoch: SnapshotEpoch,
  options: SnapshotCheckOptions,
): Rows[] {
  const rows: Rows[] = [];
  const carried = snapshot.configuration;
  if (carried !== undefined) {
    const positions = positionCount(carried);
    rows.push({
      count: positions,
      says: `its configuration ${describeConfiguration(carried)} has ${positions} positions`,
    });
  }
  if (epoch === "later") return rows;
  const count = options.replicas ??
    (options.configuration === undefined ? undefined : positionCount(options.configuration)) ??
    options.pruneFloor?.length;
  if (count !== undefined) rows.push({ count, says: `the cluster has ${count}` });
  return rows;
}

function checkPrefix(prefix: unknown, rows: readonly Rows[]): Deps {
  if (
    !Array.isArray(prefix) || prefix.length === 0 ||
    !prefix.every((n) => Number.isSafeInteger(n) && n >= 0)
  ) {
    throw new MalformedSnapshotError("Snapshot prefix is not a vector of instance numbers");
  }
  for (const { count, says } of rows) {
    if (prefix.length !== count) {
      throw new MalformedSnapshotError(`Snapshot prefix has ${prefix.length} rows, but ${says}`);
    }
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
      entry.version.length > MAX_VERSION_LENGTH || !isEncoding(entry.encoding) ||
      !isExpiry(entry.expiresAt)
    ) {
      throw new MalformedSnapshotError(`Snapshot entry of key ${shown} is malformed`);
    }
  }
}
