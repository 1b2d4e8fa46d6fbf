/**
 * The HTTP peer transport. Per peer, a FIFO of messages; whenever one of the
 * link's request slots is free, everything queued (up to a size cap) leaves as
 * one MessagePack batch in one `POST /peer/v1/batch`, on one kept-alive
 * connection per peer (`pipelined_client.ts`). Several requests may be in
 * flight per peer (HTTP/1.1 pipelining), so a message never waits a whole
 * round trip behind an earlier batch on a distant link; when every slot is
 * busy, messages accumulate into the next batch. A failed batch is
 * retried with exponential backoff and jitter, then dropped (the protocol
 * retransmits what matters). Queues are bounded: when a peer cannot keep up,
 * the oldest messages are shed. Every batch's round trip feeds a smoothed
 * round-trip estimate per peer.
 *
 * A peer that refuses our credential (401) or us as a sender (403) is logged
 * once, not per request; once it accepts a batch again, that is logged too, and
 * a later refusal is logged anew. A peer that refuses a batch as from an
 * earlier epoch than its own (409, with its epoch) is told to the replica
 * ({@linkcode HttpTransport.onEpochRefusal}).
 *
 * @module
 */

import type { Message } from "../core/types.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Random } from "../runtime/random.ts";
import { encodeBatch, MAX_BATCH_BYTES } from "./codec.ts";
import { PEER_EPOCH_HEADER, PeerRequestError, PipelinedClient } from "./pipelined_client.ts";
import type { PeerTls } from "../net/tls.ts";
import type { PeerMembership, PeerStats, PeerTransport } from "./types.ts";

/** The path of the peer route. */
export const PEER_BATCH_PATH = "/peer/v1/batch";

/**
 * The header naming the sending replica's id on every peer request, so that a
 * receiver refusing the credential can say who claimed to send it (it is not
 * trusted for anything else: an accepted batch names its sender inside).
 */
export const PEER_SENDER_HEADER = "epaxos-sender";

// The header of the route's 409 to a batch of an earlier epoch, named where it is parsed.
export { PEER_EPOCH_HEADER };

/** Settings of an HTTP transport. */
export interface HttpTransportOptions {
  /** This replica's id. */
  readonly self: number;
  /** Peers, by id, with their base URLs (`http://host:port`). */
  readonly peers: readonly { readonly id: number; readonly url: string }[];
  /** The cluster credential sent with every batch. */
  readonly secret: string;
  /** Clock for round trips and backoff. */
  readonly clock: Clock;
  /** Randomness for backoff jitter. */
  readonly random: Random;
  /** Most messages queued per peer before the oldest are shed (default 100,000). */
  readonly maxQueuedMessages?: number;
  /** Most messages per batch (default 10,000). */
  readonly maxBatchMessages?: number;
  /** Most requests in flight per peer (default 32). */
  readonly maxInFlight?: number;
  /** Request timeout in milliseconds (default 5000). */
  readonly timeoutMs?: number;
  /** Attempts per batch before it is dropped (default 4). */
  readonly maxAttempts?: number;
  /** First backoff after a failure, in milliseconds (default 20); doubles per attempt. */
  readonly backoffMs?: number;
  /** Cap on the backoff (default 1000). */
  readonly maxBackoffMs?: number;
  /** Receives one line per notable event: a peer refusing us, or accepting us again. */
  readonly log?: (line: string) => void;
  /**
   * With TLS on: the CA https peers' certificates must chain to, the
   * certificate this replica presents, and the refusal of http peers
   * (nothing is sent to one, and that is logged once per link).
   */
  readonly peerTls?: Pick<PeerTls, "connectSettings" | "cleartextProblem">;
  /**
   * A hook between encoding and sending, for the test-only fault layer: it may
   * delay, drop or duplicate a batch by calling `deliver` zero or more times.
   */
  readonly interpose?: (
    peer: number,
    deliver: () => Promise<boolean>,
  ) => Promise<boolean>;
}

interface Link {
  readonly peer: number;
  readonly url: string;
  /** The link's connection: requests pipelined, answers in order. */
  readonly client: PipelinedClient;
  queue: Message<unknown>[];
  inFlight: number;
  /** Send times of the requests in flight. */
  readonly outstanding: Set<number>;
  attempts: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  roundTripMs: number | undefined;
  lastContactMs: number | undefined;
  sentBatches: number;
  sentMessages: number;
  failedBatches: number;
  droppedMessages: number;
  /** The peer refused our last requests (401 or 403), and that was logged. */
  refused: boolean;
}

