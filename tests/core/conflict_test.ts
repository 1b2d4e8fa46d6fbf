import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Access,
  accessesConflict,
  batchAccesses,
  ConflictIndex,
  type ConflictModel,
  RECENT_SWEEP_SLACK,
} from "../../src/core/conflict.ts";
import { depsContain, emptyInstanceDeps, seqOf } from "../../src/core/deps.ts";

const keys = ["a", "b", "c", "d"];
const accessArbitrary: fc.Arbitrary<Access> = fc.oneof(
  fc.record({ key: fc.constantFrom(...keys), write: fc.boolean() }),
  fc.tuple(fc.constantFrom(...keys), fc.constantFrom(...keys), fc.boolean()).map(
    ([from, to, write]) => ({
      key: from < to ? from : to,
      end: (from < to ? to : from) + "z",
      write,
    }),
  ),
);
const instanceArbitrary = fc.record({
  owner: fc.nat(2),
  accesses: fc.array(accessArbitrary, { minLength: 1, maxLength: 3 }),
  seq: fc.nat(20),
  raisedSeq: fc.option(fc.nat(40)),
});

Deno.test("reads do not conflict with reads; a write conflicts with what it overlaps", () => {
  assert.ok(!accessesConflict([{ key: "a", write: false }], [{ key: "a", write: false }]));
  assert.ok(accessesConflict([{ key: "a", write: true }], [{ key: "a", write: false }]));
  assert.ok(!accessesConflict([{ key: "a", write: true }], [{ key: "b", write: true }]));
  assert.ok(accessesConflict([{ key: "a", end: "c", write: false }], [{ key: "b", write: true }]));
  assert.ok(!accessesConflict([{ key: "a", end: "b", write: false }], [{ key: "b", write: true }]));
  assert.ok(
    accessesConflict([{ key: "a", end: "c", write: true }], [{ key: "b", end: "d", write: false }]),
  );
});

Deno.test("the index answers a superset of the exact conflicts (ConflictingIds) and a seq above theirs", () => {
  fc.assert(fc.property(
    fc.array(instanceArbitrary, { maxLength: 30 }),
    fc.array(accessArbitrary, { minLength: 1, maxLength: 3 }),
    fc.boolean(),
    (history, query, forget) => {
      const index = new ConflictIndex(3);
      const numbers = [0, 0, 0];
      const added: { owner: number; number: number; accesses: Access[]; seq: number }[] = [];
      for (const instance of history) {
        const number = ++numbers[instance.owner]!;
        index.add(instance.owner, number, instance.accesses, instance.seq);
        let seq = instance.seq;
        if (instance.raisedSeq !== null) {
          // Learned again with another seq (an Accept or a Commit): the highest counts.
          index.add(instance.owner, number, instance.accesses, instance.raisedSeq);
          seq = Math.max(seq, instance.raisedSeq);
        }
        added.push({ owner: instance.owner, number, accesses: instance.accesses, seq });
      }
      if (forget) {
        // Forgetting below a floor must keep everything at or below it covered.
        const floor = numbers.map((top) => Math.floor(top / 2));
        index.forgetBelow(floor);
      }
      const deps = emptyInstanceDeps(3);
      index.collect(query, deps);
      for (const instance of added) {
        if (accessesConflict(query, instance.accesses)) {
          assert.ok(depsContain(deps, instance.owner, instance.number));
          // Forgotten instances executed everywhere: their seq no longer matters.
          const forgotten = forget && instance.number <= Math.floor(numbers[instance.owner]! / 2);
          if (!forgotten) assert.ok(seqOf(deps, 3) > instance.seq);
        }
      }
    },
  ));
});

Deno.test("forgetting only drops keys whose every instance is below the floor", () => {
  const index = new ConflictIndex(2);
  index.add(0, 1, [{ key: "old", write: true }], 3);
  index.add(0, 5, [{ key: "new", write: true }], 4);
  assert.equal(index.size, 2);
  assert.equal(index.forgetBelow([2, 0]), 1);
  assert.equal(index.size, 1);
  const deps = emptyInstanceDeps(2);
  index.collect([{ key: "old", write: false }], deps);
  // The forgotten key answers the floor, with no seq: its instance executed everywhere.
  assert.deepEqual(deps, [2, 0, 0]);
  index.collect([{ key: "new", write: false }], deps);
  assert.deepEqual(deps, [5, 0, 5]);
});

