/**
 * `--restore FILE` of a replica: seeds its empty store from a backup before it
 * starts (`src/storage/deno_kv/restore.ts`), after checking that this is a
 * new cluster, not a live one the replica would rejoin with stale state.
 *
 * @module
 */

import { isKvCommand } from "../kv/commands.ts";
import { type Backup, BackupFormatError, readBackup } from "../kv/backup.ts";
import { RestoreRefusedError, seedDenoKvStore, seedingOf } from "../storage/deno_kv/mod.ts";
import { UsageError } from "./args.ts";

/** Settings of {@linkcode restoreFromBackup}. */
export interface RestoreOptions {
  /** Size of the new cluster. */
  readonly replicas: number;
  /** The other replicas' base URLs, asked whether the cluster has moved on. */
  readonly peerUrls: readonly string[];
  /** How to reach a peer's `/status` (default the global `fetch`; tests swap it). */
  readonly fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

/**
 * Seeds the store at `path` from the backup file `file`, and returns what it
 * did as a log line. A store already seeded from a backup is left as it is,
 * without reading `file` (so a restart with the same command line starts the
 * replica even if the file has moved).
 *
 * @throws {UsageError} if the file is not a complete backup, the data
 *   directory holds another store, or a peer already serves another state
 *   (the cluster has moved on since seeding: a replica seeded now would
 *   rejoin it with the old state).
 */
export async function restoreFromBackup(
  file: string,
  path: string,
  options: RestoreOptions,
): Promise<string> {
  const seeding = await seedingOf(path);
  if (seeding.store && seeding.mark?.complete) {
    return `store already seeded from backup ${
      seeding.mark.sha256.slice(0, 12)
    }; --restore ${file} ignored`;
  }
  let backup: Backup;
  try {
    // The stream closes the file when read to the end or cancelled on an error.
    backup = await readBackup((await Deno.open(file)).readable);
  } catch (error) {
    if (error instanceof BackupFormatError || error instanceof Deno.errors.NotFound) {
      throw new UsageError(`--restore ${file}: ${error.message}`);
    }
    throw error;
  }
  if (!seeding.store) await refuseIfMovedOn(backup, options);
  try {
    await seedDenoKvStore(path, backup, { replicas: options.replicas, isCommand: isKvCommand });
  } catch (error) {
    if (error instanceof RestoreRefusedError) throw new UsageError(error.message);
    throw error;
  }
  return `restored backup ${backup.sha256.slice(0, 12)} of ${backup.header.createdAt} ` +
    `(${backup.header.keys} keys, state digest ${backup.header.stateDigest}) into an empty store`;
}

/**
 * Refuses to seed when a peer that answers already serves a state other than
 * the backup's: its cluster has taken writes since it was seeded, and a
 * replica whose data was lost must not rejoin it from an old backup. Peers
 * that do not answer (a new cluster starting) are no objection.
 */
async function refuseIfMovedOn(backup: Backup, options: RestoreOptions): Promise<void> {
  const fetcher = options.fetch ?? fetch;
  for (const url of options.peerUrls) {
    let digest: unknown;
    try {
      const response = await fetcher(`${url}/status`, { signal: AbortSignal.timeout(2000) });
      if (!response.ok) {
        await response.body?.cancel();
        continue;
      }
      digest = (await response.json())?.stateDigest;
    } catch {
      continue;
    }
    if (typeof digest === "string" && digest !== backup.header.stateDigest) {
      throw new UsageError(
        `--restore refused: ${url} already serves another state (digest ${digest}, the ` +
          `backup's ${backup.header.stateDigest}); the cluster has moved on since it was ` +
          "seeded, and a replica seeded now would rejoin it with the old state. " +
          "--restore seeds only a new cluster, before it takes writes",
      );
    }
  }
}
