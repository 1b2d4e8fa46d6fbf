import assert from "node:assert/strict";
import fc from "fast-check";
import {
  depsContain,
  depsCover,
  depsEqual,
  depsRaise,
  depsUnion,
  emptyDeps,
  isDeps,
} from "../../src/core/deps.ts";

const vector = fc.array(fc.nat(20), { minLength: 5, maxLength: 5 });

/** The explicit set a vector denotes: every (row, number) with 1 <= number <= deps[row]. */
function members(deps: readonly number[]): Set<string> {
  const set = new Set<string>();
  deps.forEach((top, row) => {
    for (let number = 1; number <= top; number++) set.add(`${row}.${number}`);
  });
  return set;
}

Deno.test("vector operations agree with the sets they denote", () => {
  fc.assert(fc.property(vector, vector, (a, b) => {
    const setA = members(a);
    const setB = members(b);
    const union = members(depsUnion(a, b) as number[]);
    assert.deepEqual(union, new Set([...setA, ...setB]));
    assert.equal(depsEqual(a, b), setA.size === setB.size && [...setA].every((m) => setB.has(m)));
    assert.equal(depsCover(a, b), [...setB].every((m) => setA.has(m)));
    for (let row = 0; row < 5; row++) {
      for (let number = 1; number <= 21; number++) {
        assert.equal(depsContain(a, row, number), setA.has(`${row}.${number}`));
      }
    }
  }));
});

Deno.test("depsUnion returns an operand when the other adds nothing", () => {
  const big = [3, 4, 5];
  const small = [1, 4, 0];
  assert.equal(depsUnion(big, small), big);
  assert.equal(depsUnion(small, big), big);
});

Deno.test("depsRaise raises in place", () => {
  const target = emptyDeps(3);
  depsRaise(target, [2, 0, 7]);
  depsRaise(target, [1, 5, 3]);
  assert.deepEqual(target, [2, 5, 7]);
});

Deno.test("isDeps rejects malformed vectors", () => {
  assert.ok(isDeps([0, 1, 2], 3));
  for (const bad of [[0, 1], [0, -1, 2], [0, 1.5, 2], ["0", 1, 2], null, {}, [0, 1, Infinity]]) {
    assert.ok(!isDeps(bad, 3), JSON.stringify(bad));
  }
});
