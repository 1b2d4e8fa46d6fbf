import assert from "node:assert/strict";
import type { Access } from "../../src/core/conflict.ts";
import {
  caughtUp,
  grantorPromiseUntil,
  holderLeaseUntil,
  type LeaseConfiguration,
  leaseConfigurationProblem,
  leasedTo,
  leaseEveryKey,
  leaseHolderMask,
  leaseQuorumSize,
  releaseAt,
} from "../../src/core/lease.ts";
import { Replica } from "../../src/core/replica.ts";
import { CoreCluster, type KeyCommand, keyCommandConflicts } from "./core_cluster.ts";
import { type Message, NOP } from "../../src/core/types.ts";

type Command = KeyCommand;
const model = keyCommandConflicts;

const write = (key: string): Access => ({ key, write: true });
const read = (key: string): Access => ({ key, write: false });
const span = (key: string, end: string, isWrite: boolean): Access => ({ key, end, write: isWrite });

Deno.test("leaseHolderMask: the longest prefix's holders for a key, every overlapping rule's for a span", () => {
  const rules = [
    { prefix: "", holders: [0] },
    { prefix: "cfg/", holders: "all" as const },
    { prefix: "cfg/secret/", holders: [] },
  ];
  const members = 0b111;
  const table: [readonly Access[], number][] = [
    [[write("x")], 0b001],
    [[write("cfg/a")], 0b111],
    [[write("cfg/secret/a")], 0b000],
    [[read("cfg/a")], 0], // reads need nobody
    [[span("", "\uffff", true)], 0b111], // a change of every key: every holder
    // Coarse for spans: "cfg/" overlaps it too (more holders is only slower, never unsafe).
    [[span("cfg/secret/", "cfg/secret/\uffff", true)], 0b111],
    [[span("a", "b", true)], 0b001],
  ];
  for (const [accesses, expected] of table) {
    assert.equal(
      leaseHolderMask(accesses, rules, members),
      expected,
      JSON.stringify(accesses),
    );
  }
  // Holders outside the members are not counted.
  assert.equal(leaseHolderMask([write("cfg/a")], rules, 0b011), 0b011);
});

Deno.test("leasedTo: a read is local only when every key it reads is leased here", () => {
  const rules = [
    { prefix: "", holders: [0, 1] },
    { prefix: "hot/", holders: [0] },
  ];
  const members = 0b111;
  const table: [readonly Access[], number, boolean][] = [
    [[read("x")], 0, true],
    [[read("x")], 2, false],
    [[read("hot/a")], 1, false],
    [[read("hot/a")], 0, true],
    [[span("", "\uffff", false)], 0, true],
    [[span("", "\uffff", false)], 1, false], // the span covers hot/, not leased to 1
    [[span("a/", "a/\uffff", false)], 1, true],
  ];
  for (const [accesses, holder, expected] of table) {
    assert.equal(
      leasedTo(accesses, rules, holder, members),
      expected,
      `${JSON.stringify(accesses)} at ${holder}`,
    );
  }
  assert.equal(leasedTo([read("x")], [], 0, members), false, "no rules: nothing is leased");
});

Deno.test("lease timing: the holder's lease ends before the grantor's promise, whatever the drift allows", () => {
  const configuration: LeaseConfiguration = leaseEveryKey({ leaseMs: 1000, drift: 0.05 });
  assert.equal(grantorPromiseUntil(10_000, configuration), 11_050);
  assert.equal(holderLeaseUntil(10_000, configuration), 11_000);
  assert.equal(releaseAt(0, 100, configuration), 105);
  assert.deepEqual([3, 5, 7, 9].map(leaseQuorumSize), [2, 3, 4, 5]);
  // Real time: the holder sent at real 0 with a clock 5 % fast; the grantor
  // received at real 0 with a clock at the nominal rate.
  const holderEndsReal = 1000 / 1.05;
  const grantorEndsReal = 1050 / 1.0;
  assert.ok(holderEndsReal < grantorEndsReal);
  assert.equal(caughtUp([3, 4, 0], [3, 5, 1]), true);
  assert.equal(caughtUp([3, 4, 0], [3, 3, 9]), false);
});

