/**
 * KV Connect's data-path requests, checked against Deno KV's limits and
 * turned into what the state machine takes, with denokv's wording for what
 * is refused (denokv `proto/convert.rs` and `denokv/main.rs`'s `ApiError`;
 * Deno's own client enforces the same limits before it sends, `ext/kv`).
 * Every refusal is a 400 and nothing is proposed.
 *
 * @module
 */

import { ClientRequestError } from "../errors.ts";
import { v8SumProblem } from "../kv/v8_sum.ts";
import {
  MAX_DATABASE_KEY_BYTES,
  MAX_DATABASE_READ_KEY_BYTES,
  MAX_DATABASE_VALUE_BYTES,
} from "../kv/database_keys.ts";
import {
  MAX_ATOMIC_CHECKS,
  MAX_ATOMIC_MUTATIONS,
  MAX_ATOMIC_PAYLOAD_BYTES,
  MAX_SNAPSHOT_RANGES,
} from "../kv/txn_commands.ts";
import { MAX_WATCHED_KEYS } from "../kv/watch_hub.ts";
import {
  type AtomicWrite,
  MutationType,
  type SnapshotRead,
  ValueEncoding,
  type Watch,
} from "./codec.ts";

/** Most entries one snapshot read asks for, over all its ranges (Deno's `MAX_READ_ENTRIES`). */
export const MAX_READ_ENTRIES = 1000;

/** A range of a snapshot read: keys in `[start, end)`, at most `limit`, forwards or backwards. */
export interface ReadRangeRequest {
  /** Inclusive start. */
  readonly start: Uint8Array;
  /** Exclusive end. */
  readonly end: Uint8Array;
  /** Most entries, at least 1. */
  readonly limit: number;
  /** Whether from the end. */
  readonly reverse: boolean;
}

/** A check of an atomic write: `versionstamp` as 20 hex digits, or `null` for "must be absent". */
export interface CheckRequest {
  /** The key. */
  readonly key: Uint8Array;
  /** The versionstamp the key must have, or `null`. */
  readonly versionstamp: string | null;
}

/** A mutation of an atomic write, in the state machine's terms (`AtomicMutation`), binary key. */
export type MutationRequest =
  | { readonly kind: "delete"; readonly key: Uint8Array }
  | {
    readonly kind: "set" | "sum" | "min" | "max" | "setSuffixVersionstamped";
    readonly key: Uint8Array;
    readonly value: Uint8Array;
    /** `ValueEncoding`: 1, 2 or 3. */
    readonly encoding: number;
    /** Absolute expiry, ms since the epoch (the client's clock); absent: never. */
    readonly expiresAt?: number;
    /** A V8 sum's lowest result, V8-encoded (`v8_sum.ts`); absent: none. */
    readonly sumMin?: Uint8Array;
    /** A V8 sum's highest result, V8-encoded; absent: none. */
    readonly sumMax?: Uint8Array;
    /** Whether a V8 sum's result outside its bounds is clamped (else refused); absent: false. */
    readonly sumClamp?: boolean;
  };

/** An atomic write, checked. */
export interface AtomicWriteRequest {
  /** Its checks. */
  readonly checks: readonly CheckRequest[];
  /** Its mutations, in order. */
  readonly mutations: readonly MutationRequest[];
}

function refuse(message: string): never {
  throw new ClientRequestError(message, 400);
}

const KEY_TOO_LONG = "A key exceeds the key size limit.";

/**
 * The ranges of a snapshot read.
 *
 * @throws {ClientRequestError} (400) beyond 10 ranges or 1000 entries, for
 *   a limit below 1, or a bound longer than 2049 bytes.
 */
export function readRangesOf(read: SnapshotRead): ReadRangeRequest[] {
  if (read.ranges.length > MAX_SNAPSHOT_RANGES) {
    refuse("Too many read ranges requested in one read request.");
  }
  let total = 0;
  const ranges = read.ranges.map((range) => {
    if (!Number.isInteger(range.limit) || range.limit < 1) {
      refuse("The read range limit of the snapshot read request is invalid.");
    }
    if (
      range.start.length > MAX_DATABASE_READ_KEY_BYTES ||
      range.end.length > MAX_DATABASE_READ_KEY_BYTES
    ) {
      refuse(KEY_TOO_LONG);
    }
    total += range.limit;
    return { start: range.start, end: range.end, limit: range.limit, reverse: range.reverse };
  });
  if (total > MAX_READ_ENTRIES) {
    refuse(
      "The total number of entries requested across read ranges in the read request is too large.",
    );
  }
  return ranges;
}

const OPERAND_KINDS = new Map<
  MutationType,
  "set" | "sum" | "min" | "max" | "setSuffixVersionstamped"
