/**
 * `GET /peer/v1/snapshot`: the state of this replica at a barrier, for a
 * replica that its peers pruned past (it was away longer than they keep
 * instances), streamed as a snapshot file (`src/kv/snapshot_file.ts`);
 * `src/net/snapshot_fetch.ts` is the client. Guarded by the cluster secret
 * as the peer route is.
 *
 * - `GET /peer/v1/snapshot`: takes a snapshot (the source proposes a barrier
 *   command and resolves once it executed here), checks its digest against a
 *   second replica's at the same barrier when it can (a mismatch refuses it:
 *   500, logged), holds it, and streams it from byte 0.
 *   With `?for=ID`, the source keeps what replica `ID` needs after it; with
 *   `?epoch=E` below the source's epoch, the answer is the state the
 *   source's epoch started with, at once (no barrier: see
 *   `ReplicaDriver.takeSnapshotWith`).
 * - `GET /peer/v1/snapshot?barrier=ID&offset=N`: streams the held snapshot
 *   of barrier `ID` from byte `N`, exactly the bytes the first stream had
 *   from there: a receiver whose transfer was cut goes on where it stopped.
 *   410 if that snapshot is no longer held.
 *
 * Every answer carries the barrier (`epaxos-snapshot-barrier`) and the
 * offset it starts at (`epaxos-snapshot-offset`). Refusals are JSON
 * `{"error": ...}`: 400 for bad parameters (or an offset past the end, or a
 * peer protocol version this replica does not take: `peer_protocol.ts`), 401
 * without the cluster secret, 410 for a snapshot no longer held, 429 when
 * {@linkcode MAX_SNAPSHOT_STREAMS} are streaming already, 500 for divergence.
 *
 * Bounds: at most {@linkcode MAX_SNAPSHOT_STREAMS} snapshots being taken or
 * streamed at once; at most {@linkcode MAX_HELD_SNAPSHOTS} held, each dropped
 * {@linkcode SNAPSHOT_HOLD_MS} after its last stream ended (or when a newer
 * one needs its place).
 *
 * @module
 */

import { StreamSlots } from "./stream_slots.ts";
import { type Context, Hono } from "hono";
import { KvError, UnavailableError } from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import { MAX_BARRIER_LENGTH, snapshotStream } from "../kv/snapshot_file.ts";
import { requireBearer } from "../net/bearer.ts";
import { peerProtocolGate, type ProtocolRefusals } from "../transport/peer_protocol.ts";
import {
  SNAPSHOT_BARRIER_HEADER,
  SNAPSHOT_OFFSET_HEADER,
  SNAPSHOT_PATH,
} from "../net/snapshot_fetch.ts";
import type { Clock } from "../runtime/clock.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import { type BackupCheck, StateDivergenceError } from "./backup_route.ts";

// The path and headers are the client's (`snapshot_fetch.ts`), here too for the app.
export { SNAPSHOT_BARRIER_HEADER, SNAPSHOT_OFFSET_HEADER, SNAPSHOT_PATH };

/** Most snapshots being taken or streamed at once (each stream holds its snapshot). */
export const MAX_SNAPSHOT_STREAMS = 2;
/** Most snapshots held for resumption. */
export const MAX_HELD_SNAPSHOTS = 2;
/** A held snapshot is dropped this long after its last stream ended. */
export const SNAPSHOT_HOLD_MS = 60_000;
/**
 * Default rate of a snapshot stream, in MB/s. A replica waiting for a
 * snapshot is out of the cluster until it has it (one failure fewer is
 * tolerated meanwhile), so the rate is near what a receiver takes anyway:
 * checking the file as it arrives (`readSnapshot`) runs at about 20 MB/s, and
 * a 19.8 MB snapshot (100,000 keys of 64 bytes, 2,000 records of 20 puts)
 * moved between two processes on loopback in 1.1 to 1.5 s unlimited, 1.4 to
 * 1.5 s at 16 MB/s and 2.5 s at 8. Producing it costs the source 5 to 10 ms
 * of CPU per MB (90 to 220 ms for that file, whatever the rate): at this
 * rate about a tenth of one core while it lasts, which the limit keeps when a
 * faster receiver would take more. (A backup, which nobody waits on, goes at
 * 4 MB/s: `DEFAULT_BACKUP_RATE_MBPS`.)
 */
export const DEFAULT_SNAPSHOT_RATE_MBPS = 16;

/** What the route needs of the replica. */
export interface SnapshotSource {
  /**
   * Proposes a barrier command and resolves with the state once it executed
   * here ({@linkcode ReplicaSnapshot.barrier} is its request id).
   */
  takeSnapshot(forPeer?: number, peerEpoch?: number): Promise<ReplicaSnapshot<KvCommand>>;
}

