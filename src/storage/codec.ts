/**
 * Byte encodings used by {@linkcode DenoKvStorage}: instance records, key-value
 * entries, dependency vectors and key-value keys, plus the exact size Deno KV
 * charges for a key. Decoders validate everything they return, so that a
 * corrupted or foreign file gives a clear error instead of bad state.
 *
 * Instance records are MessagePack arrays rather than maps, to keep field names
 * out of every record:
 *
 * `[owner, number, phase, ballot, acceptedBallot, executed, command, deps,
 *   initialCommand, initialDeps]`
 *
 * with `nil` for an absent field, and `true` in `initialCommand` /
 * `initialDeps` meaning "the same as `command` / `deps`" (the core usually
 * shares one value between them, and a batch of large puts would otherwise be
 * stored twice).
 *
 * @module
 */

import { decode, decodeMulti, Encoder } from "@msgpack/msgpack";
import type { Deps } from "../core/deps.ts";
import { isInstanceKey } from "../core/instance.ts";
import { type InstanceRecord, NOP, type Payload, type Phase } from "../core/types.ts";
import type { KvMutation } from "../kv/state_machine.ts";
import { entryOf, isEncoding, isExpiry, type KvEntry } from "../kv/entry.ts";
import { MsgpackWriter } from "../codec/msgpack.ts";

/** What a decoder needs to know to validate a record. */
export interface RecordCodecOptions<C> {
  /** Whether a decoded value is a well-formed command. */
  readonly isCommand: (value: unknown) => value is C;
  /**
   * Cluster size: when given, owners must be below it, row vectors must have
   * this length and an instance's dependencies one more (its `seq`; records
   * written before `seq` existed have none and read as `seq` 0).
   */
  readonly replicas?: number;
}

/** Most elements in any decoded array (a batch's commands, a vector, a redo log). */
const MAX_DECODED_ARRAY = 1 << 20;
/** Longest version string accepted in a stored entry (versions are `number.owner.index`). */
const MAX_VERSION_LENGTH = 256;

// One encoder, reused: `encodeSharedRef` avoids a copy per record, and every
// caller copies the bytes out before encoding again.
const sharedEncoder = new Encoder({ ignoreUndefined: true });
const recordWriter = new MsgpackWriter();
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

const decodeOptions = {
  maxArrayLength: MAX_DECODED_ARRAY,
  maxMapLength: 4096,
  maxExtLength: 0,
} as const;

/**
 * Encodes a record (without its `kind` tag). The result is a view of a shared
 * buffer, valid only until the next call of any encoder in this module: copy
 * it out first.
 */
export function encodeRecordShared<C>(record: InstanceRecord<C>): Uint8Array {
  const initialCommand = record.initialCommand !== undefined &&
      record.initialCommand === record.command
    ? true
    : record.initialCommand;
  const initialDeps = record.initialDeps !== undefined && record.initialDeps === record.deps
    ? true
    : record.initialDeps;
  // The payloads are copied in encoded (see `src/codec/msgpack.ts`): the
  // record is rewritten at commit and at execution, its payload never changes.
  const writer = recordWriter.reset().arrayHeader(10).value(record.owner).value(record.number)
    .value(record.phase).value(record.ballot).value(record.acceptedBallot).value(record.executed);
  if (record.command === undefined) writer.value(null);
  else writer.payload(record.command);
  writer.value(record.deps ?? null);
  if (initialCommand === undefined || initialCommand === true) writer.value(initialCommand ?? null);
  else writer.payload(initialCommand);
  writer.value(initialDeps ?? null);
  return writer.view();
}

/**
 * Decodes and validates a record.
 *
 * @throws {Error} saying what is wrong; the caller names the key.
 */
