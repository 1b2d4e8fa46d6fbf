/**
 * Table tests of recovery's decisions (EPaxos* Figure 5), in the manner of
 * etcd raft's `quorum/` tests: each row names a case, gives the replies as
 * plain data, and the decision expected.
 */

import assert from "node:assert/strict";
import type { ConflictModel } from "../../src/core/conflict.ts";
import { type Instance, instanceKey, newInstance } from "../../src/core/instance.ts";
import type { RecoverReply } from "../../src/core/lead.ts";
import { quorumSizes } from "../../src/core/quorum.ts";
import {
  decidePostWaiting,
  decideRecovery,
  decideValidation,
  invalidatorsOf,
  type InvalidatorStatus,
} from "../../src/core/recovery.ts";
import { NOP, type Payload, Phase } from "../../src/core/types.ts";

type Command = string;
const A: Payload<Command> = ["a"];
const B: Payload<Command> = ["b"];
const none = [0, 0, 0, 0, 0];
const d1 = [0, 1, 0, 0, 0];
const d2 = [0, 1, 2, 0, 0];

function initial(): RecoverReply<Command> {
  return {
    acceptedBallot: 0,
    phase: Phase.Initial,
    command: undefined,
    deps: undefined,
    initialDeps: undefined,
  };
}
function preAccepted(command: Payload<Command>, deps: number[], init = deps) {
  return { acceptedBallot: 0, phase: Phase.PreAccepted, command, deps, initialDeps: init };
}
function accepted(abal: number, command: Payload<Command>, deps: number[]) {
  return { acceptedBallot: abal, phase: Phase.Accepted, command, deps, initialDeps: none };
}
function committed(command: Payload<Command>, deps: number[]) {
  return { acceptedBallot: 0, phase: Phase.Committed, command, deps, initialDeps: none };
}
/** Replies by replica from `{replica: reply}`. */
function replies(n: number, byReplica: Record<number, RecoverReply<Command>>) {
  return Array.from({ length: n }, (_, replica) => byReplica[replica]);
}
function mask(...replicas: number[]): number {
  return replicas.reduce((bits, replica) => bits | 1 << replica, 0);
}

Deno.test("decideRecovery: what a recovery does with a quorum of RecoverOK (owner 0)", () => {
  const rows: {
    name: string;
    n: number;
    replies: Record<number, RecoverReply<Command>>;
    want: unknown;
  }[] = [
    {
      name: "a committed reply decides, whatever the others say",
      n: 5,
      replies: { 1: preAccepted(A, none), 2: committed(A, d1), 3: accepted(4, A, d2) },
      want: { kind: "commit", command: A, deps: d1 },
    },
    {
      name: "the value accepted at the highest abal is accepted again (Sutra 2020)",
      n: 5,
      replies: { 1: accepted(3, B, d1), 2: accepted(5, A, d2), 3: preAccepted(A, none) },
      want: {
        kind: "accept",
        command: A,
        deps: d2,
        outcome: "foundAccepted",
        quorum: mask(1, 2, 3),
      },
    },
    {
      name: "an accepted value at ballot 0 (the slow path) is accepted again",
      n: 5,
      replies: { 1: accepted(0, A, d1), 2: preAccepted(A, none), 3: initial() },
      want: {
        kind: "accept",
        command: A,
        deps: d1,
        outcome: "foundAccepted",
        quorum: mask(1, 2, 3),
      },
    },
    {
      name: "the coordinator answered: it can no longer take the fast path, so a Nop",
      n: 5,
      replies: { 0: preAccepted(A, none), 1: preAccepted(A, none), 2: preAccepted(A, none) },
      want: {
        kind: "accept",
        command: NOP,
        deps: "empty",
        outcome: "nopCoordinatorAnswered",
        quorum: mask(0, 1, 2),
      },
    },
    {
      name: "n=5: one matching pre-accept in a quorum of 3 (>= |Q| - e) is validated",
      n: 5,
      replies: { 1: preAccepted(A, d1), 2: initial(), 3: initial() },
      want: { kind: "validate", command: A, deps: d1, rmaxSize: 1, quorum: mask(1, 2, 3) },
    },
    {
      name: "a pre-accept whose deps differ from initDep is not in Rmax: a Nop",
      n: 5,
      replies: { 1: preAccepted(A, d2, d1), 2: initial(), 3: initial() },
      want: {
        kind: "accept",
        command: NOP,
        deps: "empty",
        outcome: "nopNoFastQuorum",
        quorum: mask(1, 2, 3),
      },
    },
    {
      name: "nobody saw the command: a Nop",
      n: 5,
      replies: { 2: initial(), 3: initial(), 4: initial() },
      want: {
        kind: "accept",
        command: NOP,
        deps: "empty",
        outcome: "nopNoFastQuorum",
        quorum: mask(2, 3, 4),
      },
    },
    {
      name: "n=7: one matching pre-accept of a quorum of 4 is too few (needs 4 - 2)",
      n: 7,
      replies: { 1: preAccepted(A, none), 2: initial(), 3: initial(), 4: initial() },
      want: {
        kind: "accept",
        command: NOP,
        deps: "empty",
        outcome: "nopNoFastQuorum",
        quorum: mask(1, 2, 3, 4),
      },
    },
    {
      name: "n=7: two matching pre-accepts of a quorum of 4 are validated",
      n: 7,
      replies: { 1: preAccepted(A, none), 2: preAccepted(A, none), 3: initial(), 4: initial() },
      want: { kind: "validate", command: A, deps: none, rmaxSize: 2, quorum: mask(1, 2, 3, 4) },
    },
    {
      name: "n=3: the one peer that pre-accepted with matching deps is validated",
      n: 3,
      replies: { 1: preAccepted(A, [0, 0, 0]), 2: initial() },
      want: { kind: "validate", command: A, deps: [0, 0, 0], rmaxSize: 1, quorum: mask(1, 2) },
    },
  ];
  for (const row of rows) {
    const decision = decideRecovery(replies(row.n, row.replies), 0, quorumSizes(row.n));
    assert.deepEqual(decision, row.want, row.name);
  }
});