>([
  [MutationType.M_SET, "set"],
  [MutationType.M_SUM, "sum"],
  // datapath.proto's comments on these two are swapped; the numbers are right.
  [MutationType.M_MIN, "min"],
  [MutationType.M_MAX, "max"],
  [MutationType.M_SET_SUFFIX_VERSIONSTAMPED_KEY, "setSuffixVersionstamped"],
]);

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The checks and mutations of an atomic write.
 *
 * @throws {ClientRequestError} (400) for enqueues (Deno's client sends
 *   none over KV Connect), beyond Deno KV's limits, for a versionstamp that
 *   is neither 10 bytes nor empty, an unknown mutation type or encoding, a
 *   negative expiry, or a sum/min/max operand that is not a 64-bit unsigned
 *   integer (LE64, 8 bytes).
 */
export function atomicWriteOf(write: AtomicWrite): AtomicWriteRequest {
  if (write.enqueues.length > 0) refuse("Enqueue operations are not supported in KV Connect");
  if (write.checks.length > MAX_ATOMIC_CHECKS) refuse("Too many checks included in atomic write.");
  if (write.mutations.length > MAX_ATOMIC_MUTATIONS) {
    refuse("Too many mutations / enqueues included in atomic write.");
  }
  let total = 0;
  const checks = write.checks.map((check): CheckRequest => {
    if (check.key.length > MAX_DATABASE_READ_KEY_BYTES) refuse(KEY_TOO_LONG);
    if (check.versionstamp.length !== 0 && check.versionstamp.length !== 10) {
      refuse("Invalid versionstamp.");
    }
    total += check.key.length;
    return {
      key: check.key,
      versionstamp: check.versionstamp.length === 0 ? null : hex(check.versionstamp),
    };
  });
  const mutations = write.mutations.map((mutation): MutationRequest => {
    if (mutation.key.length > MAX_DATABASE_KEY_BYTES) refuse(KEY_TOO_LONG);
    total += mutation.key.length;
    if (mutation.mutationType === MutationType.M_DELETE) {
      return { kind: "delete", key: mutation.key };
    }
    const kind = OPERAND_KINDS.get(mutation.mutationType);
    const value = mutation.value;
    if (kind === undefined || value === undefined) refuse("Invalid mutation kind or arguments.");
    if (value.data.length > MAX_DATABASE_VALUE_BYTES) {
      refuse("A value exceeds the value size limit.");
    }
    total += value.data.length;
    if (
      value.encoding !== ValueEncoding.VE_V8 && value.encoding !== ValueEncoding.VE_LE64 &&
      value.encoding !== ValueEncoding.VE_BYTES
    ) {
      refuse(`The value encoding ${value.encoding} is unknown.`);
    }
    // denokv's `sum_v8`: a sum of a V8 Number or BigInt, with optional bounds.
    const v8Sum = kind === "sum" && value.encoding === ValueEncoding.VE_V8;
    if (v8Sum) {
      const problem = v8SumProblem(value.data, mutation);
      if (problem !== undefined) refuse(problem);
    } else if (
      (kind === "sum" || kind === "min" || kind === "max") &&
      (value.encoding !== ValueEncoding.VE_LE64 || value.data.length !== 8 ||
        mutation.sumMin.length > 0 || mutation.sumMax.length > 0)
    ) {
      // denokv's `mutate_le64`: min and max, and a sum of a KvU64.
      refuse(`Failed to perform '${kind}' mutation on a non-U64 operand`);
    }
    // 0 and -1: no expiry; Deno's client sends 1 for a time at or before the epoch.
    const expireAt = mutation.expireAtMs;
    if (expireAt < -1n || expireAt > BigInt(Number.MAX_SAFE_INTEGER)) {
      refuse("Invalid mutation expire at.");
    }
    return {
      kind,
      key: mutation.key,
      value: value.data,
      encoding: value.encoding,
      ...(expireAt > 0n ? { expiresAt: Number(expireAt) } : {}),
      ...(v8Sum && mutation.sumMin.length > 0 ? { sumMin: mutation.sumMin } : {}),
      ...(v8Sum && mutation.sumMax.length > 0 ? { sumMax: mutation.sumMax } : {}),
      ...(v8Sum && mutation.sumClamp ? { sumClamp: true } : {}),
    };
  });
  if (total > MAX_ATOMIC_PAYLOAD_BYTES) refuse("The total size of the atomic write is too large.");
  return { checks, mutations };
}

/**
 * The keys of a watch.
 *
 * @throws {ClientRequestError} (400) for none, more than 10, or one longer than 2048 bytes.
 */
export function watchKeysOf(watch: Watch): Uint8Array[] {
  if (watch.keys.length === 0) refuse("A watch names at least one key.");
  if (watch.keys.length > MAX_WATCHED_KEYS) {
    refuse("Too many keys watched in a single watch request.");
  }
  return watch.keys.map(({ key }) => {
    if (key.length > MAX_DATABASE_KEY_BYTES) refuse(KEY_TOO_LONG);
    return key;
  });
}
