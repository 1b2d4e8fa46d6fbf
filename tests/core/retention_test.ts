import assert from "node:assert/strict";
import { ProgressTracker } from "../../src/core/progress.ts";
import { peersToPrunePast, snapshotSources } from "../../src/core/retention.ts";

Deno.test("peersToPrunePast: nobody within the bound; beyond it, the peers far behind", () => {
  const cases: {
    name: string;
    lags: number[];
    commands: number;
    instances: number;
    bound: number;
    expected: number[];
  }[] = [
    {
      name: "within the bound",
      lags: [0, 900, 2],
      commands: 999,
      instances: 900,
      bound: 1000,
      expected: [],
    },
    {
      name: "a down peer",
      lags: [0, 900, 2],
      commands: 1000,
      instances: 900,
      bound: 1000,
      expected: [1],
    },
    {
      name: "two down peers of five",
      lags: [0, 880, 3, 900, 1],
      commands: 5000,
      instances: 900,
      bound: 1000,
      expected: [1, 3],
    },
    {
      name: "a peer a little behind is kept",
      lags: [0, 900, 300],
      commands: 2000,
      instances: 900,
      bound: 1000,
      expected: [1],
    },
    {
      name: "exactly half counts",
      lags: [0, 450, 0],
      commands: 2000,
      instances: 900,
      bound: 1000,
      expected: [1],
    },
    {
      name: "nobody behind (this replica itself is slow)",
      lags: [0, 0, 0],
      commands: 5000,
      instances: 900,
      bound: 1000,
      expected: [],
    },
    {
      name: "cut off from both peers of three: only the furthest",
      lags: [0, 800, 900],
      commands: 5000,
      instances: 900,
      bound: 1000,
      expected: [2],
    },
    {
      name: "nothing held",
      lags: [0, 5, 0],
      commands: 5000,
      instances: 0,
      bound: 1000,
      expected: [],
    },
    {
      name: "no bound",
      lags: [0, 900, 0],
      commands: 1e9,
      instances: 900,
      bound: Infinity,
      expected: [],
    },
  ];
  for (const entry of cases) {
    assert.deepEqual(
      peersToPrunePast(
        entry.lags,
        { commands: entry.commands, instances: entry.instances },
        entry.bound,
      ),
      entry.expected,
      entry.name,
    );
  }
});

Deno.test("peersToPrunePast: a peer not heard from since the start is spared until the grace is over", () => {
  const held = { commands: 5000, instances: 900 };
  // Right after a restart every peer's frontier reads as zero.
  assert.deepEqual(peersToPrunePast([0, 900, 900], held, 1000, { unheard: [1, 2] }), []);
  assert.deepEqual(peersToPrunePast([0, 900, 900], held, 1000, { unheard: [2] }), [1]);
  // Not heard from for the whole grace: taken as down.
  assert.deepEqual(
    peersToPrunePast([0, 900, 890], held, 1000, { unheard: [1], graceOver: true }),
    [1],
  );
});