Deno.test("decideValidation: what ValidateOK replies from the quorum decide", () => {
  const q = mask(1, 2, 3); // n=5, |Q| = 3, e = 2: the e-rule applies when rmax = 1
  const rows: {
    name: string;
    replies: Record<number, number[]>;
    rmax: number;
    want: unknown;
  }[] = [
    {
      name: "a quorum member has not answered: pending",
      replies: { 1: [], 2: [] },
      rmax: 1,
      want: { kind: "pending" },
    },
    {
      name: "no invalidator anywhere (I = {}): the command",
      replies: { 1: [], 2: [], 3: [] },
      rmax: 1,
      want: { kind: "clean" },
    },
    {
      name: "a committed invalidator: a Nop",
      replies: { 1: [2, 4, Phase.Committed], 2: [], 3: [] },
      rmax: 2,
      want: { kind: "invalidated" },
    },
    {
      name: "e-rule: rmax = |Q| - e and an invalidator's owner is outside Q: a Nop",
      replies: { 1: [4, 7, Phase.PreAccepted], 2: [], 3: [] },
      rmax: 1,
      want: { kind: "invalidated" },
    },
    {
      name: "rmax = |Q| - e but the invalidator's owner answered in Q: wait",
      replies: { 1: [2, 7, Phase.PreAccepted], 2: [], 3: [] },
      rmax: 1,
      want: { kind: "wait", invalidators: new Map([[instanceKey(2, 7), Phase.PreAccepted]]) },
    },
    {
      name: "rmax above |Q| - e: an owner outside Q does not matter, wait",
      replies: { 1: [4, 7, Phase.Accepted], 2: [], 3: [] },
      rmax: 2,
      want: { kind: "wait", invalidators: new Map([[instanceKey(4, 7), Phase.Accepted]]) },
    },
    {
      name: "an instance reported twice keeps its highest phase",
      replies: {
        1: [2, 3, Phase.PreAccepted],
        2: [2, 3, Phase.Accepted],
        3: [1, 9, Phase.Initial],
      },
      rmax: 2,
      want: {
        kind: "wait",
        invalidators: new Map([[instanceKey(2, 3), Phase.Accepted], [
          instanceKey(1, 9),
          Phase.Initial,
        ]]),
      },
    },
  ];
  for (const row of rows) {
    const byReplica = Array.from({ length: 5 }, (_, replica) => row.replies[replica]);
    assert.deepEqual(decideValidation(q, byReplica, row.rmax, quorumSizes(5)), row.want, row.name);
  }
});

