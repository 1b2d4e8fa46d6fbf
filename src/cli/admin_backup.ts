/**
 * `deno task admin --server URL backup --out FILE`: fetches a consistent
 * backup of the whole key-value state from a live replica (`GET
 * /admin/backup`), checks it completely while it streams in, and only then
 * puts it at `FILE` (written beside it first, then renamed, so that `FILE` is
 * either absent, an older file, or this complete backup).
 *
 * @module
 */

import { BackupFormatError, readBackup } from "../kv/backup.ts";
import { KvError } from "../errors.ts";
import { adminRequest } from "./admin_request.ts";

/** What a finished backup prints, as JSON. */
export interface BackupSummary {
  /** Where the backup is. */
  readonly file: string;
  /** Entries in it. */
  readonly keys: number;
  /** Bytes of file. */
  readonly bytes: number;
  /** Its SHA-256 (hex), as its last line names it. */
  readonly sha256: string;
  /** The state machine's digest of the state, as `/status` shows it. */
  readonly stateDigest: string;
  /** When the replica took it. */
  readonly createdAt: string;
  /** The highest instance number its versions name. */
  readonly floor: number;
  /** The replica whose own digest at the same point agreed, or null if none answered. */
  readonly checkedBy: number | null;
}

/** Settings for {@linkcode fetchBackup}. */
export interface FetchBackupOptions {
  /** The cluster secret, sent as a bearer token. */
  readonly secret: string;
  /** Gives up on a backup that takes longer, in milliseconds (default an hour). */
  readonly timeoutMs?: number;
  /** The rate the replica streams at, in MB/s (default: the replica's, 4). */
  readonly rateMBps?: number;
}

/**
 * Fetches a backup from `server` into `out`.
 *
 * @throws {KvError} with the replica's status and message if it refused,
 *   `AdminUnreachableError` (`admin_request.ts`) if it could not be reached, or a
 *   {@linkcode BackupFormatError} if the answer is not a complete backup.
 */
export async function fetchBackup(
  server: string,
  out: string,
  options: FetchBackupOptions,
): Promise<BackupSummary> {
  const response = await adminRequest(
    server,
    `/backup${options.rateMBps === undefined ? "" : `?rate=${options.rateMBps}`}`,
    { secret: options.secret, timeoutMs: options.timeoutMs ?? 3_600_000 },
  );
  if (response.body === null) throw new BackupFormatError(`${server} answered an empty body`);
  const partial = `${out}.partial`;
  const [toFile, toCheck] = response.body.tee();
  const file = await Deno.open(partial, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    const [, backup] = await Promise.all([toFile.pipeTo(file.writable), readBackup(toCheck)]);
    const { size } = await Deno.stat(partial);
    await Deno.rename(partial, out);
    return {
      file: out,
      keys: backup.header.keys,
      bytes: size,
      sha256: backup.sha256,
      stateDigest: backup.header.stateDigest,
      createdAt: backup.header.createdAt,
      floor: backup.header.floor,
      checkedBy: backup.header.checkedBy,
    };
  } catch (error) {
    await Deno.remove(partial).catch(() => {});
    if (error instanceof KvError) throw error;
    throw new BackupFormatError(
      `The backup from ${server} is not complete: ${(error as Error).message}`,
    );
  }
}
