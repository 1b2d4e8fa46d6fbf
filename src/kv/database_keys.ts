/**
 * The Deno KV keyspace inside the state's string keyspace, and versionstamps.
 *
 * ## Keys
 *
 * A Deno KV database (`/databases/{name}/connect`, issue 17) keeps its keys
 * under its own prefix of state keys, after {@linkcode CURL_SPACE_END}
 * (U+FFFE), where no curl key can start (`keyProblem`):
 *
 * - data: `"\ufffe" + name + "\u0000d" + bytes`, the key's bytes (Deno's
 *   order-preserving tuple encoding) one character per byte (char codes
 *   0-255, as latin1 decodes them). UTF-16 code unit order of such strings is
 *   the byte order of the keys, so ranges of bytes are ranges of state keys
 *   and the conflict relation on spans (`src/core/conflict.ts`) works on them
 *   unchanged;
 * - stamp buckets: `"\ufffe" + name + "\u0000s" + bucket` (below).
 *
 * A name holds no U+0000 ({@linkcode databaseNameProblem}), so one database's
 * prefix is never a prefix of another's.
 *
 * ## Versionstamps
 *
 * Deno KV's versionstamp is 10 bytes: here an 8-byte big-endian counter and
 * two zero bytes (denokv's `version_to_versionstamp`), rendered as 20
 * lowercase hex digits, which is the version of a database's entry
 * (`KvEntry.version`). The counter of an atomic command is computed at
 * execution from state alone (`txn_apply.ts`):
 *
 *     counter = 1 + max(command.floor ?? 0, counter of each stamp bucket it touches)
 *
 * and every touched bucket is then set to it. A command touches the bucket
 * of every key it mutates ({@linkcode stampBucketOf}), and declares a write
 * of each bucket's state key among its conflict accesses.
 *
 * - Deterministic: the counter reads only the command and bucket entries, and
 *   every command that writes a bucket conflicts with every other that does,
 *   so EPaxos* orders them identically on every replica: every replica reads
 *   the same bucket values and computes the same versionstamp.
 * - Increasing per key: a bucket only grows, and a write of key `k` sets
 *   `bucket(k)` to its counter, so `bucket(k)` is at least every versionstamp
 *   `k` was ever given, and the next write of `k` gets more. This holds across
 *   a delete (or an expiry) and a re-creation, because the bucket, not the
 *   key, remembers: a rule reading the key's own current versionstamp would
 *   find nothing after a delete and could give the new incarnation a smaller
 *   one. A versionstamped key (`key ‖ 0x02 ‖ 20 hex ‖ 0x00`) is bucketed by
 *   `key`, the part known when the command is proposed (the suffix is
 *   stripped), so later writes of the finished key touch the bucket its
 *   creation set.
 * - Bounded memory: at most 65,536 buckets per database, whatever its size
 *   (a bucket exists once a write touched it). Fewer buckets cost
 *   throughput, not memory: two concurrent writes of different keys in one
 *   bucket conflict, which takes EPaxos off its fast path and splits
 *   batches. With 1024, `bench:kvconnect` measured a fast-path share of
 *   0.888 for 64 clients' atomic sums against 0.985 for PUTs, and 1.6-1.8x
 *   the server CPU per operation; with 65,536, 0.985 and 1.1-1.5x.
 * - Across keys: commands through one replica get increasing versionstamps,
 *   because the replica proposes with `floor` = the highest counter it has
 *   executed ({@linkcode versionstampOf}; `KvStateMachine.highestStamp`), so
 *   a write proposed after another was answered there is stamped above it.
 *   Between replicas, commands that touch no common bucket are not ordered
 *   by their versionstamps (Deno Deploy's, from one primary region, are).
 *
 * @module
 */

import { CURL_SPACE_END, keyProblem } from "./curl_keys.ts";
import { isTokenKey, tokenNameOf } from "./token_keys.ts";