Deno.test("collectRecent answers what collect does in every row above the swept frontier", () => {
  fc.assert(fc.property(
    fc.array(fc.tuple(instanceArbitrary, fc.nat(3)), { maxLength: 30 }),
    fc.array(accessArbitrary, { minLength: 1, maxLength: 3 }),
    (history, query) => {
      const index = new ConflictIndex(3);
      const numbers = [0, 0, 0];
      // The executed frontier rises by a few instances now and then, and the
      // index is swept at each rise (as the replica does each tick).
      const executed = [0, 0, 0];
      for (const [instance, rise] of history) {
        const number = ++numbers[instance.owner]!;
        index.add(instance.owner, number, instance.accesses, instance.seq);
        const row = number % 3;
        executed[row] = Math.min(numbers[row]!, executed[row]! + rise);
        index.sweepRecent(executed);
      }
      const full = emptyInstanceDeps(3);
      index.collect(query, full);
      const recent = emptyInstanceDeps(3);
      index.collectRecent(query, recent);
      for (let row = 0; row < 3; row++) {
        if (full[row]! > executed[row]!) assert.equal(recent[row], full[row], `row ${row}`);
        assert.ok(recent[row]! <= full[row]!);
      }
    },
  ));
});

Deno.test("a sweep keeps a key while any of its instances is above the executed frontier", () => {
  const index = new ConflictIndex(2);
  index.add(0, 1, [{ key: "done", write: true }], 1);
  index.add(0, 2, [{ key: "pending", write: true }], 2);
  index.add(1, 1, [{ key: "pending", write: false }], 3);
  assert.equal(index.recentSize, 2);
  // Row 0 executed up to 2, row 1 not at all: "pending" has a read of row 1 above it.
  assert.equal(index.sweepRecent([2, 0]), 1);
  assert.equal(index.recentSize, 1);
  const deps = emptyInstanceDeps(2);
  index.collectRecent([{ key: "pending", write: true }], deps);
  assert.deepEqual(deps, [2, 1, 4]);
  // A swept key adds nothing, although the full index still knows its write.
  const swept = emptyInstanceDeps(2);
  index.collectRecent([{ key: "done", write: false }], swept);
  assert.deepEqual(swept, [0, 0, 0]);
  index.collect([{ key: "done", write: false }], swept);
  assert.deepEqual(swept, [1, 0, 2]);
  // Written again: recent again.
  index.add(1, 2, [{ key: "done", write: true }], 5);
  const again = emptyInstanceDeps(2);
  index.collectRecent([{ key: "done", write: false }], again);
  assert.deepEqual(again, [1, 2, 6]);
});

Deno.test("recent keys are swept once they doubled past the slack, and stay bounded", () => {
  const index = new ConflictIndex(1);
  let number = 0;
  const write = (key: string) => index.add(0, ++number, [{ key, write: true }], number);
  for (let i = 0; i < RECENT_SWEEP_SLACK - 1; i++) write(`k${i}`);
  assert.equal(index.maybeSweepRecent([number]), 0);
  assert.equal(index.recentSize, RECENT_SWEEP_SLACK - 1);
  write("last");
  // Everything executed: all swept.
  assert.equal(index.maybeSweepRecent([number]), RECENT_SWEEP_SLACK);
  assert.equal(index.recentSize, 0);
  // Nothing executed any more: the map grows to twice the kept keys plus the slack, no further.
  const frontier = [number];
  for (let i = 0; i < 10 * RECENT_SWEEP_SLACK; i++) {
    write(`u${i}`);
    index.maybeSweepRecent(frontier);
    assert.ok(index.recentSize <= 10 * RECENT_SWEEP_SLACK);
  }
  assert.equal(index.recentSize, 10 * RECENT_SWEEP_SLACK);
  // A key swept out is still in the full index.
  const deps = emptyInstanceDeps(1);
  index.collect([{ key: "k0", write: false }], deps);
  assert.deepEqual(deps, [1, 2]);
});

Deno.test("a batch touches the union of its members' keys, writing where any member writes", () => {
  const model: ConflictModel<{ key: string; write: boolean }> = {
    accesses: (command) => [{ key: command.key, write: command.write }],
  };
  const merged = batchAccesses(model, [
    { key: "a", write: false },
    { key: "b", write: false },
    { key: "a", write: true },
  ]);
  assert.deepEqual(
    [...merged].sort((x, y) => x.key.localeCompare(y.key)),
    [{ key: "a", write: true }, { key: "b", write: false }],
  );
});
