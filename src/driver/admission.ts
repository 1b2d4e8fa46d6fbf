/**
 * Admission: whether a replica takes a client's command now, or refuses it
 * before proposing anything (a 503 the client may retry elsewhere or later).
 * Every bound on what a replica holds for its clients is enforced here.
 *
 * @module
 */

import type { Replica } from "../core/replica.ts";
import { UnavailableError } from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import { hardHeldLimit } from "./options.ts";

/** What admission reads of a driver, at one submission. */
export interface AdmissionState {
  /** The command is a snapshot barrier (admitted even when this replica holds too much). */
  readonly barrier: boolean;
  /** The driver is stopping. */
  readonly stopped: boolean;
  /** Why the replica takes no part any more, if it left the cluster. */
  readonly retired: string | undefined;
  /** It joins and has no snapshot installed yet. */
  readonly joining: boolean;
  /** A snapshot is being installed. */
  readonly installing: boolean;
  /** The core. */
  readonly core: Replica<KvCommand>;
  /** The replica's epoch. */
  readonly epoch: number;
  /** Peers in a later epoch, when the replica waits for a snapshot of it (else `undefined`). */
  readonly aheadPeers: readonly number[] | undefined;
  /** Why the Ready loop stopped, if storage failed. */
  readonly loopError: Error | undefined;
  /** Client commands waiting for their answer. */
  readonly pending: number;
  /** `ReplicaDriverOptions.maxPendingCommands`, or its default. */
  readonly maxPending: number;
  /** `ReplicaDriverOptions.maxHeldCommands`, or its default. */
  readonly maxHeldCommands: number;
  /** Whether a slow quorum is reachable (asked last: it reads the transport). */
  quorumReachable(): boolean;
}

/** Why a command is refused now, or `undefined` if it is admitted. */
export function admissionProblem(state: AdmissionState): UnavailableError | undefined {
  if (state.stopped) return new UnavailableError("The replica is shutting down");
  if (state.retired !== undefined) {
    return new UnavailableError(
      `This replica takes no part in the cluster any more: ${state.retired}; ask another replica`,
    );
  }
  if (state.joining) {
    return new UnavailableError(
      "The replica is joining: it waits for a snapshot of the cluster's state",
      { retryAfterSeconds: 1 },
    );
  }
  const core = state.core;
  if (!core.isVoter) {
    return new UnavailableError(
      "The replica is a learner: it proposes nothing until promoted; ask a voter",
    );
  }
  if (state.installing) {
    return new UnavailableError("The replica is installing a snapshot from a peer", {
      retryAfterSeconds: 1,
    });
  }
  if (state.aheadPeers !== undefined) {
    return new UnavailableError(
      `Replicas ${state.aheadPeers.join(", ")} are in a later epoch than this replica's ` +
        `${state.epoch}; it waits for a snapshot of it`,
      { retryAfterSeconds: 1 },
    );
  }
  const snapshotSources = core.snapshotSources();
  if (snapshotSources.length > 0) {
    // It cannot execute what it missed until the snapshot is installed.
    return new UnavailableError(
      `Peers pruned past this replica (replicas ${
        snapshotSources.join(", ")
      }); it waits for a snapshot`,
      { retryAfterSeconds: 1 },
    );
  }
  if (state.loopError !== undefined) {
    return new UnavailableError(`The replica cannot persist: ${state.loopError.message}`, {
      retryAfterSeconds: 5,
    });
  }
  if (state.pending >= state.maxPending) {
    return new UnavailableError("Too many requests in progress");
  }
  // Peers far behind are pruned past at the bound (retention.ts); above it
  // this replica holds only what is in flight (peers' frontier gossip lags
  // a little) and what it cannot execute or prune yet (more than f peers
  // far behind): the hard limit guards memory against the latter.
  const heldLimit = hardHeldLimit(state.maxHeldCommands);
  if (core.heldCommands >= heldLimit && !state.barrier) {
    const behind = core.executionLag()
      .map((instances, replica) => ({ instances, replica }))
      .filter((entry) => entry.instances > 0)
      .map((entry) => `replica ${entry.replica} (${entry.instances} instances behind)`);
    return new UnavailableError(
      `This replica holds ${core.heldCommands} commands (limit ${heldLimit}) ` +
        (behind.length === 0
          ? "it has not executed yet"
          : `for peers far behind that are not pruned past yet: ${behind.join(", ")}`),
      { retryAfterSeconds: 5 },
    );
  }
  if (!state.quorumReachable()) return new UnavailableError("No quorum of replicas is reachable");
  return undefined;
}
