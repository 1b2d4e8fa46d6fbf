import assert from "node:assert/strict";
import { type Access, ConflictIndex } from "../../src/core/conflict.ts";
import { Executor } from "../../src/core/executor.ts";
import { type Instance, instanceKey, newInstance } from "../../src/core/instance.ts";
import {
  decideQuorumRead,
  MAX_QUORUM_READS,
  QuorumReadTable,
  type QuorumReadView,
  readDepsAnswer,
  readRetryTargets,
  type UnsafeQuorumReadOptions,
} from "../../src/core/quorum_read.ts";
import { Replica } from "../../src/core/replica.ts";
import { CoreCluster, type KeyCommand, keyCommandConflicts } from "./core_cluster.ts";
import { type Message, NOP, Phase } from "../../src/core/types.ts";
import { validateMessage } from "../../src/core/validate.ts";

type Command = KeyCommand;
const model = keyCommandConflicts;

const read = (key: string): Access => ({ key, write: false });
const write = (key: string): Access => ({ key, write: true });
const span = (key: string, end: string, isWrite = false): Access => ({ key, end, write: isWrite });

Deno.test("decideQuorumRead: collect a majority, wait for what it names, then for it to be applied", () => {
  const view = (
    blocker: number | undefined,
    queued: number,
    applied: number,
  ): QuorumReadView => ({
    readBlocker: () => blocker,
    executionsQueued: queued,
    executionsApplied: applied,
  });
  const base = { accesses: [read("a")], deps: [1, 0, 0], mark: undefined };
  const table: [
    string,
    Parameters<typeof decideQuorumRead>[0],
    QuorumReadView,
    UnsafeQuorumReadOptions,
    ReturnType<typeof decideQuorumRead>,
  ][] = [
    ["one answer of two", { ...base, replies: 1, needed: 2 }, view(undefined, 0, 0), {}, {
      kind: "collect",
      missing: 1,
    }],
    ["a named instance not executed", { ...base, replies: 2, needed: 2 }, view(7, 0, 0), {}, {
      kind: "blocked",
      key: 7,
    }],
    [
      "everything executed and applied",
      { ...base, replies: 2, needed: 2 },
      view(undefined, 5, 5),
      {},
      {
        kind: "serve",
      },
    ],
    ["executed, not yet applied", { ...base, replies: 3, needed: 2 }, view(undefined, 6, 5), {}, {
      kind: "applying",
      mark: 6,
    }],
    // Once marked, later executions do not hold it back.
    [
      "marked, applied past the mark",
      { ...base, replies: 2, needed: 2, mark: 6 },
      view(9, 9, 6),
      {},
      {
        kind: "serve",
      },
    ],
    [
      "marked, not yet applied",
      { ...base, replies: 2, needed: 2, mark: 6 },
      view(undefined, 9, 5),
      {},
      {
        kind: "applying",
        mark: 6,
      },
    ],
    // The broken rule the negative tests use: it serves with an instance named and not executed.
    ["unsafe: serves at once", { ...base, replies: 2, needed: 2 }, view(7, 0, 0), {
      serveWithoutWaiting: true,
    }, { kind: "serve" }],
    ["unsafe: still collects", { ...base, replies: 1, needed: 2 }, view(7, 0, 0), {
      serveWithoutWaiting: true,
    }, { kind: "collect", missing: 1 }],
  ];
  for (const [name, input, readView, unsafe, expected] of table) {
    assert.deepEqual(decideQuorumRead(input, readView, unsafe), expected, name);
  }
});

Deno.test("readRetryTargets: first the voters not asked, then the silent ones", () => {
  const peers = 0b11110; // voters 1..4, the reader is 0
  assert.equal(
    readRetryTargets({ widened: false, contacted: 0b00110, replied: 0b00011 }, peers),
    0b11000,
  );
  assert.equal(
    readRetryTargets({ widened: true, contacted: 0b11110, replied: 0b00011 }, peers),
    0b11100,
  );
  assert.equal(readRetryTargets({ widened: true, contacted: 0b11110, replied: 0b11111 }, peers), 0);
});