/** Settings of {@linkcode snapshotRoute}. */
export interface SnapshotRouteOptions {
  /** The replica that takes snapshots. */
  readonly source: SnapshotSource;
  /** The cluster credential a request must present as its bearer token. */
  readonly secret: string;
  /**
   * Asks other replicas for their digest at barrier `barrier` (as the backup
   * route does) and returns the first answer; absent, snapshots are not
   * checked against a second replica.
   */
  readonly checkElsewhere?: (
    barrier: string,
    forPeer: number | undefined,
  ) => Promise<BackupCheck | undefined>;
  /** Rate of each stream in MB/s (default {@linkcode DEFAULT_SNAPSHOT_RATE_MBPS}; `Infinity`: none). */
  readonly rateMbps?: number;
  /**
   * Receives a line per notable event: a snapshot taken, refused for
   * divergence, or streamed again from a byte past 0 (a receiver resuming).
   */
  readonly log?: (line: string) => void;
  /** Where peer protocol refusals are kept for `/status` (`peer_protocol.ts`). */
  readonly protocolRefusals?: ProtocolRefusals;
  /** Time for dropping held snapshots (default the system's, timers that keep no process alive). */
  readonly clock?: Pick<Clock, "now" | "setTimer">;
}

/** A snapshot held for resumption. */
interface Held {
  readonly snapshot: ReplicaSnapshot<KvCommand>;
  /** The replica whose digest agreed, if one answered. */
  readonly checkedBy: number | undefined;
  /** Streams of it open now. */
  streams: number;
  /** When its last stream ended (or when it was taken). */
  lastReadMs: number;
  /** The file's length, once a stream got to its end. */
  totalBytes: number | undefined;
  /** Drops it, once no stream is open. */
  expiry: { cancel(): void } | undefined;
}

const encoder = new TextEncoder();

const systemClock: Pick<Clock, "now" | "setTimer"> = {
  now: () => performance.now(),
  setTimer(delayMs, callback) {
    const handle = setTimeout(callback, delayMs);
    // A held snapshot must not keep a stopping replica alive.
    Deno.unrefTimer(handle);
    return { cancel: () => clearTimeout(handle) };
  },
};

/** A JSON error answer, in the shape of every other route's. */
function refuse(c: Context, status: 400 | 410 | 429, message: string): Response {
  if (status === 429) c.header("Retry-After", "1");
  return c.json({ error: message }, status);
}

/**
 * The route as a Hono sub-app, to mount at the root (`app.route("/", …)`):
 * it answers {@linkcode SNAPSHOT_PATH} only, and the guard is on that path
 * alone. Errors of the source other than `KvError`s reach the parent app's
 * `onError`.
 *
 * @throws {RangeError} if `rateMbps` is not positive.
 */