/** Longest database name. */
export const MAX_DATABASE_NAME_LENGTH = 64;
/** Longest key of a database, in bytes (Deno KV's `MAX_WRITE_KEY_SIZE_BYTES`). */
export const MAX_DATABASE_KEY_BYTES = 2048;
/** Longest range bound of a database read, in bytes (Deno KV's `MAX_READ_KEY_SIZE_BYTES`). */
export const MAX_DATABASE_READ_KEY_BYTES = MAX_DATABASE_KEY_BYTES + 1;
/** Largest value of a database entry, in bytes (Deno KV's `MAX_VALUE_SIZE_BYTES`). */
export const MAX_DATABASE_VALUE_BYTES = 65536;
/** Stamp buckets per database. */
export const STAMP_BUCKETS = 65536;
/** Bytes of the suffix a versionstamped key gets: a string key part of the stamp's 20 hex digits. */
export const VERSIONSTAMP_SUFFIX_BYTES = 22;
/** Largest versionstamp counter (the highest safe integer). */
export const MAX_STAMP_COUNTER = Number.MAX_SAFE_INTEGER;

const NAME_PATTERN = /^[A-Za-z0-9_.-]+$/;
const STAMP_PATTERN = /^[0-9a-f]{20}$/;

/**
 * Whether `version` is written as a versionstamp: 20 lowercase hex digits
 * (10 bytes), whatever its counter ({@linkcode isVersionstamp} also wants a
 * counter this store gives).
 */
export function isVersionstampText(version: string): boolean {
  return STAMP_PATTERN.test(version);
}
const DATA_TAG = "\u0000d";
const BUCKET_TAG = "\u0000s";

/**
 * Why `name` cannot name a database, or `undefined` if it can: 1 to 64 of
 * `A-Z a-z 0-9 _ . -`, the characters a URL path segment carries unescaped,
 * so the name in `/databases/{name}/connect` is the name as typed; and no
 * U+0000, which ends the name inside a state key.
 */
export function databaseNameProblem(name: string): string | undefined {
  if (name.length === 0) return "Database name must not be empty";
  if (name.length > MAX_DATABASE_NAME_LENGTH) {
    return `Database name is longer than ${MAX_DATABASE_NAME_LENGTH} characters`;
  }
  if (!NAME_PATTERN.test(name)) {
    return "Database name may hold only letters, digits, '_', '.' and '-'";
  }
  if (name === "." || name === "..") return "Database name must not be . or ..";
  return undefined;
}

/** The prefix of every data key of database `name`. */
export function databaseDataPrefix(name: string): string {
  return `${CURL_SPACE_END}${name}${DATA_TAG}`;
}

/** The span `[start, end)` of state keys holding database `name`'s data. */
export function databaseDataSpan(name: string): { readonly start: string; readonly end: string } {
  const prefix = databaseDataPrefix(name);
  // Data characters are at most U+00FF.
  return { start: prefix, end: `${prefix}\u0100` };
}

/** Bytes as a string of one character per byte (char codes 0-255), which keeps byte order. */
export function bytesToLatin1(bytes: Uint8Array): string {
  let text = "";
  // In slices, to stay within the argument count of a call.
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}

/**
 * The bytes of a string of characters 0-255 (from {@linkcode bytesToLatin1}).
 *
 * @throws {RangeError} if a character is above U+00FF.
 */
export function latin1ToBytes(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff) throw new RangeError(`Character ${i} is not a byte`);
    bytes[i] = code;
  }
  return bytes;
}

/** The state key of key `bytes` of database `name`. */
export function databaseKey(name: string, bytes: Uint8Array): string {
  return databaseDataPrefix(name) + bytesToLatin1(bytes);
}

/**
 * The key bytes of the state key `stateKey` of database `name`.
 *
 * @throws {RangeError} if `stateKey` is not a data key of that database.
 */
export function databaseKeyBytes(name: string, stateKey: string): Uint8Array {
  const prefix = databaseDataPrefix(name);
  if (!stateKey.startsWith(prefix)) {
    throw new RangeError(`State key is not a key of database ${JSON.stringify(name)}`);
  }
  return latin1ToBytes(stateKey.slice(prefix.length));
}

/**
 * The state keys `[start, end)` of the byte range `[start, end)` of database
 * `name` (a Deno KV `ReadRange`). Byte order and state key order agree, so
 * the range holds exactly the keys whose bytes are in the byte range.
 */
export function databaseRange(
  name: string,
  start: Uint8Array,
  end: Uint8Array,
): { readonly start: string; readonly end: string } {
  const prefix = databaseDataPrefix(name);
  return { start: prefix + bytesToLatin1(start), end: prefix + bytesToLatin1(end) };
}

