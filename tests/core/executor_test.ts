import assert from "node:assert/strict";
import fc from "fast-check";
import { type Access, accessesConflict } from "../../src/core/conflict.ts";
import { depsContain } from "../../src/core/deps.ts";
import { Executor } from "../../src/core/executor.ts";
import { type Instance, instanceKey, newInstance } from "../../src/core/instance.ts";
import { NOP, Phase } from "../../src/core/types.ts";

interface Spec {
  readonly owner: number;
  readonly number: number;
  readonly deps: number[];
  readonly accesses: Access[];
  readonly nop: boolean;
}

const ROWS = 3;

/**
 * Random committed graphs of the kind EPaxos produces: every row is contiguous,
 * deps name existing instances, a command depends on the earlier conflicting
 * commands of its own row (its coordinator indexed them before proposing it),
 * and Visibility holds (of two conflicting commands, one is in the other's
 * deps; for a pair the raw draw leaves unrelated, the one drawn first gets the
 * other added, or both do).
 */
const specsArbitrary = fc.array(
  fc.record({
    owner: fc.nat(ROWS - 1),
    key: fc.constantFrom("a", "b", "c"),
    write: fc.boolean(),
    depFractions: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), {
      minLength: ROWS,
      maxLength: ROWS,
    }),
    nop: fc.double({ min: 0, max: 1, noNaN: true }).map((x) => x < 0.1),
    mutual: fc.boolean(),
    seq: fc.nat(4),
  }),
  { minLength: 1, maxLength: 25 },
).map((raw) => {
  const counts = new Array(ROWS).fill(0);
  const numbered = raw.map((entry) => ({ ...entry, number: ++counts[entry.owner] }));
  const specs = numbered.map((entry): Spec => ({
    owner: entry.owner,
    number: entry.number,
    // Name only instances that exist: a dependency on a missing one waits for ever.
    // The rows, then the seq (SOSP'13 §4.1), which orders a cycle.
    deps: [
      ...entry.depFractions.map((fraction, row) =>
        Math.min(counts[row], Math.floor(fraction * (counts[row] + 1)))
      ),
      entry.seq,
    ],
    accesses: [{ key: entry.key, write: entry.write }],
    nop: entry.nop,
  }));
  specs.forEach((x, i) => {
    specs.forEach((y, j) => {
      if (j <= i || !accessesConflict(x.accesses, y.accesses)) return;
      if (x.owner === y.owner && !y.nop) y.deps[x.owner] = Math.max(y.deps[x.owner]!, x.number);
      if (x.nop || y.nop) return;
      if (depsContain(x.deps, y.owner, y.number) || depsContain(y.deps, x.owner, x.number)) return;
      y.deps[x.owner] = Math.max(y.deps[x.owner]!, x.number);
      if (numbered[j]!.mutual) x.deps[y.owner] = Math.max(x.deps[y.owner]!, y.number);
    });
  });
  return specs;
});

function replay(specs: readonly Spec[], order: readonly number[]): Instance<string>[] {
  const table = new Map<number, Instance<string>>();
  const executor = new Executor<string>(ROWS, (key) => table.get(key));
  const executed: Instance<string>[] = [];
  for (const index of order) {
    const spec = specs[index]!;
    const instance = newInstance<string>(spec.owner, spec.number, 0);
    table.set(instance.key, instance);
    instance.command = spec.nop ? NOP : ["x"];
    instance.deps = spec.nop ? new Array(ROWS + 1).fill(0) : spec.deps;
    instance.phase = Phase.Committed;
    if (!spec.nop) {
      instance.accesses = spec.accesses;
      executor.noteKnown(instance);
    }
    executor.noteCommitted(instance);
    executed.push(...executor.run());
  }
  return executed;
}

