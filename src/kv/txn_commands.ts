/**
 * Multi-key commands of the key-value state machine: atomic transactions
 * (Deno KV's `atomic()`, the curl API's `POST /txn`), consistent multi-range
 * snapshot reads (Deno KV's `snapshot_read`) and replicated expiry deletes.
 *
 * Keys here are state keys (strings). The curl API's keys are themselves;
 * a Deno KV database's binary keys map into their own part of the state's
 * keyspace (`database_keys.ts`), which no curl key can reach.
 *
 * @module
 */

import type { Access } from "../core/conflict.ts";
import { V8_ENCODING, type V8SumBounds, v8SumProblem } from "./v8_sum.ts";
import { CURL_SPACE_END, keyProblem, MAX_VALUE_BYTES, prefixEnd, utf8Length } from "./curl_keys.ts";
import {
  databaseDataPrefix,
  databaseDataSpan,
  databaseKeyProblem,
  databaseNameOf,
  databaseNameProblem,
  isDatabaseDataKey,
  isStampBucketKey,
  isVersionstampText,
  MAX_DATABASE_READ_KEY_BYTES,
  MAX_DATABASE_VALUE_BYTES,
  stampBucketKey,
  stampBucketOf,
  stateKeyProblem,
  suffixStampBucketOf,
} from "./database_keys.ts";
import { isEncoding, isExpiry, type KvEntry, LE64_ENCODING } from "./entry.ts";

/** A check of an atomic command: `key`'s version must be `version` (`null`: the key must be absent). */
export interface AtomicCheck {
  /** State key. */
  readonly key: string;
  /** The version the key must have, or `null` for "must not exist". */
  readonly version: string | null;
}

/** Fields every mutation that writes a value may carry. */
export interface WrittenValue {
  /** The bytes (for sum/min/max: the 8-byte little-endian unsigned operand). */
  readonly value: Uint8Array;
  /** Deno KV's value encoding (1 V8, 2 LE64, 3 bytes); absent for curl values. */
  readonly encoding?: number;
  /** When the key expires, in ms since the Unix epoch (absolute; from the proposer's or client's clock). */
  readonly expiresAt?: number;
}

/** One mutation of an atomic command, applied in order after every check held. */
export type AtomicMutation =
  | ({ readonly kind: "set"; readonly key: string } & WrittenValue)
  | { readonly kind: "delete"; readonly key: string }
  | ({ readonly kind: "min" | "max"; readonly key: string } & WrittenValue)
  /**
   * A `KvU64` sum (operand LE64, or 8 bytes on the curl API), or, in a
   * database, denokv's sum of a V8 Number or BigInt with its bounds (`v8_sum.ts`).
   */
  | ({ readonly kind: "sum"; readonly key: string } & WrittenValue & V8SumBounds)
  /** Writes `key ‖ versionstamp` (Deno KV databases only). */
  | ({ readonly kind: "setSuffixVersionstamped"; readonly key: string } & WrittenValue);

/**
 * All checks, then every mutation in order, all or nothing. Every key it
 * writes gets the command's one new version.
 */
export interface AtomicCommand {
  /** Discriminant. */
  readonly op: "atomic";
  /** Request id. */
  readonly request: string;
  /**
   * The Deno KV database every key belongs to: versions are versionstamps
   * (20 hex digits). Absent: curl keys, versions as `versionOf` gives them.
   */
  readonly database?: string;
  /**
   * The highest versionstamp counter the proposer had seen when it proposed
   * (Deno KV databases only): the command's versionstamp is above it, so
   * writes through one replica get increasing versionstamps across keys.
   */
  readonly floor?: number;
  /** Checks, at most 100. */
  readonly checks: readonly AtomicCheck[];
  /** Mutations, at most 1000. */
  readonly mutations: readonly AtomicMutation[];
}

/** One range of a snapshot read: keys in `[start, end)`, at most `limit`, forwards or backwards. */
export interface SnapshotRange {
  /** Inclusive start (state key). */
  readonly start: string;
  /** Exclusive end (state key). */
  readonly end: string;
  /** Most entries returned, 1 to 1000. */
  readonly limit: number;
  /** Whether the range is read from its end. */
  readonly reverse: boolean;
}