/** Width of the slots whose peer requests share one timeout timer. */
const TIMEOUT_SLOT_MS = 250;

/** Sends batches to peers over HTTP. */
export class HttpTransport<C> implements PeerTransport<C> {
  readonly #options: HttpTransportOptions;
  readonly #links = new Map<number, Link>();
  readonly #headers: Record<string, string>;
  /** What this replica's batches say of it: see {@linkcode HttpTransport.reconfigure}. */
  #epoch = 1;
  #incarnation = 1;
  #closed = false;
  /** Told of peers that refuse our batches as from an earlier epoch. */
  #epochRefusal: ((peer: number, epoch: number) => void) | undefined;
  readonly #inFlight = new Set<Promise<void>>();
  /** The abort signal shared by requests started in the current slot (see `#timeoutSignal`). */
  #slot: { readonly signal: AbortSignal; readonly endsMs: number } | undefined;
  /** Timers of every slot not yet timed out: requests of earlier slots may still be in flight. */
  readonly #slotTimers = new Set<ReturnType<typeof setTimeout>>();

  /** Creates links to every peer; nothing is sent until `send`. */
  constructor(options: HttpTransportOptions) {
    this.#options = options;
    this.#headers = {
      "authorization": `Bearer ${options.secret}`,
      "content-type": "application/x-msgpack",
      [PEER_SENDER_HEADER]: String(options.self),
    };
    for (const peer of options.peers) {
      if (peer.id !== options.self) this.#links.set(peer.id, this.#newLink(peer.id, peer.url));
    }
  }

  #newLink(peer: number, baseUrl: string): Link {
    const url = new URL(PEER_BATCH_PATH, baseUrl).href;
    const peerTls = this.#options.peerTls;
    const cleartext = peerTls?.cleartextProblem(url);
    if (cleartext !== undefined) this.#options.log?.(`peer ${peer}: ${cleartext}`);
    return {
      peer,
      url,
      client: new PipelinedClient({
        url,
        headers: this.#headers,
        // Headroom over the transport's own bound: the test-only fault
        // layer may deliver a batch twice.
        maxPending: 2 * (this.#options.maxInFlight ?? 32),
        connectTimeoutMs: this.#options.timeoutMs ?? 5000,
        ...(peerTls === undefined ? {} : { tls: () => peerTls.connectSettings() }),
        // An http peer while TLS is on: no connection, so no secret in cleartext.
        ...(cleartext === undefined
          ? {}
          : { connect: () => Promise.reject(new PeerRequestError(cleartext)) }),
      }),
      queue: [],
      inFlight: 0,
      outstanding: new Set(),
      attempts: 0,
      timer: undefined,
      roundTripMs: undefined,
      lastContactMs: undefined,
      sentBatches: 0,
      sentMessages: 0,
      failedBatches: 0,
      droppedMessages: 0,
      refused: false,
    };
  }

  /**
   * Takes a new epoch's membership: batches carry its epoch and this
   * replica's incarnation from now on; links to members that left close
   * (what was queued for them is dropped); members that joined, or moved,
   * get a fresh link.
   */
  reconfigure(membership: PeerMembership): void {
    if (this.#closed) return;
    // What is queued belongs to the old epoch: it leaves now, stamped with
    // it (a batch is stamped when encoded, and the receiver reads every
    // message by its batch's epoch). Failed batches of the old epoch are not
    // retried after this (#settle).
    for (const link of this.#links.values()) {
      // A batch too large for one request leaves in parts, the rest queued
      // again: every part before the epoch changes.
      while (link.queue.length > 0) {
        const queued = link.queue;
        link.queue = [];
        this.#transmit(link, queued);
      }
    }
    this.#epoch = membership.epoch;
    this.#incarnation = membership.incarnation;
    const wanted = new Map<number, string>();
    for (const peer of membership.peers) {
      if (peer.id !== this.#options.self) {
        wanted.set(peer.id, new URL(PEER_BATCH_PATH, peer.url).href);
      }
    }
    for (const [id, link] of this.#links) {
      if (wanted.get(id) === link.url) continue;
      if (link.timer !== undefined) clearTimeout(link.timer);
      link.timer = undefined;
      link.queue = [];
      link.client.close();
      this.#links.delete(id);
    }
    for (const peer of membership.peers) {
      if (peer.id !== this.#options.self && !this.#links.has(peer.id)) {
        this.#links.set(peer.id, this.#newLink(peer.id, peer.url));
      }
    }
  }

  /** Calls `listener` when a peer answers a batch 409 with its later epoch. */
  onEpochRefusal(listener: (peer: number, epoch: number) => void): void {
    this.#epochRefusal = listener;
  }

  /** Queues messages; each peer's share leaves as one batch when its link is free. */
  send(messages: readonly Message<C>[]): void {
    if (this.#closed) return;
    const limit = this.#options.maxQueuedMessages ?? 100_000;
    const touched = new Set<Link>();
    for (const message of messages) {
      const link = this.#links.get(message.to);
      if (link === undefined) continue;
      link.queue.push(message);
      touched.add(link);
    }
    for (const link of touched) {
      if (link.queue.length > limit) {
        const shed = link.queue.length - limit;
        link.queue.splice(0, shed);
        link.droppedMessages += shed;
      }
      this.#pump(link);
    }
  }

  /**
   * Sends an empty batch to `peer` if nothing is queued or in flight: a probe
   * that measures the round trip and refreshes contact while idle.
   */
  probe(peer: number): void {
    const link = this.#links.get(peer);
    if (link === undefined || this.#closed || link.inFlight > 0 || link.queue.length > 0) return;
    if (link.timer !== undefined) return;
    this.#transmit(link, []);
  }

  /** What the transport knows about each peer. */
  stats(): PeerStats[] {
    return [...this.#links.values()].map((link) => ({
      peer: link.peer,
      url: link.url,
      roundTripMs: link.roundTripMs,
      lastContactMs: link.lastContactMs,
      oldestOutstandingMs: link.outstanding.size === 0 ? undefined : Math.min(...link.outstanding),
      queued: link.queue.length,
      sentBatches: link.sentBatches,
      sentMessages: link.sentMessages,
      failedBatches: link.failedBatches,
      droppedMessages: link.droppedMessages,
    }));
  }

  /** Stops sending and waits for requests in flight to settle. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const link of this.#links.values()) {
      if (link.timer !== undefined) clearTimeout(link.timer);
      link.timer = undefined;
      link.queue = [];
    }
    await Promise.allSettled([...this.#inFlight]);
    for (const link of this.#links.values()) link.client.close();
    // Only now: a request still in flight above must keep its timeout.
    for (const timer of this.#slotTimers) clearTimeout(timer);
    this.#slotTimers.clear();
    this.#slot = undefined;
  }

  #pump(link: Link): void {
    if (
      this.#closed || link.inFlight >= (this.#options.maxInFlight ?? 32) ||
      link.timer !== undefined || link.queue.length === 0
    ) {
      return;
    }
    const max = this.#options.maxBatchMessages ?? 10_000;
    const batch = link.queue.length <= max ? link.queue : link.queue.slice(0, max);
    link.queue = link.queue.length <= max ? [] : link.queue.slice(max);
    this.#transmit(link, batch);
  }

  #encode(messages: Message<unknown>[]): Uint8Array {
    return encodeBatch({
      from: this.#options.self,
      epoch: this.#epoch,
      incarnation: this.#incarnation,
      messages,
    });
  }

  #transmit(link: Link, batch: Message<unknown>[]): void {
    let body = this.#encode(batch);
    // Too large for the receiver: send the first half now, the rest after it.
    while (body.length > MAX_BATCH_BYTES && batch.length > 1) {
      const half = Math.ceil(batch.length / 2);
      link.queue = batch.slice(half).concat(link.queue);
      batch = batch.slice(0, half);
      body = this.#encode(batch);
    }
    if (body.length > MAX_BATCH_BYTES) {
      // One message alone is too large: it can never be delivered.
      link.droppedMessages++;
      this.#pump(link);
      return;
    }
    link.inFlight++;
    let started = this.#options.clock.now();
    // Distinct send times, so each request's entry can be removed on its own.
    while (link.outstanding.has(started)) started += 1e-6;
    link.outstanding.add(started);
    const deliver = () => this.#post(link, body);
    const epoch = this.#epoch;
    const attempt = (this.#options.interpose?.(link.peer, deliver) ?? deliver())
      .then((delivered) => this.#settle(link, batch, started, delivered, epoch))
      .catch(() => this.#settle(link, batch, started, false, epoch));
    this.#inFlight.add(attempt);
    attempt.finally(() => this.#inFlight.delete(attempt));
  }

  async #post(link: Link, body: Uint8Array): Promise<boolean> {
    const { status, epoch } = await link.client.post(body, this.#timeoutSignal());
    const delivered = status >= 200 && status < 300;
    if (status === 401 || status === 403) this.#noteRefused(link, status);
    // 503: the peer takes no batches for now (it is joining): it is not a
    // contact, so the driver counts it unreachable and leaves it out of the
    // quorums it asks first, instead of waiting for replies it will not send.
    // 409: the peer is in a later epoch and takes nothing of ours either;
    // the replica learns that it missed a change.
    else if (status === 503 || status === 409) {
      link.lastContactMs = undefined;
      if (status === 409 && epoch !== undefined && epoch > this.#epoch) {
        this.#epochRefusal?.(link.peer, epoch);
      }
    } else if (delivered && link.refused) {
      link.refused = false;
      this.#options.log?.(
        `peer ${link.peer} (${new URL(link.url).origin}) accepts our requests again`,
      );
    }
    return delivered;
  }

  /** Logs, once until the peer accepts a batch again, that it refuses us. */
  #noteRefused(link: Link, status: 401 | 403): void {
    if (link.refused) return;
    link.refused = true;
    const peer = `peer ${link.peer} (${new URL(link.url).origin})`;
    this.#options.log?.(
      status === 401
        ? `${peer} refused our cluster secret (401): every replica needs the same secret; ` +
          "nothing reaches it until that is fixed (logged once until it accepts us again)"
        : `${peer} refused us as a sender (403): it does not count replica ${this.#options.self} ` +
          "as a member of its cluster (logged once until it accepts us again)",
    );
  }

  /**
   * The signal that times a request out: shared by every request started in
   * the same {@linkcode TIMEOUT_SLOT_MS} slot, and aborted once, by one timer,
   * `timeoutMs` after the slot ends. `AbortSignal.timeout` per request costs
   * a timer and a `DOMException` each (measured: 2 to 3 % of a replica's CPU
   * under load); a request here times out after `timeoutMs` to
   * `timeoutMs + TIMEOUT_SLOT_MS`.
   */
  #timeoutSignal(): AbortSignal {
    const now = this.#options.clock.now();
    if (this.#slot === undefined || now >= this.#slot.endsMs) {
      const controller = new AbortController();
      const timer = setTimeout(
        () => {
          this.#slotTimers.delete(timer);
          controller.abort(new DOMException("Peer request timed out", "TimeoutError"));
        },
        (this.#options.timeoutMs ?? 5000) + TIMEOUT_SLOT_MS,
      );
      this.#slotTimers.add(timer);
      this.#slot = { signal: controller.signal, endsMs: now + TIMEOUT_SLOT_MS };
      return controller.signal;
    }
    return this.#slot.signal;
  }

  #settle(
    link: Link,
    batch: Message<unknown>[],
    started: number,
    delivered: boolean,
    epoch: number,
  ): void {
    link.inFlight--;
    link.outstanding.delete(started);
    if (this.#closed) return;
    const now = this.#options.clock.now();
    if (delivered) {
      const sample = Math.max(0, now - started);
      // Exponentially weighted, as TCP's SRTT (RFC 6298), gain 1/8.
      link.roundTripMs = link.roundTripMs === undefined
        ? sample
        : link.roundTripMs + (sample - link.roundTripMs) / 8;
      link.lastContactMs = now;
      link.attempts = 0;
      link.sentBatches++;
      link.sentMessages += batch.length;
      this.#pump(link);
      return;
    }
    link.failedBatches++;
    link.attempts++;
    if (link.attempts >= (this.#options.maxAttempts ?? 4) || epoch !== this.#epoch) {
      // Given up, or of an epoch that ended: requeued, it would leave
      // stamped with the new one.
      link.droppedMessages += batch.length;
      link.attempts = 0;
    } else if (batch.length > 0) {
      // Retry: back at the head of the queue, still within the bound.
      link.queue = batch.concat(link.queue);
      const limit = this.#options.maxQueuedMessages ?? 100_000;
      if (link.queue.length > limit) {
        const shed = link.queue.length - limit;
        link.queue.splice(0, shed);
        link.droppedMessages += shed;
      }
    }
    const base = this.#options.backoffMs ?? 20;
    const cap = this.#options.maxBackoffMs ?? 1000;
    const backoff = Math.min(cap, base * 2 ** Math.min(link.attempts, 10));
    const delay = backoff / 2 + this.#options.random.next() * (backoff / 2);
    // Several requests may fail together: the latest backoff replaces the pending one.
    if (link.timer !== undefined) clearTimeout(link.timer);
    link.timer = setTimeout(() => {
      link.timer = undefined;
      this.#pump(link);
    }, delay);
  }
}
