/**
 * Execution of the multi-key commands (`txn_commands.ts`): what an atomic
 * command, a snapshot read and an expire command do to the state. Pure
 * functions of the command and the state they read; the state machine
 * (`state_machine.ts`) applies the changes they return.
 *
 * An atomic command is computed on a staged overlay of the state and
 * returns its changes only when every check held and every mutation applied,
 * so a failure leaves the state untouched and produces no mutations to
 * persist (denokv runs it in one SQLite transaction for the same reason:
 * `atomic_write_once` in `sqlite/backend.rs`).
 *
 * @module
 */

import {
  MAX_STAMP_COUNTER,
  versionstampCounter,
  versionstampOf,
  versionstampSuffix,
} from "./database_keys.ts";
import {
  entryOf,
  isU64Entry,
  type KvEntry,
  LE64_ENCODING,
  le64Bytes,
  readLe64,
  U64_MASK,
} from "./entry.ts";
import { sumV8, V8_ENCODING } from "./v8_sum.ts";
import {
  type AtomicCommand,
  type AtomicResult,
  type ExpireCommand,
  type ExpireResult,
  singleKeyOf,
  type SnapshotRange,
  type SnapshotResult,
  stampBucketsOf,
} from "./txn_commands.ts";

/** Reads one key of the state. */
export type ReadEntry = (key: string) => KvEntry | undefined;

/** The outcome of an atomic command. */
export interface AtomicExecution {
  /** Its result. */
  readonly result: AtomicResult;
  /** The final entry of every key it changed (`undefined`: deleted); empty unless it succeeded. */
  readonly changes: ReadonlyMap<string, KvEntry | undefined>;
  /** The versionstamp counter it used (a database's command that succeeded). */
  readonly stamp?: number;
}

/** The outcome of an expire command. */
export interface ExpireExecution {
  /** Its result. */
  readonly result: ExpireResult;
  /** The keys it deleted, each mapped to `undefined`. */
  readonly changes: ReadonlyMap<string, KvEntry | undefined>;
}

const NO_CHANGES: ReadonlyMap<string, KvEntry | undefined> = new Map();
const EMPTY = new Uint8Array(0);
/** What a sum/min/max makes of the current value `current` and the operand. */
function combine(kind: "sum" | "min" | "max", current: bigint, operand: bigint): bigint {
  switch (kind) {
    case "sum":
      // Wraps mod 2^64 (denokv: `wrapping_add`).
      return (current + operand) & U64_MASK;
    case "min":
      return current < operand ? current : operand;
    case "max":
      return current > operand ? current : operand;
  }
}

/** The versions an atomic command's writes may get ({@linkcode executeAtomic}). */
export interface AtomicVersions {
  /** A curl command's version: the instance's `versionOf`, as a put's. */
  readonly version: string;
  /** The last two bytes of a database command's versionstamp (`stampSuffixOf`). */
  readonly stampSuffix?: string;
}

/**
 * Executes an atomic command on the state `read` gives: every check first
 * (all of them, so that a failure reports each check's current version),
 * then every mutation in order, each seeing the ones before it.
 *
 * A curl command (no `database`) gives every key it writes `version` (the
 * instance's `versionOf`, as a put's). A database's command computes its
 * versionstamp from its stamp buckets and `floor` (`database_keys.ts`) and
 * sets those buckets to it. Sum/min/max results are LE64 values without an
 * expiry, whatever the mutation carries (denokv's `mutate_le64`).
 */