/**
 * The database a state key belongs to (a data key or a stamp bucket), or
 * `undefined` for a curl key or a state key no database has.
 */
export function databaseNameOf(stateKey: string): string | undefined {
  if (stateKey.charCodeAt(0) !== 0xfffe) return undefined;
  const end = stateKey.indexOf("\u0000", 1);
  if (end < 0) return undefined;
  const name = stateKey.slice(1, end);
  return databaseNameProblem(name) === undefined ? name : undefined;
}

/** Whether `stateKey` is a data key of some database (not a stamp bucket). */
export function isDatabaseDataKey(stateKey: string): boolean {
  const name = databaseNameOf(stateKey);
  return name !== undefined && stateKey.charCodeAt(name.length + 2) === 0x64; // "d"
}

/** Whether `stateKey` is a stamp bucket of some database. */
export function isStampBucketKey(stateKey: string): boolean {
  const name = databaseNameOf(stateKey);
  return name !== undefined && stateKey.startsWith(BUCKET_TAG, name.length + 1);
}

/**
 * Why `stateKey` is not a data key of database `name` that a write may name
 * (in its data space, bytes only, 1 to `maxBytes` of them), or `undefined`.
 */
export function databaseKeyProblem(
  name: string,
  stateKey: string,
  maxBytes: number = MAX_DATABASE_KEY_BYTES,
): string | undefined {
  const prefix = databaseDataPrefix(name);
  if (!stateKey.startsWith(prefix)) return `Key is not a key of database ${name}`;
  const length = stateKey.length - prefix.length;
  if (length === 0) return "Key must not be empty";
  if (length > maxBytes) return `Key too large for write (max ${maxBytes} bytes)`;
  for (let i = prefix.length; i < stateKey.length; i++) {
    if (stateKey.charCodeAt(i) > 0xff) return "Key is not bytes";
  }
  return undefined;
}

/**
 * Why `key` cannot be a key of the state at all, or `undefined`: a curl key
 * (`keyProblem`), a database's data key (at most a key of the largest size
 * plus a versionstamp suffix) or one of its stamp buckets, or a named token's
 * key (`token_keys.ts`). What a backup or a snapshot file may hold.
 */
export function stateKeyProblem(key: string): string | undefined {
  if (key.charCodeAt(0) !== 0xfffe) return keyProblem(key);
  if (isTokenKey(key)) {
    return tokenNameOf(key) === undefined
      ? "Key is in the tokens' space but names no token"
      : undefined;
  }
  const name = databaseNameOf(key);
  if (name === undefined) return "Key is in the database space but names no database";
  if (isStampBucketKey(key)) {
    const bucket = key.slice(databaseDataPrefix(name).length);
    return /^[0-9a-f]{4}$/.test(bucket) && parseInt(bucket, 16) < STAMP_BUCKETS
      ? undefined
      : "Key is not a stamp bucket";
  }
  return databaseKeyProblem(name, key, MAX_DATABASE_KEY_BYTES + VERSIONSTAMP_SUFFIX_BYTES);
}

/** The state key of stamp bucket `bucket` (0 to {@linkcode STAMP_BUCKETS} - 1) of database `name`. */
export function stampBucketKey(name: string, bucket: number): string {
  return `${CURL_SPACE_END}${name}${BUCKET_TAG}${bucket.toString(16).padStart(4, "0")}`;
}