/** Reads up to 10 ranges at one point of the execution order: one consistent snapshot. */
export interface SnapshotCommand {
  /** Discriminant. */
  readonly op: "snapshot";
  /** Request id. */
  readonly request: string;
  /** The ranges, 1 to 10. */
  readonly ranges: readonly SnapshotRange[];
}

/**
 * Deletes keys whose expiry has passed, each only if it still has the
 * version that expired (a later write is kept). Replicas propose it for the
 * expired keys they find (`expiry.ts`); at most 256 keys.
 */
export interface ExpireCommand {
  /** Discriminant. */
  readonly op: "expire";
  /** Request id. */
  readonly request: string;
  /** The keys and the versions that expired. */
  readonly keys: readonly { readonly key: string; readonly version: string }[];
}

/** The result of an atomic command. */
export type AtomicResult =
  | {
    readonly op: "atomic";
    readonly ok: true;
    /** The version every written key got (Deno KV: the versionstamp, 20 hex digits). */
    readonly version: string;
  }
  | {
    readonly op: "atomic";
    readonly ok: false;
    /** A check failed: nothing applied (Deno KV's `AW_CHECK_FAILURE`, the curl API's 412). */
    readonly failure: "check";
    /** Each check's key's current version, in check order (`null`: absent). */
    readonly current: readonly (string | null)[];
  }
  | {
    readonly op: "atomic";
    readonly ok: false;
    /** A mutation could not apply (sum/min/max on a value that is not a 64-bit unsigned): nothing applied, a 400. */
    readonly failure: "invalid";
    /** What was wrong, in denokv's wording where Deno's tests check it. */
    readonly message: string;
  };

/** The result of a snapshot command: per range, its entries in the order read. */
export interface SnapshotResult {
  /** Discriminant. */
  readonly op: "snapshot";
  /** Always: a snapshot read cannot fail once validated. */
  readonly ok: true;
  /** Per range, in request order, the entries in range order (reversed for a reverse range). */
  readonly ranges: readonly (readonly (KvEntry & { readonly key: string })[])[];
}

/** The result of an expire command. */
export interface ExpireResult {
  /** Discriminant. */
  readonly op: "expire";
  /** Always: keys whose version moved on are kept, which is no failure. */
  readonly ok: true;
  /** How many keys it deleted. */
  readonly deleted: number;
}

// --- Limits -----------------------------------------------------------------

/** Most checks of an atomic command (Deno KV's client limit). */
export const MAX_ATOMIC_CHECKS = 100;
/** Most mutations of an atomic command (Deno KV's client limit). */
export const MAX_ATOMIC_MUTATIONS = 1000;
/**
 * Most bytes of keys and values one atomic command carries (Deno's
 * `max_total_mutation_size_bytes`, 800 KiB): it keeps an instance far below
 * the transport's batch bound (`MAX_BATCH_BYTES`) and a snapshot file's
 * record line.
 */