export function executeAtomic(
  command: AtomicCommand,
  read: ReadEntry,
  options: AtomicVersions,
): AtomicExecution {
  let version = options.version;
  let checksHeld = true;
  const current: (string | null)[] = [];
  for (const check of command.checks) {
    const found = read(check.key)?.version ?? null;
    current.push(found);
    if (found !== check.version) checksHeld = false;
  }
  if (!checksHeld) {
    return { result: { op: "atomic", ok: false, failure: "check", current }, changes: NO_CHANGES };
  }
  const database = command.database;
  const buckets = stampBucketsOf(command);
  let stamp: number | undefined;
  if (database !== undefined) {
    let highest = command.floor ?? 0;
    for (const bucket of buckets) {
      const counter = versionstampCounter(read(bucket)?.version ?? "");
      if (counter !== undefined && counter > highest) highest = counter;
    }
    stamp = highest + 1;
    if (stamp > MAX_STAMP_COUNTER) return invalid("Versionstamps are exhausted");
    version = versionstampOf(stamp, options.stampSuffix);
  }
  const staged = new Map<string, KvEntry | undefined>();
  const get = (key: string) => staged.has(key) ? staged.get(key) : read(key);
  for (const mutation of command.mutations) {
    switch (mutation.kind) {
      case "set":
        staged.set(mutation.key, entryOf(mutation.value, version, mutation));
        break;
      case "delete":
        staged.set(mutation.key, undefined);
        break;
      case "sum":
      case "min":
      case "max": {
        if (mutation.kind === "sum" && mutation.encoding === V8_ENCODING) {
          const outcome = sumV8(get(mutation.key), mutation.value, mutation);
          if (!outcome.ok) return invalid(outcome.message);
          staged.set(mutation.key, entryOf(outcome.value, version, { encoding: outcome.encoding }));
          break;
        }
        const existing = get(mutation.key);
        let value = mutation.value;
        if (existing !== undefined) {
          if (!isU64Entry(existing)) {
            return invalid(
              `Failed to perform '${mutation.kind}' mutation on a non-U64 value in the database`,
            );
          }
          value = le64Bytes(
            combine(mutation.kind, readLe64(existing.value), readLe64(mutation.value)),
          );
        }
        staged.set(
          mutation.key,
          entryOf(value, version, { encoding: database === undefined ? undefined : LE64_ENCODING }),
        );
        break;
      }
      case "setSuffixVersionstamped":
        // Validation refuses it without a database; refused here too, so that
        // no command can make execution throw.
        if (database === undefined) return invalid("A versionstamped key needs a database");
        staged.set(
          mutation.key + versionstampSuffix(version),
          entryOf(mutation.value, version, mutation),
        );
        break;
    }
  }
  for (const bucket of buckets) staged.set(bucket, { value: EMPTY, version });
  return stamp === undefined
    ? { result: { op: "atomic", ok: true, version }, changes: staged }
    : { result: { op: "atomic", ok: true, version }, changes: staged, stamp };
}

function invalid(message: string): AtomicExecution {
  return { result: { op: "atomic", ok: false, failure: "invalid", message }, changes: NO_CHANGES };
}

/** Executes an expire command: deletes each key whose version is still the one that expired. */
export function executeExpire(command: ExpireCommand, read: ReadEntry): ExpireExecution {
  const changes = new Map<string, KvEntry | undefined>();
  for (const { key, version } of command.keys) {
    if (changes.has(key)) continue;
    if (read(key)?.version === version) changes.set(key, undefined);
  }
  return { result: { op: "expire", ok: true, deleted: changes.size }, changes };
}

/** The index of the first of the sorted `keys` at or after `target`. */
export function lowerBound(keys: readonly string[], target: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (keys[middle]! < target) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

/**
 * Reads `range` from a state whose keys are `sortedKeys`: the keys in
 * `[start, end)`, at most `limit`, from the start or (reverse) from the end.
 */
export function readRange(
  range: SnapshotRange,
  sortedKeys: () => readonly string[],
  read: ReadEntry,
): (KvEntry & { key: string })[] {
  const { start, end } = range;
  if (start >= end) return [];
  // Deno's `get` reads the range [key, key ‖ 0x00), which holds the key
  // alone: answered without the sorted keys, which a write of a new key
  // invalidates.
  if (singleKeyOf(range) !== undefined) {
    const entry = read(start);
    return entry === undefined ? [] : [{ key: start, ...entry }];
  }
  // Validated (1 to 1000); clamped here too, so that no command can make
  // execution throw or run long.
  const limit = Math.min(Math.max(1, Math.floor(range.limit) || 1), 1000);
  const keys = sortedKeys();
  const entries: (KvEntry & { key: string })[] = [];
  if (range.reverse) {
    for (let i = lowerBound(keys, end) - 1; i >= 0 && entries.length < limit; i--) {
      const key = keys[i]!;
      if (key < start) break;
      entries.push({ key, ...read(key)! });
    }
  } else {
    for (let i = lowerBound(keys, start); i < keys.length && entries.length < limit; i++) {
      const key = keys[i]!;
      if (key >= end) break;
      entries.push({ key, ...read(key)! });
    }
  }
  return entries;
}

/** Reads every range at once: one consistent snapshot of the state. */
export function readRanges(
  ranges: readonly SnapshotRange[],
  sortedKeys: () => readonly string[],
  read: ReadEntry,
): SnapshotResult {
  return {
    op: "snapshot",
    ok: true,
    ranges: ranges.map((range) => readRange(range, sortedKeys, read)),
  };
}