Deno.test("readDepsAnswer: the conflicting instances a voter knows, forgotten keys and its prune floor included", () => {
  const index = new ConflictIndex(3);
  index.add(0, 4, [write("a")], 1);
  index.add(1, 2, [read("a")], 1); // a read does not conflict with a read
  index.add(2, 9, [write("b")], 1);
  const table: [string, readonly Access[], number[], number[]][] = [
    ["a read of a: the latest write of a per row", [read("a")], [0, 0, 0], [4, 0, 0]],
    ["the prune floor raises it", [read("a")], [1, 3, 2], [4, 3, 2]],
    ["a read of b", [read("b")], [0, 0, 0], [0, 0, 9]],
    ["a span read: every write", [span("", "\uffff")], [0, 0, 0], [4, 0, 9]],
    ["a key never seen: the absent floor", [read("zzz")], [0, 0, 0], [0, 0, 0]],
  ];
  for (const [name, accesses, floor, expected] of table) {
    assert.deepEqual(readDepsAnswer(index, accesses, floor, 3), expected, name);
  }
  // Keys everyone pruned past are forgotten: the absent floor covers them.
  index.forgetBelow([4, 2, 9]);
  assert.equal(index.size, 0);
  assert.deepEqual(readDepsAnswer(index, [read("a")], [0, 0, 0], 3), [4, 2, 9]);
});

/** An executor over a table of instances built by hand. */
function executorWith(
  specs: readonly {
    owner: number;
    number: number;
    accesses?: Access[];
    phase?: Phase;
    nop?: boolean;
  }[],
): { executor: Executor<string>; instances: Map<number, Instance<string>> } {
  const instances = new Map<number, Instance<string>>();
  const executor = new Executor<string>(3, (key) => instances.get(key));
  for (const spec of specs) {
    const instance = newInstance<string>(spec.owner, spec.number, 0);
    instance.phase = spec.phase ?? Phase.PreAccepted;
    instance.accesses = spec.accesses;
    instance.command = spec.nop === true ? NOP : ["c"];
    instance.deps = [0, 0, 0, 0];
    instances.set(instance.key, instance);
  }
  for (const instance of instances.values()) executor.noteKnown(instance);
  return { executor, instances };
}

Deno.test("Executor.readBlocker: every conflicting instance of the set must be executed, Nops and reads aside", () => {
  const { executor } = executorWith([
    { owner: 0, number: 1, accesses: [write("a")], phase: Phase.Committed },
    { owner: 0, number: 2, accesses: [write("a")], phase: Phase.Committed, nop: true },
    { owner: 0, number: 3, accesses: [read("a")] },
    { owner: 1, number: 1, accesses: [write("b")] },
    { owner: 2, number: 1, accesses: [span("", "\uffff", true)] }, // a configuration change
  ]);
  const table: [string, readonly Access[], number[], number | undefined][] = [
    ["nothing named", [read("a")], [0, 0, 0], undefined],
    ["0.1 writes a, committed, not executed", [read("a")], [1, 0, 0], instanceKey(0, 1)],
    // 0.2 is a committed Nop and 0.3 a read: a later instance of the row
    // does not stand for 0.1.
    ["the latest of the row is a Nop", [read("a")], [3, 0, 0], instanceKey(0, 1)],
    ["another key", [read("c")], [3, 0, 0], undefined],
    ["1.1 uncommitted writes b", [read("b")], [0, 1, 0], instanceKey(1, 1)],
    ["1.2 is not known here", [read("b")], [0, 2, 0], instanceKey(1, 2)],
    ["a change writes every key", [read("c")], [0, 0, 1], instanceKey(2, 1)],
    ["a span read sees 0.1", [span("a", "b")], [3, 0, 0], instanceKey(0, 1)],
    ["a span read away from it", [span("x", "y")], [3, 1, 0], undefined],
  ];
  for (const [name, accesses, bound, expected] of table) {
    assert.equal(executor.readBlocker(accesses, bound), expected, name);
  }
});

/** A cluster of cores that delivers messages in order, with a message filter. */
class ReadCluster extends CoreCluster {
  readonly served: Map<string, string[]> = new Map();