export function snapshotRoute(options: SnapshotRouteOptions): Hono {
  const rateMbps = options.rateMbps ?? DEFAULT_SNAPSHOT_RATE_MBPS;
  if (!(rateMbps > 0)) throw new RangeError(`rateMbps must be positive, got ${rateMbps}`);
  const clock = options.clock ?? systemClock;
  const held = new Map<string, Held>();
  const slots = new StreamSlots(MAX_SNAPSHOT_STREAMS);

  const drop = (barrier: string, entry: Held) => {
    entry.expiry?.cancel();
    if (held.get(barrier) === entry) held.delete(barrier);
  };
  const hold = (snapshot: ReplicaSnapshot<KvCommand>, checkedBy: number | undefined): Held => {
    const previous = held.get(snapshot.barrier);
    if (previous !== undefined) drop(snapshot.barrier, previous);
    while (held.size >= MAX_HELD_SNAPSHOTS) {
      // The one read longest ago, preferring one no stream reads now (one
      // always is: streams are bounded below the number held).
      const [barrier, entry] = [...held].sort(([, a], [, b]) =>
        (a.streams - b.streams) || (a.lastReadMs - b.lastReadMs)
      )[0]!;
      drop(barrier, entry);
    }
    const entry: Held = {
      snapshot,
      checkedBy,
      streams: 0,
      lastReadMs: clock.now(),
      totalBytes: undefined,
      expiry: undefined,
    };
    held.set(snapshot.barrier, entry);
    return entry;
  };
  const take = async (forPeer: number | undefined, peerEpoch?: number): Promise<Held> => {
    const snapshot = await options.source.takeSnapshot(forPeer, peerEpoch);
    // Not at the receiver: it executes nothing until it has the snapshot.
    const check = snapshot.unchecked === true
      ? undefined
      : await options.checkElsewhere?.(snapshot.barrier, forPeer);
    if (check?.stateDigest !== undefined && check.stateDigest !== snapshot.digest) {
      const error = new StateDivergenceError(
        `Replica ${check.replica} computed state digest ${check.stateDigest} at barrier ` +
          `${snapshot.barrier}, this replica ${snapshot.digest}: their states diverge; ` +
          "snapshot refused",
      );
      options.log?.(`DIVERGENCE at snapshot barrier ${snapshot.barrier}: ${error.message}`);
      throw error;
    }
    options.log?.(
      `snapshot at barrier ${snapshot.barrier}: ${snapshot.entries.length} keys, ` +
        `${snapshot.records.length} records, digest ${snapshot.digest}, checked by ` +
        (check?.stateDigest === undefined ? "no other replica" : `replica ${check.replica}`),
    );
    return hold(snapshot, check?.stateDigest === undefined ? undefined : check.replica);
  };

  const route = new Hono();
  route.get(
    SNAPSHOT_PATH,
    requireBearer(encoder.encode(options.secret), {
      realm: "epaxos-kv peer",
      refusal: (presented) =>
        presented
          ? "The snapshot route refused this cluster secret"
          : "The snapshot route needs the cluster credential (Authorization: Bearer <secret>)",
    }),
    peerProtocolGate({
      sender: (c) => {
        const forText = c.req.query("for");
        return forText !== undefined && /^\d{1,3}$/.test(forText) ? Number(forText) : undefined;
      },
      ...(options.log === undefined ? {} : { log: options.log }),
      ...(options.protocolRefusals === undefined ? {} : { refusals: options.protocolRefusals }),
    }),
    async (c) => {
      const barrier = c.req.query("barrier");
      const offsetText = c.req.query("offset");
      const forText = c.req.query("for");
      if (forText !== undefined && !/^\d{1,3}$/.test(forText)) {
        return refuse(c, 400, `for must be a replica id, got ${forText.slice(0, 32)}`);
      }
      const epochText = c.req.query("epoch");
      if (epochText !== undefined && !/^[1-9]\d{0,14}$/.test(epochText)) {
        return refuse(c, 400, `epoch must be a positive integer, got ${epochText.slice(0, 32)}`);
      }
      if (
        barrier !== undefined && (barrier.length === 0 || barrier.length > MAX_BARRIER_LENGTH)
      ) {
        return refuse(
          c,
          400,
          `barrier must be a request id of 1 to ${MAX_BARRIER_LENGTH} characters`,
        );
      }
      if (offsetText !== undefined && barrier === undefined) {
        return refuse(c, 400, "offset needs the barrier of the snapshot to resume");
      }
      const offset = offsetText === undefined ? 0 : Number(offsetText);
      if (offsetText !== undefined && !(/^\d{1,15}$/.test(offsetText))) {
        return refuse(c, 400, `offset must be a byte count, got ${offsetText.slice(0, 32)}`);
      }
      let entry: Held | undefined;
      if (barrier !== undefined) {
        entry = held.get(barrier);
        if (entry === undefined) {
          return refuse(
            c,
            410,
            `The snapshot at barrier ${barrier} is no longer held here; ask for a new one`,
          );
        }
        if (entry.totalBytes !== undefined && offset > entry.totalBytes) {
          return refuse(
            c,
            400,
            `offset ${offset} is past the end of the snapshot (${entry.totalBytes} bytes)`,
          );
        }
      }
      const release = slots.take();
      if (release === undefined) {
        return refuse(
          c,
          429,
          `${MAX_SNAPSHOT_STREAMS} snapshots are being streamed from this replica already; ` +
            "try again when one finishes, or ask another replica",
        );
      }
      try {
        entry ??= await take(
          forText === undefined ? undefined : Number(forText),
          epochText === undefined ? undefined : Number(epochText),
        );
      } catch (error) {
        release();
        if (!(error instanceof KvError)) throw error;
        if (error instanceof UnavailableError) {
          c.header("Retry-After", String(error.retryAfterSeconds ?? 1));
        }
        return c.json({ error: error.message }, error.status as 500);
      }
      const reading = entry;
      if (offset > 0) {
        options.log?.(
          `resuming the snapshot at barrier ${reading.snapshot.barrier} from byte ${offset}` +
            (reading.totalBytes === undefined ? "" : ` of ${reading.totalBytes}`),
        );
      }
      reading.streams++;
      reading.expiry?.cancel();
      reading.expiry = undefined;
      const body = snapshotStream(reading.snapshot, {
        rateMbps,
        fromOffset: offset,
        onClose: (totalBytes) => {
          release();
          reading.streams--;
          reading.lastReadMs = clock.now();
          if (totalBytes !== undefined) reading.totalBytes = totalBytes;
          if (reading.streams === 0 && held.get(reading.snapshot.barrier) === reading) {
            reading.expiry = clock.setTimer(
              SNAPSHOT_HOLD_MS,
              () => drop(reading.snapshot.barrier, reading),
            );
          }
        },
      });
      c.header("Content-Type", "application/x-ndjson");
      c.header(SNAPSHOT_BARRIER_HEADER, reading.snapshot.barrier);
      c.header(SNAPSHOT_OFFSET_HEADER, String(offset));
      c.header("epaxos-snapshot-digest", reading.snapshot.digest);
      c.header(
        "epaxos-snapshot-checked-by",
        reading.checkedBy === undefined ? "none" : String(reading.checkedBy),
      );
      return c.body(body);
    },
  );
  return route;
}
