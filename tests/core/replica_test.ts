import assert from "node:assert/strict";
import { Replica } from "../../src/core/replica.ts";
import { CoreCluster, type KeyCommand, keyCommandConflicts } from "./core_cluster.ts";
import { MAX_EARLY_PREACCEPTS } from "../../src/core/replica_state.ts";
import { type Message, NOP, Phase } from "../../src/core/types.ts";
import type { ConflictModel } from "../../src/core/conflict.ts";

type Command = KeyCommand;
const model = keyCommandConflicts;

/** A tiny cluster that delivers every message at once, in order: no faults. */
class Cluster extends CoreCluster {
  constructor(n: number) {
    super(Array.from({ length: n }, (_, id) => new Replica({ id, replicas: n, conflicts: model })));
  }
}

Deno.test("without conflicts a command commits on the fast path, PreAccept to n-e-1 peers only", () => {
  const cluster = new Cluster(5);
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  cluster.settle();
  const preAccepts = cluster.sent.filter((m) => m.type === "preaccept");
  assert.equal(preAccepts.length, 2, "thrifty: n - e - 1 = 2 peers");
  assert.equal(cluster.sent.filter((m) => m.type === "accept").length, 0);
  assert.equal(cluster.sent.filter((m) => m.type === "commit").length, 4, "commit goes to all");
  assert.equal(cluster.replicas[0]!.stats.fastCommits, 1);
  for (const executed of cluster.executed) assert.deepEqual(executed, ["0.1"]);
});

Deno.test("concurrent conflicting commands take the slow path and execute in one order everywhere", () => {
  const cluster = new Cluster(5);
  // Both propose before either hears of the other: the replies disagree.
  cluster.replicas[0]!.propose([{ key: "k", write: true }]);
  cluster.replicas[1]!.propose([{ key: "k", write: true }]);
  const first0 = cluster.replicas[0]!.ready();
  const first1 = cluster.replicas[1]!.ready();
  cluster.replicas[0]!.advance();
  cluster.replicas[1]!.advance();
  // Deliver replica 1's PreAccepts first everywhere, then replica 0's.
  for (const message of [...first1.messages, ...first0.messages]) {
    cluster.replicas[message.to]!.step(message);
  }
  cluster.settle();
  const stats = cluster.replicas.map((replica) => replica.stats);
  assert.ok(stats[0]!.slowCommits + stats[1]!.slowCommits >= 1);
  const orders = new Set(cluster.executed.map((executed) => executed.join(" ")));
  assert.equal(orders.size, 1, `orders differ: ${[...orders].join(" | ")}`);
  assert.equal(cluster.executed[0]!.length, 2);
});

Deno.test("reads do not conflict: concurrent reads of one key all take the fast path", () => {
  const cluster = new Cluster(3);
  for (const replica of cluster.replicas) replica.propose([{ key: "k", write: false }]);
  cluster.settle();
  const fast = cluster.replicas.reduce((sum, replica) => sum + replica.stats.fastCommits, 0);
  assert.equal(fast, 3);
});

Deno.test("a silent thrifty peer makes the coordinator widen the PreAccept to everyone", () => {
  const cluster = new Cluster(5);
  const silent = cluster.replicas[0]!.peerOrder[0]!;
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  const dropToSilent = (message: Message<Command>) => message.to === silent;
  cluster.settle(dropToSilent);
  assert.equal(cluster.replicas[0]!.instance(0, 1)!.phase, Phase.PreAccepted);
  for (let tick = 0; tick < 200; tick++) {
    for (const replica of cluster.replicas) replica.tick();
    cluster.settle(dropToSilent);
  }
  assert.equal(cluster.replicas[0]!.instance(0, 1)!.phase, Phase.Committed);
  const targets = new Set(cluster.sent.filter((m) => m.type === "preaccept").map((m) => m.to));
  assert.equal(targets.size, 4);
});

Deno.test("ready and advance enforce one Ready in flight", () => {
  const replica = new Replica<Command>({ id: 0, replicas: 3, conflicts: model });
  assert.throws(() => replica.advance(), /no Ready/);
  replica.propose([{ key: "a", write: true }]);
  replica.ready();
  assert.throws(() => replica.ready(), /not been advanced/);
  replica.advance();
});

Deno.test("a proposal needs commands, and a replica id must fit the cluster", () => {
  const replica = new Replica<Command>({ id: 0, replicas: 3, conflicts: model });
  assert.throws(() => replica.propose([]), RangeError);
  assert.throws(() => new Replica<Command>({ id: 3, replicas: 3, conflicts: model }), RangeError);
  assert.throws(() => new Replica<Command>({ id: 0, replicas: 4, conflicts: model }), RangeError);
});

