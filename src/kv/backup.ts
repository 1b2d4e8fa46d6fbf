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
 *    no particular order (sorting a large state would stall the replica),
 *    with `"encoding": E` and `"expiresAt": MS` when the entry has them (a
 *    Deno KV database's entries; files without them read as before). A key
 *    is a curl key, a database's (`src/kv/database_keys.ts`: data keys,
 *    whose versions are versionstamps, and stamp buckets) or a named
 *    token's (`src/kv/tokens.ts`: its record, whose secret is not in it,
 *    only its SHA-256; a restored cluster takes the same tokens);
 * 3. `{"end": true, "keys": N, "sha256": HEX}`: the SHA-256 of every byte
 *    before this line, so that a truncated or altered file is refused.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { MAX_VALUE_BYTES } from "./curl_keys.ts";
import { isVersionstamp, MAX_DATABASE_VALUE_BYTES, stateKeyProblem } from "./database_keys.ts";
import { entryOf, isEncoding, isExpiry, type KvEntry } from "./entry.ts";
import { stateDigestOf } from "./state_machine.ts";
import { isTokenKey } from "./token_keys.ts";
import { tokenEntryProblem } from "./tokens.ts";

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

/**
 * `number.owner.index`, with a tag: that of a cluster seeded from a backup
 * (`.r` and 12 hex digits), and from epoch 2 on the epoch (`e2`, after the
 * backup's tag if any: `versionTagFor` in `src/driver/epoch.ts`).
 */
const VERSION_PATTERN =
  /^(\d{1,15})\.(\d{1,15})\.(\d{1,15})(?:\.(?:r[0-9a-f]{12}(?:e\d{1,15})?|e\d{1,15}))?$/;

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
  const header: BackupHeader = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    createdAt: options.createdAt.toISOString(),
    keys: entries.length,
    stateDigest: options.stateDigest,
    floor: backupFloor(entries),
    checkedBy: options.checkedBy ?? null,
  };
  function* lines(): Generator<string> {
    yield JSON.stringify(header);
    for (const [key, entry] of entries) yield entryLine(key, entry);
  }
  const { onClose, bytesPerSecond, now } = options;
  return lineFileStream(lines(), {
    endLine: (sha256) => JSON.stringify({ end: true, keys: entries.length, sha256 }),
    ...(onClose === undefined ? {} : { onClose: () => onClose() }),
    ...(bytesPerSecond === undefined ? {} : { bytesPerSecond }),
    ...(now === undefined ? {} : { now }),
  });
}

/** Settings of {@linkcode lineFileStream}. */
export interface LineFileStreamOptions {
  /** The last line (without its newline), given the SHA-256 (hex) of every byte before it. */
  readonly endLine: (sha256: string) => string;
  /**
   * Most bytes per second to hand out (default: no limit): a chunk waits
   * until the bytes so far are within the rate. Bytes left out for
   * `fromOffset` do not count.
   */
  readonly bytesPerSecond?: number;
  /** Milliseconds of a monotonic clock, for the rate (default `performance.now`). */
  readonly now?: () => number;
  /**
   * Called once when the stream ends: with the file's length in bytes when it
   * was produced to its end (read to the end, or `fromOffset` found beyond
   * it), with `undefined` when it was cancelled or aborted before.
   */
  readonly onClose?: (totalBytes: number | undefined) => void;
  /**
   * Bytes at the start of the file to leave out (default 0): the stream is
   * the rest of exactly the same bytes, for a reader that resumes. They are
   * still produced (the end line's SHA-256 covers them), only not handed out.
   * The stream errors with a `RangeError` if the file is shorter.
   */
  readonly fromOffset?: number;
  /** Aborting it errors the stream with the signal's reason. */
  readonly signal?: AbortSignal;
}

/**
 * A file of JSON lines as a stream of bytes, produced as it is read, in
 * chunks of about 64 KiB: `lines` (each without its
 * newline), then the end line, which names the SHA-256 of every byte before
 * it. The backup file is one (`backupStream`), the snapshot file another
 * (`snapshot_file.ts`). The same lines give the same bytes in the same chunks.
 */