  constructor(n: number, options: { unsafe?: UnsafeQuorumReadOptions; seqBase?: number } = {}) {
    super(Array.from({ length: n }, (_, id) =>
      new Replica({
        id,
        replicas: n,
        conflicts: model,
        ...(options.seqBase === undefined ? {} : { quorumReadSeqBase: options.seqBase }),
        ...(options.unsafe === undefined ? {} : { unsafeQuorumReads: options.unsafe }),
      })));
  }

  run(ticks: number, drop?: (message: Message<Command>) => boolean): void {
    for (let tick = 0; tick < ticks; tick++) {
      for (const replica of this.replicas) replica.tick();
      this.settle(drop);
    }
  }

  /** Outcomes of replica `id`'s reads so far, as `seq:outcome`. */
  outcomes(id: number): string[] {
    return this.replicas[id]!.takeQuorumReadOutcomes().map((outcome) =>
      `${outcome.seq}:${outcome.outcome}`
    );
  }
}

Deno.test("a quorum read with nothing pending is served after one round trip to a majority", () => {
  for (const n of [3, 5]) {
    const cluster = new ReadCluster(n);
    const seq = cluster.replicas[0]!.startQuorumRead([read("a")], { timeoutTicks: 1000 });
    assert.equal(seq, 1);
    cluster.settle();
    assert.deepEqual(cluster.outcomes(0), ["1:serve"], `n=${n}`);
    const kinds = cluster.sent.map((message) => message.type);
    const majorityPeers = Math.floor(n / 2);
    assert.deepEqual(kinds.sort(), [
      ...new Array(majorityPeers).fill("readdeps"),
      ...new Array(majorityPeers).fill("readdepsok"),
    ], `n=${n}: thrifty, one round trip to the closest majority`);
    assert.equal(cluster.replicas[0]!.instanceCount, 0, "nothing recorded");
    assert.equal(cluster.replicas[1]!.instanceCount, 0, "nothing recorded");
  }
});

for (const unsafe of [false, true]) {
  Deno.test(
    `a quorum read at a replica that missed a write waits until it applied it${
      unsafe ? " (negative: served without waiting, it reads stale state)" : ""
    }`,
    () => {
      const cluster = new ReadCluster(3, unsafe ? { unsafe: { serveWithoutWaiting: true } } : {});
      // 0.1 writes "a", decided by 0 and 1 on the fast path; 2 hears nothing of it.
      const cutOff = (message: Message<Command>) => message.to === 2 || message.from === 2;
      cluster.replicas[0]!.propose([{ key: "a", write: true }]);
      cluster.settle(cutOff);
      assert.deepEqual(cluster.executed[0], ["0.1"]);
      assert.deepEqual(cluster.executed[2], []);
      // Now a read of "a" at 2 (commits to 2 are still lost): 0's answer names 0.1.
      const lostCommits = (message: Message<Command>) =>
        message.to === 2 && message.type === "commit";
      cluster.replicas[2]!.startQuorumRead([read("a")], { timeoutTicks: 1000 });
      cluster.settle(lostCommits);
      if (unsafe) {
        assert.deepEqual(cluster.outcomes(2), ["1:serve"]);
        assert.deepEqual(cluster.executed[2], [], "served from a state without 0.1: stale");
        return;
      }
      assert.deepEqual(cluster.outcomes(2), [], "0.1 is named and unknown here");
      // A read of another key is not held up by 0.1.
      cluster.replicas[2]!.startQuorumRead([read("b")], { timeoutTicks: 1000 });
      cluster.settle(lostCommits);
      assert.deepEqual(cluster.outcomes(2), ["2:serve"]);
      // The housekeeping asks the peers for 0.1's commit; it arrives, executes, is applied.
      let ticks = 0;
      let outcomes: string[] = [];
      for (; ticks < 500 && outcomes.length === 0; ticks++) {
        cluster.run(1);
        outcomes = cluster.outcomes(2);
      }
      assert.deepEqual(outcomes, ["1:serve"]);
      assert.deepEqual(cluster.executed[2], ["0.1"]);
      assert.ok(cluster.sent.some((m) => m.type === "commitrequest" && m.from === 2));
      const status = cluster.replicas[2]!.quorumReadStatus();
      assert.equal(status.served, 2);
      assert.equal(status.waited, 1);
      assert.equal(status.inFlight, 0);
    },
  );
}

