/**
 * Positions that do not vote: learners (members that receive everything and
 * count in no quorum) and removed members (positions sent nothing and never
 * heard). A replica's position is its member id, and ids are never reused,
 * so the core has a row per position ever used (`ReplicaOptions.voters`,
 * `ReplicaOptions.members`).
 */

import assert from "node:assert/strict";
import type { ConflictModel } from "../../src/core/conflict.ts";
import { quorumSizes } from "../../src/core/quorum.ts";
import { Replica, type ReplicaOptions } from "../../src/core/replica.ts";
import { type Message, Phase } from "../../src/core/types.ts";

interface Command {
  readonly key: string;
  readonly write: boolean;
}

const model: ConflictModel<Command> = {
  accesses: (command) => [{ key: command.key, write: command.write }],
};

const write = (key: string): Command => ({ key, write: true });

/** Messages only voters are sent (the commit protocol's and recovery's). */
const VOTER_ONLY = new Set(["preaccept", "accept", "recover", "validate", "waiting"]);

type Positions = Pick<ReplicaOptions<Command>, "voters" | "members" | "timing">;

/**
 * A cluster of `replicas` positions delivering every message at once, in
 * order; a replica runs at each member position only.
 */
class Cluster {
  readonly replicas: (Replica<Command> | undefined)[];
  readonly executed: string[][];
  readonly sent: Message<Command>[] = [];

  constructor(replicas: number, positions: Positions) {
    const members = positions.members ?? Array.from({ length: replicas }, (_, id) => id);
    this.replicas = Array.from(
      { length: replicas },
      (_, id) =>
        members.includes(id)
          ? new Replica<Command>({ id, replicas, conflicts: model, ...positions })
          : undefined,
    );
    this.executed = this.replicas.map(() => []);
  }

  replica(id: number): Replica<Command> {
    const replica = this.replicas[id];
    assert.ok(replica !== undefined, `no replica at position ${id}`);
    return replica;
  }

  get live(): Replica<Command>[] {
    return this.replicas.filter((replica) => replica !== undefined);
  }

  /** Runs every Ready loop until nothing moves; `drop` loses messages. */
  settle(drop: (message: Message<Command>) => boolean = () => false): void {
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      for (const replica of this.live) {
        while (replica.hasReady()) {
          moved = true;
          const ready = replica.ready();
          for (const execution of ready.executions) {
            this.executed[replica.id]!.push(`${execution.owner}.${execution.number}`);
          }
          replica.advance();
          for (const message of [...ready.earlyMessages, ...ready.messages]) {
            this.sent.push(message);
            // A message to a position with no replica is lost (and asserted on).
            if (!drop(message)) this.replicas[message.to]?.step(message);
          }
        }
      }
      if (!moved) return;
    }
    throw new Error("The cluster did not settle in 1000 rounds");
  }

  /** Ticks every replica `ticks` times, settling after each. */
  run(ticks: number, drop?: (message: Message<Command>) => boolean): void {
    for (let tick = 0; tick < ticks; tick++) {
      for (const replica of this.live) replica.tick();
      this.settle(drop);
    }
  }
}

/** Takes one replica's Ready by hand: its messages, after advancing it. */
function take(replica: Replica<Command>): Message<Command>[] {
  if (!replica.hasReady()) return [];
  const ready = replica.ready();
  replica.advance();
  return [...ready.earlyMessages, ...ready.messages];
}

