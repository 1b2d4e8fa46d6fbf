/**
 * `GET /admin/backup`: a consistent backup of the whole key-value state from a
 * live cluster, streamed as a backup file (`src/kv/backup.ts`). The replica
 * proposes a backup command, which EPaxos* orders with every write, and
 * streams the state that command read; writes go on meanwhile. The admin
 * route mounts it behind the cluster secret.
 *
 * @module
 */

import { Hono } from "hono";
import { backupStream } from "../kv/backup.ts";
import type { KvResult } from "../kv/state_machine.ts";
import { KvError } from "../errors.ts";

/** Most backups one replica streams at once: each holds the state it read until it is sent. */
export const MAX_CONCURRENT_BACKUPS = 2;

/** What the backup route needs of the replica. */
export interface BackupSource {
  /** Proposes a command and answers its result (`ReplicaDriver.submit`). */
  submit(input: { readonly op: "backup" }): Promise<KvResult>;
  /** The time to stamp a backup with, in milliseconds since the epoch. */
  readonly wallClockMs?: () => number;
}

/** Too many backups are being streamed from this replica already. */
export class BackupBusyError extends KvError {
  /** Creates the error. */
  constructor() {
    super(
      `${MAX_CONCURRENT_BACKUPS} backups are being streamed from this replica already; ` +
        "try again when one finishes, or ask another replica",
      429,
    );
    this.name = "BackupBusyError";
  }
}

/** The route, to mount at `/admin/backup` behind the cluster secret. */
export function backupRoute(source: BackupSource): Hono {
  const route = new Hono();
  let streaming = 0;
  route.get("/", async (c) => {
    if (streaming >= MAX_CONCURRENT_BACKUPS) throw new BackupBusyError();
    streaming++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      streaming--;
    };
    try {
      const result = await source.submit({ op: "backup" });
      if (result.op !== "backup") throw new Error(`A backup command answered ${result.op}`);
      const createdAt = new Date(source.wallClockMs?.() ?? Date.now());
      const body = backupStream(result.entries, {
        stateDigest: result.digest,
        createdAt,
        onClose: release,
      });
      c.header("Content-Type", "application/x-ndjson");
      c.header("Content-Disposition", 'attachment; filename="epaxos-kv-backup.jsonl"');
      c.header("Backup-Keys", String(result.entries.length));
      c.header("Backup-State-Digest", result.digest);
      c.header("Backup-Created-At", createdAt.toISOString());
      return c.body(body);
    } catch (error) {
      release();
      throw error;
    }
  });
  return route;
}