Deno.test("leaseConfigurationProblem refuses what cannot be run", () => {
  assert.equal(leaseConfigurationProblem(leaseEveryKey(), 3), undefined);
  assert.match(leaseConfigurationProblem(leaseEveryKey({ leaseMs: 5 }), 3)!, /leaseMs/);
  assert.match(
    leaseConfigurationProblem(leaseEveryKey({ leaseMs: 1000, renewMs: 600 }), 3)!,
    /renewMs/,
  );
  assert.match(leaseConfigurationProblem(leaseEveryKey({ drift: 1 }), 3)!, /drift/);
  assert.match(
    leaseConfigurationProblem(leaseEveryKey({ rules: [{ prefix: "", holders: [3] }] }), 3)!,
    /holder 3/,
  );
});

/** A cluster of replicas with leases on every key, a shared clock, and message filters. */
class LeaseCluster extends CoreCluster {
  now = 0;

  constructor(
    n: number,
    options: { restartedAt?: number; unsafe?: { skipCatchUp?: boolean; ignoreRestart?: boolean } } =
      {},
  ) {
    super(
      Array.from({ length: n }, (_, id) =>
        new Replica({
          id,
          replicas: n,
          conflicts: model,
          leases: leaseEveryKey({ leaseMs: 1000, renewMs: 200, drift: 0.01 }),
          ...(options.restartedAt === undefined ? {} : { leaseRestartedAt: options.restartedAt }),
          ...(options.unsafe === undefined ? {} : { unsafeLeases: options.unsafe }),
        })),
      { beforeStep: (replica) => replica.observeTime(this.now) },
    );
  }

  /** Advances the clock by `ms` in 5 ms ticks, settling after each. */
  run(ms: number, drop?: (message: Message<Command>) => boolean): void {
    for (let elapsed = 0; elapsed < ms; elapsed += 5) {
      this.now += 5;
      for (const replica of this.replicas) {
        replica.observeTime(this.now);
        replica.tick();
      }
      this.settle(drop);
    }
  }
}

Deno.test("a holder reads locally once a majority granted, and holds a read while a write to its key is pending", () => {
  const cluster = new LeaseCluster(3);
  const holder = cluster.replicas[2]!;
  assert.deepEqual(holder.localRead([read("a")], cluster.now), {
    verdict: "refuse",
    reason: "no-lease",
  });
  cluster.run(20);
  assert.deepEqual(holder.localRead([read("a")], cluster.now), { verdict: "serve" });
  // A write to "a" at replica 0: replica 2 hears of it (PreAccept or notice)
  // before anyone can see it decided, and holds reads of "a" until it executes.
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  const ready = cluster.replicas[0]!.ready();
  cluster.replicas[0]!.advance();
  for (const message of [...ready.earlyMessages, ...ready.messages]) {
    if (message.to === 2) holder.step(message);
  }
  const verdict = holder.localRead([read("a")], cluster.now);
  assert.equal(verdict.verdict, "hold");
  assert.deepEqual(holder.localRead([read("b")], cluster.now), { verdict: "serve" });
  for (const message of [...ready.earlyMessages, ...ready.messages]) {
    if (message.to !== 2) cluster.replicas[message.to]!.step(message);
  }
  cluster.settle();
  assert.deepEqual(cluster.executed[2], ["0.1"]);
  assert.deepEqual(holder.localRead([read("a")], cluster.now), { verdict: "serve" });
});

Deno.test("a write is decided only after every named holder acknowledged it, or its promises ran out", () => {
  const cluster = new LeaseCluster(3);
  cluster.run(20);
  const holder = cluster.replicas[2]!;
  assert.deepEqual(holder.localRead([read("a")], cluster.now), { verdict: "serve" });
  // Cut replica 2 off from now on: the write at 0 must wait for its promises.
  const isolated = (message: Message<Command>) => message.to === 2 || message.from === 2;
  const start = cluster.now;
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  cluster.settle(isolated);
  assert.deepEqual(cluster.executed[0], [], "not decided while replica 2 holds a promise");
  let decidedAt = -1;
  for (let step = 0; step < 600 && decidedAt < 0; step++) {
    cluster.run(5, isolated);
    if (cluster.executed[0]!.length > 0) decidedAt = cluster.now;
  }
  assert.ok(decidedAt > 0, "decided once the promises ran out");
  // The grantors' promises last leaseMs · (1 + drift) after their last grant,
  // stretched once more by the drift at the coordinator.
  assert.ok(decidedAt - start <= 1000 * 1.01 * 1.01 + 20, `decided after ${decidedAt - start} ms`);
  assert.ok(
    holder.localRead([read("a")], cluster.now).verdict !== "serve",
    "the cut-off holder's lease ended",
  );
  assert.ok(cluster.replicas[0]!.leaseStatus(cluster.now).writesReleased >= 1);
  // Healed: replica 2 catches up (the frontier of its next grants) and reads again.
  for (let step = 0; step < 400 && cluster.executed[2]!.length === 0; step++) cluster.run(5);
  console.log(`replica 2 caught up at ${cluster.now} ms`);
  assert.deepEqual(cluster.executed[2], ["0.1"]);
  assert.deepEqual(holder.localRead([read("a")], cluster.now), { verdict: "serve" });
});