Deno.test("replicas execute conflicting commands in the same order whatever the commit order", () => {
  fc.assert(
    fc.property(
      specsArbitrary.chain((specs) =>
        fc.tuple(
          fc.constant(specs),
          fc.shuffledSubarray(specs.map((_, i) => i), { minLength: specs.length }),
          fc.shuffledSubarray(specs.map((_, i) => i), { minLength: specs.length }),
        )
      ),
      ([specs, orderA, orderB]) => {
        const runA = replay(specs, orderA);
        const runB = replay(specs, orderB);
        // Everything executes exactly once: all is committed and known.
        assert.equal(runA.length, specs.length);
        assert.equal(new Set(runA.map((i) => i.key)).size, specs.length);
        assert.equal(runB.length, specs.length);
        const position = (run: Instance<string>[]) =>
          new Map(run.map((instance, i) => [instance.key, i]));
        const positionA = position(runA);
        const positionB = position(runB);
        for (const x of specs) {
          for (const y of specs) {
            if (x === y || x.nop || y.nop || !accessesConflict(x.accesses, y.accesses)) continue;
            const keyX = instanceKey(x.owner, x.number);
            const keyY = instanceKey(y.owner, y.number);
            assert.equal(
              positionA.get(keyX)! < positionA.get(keyY)!,
              positionB.get(keyX)! < positionB.get(keyY)!,
              `order of ${x.owner}.${x.number} and ${y.owner}.${y.number} differs`,
            );
          }
        }
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("a command runs after the conflicting commands it depends on, unless they form a cycle", () => {
  fc.assert(
    fc.property(specsArbitrary, (specs) => {
      const run = replay(specs, specs.map((_, i) => i));
      const position = new Map(run.map((instance, i) => [instance.key, i]));
      for (const x of specs) {
        for (const y of specs) {
          if (x === y || x.nop || y.nop || !accessesConflict(x.accesses, y.accesses)) continue;
          if (!depsContain(x.deps, y.owner, y.number)) continue;
          const mutual = depsContain(y.deps, x.owner, x.number);
          if (mutual) continue;
          // x depends on y and not the reverse: y first, unless a longer cycle joins them.
          const before = position.get(instanceKey(y.owner, y.number))! <
            position.get(instanceKey(x.owner, x.number))!;
          if (!before) {
            // Then x and y must be in one strongly connected component: check that
            // y reaches x through conflicting dependencies.
            assert.ok(
              reaches(specs, y, x),
              `${y.owner}.${y.number} ran after ${x.owner}.${x.number}`,
            );
          }
        }
      }
    }),
    { numRuns: 1000 },
  );
});

Deno.test("inside a cycle, commands run in seq order, then by instance id", () => {
  // 0.1 and 1.1 write one key and each has the other in its deps: one
  // component. By id 0.1 would run first; 1.1 has the lower seq and runs first.
  const specs: Spec[] = [
    { owner: 0, number: 1, deps: [0, 1, 0, 5], accesses: [{ key: "a", write: true }], nop: false },
    { owner: 1, number: 1, deps: [1, 0, 0, 3], accesses: [{ key: "a", write: true }], nop: false },
    { owner: 2, number: 1, deps: [1, 1, 0, 3], accesses: [{ key: "a", write: true }], nop: false },
  ];
  for (const order of [[0, 1, 2], [2, 1, 0], [1, 2, 0]]) {
    const run = replay(specs, order).map((instance) => instance.key);
    // 2.1 depends on both, and neither on it: it runs last. Among the cycle, seq decides.
    assert.deepEqual(run, [instanceKey(1, 1), instanceKey(0, 1), instanceKey(2, 1)]);
  }
  // Equal seqs fall back to the instance id.
  const tied = specs.map((spec) => ({ ...spec, deps: [...spec.deps.slice(0, ROWS), 4] }));
  const run = replay(tied, [0, 1, 2]).map((instance) => instance.key);
  assert.deepEqual(run, [instanceKey(0, 1), instanceKey(1, 1), instanceKey(2, 1)]);
});

Deno.test("an instance waits for an unknown instance its dependencies name, then runs", () => {
  const table = new Map<number, Instance<string>>();
  const executor = new Executor<string>(2, (key) => table.get(key));
  const later = newInstance<string>(0, 1, 0);
  later.command = ["x"];
  later.deps = [0, 1]; // names 1.1, not yet known here
  later.accesses = [{ key: "a", write: true }];
  later.phase = Phase.Committed;
  table.set(later.key, later);
  executor.noteKnown(later);
  executor.noteCommitted(later);
  assert.deepEqual(executor.run(), []);
  assert.deepEqual([...executor.waitedOn()], [instanceKey(1, 1)]);
  // 1.1 arrives, known but not committed, and touches another key: no edge, so 0.1 runs.
  const other = newInstance<string>(1, 1, 0);
  other.command = ["y"];
  other.deps = [0, 0];
  other.accesses = [{ key: "b", write: true }];
  other.phase = Phase.PreAccepted;
  table.set(other.key, other);
  executor.noteKnown(other);
  assert.deepEqual(executor.run().map((i) => i.key), [later.key]);
});

Deno.test("an instance known only as an accepted Nop is not known: a recovery may still choose its command", () => {
  const table = new Map<number, Instance<string>>();
  const executor = new Executor<string>(2, (key) => table.get(key));
  const accepted = newInstance<string>(1, 1, 0);
  accepted.command = NOP;
  accepted.phase = Phase.Accepted;
  table.set(accepted.key, accepted);
  const dependent = newInstance<string>(0, 1, 0);
  dependent.command = ["x"];
  dependent.deps = [0, 1];
  dependent.accesses = [{ key: "a", write: true }];
  dependent.phase = Phase.Committed;
  table.set(dependent.key, dependent);
  executor.noteKnown(dependent);
  executor.noteCommitted(dependent);
  assert.deepEqual(executor.run(), []);
  // It commits with its original command, which conflicts: it must run first.
  accepted.command = ["y"];
  accepted.deps = [0, 0];
  accepted.accesses = [{ key: "a", write: true }];
  accepted.phase = Phase.Committed;
  executor.noteKnown(accepted);
  executor.noteCommitted(accepted);
  assert.deepEqual(executor.run().map((i) => i.key), [accepted.key, dependent.key]);
});

function reaches(specs: readonly Spec[], from: Spec, to: Spec): boolean {
  const seen = new Set<Spec>([from]);
  const stack = [from];
  while (stack.length > 0) {
    const current = stack.pop()!;
    if (current === to) return true;
    for (const next of specs) {
      if (seen.has(next) || next.nop || current.nop) continue;
      if (!depsContain(current.deps, next.owner, next.number)) continue;
      if (!accessesConflict(current.accesses, next.accesses)) continue;
      seen.add(next);
      stack.push(next);
    }
  }
  return false;
}

Deno.test("a later write of an instance's own row in its deps does not hide the earlier ones", () => {
  // 0.2 and 0.3 depend on each other (0.3 was pre-accepted somewhere before
  // 0.2), and both depend on 0.1. Coverage must not go round the cycle and
  // lose 0.1: it runs first.
  const table = new Map<number, Instance<string>>();
  const executor = new Executor<string>(1, (key) => table.get(key));
  const make = (number: number, deps: number) => {
    const instance = newInstance<string>(0, number, 0);
    instance.command = ["x"];
    instance.deps = [deps];
    instance.accesses = [{ key: "k", write: true }];
    instance.phase = Phase.Committed;
    table.set(instance.key, instance);
    return instance;
  };
  const first = make(1, 0);
  const second = make(2, 3);
  const third = make(3, 2);
  for (const instance of [second, third, first]) executor.noteKnown(instance);
  for (const instance of [second, third]) executor.noteCommitted(instance);
  executor.noteCommitted(first);
  assert.deepEqual(executor.run().map((i) => i.number), [1, 2, 3]);
});
