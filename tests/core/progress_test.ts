import assert from "node:assert/strict";
import { coalesceRequests } from "../../src/core/housekeeping.ts";
import { instanceKey } from "../../src/core/instance.ts";
import { ProgressTracker } from "../../src/core/progress.ts";

Deno.test("the executed frontier is a prefix: numbers executed out of order wait for the gap", () => {
  const progress = new ProgressTracker(0, 3);
  progress.noteDurablyExecuted(1, 2);
  progress.noteDurablyExecuted(1, 3);
  assert.deepEqual([...progress.executed], [0, 0, 0]);
  progress.noteDurablyExecuted(1, 1);
  assert.deepEqual([...progress.executed], [0, 3, 0]);
});

Deno.test("a row prunes to the lowest frontier any replica reported, and the lag shows who", () => {
  const progress = new ProgressTracker(0, 3);
  for (let number = 1; number <= 5; number++) progress.noteDurablyExecuted(0, number);
  progress.notePeer(1, [4, 0, 0], [0, 0, 0]);
  progress.notePeer(2, [2, 0, 0], [0, 0, 0]);
  assert.equal(progress.pruneTarget(0), 2);
  assert.deepEqual(progress.executionLag(), [0, 1, 3]);
  // Gossip only raises what a peer reported: a stale frontier changes nothing.
  progress.notePeer(2, [1, 0, 0], [0, 0, 0]);
  assert.equal(progress.pruneTarget(0), 2);
});

Deno.test("the forget floor lags one period behind what every replica pruned", () => {
  const progress = new ProgressTracker(0, 3);
  progress.setPruneFloor(0, 4);
  progress.notePeer(1, [4, 0, 0], [4, 0, 0]);
  progress.notePeer(2, [4, 0, 0], [3, 0, 0]);
  assert.deepEqual(progress.rotateForgetFloor(), [0, 0, 0]);
  assert.deepEqual(progress.rotateForgetFloor(), [3, 0, 0]);
});

Deno.test("commit requests coalesce consecutive numbers of a row", () => {
  const rows: { name: string; keys: number[]; want: unknown[] }[] = [
    { name: "nothing", keys: [], want: [] },
    {
      name: "a run, out of order",
      keys: [instanceKey(1, 3), instanceKey(1, 1), instanceKey(1, 2)],
      want: [{ owner: 1, number: 1, count: 3 }],
    },
    {
      name: "a gap splits a run; rows stay apart",
      keys: [instanceKey(1, 1), instanceKey(1, 3), instanceKey(2, 1)],
      want: [
        { owner: 1, number: 1, count: 1 },
        { owner: 1, number: 3, count: 1 },
        { owner: 2, number: 1, count: 1 },
      ],
    },
  ];
  for (const row of rows) assert.deepEqual(coalesceRequests(row.keys), row.want, row.name);
});
