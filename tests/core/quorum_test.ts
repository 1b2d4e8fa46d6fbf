import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ballotOwner,
  decidePreAccept,
  nextBallot,
  type PreAcceptDecision,
  type PreAcceptTally,
  quorumSizes,
} from "../../src/core/quorum.ts";

Deno.test("quorum sizes match the protocol card's table", () => {
  // n, f, e, slow (n-f), fast (n-e), thrifty PreAccept targets (n-e-1)
  const table = [
    [3, 1, 1, 2, 2, 1],
    [5, 2, 2, 3, 3, 2],
    [7, 3, 2, 4, 5, 4],
    [9, 4, 3, 5, 6, 5],
  ];
  for (const [n, f, e, slow, fast, targets] of table) {
    const sizes = quorumSizes(n!);
    assert.deepEqual(
      [sizes.maxFailures, sizes.fastFailures, sizes.slowQuorumSize, sizes.fastQuorumSize],
      [f, e, slow, fast],
    );
    assert.equal(sizes.preAcceptTargets, targets);
    assert.equal(sizes.acceptTargets, slow! - 1);
    // The optimized fast quorum F + floor((F + 1) / 2) of SOSP'13.
    assert.equal(sizes.fastQuorumSize, f! + Math.floor((f! + 1) / 2));
  }
});

Deno.test("quorum sizes reject even, too small and too large clusters", () => {
  for (const n of [0, 1, 2, 4, 6, 8, 10, 11, 2.5]) {
    assert.throws(() => quorumSizes(n), RangeError);
  }
});

Deno.test("any fast quorum and any slow quorum intersect", () => {
  for (const n of [3, 5, 7, 9]) {
    const sizes = quorumSizes(n);
    assert.ok(sizes.fastQuorumSize + sizes.slowQuorumSize > n);
    assert.ok(2 * sizes.slowQuorumSize > n);
    // EPaxos* needs n >= max(2e + f - 1, 2f + 1).
    assert.ok(n >= 2 * sizes.fastFailures + sizes.maxFailures - 1);
  }
});

Deno.test("nextBallot is above its argument and owned by the replica", () => {
  fc.assert(fc.property(
    fc.constantFrom(3, 5, 7, 9),
    fc.nat(100_000),
    fc.nat(8),
    (n, above, replicaSeed) => {
      const replica = replicaSeed % n;
      const ballot = nextBallot(above, replica, n);
      assert.ok(ballot > above);
      assert.ok(ballot > 0);
      assert.equal(ballotOwner(ballot, 0, n), replica);
      // It is the smallest such ballot.
      for (let smaller = above + 1; smaller < ballot; smaller++) {
        assert.notEqual(ballotOwner(smaller, 0, n), replica);
      }
    },
  ));
});

Deno.test("ballot 0 belongs to the instance's owner", () => {
  assert.equal(ballotOwner(0, 4, 5), 4);
  assert.equal(ballotOwner(0, 0, 5), 0);
});

Deno.test("decidePreAccept: the coordinator's step after PreAccept", () => {
  const rows: {
    name: string;
    n: number;
    tally: Omit<PreAcceptTally, "timedOut" | "widened"> & {
      timedOut?: boolean;
      widened?: boolean;
    };
    want: PreAcceptDecision;
  }[] = [
    { name: "n=5: 3 matching (own vote included)", n: 5, tally: t(3, 3, 0), want: "fast" },
    { name: "n=5: 2 matching, 1 outstanding", n: 5, tally: t(2, 2, 1), want: "wait" },
    { name: "n=5: 3 replies, 2 match, none outstanding", n: 5, tally: t(2, 3, 0), want: "slow" },
    { name: "n=5: fast still possible, no timeout", n: 5, tally: t(2, 3, 1), want: "wait" },
    {
      name: "n=5: fast still possible, but the timer ran out",
      n: 5,
      tally: { ...t(2, 3, 1), timedOut: true },
      want: "slow",
    },
    {
      name: "n=5: timed out without a slow quorum",
      n: 5,
      tally: { ...t(1, 2, 1), timedOut: true },
      want: "wait",
    },
    { name: "n=5: too few asked to form a quorum", n: 5, tally: t(1, 2, 0), want: "widen" },
    {
      name: "n=5: too few, already widened",
      n: 5,
      tally: { ...t(1, 2, 0), widened: true },
      want: "wait",
    },
    { name: "n=5: no own vote yet, 2 peers match", n: 5, tally: t(2, 2, 0), want: "widen" },
    { name: "n=7: 4 of 5 matching is not fast", n: 7, tally: t(4, 5, 1), want: "wait" },
    { name: "n=7: 4 of 5 matching, no one left", n: 7, tally: t(4, 5, 0), want: "slow" },
    { name: "n=7: 5 matching", n: 7, tally: t(5, 5, 0), want: "fast" },
    { name: "n=3: own vote and one match", n: 3, tally: t(2, 2, 0), want: "fast" },
    { name: "n=3: own vote and one mismatch", n: 3, tally: t(1, 2, 0), want: "slow" },
  ];
  for (const row of rows) {
    const tally = { timedOut: false, widened: false, ...row.tally };
    assert.equal(decidePreAccept(tally, quorumSizes(row.n)), row.want, row.name);
  }
});

function t(matching: number, replies: number, outstanding: number) {
  return { matching, replies, outstanding };
}