Deno.test("quorum sizes follow the number of voters, not of positions", () => {
  const cases: { replicas: number; voters: number[]; n: number }[] = [
    { replicas: 4, voters: [0, 1, 2], n: 3 },
    { replicas: 4, voters: [0, 2, 3], n: 3 },
    { replicas: 6, voters: [0, 1, 2, 3, 5], n: 5 },
    { replicas: 9, voters: [2, 5, 8], n: 3 },
  ];
  for (const { replicas, voters, n } of cases) {
    const replica = new Replica<Command>({ id: voters[0]!, replicas, voters, conflicts: model });
    assert.deepEqual(replica.quorum, quorumSizes(n), `${replicas} positions, voters ${voters}`);
    assert.equal(replica.isVoter, true);
    assert.deepEqual(replica.voters, voters);
    assert.deepEqual(replica.members, Array.from({ length: replicas }, (_, id) => id));
  }
  // By default every position votes, as before.
  const plain = new Replica<Command>({ id: 1, replicas: 5, conflicts: model });
  assert.deepEqual(plain.quorum, quorumSizes(5));
  assert.deepEqual(plain.voters, [0, 1, 2, 3, 4]);
  assert.deepEqual(plain.peerOrder, [2, 3, 4, 0]);
  // The thrifty order holds voters only, and setPeerOrder keeps it so.
  const voter = new Replica<Command>({ id: 0, replicas: 5, voters: [4, 0, 2], conflicts: model });
  assert.deepEqual(voter.voters, [0, 2, 4], "sorted");
  assert.deepEqual(voter.peerOrder, [2, 4]);
  voter.setPeerOrder([3, 4, 1]);
  assert.deepEqual(voter.peerOrder, [4, 2]);
  const learner = new Replica<Command>({ id: 3, replicas: 4, voters: [0, 1, 2], conflicts: model });
  assert.equal(learner.isVoter, false);
  assert.deepEqual(learner.peerOrder, [0, 1, 2]);
});

Deno.test("voters and members are checked", () => {
  const bad: (Partial<ReplicaOptions<Command>> & { why: string })[] = [
    { why: "no voters", replicas: 4, voters: [] },
    { why: "an even number of voters", replicas: 4, voters: [0, 1] },
    { why: "one voter: quorumSizes takes 3 or more", replicas: 4, voters: [0] },
    { why: "a repeated voter", replicas: 4, voters: [0, 1, 1] },
    { why: "a voter outside the positions", replicas: 4, voters: [0, 1, 4] },
    { why: "a fractional voter", replicas: 4, voters: [0, 1, 2.5] },
    { why: "a voter that is not a member", replicas: 4, voters: [0, 1, 2], members: [0, 1, 3] },
    { why: "a repeated member", replicas: 4, voters: [0, 1, 2], members: [0, 1, 2, 2] },
    {
      why: "a member outside the positions",
      replicas: 4,
      voters: [0, 1, 2],
      members: [0, 1, 2, 4],
    },
    { why: "this replica not a member", replicas: 4, id: 3, voters: [0, 1, 2], members: [0, 1, 2] },
    { why: "more positions than the bitmasks allow", replicas: 10, voters: [0, 1, 2] },
    { why: "every position votes by default, so an even count", replicas: 4 },
  ];
  for (const { why, ...options } of bad) {
    assert.throws(
      () => new Replica<Command>({ id: 0, replicas: 3, conflicts: model, ...options }),
      RangeError,
      why,
    );
  }
  // Nine positions is the most, with as few voters as wanted.
  new Replica<Command>({ id: 8, replicas: 9, voters: [0, 4, 8], conflicts: model });
});

Deno.test("a learner is sent no PreAccept or Accept, executes what the voters execute in their order, and cannot propose", () => {
  const cluster = new Cluster(4, { voters: [0, 1, 2] });
  const learner = cluster.replica(3);
  assert.throws(() => learner.propose([write("k")]), /learner cannot propose/);
  // Concurrent conflicting proposals: replies disagree, some take the slow
  // path. Every command writes one key, so there is one order to agree on.
  for (let round = 0; round < 3; round++) {
    for (const id of [0, 1, 2]) cluster.replica(id).propose([write("k")]);
    const [first0, first1] = [take(cluster.replica(0)), take(cluster.replica(1))];
    for (const message of [...first1, ...first0]) cluster.replicas[message.to]!.step(message);
    cluster.settle();
  }
  const slow = cluster.live.reduce((sum, replica) => sum + replica.stats.slowCommits, 0);
  assert.ok(slow >= 1, "some commands took the slow path (Accept)");
  cluster.run(200);
  const toLearner = cluster.sent.filter((message) => message.to === 3);
  assert.deepEqual(toLearner.filter((message) => VOTER_ONLY.has(message.type)), []);
  assert.ok(toLearner.some((message) => message.type === "commit"), "commits reach the learner");
  assert.ok(toLearner.some((message) => message.type === "frontier"), "so does gossip");
  const fromLearner = cluster.sent.filter((message) => message.from === 3);
  assert.deepEqual(new Set(fromLearner.map((message) => message.type)), new Set(["frontier"]));
  assert.equal(cluster.executed[0]!.length, 9);
  for (const id of [1, 2, 3]) assert.deepEqual(cluster.executed[id], cluster.executed[0], `${id}`);
  // Every member, the learner included, executed everything: all prune it.
  for (const replica of cluster.live) {
    assert.deepEqual([...replica.pruneFloor], [...replica.executedFrontier], `${replica.id}`);
    assert.deepEqual([...replica.pruneFloor], [3, 3, 3, 0]);
  }
  assert.equal(learner.stats.recoveriesStarted, 0);
});

