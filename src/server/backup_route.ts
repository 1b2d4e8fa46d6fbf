/**
 * `GET /admin/backup`: a consistent backup of the whole key-value state from a
 * live cluster, streamed as a backup file (`src/kv/backup.ts`). The replica
 * proposes a backup command, which EPaxos* orders with every write, and
 * streams the state that command read, once a second replica's digest at
 * the same command agrees; writes go on meanwhile. The admin
 * route mounts it behind the cluster secret. `?rate=MBPS` sets the stream's
 * rate (default {@linkcode DEFAULT_BACKUP_RATE_MBPS} MB/s).
 *
 * @module
 */

import { StreamSlots } from "./stream_slots.ts";
import { Hono } from "hono";
import { backupStream } from "../kv/backup.ts";
import type { KvResult } from "../kv/state_machine.ts";
import { ClientRequestError, KvError } from "../errors.ts";

/** Most backups one replica streams at once: each holds the state it read until it is sent. */
export const MAX_CONCURRENT_BACKUPS = 2;

/**
 * Default rate of a backup stream, in MB/s (`?rate=` changes it, from 1 to
 * {@linkcode MAX_BACKUP_RATE_MBPS}). Streaming costs the replica CPU in
 * proportion to the rate (JSON, base64, SHA-256): at this rate a backup of
 * 100,000 keys (14 MB) takes four seconds and a busy 2-core cluster keeps about
 * 71 % of its write throughput meanwhile; unlimited, 1.2 s and about 64 %
 * (`deno task bench:backup`, medians of 3 runs).
 */
export const DEFAULT_BACKUP_RATE_MBPS = 4;
/** Highest `?rate=` accepted, in MB/s. */
export const MAX_BACKUP_RATE_MBPS = 1000;

/** What the backup route needs of the replica. */
export interface BackupSource {
  /** Proposes a command; returns its request id (`ReplicaDriver.submitWith`). */
  submitWith(
    input: { readonly op: "backup" },
    answer: { resolve(result: KvResult): void; reject(error: Error): void },
  ): string;
  /** The time to stamp a backup with, in milliseconds since the epoch. */
  readonly wallClockMs?: () => number;
}

/** Another replica's digest of the state at the same backup command. */
export interface BackupCheck {
  /** The replica asked. */
  readonly replica: number;
  /** Its digest, or `undefined` if it did not answer in time. */
  readonly stateDigest: string | undefined;
}

/** Settings of {@linkcode backupRoute}. */
export interface BackupRouteOptions {
  /** The replica that takes backups. */
  readonly source: BackupSource;
  /**
   * Asks other replicas, one after another, for their digest at backup
   * command `request` (`GET /admin/backup/digest`), and returns the first
   * answer; absent, backups are not checked against a second replica.
   */
  readonly checkElsewhere?: (request: string) => Promise<BackupCheck | undefined>;
  /** Receives a line when a backup is refused for divergence. */
  readonly log?: (line: string) => void;
}

/** Two replicas computed different states at the same point of the execution order. */
export class StateDivergenceError extends KvError {
  /** Creates the error. */
  constructor(message: string) {
    super(message, 500);
    this.name = "StateDivergenceError";
  }
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

/** Proposes a backup command and resolves with its request id and result. */
function takeBackup(source: BackupSource): Promise<{ request: string; result: KvResult }> {
  return new Promise((resolve, reject) => {
    let request = "";
    request = source.submitWith({ op: "backup" }, {
      resolve: (result) => resolve({ request, result }),
      reject,
    });
  });
}

/**
 * The route, to mount at `/admin/backup` behind the cluster secret. Before
 * streaming, the state read is checked against a second replica's digest at
 * the same backup command (execution is deterministic, so they are equal
 * unless the replicas diverged); a mismatch refuses the backup (500).
 */
export function backupRoute(options: BackupRouteOptions): Hono {
  const { source } = options;
  const route = new Hono();
  const slots = new StreamSlots(MAX_CONCURRENT_BACKUPS);
  route.get("/", async (c) => {
    const rateText = c.req.query("rate");
    const rate = rateText === undefined ? DEFAULT_BACKUP_RATE_MBPS : Number(rateText);
    if (!Number.isFinite(rate) || rate < 1 || rate > MAX_BACKUP_RATE_MBPS) {
      throw new ClientRequestError(
        `rate must be a number of MB/s from 1 to ${MAX_BACKUP_RATE_MBPS}, got ${rateText}`,
        400,
      );
    }
    const release = slots.take();
    if (release === undefined) throw new BackupBusyError();
    try {
      const { request, result } = await takeBackup(source);
      if (result.op !== "backup") throw new Error(`A backup command answered ${result.op}`);
      const check = await options.checkElsewhere?.(request);
      if (check?.stateDigest !== undefined && check.stateDigest !== result.digest) {
        const error = new StateDivergenceError(
          `Replica ${check.replica} computed state digest ${check.stateDigest} at this backup, ` +
            `this replica ${result.digest}: their states diverge; backup refused`,
        );
        // An operator must hear of this even if nobody reads the answer.
        options.log?.(`DIVERGENCE at backup command ${request}: ${error.message}`);
        throw error;
      }
      const createdAt = new Date(source.wallClockMs?.() ?? Date.now());
      const body = backupStream(result.entries, {
        stateDigest: result.digest,
        createdAt,
        onClose: release,
        bytesPerSecond: rate * 1e6,
        checkedBy: check?.stateDigest === undefined ? null : check.replica,
      });
      c.header("Content-Type", "application/x-ndjson");
      c.header("Content-Disposition", 'attachment; filename="epaxos-kv-backup.jsonl"');
      c.header("Backup-Keys", String(result.entries.length));
      c.header("Backup-State-Digest", result.digest);
      c.header("Backup-Created-At", createdAt.toISOString());
      c.header(
        "Backup-Checked-By",
        check?.stateDigest === undefined ? "none" : String(check.replica),
      );
      return c.body(body);
    } catch (error) {
      release();
      throw error;
    }
  });
  return route;
}