export function lineFileStream(
  lines: Iterator<string>,
  options: LineFileStreamOptions,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const hash = createHash("sha256");
  const { signal } = options;
  const fromOffset = options.fromOffset ?? 0;
  if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) {
    throw new RangeError(`fromOffset must be a byte count, got ${fromOffset}`);
  }
  let skip = fromOffset;
  let pending = "";
  let upcoming = lines.next();
  /** Bytes of the file produced so far, those left out included. */
  let produced = 0;
  let done = false;
  const now = options.now ?? (() => performance.now());
  let started = now();
  let handedOut = 0;
  let controllerOf: ReadableStreamDefaultController<Uint8Array> | undefined;
  const finish = (totalBytes: number | undefined): boolean => {
    if (done) return false;
    done = true;
    signal?.removeEventListener("abort", onAbort);
    options.onClose?.(totalBytes);
    return true;
  };
  const onAbort = () => {
    if (finish(undefined)) controllerOf?.error(signal?.reason);
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controllerOf = controller;
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort);
    },
    async pull(controller) {
      let skippedChunks = 0;
      while (!done) {
        const rate = options.bytesPerSecond;
        if (rate !== undefined && skip === 0) {
          // Credit for time the reader did not read is capped at one chunk, so
          // that a reader that stalled does not get a burst at full speed.
          const creditMs = (CHUNK_BYTES / rate) * 1000;
          started = Math.max(started, now() - (handedOut / rate) * 1000 - creditMs);
          // Wait until the bytes handed out so far are within the rate.
          const dueMs = (handedOut / rate) * 1000 - (now() - started);
          if (dueMs > 0) await delay(dueMs, signal);
          if (done) return;
        }
        while (pending.length < CHUNK_BYTES && upcoming.done !== true) {
          pending += upcoming.value + "\n";
          upcoming = lines.next();
        }
        let bytes = encoder.encode(pending);
        pending = "";
        hash.update(bytes);
        const last = upcoming.done === true;
        if (last) {
          const tail = encoder.encode(options.endLine(hash.digest("hex")) + "\n");
          const chunk = new Uint8Array(bytes.length + tail.length);
          chunk.set(bytes);
          chunk.set(tail, bytes.length);
          bytes = chunk;
        }
        produced += bytes.length;
        if (skip > 0) {
          const left = Math.min(skip, bytes.length);
          skip -= left;
          bytes = bytes.subarray(left);
        }
        if (bytes.length > 0) {
          handedOut += bytes.length;
          controller.enqueue(bytes);
        }
        if (last) {
          finish(produced);
          if (skip > 0) {
            controller.error(
              new RangeError(
                `Offset ${fromOffset} is beyond the end of the file (${produced} bytes)`,
              ),
            );
          } else {
            controller.close();
          }
          return;
        }
        if (bytes.length > 0) return;
        // A whole chunk left out: let other work run now and then.
        if (++skippedChunks % 16 === 0) await delay(0, signal);
      }
    },
    cancel() {
      finish(undefined);
    },
  });
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function delay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}

/** Settings of {@linkcode forEachLine}. */
export interface ForEachLineOptions {
  /** Longest line accepted (without its newline), by its number, from 1. */
  readonly maxLineBytes: (lineNumber: number) => number;
  /** Takes each line, without its newline; what it throws stops the reading. */
  readonly onLine: (bytes: Uint8Array, lineNumber: number) => void;
  /** The error to throw for a line longer than its maximum. */
  readonly tooLong: (lineNumber: number, maxBytes: number) => Error;
}

/**
 * Hands each line of `stream` to `onLine` as it arrives (a last line without
 * a newline too), holding at most one line and one chunk in memory; returns
 * the number of lines.
 *
 * @throws {Error} what `tooLong` or `onLine` gives, or the stream's error.
 */
export async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  options: ForEachLineOptions,
): Promise<number> {
  // The unfinished line, in the pieces it came in: a long line is copied
  // once, when it is complete, not once per chunk.
  let pieces: Uint8Array[] = [];
  let pieceBytes = 0;
  let lineNumber = 0;
  const take = (tail: Uint8Array) => {
    let line = tail;
    if (pieces.length > 0) {
      line = new Uint8Array(pieceBytes + tail.length);
      let at = 0;
      for (const piece of pieces) {
        line.set(piece, at);
        at += piece.length;
      }
      line.set(tail, at);
      pieces = [];
      pieceBytes = 0;
    }
    lineNumber++;
    options.onLine(line, lineNumber);
  };
  for await (const chunk of stream) {
    let start = 0;
    for (let newline = chunk.indexOf(10); newline >= 0; newline = chunk.indexOf(10, start)) {
      take(chunk.subarray(start, newline));
      start = newline + 1;
    }
    if (start < chunk.length) {
      pieces.push(chunk.slice(start));
      pieceBytes += chunk.length - start;
    }
    const max = options.maxLineBytes(lineNumber + 1);
    if (pieceBytes > max) throw options.tooLong(lineNumber + 1, max);
  }
  if (pieceBytes > 0) take(new Uint8Array(0));
  return lineNumber;
}