Deno.test("a quorum read waits for an executed instance to be applied (its Ready advanced)", () => {
  const cluster = new ReadCluster(3);
  const [reader, peer] = [cluster.replicas[0]!, cluster.replicas[1]!];
  /** Takes `replica`'s Ready, advances it unless told not to, and returns its messages. */
  const take = (replica: Replica<Command>, advance = true) => {
    const ready = replica.ready();
    if (advance) replica.advance();
    return { ready, messages: [...ready.earlyMessages, ...ready.messages] };
  };
  const deliver = (messages: readonly Message<Command>[], type: string) => {
    for (const message of messages) {
      if (message.type === type) cluster.replicas[message.to]!.step(message);
    }
  };
  reader.propose([{ key: "a", write: true }]);
  deliver(take(reader).messages, "preaccept"); // to 1, the thrifty fast quorum
  const preAcceptOks = take(peer).messages;
  // The read starts: its own answer and 1's both name 0.1.
  reader.startQuorumRead([read("a")], { timeoutTicks: 1000 });
  deliver(take(reader).messages, "readdeps");
  const readDepsOks = take(peer).messages;
  assert.deepEqual(readDepsOks.map((m) => m.type), ["readdepsok"]);
  // 0.1 commits and executes at the reader; the Ready carrying it is in flight.
  deliver(preAcceptOks, "preacceptok");
  const executing = take(reader, false);
  assert.deepEqual(executing.ready.executions.map((e) => `${e.owner}.${e.number}`), ["0.1"]);
  deliver(readDepsOks, "readdepsok");
  assert.deepEqual(reader.takeQuorumReadOutcomes(), [], "executed, not applied: not yet");
  reader.advance();
  assert.deepEqual(cluster.outcomes(0), ["1:serve"]);
});

Deno.test("a quorum read recovers a named instance whose coordinator died before committing it", () => {
  const cluster = new ReadCluster(3);
  // 0.1 writes "a"; 1 pre-accepts it, then 0 dies: nobody commits it.
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  cluster.settle((message) => message.to === 2 || message.type === "preacceptok");
  assert.equal(cluster.replicas[1]!.instance(0, 1)?.phase, Phase.PreAccepted);
  const zeroDown = (message: Message<Command>) => message.to === 0 || message.from === 0;
  cluster.replicas[2]!.startQuorumRead([read("a")], { timeoutTicks: 5000 });
  let outcomes: string[] = [];
  let ticks = 0;
  for (; ticks < 5000 && outcomes.length === 0; ticks++) {
    cluster.run(1, zeroDown);
    outcomes = cluster.outcomes(2);
  }
  assert.deepEqual(outcomes, ["1:serve"]);
  // Recovered (the command or a Nop) and applied at the reader before it served.
  assert.equal(cluster.replicas[2]!.instance(0, 1)?.phase, Phase.Committed);
  assert.ok(
    cluster.replicas[2]!.stats.recoveriesStarted + cluster.replicas[1]!.stats.recoveriesStarted > 0,
  );
  console.log(`served after ${ticks} ticks (recovery delay included)`);
});

Deno.test("a quorum read asks further voters when the closest are silent, and gives up at its deadline", () => {
  const cluster = new ReadCluster(5);
  const reader = cluster.replicas[0]!;
  // Replicas 1 and 2 (the closest) are down: 3 and 4 make the majority.
  const down = (message: Message<Command>) => message.to === 1 || message.to === 2;
  reader.startQuorumRead([read("a")], { timeoutTicks: 1000 });
  cluster.settle(down);
  assert.deepEqual(cluster.outcomes(0), []);
  let ticks = 0;
  let outcomes: string[] = [];
  for (; ticks < 200 && outcomes.length === 0; ticks++) {
    cluster.run(1, down);
    outcomes = cluster.outcomes(0);
  }
  assert.deepEqual(outcomes, ["1:serve"]);
  const asked = new Set(cluster.sent.filter((m) => m.type === "readdeps").map((m) => m.to));
  assert.deepEqual([...asked].sort(), [1, 2, 3, 4]);
  // A minority only: no majority ever answers, and the read gives up in time.
  const minority = (message: Message<Command>) => message.to !== 0 && message.to !== 3;
  reader.startQuorumRead([read("a")], { timeoutTicks: 300 });
  for (ticks = 0; ticks < 400 && outcomes.length <= 1; ticks++) {
    cluster.run(1, minority);
    outcomes = [...outcomes, ...cluster.outcomes(0)];
  }
  assert.deepEqual(outcomes, ["1:serve", "2:fallback"]);
  assert.ok(ticks >= 299 && ticks <= 301, `gave up after ${ticks} ticks`);
  const status = reader.quorumReadStatus();
  assert.equal(status.timedOut, 1);
  assert.ok(status.retransmissions >= 2, `${status.retransmissions} retransmissions`);
});

