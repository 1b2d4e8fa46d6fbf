/**
 * Backups of the key-value state: the file format, written as a stream from
 * the state a backup command read, and read back with every check a restore
 * needs before it trusts a byte.
 *
 * ## What a backup is
 *
 * A backup command (`commands.ts`) conflicts with every key, so EPaxos* orders
 * it with every write: it reads the state after exactly the writes that
 * execute before it, on every replica alike. The backup is that state, a
 * linearizable point in time: it holds every write acknowledged before the
 * backup was requested and none that was requested after the backup was
 * answered. Writes go on while it is taken (the command is one more
 * instance; the entries are the state's immutable objects, copied by
 * reference).
 *
 * ## Format (version 1)
 *
 * UTF-8, one JSON object per line:
 *
 * 1. `{"format": "epaxos-kv-backup", "version": 1, "createdAt": ISO-8601,
 *    "keys": N, "stateDigest": D, "floor": F, "checkedBy": R}`: `stateDigest` is the state
 *    machine's digest of the state (`/status` shows the same figure), `floor`
 *    the highest instance number any version names, `checkedBy` the replica
 *    whose own digest at the same backup command was equal (null if none
 *    answered);
 * 2. N lines `{"key": K, "version": V, "value": BASE64}`, each key once, in
 *    no particular order (sorting a large state would stall the replica);
 * 3. `{"end": true, "keys": N, "sha256": HEX}`: the SHA-256 of every byte
 *    before this line, so that a truncated or altered file is refused.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { keyProblem, MAX_VALUE_BYTES } from "./commands.ts";
import { type KvEntry, stateDigestOf } from "./state_machine.ts";

/** The `format` of line 1. */
export const BACKUP_FORMAT = "epaxos-kv-backup";
/** The format version this build writes and reads. */
export const BACKUP_VERSION = 1;
/** Longest line accepted: an entry of the largest key and value, base64 and JSON escapes included. */
export const MAX_BACKUP_LINE_BYTES = 256 * 1024;
/** Bytes of file a backup stream hands out per chunk, about. */
const CHUNK_BYTES = 64 * 1024;

/** Line 1 of a backup. */
export interface BackupHeader {
  /** {@linkcode BACKUP_FORMAT}. */
  readonly format: string;
  /** {@linkcode BACKUP_VERSION}. */
  readonly version: number;
  /** When the backup command was answered. */
  readonly createdAt: string;
  /** Entries in the file. */
  readonly keys: number;
  /** The state machine's digest of the state (`KvStateMachine.digest`). */
  readonly stateDigest: string;
  /** The highest instance number any entry's version names (0 if none). */
  readonly floor: number;
  /**
   * The replica whose own digest at the same backup command equalled
   * `stateDigest` when the backup was taken, or null if none answered.
   */
  readonly checkedBy: number | null;
}

/** A backup read and checked. */
export interface Backup {
  /** Line 1. */
  readonly header: BackupHeader;
  /** Every entry, in the file's order. */
  readonly entries: readonly (readonly [string, KvEntry])[];
  /** The SHA-256 the last line names (hex): identifies the backup. */
  readonly sha256: string;
}

/** A file that is not a complete, intact backup this build can read. */
export class BackupFormatError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "BackupFormatError";
  }
}

/** `number.owner.index`, with the tag of a cluster seeded from a backup (`.r` and 12 hex digits). */
const VERSION_PATTERN = /^(\d{1,15})\.(\d{1,15})\.(\d{1,15})(?:\.r[0-9a-f]{12})?$/;

/** The version tag of a cluster seeded from the backup whose SHA-256 is `sha256`. */
export function versionTagOf(sha256: string): string {
  return `r${sha256.slice(0, 12)}`;
}

/**
 * The instance number a version names (`number.owner.index`, or
 * `number.owner.index.tag` in a cluster seeded from a backup; see
 * `versionOf`), or `undefined` if it is not one.
 */
export function versionInstanceNumber(version: string): number | undefined {
  const match = VERSION_PATTERN.exec(version);
  if (match === null) return undefined;
  const number = Number(match[1]);
  return Number.isSafeInteger(number) ? number : undefined;
}

/** The highest instance number the versions of `entries` name. */
export function backupFloor(entries: Iterable<readonly [string, KvEntry]>): number {
  let floor = 0;
  for (const [, entry] of entries) {
    floor = Math.max(floor, versionInstanceNumber(entry.version) ?? 0);
  }
  return floor;
}

