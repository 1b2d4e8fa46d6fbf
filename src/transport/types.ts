/**
 * The peer transport interface. Two implementations pass one contract suite
 * (`tests/transport/contract.ts`): HTTP between processes, and in-memory.
 *
 * @module
 */

import type { Message } from "../core/types.ts";
import type { PeerBatch } from "./codec.ts";

/** What a transport knows about one peer. */
export interface PeerStats {
  /** Peer replica id. */
  readonly peer: number;
  /** Where it is reached, if over a network. */
  readonly url?: string;
  /** Smoothed round trip, in milliseconds, once measured. */
  readonly roundTripMs: number | undefined;
  /** Clock reading of the last successful exchange with the peer. */
  readonly lastContactMs: number | undefined;
  /** Clock reading at which the oldest request still unanswered was sent, if any. */
  readonly oldestOutstandingMs: number | undefined;
  /** Messages waiting to be sent. */
  readonly queued: number;
  /** Batches delivered. */
  readonly sentBatches: number;
  /** Messages delivered. */
  readonly sentMessages: number;
  /** Batch attempts that failed. */
  readonly failedBatches: number;
  /** Messages given up on (queue full, or retries exhausted). */
  readonly droppedMessages: number;
  /**
   * Why the peer refuses this replica's peer protocol version (naming both),
   * while it does (`peer_protocol.ts`); absent otherwise.
   */
  readonly protocolRefusal?: string;
}

/**
 * Stats of a peer that nothing measures (the in-process transports of the
 * simulator, the scenario tests and `bench:core`): no round trip, nothing
 * outstanding or counted, last heard from at `lastContactMs`.
 */
export function unmeasuredPeerStats(peer: number, lastContactMs: number | undefined): PeerStats {
  return {
    peer,
    roundTripMs: undefined,
    lastContactMs,
    oldestOutstandingMs: undefined,
    queued: 0,
    sentBatches: 0,
    sentMessages: 0,
    failedBatches: 0,
    droppedMessages: 0,
  };
}

/** A new epoch's peers, for {@linkcode PeerTransport.reconfigure}. */
export interface PeerMembership {
  /** The epoch every batch carries from now on. */
  readonly epoch: number;
  /** This replica's incarnation in it, carried by every batch. */
  readonly incarnation: number;
  /** Every member, by id (its position in the core), with its base URL. */
  readonly peers: readonly { readonly id: number; readonly url: string }[];
}

/** Sends the core's messages to peers, batched per peer. */
export interface PeerTransport<C> {
  /**
   * Queues `messages` for their receivers; never blocks. Every message queued
   * for one peer in one call leaves in one batch when the link is free.
   */
  send(messages: readonly Message<C>[]): void;
  /** What the transport knows about each peer. */
  stats(): PeerStats[];
  /**
   * Sends `peer` an empty batch if nothing is queued or in flight to it: measures
   * the round trip and shows whether it answers while idle. Optional.
   */
  probe?(peer: number): void;
  /**
   * Takes a new epoch's membership (batches carry its epoch and this
   * replica's incarnation; links follow its members). Optional: a transport
   * without it serves epoch 1 only.
   */
  reconfigure?(membership: PeerMembership): void;
  /**
   * Calls `listener` whenever a peer refuses a batch of this replica's
   * because the peer is in a later epoch ({@linkcode BatchRefusal}): `epoch`
   * is the peer's. The last listener given wins. Optional: without it a
   * replica learns of a later epoch only from batches of it.
   */
  onEpochRefusal?(listener: (peer: number, epoch: number) => void): void;
  /** Stops sending; pending messages are dropped. */
  close(): Promise<void>;
}

/**
 * A receiver's answer to a batch sent from an earlier epoch than its own:
 * its epoch. The sender missed a configuration change (it was down, or cut
 * off): it learns from this that peers moved on, even when no member sends
 * it anything any more (a member removed while it was down).
 */
export interface BatchRefusal {
  /** The receiver's epoch, later than the batch's. */
  readonly epoch: number;
}

/**
 * Receives batches from peers (the HTTP route, or the in-memory network);
 * returns a {@linkcode BatchRefusal} for a batch of an earlier epoch than the
 * receiver's, which goes back to the sender (`PeerTransport.onEpochRefusal`).
 */
export type BatchHandler<C> = (batch: PeerBatch<C>) => BatchRefusal | void;
