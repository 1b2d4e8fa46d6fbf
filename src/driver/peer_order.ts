/**
 * Which peers a driver counts as reachable, and the order in which its core
 * asks them (SOSP'13 §4.4: thrifty quorums pick the closest live replicas),
 * from what the transport measures of each.
 *
 * @module
 */

import type { Replica } from "../core/replica.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { PeerStats, PeerTransport } from "../transport/types.ts";
import type { ReplicaDriverOptions } from "./options.ts";

/** Settings of {@linkcode reachableVoters}. */
export interface ReachableOptions {
  /** This replica (never counted). */
  readonly self: number;
  /** The voters of its epoch: only they make quorums. */
  readonly voters: readonly number[];
  /** The clock reading now. */
  readonly now: number;
  /** A peer counts if heard from within this many milliseconds. */
  readonly windowMs: number;
}

/** How many voters other than this replica were heard from within the contact window. */
export function reachableVoters(peers: readonly PeerStats[], options: ReachableOptions): number {
  const { self, voters, now, windowMs } = options;
  return peers.filter((peer) =>
    peer.peer !== self && voters.includes(peer.peer) &&
    peer.lastContactMs !== undefined && now - peer.lastContactMs <= windowMs
  ).length;
}

/** Settings of {@linkcode updatePeerOrder}. */
export interface PeerOrderOptions {
  /** The clock reading now. */
  readonly now: number;
  /** Milliseconds per core tick. */
  readonly tickMs: number;
  /** The driver's settings (contact window, silence margin, probe interval, fixed order). */
  readonly options: ReplicaDriverOptions;
  /**
   * Whether to probe idle peers. A joiner probes nobody: its batches carry an
   * epoch it has no state of yet, and a peer behind would take it for a
   * source of that state.
   */
  readonly probe: boolean;
}

/**
 * Feeds `core` the closest responsive peers first, and round trips in ticks.
 * A peer that leaves a request unanswered for twice its round trip plus a
 * margin drops to the back at once, and comes back when it answers. Idle
 * peers are probed, so that their round trip and liveness stay known.
 */
export function updatePeerOrder(
  core: Replica<KvCommand>,
  transport: PeerTransport<KvCommand>,
  settings: PeerOrderOptions,
): void {
  const { now, tickMs, options } = settings;
  const window = options.contactWindowMs ?? 3000;
  const margin = options.silenceMarginMs ?? 20;
  const peers = transport.stats();
  const live = (peer: PeerStats) => {
    if (peer.lastContactMs === undefined || now - peer.lastContactMs > window) return false;
    if (peer.oldestOutstandingMs === undefined) return true;
    const patience = 2 * (peer.roundTripMs ?? tickMs * 10) + margin;
    return now - peer.oldestOutstandingMs <= patience;
  };
  const probeInterval = options.probeIntervalMs ?? 100;
  if (transport.probe !== undefined && settings.probe) {
    for (const peer of peers) {
      const idle = peer.lastContactMs === undefined || now - peer.lastContactMs >= probeInterval;
      if (idle && peer.oldestOutstandingMs === undefined && peer.queued === 0) {
        transport.probe(peer.peer);
      }
    }
  }
  if (options.fixedPeerOrder) return;
  const order = [...peers].sort((a, b) => {
    if (live(a) !== live(b)) return live(a) ? -1 : 1;
    return (a.roundTripMs ?? Number.POSITIVE_INFINITY) -
        (b.roundTripMs ?? Number.POSITIVE_INFINITY) ||
      a.peer - b.peer;
  });
  core.setPeerOrder(order.map((peer) => peer.peer));
  for (const peer of peers) {
    if (peer.roundTripMs !== undefined) core.setRoundTrip(peer.peer, peer.roundTripMs / tickMs);
  }
}