Deno.test("a restarted coordinator resumes its unfinished proposal from its records", () => {
  const first = new Replica<Command>({ id: 0, replicas: 3, conflicts: model });
  first.propose([{ key: "a", write: true }]);
  const ready = first.ready();
  const records = ready.records.flatMap((r) => r.kind === "instance" ? [r] : []);
  // Crash after persisting, before sending: restart from the records alone.
  const restarted = new Replica<Command>({ id: 0, replicas: 3, conflicts: model }, { records });
  const resumed = restarted.ready();
  const preAccepts = resumed.messages.filter((m) => m.type === "preaccept");
  assert.equal(preAccepts.length, 2, "re-sent to every peer");
  restarted.advance();
  // A new proposal never reuses the instance number, nor one an early
  // PreAccept lost in the crash may have taken.
  assert.equal(restarted.propose([{ key: "b", write: true }]).number, 2 + MAX_EARLY_PREACCEPTS);
});

Deno.test("messages about pruned instances are ignored", () => {
  const cluster = new Cluster(3);
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  cluster.settle();
  for (let tick = 0; tick < 200; tick++) {
    for (const replica of cluster.replicas) replica.tick();
    cluster.settle();
  }
  assert.deepEqual([...cluster.replicas[1]!.pruneFloor], [1, 0, 0]);
  assert.equal(cluster.replicas[1]!.instance(0, 1), undefined);
  // A late duplicate Commit must not bring it back or run it again.
  cluster.replicas[1]!.step({
    type: "commit",
    from: 0,
    to: 1,
    owner: 0,
    number: 1,
    ballot: 0,
    command: NOP,
    deps: [0, 0, 0, 0],
  });
  assert.equal(cluster.replicas[1]!.hasReady(), false);
  assert.equal(cluster.replicas[1]!.instance(0, 1), undefined);
});

Deno.test("hasReady and hasUrgentReady only read: the executor runs in the input", () => {
  const cluster = new Cluster(3);
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  const first = cluster.replicas[0]!.ready();
  cluster.replicas[0]!.advance();
  for (const message of first.messages) cluster.replicas[message.to]!.step(message);
  const follower = cluster.replicas[first.messages[0]!.to]!;
  const reply = follower.ready();
  follower.advance();
  for (const message of reply.messages) cluster.replicas[0]!.step(message);
  // The fast-path commit executed inside step(), before any query.
  const coordinator = cluster.replicas[0]!;
  assert.equal(coordinator.stats.executedInstances, 1);
  const before = JSON.stringify([coordinator.stats, coordinator.describeState()]);
  for (let i = 0; i < 3; i++) {
    assert.equal(coordinator.hasUrgentReady(), true);
    assert.equal(coordinator.hasReady(), true);
  }
  assert.equal(JSON.stringify([coordinator.stats, coordinator.describeState()]), before);
  assert.deepEqual(coordinator.ready().executions.map((e) => e.number), [1]);
});

Deno.test("a replica holding a configuration change ignores PreAccepts of instances it has not seen, until the change is a Nop", () => {
  interface Fencing extends Command {
    readonly reconf?: boolean;
  }
  const fencingModel: ConflictModel<Fencing> = {
    accesses: (command) => [{ key: command.key, write: command.write }],
    fences: (command) => command.reconf === true,
  };
  const replica = new Replica<Fencing>({ id: 1, replicas: 3, conflicts: fencingModel });
  const replies = () => {
    const ready = replica.ready();
    replica.advance();
    return [...ready.earlyMessages, ...ready.messages].filter((m) => m.type === "preacceptok");
  };
  const preAccept = (owner: number, number: number, command: Fencing): Message<Fencing> => ({
    type: "preaccept",
    from: owner,
    to: 1,
    owner,
    number,
    command: [command],
    deps: [0, 0, 0],
  });
  replica.step(preAccept(0, 1, { key: "x", write: true }));
  assert.equal(replies().length, 1, "an ordinary PreAccept is answered");
  assert.equal(replica.fenced, false);
  replica.step(preAccept(2, 1, { key: "*", write: true, reconf: true }));
  assert.equal(replies().length, 1, "the change itself is answered");
  assert.equal(replica.fenced, true);
  replica.step(preAccept(0, 2, { key: "y", write: true }));
  assert.equal(replies().length, 0, "an unseen instance is ignored");
  assert.equal(replica.stats.fencedPreAccepts, 1);
  // A retransmitted PreAccept of an instance it holds is answered again.
  replica.step(preAccept(0, 1, { key: "x", write: true }));
  assert.equal(replies().length, 1);
  // The change is replaced by a Nop (its recovery found no quorum): the fence lifts.
  replica.step({
    type: "commit",
    from: 2,
    to: 1,
    owner: 2,
    number: 1,
    ballot: 1,
    command: NOP,
    deps: [0, 0, 0],
  });
  assert.equal(replica.fenced, false);
  replica.step(preAccept(0, 3, { key: "y", write: true }));
  assert.equal(replies().length, 1);
});