export const MAX_ATOMIC_PAYLOAD_BYTES = 819_200;
/** Most bytes of the keys of written values of one atomic command (Deno's `max_total_key_size_bytes`). */
export const MAX_ATOMIC_KEY_BYTES = 81_920;
/** Most ranges of a snapshot command (Deno KV's client limit). */
export const MAX_SNAPSHOT_RANGES = 10;
/** Most entries one range of a snapshot returns (Deno KV's client limit). */
export const MAX_SNAPSHOT_LIMIT = 1000;
/** Most keys of an expire command. */
export const MAX_EXPIRE_KEYS = 256;
/** Longest range bound of a snapshot read, in UTF-16 code units (the core's read access bound). */
const MAX_RANGE_BOUND_LENGTH = 4096;
/** Longest version a check or an expiry names. */
const MAX_VERSION_LENGTH = 256;
const MUTATION_KINDS: ReadonlySet<string> = new Set([
  "set",
  "delete",
  "sum",
  "min",
  "max",
  "setSuffixVersionstamped",
]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// --- Validation -------------------------------------------------------------

/**
 * Why `key` cannot be a key of an atomic command of `database` (or of the
 * curl keyspace when `database` is undefined), or `undefined`.
 */
function writeKeyProblem(database: string | undefined, key: unknown): string | undefined {
  if (typeof key !== "string") return "Key is not a string";
  return database === undefined ? keyProblem(key) : databaseKeyProblem(database, key);
}

/** The key's size as Deno KV counts it: bytes of a database key, UTF-8 bytes of a curl key. */
function keySize(database: string | undefined, key: string): number {
  return database === undefined
    ? utf8Length(key)
    : key.length - databaseDataPrefix(database).length;
}

function checkProblem(database: string | undefined, check: unknown): string | undefined {
  if (!isRecord(check)) return "Check is not an object";
  const keyIssue = writeKeyProblem(database, check.key);
  if (keyIssue !== undefined) return keyIssue;
  const version = check.version;
  if (version === null) return undefined;
  if (typeof version !== "string") return "Check version is not a string or null";
  if (database !== undefined && !isVersionstampText(version)) {
    return "Check versionstamp is not 10 bytes";
  }
  if (version.length === 0 || version.length > MAX_VERSION_LENGTH) {
    return "Check version is empty or too long";
  }
  return undefined;
}

function mutationProblem(database: string | undefined, mutation: unknown): string | undefined {
  if (!isRecord(mutation)) return "Mutation is not an object";
  const kind = mutation.kind;
  if (typeof kind !== "string" || !MUTATION_KINDS.has(kind)) {
    return `Unknown mutation kind ${JSON.stringify(kind)}`;
  }
  const keyIssue = writeKeyProblem(database, mutation.key);
  if (keyIssue !== undefined) return keyIssue;
  if (kind === "delete") return undefined;
  if (kind === "setSuffixVersionstamped" && database === undefined) {
    return "A versionstamped key needs a Deno KV database";
  }
  const value = mutation.value;
  if (!(value instanceof Uint8Array)) return "Mutation value is not bytes";
  const maxValue = database === undefined ? MAX_VALUE_BYTES : MAX_DATABASE_VALUE_BYTES;
  if (value.length > maxValue) return `Value too large (max ${maxValue} bytes)`;
  if (!isEncoding(mutation.encoding)) return "Unknown value encoding";
  if (!isExpiry(mutation.expiresAt)) return "Expiry is not a time in ms since the epoch";
  const bounded = mutation.sumMin !== undefined || mutation.sumMax !== undefined ||
    mutation.sumClamp !== undefined;
  if (bounded && (kind !== "sum" || mutation.encoding !== V8_ENCODING)) {
    return "Sum bounds are only for a sum of a V8 value";
  }
  if (kind === "sum" && mutation.encoding === V8_ENCODING) {
    // denokv's `sum_v8`: a Number or BigInt operand, bounds of its type.
    if (database === undefined) return "A sum of a V8 value needs a Deno KV database";
    const isBytes = (bound: unknown) => bound === undefined || bound instanceof Uint8Array;
    if (!isBytes(mutation.sumMin) || !isBytes(mutation.sumMax)) return "Sum bounds are not bytes";
    if (mutation.sumClamp !== undefined && typeof mutation.sumClamp !== "boolean") {
      return "Sum clamp is not a boolean";
    }
    return v8SumProblem(value, {
      ...(mutation.sumMin === undefined ? {} : { sumMin: mutation.sumMin as Uint8Array }),
      ...(mutation.sumMax === undefined ? {} : { sumMax: mutation.sumMax as Uint8Array }),
    });
  }
  if (kind === "sum" || kind === "min" || kind === "max") {
    // denokv's `mutate_le64`: the operand must be a KvU64.
    if (
      value.length !== 8 ||
      (mutation.encoding !== undefined && mutation.encoding !== LE64_ENCODING)
    ) {
      return `Failed to perform '${kind}' mutation on a non-U64 operand`;
    }
  }
  return undefined;
}

/**
 * Why `command` is not a well-formed atomic command (its `request` aside),
 * or `undefined`: a valid database name if any and a safe `floor`; at most
 * {@linkcode MAX_ATOMIC_CHECKS} checks and {@linkcode MAX_ATOMIC_MUTATIONS}
 * mutations on keys of that database (Deno KV keys of at most 2048 bytes) or,
 * without one, curl keys (`keyProblem`); values of at most 65,536 bytes in a
 * database (the curl API's limit otherwise); sum/min/max operands of exactly
 * 8 bytes; versionstamped keys only in a database; and the totals Deno's
 * client enforces ({@linkcode MAX_ATOMIC_PAYLOAD_BYTES},
 * {@linkcode MAX_ATOMIC_KEY_BYTES}). The messages are fit for a 400 answer.
 */
export function atomicCommandProblem(command: unknown): string | undefined {
  if (!isRecord(command) || command.op !== "atomic") return "Not an atomic command";
  const database = command.database;
  if (database !== undefined) {
    if (typeof database !== "string") return "Database name is not a string";
    const nameIssue = databaseNameProblem(database);
    if (nameIssue !== undefined) return nameIssue;
  }
  const floor = command.floor;
  if (floor !== undefined && !(Number.isSafeInteger(floor) && (floor as number) >= 0)) {
    return "Floor is not a natural number";
  }
  const { checks, mutations } = command;
  if (!Array.isArray(checks)) return "Checks are not a list";
  if (!Array.isArray(mutations)) return "Mutations are not a list";
  if (checks.length > MAX_ATOMIC_CHECKS) return `Too many checks (max ${MAX_ATOMIC_CHECKS})`;
  if (mutations.length > MAX_ATOMIC_MUTATIONS) {
    return `Too many mutations (max ${MAX_ATOMIC_MUTATIONS})`;
  }
  let payload = 0;
  let keys = 0;
  for (const check of checks) {
    const issue = checkProblem(database, check);
    if (issue !== undefined) return issue;
    payload += keySize(database, (check as AtomicCheck).key);
  }
  for (const mutation of mutations) {
    const issue = mutationProblem(database, mutation);
    if (issue !== undefined) return issue;
    const written = mutation as AtomicMutation;
    const size = keySize(database, written.key);
    payload += size;
    if (written.kind !== "delete") {
      payload += written.value.length;
      keys += size;
    }
  }
  if (payload > MAX_ATOMIC_PAYLOAD_BYTES) {
    return `Total mutation size too large (max ${MAX_ATOMIC_PAYLOAD_BYTES} bytes)`;
  }
  if (keys > MAX_ATOMIC_KEY_BYTES) {
    return `Total key size too large (max ${MAX_ATOMIC_KEY_BYTES} bytes)`;
  }
  return undefined;
}

/**
 * Why `range` is not a range a snapshot may read, or `undefined`: a limit of
 * 1 to {@linkcode MAX_SNAPSHOT_LIMIT}, and bounds either both in one
 * database's data space (bytes, at most 2049 of them: Deno KV's read key
 * limit) or ending within the curl keyspace. So no read ever returns a stamp
 * bucket, or keys of two keyspaces at once.
 */
export function snapshotRangeProblem(range: unknown): string | undefined {
  if (!isRecord(range)) return "Range is not an object";
  const { start, end, limit, reverse } = range;
  if (typeof start !== "string" || typeof end !== "string") return "Range bounds are not strings";
  if (start.length > MAX_RANGE_BOUND_LENGTH || end.length > MAX_RANGE_BOUND_LENGTH) {
    return "Range bound is too long";
  }
  if (!Number.isInteger(limit) || (limit as number) < 1 || (limit as number) > MAX_SNAPSHOT_LIMIT) {
    return `Range limit must be 1 to ${MAX_SNAPSHOT_LIMIT}`;
  }
  if (typeof reverse !== "boolean") return "Range direction is not a boolean";
  if (start.charCodeAt(0) !== 0xfffe) {
    return end <= CURL_SPACE_END ? undefined : "Range leaves the curl keyspace";
  }
  // Both bounds in one database's data space: the data prefix of the
  // start's database, then bytes (zero bytes included: a range may start at
  // the first key), or the end of that space (`databaseDataSpan`).
  const probe = `${start}\u0001`;
  if (!isDatabaseDataKey(probe)) return "Range is not within one database's keys";
  const name = probe.slice(1, probe.indexOf("\u0000"));
  const spanEnd = databaseDataSpan(name).end;
  for (const bound of [start, end]) {
    if (bound === spanEnd) continue;
    const issue = databaseKeyProblem(name, `${bound}\u0001`, MAX_DATABASE_READ_KEY_BYTES + 1);
    if (issue !== undefined) return `Range bound: ${issue}`;
  }
  return undefined;
}

/** Why `command` is not a well-formed snapshot command (its `request` aside), or `undefined`. */
export function snapshotCommandProblem(command: unknown): string | undefined {
  if (!isRecord(command) || command.op !== "snapshot") return "Not a snapshot command";
  const ranges = command.ranges;
  if (!Array.isArray(ranges) || ranges.length === 0) return "A snapshot reads at least one range";
  if (ranges.length > MAX_SNAPSHOT_RANGES) {
    return `Too many ranges (max ${MAX_SNAPSHOT_RANGES})`;
  }
  for (const range of ranges) {
    const issue = snapshotRangeProblem(range);
    if (issue !== undefined) return issue;
  }
  return undefined;
}

/**
 * Why `command` is not a well-formed expire command (its `request` aside), or
 * `undefined`: 1 to {@linkcode MAX_EXPIRE_KEYS} keys, each a curl key or a
 * database's data key (never a stamp bucket), with a version.
 */
export function expireCommandProblem(command: unknown): string | undefined {
  if (!isRecord(command) || command.op !== "expire") return "Not an expire command";
  const keys = command.keys;
  if (!Array.isArray(keys) || keys.length === 0) return "An expire command names at least one key";
  if (keys.length > MAX_EXPIRE_KEYS) return `Too many keys (max ${MAX_EXPIRE_KEYS})`;
  for (const item of keys) {
    if (!isRecord(item) || typeof item.key !== "string" || typeof item.version !== "string") {
      return "Expired key is not a {key, version} pair";
    }
    const issue = stateKeyProblem(item.key);
    if (issue !== undefined) return issue;
    if (item.key.charCodeAt(0) === 0xfffe && !isDatabaseDataKey(item.key)) {
      return "A stamp bucket never expires";
    }
    if (item.version.length === 0 || item.version.length > MAX_VERSION_LENGTH) {
      return "Expired version is empty or too long";
    }
  }
  return undefined;
}

// --- Conflicts --------------------------------------------------------------

/**
 * The state keys of the stamp buckets an atomic command of a database touches
 * (`database_keys.ts`): the bucket of every key it mutates, each once, in
 * first-touch order; none for a curl command. Its conflict accesses write
 * them and its execution reads and sets them, from this one function, so the
 * two can never disagree.
 */
export function stampBucketsOf(command: AtomicCommand): readonly string[] {
  const database = command.database;
  if (database === undefined) return [];
  const buckets = new Set<number>();
  for (const mutation of command.mutations) {
    buckets.add(
      mutation.kind === "setSuffixVersionstamped"
        ? suffixStampBucketOf(database, mutation.key)
        : stampBucketOf(database, mutation.key),
    );
  }
  return [...buckets].map((bucket) => stampBucketKey(database, bucket));
}

/**
 * The accesses of an atomic command: each check reads its key, each mutation
 * writes its key, a versionstamped-key write writes the span of every key
 * starting with its key (the final key is known only at execution), and a
 * database's command writes its stamp buckets, which orders it with every
 * command that stamps a key of the same bucket.
 */
export function atomicAccesses(command: AtomicCommand): Access[] {
  const accesses: Access[] = [];
  for (const check of command.checks) accesses.push({ key: check.key, write: false });
  for (const mutation of command.mutations) {
    accesses.push(
      mutation.kind === "setSuffixVersionstamped"
        ? { key: mutation.key, end: prefixEnd(mutation.key), write: true }
        : { key: mutation.key, write: true },
    );
  }
  for (const bucket of stampBucketsOf(command)) accesses.push({ key: bucket, write: true });
  return accesses;
}

/**
 * The one key `range` can hold when it is `[key, key ‖ U+0000)`, as Deno's
 * `get` reads a key (no string lies strictly between the two), or `undefined`.
 */
export function singleKeyOf(range: SnapshotRange): string | undefined {
  const { start, end } = range;
  return end.length === start.length + 1 && end.charCodeAt(start.length) === 0 &&
      end.startsWith(start)
    ? start
    : undefined;
}

/**
 * The accesses of a snapshot command: a read of each range's span, or of
 * its key when it holds one key only (a point read conflicts with fewer
 * commands than a span in the core's index, which treats every span as
 * touching every key).
 */
export function snapshotAccesses(command: SnapshotCommand): Access[] {
  return command.ranges.map((range) => {
    const key = singleKeyOf(range);
    return key === undefined
      ? { key: range.start, end: range.end, write: false }
      : { key, write: false };
  });
}

/** The accesses of an expire command: a write of each key. */
export function expireAccesses(command: ExpireCommand): Access[] {
  return command.keys.map(({ key }) => ({ key, write: true }));
}

/** What an atomic command counts toward a batch's byte bound (`maxBatchBytes`): its keys and values. */
export function atomicBatchBytes(command: AtomicCommand): number {
  let bytes = 64;
  for (const check of command.checks) bytes += check.key.length + 32;
  for (const mutation of command.mutations) {
    bytes += mutation.key.length + 16 + (mutation.kind === "delete" ? 0 : mutation.value.length);
  }
  return bytes;
}

// --- Rendering --------------------------------------------------------------

/** A state key for a `describe*` line: a database's key as `name:` and its first bytes in hex. */
export function describeStateKey(key: string): string {
  if (key.charCodeAt(0) !== 0xfffe) return key;
  const name = databaseNameOf(key);
  if (name === undefined) return JSON.stringify(key.slice(0, 24));
  const rest = key.slice(databaseDataPrefix(name).length);
  if (isStampBucketKey(key)) return `${name}:bucket ${rest}`;
  let hex = "";
  for (let i = 0; i < rest.length && i < 16; i++) {
    hex += rest.charCodeAt(i).toString(16).padStart(2, "0");
  }
  return `${name}:${hex}${rest.length > 16 ? "…" : ""}`;
}

function describeMutation(mutation: AtomicMutation): string {
  const key = describeStateKey(mutation.key);
  switch (mutation.kind) {
    case "delete":
      return `del ${key}`;
    case "setSuffixVersionstamped":
      return `set ${key}‖stamp=${mutation.value.length}B`;
    default:
      return `${mutation.kind} ${key}=${mutation.value.length}B${
        mutation.expiresAt === undefined ? "" : ` exp ${mutation.expiresAt}`
      }`;
  }
}

/** Renders an atomic command as one short line: `atomic(db: check k@v; set k=3B …)`. */
export function describeAtomic(command: AtomicCommand): string {
  const parts = [
    ...command.checks.map((check) =>
      `check ${describeStateKey(check.key)}@${check.version ?? "absent"}`
    ),
    ...command.mutations.map(describeMutation),
  ];
  const shown = parts.length > 4 ? [...parts.slice(0, 4), `+${parts.length - 4}`] : parts;
  const head = command.database === undefined
    ? ""
    : `${command.database}${command.floor === undefined ? "" : ` >${command.floor}`}: `;
  return `atomic(${head}${shown.join("; ")})`;
}

/** Renders a snapshot command as one short line: `snapshot([a, b) ×10, …)`. */
export function describeSnapshot(command: SnapshotCommand): string {
  return `snapshot(${
    command.ranges.map((range) =>
      `${range.reverse ? "rev " : ""}[${describeStateKey(range.start)}, ${
        describeStateKey(range.end)
      }) ×${range.limit}`
    ).join(", ")
  })`;
}

/** Renders an expire command as one short line. */
export function describeExpire(command: ExpireCommand): string {
  const shown = command.keys.slice(0, 4).map(({ key, version }) =>
    `${describeStateKey(key)}@${version}`
  );
  if (command.keys.length > 4) shown.push(`+${command.keys.length - 4}`);
  return `expire(${shown.join(", ")})`;
}