/** FNV-1a (32 bits) of the characters `text[from..to)`, all bytes, mod the bucket count. */
function bucketOfChars(text: string, from: number, to: number): number {
  let hash = 0x811c9dc5;
  for (let i = from; i < to; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % STAMP_BUCKETS;
}

/** Whether `text[at..at+22)` is a versionstamp suffix: 0x02, 20 lowercase hex digits, 0x00. */
function isSuffixAt(text: string, at: number): boolean {
  if (at < 0 || text.charCodeAt(at) !== 0x02) return false;
  if (text.charCodeAt(at + VERSIONSTAMP_SUFFIX_BYTES - 1) !== 0x00) return false;
  for (let i = at + 1; i < at + VERSIONSTAMP_SUFFIX_BYTES - 1; i++) {
    const code = text.charCodeAt(i);
    if (!((code >= 0x30 && code <= 0x39) || (code >= 0x61 && code <= 0x66))) return false;
  }
  return true;
}

/**
 * The stamp bucket of the data key `stateKey` of database `name`: FNV-1a of
 * its bytes without a trailing versionstamp suffix, mod {@linkcode STAMP_BUCKETS}. Stripping the
 * suffix puts `key ‖ suffix` in the bucket of `key`, the one the command
 * that created it touched ({@linkcode suffixStampBucketOf}).
 */
export function stampBucketOf(name: string, stateKey: string): number {
  const from = databaseDataPrefix(name).length;
  const suffixAt = stateKey.length - VERSIONSTAMP_SUFFIX_BYTES;
  const to = suffixAt >= from && isSuffixAt(stateKey, suffixAt) ? suffixAt : stateKey.length;
  return bucketOfChars(stateKey, from, to);
}

/**
 * The stamp bucket of every key a `setSuffixVersionstamped` mutation of
 * `prefixKey` can write: that of `prefixKey`'s bytes, whole.
 */
export function suffixStampBucketOf(name: string, prefixKey: string): number {
  return bucketOfChars(prefixKey, databaseDataPrefix(name).length, prefixKey.length);
}

/**
 * The versionstamp of counter `counter`: 20 lowercase hex digits, the
 * counter as 8 bytes big-endian, then `suffix` (2 bytes; `stampSuffixOf`).
 */
export function versionstampOf(counter: number, suffix = "0000"): string {
  return `${counter.toString(16).padStart(16, "0")}${suffix}`;
}

/**
 * The last two bytes of the versionstamps a state machine gives: `0000`, or
 * in a cluster seeded from a backup the first four hex digits of the
 * backup's tag (`r` and 12 hex digits of its SHA-256; `versionTagOf` in
 * `backup.ts`). The stamp buckets come back with the backup, so counters go
 * on from the backup's, and the old cluster may have given the same counters
 * after the backup was taken; the suffix keeps the restored cluster's
 * versionstamps apart from those (as the tag does for curl versions), so a
 * client's check holding an old cluster's versionstamp cannot pass by
 * accident. Per key, the order stays the counter's: the suffix is constant
 * within a cluster. The epoch part of the tag (`e2`) is left out: buckets
 * already carry counters across epochs.
 */
export function stampSuffixOf(versionTag: string | undefined): string {
  const backup = versionTag === undefined ? null : /^r([0-9a-f]{4})/.exec(versionTag);
  return backup === null ? "0000" : backup[1]!;
}

/** The counter of versionstamp `version`, or `undefined` if it is not one this store gives. */
export function versionstampCounter(version: string): number | undefined {
  if (!isVersionstampText(version)) return undefined;
  const counter = parseInt(version.slice(0, 16), 16);
  return Number.isSafeInteger(counter) ? counter : undefined;
}

/** Whether `version` is a versionstamp this store gives (20 hex digits, a safe counter). */
export function isVersionstamp(version: string): boolean {
  return versionstampCounter(version) !== undefined;
}

/** The 10 bytes of a versionstamp in hex (Deno KV's `KvEntry.versionstamp`). */
export function versionstampBytes(version: string): Uint8Array {
  if (!isVersionstampText(version)) {
    throw new RangeError(`Not a versionstamp: ${JSON.stringify(version)}`);
  }
  return Uint8Array.fromHex(version);
}

/**
 * The hex of 10 versionstamp bytes (a Deno KV check's `versionstamp`); an
 * empty array (a check that the key is absent) gives `null`.
 *
 * @throws {RangeError} if the bytes are neither 10 long nor empty.
 */
export function versionstampHex(bytes: Uint8Array): string | null {
  if (bytes.length === 0) return null;
  if (bytes.length !== 10) throw new RangeError("A versionstamp is 10 bytes");
  return bytes.toHex();
}

/**
 * The suffix a `setSuffixVersionstamped` mutation appends to its key, as state
 * key characters: denokv's string key part `0x02 ‖ hex(versionstamp) ‖ 0x00`.
 */
export function versionstampSuffix(version: string): string {
  return `\u0002${version}\u0000`;
}