Deno.test("a learner that missed a commit asks the members for it and never recovers", () => {
  const cluster = new Cluster(4, { voters: [0, 1, 2] });
  const learner = cluster.replica(3);
  cluster.replica(0).propose([write("a")]);
  // The first Commit of 0.1 to the learner is lost; later ones (answers to
  // its commit requests) arrive.
  let lostOne = false;
  const lost = (message: Message<Command>) => {
    if (lostOne || message.type !== "commit" || message.to !== 3 || message.owner !== 0) {
      return false;
    }
    lostOne = true;
    return true;
  };
  cluster.settle(lost);
  cluster.replica(1).propose([write("a")]);
  cluster.settle(lost);
  // The learner holds 1.1, which depends on 0.1, which it never heard committed.
  assert.equal(learner.instance(1, 1)?.phase, Phase.Committed);
  assert.equal(learner.instance(0, 1), undefined);
  assert.deepEqual(cluster.executed[3], []);
  cluster.run(400);
  assert.deepEqual(cluster.executed[3], ["0.1", "1.1"]);
  assert.deepEqual(cluster.executed[3], cluster.executed[0]);
  assert.equal(learner.stats.recoveriesStarted, 0);
  const requests = cluster.sent.filter((m) => m.type === "commitrequest" && m.from === 3);
  assert.ok(requests.length > 0);
  assert.deepEqual(new Set(requests.map((m) => m.to)), new Set([0, 1, 2]));
  // The voters kept 0.1 for the learner until it executed it.
  for (const replica of cluster.live) assert.deepEqual([...replica.pruneFloor], [1, 1, 0, 0]);
});

Deno.test("a removed member's position is sent nothing, its messages are ignored, and pruning goes on without it", () => {
  const cluster = new Cluster(4, { voters: [0, 2, 3], members: [0, 2, 3] });
  assert.deepEqual(cluster.replica(0).peerOrder, [2, 3]);
  for (const id of [0, 2, 3]) cluster.replica(id).propose([write("k")]);
  cluster.settle();
  cluster.replica(3).propose([write("k")]);
  cluster.run(200);
  assert.deepEqual(cluster.sent.filter((message) => message.to === 1), []);
  for (const id of [2, 3]) assert.deepEqual(cluster.executed[id], cluster.executed[0]);
  assert.equal(cluster.executed[0]!.length, 4);
  for (const replica of cluster.live) {
    assert.deepEqual([...replica.pruneFloor], [1, 0, 1, 2], `${replica.id}`);
    assert.equal(replica.executionLag()[1], 0, "never a peer behind");
    assert.deepEqual(replica.prunedPastPeers(), []);
    assert.deepEqual(replica.snapshotSources(), []);
  }
  // Whatever comes from position 1 is ignored.
  const replica = cluster.replica(0);
  replica.step({
    type: "preaccept",
    from: 1,
    to: 0,
    owner: 1,
    number: 1,
    command: [write("z")],
    deps: [0, 0, 0, 0, 0],
  });
  replica.step({ type: "commitrequest", from: 1, to: 0, owner: 0, number: 1, count: 1 });
  assert.equal(replica.hasReady(), false);
  assert.equal(replica.instance(1, 1), undefined);
});

