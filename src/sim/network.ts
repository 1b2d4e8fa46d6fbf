/**
 * The simulator's network: each replica's transport encodes its batches with
 * the real codec, and the network delivers the bytes on virtual time, with the
 * faults of the safety phase (drop, duplication, reordering by extra delay,
 * partitions), and decodes them at the receiver, so codec and aliasing bugs
 * show in simulation as they would between processes (etcd raft's test
 * network round-trips its messages the same way).
 *
 * @module
 */

import type { Message } from "../core/types.ts";
import { isKvCommand, type KvCommand } from "../kv/commands.ts";
import type { Random } from "../runtime/random.ts";
import { BatchError, decodeBatch, encodeBatch, type PeerBatch } from "../transport/codec.ts";
import { type PeerStats, type PeerTransport, unmeasuredPeerStats } from "../transport/types.ts";
import type { FaultRates } from "./config.ts";
import type { EventQueue } from "./event_queue.ts";

/** What the network needs from the simulation around it. */
export interface SimNetworkOptions {
  /**
   * Replica slots: every member id a run may ever use is below it (members
   * are added and removed over a run; a slot nobody booted takes nothing).
   */
  readonly slots: number;
  /** The event queue deliveries are scheduled on. */
  readonly queue: EventQueue;
  /** Virtual time now. */
  readonly now: () => number;
  /** Draws for delays and faults. */
  readonly random: Random;
  /** Smallest one-way delay. */
  readonly minDelayMs: number;
  /** Largest one-way delay before reordering. */
  readonly maxDelayMs: number;
  /** The faults in force now (`undefined`: none). */
  readonly faults: () => FaultRates | undefined;
  /**
   * Hands a batch to replica `to`, if it can take it now; returns whether it
   * was taken (a replica that is down takes nothing; a paused one buffers).
   */
  readonly deliver: (to: number, batch: PeerBatch<KvCommand>) => boolean;
  /** Whether replica `id` answers right now (up and not paused). */
  readonly answers: (id: number) => boolean;
  /**
   * The epoch and positions replica `id` decodes batches by now (as the HTTP
   * route asks its replica on each request), and whether it left the
   * cluster; `undefined` if it is down.
   */
  readonly receiver: (id: number) => Receiver | undefined;
  /**
   * What replica `id`'s clock reads at a simulated time (its transport
   * reports contact times on it). Absent: the simulated time.
   */
  readonly localTime?: (id: number, simulatedMs: number) => number;
}

/** What a replica decodes batches by ({@linkcode SimNetworkOptions.receiver}). */
export interface Receiver {
  /** Its epoch. */
  readonly epoch: number;
  /** Its core's positions. */
  readonly replicas: number;
  /** Whether it left the cluster (removed or replaced; it takes nothing). */
  readonly removed: boolean;
}

/** What a replica's transport was last told (`reconfigure`): what its batches carry, and to whom. */
interface Sender {
  readonly epoch: number;
  readonly incarnation: number;
  /** The members it has links to, ascending (the HTTP transport drops messages to anyone else). */
  readonly peers: readonly number[];
}

/** Links between simulated replicas. */
export class SimNetwork {
  readonly #options: SimNetworkOptions;
  /** `blocked[from][to]`: the directed link is cut by a partition. */
  readonly #blocked: boolean[][];
  /** `lastContact[self][peer]`: when `self` last exchanged anything with `peer`. */
  readonly #lastContact: (number | undefined)[][];
  /** What each replica's transport was last told (`reconfigure`). */
  readonly #senders: Sender[];
  #batches = 0;
  #messages = 0;

  /** Creates a network with every link up. */
  constructor(options: SimNetworkOptions) {
    this.#options = options;
    const n = options.slots;
    this.#blocked = Array.from({ length: n }, () => new Array<boolean>(n).fill(false));
    this.#lastContact = Array.from({ length: n }, () => new Array<number | undefined>(n));
    this.#senders = Array.from({ length: n }, () => ({ epoch: 1, incarnation: 1, peers: [] }));
  }

  /** Messages sent so far (before faults). */
  get messages(): number {
    return this.#messages;
  }

  /** Batches sent so far (before faults). */
  get batches(): number {
    return this.#batches;
  }

  /** Cuts (true) or restores (false) the directed link `from -> to`. */
  block(from: number, to: number, blocked = true): void {
    if (from !== to) this.#blocked[from]![to] = blocked;
  }

