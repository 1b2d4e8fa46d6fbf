import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Access,
  accessesConflict,
  batchAccesses,
  ConflictIndex,
  type ConflictModel,
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
