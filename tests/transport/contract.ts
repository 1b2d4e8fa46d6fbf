/**
 * The peer transport contract (`src/transport/types.ts`) as one suite, run
 * against every implementation, in the style of `tests/storage/contract.ts`: a
 * function that takes a factory and registers the tests.
 *
 * A subject is a small cluster: every replica can send (its own transport)
 * and receive (a handler recording every batch), and any replica can be taken
 * down and brought back.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Message, NackMessage } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import type { Clock } from "../../src/runtime/clock.ts";
import type { PeerBatch } from "../../src/transport/codec.ts";
import type { PeerStats, PeerTransport } from "../../src/transport/types.ts";
import { waitFor } from "../wait.ts";

/** Cluster size used by every test. */
export const REPLICAS = 3;

/** How long any condition may take to come true (generous: the machine may be loaded). */
export const DEADLINE_MS = 5000;

/** Settings a test asks of its subject. */
export interface TransportSubjectOptions {
  /** Most messages queued per peer before the oldest are shed. */
  readonly maxQueuedMessages?: number;
}

/** One cluster of transports under test. */
export interface TransportSubject {
  /** The clock the transports read. */
  readonly clock: Clock;
  /** The transport replica `id` sends with (one per replica, made on first use). */
  sender(id: number): PeerTransport<KvCommand>;
  /** Every batch replica `id` received so far, in arrival order. */
  received(id: number): readonly PeerBatch<KvCommand>[];
  /** Requests the receiving side refused (malformed, misaddressed, unauthorized). */
  readonly refused: number;
  /**
   * Puts replica `id`'s receiver in `epoch`: from now on it refuses batches
   * of an earlier epoch, as a replica does (`BatchRefusal`).
   */
  laterEpoch(id: number, epoch: number): void;
  /** Makes replica `id` unreachable: nothing sent to it arrives. */
  down(id: number): Promise<void>;
  /** Makes replica `id` reachable again. */
  up(id: number): Promise<void>;
  /** Closes every transport and receiver. */
  dispose(): Promise<void>;
}

/** Makes fresh clusters of one implementation. */
export interface TransportFactory {
  /** Implementation name, prefixed to test names. */
  readonly name: string;
  /** Whether the transport honours `maxQueuedMessages` (the bounded-queue case runs only then). */
  readonly boundsQueue: boolean;
  /** Whether the transport implements `probe` (checked, so a mismatch fails). */
  readonly probes: boolean;
  /**
   * Whether batches to one peer arrive in the order they were sent. Within a
   * batch, order is always kept; across batches an implementation with several
   * requests in flight per peer may reorder them.
   */
  readonly ordersBatches: boolean;
  /** A fresh cluster of {@linkcode REPLICAS} replicas, all up, nothing sent yet. */
  create(options: TransportSubjectOptions): Promise<TransportSubject>;
}

export { waitFor };

/**
 * A message from `from` to `to` carrying `seq` (as its instance number), so
 * that a receiver can tell which message it is and in what order it came.
 */
export function message(from: number, to: number, seq: number): NackMessage {
  return { type: "nack", from, to, owner: from, number: seq, ballot: 1 };
}

/** `count` messages from `from` to `to`, numbered from `first`. */
export function messages(from: number, to: number, first: number, count: number): NackMessage[] {
  return Array.from({ length: count }, (_, i) => message(from, to, first + i));
}

/** The sequence numbers of the messages `from` sent that `subject`'s replica `to` received. */
export function receivedSeqs(subject: TransportSubject, to: number, from: number): number[] {
  return subject.received(to).filter((batch) => batch.from === from).flatMap((batch) =>
    batch.messages.map((m) => (m as NackMessage).number)
  );
}

/** `sender`'s stats for `peer`, or fails if it lists no such peer. */
export function statsOf(sender: PeerTransport<KvCommand>, peer: number): PeerStats {
  const stats = sender.stats().find((s) => s.peer === peer);
  assert.ok(stats !== undefined, `stats() lists no peer ${peer}`);
  return stats;
}

async function withSubject(
  factory: TransportFactory,
  options: TransportSubjectOptions,
  run: (subject: TransportSubject) => Promise<void>,
): Promise<void> {
  const subject = await factory.create(options);
  try {
    await run(subject);
    assert.equal(subject.refused, 0, "the receiving side refused requests");
  } finally {
    await subject.dispose();
  }
}

