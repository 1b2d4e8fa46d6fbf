/**
 * Seeding an empty store from a backup (`deno task start --restore FILE`),
 * so that a new cluster starts from the backed-up state.
 *
 * Every replica of the new cluster is seeded from the same file and so holds
 * the same state and the same prune floor: every row is pruned up to the
 * highest instance number any backed-up version names. The new cluster tags
 * its versions with the backup (`versionTagOf`, applied by the replica that
 * reads the mark), so a new write's version can never equal one the old
 * cluster gave, before or after the backup, and a compare-and-set holding a
 * version from before the backup matches only the entry it named.
 *
 * Seeding is marked in the file (`["meta", "restore"]`, see `keys.ts`) before
 * anything else is written and completed last; a store whose seeding did not
 * finish is refused by every open, and seeding from the same backup starts it
 * over. Seeding again from the backup the store already came from does nothing.
 *
 * @module
 */

import type { Backup } from "../../kv/backup.ts";
import { KvError } from "../../errors.ts";
import {
  FORMAT_KEY,
  FORMAT_VERSION,
  readRestoreMark,
  RESTORE_KEY,
  type RestoreMark,
} from "./keys.ts";
import { openDenoKvStorage } from "./storage.ts";

/** A restore refused because the data directory holds another store. */
export class RestoreRefusedError extends KvError {
  /** Creates the error. */
  constructor(message: string) {
    super(message, 409);
    this.name = "RestoreRefusedError";
  }
}

/** What {@linkcode seedDenoKvStore} did. */
export type SeedOutcome = "seeded" | "already-seeded";

/** Settings for {@linkcode seedDenoKvStore}. */
export interface SeedOptions<C> {
  /** Size of the new cluster: the prune floor has a row per replica. */
  readonly replicas: number;
  /** As for `openDenoKvStorage`. */
  readonly isCommand: (value: unknown) => value is C;
}

/**
 * Seeds the store at `path` from `backup`, unless it was seeded from it
 * already.
 *
 * @throws {RestoreRefusedError} if `path` holds another store.
 */
export async function seedDenoKvStore<C>(
  path: string,
  backup: Backup,
  options: SeedOptions<C>,
): Promise<SeedOutcome> {
  const seeding = await seedingOf(path);
  if (seeding.store) {
    const mark = seeding.mark;
    if (mark?.sha256 !== backup.sha256) {
      throw new RestoreRefusedError(
        `${path} already holds a store${
          mark === undefined ? "" : ` seeded from another backup (${mark.sha256.slice(0, 12)})`
        }; --restore seeds only an empty data directory`,
      );
    }
    if (mark.complete) return "already-seeded";
    // The same backup, interrupted: nothing else is in the file; start over.
    await removeStore(path);
  }
  const kv = await Deno.openKv(path);
  try {
    // The mark goes in with the format version, before any state.
    await kv.atomic()
      .set(FORMAT_KEY, FORMAT_VERSION)
      .set(RESTORE_KEY, [backup.sha256, false])
      .commit();
  } finally {
    kv.close();
  }
  const storage = await openDenoKvStorage(path, { ...options, seeding: true });
  try {
    const floor = new Array<number>(options.replicas).fill(backup.header.floor);
    await storage.commit({
      records: [{ kind: "floor", pruneFloor: floor }],
      effects: new Map(),
      snapshot: backup.entries,
    });
    // A snapshot is written a slice per commit: commit until it is switched
    // to. Each commit writes at least one page, so this many always suffice.
    const bound = backup.entries.length + 2;
    for (let commits = 0; storage.snapshotsWritten === 0; commits++) {
      if (commits > bound) throw new Error("Seeding did not finish writing its snapshot");
      await storage.commit({ records: [], effects: new Map() });
    }
  } finally {
    storage.close();
  }
  const done = await Deno.openKv(path);
  try {
    await done.set(RESTORE_KEY, [backup.sha256, true]);
  } finally {
    done.close();
  }
  return "seeded";
}

/**
 * Whether a store exists at `path` and, if it was seeded from a backup, its
 * mark (which backup, and whether seeding finished): read without opening the
 * store as replica storage.
 */
export async function seedingOf(
  path: string,
): Promise<{ readonly store: false } | { readonly store: true; readonly mark?: RestoreMark }> {
  if (!(await exists(path))) return { store: false };
  const kv = await Deno.openKv(path);
  try {
    const mark = await readRestoreMark(kv);
    return mark === undefined ? { store: true } : { store: true, mark };
  } finally {
    kv.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function removeStore(path: string): Promise<void> {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      await Deno.remove(file);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}