Deno.test("an answer counts once, from a voter, for the read it answers", () => {
  const cluster = new ReadCluster(5, { seqBase: 1000 });
  const reader = cluster.replicas[0]!;
  const seq = reader.startQuorumRead([read("a")], { timeoutTicks: 1000 })!;
  assert.equal(seq, 1000);
  const answer = (from: number, readSeq: number): Message<Command> => ({
    type: "readdepsok",
    from,
    to: 0,
    seq: readSeq,
    deps: [0, 0, 0, 0, 0],
  });
  // An answer to a read of an earlier incarnation (numbered from 1) is not this read's.
  reader.step(answer(1, 1));
  reader.step(answer(2, 1));
  // The same voter twice is one answer.
  reader.step(answer(3, seq));
  reader.step(answer(3, seq));
  assert.deepEqual(reader.takeQuorumReadOutcomes(), []);
  reader.step(answer(4, seq));
  assert.deepEqual(reader.takeQuorumReadOutcomes(), [{ seq, outcome: "serve" }]);
});

Deno.test("the quorum read table is bounded", () => {
  const table = new QuorumReadTable();
  for (let i = 0; i < MAX_QUORUM_READS; i++) table.add([read("a")], 0, 10, 3);
  assert.equal(table.full, true);
  const cluster = new ReadCluster(3);
  for (let i = 0; i < MAX_QUORUM_READS; i++) {
    assert.notEqual(
      cluster.replicas[0]!.startQuorumRead([read("a")], { timeoutTicks: 10 }),
      undefined,
    );
  }
  assert.equal(cluster.replicas[0]!.startQuorumRead([read("a")], { timeoutTicks: 10 }), undefined);
  assert.equal(cluster.replicas[0]!.quorumReadStatus().refused, 1);
});

Deno.test("read messages are validated", () => {
  const options = { replicas: 3, isCommand: (_: unknown): _ is Command => true };
  const ok = [
    { type: "readdeps", from: 0, to: 1, seq: 5, accesses: [{ key: "a", write: false }] },
    {
      type: "readdeps",
      from: 0,
      to: 1,
      seq: 5,
      accesses: [{ key: "a/", end: "a0", write: false }],
    },
    { type: "readdepsok", from: 1, to: 0, seq: 5, deps: [0, 3, 1] },
  ];
  for (const message of ok) assert.equal(validateMessage(message, options).ok, true);
  const bad = [
    { type: "readdeps", from: 0, to: 1, seq: 0, accesses: [{ key: "a", write: false }] },
    { type: "readdeps", from: 0, to: 1, seq: 5, accesses: [] },
    { type: "readdeps", from: 0, to: 1, seq: 5, accesses: [{ key: "a", write: true }] },
    { type: "readdeps", from: 0, to: 1, seq: 5, accesses: [{ key: 7, write: false }] },
    {
      type: "readdeps",
      from: 0,
      to: 1,
      seq: 5,
      accesses: new Array(65).fill({ key: "a", write: false }),
    },
    { type: "readdepsok", from: 1, to: 0, seq: 5, deps: [0, 3] },
    { type: "readdepsok", from: 1, to: 0, seq: 5, deps: [0, 3, 1, 0] },
  ];
  for (const message of bad) {
    assert.equal(validateMessage(message, options).ok, false, JSON.stringify(message).slice(0, 80));
  }
});
