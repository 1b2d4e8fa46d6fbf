/**
 * The snapshot file: a {@linkcode ReplicaSnapshot} of the key-value state
 * machine as a stream of bytes, which a replica that its peers pruned past
 * fetches from a peer (`src/server/snapshot_route.ts` sends it,
 * `src/net/snapshot_fetch.ts` receives it), and read back with every check
 * before the receiver trusts a byte of it.
 *
 * ## Format (version 1)
 *
 * Made as the backup file is (`backup.ts`, whose pieces it shares): UTF-8,
 * one JSON object per line.
 *
 * 1. `{"format": "epaxos-kv-snapshot", "version": 1, "barrier": ID,
 *    "executedPrefix": [N, ...], "digest": D, "entries": E, "records": R}`:
 *    the barrier command's request id, the executed prefix per row, the state
 *    digest (`stateDigestOf` of the entries), and how many lines of each kind
 *    follow; and `"configuration": {...}` when the snapshot carries the
 *    configuration of its epoch (`src/core/configuration.ts`; absent: the
 *    bootstrap one), one row of the prefix per position (`positionCount`);
 * 2. R lines `{"record": BASE64}`: an instance record, committed and
 *    executed, above the executed prefix of its row, each instance once. The
 *    bytes are the storage codec's encoding of a record
 *    (`src/storage/codec.ts`: MessagePack, put values as bytes, a shared
 *    initial command stored once), so that the receiver checks them exactly
 *    as storage checks what it loads;
 * 3. E lines `{"key": K, "version": V, "value": BASE64}`: the backup file's
 *    entry lines, each key once;
 * 4. `{"end": true, "entries": E, "records": R, "sha256": HEX}`: the SHA-256
 *    of every byte before this line.
 *
 * The same snapshot always gives the same bytes, so that a receiver whose
 * transfer was cut asks for the rest from an offset
 * ({@linkcode SnapshotStreamOptions.fromOffset}).
 *
 * @module
 */

import { type Configuration, configurationProblem, positionCount } from "../core/configuration.ts";
import { createHash } from "node:crypto";
import { instanceKey } from "../core/instance.ts";
import { type InstanceRecord, Phase } from "../core/types.ts";
import { MAX_BALLOT, MAX_BATCH_COMMANDS, MAX_INSTANCE_NUMBER } from "../core/validate.ts";
import { MAX_REPLICAS } from "../core/quorum.ts";
import { isDeps } from "../core/deps.ts";
import { decodeRecord, encodeRecordShared } from "../storage/codec.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import { MAX_BATCH_BYTES } from "../transport/codec.ts";
import {
  entryLine,
  forEachLine,
  isJsonObject,
  lineFileStream,
  MAX_BACKUP_LINE_BYTES,
  parseEntryLine,
} from "./backup.ts";
import { isKvCommand, type KvCommand } from "./commands.ts";
import { type KvEntry, stateDigestOf } from "./state_machine.ts";

/** The `format` of line 1. */
export const SNAPSHOT_FORMAT = "epaxos-kv-snapshot";
/** The format version this build writes and reads. */
export const SNAPSHOT_VERSION = 1;
/** Longest barrier id accepted (a request id, as `isKvCommand` bounds them). */
export const MAX_BARRIER_LENGTH = 128;
/**
 * Longest record line accepted. A record's command reached every replica in
 * one peer batch of at most `MAX_BATCH_BYTES` (16 MiB), and its initial
 * command in another when the two differ: twice that, in base64, plus room.
 */
export const MAX_SNAPSHOT_RECORD_LINE_BYTES = Math.ceil((2 * MAX_BATCH_BYTES) / 3) * 4 + 1024;
/** Longest header or end line accepted. */
const MAX_HEADER_LINE_BYTES = 64 * 1024;