/** Registers the contract's tests for `factory`. */
export function runTransportContract(factory: TransportFactory): void {
  const test = (
    name: string,
    fn: (subject: TransportSubject) => Promise<void>,
    options: TransportSubjectOptions = {},
  ) =>
    Deno.test({
      name: `${factory.name}: ${name}`,
      // Off by default in Deno 2: a timer or request that outlives the test fails it.
      sanitizeOps: true,
      sanitizeResources: true,
      fn: () => withSubject(factory, options, fn),
    });

  test("messages arrive, in order, from the sender, only at their addressee", async (subject) => {
    const sender = subject.sender(0);
    const toOne = messages(0, 1, 1, 30);
    const toTwo = messages(0, 2, 1, 30);
    // Interleaved addressees in one call, then several calls in a row.
    sender.send(toOne.slice(0, 10).flatMap((m, i) => [m, toTwo[i]!]));
    for (let i = 10; i < 30; i += 5) {
      sender.send([...toOne.slice(i, i + 5), ...toTwo.slice(i, i + 5)]);
    }
    await waitFor(
      () => receivedSeqs(subject, 1, 0).length >= 30 && receivedSeqs(subject, 2, 0).length >= 30,
      DEADLINE_MS,
      "every message",
    );
    for (const [to, sent] of [[1, toOne], [2, toTwo]] as const) {
      const batches = subject.received(to);
      for (const batch of batches) {
        assert.equal(batch.from, 0, "a batch names another sender");
        for (const m of batch.messages) {
          assert.equal(m.to, to, `replica ${to} received a message for ${m.to}`);
          assert.equal(m.from, 0);
        }
      }
      const got = batches.flatMap((batch) => batch.messages);
      if (factory.ordersBatches) {
        assert.deepStrictEqual(got, sent);
      } else {
        // Each batch keeps its order; batches may overtake one another.
        for (const batch of batches) {
          const seqs = batch.messages.map((m) => (m as NackMessage).number);
          assert.deepStrictEqual(seqs, [...seqs].sort((a, b) => a - b));
        }
        const bySeq = (a: Message<KvCommand>, b: Message<KvCommand>) =>
          (a as NackMessage).number - (b as NackMessage).number;
        assert.deepStrictEqual([...got].sort(bySeq), sent);
      }
    }
    assert.deepStrictEqual(subject.received(0), [], "the sender received its own messages");
  });

  test("what one call queues for one peer arrives in one batch", async (subject) => {
    const sender = subject.sender(0);
    const toOne = messages(0, 1, 1, 50);
    const toTwo = messages(0, 2, 100, 7);
    sender.send([...toTwo.slice(0, 3), ...toOne, ...toTwo.slice(3)]);
    await waitFor(
      () => receivedSeqs(subject, 1, 0).length >= 50 && receivedSeqs(subject, 2, 0).length >= 7,
      DEADLINE_MS,
      "every message",
    );
    assert.deepStrictEqual(subject.received(1), [{ from: 0, messages: toOne }]);
    assert.deepStrictEqual(subject.received(2), [{ from: 0, messages: toTwo }]);
    await waitFor(
      () => statsOf(sender, 1).sentBatches === 1 && statsOf(sender, 2).sentBatches === 1,
      DEADLINE_MS,
      "both deliveries counted",
    );
  });

  test("stats list every peer and count deliveries", async (subject) => {
    const sender = subject.sender(1);
    const listed = sender.stats().map((s) => s.peer).sort((a, b) => a - b);
    assert.deepStrictEqual(listed, [0, 2]);
    for (const stats of sender.stats()) {
      assert.equal(stats.sentBatches, 0);
      assert.equal(stats.sentMessages, 0);
      assert.equal(stats.failedBatches, 0);
      assert.equal(stats.droppedMessages, 0);
      assert.equal(stats.queued, 0);
      assert.equal(stats.lastContactMs, undefined);
      assert.equal(stats.roundTripMs, undefined);
    }
    const before = subject.clock.now();
    sender.send(messages(1, 2, 1, 4));
    sender.send(messages(1, 2, 5, 3));
    await waitFor(() => statsOf(sender, 2).sentMessages === 7, DEADLINE_MS, "7 messages counted");
    const after = subject.clock.now();
    const stats = statsOf(sender, 2);
    assert.equal(receivedSeqs(subject, 2, 1).length, 7);
    assert.ok(stats.sentBatches >= 1 && stats.sentBatches <= 2, `${stats.sentBatches} batches`);
    assert.equal(stats.sentBatches, subject.received(2).length);
    assert.equal(stats.failedBatches, 0);
    assert.equal(stats.droppedMessages, 0);
    assert.equal(stats.queued, 0);
    assert.ok(stats.lastContactMs !== undefined, "no contact time");
    assert.ok(
      stats.lastContactMs >= before && stats.lastContactMs <= after,
      `contact at ${stats.lastContactMs}, not within [${before}, ${after}]`,
    );
    assert.ok(
      stats.roundTripMs !== undefined && Number.isFinite(stats.roundTripMs) &&
        stats.roundTripMs >= 0,
      `round trip ${stats.roundTripMs}`,
    );
    assert.ok(stats.roundTripMs <= after - before, "round trip longer than the whole exchange");
    // The idle peer saw nothing.
    const idle = statsOf(sender, 0);
    assert.equal(idle.sentBatches, 0);
    assert.equal(idle.lastContactMs, undefined);
  });

  test("a peer that is down costs failures, not exceptions, and is reached again", async (subject) => {
    const sender = subject.sender(0);
    sender.send(messages(0, 1, 1, 3));
    await waitFor(() => receivedSeqs(subject, 1, 0).length === 3, DEADLINE_MS, "the first 3");
    await subject.down(1);
    const lost = (stats: PeerStats) => stats.failedBatches + stats.droppedMessages;
    for (let i = 0; i < 5; i++) sender.send(messages(0, 1, 100 + i * 10, 10));
    await waitFor(() => lost(statsOf(sender, 1)) > 0, DEADLINE_MS, "a failure counted");
    // Another peer is unaffected.
    sender.send(messages(0, 2, 1, 5));
    await waitFor(() => receivedSeqs(subject, 2, 0).length === 5, DEADLINE_MS, "replica 2");
    assert.equal(lost(statsOf(sender, 2)), 0);
    await subject.up(1);
    const later = messages(0, 1, 1000, 5);
    sender.send(later);
    await waitFor(
      () => later.every((m) => receivedSeqs(subject, 1, 0).includes(m.number)),
      DEADLINE_MS,
      "the later messages",
    );
    await waitFor(
      () => statsOf(sender, 1).sentMessages >= 3 + later.length,
      DEADLINE_MS,
      "the later messages counted",
    );
    const stats = statsOf(sender, 1);
    // Whatever was sent while down was delivered (a retry) or counted as dropped.
    const delivered = receivedSeqs(subject, 1, 0).filter((n) => n >= 100 && n < 1000);
    assert.ok(
      delivered.length + stats.droppedMessages + stats.queued <= 50,
      "more messages accounted for than were sent",
    );
    assert.ok(
      stats.lastContactMs !== undefined && stats.lastContactMs <= subject.clock.now(),
      "no contact recorded after the peer came back",
    );
  });

  if (factory.boundsQueue) {
    const limit = 8;
    test(
      "with the peer down, the queue stays bounded and sheds into droppedMessages",
      async (subject) => {
        const sender = subject.sender(0);
        await subject.down(2);
        let sent = 0;
        for (let round = 0; round < 4; round++) {
          sender.send(messages(0, 2, round * 100, 3 * limit));
          sent += 3 * limit;
          const stats = statsOf(sender, 2);
          assert.ok(stats.queued <= limit, `${stats.queued} messages queued after ${sent} sent`);
        }
        // One call alone overflows the queue by 2 * limit.
        assert.ok(statsOf(sender, 2).droppedMessages >= 2 * limit, "nothing shed");
        // Every message is eventually given up on, and the bound holds all along.
        await waitFor(
          () => {
            const stats = statsOf(sender, 2);
            assert.ok(stats.queued <= limit, `${stats.queued} messages queued`);
            return stats.droppedMessages === sent && stats.queued === 0;
          },
          DEADLINE_MS,
          `all ${sent} messages dropped`,
        );
        const stats = statsOf(sender, 2);
        assert.equal(stats.sentMessages, 0);
        assert.equal(stats.droppedMessages, sent);
        // Other peers are not affected.
        assert.equal(statsOf(sender, 1).droppedMessages, 0);
        await subject.up(2);
        sender.send(messages(0, 2, 9999, 1));
        await waitFor(() => receivedSeqs(subject, 2, 0).includes(9999), DEADLINE_MS, "recovery");
        assert.deepStrictEqual(receivedSeqs(subject, 2, 0), [9999], "a shed message arrived");
      },
      { maxQueuedMessages: limit },
    );
  }

  test(
    factory.probes ? "probe measures a round trip on an idle link" : "has no probe",
    async (subject) => {
      const sender = subject.sender(0);
      assert.equal(typeof sender.probe === "function", factory.probes);
      if (sender.probe === undefined) return;
      const before = subject.clock.now();
      sender.probe(1);
      await waitFor(
        () => statsOf(sender, 1).roundTripMs !== undefined,
        DEADLINE_MS,
        "a round trip",
      );
      const stats = statsOf(sender, 1);
      assert.ok(Number.isFinite(stats.roundTripMs) && stats.roundTripMs! >= 0);
      assert.ok(stats.lastContactMs !== undefined && stats.lastContactMs >= before);
      assert.equal(stats.sentMessages, 0);
      assert.deepStrictEqual(subject.received(1), [{ from: 0, messages: [] }]);
      // With a message in flight or queued, a probe sends nothing.
      sender.send(messages(0, 1, 1, 2));
      sender.probe(1);
      await waitFor(
        () => {
          const s = statsOf(sender, 1);
          return s.sentMessages === 2 && s.queued === 0 && s.oldestOutstandingMs === undefined;
        },
        DEADLINE_MS,
        "the messages delivered and nothing in flight",
      );
      assert.deepStrictEqual(subject.received(1), [
        { from: 0, messages: [] },
        { from: 0, messages: messages(0, 1, 1, 2) },
      ]);
      // Unknown peers and the sender itself are ignored.
      sender.probe(0);
      sender.probe(REPLICAS + 5);
      assert.deepStrictEqual(subject.received(0), []);
    },
  );

  test("after close, send is a no-op and nothing more arrives", async (subject) => {
    const sender = subject.sender(0);
    sender.send(messages(0, 1, 1, 3));
    await waitFor(() => receivedSeqs(subject, 1, 0).length === 3, DEADLINE_MS, "the first 3");
    // Something may be pending when closing: it is delivered before close resolves, or dropped.
    sender.send(messages(0, 1, 10, 3));
    await sender.close();
    const atClose = receivedSeqs(subject, 1, 0);
    sender.send([...messages(0, 1, 100, 3), ...messages(0, 2, 100, 3)]);
    for (const stats of sender.stats()) {
      assert.equal(stats.queued, 0, `messages queued for ${stats.peer} after close`);
      assert.equal(stats.oldestOutstandingMs, undefined, `a request in flight to ${stats.peer}`);
    }
    // A message from another sender, sent after: once it is in, the closed one's would be too.
    const other = subject.sender(2);
    other.send([message(2, 1, 7)]);
    await waitFor(() => receivedSeqs(subject, 1, 2).includes(7), DEADLINE_MS, "the other sender");
    assert.deepStrictEqual(receivedSeqs(subject, 1, 0), atClose);
    assert.deepStrictEqual(receivedSeqs(subject, 2, 0), []);
  });

  // The next two rely on the sanitizers too: a timer or request left behind by
  // `close` fails the test.
  test("close while retrying to a down peer stops the retries", async (subject) => {
    const sender = subject.sender(0);
    await subject.down(1);
    // Separate calls: an implementation with several requests per peer has them all failing.
    for (let i = 0; i < 4; i++) sender.send(messages(0, 1, i * 10, 5));
    await waitFor(
      () => {
        const stats = statsOf(sender, 1);
        return stats.failedBatches >= 2 || stats.droppedMessages >= 10;
      },
      DEADLINE_MS,
      "failures",
    );
    await sender.close();
    await subject.up(1);
    const other = subject.sender(2);
    other.send([message(2, 1, 7)]);
    await waitFor(() => receivedSeqs(subject, 1, 2).includes(7), DEADLINE_MS, "the other sender");
    assert.deepStrictEqual(receivedSeqs(subject, 1, 0), []);
  });

  test("a receiver in a later epoch refuses a batch, and its sender is told that epoch", async (subject) => {
    const sender = subject.sender(0);
    assert.ok(sender.onEpochRefusal !== undefined, "the transport tells no epoch refusals");
    const told: [number, number][] = [];
    sender.onEpochRefusal((peer, epoch) => told.push([peer, epoch]));
    subject.laterEpoch(1, 3);
    sender.send([...messages(0, 1, 1, 2), ...messages(0, 2, 1, 2)]);
    await waitFor(
      () => told.length > 0 && receivedSeqs(subject, 2, 0).length === 2,
      DEADLINE_MS,
      "the refusal, and the other peer's messages",
    );
    assert.deepStrictEqual(told[0], [1, 3]);
    assert.ok(told.every(([peer, epoch]) => peer === 1 && epoch === 3), JSON.stringify(told));
    assert.deepStrictEqual(receivedSeqs(subject, 1, 0), []);
  });

  test("close after a long exchange leaves nothing running", async (subject) => {
    const sender = subject.sender(0);
    const start = subject.clock.now();
    let seq = 0;
    // Over half a second of traffic (several timeout periods of a request timer, say).
    while (subject.clock.now() - start < 600) {
      seq++;
      sender.send([message(0, 1, seq), message(0, 2, seq)]);
      await waitFor(
        () =>
          receivedSeqs(subject, 1, 0).length === seq && receivedSeqs(subject, 2, 0).length === seq,
        DEADLINE_MS,
        `message ${seq}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await sender.close();
    assert.ok(seq >= 2);
  });
}