Deno.test("snapshotSources: once every peer ahead pruned past this replica in some row, those that did, most first", () => {
  const cases: {
    name: string;
    self: number;
    executed: number[];
    pruned: number[][];
    heard?: boolean[];
    expected: number[];
  }[] = [
    {
      name: "nobody pruned past",
      self: 0,
      executed: [5, 5, 5],
      pruned: [[9, 9, 9], [5, 4, 5], [5, 5, 5]],
      expected: [],
    },
    {
      name: "own entry ignored",
      self: 0,
      executed: [1, 1, 1],
      pruned: [[9, 9, 9], [1, 1, 1], [0, 0, 0]],
      expected: [],
    },
    {
      name: "a peer level with it cannot send what it misses either",
      self: 1,
      executed: [5, 5, 5],
      pruned: [[5, 5, 6], [0, 0, 0], [5, 5, 5]],
      expected: [0],
    },
    {
      name: "every peer past in one row",
      self: 1,
      executed: [5, 5, 5],
      pruned: [[5, 5, 6], [0, 0, 0], [5, 5, 7]],
      expected: [2, 0],
    },
    {
      name: "past in different rows: the one level in a row cannot send it",
      self: 2,
      executed: [1, 1, 1],
      pruned: [[3, 1, 1], [1, 3, 1], [0, 0, 0]],
      expected: [0, 1],
    },
    {
      name: "the most first",
      self: 2,
      executed: [1, 1, 1],
      pruned: [[3, 3, 1], [9, 1, 1], [0, 0, 0]],
      expected: [1, 0],
    },
    {
      name: "a peer not heard from lately does not count (its floor is stale)",
      self: 2,
      executed: [1, 1, 1, 1, 1],
      pruned: [[4, 1, 1, 1, 1], [4, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [4, 1, 1, 1, 1]],
      heard: [true, true, true, false, true],
      expected: [0, 1, 4],
    },
    {
      name: "nobody heard from",
      self: 0,
      executed: [1, 1, 1],
      pruned: [[0, 0, 0], [5, 5, 5], [5, 5, 5]],
      heard: [true, false, false],
      expected: [],
    },
  ];
  // A fellow straggler (behind in that row, floor low) cannot send it either.
  assert.deepEqual(
    snapshotSources(0, [1, 1, 1], {
      executed: [[0, 0, 0], [9, 9, 9], [1, 1, 1]],
      pruned: [[0, 0, 0], [5, 5, 5], [1, 1, 1]],
    }),
    [1],
  );
  // A peer ahead that kept what it misses (a hold for its snapshot): commits.
  assert.deepEqual(
    snapshotSources(0, [6, 1, 1], {
      executed: [[0, 0, 0], [9, 9, 9], [9, 9, 9]],
      pruned: [[0, 0, 0], [5, 1, 1], [7, 7, 7]],
    }),
    [],
  );
  for (const entry of cases) {
    assert.deepEqual(
      snapshotSources(
        entry.self,
        entry.executed,
        // Every peer executed at least what it pruned.
        { executed: entry.pruned, pruned: entry.pruned },
        entry.heard,
      ),
      entry.expected,
      entry.name,
    );
  }
});

Deno.test("a snapshot sent to a peer holds pruning at its prefix for that peer, until it catches up or the hold expires", () => {
  const progress = new ProgressTracker(0, 3);
  for (let number = 1; number <= 100; number++) progress.noteDurablyExecuted(0, number);
  progress.notePeer(1, [100, 0, 0], [0, 0, 0], 0);
  progress.notePeer(2, [10, 0, 0], [0, 0, 0], 0);
  // Pruning past replica 2, after a snapshot up to 60 was sent to it.
  progress.holdFor(2, [60, 0, 0], { sinceTick: 0, untilTick: 50, silenceTicks: 40 });
  assert.equal(progress.held(2, 1), true);
  assert.equal(progress.pruneTarget(0, [2]), 60);
  assert.equal(progress.pruneTarget(0, []), 60);
  // It installed the snapshot and reported 60: the hold is done.
  progress.notePeer(2, [60, 0, 0], [0, 0, 0], 2);
  assert.equal(progress.held(2, 2), false);
  assert.equal(progress.pruneTarget(0, [2]), 100);
  // A hold expires at its tick.
  progress.holdFor(2, [90, 0, 0], { sinceTick: 3, untilTick: 10, silenceTicks: 40 });
  assert.equal(progress.held(2, 10), false);
  assert.equal(progress.pruneTarget(0, [2]), 100);
  // And when its receiver falls silent (it died after the install).
  progress.holdFor(2, [90, 0, 0], { sinceTick: 3, untilTick: 1000, silenceTicks: 40 });
  assert.equal(progress.held(2, 40), true, "heard at 2, silent 38 ticks");
  assert.equal(progress.pruneTarget(0, [2]), 90);
  assert.equal(progress.held(2, 44), false, "silent 42 ticks since the hold began");
  assert.equal(progress.pruneTarget(0, [2]), 100);
  assert.deepEqual(progress.heardLately(30, 20), [true, false, false]);
  assert.deepEqual(progress.heardLately(12, 20), [true, true, true]);
});

Deno.test("pruning past a peer: the prune target skips it, and it no longer holds the forget floor", () => {
  const progress = new ProgressTracker(0, 3);
  for (let number = 1; number <= 10; number++) progress.noteDurablyExecuted(0, number);
  progress.notePeer(1, [10, 0, 0], [2, 0, 0]);
  progress.notePeer(2, [2, 0, 0], [2, 0, 0]);
  assert.equal(progress.pruneTarget(0), 2);
  assert.equal(progress.pruneTarget(0, [2]), 10);
  progress.setPruneFloor(0, 10);
  assert.equal(progress.prunedPast(2), true);
  assert.equal(progress.prunedPast(1), false);
  assert.equal(progress.prunedPast(0), false);
  progress.notePeer(1, [10, 0, 0], [10, 0, 0]);
  progress.rotateForgetFloor();
  // Replica 2's stale floor (2) does not hold the forget floor back.
  assert.deepEqual([...progress.rotateForgetFloor()], [10, 0, 0]);
  // Once it reports executing past the floor (a snapshot), it counts again.
  progress.notePeer(2, [12, 0, 0], [10, 0, 0]);
  assert.equal(progress.prunedPast(2), false);
});

Deno.test("peersToPrunePast counts members only: a removed position is never pruned past, nor counts in f", () => {
  const held = { commands: 5000, instances: 900 };
  // Positions 0..4, members 0, 2 and 3 (1 and 4 removed, their lag is 0):
  // f over three members is 1, so only the furthest behind.
  const lags = [0, 0, 900, 880, 0];
  assert.deepEqual(peersToPrunePast(lags, held, 1000), [2, 3], "every position a member");
  assert.deepEqual(peersToPrunePast(lags, held, 1000, { members: [0, 2, 3] }), [2]);
  // A lag reported for a removed position (it should be 0) is ignored.
  assert.deepEqual(peersToPrunePast([0, 900, 0], held, 1000, { members: [0, 2] }), []);
  // A learner counts like any member: five members, f = 2.
  assert.deepEqual(
    peersToPrunePast([0, 900, 0, 880, 0], held, 1000, { members: [0, 1, 2, 3, 4] }),
    [1, 3],
  );
});

Deno.test("a removed position holds back no pruning, is never behind, and is never pruned past", () => {
  const progress = new ProgressTracker(0, 4, { members: [0, 2, 3] });
  for (let number = 1; number <= 10; number++) progress.noteDurablyExecuted(0, number);
  progress.notePeer(2, [10, 0, 0, 0], [0, 0, 0, 0]);
  progress.notePeer(3, [8, 0, 0, 0], [0, 0, 0, 0]);
  assert.equal(progress.pruneTarget(0), 8);
  assert.deepEqual(progress.executionLag(), [0, 0, 0, 2]);
  progress.setPruneFloor(0, 8);
  assert.equal(progress.prunedPast(1), false);
  // Gossip from position 1 is ignored: it is never heard from.
  progress.notePeer(1, [1, 0, 0, 0], [1, 0, 0, 0]);
  assert.equal(progress.heard(1), false);
  assert.equal(progress.pruneTarget(0), 8);
  assert.deepEqual(progress.heardLately(0, 10), [true, false, true, true]);
  // Nor does it hold the forget floor.
  progress.notePeer(2, [10, 0, 0, 0], [8, 0, 0, 0]);
  progress.notePeer(3, [8, 0, 0, 0], [8, 0, 0, 0]);
  progress.rotateForgetFloor();
  assert.deepEqual([...progress.rotateForgetFloor()], [8, 0, 0, 0]);
  // Nor is a snapshot hold kept for it.
  progress.holdFor(1, [2, 0, 0, 0], { sinceTick: 0, untilTick: 100, silenceTicks: 100 });
  assert.equal(progress.held(1, 1), false);
});
