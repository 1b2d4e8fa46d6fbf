/**
 * The exactly-once check of the Deno KV chaos scenarios
 * (src/chaos/kv_findings.ts) on tallies and counters whose verdict is known,
 * doctored ones among them: a counter above what the sums can have added, or
 * below what was acknowledged, must fail.
 */

import assert from "node:assert/strict";
import {
  type CounterRead,
  exactlyOnceFindings,
  type SumTally,
} from "../../src/chaos/kv_findings.ts";

/** A tally with no resent sum: each counts at most once. */
function clean(acknowledged: number, unknown: number): SumTally {
  return {
    acknowledged,
    unknown,
    mostApplications: acknowledged + unknown,
    resentToRestarted: 0,
  };
}

const at = (value: number): CounterRead => ({ value: BigInt(value) });

const CASES: readonly {
  readonly name: string;
  readonly tally: SumTally;
  readonly finals: readonly CounterRead[];
  /** A fragment of each failure expected, none for a pass. */
  readonly fails: readonly string[];
}[] = [
  {
    name: "every sum acknowledged, counted once",
    tally: clean(100, 0),
    finals: [at(100), at(100)],
    fails: [],
  },
  { name: "unknown sums not applied", tally: clean(100, 5), finals: [at(100), at(100)], fails: [] },
  { name: "unknown sums all applied", tally: clean(100, 5), finals: [at(105)], fails: [] },
  { name: "no sum at all: the counter is absent", tally: clean(0, 0), finals: [at(0)], fails: [] },
  {
    name: "doctored: one acknowledged sum lost",
    tally: clean(100, 0),
    finals: [at(99), at(99)],
    fails: ["1 acknowledged sums are lost"],
  },
  {
    name: "doctored: one sum applied twice",
    tally: clean(100, 0),
    finals: [at(101), at(101)],
    fails: ["1 applications too many"],
  },
  {
    name: "doctored: applied twice, beyond the unknown ones",
    tally: clean(100, 3),
    finals: [at(104)],
    fails: ["1 applications too many"],
  },
  {
    name: "a sum resent to a restarted replica may apply twice",
    tally: { acknowledged: 100, unknown: 0, mostApplications: 101, resentToRestarted: 1 },
    finals: [at(101)],
    fails: [],
  },
  {
    name: "but not three times",
    tally: { acknowledged: 100, unknown: 0, mostApplications: 101, resentToRestarted: 1 },
    finals: [at(102)],
    fails: ["1 applications too many"],
  },
  {
    name: "replicas disagree",
    tally: clean(10, 0),
    finals: [at(10), at(11)],
    fails: ["replicas read different counters: 10 / 11"],
  },
  {
    name: "a replica cannot be read",
    tally: clean(10, 0),
    finals: [at(10), { error: "no answer in 10 s" }],
    fails: ["replica 1: no answer in 10 s"],
  },
  { name: "no replica read", tally: clean(10, 0), finals: [], fails: ["through no replica"] },
];

for (const { name, tally, finals, fails } of CASES) {
  Deno.test(`exactly-once check: ${name}`, () => {
    const found = exactlyOnceFindings(tally, finals);
    assert.equal(found.failures.length, fails.length, found.failures.join("\n"));
    for (const [index, fragment] of fails.entries()) {
      assert.ok(
        found.failures[index]!.includes(fragment),
        `${found.failures[index]} ∌ ${fragment}`,
      );
    }
  });
}

Deno.test("exactly-once check: figures name what was counted", () => {
  const found = exactlyOnceFindings(
    { acknowledged: 40, unknown: 2, mostApplications: 45, resentToRestarted: 3 },
    [at(43), at(43), at(43)],
  );
  assert.deepEqual(found.failures, []);
  assert.deepEqual(found.figures, {
    sums_acknowledged: 40,
    sums_unknown: 2,
    sums_resent_to_restarted: 3,
    sums_most_applications: 45,
    counter_final: 43,
    extra_applications_at_least: 1,
  });
});