/** Line 1 of a snapshot file. */
export interface SnapshotHeader {
  /** {@linkcode SNAPSHOT_FORMAT}. */
  readonly format: string;
  /** {@linkcode SNAPSHOT_VERSION}. */
  readonly version: number;
  /** {@linkcode ReplicaSnapshot.barrier}. */
  readonly barrier: string;
  /** {@linkcode ReplicaSnapshot.executedPrefix}. */
  readonly executedPrefix: readonly number[];
  /** {@linkcode ReplicaSnapshot.digest}. */
  readonly digest: string;
  /** Entry lines in the file. */
  readonly entries: number;
  /** Record lines in the file. */
  readonly records: number;
  /** {@linkcode ReplicaSnapshot.configuration}, when the snapshot carries one. */
  readonly configuration?: Configuration;
}

/** A stream or file that is not a complete, intact snapshot this build can read. */
export class SnapshotFormatError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "SnapshotFormatError";
  }
}

/** Settings of {@linkcode snapshotStream}. */
export interface SnapshotStreamOptions {
  /**
   * Most MB (10^6 bytes) per second to hand out; `Infinity` for no limit.
   * Bytes left out for `fromOffset` do not count.
   */
  readonly rateMbps: number;
  /** Aborting it errors the stream with the signal's reason. */
  readonly signal?: AbortSignal;
  /**
   * Bytes at the start to leave out (default 0): the stream is then exactly
   * the rest of the bytes the same snapshot always gives. The stream errors
   * with a `RangeError` if the file is shorter.
   */
  readonly fromOffset?: number;
  /**
   * Called once when the stream ends: with the file's whole length when it
   * was produced to its end, `undefined` when cancelled or aborted before.
   */
  readonly onClose?: (totalBytes: number | undefined) => void;
  /** Milliseconds of a monotonic clock, for the rate (default `performance.now`). */
  readonly now?: () => number;
}

/**
 * The snapshot file of `snapshot` as a stream of bytes, produced as it is read.
 *
 * @throws {RangeError} if `rateMbps` is not a positive number or
 *   `fromOffset` not a byte count.
 */
export function snapshotStream(
  snapshot: ReplicaSnapshot<KvCommand>,
  options: SnapshotStreamOptions,
): ReadableStream<Uint8Array> {
  const { rateMbps, signal, fromOffset, onClose, now } = options;
  if (!(rateMbps > 0)) throw new RangeError(`rateMbps must be positive, got ${rateMbps}`);
  const header: SnapshotHeader = {
    format: SNAPSHOT_FORMAT,
    version: SNAPSHOT_VERSION,
    barrier: snapshot.barrier,
    executedPrefix: snapshot.executedPrefix,
    digest: snapshot.digest,
    entries: snapshot.entries.length,
    records: snapshot.records.length,
    ...(snapshot.configuration === undefined ? {} : { configuration: snapshot.configuration }),
  };
  function* lines(): Generator<string> {
    yield JSON.stringify(header);
    for (const record of snapshot.records) {
      yield JSON.stringify({ record: encodeRecordShared(record).toBase64() });
    }
    for (const [key, entry] of snapshot.entries) yield entryLine(key, entry);
  }
  return lineFileStream(lines(), {
    endLine: (sha256) =>
      JSON.stringify({ end: true, entries: header.entries, records: header.records, sha256 }),
    ...(rateMbps === Infinity ? {} : { bytesPerSecond: rateMbps * 1e6 }),
    ...(signal === undefined ? {} : { signal }),
    ...(fromOffset === undefined ? {} : { fromOffset }),
    ...(onClose === undefined ? {} : { onClose }),
    ...(now === undefined ? {} : { now }),
  });
}

/**
 * Reads a snapshot file, checking everything before returning: the header;
 * each record (the storage codec's checks, well-formed commands, committed
 * and executed, above the executed prefix, each instance once, ballots and
 * numbers in range); each entry as a backup's (a valid key, each once, an
 * instance's version or a database's versionstamp, a value within the size
 * limit); no more lines of a
 * kind than the header says, and exactly as many; the SHA-256 of the bytes;
 * the state digest. Lines are bounded as they arrive (a record line by
 * {@linkcode MAX_SNAPSHOT_RECORD_LINE_BYTES}, an entry line by
 * `MAX_BACKUP_LINE_BYTES`), so at most one line and the snapshot read so far
 * are held.
 *
 * @throws {SnapshotFormatError} saying what is wrong (with the line number).
 */
