import assert from "node:assert/strict";
import type { ConflictModel } from "../../src/core/conflict.ts";
import { Replica } from "../../src/core/replica.ts";
import { MAX_EARLY_PREACCEPTS } from "../../src/core/replica_state.ts";
import { type Message, Phase } from "../../src/core/types.ts";

interface Command {
  readonly key: string;
  readonly write: boolean;
}

const model: ConflictModel<Command> = {
  accesses: (command) => [{ key: command.key, write: command.write }],
};

function replicas(n: number): Replica<Command>[] {
  return Array.from({ length: n }, (_, id) => new Replica({ id, replicas: n, conflicts: model }));
}

/** Delivers `messages`, then runs each receiver's Ready loop, returning what they sent. */
function deliver(
  cluster: Replica<Command>[],
  messages: readonly Message<Command>[],
): Message<Command>[] {
  for (const message of messages) cluster[message.to]!.step(message);
  const sent: Message<Command>[] = [];
  for (const replica of cluster) {
    while (replica.hasReady()) {
      const ready = replica.ready();
      replica.advance();
      sent.push(...ready.earlyMessages, ...ready.messages);
    }
  }
  return sent;
}

Deno.test("a replica with nothing durable yet sends its PreAccepts only after its record", () => {
  const [coordinator] = replicas(3);
  coordinator!.propose([{ key: "a", write: true }]);
  const ready = coordinator!.ready();
  assert.equal(ready.earlyMessages.length, 0);
  assert.equal(ready.messages.filter((m) => m.type === "preaccept").length, 1);
});

Deno.test("the coordinator's PreAccepts leave with its record; its own vote counts once that is durable", () => {
  const cluster = replicas(3);
  const coordinator = cluster[0]!;
  // A first proposal makes something durable here; later ones may go early.
  coordinator.propose([{ key: "warm", write: true }]);
  deliver(cluster, []);
  deliver(cluster, deliver(cluster, deliver(cluster, [])));
  const { number } = coordinator.propose([{ key: "a", write: true }]);
  const ready = coordinator.ready();
  const early = ready.earlyMessages.filter((m) => m.type === "preaccept");
  assert.equal(early.length, 1, "n - e - 1 = 1 peer, before the record is durable");
  assert.ok(
    ready.records.some((r) => r.kind === "instance" && r.owner === 0 && r.number === number),
    "the record is in the same Ready",
  );
  assert.equal(ready.messages.filter((m) => m.type === "preaccept").length, 0);
  // The peer's matching reply arrives while the record is still being written:
  // without the coordinator's durable vote, n - e = 2 matching votes are not there.
  const peer = cluster[1]!;
  for (const message of early) peer.step(message);
  const peerReady = peer.ready();
  peer.advance();
  const replies = peerReady.messages.filter((m) => m.type === "preacceptok" && m.to === 0);
  assert.equal(replies.length, 1);
  coordinator.step(replies[0]!);
  assert.equal(coordinator.instance(0, number)!.phase, Phase.PreAccepted, "not decided yet");
  // The write completes: the vote counts and the fast path commits.
  coordinator.advance();
  assert.equal(coordinator.instance(0, number)!.phase, Phase.Committed);
  const next = coordinator.ready();
  assert.ok(next.messages.some((m) => m.type === "commit"));
  assert.deepEqual(next.decided.map((d) => d.number), [number]);
});

Deno.test("at most MAX_EARLY_PREACCEPTS proposals of one Ready go early", () => {
  const cluster = replicas(3);
  const coordinator = cluster[0]!;
  coordinator.propose([{ key: "warm", write: true }]);
  deliver(cluster, deliver(cluster, deliver(cluster, [])));
  for (let i = 0; i < MAX_EARLY_PREACCEPTS + 3; i++) {
    coordinator.propose([{ key: `k${i}`, write: true }]);
  }
  const ready = coordinator.ready();
  assert.equal(ready.earlyMessages.length, MAX_EARLY_PREACCEPTS);
  assert.equal(ready.messages.filter((m) => m.type === "preaccept").length, 3);
});

Deno.test("a restarted replica skips the numbers early PreAccepts may have taken", () => {
  const cluster = replicas(3);
  const coordinator = cluster[0]!;
  coordinator.propose([{ key: "warm", write: true }]);
  deliver(cluster, deliver(cluster, deliver(cluster, [])));
  coordinator.propose([{ key: "a", write: true }]);
  // Crash with the second Ready in flight: its early PreAccept reached replica 1,
  // its record did not reach the disk. The disk holds instance 0.1 only.
  const lost = coordinator.ready();
  assert.equal(lost.earlyMessages.length, 1);
  deliver(cluster, lost.earlyMessages);
  const durable = [...coordinator.instances()].filter((r) => r.number === 1);
  const restarted = new Replica<Command>({ id: 0, replicas: 3, conflicts: model }, {
    records: durable,
  });
  const { number } = restarted.propose([{ key: "b", write: true }]);
  assert.equal(number, 1 + MAX_EARLY_PREACCEPTS + 1);
  assert.ok(cluster[1]!.instance(0, 2) !== undefined, "the lost proposal lives on at the peer");
});