for (const unsafe of [false, true]) {
  Deno.test(
    `a grant counts only once the holder executed the grantor's frontier${
      unsafe ? " (negative: without catch-up a holder reads stale state)" : ""
    }`,
    () => {
      const cluster = new LeaseCluster(3, unsafe ? { unsafe: { skipCatchUp: true } } : {});
      cluster.run(20);
      const holder = cluster.replicas[2]!;
      // Replica 2 is cut off; the write at 0 is decided once its promises ran out.
      const isolated = (message: Message<Command>) => message.to === 2 || message.from === 2;
      cluster.replicas[0]!.propose([{ key: "a", write: true }]);
      cluster.run(1500, isolated);
      assert.deepEqual(cluster.executed[0], ["0.1"]);
      // Then only lease traffic reaches it: grants, but no commit of 0.1.
      const leaseTrafficOnly = (message: Message<Command>) =>
        (message.to === 2 || message.from === 2) &&
        message.type !== "leaserequest" && message.type !== "leasegrant";
      cluster.run(300, leaseTrafficOnly);
      assert.deepEqual(cluster.executed[2], []);
      const verdict = holder.localRead([read("a")], cluster.now);
      if (unsafe) {
        // It would serve "a" from a state without 0.1, decided long ago: stale.
        assert.deepEqual(verdict, { verdict: "serve" });
        return;
      }
      // The grants carry a frontier past 0.1, which it has not executed.
      assert.deepEqual(verdict, { verdict: "refuse", reason: "no-lease" });
      for (let step = 0; step < 400 && cluster.executed[2]!.length === 0; step++) cluster.run(5);
      assert.deepEqual(cluster.executed[2], ["0.1"]);
      assert.deepEqual(holder.localRead([read("a")], cluster.now), { verdict: "serve" });
    },
  );
}

Deno.test("a restarted grantor that ignores the restart rule decides without the holders (negative)", () => {
  const cluster = new LeaseCluster(3, { restartedAt: 0, unsafe: { ignoreRestart: true } });
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  cluster.settle((message) => message.to === 2 || message.from === 2);
  assert.deepEqual(cluster.executed[0], ["0.1"], "decided while holder 2 may hold a lease");
});

Deno.test("a restarted grantor names every holder for a lease length", () => {
  const cluster = new LeaseCluster(3, { restartedAt: 0 });
  // No grants yet anywhere, but replica 0 restarted at 0: its own writes
  // wait for every holder until 1010 ms.
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  const toHolder2 = (message: Message<Command>) => message.to === 2 || message.from === 2;
  cluster.settle(toHolder2);
  assert.deepEqual(cluster.executed[0], []);
  // Healed: the notice goes again, holder 2 acknowledges, well before 1010 ms.
  cluster.run(250);
  assert.deepEqual(cluster.executed[0], ["0.1"], "decided once holder 2 acknowledged");
  assert.ok(cluster.replicas[0]!.leaseStatus(cluster.now).writesReleased === 0);
});