export async function readSnapshot(
  stream: ReadableStream<Uint8Array>,
): Promise<ReplicaSnapshot<KvCommand>> {
  const hash = createHash("sha256");
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let header: SnapshotHeader | undefined;
  const records: InstanceRecord<KvCommand>[] = [];
  const instances = new Set<number>();
  const entries: (readonly [string, KvEntry])[] = [];
  const keys = new Set<string>();
  let end: { entries: number; records: number; sha256: string } | undefined;
  const fail = (lineNumber: number, problem: string) =>
    new SnapshotFormatError(`Line ${lineNumber}: ${problem}`);
  const takeLine = (bytes: Uint8Array, lineNumber: number) => {
    if (end !== undefined) throw fail(lineNumber, "data after the end");
    let value: unknown;
    try {
      value = JSON.parse(decoder.decode(bytes));
    } catch (error) {
      throw fail(lineNumber, `not JSON (${(error as Error).message})`);
    }
    if (header === undefined) {
      header = checkHeader(value);
    } else if (isJsonObject(value) && value.end === true) {
      end = checkEnd(value, lineNumber);
      return;
    } else if (isJsonObject(value) && "record" in value) {
      if (entries.length > 0) throw fail(lineNumber, "record after the entries");
      if (records.length >= header.records) {
        throw fail(lineNumber, `more records than the header's ${header.records}`);
      }
      const record = checkRecord(value.record, header.executedPrefix, lineNumber);
      const key = instanceKey(record.owner, record.number);
      if (instances.has(key)) {
        throw fail(lineNumber, `instance ${record.owner}.${record.number} repeated`);
      }
      instances.add(key);
      records.push(record);
    } else {
      if (entries.length >= header.entries) {
        throw fail(lineNumber, `more entries than the header's ${header.entries}`);
      }
      const checked = parseEntryLine(value);
      if (typeof checked === "string") throw fail(lineNumber, checked);
      if (bytes.length > MAX_BACKUP_LINE_BYTES) {
        throw fail(lineNumber, `longer than ${MAX_BACKUP_LINE_BYTES}`);
      }
      if (keys.has(checked.entry[0])) throw fail(lineNumber, "key repeated");
      keys.add(checked.entry[0]);
      entries.push(checked.entry);
    }
    hash.update(bytes);
    hash.update(NEWLINE);
  };
  await forEachLine(stream, {
    // A header line first; record lines while the header says more come;
    // entry lines after them.
    maxLineBytes: (lineNumber) =>
      header === undefined
        ? MAX_HEADER_LINE_BYTES
        : lineNumber <= header.records + 1
        ? MAX_SNAPSHOT_RECORD_LINE_BYTES
        : MAX_BACKUP_LINE_BYTES,
    onLine: takeLine,
    tooLong: (lineNumber, max) => fail(lineNumber, `longer than ${max}`),
  });
  if (header === undefined) throw new SnapshotFormatError("Empty snapshot: no header line");
  if (end === undefined) {
    throw new SnapshotFormatError("No end line: the snapshot is incomplete (truncated?)");
  }
  const sha256 = hash.digest("hex");
  if (end.sha256 !== sha256) {
    throw new SnapshotFormatError(
      `SHA-256 mismatch: the end line says ${end.sha256}, bytes ${sha256}`,
    );
  }
  if (
    end.records !== records.length || header.records !== records.length ||
    end.entries !== entries.length || header.entries !== entries.length
  ) {
    throw new SnapshotFormatError(
      `Count mismatch: header ${header.records} records and ${header.entries} entries, ` +
        `end line ${end.records} and ${end.entries}, file ${records.length} and ${entries.length}`,
    );
  }
  const digest = stateDigestOf(entries);
  if (digest !== header.digest) {
    throw new SnapshotFormatError(
      `State digest mismatch: header ${header.digest}, entries ${digest}`,
    );
  }
  return {
    barrier: header.barrier,
    executedPrefix: header.executedPrefix,
    records,
    entries,
    digest,
    ...(header.configuration === undefined ? {} : { configuration: header.configuration }),
  };
}

const NEWLINE = new Uint8Array([10]);

