/**
 * The settings of a replica driver (`driver.ts`), their defaults, and the
 * limits derived from them.
 *
 * @module
 */

import type { Access } from "../core/conflict.ts";
import type { UnsafeLeaseOptions } from "../core/lease_state.ts";
import type { UnsafeQuorumReadOptions } from "../core/quorum_read.ts";
import type { LeaseReadStall } from "./lease_reads.ts";
import type { Configuration } from "../core/configuration.ts";
import { DEFAULT_TIMING, type TimingOptions } from "../core/replica.ts";
import type { Execution } from "../core/types.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Random } from "../runtime/random.ts";
import type { ReplicaSnapshot, ReplicaStorage } from "../storage/types.ts";
import type { PeerTransport } from "../transport/types.ts";

/** Settings of a replica driver. */
export interface ReplicaDriverOptions {
  /** This replica's id. */
  readonly id: number;
  /** `KvStateMachineOptions.versionTag`: set in a cluster seeded from a backup. */
  readonly versionTag?: string;
  /** Cluster size of epoch 1 (ids `0..replicas-1`), when no `configuration` is given. */
  readonly replicas: number;
  /**
   * The configuration of epoch 1 (the cluster file's), or, with `joining`,
   * the current configuration fetched from a member. Storage's, once it holds
   * one (an epoch installed), wins. Absent: `replicas` voters with ids
   * `0..replicas-1` (the simulator and in-process tests).
   */
  readonly configuration?: Configuration;
  /**
   * This replica starts with empty storage as a member (or a new
   * incarnation) of `configuration`'s epoch (`deno task start --join`): it
   * takes nothing from peers and serves nothing until it installed a
   * snapshot of that epoch from a voter.
   */
  readonly joining?: boolean;
  /** Durable state. */
  readonly storage: ReplicaStorage<KvCommand>;
  /** Peer messages out. */
  readonly transport: PeerTransport<KvCommand>;
  /** Time and timers. */
  readonly clock: Clock;
  /** Randomness (the boot id in request ids). */
  readonly random: Random;
  /**
   * The Unix time, in ms, at which `clock` reads 0: `clock.now()` plus this is
   * the wall-clock time expiry is judged by (`ReplicaDriver.wallClockMs`,
   * ./expiry.ts). The process passes `performance.timeOrigin` (its clock
   * reads `performance.now()`). Default 0: the clock reads Unix time itself
   * (a manual or simulated clock).
   */
  readonly wallClockOriginMs?: number;
  /** Least ms between scans for expired keys (default `EXPIRY_SCAN_INTERVAL_MS`, ./expiry.ts). */
  readonly expiryScanIntervalMs?: number;
  /** Grace per rank before a further voter deletes an expired key, ms (default `EXPIRY_GRACE_MS`). */
  readonly expiryGraceMs?: number;
  /** Milliseconds per core tick (default 5). */
  readonly tickMs?: number;
  /** Core timers in ticks (defaults suit a 5 ms tick on a LAN; round trips scale them up). */
  readonly timing?: Partial<TimingOptions>;
  /** Most commands per instance (default 1000). */
  readonly maxBatchCommands?: number;
  /** Most value bytes per instance (default 512 KiB). */
  readonly maxBatchBytes?: number;
  /** Longest a command waits to be batched, in milliseconds (default 5). */
  readonly batchWindowMs?: number;
  /** Most client commands waiting for their outcome before new ones are refused (default 20,000). */
  readonly maxPendingCommands?: number;
  /**
   * The retention bound (default 1,000,000): most client commands held in
   * memory (and storage) for peers that have not executed them. Executed
   * instances are dropped once every replica executed them, so a replica that
   * is down or far behind makes the others hold what it will need; past this
   * bound they prune past it (`src/core/retention.ts`) and it installs a
   * snapshot when it returns, so writes never wait for an absent replica.
   * Writes are refused only at {@linkcode hardHeldLimit} (twice the bound,
   * and at least 100,000 commands above it): held past the bound are only
   * commands in flight, unless more than `f` peers are far behind or this
   * replica cannot execute.
   */
  readonly maxHeldCommands?: number;
  /**
   * Fetches a snapshot from peer `peer` (`ReplicaDriver.takeSnapshot` there,
   * over the network) for this replica to install when its peers pruned past
   * it. Absent, a replica pruned past stays behind (it logs why).
   */
  readonly fetchSnapshot?: (
    peer: number,
    signal: AbortSignal,
  ) => PromiseLike<ReplicaSnapshot<KvCommand>>;
  /**
   * Longest a snapshot fetch may take, from asking to having it, in
   * milliseconds (default 120,000); then it is abandoned and tried again.
   */
  readonly snapshotFetchTimeoutMs?: number;
  /**
   * Asks peer `peer` for the configuration of its epoch (`GET
   * /admin/configuration` there). A replica asks a peer seen in a later
   * epoch whether that epoch still has it as a member (it may have been
   * removed or replaced while it was away: it then retires), and a member
   * that executed its own removal asks the new configuration's voters
   * whether they run it (`retirement.ts`, `Leaving`). Absent, it learns
   * only from peer batches and snapshots.
   */
  readonly fetchConfiguration?: (peer: number, signal: AbortSignal) => PromiseLike<Configuration>;
  /**
   * Longest a member that executed its own removal keeps answering its old
   * epoch's messages, in milliseconds (default `LEAVING_MAX_MS`, a minute;
   * 0: it stops at once).
   */
  readonly maxLeavingMs?: number;
  /** How long a client waits for its answer, in milliseconds (default 5000). */
  readonly requestTimeoutMs?: number;
  /** A peer counts as reachable if heard from within this many milliseconds (default 3000). */
  readonly contactWindowMs?: number;
  /**
   * A peer leaves the thrifty preference order when a request to it has been
   * unanswered for twice its round trip plus this margin (default 20 ms).
   */
  readonly silenceMarginMs?: number;
  /** Idle peers are probed this often, in milliseconds (default 100). */
  readonly probeIntervalMs?: number;
  /** Receives one line per notable event (default: nothing). */
  readonly log?: (line: string) => void;
  /** Log every message sent and received (debugging). */
  readonly traceMessages?: boolean;
  /**
   * How long executed markers may wait to ride with the next storage commit
   * before they get one of their own, in milliseconds (default 20; 0 writes
   * them at once). They gate no message and answer no client.
   */
  readonly markerDelayMs?: number;
  /**
   * Answer blind writes as soon as their proposal is written here, before
   * any quorum holds them: a broken answer rule (a crash or a recovery can
   * still replace the write by a Nop or order it differently). It exists so
   * that the simulator shows it catches answers given before the decision is
   * durable. Never set it.
   */
  readonly unsafeAnswerBlindWritesBeforeDurable?: boolean;
  /**
   * Keep the core's thrifty peer order and round trips as set (by default, or
   * through `core.setPeerOrder`) instead of following the transport's
   * measurements on every tick (default false). For scripted tests whose
   * transport measures nothing: the scenario scripts choose the order.
   */
  readonly fixedPeerOrder?: boolean;
  /** How long a linearizable read is held for a pending write before it goes through the protocol (ms). */
  readonly leaseReadHoldMs?: number;
  /** For tests only, never in production: breaks a lease rule (`UnsafeLeaseOptions`). */
  readonly unsafeLeases?: UnsafeLeaseOptions;
  /** For tests only, never in production: stalls local reads (`LeaseReadStall`). */
  readonly leaseReadStall?: LeaseReadStall;
  /**
   * Whether a linearizable read that no lease serves goes through a
   * majority of voters (`src/core/quorum_read.ts`) before it is proposed as
   * a command (default true).
   */
  readonly quorumReads?: boolean;
  /** How long a quorum read may take before it is proposed as a command (ms; default 1000). */
  readonly quorumReadTimeoutMs?: number;
  /** For tests only, never in production: breaks the quorum read's rule (`UnsafeQuorumReadOptions`). */
  readonly unsafeQuorumReads?: UnsafeQuorumReadOptions;
  /**
   * Watches what the driver does that its edges cannot see (the scenario tests
   * print it). Storage and transport see their own calls. Absent: nothing is
   * called.
   */
  readonly observer?: ReplicaDriverObserver;
}

