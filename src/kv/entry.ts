/**
 * One stored entry of the key-value state, shared by the state machine
 * (`state_machine.ts`, which re-exports it), the multi-key commands and every
 * codec that stores or sends the state.
 *
 * @module
 */

/** A stored value and its version. */
export interface KvEntry {
  /** The bytes. */
  readonly value: Uint8Array;
  /**
   * Opaque version, unique per write of the key (the HTTP ETag): for a curl
   * key `number.owner.index[.tag]` (`versionOf`), for a Deno KV database's key
   * the versionstamp, 20 hex digits (`database_keys.ts`).
   */
  readonly version: string;
  /** Deno KV's value encoding (1 V8, 2 LE64, 3 bytes); absent for curl values. */
  readonly encoding?: number;
  /**
   * When the key expires, in ms since the Unix epoch: a replica proposes its
   * delete some time after (`KvStateMachine.expiredEntries`); absent: never.
   */
  readonly expiresAt?: number;
}

/** Deno KV's value encodings (`datapath.proto`'s `ValueEncoding`). */
export const VALUE_ENCODINGS: ReadonlySet<number> = new Set([1, 2, 3]);
/** The LE64 encoding: an 8-byte little-endian unsigned integer (`Deno.KvU64`). */
export const LE64_ENCODING = 2;

/** Whether `value` may be an entry's `encoding`: absent, or 1, 2 or 3. */
export function isEncoding(value: unknown): value is number | undefined {
  return value === undefined || VALUE_ENCODINGS.has(value as number);
}

/** Whether `value` may be an entry's `expiresAt`: absent, or a time in ms since the epoch. */
export function isExpiry(value: unknown): value is number | undefined {
  return value === undefined || (Number.isSafeInteger(value) && (value as number) > 0);
}

/**
 * The entry `{value, version}` with `encoding` and `expiresAt` only where
 * given: an entry never carries a field set to `undefined`, so entries
 * compare equal whichever way they were built.
 */
export function entryOf(
  value: Uint8Array,
  version: string,
  extra: { readonly encoding?: number | undefined; readonly expiresAt?: number | undefined } = {},
): KvEntry {
  if (extra.encoding === undefined && extra.expiresAt === undefined) return { value, version };
  const entry: { value: Uint8Array; version: string; encoding?: number; expiresAt?: number } = {
    value,
    version,
  };
  if (extra.encoding !== undefined) entry.encoding = extra.encoding;
  if (extra.expiresAt !== undefined) entry.expiresAt = extra.expiresAt;
  return entry;
}

/** 2^64 - 1: a `KvU64` operation is taken mod 2^64. */
export const U64_MASK = (1n << 64n) - 1n;

/** The value of an 8-byte little-endian unsigned integer. */
export function readLe64(bytes: Uint8Array): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

/** The 8 little-endian bytes of `value` (taken mod 2^64). */
export function le64Bytes(value: bigint): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value & U64_MASK, true);
  return bytes;
}

/**
 * Whether an entry holds a 64-bit unsigned integer that sum/min/max may
 * combine: 8 bytes, encoded LE64 (denokv's `KvValue::U64`), or 8 bytes with
 * no encoding (a curl value).
 */
export function isU64Entry(entry: KvEntry): boolean {
  return entry.value.length === 8 &&
    (entry.encoding === undefined || entry.encoding === LE64_ENCODING);
}
