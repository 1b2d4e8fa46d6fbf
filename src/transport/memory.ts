/**
 * An in-memory transport for tests: replicas in one process exchange batches
 * through a shared {@linkcode MemoryNetwork}, by default encoded and decoded
 * with the real codec so that serialization is exercised too.
 *
 * @module
 */

import type { Message } from "../core/types.ts";
import type { Clock } from "../runtime/clock.ts";
import { decodeBatch, encodeBatch, type PeerBatch } from "./codec.ts";
import type { BatchHandler, PeerStats, PeerTransport } from "./types.ts";

/** Settings of a memory network. */
export interface MemoryNetworkOptions<C> {
  /** Cluster size. */
  readonly replicas: number;
  /** Command validator, used when round-tripping batches through the codec. */
  readonly isCommand: (value: unknown) => value is C;
  /** Clock for contact times. */
  readonly clock: Clock;
  /** Encode and decode every batch (default true). */
  readonly roundTrip?: boolean;
  /** Most messages queued per directed link before the oldest are shed (default 100,000). */
  readonly maxQueuedMessages?: number;
}

interface Link<C> {
  queue: Message<C>[];
  scheduled: boolean;
  sentBatches: number;
  sentMessages: number;
  droppedMessages: number;
  lastContactMs: number | undefined;
}

/** Connects in-process replicas. Delivery is asynchronous (a macrotask later), in order. */
export class MemoryNetwork<C> {
  readonly #options: MemoryNetworkOptions<C>;
  readonly #handlers = new Map<number, BatchHandler<C>>();
  /** Each sender's listener for batches refused as from an earlier epoch (by replica id). */
  readonly #epochRefusals = new Map<number, (peer: number, epoch: number) => void>();
  readonly #links = new Map<string, Link<C>>();
  readonly #down = new Set<number>();
  /**
   * Each sender's epoch, incarnation and positions, once it reconfigured
   * (else epoch 1, incarnation 1 and the network's `replicas`).
   */
  readonly #headers = new Map<number, { epoch: number; incarnation: number; replicas: number }>();

  /** Creates an empty network. */
  constructor(options: MemoryNetworkOptions<C>) {
    this.#options = options;
  }

  /** Attaches replica `id`'s receiver. */
  attach(id: number, handler: BatchHandler<C>): void {
    this.#handlers.set(id, handler);
  }

  /** Detaches replica `id` (its batches are dropped until it attaches again). */
  detach(id: number): void {
    this.#handlers.delete(id);
  }

  /** Marks replica `id` unreachable (true) or reachable again (false). */
  setDown(id: number, down: boolean): void {
    if (down) this.#down.add(id);
    else this.#down.delete(id);
  }

  /** Whether replica `id` is marked unreachable. */
  isDown(id: number): boolean {
    return this.#down.has(id);
  }

  /** The transport replica `self` sends with. */
  transport(self: number): PeerTransport<C> {
    let closed = false;
    return {
      send: (messages) => {
        if (!closed) this.#send(self, messages);
      },
      stats: () => this.#stats(self),
      onEpochRefusal: (listener) => {
        this.#epochRefusals.set(self, listener);
      },
      reconfigure: (membership) => {
        // What is queued leaves now, stamped with the old epoch (a batch is
        // stamped when it leaves). The network reaches every replica by id
        // already: only the header changes.
        for (const [key, link] of this.#links) {
          if (key.startsWith(`${self}>`) && link.queue.length > 0) {
            this.#flush(self, Number(key.slice(key.indexOf(">") + 1)));
          }
        }
        this.#headers.set(self, {
          epoch: membership.epoch,
          incarnation: membership.incarnation,
          replicas: Math.max(...membership.peers.map((peer) => peer.id)) + 1,
        });
      },
      close: () => {
        closed = true;
        for (const [key, link] of this.#links) if (key.startsWith(`${self}>`)) link.queue = [];
        return Promise.resolve();
      },
    };
  }

  #link(from: number, to: number): Link<C> {
    const key = `${from}>${to}`;
    let link = this.#links.get(key);
    if (link === undefined) {
      link = {
        queue: [],
        scheduled: false,
        sentBatches: 0,
        sentMessages: 0,
        droppedMessages: 0,
        lastContactMs: undefined,
      };
      this.#links.set(key, link);
    }
    return link;
  }

  #send(self: number, messages: readonly Message<C>[]): void {
    const limit = this.#options.maxQueuedMessages ?? 100_000;
    for (const message of messages) {
      if (message.to === self) continue;
      const link = this.#link(self, message.to);
      link.queue.push(message);
      if (link.queue.length > limit) {
        link.queue.shift();
        link.droppedMessages++;
      }
      if (!link.scheduled) {
        link.scheduled = true;
        setTimeout(() => this.#flush(self, message.to), 0);
      }
    }
  }

  #flush(from: number, to: number): void {
    const link = this.#link(from, to);
    link.scheduled = false;
    const messages = link.queue;
    link.queue = [];
    const handler = this.#handlers.get(to);
    if (messages.length === 0) return;
    if (handler === undefined || this.#down.has(to) || this.#down.has(from)) {
      link.droppedMessages += messages.length;
      return;
    }
    const { replicas, ...header } = this.#headers.get(from) ??
      { epoch: 1, incarnation: 1, replicas: this.#options.replicas };
    let batch: PeerBatch<C> = { from, ...header, messages: messages as readonly Message<C>[] };
    if (this.#options.roundTrip ?? true) {
      batch = decodeBatch(encodeBatch(batch), {
        // The sender's positions: the receiver judges the epoch.
        replicas,
        self: to,
        isCommand: this.#options.isCommand,
        // The receiver, not the network, judges the epoch.
        epoch: header.epoch,
      });
    }
    link.sentBatches++;
    link.sentMessages += messages.length;
    link.lastContactMs = this.#options.clock.now();
    const refusal = handler(batch);
    // The receiver is in a later epoch: its answer goes back to the sender.
    if (refusal !== undefined) this.#epochRefusals.get(from)?.(to, refusal.epoch);
  }

  #stats(self: number): PeerStats[] {
    const result: PeerStats[] = [];
    for (let peer = 0; peer < this.#options.replicas; peer++) {
      if (peer === self) continue;
      const link = this.#link(self, peer);
      result.push({
        peer,
        roundTripMs: link.lastContactMs === undefined ? undefined : 0,
        lastContactMs: link.lastContactMs,
        oldestOutstandingMs: undefined,
        queued: link.queue.length,
        sentBatches: link.sentBatches,
        sentMessages: link.sentMessages,
        failedBatches: 0,
        droppedMessages: link.droppedMessages,
      });
    }
    return result;
  }
}