export function decodeRecord<C>(
  bytes: Uint8Array,
  options: RecordCodecOptions<C>,
): InstanceRecord<C> {
  const value = decodeMsgpack(bytes);
  if (!Array.isArray(value) || value.length !== 10) {
    throw new Error("Record is not an array of 10 fields");
  }
  const [owner, number, phase, ballot, acceptedBallot, executed, command, deps, initCmd, initDeps] =
    value;
  if (!isNatural(owner) || (options.replicas !== undefined && owner >= options.replicas)) {
    throw new Error(`Record has an invalid owner ${JSON.stringify(owner)}`);
  }
  if (!isNatural(number) || number < 1) {
    throw new Error(`Record has an invalid instance number ${JSON.stringify(number)}`);
  }
  if (!isInstanceKey(owner, number)) {
    throw new Error(`Record names instance ${owner}.${number}, which has no instance key`);
  }
  if (phase !== 0 && phase !== 1 && phase !== 2 && phase !== 3) {
    throw new Error(`Record has an invalid phase ${JSON.stringify(phase)}`);
  }
  if (!isNatural(ballot) || !isNatural(acceptedBallot)) {
    throw new Error("Record has an invalid ballot");
  }
  if (typeof executed !== "boolean") throw new Error("Record has an invalid executed flag");
  const record: {
    owner: number;
    number: number;
    phase: Phase;
    ballot: number;
    acceptedBallot: number;
    executed: boolean;
    command?: Payload<C>;
    deps?: Deps;
    initialCommand?: Payload<C>;
    initialDeps?: Deps;
  } = { owner, number, phase, ballot, acceptedBallot, executed };
  if (command !== null) {
    if (!isPayload(command, options.isCommand)) throw new Error("Record has a malformed command");
    record.command = command;
  }
  if (deps !== null) {
    const checked = instanceDeps(deps, options.replicas);
    if (checked === undefined) throw new Error("Record has malformed deps");
    record.deps = checked;
  }
  if (initCmd === true) {
    if (record.command === undefined) throw new Error("Record's initial command refers to none");
    record.initialCommand = record.command;
  } else if (initCmd !== null) {
    if (!isPayload(initCmd, options.isCommand)) {
      throw new Error("Record has a malformed initial command");
    }
    record.initialCommand = initCmd;
  }
  if (initDeps === true) {
    if (record.deps === undefined) throw new Error("Record's initial deps refer to none");
    record.initialDeps = record.deps;
  } else if (initDeps !== null) {
    const checked = instanceDeps(initDeps, options.replicas);
    if (checked === undefined) throw new Error("Record has malformed initial deps");
    record.initialDeps = checked;
  }
  return record;
}

/** Encodes a dependency vector (the prune floor). */
export function encodeDeps(deps: Deps): Uint8Array {
  return sharedEncoder.encode(deps);
}

/**
 * Decodes and validates a dependency vector.
 *
 * @throws {Error} saying what is wrong.
 */
export function decodeDeps(bytes: Uint8Array, replicas?: number): Deps {
  const value = decodeMsgpack(bytes);
  if (!isVector(value, replicas)) throw new Error("Value is not a vector of instance numbers");
  return value;
}

/**
 * The optional trailing fields of an entry, `[encoding, expiresAt]` with
 * `nil` for an absent one, or none when it has neither: what was written
 * before entries had them stays the shape of an entry without them.
 */
function entryExtras(entry: KvEntry): [number | null, number | null] | [] {
  return entry.encoding === undefined && entry.expiresAt === undefined
    ? []
    : [entry.encoding ?? null, entry.expiresAt ?? null];
}

/**
 * The entry of `data` and `version` with the trailing fields `extras`
 * (`[encoding, expiresAt]`, each `nil` when absent, or none).
 *
 * @throws {Error} if a field is malformed.
 */
function entryWithExtras(data: unknown, version: unknown, extras: unknown[]): KvEntry {
  if (!isVersion(version)) throw new Error("Entry has an invalid version");
  if (!(data instanceof Uint8Array)) throw new Error("Entry value is not bytes");
  if (extras.length === 0) return { value: data, version };
  const encoding = extras[0] ?? undefined;
  const expiresAt = extras[1] ?? undefined;
  if (extras.length !== 2 || !isEncoding(encoding) || !isExpiry(expiresAt)) {
    throw new Error("Entry has a malformed encoding or expiry");
  }
  return entryOf(data, version, { encoding, expiresAt });
}

/**
 * Encodes a key-value entry as `[version, value]`, or `[version, value,
 * encoding, expiresAt]` when it has either (`nil` for the other).
 */
