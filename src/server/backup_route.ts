/**
 * `GET /admin/backup`: a consistent backup of the whole key-value state from a
 * live cluster, streamed as a backup file (`src/kv/backup.ts`). The replica
 * proposes a backup command, which EPaxos* orders with every write, and
 * streams the state that command read; writes go on meanwhile. The admin
 * route mounts it behind the cluster secret. `?rate=MBPS` sets the stream's
 * rate (default {@linkcode DEFAULT_BACKUP_RATE_MBPS} MB/s).
 *
 * @module
 */

import { Hono } from "hono";
import { backupStream } from "../kv/backup.ts";
import type { KvResult } from "../kv/state_machine.ts";
import { ClientRequestError, KvError } from "../errors.ts";

/** Most backups one replica streams at once: each holds the state it read until it is sent. */
export const MAX_CONCURRENT_BACKUPS = 2;

/**
 * Default rate of a backup stream, in MB/s (`?rate=` changes it, from 1 to
 * {@linkcode MAX_BACKUP_RATE_MBPS}). Streaming costs the replica CPU in
 * proportion to the rate (JSON, base64, SHA-256): unlimited, a backup of
 * 100,000 keys (14 MB) took a second and cut a busy 2-core cluster's write
 * throughput to 35-39 % meanwhile (`deno task bench:backup`); at this rate it
 * takes about four seconds and leaves most of the throughput.
 */
export const DEFAULT_BACKUP_RATE_MBPS = 4;
/** Highest `?rate=` accepted, in MB/s. */
export const MAX_BACKUP_RATE_MBPS = 1000;

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
    const rateText = c.req.query("rate");
    const rate = rateText === undefined ? DEFAULT_BACKUP_RATE_MBPS : Number(rateText);
    if (!Number.isFinite(rate) || rate < 1 || rate > MAX_BACKUP_RATE_MBPS) {
      throw new ClientRequestError(
        `rate must be a number of MB/s from 1 to ${MAX_BACKUP_RATE_MBPS}, got ${rateText}`,
        400,
      );
    }
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
        bytesPerSecond: rate * 1e6,
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