  /** Whether the directed link `from -> to` is up (no partition cuts it). */
  linked(from: number, to: number): boolean {
    return !this.#blocked[from]![to];
  }

  /** Restores every link. */
  heal(): void {
    for (const row of this.#blocked) row.fill(false);
  }

  /** The transport replica `self` sends with. */
  transport(self: number): PeerTransport<KvCommand> {
    return {
      send: (messages) => this.#send(self, messages),
      stats: () => this.#stats(self),
      probe: (peer) => {
        if (this.#senders[self]!.peers.includes(peer)) this.#transmit(self, peer, []);
      },
      // Batches are stamped when sent (#transmit encodes at once): only the
      // header and the links change.
      reconfigure: (membership) => {
        this.#senders[self] = {
          epoch: membership.epoch,
          incarnation: membership.incarnation,
          peers: membership.peers.map((peer) => peer.id).filter((id) => id !== self)
            .sort((a, b) => a - b),
        };
      },
      close: () => Promise.resolve(),
    };
  }

  #send(self: number, messages: readonly Message<KvCommand>[]): void {
    // One batch per receiver per send, as the HTTP transport sends them.
    const byPeer = new Map<number, Message<KvCommand>[]>();
    const peers = this.#senders[self]!.peers;
    for (const message of messages) {
      if (!peers.includes(message.to)) continue;
      let list = byPeer.get(message.to);
      if (list === undefined) byPeer.set(message.to, list = []);
      list.push(message);
    }
    for (const [peer, list] of byPeer) this.#transmit(self, peer, list);
  }

  #transmit(from: number, to: number, messages: readonly Message<KvCommand>[]): void {
    this.#batches++;
    this.#messages += messages.length;
    if (this.#blocked[from]![to]) return;
    const { random, minDelayMs, maxDelayMs } = this.#options;
    const faults = this.#options.faults();
    if (faults !== undefined && random.next() < faults.dropRate) return;
    const { epoch, incarnation } = this.#senders[from]!;
    const bytes = encodeBatch({ from, epoch, incarnation, messages });
    const copies = faults !== undefined && random.next() < faults.duplicateRate ? 2 : 1;
    for (let copy = 0; copy < copies; copy++) {
      let delay = minDelayMs + random.int(maxDelayMs - minDelayMs + 1);
      if (faults !== undefined && random.next() < faults.reorderRate) {
        delay += random.int(maxDelayMs * 5 + 1);
      }
      this.#options.queue.schedule(
        this.#options.now() + delay,
        () => this.#arrive(from, to, bytes, messages.length > 0),
      );
    }
  }

  /** Delivers a batch that arrived; an empty one (a probe) only refreshes contact. */
  #arrive(from: number, to: number, bytes: Uint8Array, carries: boolean): void {
    if (this.#blocked[from]![to]) return;
    const receiver = this.#options.receiver(to);
    if (receiver === undefined) return;
    let batch: PeerBatch<KvCommand>;
    try {
      // By the receiver's epoch and positions, as the HTTP route decodes:
      // a batch of another epoch keeps only its header.
      batch = decodeBatch(bytes, {
        replicas: receiver.replicas,
        self: to,
        isCommand: isKvCommand,
        epoch: receiver.epoch,
      });
    } catch (error) {
      // A replica that left names the epoch that removed it but keeps the
      // old core's positions: the HTTP route answers it 4xx, and it takes
      // nothing anyway. Anywhere else, a batch that does not decode is a
      // bug the simulator must show.
      if (error instanceof BatchError && receiver.removed) return;
      throw error;
    }
    // A replica that answers acknowledges at once (the answer's own trip is
    // folded into the delay): both ends have heard from each other.
    if (this.#options.answers(to) && !this.#blocked[to]![from]) {
      this.#lastContact[from]![to] = this.#options.now();
      this.#lastContact[to]![from] = this.#options.now();
    }
    // A batch of another epoch arrives as its header alone: the receiver
    // still learns that its sender is ahead.
    if (carries) this.#options.deliver(to, batch);
  }

  #stats(self: number): PeerStats[] {
    const stats: PeerStats[] = [];
    for (const peer of this.#senders[self]!.peers) {
      const contact = this.#lastContact[self]![peer];
      const local = this.#options.localTime;
      stats.push(
        unmeasuredPeerStats(
          peer,
          contact === undefined || local === undefined ? contact : local(self, contact),
        ),
      );
    }
    return stats;
  }
}