/**
 * The driver's actions that happen inside it, for tests that print a
 * transcript. Each is called at the moment of the action, on the driver's
 * stack; it must not call back into the driver.
 */
export interface ReplicaDriverObserver {
  /** Client commands were proposed together as this replica's instance `number`. */
  proposed?(number: number, commands: readonly KvCommand[]): void;
  /** An execution was applied to the key-value state (its Ready's records are durable, its messages sent). */
  executed?(execution: Execution<KvCommand>): void;
  /**
   * A read of `accesses` was served from the key-value state under the
   * quorum leases, right after its state read and lease check.
   */
  localRead?(accesses: readonly Access[]): void;
}

/** Core timers for a 5 ms tick on a LAN; measured round trips stretch the WAN ones. */
export const NODE_TIMING: Partial<TimingOptions> = {
  defaultRoundTripTicks: 10,
  widenRoundTrips: 2,
  widenMarginTicks: 4,
  retransmitTicks: 20,
  maxRetransmitTicks: 400,
  commitRequestTicks: 20,
  recoveryTicks: 100,
  recoveryStaggerTicks: 40,
  orphanTicks: 600,
  recoveryAttemptTicks: 200,
  frontierTicks: 20,
  scanTicks: 4,
  forgetTicks: 2000,
};

/** Default of {@linkcode ReplicaDriverOptions.maxHeldCommands}. */
export const DEFAULT_MAX_HELD_COMMANDS = 1_000_000;

/**
 * Commands held at which writes are refused (see
 * {@linkcode ReplicaDriverOptions.maxHeldCommands}): twice the retention
 * bound, and at least 100,000 above it, so that commands in flight (batches
 * of up to 1000) never reach it.
 */
export function hardHeldLimit(retentionCommands: number): number {
  return Math.max(2 * retentionCommands, retentionCommands + 100_000);
}

/** Most snapshots a replica takes at once (each holds a copy of the state's references). */
export const MAX_SNAPSHOTS_IN_PROGRESS = 2;

/** Default of {@linkcode ReplicaDriverOptions.snapshotFetchTimeoutMs}. */
export const DEFAULT_SNAPSHOT_FETCH_TIMEOUT_MS = 120_000;

/** Callbacks that receive a snapshot taken here ({@linkcode ReplicaDriver.takeSnapshotWith}). */
export interface SnapshotCapture {
  /** Called with the snapshot. */
  resolve(snapshot: ReplicaSnapshot<KvCommand>): void;
  /** Called if none could be taken. */
  reject(error: Error): void;
}
/** The timers a driver gives its core, for `/status`. */
export function nodeTiming(options: Partial<TimingOptions> = {}): TimingOptions {
  return { ...DEFAULT_TIMING, ...NODE_TIMING, ...options };
}