export function encodeEntry(entry: KvEntry): Uint8Array {
  return sharedEncoder.encode([entry.version, entry.value, ...entryExtras(entry)]);
}

/**
 * Decodes and validates a key-value entry, of either shape
 * {@linkcode encodeEntry} writes.
 *
 * @throws {Error} saying what is wrong.
 */
export function decodeEntry(bytes: Uint8Array): KvEntry {
  const value = decodeMsgpack(bytes);
  if (!Array.isArray(value) || (value.length !== 2 && value.length !== 4)) {
    throw new Error("Entry is not a [version, value] pair");
  }
  const [version, data, ...extras] = value;
  return entryWithExtras(data, version, extras);
}

/**
 * The Deno KV key part for a key-value key: its UTF-8 bytes, each plus one.
 *
 * Why: Deno KV's key encoding escapes every 0x00 byte as two bytes, so a
 * 1024-byte key of NULs (a valid key) would take 2048 bytes and, with the
 * prefix, exceed Deno KV's 2048-byte key limit. UTF-8 never produces a byte
 * above 0xF4, so adding one is a bijection onto bytes 0x01..0xF5: no byte needs
 * escaping, the stored key is exactly as long as the key, and byte order (hence
 * key order) is kept.
 */
export function encodeKvKey(key: string): Uint8Array {
  const bytes = utf8.encode(key);
  for (let i = 0; i < bytes.length; i++) bytes[i]! += 1;
  return bytes;
}

/**
 * The key-value key stored as `bytes` by {@linkcode encodeKvKey}.
 *
 * @throws {Error} if the bytes are not such a key.
 */
export function decodeKvKey(bytes: Uint8Array): string {
  const raw = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte === 0 || byte > 0xf5) throw new Error("Key bytes are out of range");
    raw[i] = byte - 1;
  }
  try {
    return strictUtf8.decode(raw);
  } catch {
    throw new Error("Key is not valid UTF-8");
  }
}

/**
 * The size Deno KV charges for `key`: its encoded length in the FoundationDB
 * tuple encoding Deno KV uses (strings and bytes: a tag, the bytes with each
 * 0x00 doubled, a terminator; numbers: a tag and 8 bytes). Only the part
 * types this storage uses are supported.
 */
export function encodedKeyLength(key: Deno.KvKey): number {
  let length = 0;
  for (const part of key) {
    if (typeof part === "number") {
      length += 9;
    } else if (typeof part === "string") {
      const bytes = utf8.encode(part);
      length += 2 + bytes.length + countZeros(bytes);
    } else if (part instanceof Uint8Array) {
      length += 2 + part.length + countZeros(part);
    } else {
      throw new TypeError(`Unsupported key part type ${typeof part}`);
    }
  }
  return length;
}

/**
 * Decodes MessagePack with bounded arrays and no extensions.
 *
 * @throws {Error} if the bytes are not valid MessagePack.
 */
export function decodeMsgpack(bytes: Uint8Array): unknown {
  try {
    return decode(bytes, decodeOptions);
  } catch (error) {
    throw new Error(`Value is not valid MessagePack: ${(error as Error).message}`);
  }
}

/** Encodes any value as MessagePack (a fresh copy). */
export function encodeMsgpack(value: unknown): Uint8Array {
  return sharedEncoder.encode(value);
}

function countZeros(bytes: Uint8Array): number {
  let zeros = 0;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0) zeros++;
  return zeros;
}