/**
 * An entry line (without its newline): `{"key": K, "version": V, "value":
 * BASE64}`, and `"encoding"` and `"expiresAt"` when the entry has them.
 */
export function entryLine(key: string, entry: KvEntry): string {
  return JSON.stringify({
    key,
    version: entry.version,
    value: entry.value.toBase64(),
    encoding: entry.encoding,
    expiresAt: entry.expiresAt,
  });
}

/**
 * Reads a backup file, checking everything before returning: the header, each
 * entry (a valid key, each once, a version of the form
 * `number.owner.index[.tag]` or a database's versionstamp, a value within the
 * size limit, a valid encoding and expiry if any), the count, the
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
  const takeLine = (bytes: Uint8Array, lineNumber: number) => {
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
    if (isJsonObject(value) && value.end === true) {
      end = checkEnd(value, lineNumber);
      return;
    }
    hash.update(bytes);
    hash.update(NEWLINE);
    const checked = parseEntryLine(value);
    if (typeof checked === "string") throw new BackupFormatError(`Line ${lineNumber}: ${checked}`);
    const { entry, number } = checked;
    if (keys.has(entry[0])) throw new BackupFormatError(`Line ${lineNumber}: key repeated`);
    keys.add(entry[0]);
    entries.push(entry);
    floor = Math.max(floor, number);
  };
  await forEachLine(stream, {
    maxLineBytes: () => MAX_BACKUP_LINE_BYTES,
    onLine: takeLine,
    tooLong: (number, max) => new BackupFormatError(`Line ${number}: longer than ${max}`),
  });
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

/** Whether a parsed JSON value is an object (not null, not an array). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkHeader(value: unknown): BackupHeader {
  if (!isJsonObject(value) || value.format !== BACKUP_FORMAT) {
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

/**
 * The entry an entry line holds ({@linkcode entryLine}, parsed) and the
 * instance number its version names (0 for a versionstamp), or what is wrong
 * with it: a valid key (`stateKeyProblem`), a version of the form
 * `number.owner.index[.tag]` (a database's key: a versionstamp), a base64
 * value within the size limit, and a valid encoding and expiry if any; a
 * token's entry a valid record of its name (`tokenEntryProblem`).
 */
export function parseEntryLine(
  value: unknown,
): { readonly entry: readonly [string, KvEntry]; readonly number: number } | string {
  if (!isJsonObject(value)) return "not an entry";
  const { key, version, value: encoded, encoding, expiresAt } = value;
  if (typeof key !== "string" || stateKeyProblem(key) !== undefined) return "invalid key";
  // Token records are versioned as curl writes are (`versionOf`).
  const inDatabase = key.charCodeAt(0) === 0xfffe && !isTokenKey(key);
  const number = typeof version !== "string"
    ? undefined
    : inDatabase
    ? (isVersionstamp(version) ? 0 : undefined)
    : versionInstanceNumber(version);
  if (number === undefined) return "invalid version";
  const maxValue = inDatabase ? MAX_DATABASE_VALUE_BYTES : MAX_VALUE_BYTES;
  if (typeof encoded !== "string" || encoded.length > Math.ceil(maxValue / 3) * 4) {
    return "invalid value";
  }
  if (!isEncoding(encoding) || !isExpiry(expiresAt)) return "invalid encoding or expiry";
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(encoded);
  } catch {
    return "value is not base64";
  }
  const entry = entryOf(bytes, version as string, { encoding, expiresAt });
  if (isTokenKey(key) && tokenEntryProblem(key, entry) !== undefined) return "invalid token record";
  return { entry: [key, entry], number };
}

function checkEnd(value: Record<string, unknown>, lineNumber: number) {
  const { keys, sha256 } = value;
  if (!Number.isSafeInteger(keys) || typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new BackupFormatError(`Line ${lineNumber}: malformed end line`);
  }
  return { keys: keys as number, sha256 };
}
