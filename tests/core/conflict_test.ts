import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Access,
  accessesConflict,
  batchAccesses,
  ConflictIndex,
  type ConflictModel,
} from "../../src/core/conflict.ts";
import { depsContain, emptyDeps } from "../../src/core/deps.ts";

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

Deno.test("the index answers a superset of the exact conflicts (ConflictingIds)", () => {
  fc.assert(fc.property(
    fc.array(instanceArbitrary, { maxLength: 30 }),
    fc.array(accessArbitrary, { minLength: 1, maxLength: 3 }),
    fc.boolean(),
    (history, query, forget) => {
      const index = new ConflictIndex(3);
      const numbers = [0, 0, 0];
      const added: { owner: number; number: number; accesses: Access[] }[] = [];
      for (const instance of history) {
        const number = ++numbers[instance.owner]!;
        index.add(instance.owner, number, instance.accesses);
        added.push({ owner: instance.owner, number, accesses: instance.accesses });
      }
      if (forget) {
        // Forgetting below a floor must keep everything at or below it covered.
        const floor = numbers.map((top) => Math.floor(top / 2));
        index.forgetBelow(floor);
      }
      const deps = emptyDeps(3);
      index.collect(query, deps);
      for (const instance of added) {
        if (accessesConflict(query, instance.accesses)) {
          assert.ok(depsContain(deps, instance.owner, instance.number));
        }
      }
    },
  ));
});

Deno.test("forgetting only drops keys whose every instance is below the floor", () => {
  const index = new ConflictIndex(2);
  index.add(0, 1, [{ key: "old", write: true }]);
  index.add(0, 5, [{ key: "new", write: true }]);
  assert.equal(index.size, 2);
  assert.equal(index.forgetBelow([2, 0]), 1);
  assert.equal(index.size, 1);
  const deps = emptyDeps(2);
  index.collect([{ key: "old", write: false }], deps);
  assert.deepEqual(deps, [2, 0]);
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