/** Settings for {@linkcode backupStream}. */
export interface BackupStreamOptions {
  /** The state machine's digest of the state the entries are. */
  readonly stateDigest: string;
  /** When the backup was taken. */
  readonly createdAt: Date;
  /** Called once when the stream ends: read to the end, or cancelled. */
  readonly onClose?: () => void;
  /**
   * Most bytes per second to hand out (default: no limit): a chunk waits
   * until the bytes so far are within the rate, so that streaming a large
   * state takes its share of a busy replica's CPU over time instead of at
   * once.
   */
  readonly bytesPerSecond?: number;
  /** Milliseconds of a monotonic clock, for the rate (default `performance.now`). */
  readonly now?: () => number;
  /** {@linkcode BackupHeader.checkedBy} (default null). */
  readonly checkedBy?: number | null;
}

/**
 * The backup file of `entries` (as a backup command returns them) as a
 * stream of bytes, produced as it is read.
 */
export function backupStream(
  entries: readonly (readonly [string, KvEntry])[],
  options: BackupStreamOptions,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const hash = createHash("sha256");
  const header: BackupHeader = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    createdAt: options.createdAt.toISOString(),
    keys: entries.length,
    stateDigest: options.stateDigest,
    floor: backupFloor(entries),
    checkedBy: options.checkedBy ?? null,
  };
  let pending = JSON.stringify(header) + "\n";
  let next = 0;
  let done = false;
  const now = options.now ?? (() => performance.now());
  let started = now();
  let handedOut = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (done) return;
      const rate = options.bytesPerSecond;
      if (rate !== undefined) {
        // Credit for time the reader did not read is capped at one chunk, so
        // that a reader that stalled does not get a burst at full speed.
        const creditMs = (CHUNK_BYTES / rate) * 1000;
        started = Math.max(started, now() - (handedOut / rate) * 1000 - creditMs);
        // Wait until the bytes handed out so far are within the rate.
        const dueMs = (handedOut / rate) * 1000 - (now() - started);
        if (dueMs > 0) await new Promise((resolve) => setTimeout(resolve, dueMs));
        if (done) return;
      }
      while (pending.length < CHUNK_BYTES && next < entries.length) {
        const [key, entry] = entries[next++]!;
        pending += JSON.stringify({ key, version: entry.version, value: entry.value.toBase64() }) +
          "\n";
      }
      const bytes = encoder.encode(pending);
      hash.update(bytes);
      handedOut += bytes.length;
      pending = "";
      if (next >= entries.length) {
        const end = JSON.stringify({ end: true, keys: entries.length, sha256: hash.digest("hex") });
        const tail = encoder.encode(end + "\n");
        const chunk = new Uint8Array(bytes.length + tail.length);
        chunk.set(bytes);
        chunk.set(tail, bytes.length);
        controller.enqueue(chunk);
        controller.close();
        done = true;
        options.onClose?.();
        return;
      }
      controller.enqueue(bytes);
    },
    cancel() {
      done = true;
      options.onClose?.();
    },
  });
}

/**
 * Reads a backup file, checking everything before returning: the header, each
 * entry (a valid key, each once, a version of the form
 * `number.owner.index[.tag]`, a value within the size limit), the count, the
 * SHA-256 of the bytes, the state digest and the floor.
 *
 * @throws {BackupFormatError} saying what is wrong (with the line number).
 */