Deno.test("a PreAcceptOK from a learner does not count towards the fast quorum", () => {
  const coordinator = new Replica<Command>({
    id: 0,
    replicas: 4,
    voters: [0, 1, 2],
    conflicts: model,
  });
  coordinator.propose([write("a")]);
  const preAccepts = take(coordinator).filter((message) => message.type === "preaccept");
  assert.equal(preAccepts.length, 1, "thrifty over 3 voters: n - e - 1 = 1 peer");
  const target = preAccepts[0]!;
  assert.notEqual(target.to, 3);
  const deps = target.type === "preaccept" ? target.deps : [];
  const ok = (from: number): Message<Command> => ({
    type: "preacceptok",
    from,
    to: 0,
    owner: 0,
    number: 1,
    deps,
  });
  coordinator.step(ok(3));
  assert.equal(coordinator.instance(0, 1)!.phase, Phase.PreAccepted, "the learner's reply");
  coordinator.step(ok(target.to));
  assert.equal(coordinator.instance(0, 1)!.phase, Phase.Committed);
  assert.equal(coordinator.stats.fastCommits, 1);
  const commits = take(coordinator).filter((message) => message.type === "commit");
  assert.deepEqual(commits.map((message) => message.to), [1, 2, 3], "commits go to every member");
});

Deno.test("a RecoverOK or an AcceptOK from a learner does not count towards a quorum", () => {
  // Short timers, so that the orphan is recovered within a few hundred ticks.
  const timing = {
    defaultRoundTripTicks: 1,
    orphanTicks: 20,
    recoveryTicks: 10,
    recoveryStaggerTicks: 1,
    commitRequestTicks: 5,
  };
  const recoverer = new Replica<Command>({
    id: 0,
    replicas: 4,
    voters: [0, 1, 2],
    conflicts: model,
    timing,
  });
  // Replica 1's proposal reached replica 0, then replica 1 fell silent.
  recoverer.step({
    type: "preaccept",
    from: 1,
    to: 0,
    owner: 1,
    number: 1,
    command: [write("a")],
    deps: [0, 0, 0, 0, 0],
  });
  take(recoverer);
  let recovers: Message<Command>[] = [];
  for (let tick = 0; tick < 1000 && recovers.length === 0; tick++) {
    recoverer.tick();
    recovers = take(recoverer).filter((message) => message.type === "recover");
  }
  assert.deepEqual(recovers.map((message) => message.to), [1, 2], "Recover goes to voters only");
  const ballot = recovers[0]!.type === "recover" ? recovers[0]!.ballot : -1;
  const recoverOk = (from: number): Message<Command> => ({
    type: "recoverok",
    from,
    to: 0,
    owner: 1,
    number: 1,
    ballot,
    acceptedBallot: 0,
    phase: Phase.Initial,
  });
  // n = 3: the recoverer's own reply and one more decide; the learner's is not one.
  recoverer.step(recoverOk(3));
  assert.deepEqual(take(recoverer), [], "no decision yet");
  assert.equal(recoverer.stats.recoveryOutcomes.nopCoordinatorAnswered, 0);
  // The coordinator answers: it can no longer take the fast path, so a Nop.
  recoverer.step(recoverOk(1));
  assert.equal(recoverer.stats.recoveryOutcomes.nopCoordinatorAnswered, 1);
  const accepts = take(recoverer).filter((message) => message.type === "accept");
  assert.deepEqual(accepts.map((message) => message.to), [1, 2], "Accept goes to voters only");
  // Likewise the recoverer's own AcceptOK and one more.
  const acceptOk = (from: number): Message<Command> => ({
    type: "acceptok",
    from,
    to: 0,
    owner: 1,
    number: 1,
    ballot,
  });
  recoverer.step(acceptOk(3));
  assert.equal(recoverer.instance(1, 1)!.phase, Phase.Accepted);
  recoverer.step(acceptOk(2));
  assert.equal(recoverer.instance(1, 1)!.phase, Phase.Committed);
});

Deno.test("a learner ignores the commit protocol's and recovery's requests", () => {
  const learner = new Replica<Command>({ id: 3, replicas: 4, voters: [0, 1, 2], conflicts: model });
  const base = { from: 0, to: 3, owner: 0, number: 1 } as const;
  learner.step({ ...base, type: "preaccept", command: [write("a")], deps: [0, 0, 0, 0, 0] });
  learner.step({
    ...base,
    type: "accept",
    ballot: 0,
    command: [write("a")],
    deps: [0, 0, 0, 0, 0],
  });
  learner.step({ ...base, type: "recover", ballot: 1 });
  learner.step({
    ...base,
    type: "validate",
    ballot: 1,
    command: [write("a")],
    deps: [0, 0, 0, 0, 0],
  });
  assert.equal(learner.hasReady(), false);
  assert.equal(learner.instance(0, 1), undefined);
});