Deno.test("decidePostWaiting: what a waiting recovery does next (n=5, Q = {1,2,3}, owner 0)", () => {
  const k1 = instanceKey(2, 5);
  const k2 = instanceKey(3, 6);
  const validated = { command: A, deps: d1 };
  const rows: {
    name: string;
    invalidators: [number, InvalidatorStatus][];
    reports?: [number, number][];
    late?: Record<number, RecoverReply<Command>>;
    want: unknown;
  }[] = [
    {
      name: "every invalidator committed with us in its deps: the command",
      invalidators: [[k1, "committed-after"], [k2, "committed-after"]],
      want: { kind: "accept", command: A, deps: d1, outcome: "waitedAccepted" },
    },
    {
      name: "an invalidator committed without us: a Nop",
      invalidators: [[k1, "undecided"], [k2, "committed-without"]],
      want: { kind: "accept", command: NOP, deps: "empty", outcome: "waitedNop", quorum: 0 },
    },
    {
      name: "an invalidator pruned here: start again at a higher ballot",
      invalidators: [[k1, "pruned"], [k2, "committed-without"]],
      want: { kind: "restart" },
    },
    {
      name: "the first decisive invalidator wins: committed-without before pruned",
      invalidators: [[k1, "committed-without"], [k2, "pruned"]],
      want: { kind: "accept", command: NOP, deps: "empty", outcome: "waitedNop", quorum: 0 },
    },
    {
      name: "an undecided invalidator and nothing else: wait",
      invalidators: [[k1, "undecided"], [k2, "committed-after"]],
      want: { kind: "wait" },
    },
    {
      name: "a recovery of an invalidator waits on us with k > n - f - e: a Nop (deadlock)",
      invalidators: [[k1, "undecided"]],
      reports: [[k1, 2]],
      want: { kind: "accept", command: NOP, deps: "empty", outcome: "waitedNop", quorum: 0 },
    },
    {
      name: "a Waiting report with k = n - f - e does not break the wait",
      invalidators: [[k1, "undecided"]],
      reports: [[k1, 1]],
      want: { kind: "wait" },
    },
    {
      name: "a late RecoverOK from outside Q that committed: commit it",
      invalidators: [[k1, "undecided"]],
      late: { 4: committed(B, d2) },
      want: { kind: "commit", command: B, deps: d2 },
    },
    {
      name: "a late RecoverOK from outside Q that accepted: accept its value",
      invalidators: [[k1, "undecided"]],
      late: { 4: accepted(2, B, d2) },
      want: { kind: "accept", command: B, deps: d2, outcome: "waitedAccepted" },
    },
    {
      name: "a late RecoverOK from the coordinator: it cannot take the fast path now, a Nop",
      invalidators: [[k1, "undecided"]],
      late: { 0: preAccepted(A, d1) },
      want: { kind: "accept", command: NOP, deps: "empty", outcome: "waitedNop", quorum: 0 },
    },
    {
      name: "replies from inside Q are not late: wait",
      invalidators: [[k1, "undecided"]],
      late: { 1: accepted(2, B, d2) },
      want: { kind: "wait" },
    },
  ];
  for (const row of rows) {
    const decision = decidePostWaiting({
      invalidators: new Map(row.invalidators),
      waitingReports: new Map(row.reports ?? []),
      recoverReplies: replies(5, row.late ?? {}),
      quorum: mask(1, 2, 3),
      owner: 0,
      validated,
    }, quorumSizes(5));
    assert.deepEqual(decision, row.want, row.name);
  }
});

