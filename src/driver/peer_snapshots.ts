/**
 * The state a replica gives a peer that asks for a snapshot (peers pruned
 * past it, or it is behind an epoch, or it joins): the state at a barrier
 * command taken for it (`snapshot_captures.ts`), or, to a peer behind this
 * replica's epoch, the state this epoch started with, at once.
 *
 * @module
 */

import type { Replica } from "../core/replica.ts";
import { UnavailableError } from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import type { SnapshotCapture } from "./options.ts";
import type { SnapshotCaptures } from "./snapshot_captures.ts";
import type { Answer } from "./waiters.ts";

/** What {@linkcode takeSnapshotFor} needs of its driver. */
export interface SnapshotSource {
  /** The snapshots being taken at barriers here. */
  readonly captures: SnapshotCaptures;
  /** This replica's epoch. */
  readonly epoch: number;
  /** The core now (it keeps what the peer will need after installing the snapshot). */
  core(): Replica<KvCommand>;
  /** The state this replica's epoch started with, if kept. */
  base(): ReplicaSnapshot<KvCommand> | undefined;
  /**
   * The state now, between Readies, or `undefined` when this replica has no
   * state of its epoch to give (joining, catching up, itself behind, or
   * retired).
   */
  stateNow(): ReplicaSnapshot<KvCommand> | undefined;
  /** Proposes a barrier command answered to `answer`; returns its request id. */
  proposeBarrier(answer: Answer): string;
}

/** Settings of {@linkcode takeSnapshotFor}. */
export interface SnapshotRequest {
  /** The peer that asks: this replica then keeps what it will need after installing it. */
  readonly forPeer?: number;
  /** The peer's epoch, when it said. */
  readonly peerEpoch?: number;
}

/**
 * Takes a snapshot for a peer (`ReplicaDriver.takeSnapshotWith`), answered
 * to `answer` (possibly before this returns). With `forPeer`, `source` then
 * keeps what that peer will need after installing it
 * (`Replica.holdForSnapshot`), so it catches up from here instead of being
 * pruned past again while the snapshot travels.
 */
export function takeSnapshotFor(
  source: SnapshotSource,
  answer: SnapshotCapture,
  request: SnapshotRequest = {},
): void {
  const { forPeer, peerEpoch } = request;
  if (peerEpoch !== undefined && peerEpoch < source.epoch) {
    // A peer behind this replica's epoch gets the state this epoch started
    // with (or, see below, the state now), without a barrier: a barrier needs a quorum of this epoch, and
    // the peer may be what that quorum lacks (peers in the old epoch can
    // no longer finish it there: those that moved on take none of its
    // batches). It then catches up in this epoch by commits, from the start.
    // After a restart (the base is not kept), the state now: between
    // Readies it holds whole components only, the instances applied are
    // closed under dependencies, so the peer can go on from it.
    // Not from a replica that has no whole state of its epoch to give
    // (joining, installing, or pruned past in it): it answers as
    // unavailable, and the peer asks another. A replica itself behind a
    // later epoch, or fetching a snapshot of one, still has its epoch's
    // state whole, and gives it: the peer may be the vote it needs to
    // finish its epoch when no replica of the later one is left to give
    // that (the simulator's seed 301, n = 3, with membership changes).
    const base = source.base() ?? source.stateNow();
    if (base === undefined) {
      answer.reject(
        new UnavailableError("This replica has no state of its epoch to give yet", {
          retryAfterSeconds: 1,
        }),
      );
      return;
    }
    if (forPeer !== undefined) source.core().holdForSnapshot(forPeer, base.executedPrefix);
    answer.resolve(base);
    return;
  }
  const kept: SnapshotCapture = forPeer === undefined ? answer : {
    // Keep what the peer will need after installing it, here.
    resolve: (snapshot) => {
      source.core().holdForSnapshot(forPeer, snapshot.executedPrefix);
      answer.resolve(snapshot);
    },
    reject: answer.reject,
  };
  source.captures.take(kept, (barrier) => source.proposeBarrier(barrier));
}