export async function readBackup(stream: ReadableStream<Uint8Array>): Promise<Backup> {
  const hash = createHash("sha256");
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let header: BackupHeader | undefined;
  const entries: (readonly [string, KvEntry])[] = [];
  const keys = new Set<string>();
  /** The highest instance number the entries' versions name, as they are read. */
  let floor = 0;
  let end: { keys: number; sha256: string } | undefined;
  let lineNumber = 0;
  const takeLine = (bytes: Uint8Array) => {
    lineNumber++;
    if (end !== undefined) throw new BackupFormatError(`Line ${lineNumber}: data after the end`);
    let text: string;
    let value: unknown;
    try {
      text = decoder.decode(bytes);
      value = JSON.parse(text);
    } catch (error) {
      throw new BackupFormatError(`Line ${lineNumber}: not JSON (${(error as Error).message})`);
    }
    if (header === undefined) {
      header = checkHeader(value);
      hash.update(bytes);
      hash.update(NEWLINE);
      return;
    }
    if (isRecord(value) && value.end === true) {
      end = checkEnd(value, lineNumber);
      return;
    }
    hash.update(bytes);
    hash.update(NEWLINE);
    const { entry, number } = checkEntry(value, lineNumber);
    if (keys.has(entry[0])) throw new BackupFormatError(`Line ${lineNumber}: key repeated`);
    keys.add(entry[0]);
    entries.push(entry);
    floor = Math.max(floor, number);
  };
  let buffered = new Uint8Array(0);
  for await (const chunk of stream) {
    let data = chunk;
    if (buffered.length > 0) {
      data = new Uint8Array(buffered.length + chunk.length);
      data.set(buffered);
      data.set(chunk, buffered.length);
    }
    let start = 0;
    for (let newline = data.indexOf(10, start); newline >= 0; newline = data.indexOf(10, start)) {
      takeLine(data.subarray(start, newline));
      start = newline + 1;
    }
    buffered = data.slice(start);
    if (buffered.length > MAX_BACKUP_LINE_BYTES) {
      throw new BackupFormatError(`Line ${lineNumber + 1}: longer than ${MAX_BACKUP_LINE_BYTES}`);
    }
  }
  if (buffered.length > 0) takeLine(buffered);
  if (header === undefined) throw new BackupFormatError("Empty file: no header line");
  if (end === undefined) {
    throw new BackupFormatError("No end line: the backup is incomplete (truncated?)");
  }
  const sha256 = hash.digest("hex");
  if (end.sha256 !== sha256) {
    throw new BackupFormatError(
      `SHA-256 mismatch: the end line says ${end.sha256}, bytes ${sha256}`,
    );
  }
  if (end.keys !== entries.length || header.keys !== entries.length) {
    throw new BackupFormatError(
      `Entry count mismatch: header ${header.keys}, end line ${end.keys}, file ${entries.length}`,
    );
  }
  const digest = stateDigestOf(entries);
  if (digest !== header.stateDigest) {
    throw new BackupFormatError(
      `State digest mismatch: header ${header.stateDigest}, entries ${digest}`,
    );
  }
  if (floor !== header.floor) {
    throw new BackupFormatError(`Floor mismatch: header ${header.floor}, entries ${floor}`);
  }
  return { header, entries, sha256 };
}

const NEWLINE = new Uint8Array([10]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkHeader(value: unknown): BackupHeader {
  if (!isRecord(value) || value.format !== BACKUP_FORMAT) {
    throw new BackupFormatError(`Line 1: not an ${BACKUP_FORMAT} file`);
  }
  if (value.version !== BACKUP_VERSION) {
    throw new BackupFormatError(
      `Line 1: backup format version ${
        JSON.stringify(value.version)
      }, but this build reads only version ${BACKUP_VERSION}`,
    );
  }
  const { createdAt, keys, stateDigest, floor } = value;
  const checkedBy = value.checkedBy ?? null;
  if (
    typeof createdAt !== "string" || !Number.isSafeInteger(keys) || (keys as number) < 0 ||
    typeof stateDigest !== "string" || !Number.isSafeInteger(floor) || (floor as number) < 0 ||
    (checkedBy !== null && !(Number.isSafeInteger(checkedBy) && (checkedBy as number) >= 0))
  ) {
    throw new BackupFormatError("Line 1: malformed header");
  }
  return {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    createdAt,
    keys: keys as number,
    stateDigest,
    floor: floor as number,
    checkedBy: checkedBy as number | null,
  };
}

/** An entry line's entry, and the instance number its version names. */
function checkEntry(
  value: unknown,
  lineNumber: number,
): { entry: readonly [string, KvEntry]; number: number } {
  if (!isRecord(value)) throw new BackupFormatError(`Line ${lineNumber}: not an entry`);
  const { key, version, value: encoded } = value;
  if (typeof key !== "string" || keyProblem(key) !== undefined) {
    throw new BackupFormatError(`Line ${lineNumber}: invalid key`);
  }
  const number = typeof version === "string" ? versionInstanceNumber(version) : undefined;
  if (number === undefined) throw new BackupFormatError(`Line ${lineNumber}: invalid version`);
  if (typeof encoded !== "string" || encoded.length > Math.ceil(MAX_VALUE_BYTES / 3) * 4) {
    throw new BackupFormatError(`Line ${lineNumber}: invalid value`);
  }
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(encoded);
  } catch {
    throw new BackupFormatError(`Line ${lineNumber}: value is not base64`);
  }
  return { entry: [key, { value: bytes, version: version as string }], number };
}

function checkEnd(value: Record<string, unknown>, lineNumber: number) {
  const { keys, sha256 } = value;
  if (!Number.isSafeInteger(keys) || typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new BackupFormatError(`Line ${lineNumber}: malformed end line`);
  }
  return { keys: keys as number, sha256 };
}