Deno.test("a holder holds a read for every unapplied write to its key, not only its row's latest (which may end a Nop)", () => {
  // Simulator seed 5 (n=3, --leases on): the holder had accepted 2.1
  // (a put of k0) without hearing of its commit; 2.2 (another put of k0,
  // depending on 2.1) was recovered as a Nop, which depends on nothing,
  // and executed at the holder. The row's latest write to k0 was applied,
  // so the read was served without 2.1, decided long before.
  const cluster = new LeaseCluster(3);
  cluster.run(20);
  const holder = cluster.replicas[2]!;
  const coordinator = cluster.replicas[0]!;
  coordinator.propose([{ key: "a", write: true }]);
  coordinator.propose([{ key: "a", write: true }]);
  const ready = coordinator.ready();
  coordinator.advance();
  // The thrifty PreAccepts go to one peer: the holder is that peer here.
  const preAccepts = [...ready.earlyMessages, ...ready.messages].filter((message) =>
    message.type === "preaccept" && message.to === 1
  );
  assert.deepEqual(preAccepts.map((message) => message.type === "preaccept" && message.number), [
    1,
    2,
  ]);
  for (const message of preAccepts) holder.step({ ...message, to: 2 });
  assert.equal(holder.localRead([read("a")], cluster.now).verdict, "hold");
  // Replica 1 recovered 0.2 as a Nop; its commit reaches the holder, 0.1's does not.
  holder.step({
    type: "commit",
    from: 1,
    to: 2,
    owner: 0,
    number: 2,
    ballot: 1,
    command: NOP,
    deps: [0, 0, 0, 0],
  });
  const executed: number[] = [];
  while (holder.hasReady()) {
    executed.push(...holder.ready().executions.map((execution) => execution.number));
    holder.advance();
  }
  assert.deepEqual(executed, [2]);
  assert.deepEqual(holder.localRead([read("a")], cluster.now), {
    verdict: "hold",
    pending: [[0, 1]],
  });
});

Deno.test("a restarted holder takes no grant that answered its previous incarnation's request", () => {
  // Found by review while running the simulator: request numbers started at
  // 1 in every core, so a grant delayed across a restart (or a snapshot
  // install) matched the new core's request of the same number and was
  // timed from that later send, outliving the grantor's promise.
  const cluster = new LeaseCluster(3);
  const grantor = cluster.replicas[0]!;
  cluster.now = 5;
  const old = cluster.replicas[2]!;
  old.observeTime(cluster.now);
  old.tick();
  const requestReady = old.ready();
  // Lease traffic leaves early (it needs nothing durable).
  const requests = [...requestReady.earlyMessages, ...requestReady.messages].filter((message) =>
    message.type === "leaserequest"
  );
  old.advance();
  const toGrantor = requests.find((message) => message.to === 0)!;
  grantor.observeTime(cluster.now);
  grantor.step(toGrantor);
  const grantReady = grantor.ready();
  const grant = [...grantReady.earlyMessages, ...grantReady.messages].find((message) =>
    message.type === "leasegrant"
  )!;
  grantor.advance();
  assert.ok(grant !== undefined, "grantor 0 granted, promising until 1015");
  // Replica 2 restarts at 600 with another request base (the driver draws
  // it); its first requests are lost, and the old grant arrives late.
  cluster.now = 600;
  const restarted = new Replica({
    id: 2,
    replicas: 3,
    conflicts: model,
    leases: leaseEveryKey({ leaseMs: 1000, renewMs: 200, drift: 0.01 }),
    leaseRestartedAt: cluster.now,
    leaseRequestBase: 1 << 20,
  });
  cluster.replicas[2] = restarted;
  restarted.observeTime(cluster.now);
  restarted.tick();
  restarted.ready();
  restarted.advance();
  restarted.step({ ...grant, to: 2 });
  // At 1100 grantor 0's promise has run out: its write is decided with
  // replica 1 and without replica 2 (cut off), which must not read "a" locally.
  cluster.now = 1100;
  grantor.observeTime(cluster.now);
  grantor.propose([{ key: "a", write: true }]);
  const cutOff = (message: Message<Command>) => message.to === 2 || message.from === 2;
  for (let step = 0; step < 40 && cluster.executed[0]!.length === 0; step++) cluster.run(5, cutOff);
  assert.deepEqual(cluster.executed[0], ["0.1"]);
  assert.ok(cluster.now < 1600, `decided at ${cluster.now}`);
  assert.deepEqual(restarted.localRead([read("a")], cluster.now), {
    verdict: "refuse",
    reason: "no-lease",
  });
});