Deno.test("recovery decisions read every position, not only the first n (n = 3 voters of more positions)", () => {
  // Voters 0, 2 and 3 of positions 0..3 (position 1 a learner or removed):
  // replies and quorums are by position, and position 3 is past n = 3.
  const sizes = quorumSizes(3);
  const four = [0, 0, 0, 0, 0];
  const rows: { name: string; replies: Record<number, RecoverReply<Command>>; want: unknown }[] = [
    {
      name: "an accepted value at position 3 is found",
      replies: { 2: initial(), 3: accepted(2, B, four) },
      want: {
        kind: "accept",
        command: B,
        deps: four,
        outcome: "foundAccepted",
        quorum: mask(2, 3),
      },
    },
    {
      name: "a pre-accept at position 3 is validated, with position 3 in Q",
      replies: { 2: initial(), 3: preAccepted(A, four) },
      want: { kind: "validate", command: A, deps: four, rmaxSize: 1, quorum: mask(2, 3) },
    },
    {
      name: "the coordinator at position 3 answered: a Nop",
      replies: { 0: initial(), 3: preAccepted(A, four) },
      want: {
        kind: "accept",
        command: NOP,
        deps: "empty",
        outcome: "nopCoordinatorAnswered",
        quorum: mask(0, 3),
      },
    },
  ];
  for (const row of rows) {
    const owner = row.name.includes("coordinator") ? 3 : 0;
    assert.deepEqual(decideRecovery(replies(4, row.replies), owner, sizes), row.want, row.name);
  }
  // A quorum member at position 3 that has not answered keeps validation pending.
  const byPosition = [undefined, undefined, [], undefined];
  assert.deepEqual(decideValidation(mask(2, 3), byPosition, 1, sizes), { kind: "pending" });
  byPosition[3] = [];
  assert.deepEqual(decideValidation(mask(2, 3), byPosition, 1, sizes), { kind: "clean" });
  // A late RecoverOK from the coordinator at position 4 (voters 0, 2, 4): a Nop.
  const late = decidePostWaiting({
    invalidators: new Map([[instanceKey(2, 5), "undecided" as const]]),
    waitingReports: new Map(),
    recoverReplies: replies(5, { 4: preAccepted(A, d1) }),
    quorum: mask(0, 2),
    owner: 4,
    validated: { command: A, deps: d1 },
  }, sizes);
  assert.deepEqual(late, {
    kind: "accept",
    command: NOP,
    deps: "empty",
    outcome: "waitedNop",
    quorum: 0,
  });
  // The deadlock bound is n - f - e of the voters: 3 - 1 - 1 = 1.
  const waiting = (k: number) =>
    decidePostWaiting({
      invalidators: new Map([[instanceKey(2, 5), "undecided" as const]]),
      waitingReports: new Map([[instanceKey(2, 5), k]]),
      recoverReplies: replies(5, {}),
      quorum: mask(0, 2),
      owner: 4,
      validated: { command: A, deps: d1 },
    }, sizes).kind;
  assert.equal(waiting(1), "wait");
  assert.equal(waiting(2), "accept");
});

Deno.test("invalidatorsOf (ComputeI): conflicting instances that may not have seen the target", () => {
  const model: ConflictModel<Command> = { accesses: (key) => [{ key, write: true }] };
  const held = (
    owner: number,
    number: number,
    phase: Phase,
    command: Payload<Command>,
    deps: number[],
  ): Instance<Command> => {
    const instance = newInstance<Command>(owner, number, 0);
    instance.phase = phase;
    instance.command = command;
    instance.initialCommand = command;
    instance.deps = deps;
    instance.initialDeps = deps;
    instance.accesses = command === NOP ? undefined : command.map((key) => ({ key, write: true }));
    return instance;
  };
  const target = { owner: 0, number: 1 };
  const rows: { name: string; other: Instance<Command>; want: number[] }[] = [
    {
      name: "a conflicting pre-accept without the target in its deps",
      other: held(2, 1, Phase.PreAccepted, ["a"], none),
      want: [2, 1, Phase.PreAccepted],
    },
    {
      name: "a conflicting commit that depends on the target: not an invalidator",
      other: held(2, 1, Phase.Committed, ["a"], [1, 0, 0, 0, 0]),
      want: [],
    },
    {
      name: "a committed conflict without the target",
      other: held(2, 1, Phase.Committed, ["a"], none),
      want: [2, 1, Phase.Committed],
    },
    {
      name: "an instance inside the target's deps: not an invalidator",
      other: held(1, 1, Phase.PreAccepted, ["a"], none),
      want: [],
    },
    {
      name: "no conflict: not an invalidator",
      other: held(2, 1, Phase.PreAccepted, ["b"], none),
      want: [],
    },
  ];
  for (const row of rows) {
    assert.deepEqual(invalidatorsOf(target, A, d1, [row.other], model), row.want, row.name);
  }
  assert.deepEqual(invalidatorsOf(target, NOP, d1, rows.map((row) => row.other), model), []);
});