function isNatural(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/**
 * An instance's stored dependencies: `replicas` rows and a `seq`, or, from a
 * record written before `seq` existed, the rows alone (read as `seq` 0: such
 * an instance was answered after execution, which needs no `seq`).
 */
function instanceDeps(value: unknown, replicas: number | undefined): Deps | undefined {
  if (replicas === undefined) return isVector(value, undefined) ? value : undefined;
  if (isVector(value, replicas + 1)) return value;
  if (isVector(value, replicas)) return [...value, 0];
  return undefined;
}

function isVector(value: unknown, replicas: number | undefined): value is Deps {
  if (!Array.isArray(value) || value.length === 0) return false;
  if (replicas !== undefined && value.length !== replicas) return false;
  for (const entry of value) if (!isNatural(entry)) return false;
  return true;
}

function isPayload<C>(
  value: unknown,
  isCommand: (value: unknown) => value is C,
): value is Payload<C> {
  if (value === NOP) return true;
  if (!Array.isArray(value) || value.length === 0) return false;
  for (const command of value) if (!isCommand(command)) return false;
  return true;
}

// --- Effects log and snapshots ----------------------------------------------

/**
 * Encodes the state-machine changes of one instance, an entry of the effects
 * log: `[owner, number, changes]`, a change being `[key, version, value]` (a
 * set), `[key, version, value, encoding, expiresAt]` (a set of an entry with
 * either) or `[key]` (a delete). A fresh copy.
 */
export function encodeEffects(
  owner: number,
  number: number,
  mutations: readonly KvMutation[],
): Uint8Array {
  const changes = mutations.map((mutation) =>
    mutation.kind === "set"
      ? [mutation.key, mutation.entry.version, mutation.entry.value, ...entryExtras(mutation.entry)]
      : [mutation.key]
  );
  return sharedEncoder.encode([owner, number, changes]);
}

/**
 * Decodes and validates an effects log entry written by {@linkcode encodeEffects}.
 *
 * @throws {Error} saying what is wrong.
 */
export function decodeEffects(bytes: Uint8Array): Effects {
  return validateEffects(decodeMsgpack(bytes));
}

/** The changes of one executed instance, as logged. */
export interface Effects {
  /** The instance's owner. */
  readonly owner: number;
  /** The instance's number. */
  readonly number: number;
  /** Its key-value changes, in order. */
  readonly mutations: KvMutation[];
}

/**
 * Decodes an effects log entry holding several {@linkcode encodeEffects}
 * encodings back to back (a MessagePack stream), in order.
 *
 * @throws {Error} saying what is wrong.
 */
export function decodeEffectsStream(bytes: Uint8Array): Effects[] {
  const all: Effects[] = [];
  try {
    for (const value of decodeMulti(bytes, decodeOptions)) all.push(validateEffects(value));
  } catch (error) {
    if ((error as Error).message.startsWith("Effects entry")) throw error;
    throw new Error(`Value is not valid MessagePack: ${(error as Error).message}`);
  }
  return all;
}

function validateEffects(value: unknown): Effects {
  if (!Array.isArray(value) || value.length !== 3) {
    throw new Error("Effects entry is not an [owner, number, changes] triple");
  }
  const [owner, number, changes] = value;
  if (!isNatural(owner) || !isNatural(number)) throw new Error("Effects entry names no instance");
  if (!Array.isArray(changes)) throw new Error("Effects entry changes are not an array");
  const mutations: KvMutation[] = changes.map((change: unknown) => {
    if (!Array.isArray(change) || typeof change[0] !== "string") {
      throw new Error("Effects entry has a malformed change");
    }
    if (change.length === 1) return { kind: "delete", key: change[0] };
    const [key, version, data, ...extras] = change;
    if (change.length !== 3 && change.length !== 5) {
      throw new Error("Effects entry has a malformed set");
    }
    try {
      return { kind: "set", key, entry: entryWithExtras(data, version, extras) };
    } catch {
      throw new Error("Effects entry has a malformed set");
    }
  });
  return { owner, number, mutations };
}

/**
 * An upper bound of the bytes one entry takes in a snapshot page: UTF-16
 * units take at most 3 UTF-8 bytes, plus MessagePack headers.
 */
export function snapshotEntryBound(key: string, entry: KvEntry): number {
  // Beyond a page part, a continuation repeats the key.
  const parts = Math.max(1, Math.ceil(entry.value.length / SNAPSHOT_PART_BYTES));
  return parts * (3 * key.length + 16) + entry.version.length + entry.value.length + 24;
}

/**
 * Most bytes of a value one item of a snapshot page holds: a larger value
 * (a Deno KV database's, up to 64 KiB, with a key of up to 2 KiB, does not
 * fit one page with its key) is split into continuation items.
 */
export const SNAPSHOT_PART_BYTES = 32 * 1024;

/** Largest encoded snapshot page: one Deno KV value. */
export const SNAPSHOT_PAGE_BYTES = 65536;
/** What a page is filled to, by estimate, before the next one starts. */
const SNAPSHOT_PAGE_TARGET = 48 * 1024;

/**
 * Encodes the whole key-value state as pages of at most
 * {@linkcode SNAPSHOT_PAGE_BYTES} bytes, each a MessagePack array of
 * `key, meta, value` items:
 *
 * - `meta` a version string: an entry with neither encoding nor expiry (all
 *   that was written before they existed);
 * - `meta` `[version, encoding, expiresAt]` (`nil` for an absent one): an
 *   entry with either;
 * - `meta` `nil`: a continuation, whose bytes extend the value of the entry
 *   of `key` just before it (values above {@linkcode SNAPSHOT_PART_BYTES} are
 *   split; pages are read in order).
 *
 * Fresh copies.
 *
 * @throws {Error} if one entry alone can never fit in a page.
 */
export function encodeSnapshotPages(
  entries: Iterable<readonly [string, KvEntry]>,
): Uint8Array[] {
  const pages: Uint8Array[] = [];
  let page: unknown[] = [];
  let estimate = 0;
  const flush = (items: unknown[]) => {
    if (items.length === 0) return;
    const encoded = sharedEncoder.encode(items);
    if (encoded.length <= SNAPSHOT_PAGE_BYTES) {
      pages.push(encoded);
    } else if (items.length === 3) {
      throw new Error(
        `Entry of key ${JSON.stringify(String(items[0]).slice(0, 32))} encodes to ` +
          `${encoded.length} bytes, more than a snapshot page holds`,
      );
    } else {
      // The estimate was off (multi-byte keys): split the page in two.
      const half = Math.floor(items.length / 6) * 3;
      flush(items.slice(0, half));
      flush(items.slice(half));
    }
  };
  for (const [key, entry] of entries) {
    const size = snapshotEntryBound(key, entry);
    if (page.length > 0 && estimate + size > SNAPSHOT_PAGE_TARGET) {
      flush(page);
      page = [];
      estimate = 0;
    }
    const extras = entryExtras(entry);
    const meta = extras.length === 0 ? entry.version : [entry.version, ...extras];
    page.push(key, meta, entry.value.subarray(0, SNAPSHOT_PART_BYTES));
    for (let at = SNAPSHOT_PART_BYTES; at < entry.value.length; at += SNAPSHOT_PART_BYTES) {
      page.push(key, null, entry.value.subarray(at, at + SNAPSHOT_PART_BYTES));
    }
    estimate += size;
  }
  flush(page);
  return pages;
}

/**
 * Decodes and validates one snapshot page, adding its entries to `into`.
 *
 * @throws {Error} saying what is wrong.
 */
export function decodeSnapshotPage(bytes: Uint8Array, into: Map<string, KvEntry>): void {
  const value = decodeMsgpack(bytes);
  if (!Array.isArray(value) || value.length % 3 !== 0) {
    throw new Error("Snapshot page is not an array of key, version, value triples");
  }
  for (let i = 0; i < value.length; i += 3) {
    const key = value[i];
    const meta = value[i + 1];
    const data = value[i + 2];
    const malformed = () => new Error(`Snapshot page has a malformed entry at position ${i / 3}`);
    if (typeof key !== "string" || !(data instanceof Uint8Array)) throw malformed();
    if (meta === null) {
      const started = into.get(key);
      if (started === undefined) throw malformed();
      const joined = new Uint8Array(started.value.length + data.length);
      joined.set(started.value);
      joined.set(data, started.value.length);
      into.set(key, entryOf(joined, started.version, started));
      continue;
    }
    if (Array.isArray(meta) && meta.length !== 3) throw malformed();
    try {
      into.set(
        key,
        Array.isArray(meta)
          ? entryWithExtras(data, meta[0], meta.slice(1))
          : entryWithExtras(data, meta, []),
      );
    } catch {
      throw malformed();
    }
  }
}

function isVersion(value: unknown): value is string {
  return typeof value === "string" && value.length <= MAX_VERSION_LENGTH;
}
