/**
 * A property of the configuration change deciders: any sequence of accepted
 * changes from a bootstrap of 3 keeps an odd number of voters, at least 3,
 * unique ids never reused, the epoch rising by one per change, and a majority
 * of the old voters alive (per the view the change was decided with).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  bootstrapConfiguration,
  type Configuration,
  configurationProblem,
  describeConfiguration,
  majority,
  type Member,
  voterIds,
} from "../../src/core/configuration.ts";
import {
  type ClusterView,
  type ConfigurationChange,
  decideChange,
} from "../../src/core/configuration_change.ts";

/** The URL of the member (or newcomer) numbered `k`. */
function url(k: number): string {
  return `http://r${k}.test:7000`;
}

/** A change over a small id range, so that some name real members and some do not. */
const rawChange: fc.Arbitrary<ConfigurationChange> = fc.oneof(
  fc.nat(12).map((k): ConfigurationChange => ({ kind: "add", url: url(k) })),
  fc.uniqueArray(fc.nat(12), { minLength: 1, maxLength: 3 })
    .map((ids): ConfigurationChange => ({ kind: "promote", ids })),
  fc.uniqueArray(fc.nat(12), { minLength: 1, maxLength: 3 })
    .map((ids): ConfigurationChange => ({ kind: "remove", ids })),
  fc.nat(12).map((id): ConfigurationChange => ({ kind: "replace", id })),
);

/**
 * A change chosen against the configuration it will meet: add at a fresh url,
 * promote learners, remove voters or learners, replace a member (`count` of
 * them, from a rotation by `seed`), so that sequences grow and shrink.
 */
type Step = (config: Configuration) => ConfigurationChange;
const fittedChange: fc.Arbitrary<Step> = fc.record({
  // Weighted toward growth, and toward pairs, so that sequences reach 7 voters.
  kind: fc.constantFrom(
    "add",
    "add",
    "add",
    "promote",
    "promote",
    "remove-voters",
    "remove-learners",
    "replace",
  ),
  count: fc.constantFrom(2, 2, 2, 1),
  seed: fc.nat(),
}).map(({ kind, count, seed }) => (config: Configuration): ConfigurationChange => {
  const pick = (members: readonly Member[]) => {
    const ids = members.map((member) => member.id);
    const rotated = [...ids.slice(seed % Math.max(1, ids.length)), ...ids];
    return [...new Set(rotated)].slice(0, count);
  };
  const learners = config.members.filter((member) => member.role === "learner");
  const voters = config.members.filter((member) => member.role === "voter");
  switch (kind) {
    case "add":
      return { kind: "add", url: url(config.nextId) };
    case "promote":
      return { kind: "promote", ids: pick(learners) };
    case "remove-voters":
      return { kind: "remove", ids: pick(voters) };
    case "remove-learners":
      return { kind: "remove", ids: pick(learners) };
    default:
      return { kind: "replace", id: pick(config.members)[0]! };
  }
});

const anyChange: fc.Arbitrary<Step> = fc.oneof(
  { weight: 1, arbitrary: rawChange.map((change): Step => () => change) },
  { weight: 4, arbitrary: fittedChange },
);

/**
 * A view of whatever members a configuration has: each id's status is drawn by
 * `id % 16`, mostly alive and caught up, so that changes pass.
 */
type Observation = (config: Configuration) => ClusterView;
const anyView: fc.Arbitrary<Observation> = fc.record({
  inFlight: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, fc.constant(true)),
  statuses: fc.array(
    fc.oneof(
      { weight: 6, arbitrary: fc.constant({ alive: true, caughtUp: true }) },
      fc.record({ alive: fc.boolean(), caughtUp: fc.boolean() }),
    ),
    { minLength: 16, maxLength: 16 },
  ),
}).map(({ inFlight, statuses }) => (config: Configuration): ClusterView => ({
  inFlight,
  members: new Map(config.members.map((member) => [member.id, statuses[member.id % 16]!])),
}));

Deno.test("any sequence of accepted changes keeps the invariants", () => {
  let accepted = 0;
  let mostVoters = 0;
  fc.assert(
    fc.property(
      fc.array(fc.tuple(anyChange, anyView), { minLength: 10, maxLength: 40 }),
      (steps) => {
        let config = bootstrapConfiguration([url(0), url(1), url(2)]);
        const everUsed = new Set([0, 1, 2]);
        for (const [step, observe] of steps) {
          const change = step(config);
          const observed = observe(config);
          const decision = decideChange(config, change, observed);
          if (!decision.ok) {
            assert.ok(!decision.reason.includes("\n"));
            continue;
          }
          accepted++;
          const next = decision.next;
          const voters = voterIds(next);
          assert.equal(voters.length % 2, 1, describeConfiguration(next));
          assert.ok(voters.length >= 3, describeConfiguration(next));
          assert.equal(configurationProblem(next), undefined);
          assert.equal(next.epoch, config.epoch + 1);
          const oldIds = new Set(config.members.map((member) => member.id));
          for (const member of next.members) {
            assert.ok(member.id < next.nextId);
            // A member new to this epoch has an id never used before.
            if (!oldIds.has(member.id)) {
              assert.ok(
                !everUsed.has(member.id),
                `id ${member.id} reused`,
              );
            }
            everUsed.add(member.id);
          }
          // The change commits in the old epoch: a majority of its voters
          // answer, a replaced member not counted.
          const oldVoters = voterIds(config);
          const replaced = change.kind === "replace" ? change.id : undefined;
          const alive = oldVoters.filter((id) =>
            id !== replaced && observed.members.get(id)?.alive === true
          );
          assert.ok(alive.length >= majority(oldVoters.length), describeConfiguration(config));
          assert.ok(!observed.inFlight);
          mostVoters = Math.max(mostVoters, voters.length);
          config = next;
        }
      },
    ),
    { numRuns: 300 },
  );
  // The property means little if nothing was ever accepted.
  assert.ok(accepted > 1000, `only ${accepted} changes accepted`);
  assert.ok(mostVoters >= 7, `never grew past ${mostVoters} voters`);
});