Deno.test("a holder that is heard but hears nothing keeps writes waiting at most a lease, then not at all", () => {
  // Regression (chaos scenario lease-deaf-holder): replica 2's messages get
  // through, nothing reaches it. Its requests kept arriving, every grant
  // renewed the promise that named it, and writes waited for the whole
  // partition. A grantor now withholds renewals from a holder that leaves
  // one of its writes unacknowledged.
  const cluster = new LeaseCluster(3);
  cluster.run(20);
  const deaf = (message: Message<Command>) => message.to === 2;
  const start = cluster.now;
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  cluster.replicas[1]!.propose([{ key: "b", write: true }]);
  let decidedAt = -1;
  for (let step = 0; step < 1000 && cluster.executed[1]!.length < 2; step++) {
    cluster.run(5, deaf);
    if (decidedAt < 0 && cluster.executed[0]!.includes("0.1")) decidedAt = cluster.now;
  }
  assert.ok(decidedAt > 0, "the write at 0 was decided during the partition");
  // Replica 0's last renewal came at most a notice retry (200 ms) after the
  // write began to wait; it lasts leaseMs · (1 + drift), stretched once more.
  assert.ok(
    decidedAt - start <= 200 + 1000 * 1.01 * 1.01 + 20,
    `decided after ${decidedAt - start} ms`,
  );
  // Replica 1's write asked replica 2 first (its thrifty quorum), so it
  // started waiting later; it too is decided within a lease or so.
  assert.equal(cluster.executed[1]!.length, 2, "both writes executed at replica 1");
  assert.ok(
    cluster.now - start <= 2000,
    `the write at 1 was decided after ${cluster.now - start} ms`,
  );
  for (const grantor of [0, 1]) {
    assert.ok(cluster.replicas[grantor]!.leaseStatus(cluster.now).grantsWithheld > 0);
  }
  // Nobody renews replica 2 any more: the next write does not wait for it.
  const next = cluster.now;
  cluster.replicas[0]!.propose([{ key: "c", write: true }]);
  for (let step = 0; step < 1000 && cluster.executed[0]!.length < 3; step++) cluster.run(5, deaf);
  assert.ok(cluster.now - next <= 50, `the next write waited ${cluster.now - next} ms`);
  // Healed: replica 2 acknowledges the next write, is granted again and reads locally.
  cluster.replicas[1]!.propose([{ key: "d", write: true }]);
  for (let step = 0; step < 400 && cluster.executed[2]!.length < 4; step++) cluster.run(5);
  assert.equal(cluster.executed[2]!.length, 4);
  cluster.run(500);
  assert.deepEqual(cluster.replicas[2]!.localRead([read("a")], cluster.now), { verdict: "serve" });
});

Deno.test("a withheld holder that hears its grantors again is granted again, with no write", () => {
  const cluster = new LeaseCluster(3);
  cluster.run(20);
  const deaf = (message: Message<Command>) => message.to === 2;
  cluster.replicas[0]!.propose([{ key: "a", write: true }]);
  for (let step = 0; step < 600 && cluster.executed[0]!.length === 0; step++) cluster.run(5, deaf);
  assert.deepEqual(cluster.executed[0], ["0.1"]);
  assert.ok(cluster.replicas[0]!.leaseStatus(cluster.now).grantsWithheld > 0);
  // Healed, and nobody writes: the empty grants reach replica 2, its next
  // requests say so, and it is granted again.
  cluster.run(1500);
  assert.deepEqual(cluster.executed[2], ["0.1"]);
  assert.deepEqual(cluster.replicas[2]!.localRead([read("b")], cluster.now), { verdict: "serve" });
  const given = cluster.replicas[0]!.leaseStatus(cluster.now).grantsGiven;
  cluster.run(500);
  assert.ok(
    cluster.replicas[0]!.leaseStatus(cluster.now).grantsGiven > given,
    "grantor 0 grants again",
  );
});

Deno.test("a rule naming a member no longer in the epoch leases nothing to it, and nothing breaks", () => {
  // Simulator swarms with membership changes and leases: member 4 named in
  // a rule, then removed; the next epoch's core has 4 positions and threw.
  const replica = new Replica<Command>({
    id: 0,
    replicas: 3,
    conflicts: model,
    leases: leaseEveryKey({ rules: [{ prefix: "", holders: [0, 4] }] }),
  });
  assert.equal(replica.localRead([read("a")], 0).verdict, "refuse");
  assert.throws(
    () =>
      new Replica<Command>({
        id: 0,
        replicas: 3,
        conflicts: model,
        leases: leaseEveryKey({ rules: [{ prefix: "", holders: [9] }] }),
      }),
    /lease holder 9 is not a member position/,
  );
});