function checkHeader(value: unknown): SnapshotHeader {
  if (!isJsonObject(value) || value.format !== SNAPSHOT_FORMAT) {
    throw new SnapshotFormatError(`Line 1: not an ${SNAPSHOT_FORMAT} file`);
  }
  if (value.version !== SNAPSHOT_VERSION) {
    throw new SnapshotFormatError(
      `Line 1: snapshot format version ${
        JSON.stringify(value.version)
      }, but this build reads only version ${SNAPSHOT_VERSION}`,
    );
  }
  const { barrier, executedPrefix, digest, entries, records, configuration } = value;
  if (
    typeof barrier !== "string" || barrier.length === 0 || barrier.length > MAX_BARRIER_LENGTH
  ) {
    throw new SnapshotFormatError("Line 1: malformed barrier");
  }
  if (
    !Array.isArray(executedPrefix) || executedPrefix.length === 0 ||
    executedPrefix.length > MAX_REPLICAS || !isDeps(executedPrefix, executedPrefix.length) ||
    executedPrefix.some((number) => number > MAX_INSTANCE_NUMBER)
  ) {
    throw new SnapshotFormatError("Line 1: malformed executedPrefix");
  }
  if (
    typeof digest !== "string" || digest.length > 64 || !isCount(entries) || !isCount(records)
  ) {
    throw new SnapshotFormatError("Line 1: malformed header");
  }
  if (configuration !== undefined) {
    const problem = configurationProblem(configuration);
    if (problem !== undefined) {
      throw new SnapshotFormatError(`Line 1: malformed configuration: ${problem}`);
    }
    const positions = positionCount(configuration as unknown as Configuration);
    if (positions !== executedPrefix.length) {
      throw new SnapshotFormatError(
        `Line 1: the configuration has ${positions} positions for ${executedPrefix.length} rows`,
      );
    }
  }
  return {
    format: SNAPSHOT_FORMAT,
    version: SNAPSHOT_VERSION,
    barrier,
    executedPrefix,
    digest,
    entries,
    records,
    ...(configuration === undefined
      ? {}
      : { configuration: configuration as unknown as Configuration }),
  };
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** A record line's record, checked. */
function checkRecord(
  encoded: unknown,
  executedPrefix: readonly number[],
  lineNumber: number,
): InstanceRecord<KvCommand> {
  const fail = (problem: string) => new SnapshotFormatError(`Line ${lineNumber}: ${problem}`);
  if (typeof encoded !== "string") throw fail("malformed record");
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(encoded);
  } catch {
    throw fail("record is not base64");
  }
  let record: InstanceRecord<KvCommand>;
  try {
    record = decodeRecord(bytes, { isCommand: isKvCommand, replicas: executedPrefix.length });
  } catch (error) {
    throw fail((error as Error).message);
  }
  const id = `${record.owner}.${record.number}`;
  if (record.phase !== Phase.Committed || !record.executed) {
    throw fail(`record ${id} is not committed and executed`);
  }
  if (record.command === undefined || record.deps === undefined) {
    throw fail(`record ${id} has no command or no deps`);
  }
  if (record.number <= executedPrefix[record.owner]!) {
    throw fail(`record ${id} is within the executed prefix`);
  }
  if (
    record.number > MAX_INSTANCE_NUMBER || record.ballot > MAX_BALLOT ||
    record.acceptedBallot > MAX_BALLOT
  ) {
    throw fail(`record ${id} has a number or ballot out of range`);
  }
  for (const payload of [record.command, record.initialCommand]) {
    if (Array.isArray(payload) && payload.length > MAX_BATCH_COMMANDS) {
      throw fail(`record ${id} has more than ${MAX_BATCH_COMMANDS} commands`);
    }
  }
  return record;
}

function checkEnd(value: Record<string, unknown>, lineNumber: number) {
  const { entries, records, sha256 } = value;
  if (
    !isCount(entries) || !isCount(records) || typeof sha256 !== "string" ||
    !/^[0-9a-f]{64}$/.test(sha256)
  ) {
    throw new SnapshotFormatError(`Line ${lineNumber}: malformed end line`);
  }
  return { entries, records, sha256 };
}
