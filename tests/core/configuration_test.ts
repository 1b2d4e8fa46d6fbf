/**
 * Table tests of the configuration model and its change deciders, in the
 * manner of etcd raft's `confchange/` tests: each row names a case, gives the
 * configuration (written as `describeConfiguration` prints it), what the
 * deciding replica observes, the change, and the next configuration or a
 * refusal matching a pattern. `configuration_property_test.ts` runs random
 * sequences of changes.
 */

import assert from "node:assert/strict";
import {
  bootstrapConfiguration,
  type Configuration,
  configurationProblem,
  describeConfiguration,
  majority,
  type Member,
  memberUrlProblem,
  voterIds,
} from "../../src/core/configuration.ts";
import {
  type ClusterView,
  type ConfigurationChange,
  decideChange,
  type DecideChangeOptions,
} from "../../src/core/configuration_change.ts";
import { leaseEveryKey } from "../../src/core/lease.ts";

/** The URL member `id` has unless a row says otherwise. */
function url(id: number): string {
  return `http://r${id}.test:7000`;
}

/**
 * A configuration from `describeConfiguration`'s text, e.g. `e3 [0v1 1v1 2l2]`;
 * urls are `url(id)` unless overridden, `nextId` one above the highest id unless given.
 */
function cfg(
  text: string,
  extra: { nextId?: number; urls?: Record<number, string> } = {},
): Configuration {
  const match = /^e(\d+) \[(.*)\]$/.exec(text);
  if (match === null) throw new Error(`bad configuration text ${text}`);
  const members: Member[] = match[2]!.split(" ").filter((part) => part !== "").map((part) => {
    const [, id, role, incarnation] = /^(\d+)([vl])(\d+)$/.exec(part)!;
    return {
      id: Number(id),
      incarnation: Number(incarnation),
      url: extra.urls?.[Number(id)] ?? url(Number(id)),
      role: role === "v" ? "voter" : "learner",
    };
  });
  const nextId = extra.nextId ?? Math.max(-1, ...members.map((member) => member.id)) + 1;
  return { epoch: Number(match[1]), members, nextId };
}

/** What a replica observes: ids 0..15 alive and caught up, except as listed. */
interface ViewSpec {
  /** Started once but not answering (their last frontier still counts as caught up). */
  down?: number[];
  /** Answering, but their executed frontier is beyond the bound. */
  behind?: number[];
  /** Absent from the view altogether. */
  unseen?: number[];
  /** A change is in flight. */
  inFlight?: boolean;
}

function view(spec: ViewSpec = {}): ClusterView {
  const members = new Map<number, { alive: boolean; caughtUp: boolean }>();
  for (let id = 0; id < 16; id++) {
    if (spec.unseen?.includes(id)) continue;
    members.set(id, {
      alive: !(spec.down ?? []).includes(id),
      caughtUp: !(spec.behind ?? []).includes(id),
    });
  }
  return { inFlight: spec.inFlight ?? false, members };
}

interface Row {
  name: string;
  config: Configuration;
  view?: ViewSpec;
  change: ConfigurationChange;
  options?: DecideChangeOptions;
  /** The next configuration, or a pattern the one-line refusal matches. */
  want: Configuration | RegExp;
  /** For an accepted add: the member created. */
  added?: Member;
}

function runTable(rows: Row[]): void {
  for (const row of rows) {
    const before = structuredClone(row.config);
    const decision = decideChange(row.config, row.change, view(row.view), row.options);
    assert.deepEqual(row.config, before, `${row.name}: the input configuration is unchanged`);
    if (row.want instanceof RegExp) {
      assert.equal(decision.ok, false, `${row.name}: expected a refusal`);
      if (decision.ok) continue;
      assert.match(decision.reason, row.want, row.name);
      assert.ok(!decision.reason.includes("\n"), `${row.name}: the reason is one line`);
    } else {
      assert.ok(decision.ok, `${row.name}: ${decision.ok ? "" : decision.reason}`);
      assert.deepEqual(decision.next, row.want, row.name);
      assert.deepEqual(decision.added, row.added, `${row.name}: added`);
      assert.equal(configurationProblem(decision.next), undefined, `${row.name}: valid`);
    }
  }
}

const three = cfg("e1 [0v1 1v1 2v1]");
const five = cfg("e4 [0v1 1v1 2v1 3v1 4v1]");

Deno.test("add: a new learner with the next id, or a clear refusal", () => {
  runTable([
    {
      name: "adds a learner with id nextId, incarnation 1; nextId and epoch rise",
      config: three,
      change: { kind: "add", url: url(3) },
      want: cfg("e2 [0v1 1v1 2v1 3l1]"),
      added: { id: 3, incarnation: 1, url: url(3), role: "learner" },
    },
    {
      name: "ids are never reused: a removed member's id is not given again",
      config: cfg("e7 [0v1 1v1 2v1]", { nextId: 5 }),
      change: { kind: "add", url: url(5) },
      want: cfg("e8 [0v1 1v1 2v1 5l1]"),
      added: { id: 5, incarnation: 1, url: url(5), role: "learner" },
    },
    {
      name: "a trailing slash is reduced to the origin",
      config: three,
      change: { kind: "add", url: `${url(3)}/` },
      want: cfg("e2 [0v1 1v1 2v1 3l1]"),
      added: { id: 3, incarnation: 1, url: url(3), role: "learner" },
    },
    {
      name: "a learner that is behind does not block an add (it is in no quorum)",
      config: cfg("e2 [0v1 1v1 2v1 3l1]"),
      view: { down: [3], behind: [3] },
      change: { kind: "add", url: url(4) },
      want: cfg("e3 [0v1 1v1 2v1 3l1 4l1]"),
      added: { id: 4, incarnation: 1, url: url(4), role: "learner" },
    },
    {
      name: "a URL a member already has (etcd ErrPeerURLexists)",
      config: three,
      change: { kind: "add", url: url(1) },
      want: /member 1 has that url; replace 1 .*or use another url/,
    },
    {
      name: "the same URL with a trailing slash is still a duplicate",
      config: three,
      change: { kind: "add", url: `${url(2)}/` },
      want: /member 2 has that url/,
    },
    {
      name: "not a URL",
      config: three,
      change: { kind: "add", url: "r3.test:7000" },
      want: /cannot add: url (is not a URL|must be http or https)/,
    },
    {
      name: "a URL with a path",
      config: three,
      change: { kind: "add", url: `${url(3)}/kv` },
      want: /url must be an origin such as http:\/\/r3\.test:7000/,
    },
    {
      name: "adding while a voter is dead (etcd mayAddMember; the card)",
      config: five,
      view: { down: [3] },
      change: { kind: "add", url: url(5) },
      want: /voter 3 does not answer; remove or replace member 3 first/,
    },
    {
      name: "a voter missing from the view counts as dead",
      config: five,
      view: { unseen: [4] },
      change: { kind: "add", url: url(5) },
      want: /voter 4 does not answer/,
    },
    {
      name: "ids exhausted",
      config: cfg("e1 [0v1 1v1 2v1]", { nextId: Number.MAX_SAFE_INTEGER }),
      change: { kind: "add", url: url(3) },
      want: /ids are exhausted/,
    },
  ]);
});

Deno.test("promote: caught-up learners become voters in pairs", () => {
  const withLearners = cfg("e3 [0v1 1v1 2v1 3l1 4l1 5l1]");
  runTable([
    {
      name: "two caught-up learners: 3 → 5 voters",
      config: withLearners,
      change: { kind: "promote", ids: [3, 4] },
      want: cfg("e4 [0v1 1v1 2v1 3v1 4v1 5l1]"),
    },
    {
      name: "a learner that is not caught up (etcd isLearnerReady)",
      config: withLearners,
      view: { behind: [4] },
      change: { kind: "promote", ids: [3, 4] },
      want: /cannot promote learner 4: it is not caught up; wait until it is caught up/,
    },
    {
      name: "a learner that does not answer",
      config: withLearners,
      view: { down: [3] },
      change: { kind: "promote", ids: [3, 4] },
      want: /cannot promote learner 3: it does not answer/,
    },
    {
      name: "a voter is not a learner (etcd ErrMemberNotLearner)",
      config: withLearners,
      change: { kind: "promote", ids: [2, 3] },
      want: /cannot promote member 2: it is already a voter; promote only learners/,
    },
    {
      name: "an unknown id",
      config: withLearners,
      change: { kind: "promote", ids: [3, 9] },
      want: /cannot promote member 9: no such member in epoch 3/,
    },
    {
      name: "one learner alone would make voters even",
      config: withLearners,
      change: { kind: "promote", ids: [3] },
      want: /would leave 4 voters, an even number; promote or remove voters two at a time/,
    },
    {
      name: "the same id twice",
      config: withLearners,
      change: { kind: "promote", ids: [3, 3] },
      want: /cannot promote member 3 twice/,
    },
    {
      name: "no ids",
      config: withLearners,
      change: { kind: "promote", ids: [] },
      want: /promote needs at least one member id/,
    },
    {
      name: "a voter down: promoting two still leaves a reachable majority of 5",
      config: withLearners,
      view: { down: [2] },
      change: { kind: "promote", ids: [3, 4] },
      want: cfg("e4 [0v1 1v1 2v1 3v1 4v1 5l1]"),
    },
  ]);
});

Deno.test("remove: voters leave in pairs, learners freely, and quorums stay reachable", () => {
  const seven = cfg("e9 [0v1 1v1 2v1 3v1 4v1 5v1 6v1 7l1]");
  runTable([
    {
      name: "two voters: 5 → 3",
      config: five,
      change: { kind: "remove", ids: [3, 4] },
      want: cfg("e5 [0v1 1v1 2v1]", { nextId: 5 }),
    },
    {
      name: "two dead voters: the way to shrink past a failure",
      config: five,
      view: { down: [3, 4] },
      change: { kind: "remove", ids: [3, 4] },
      want: cfg("e5 [0v1 1v1 2v1]", { nextId: 5 }),
    },
    {
      name: "a learner alone",
      config: seven,
      change: { kind: "remove", ids: [7] },
      want: cfg("e10 [0v1 1v1 2v1 3v1 4v1 5v1 6v1]", { nextId: 8 }),
    },
    {
      name: "one voter of five would make voters even",
      config: five,
      change: { kind: "remove", ids: [4] },
      want: /would leave 4 voters, an even number/,
    },
    {
      name: "a voter and a learner would make voters even",
      config: seven,
      change: { kind: "remove", ids: [6, 7] },
      want: /would leave 6 voters, an even number/,
    },
    {
      name: "below the minimum of 3 (Consul min_quorum)",
      config: three,
      change: { kind: "remove", ids: [1, 2] },
      want: /would leave 1 voters, below the minimum of 3; replace a lost member instead/,
    },
    {
      name: "one of three: the minimum speaks before parity",
      config: three,
      change: { kind: "remove", ids: [2] },
      want: /below the minimum of 3/,
    },
    {
      name: "a minimum of 5 refuses 5 → 3",
      config: five,
      options: { minimumVoters: 5 },
      change: { kind: "remove", ids: [3, 4] },
      want: /would leave 3 voters, below the minimum of 5/,
    },
    {
      name: "removing two live voters while two others are down (etcd strict-reconfig-check)",
      config: five,
      view: { down: [3, 4] },
      change: { kind: "remove", ids: [1, 2] },
      want: /quorums of epoch 5 would not be reachable: only 1 of its 3 voters/,
    },
    {
      name: "removing two live voters while one other is down leaves a majority of 3",
      config: five,
      view: { down: [4] },
      change: { kind: "remove", ids: [2, 3] },
      want: cfg("e5 [0v1 1v1 4v1]", { nextId: 5 }),
    },
    {
      name: "the remaining voters are behind: not reachable among caught-up members",
      config: five,
      view: { behind: [0, 1] },
      change: { kind: "remove", ids: [3, 4] },
      want: /only 1 of its 3 voters answer and are caught up/,
    },
    {
      name: "an unknown id",
      config: five,
      change: { kind: "remove", ids: [4, 8] },
      want: /cannot remove member 8: no such member in epoch 4/,
    },
    {
      name: "a malformed id",
      config: five,
      change: { kind: "remove", ids: [4, -1] },
      want: /cannot remove -1: ids are non-negative integers/,
    },
  ]);
});

Deno.test("replace: same id and role, a new incarnation, the old quorum without it", () => {
  runTable([
    {
      name: "a dead voter gets incarnation + 1 at the same url (the card's case 1)",
      config: cfg("e2 [0v1 1v1 2v1]"),
      view: { down: [2] },
      change: { kind: "replace", id: 2 },
      want: cfg("e3 [0v1 1v1 2v2]"),
    },
    {
      name: "at a new url",
      config: cfg("e2 [0v1 1v1 2v1]"),
      view: { down: [2] },
      change: { kind: "replace", id: 2, url: "https://new.test" },
      want: cfg("e3 [0v1 1v1 2v2]", { urls: { 2: "https://new.test" } }),
    },
    {
      name: "a learner stays a learner",
      config: cfg("e5 [0v1 1v1 2v1 3l4]"),
      view: { down: [3] },
      change: { kind: "replace", id: 3 },
      want: cfg("e6 [0v1 1v1 2v1 3l5]"),
    },
    {
      name: "replacing while a second voter of three is down: no quorum without it",
      config: three,
      view: { down: [1, 2] },
      change: { kind: "replace", id: 2 },
      want: /only 1 of 3 voters of epoch 1 answer besides member 2, fewer than a majority/,
    },
    {
      name: "replacing a live voter of three while another is down",
      config: three,
      view: { down: [1] },
      change: { kind: "replace", id: 2 },
      want: /only 1 of 3 voters of epoch 1 answer besides member 2/,
    },
    {
      name: "the others answer but are behind: the new quorums are not reachable",
      config: three,
      view: { down: [2], behind: [1] },
      change: { kind: "replace", id: 2 },
      want: /quorums of epoch 2 would not be reachable: only 1 of its 3 voters/,
    },
    {
      name: "a non-member",
      config: three,
      change: { kind: "replace", id: 7 },
      want: /cannot replace 7: no such member in epoch 1; add a new member instead/,
    },
    {
      name: "a url another member has",
      config: three,
      view: { down: [2] },
      change: { kind: "replace", id: 2, url: url(0) },
      want: /cannot replace 2 at http:\/\/r0\.test:7000: member 0 has that url/,
    },
    {
      name: "a bad url",
      config: three,
      view: { down: [2] },
      change: { kind: "replace", id: 2, url: "ftp://r2.test" },
      want: /cannot replace 2: url must be http or https/,
    },
  ]);
});

Deno.test("guards that apply to every kind of change", () => {
  const changes: ConfigurationChange[] = [
    { kind: "add", url: url(5) },
    { kind: "promote", ids: [3, 4] },
    { kind: "remove", ids: [3, 4] },
    { kind: "replace", id: 2 },
  ];
  const withLearners = cfg("e3 [0v1 1v1 2v1 3l1 4l1]");
  const rows: Row[] = changes.flatMap((change) => [
    {
      name: `${change.kind}: a second change while one is in flight`,
      config: withLearners,
      view: { inFlight: true },
      change,
      want: /a configuration change from epoch 3 is in flight; wait until it commits, then retry/,
    },
    {
      name: `${change.kind}: the old epoch has no majority alive, so nothing can commit`,
      config: withLearners,
      view: { down: [0, 1] },
      change,
      want: /only [01] of 3 voters of epoch 3 answer.*bring voters back/,
    },
  ]);
  rows.push({
    name: "an unknown kind of change",
    config: three,
    change: { kind: "rename" } as unknown as ConfigurationChange,
    want: /unknown change "rename"; use add, promote, remove, replace or leases/,
  });
  runTable(rows);
  assert.throws(
    () => decideChange(three, changes[0]!, view(), { minimumVoters: 0 }),
    RangeError,
  );
});

Deno.test("a smaller cluster may grow toward the minimum", () => {
  const one = bootstrapConfiguration([url(0)]);
  runTable([
    {
      name: "add to one voter",
      config: cfg("e1 [0v1]"),
      change: { kind: "add", url: url(1) },
      want: cfg("e2 [0v1 1l1]"),
      added: { id: 1, incarnation: 1, url: url(1), role: "learner" },
    },
    {
      name: "promote two: 1 → 3",
      config: cfg("e3 [0v1 1l1 2l1]"),
      change: { kind: "promote", ids: [1, 2] },
      want: cfg("e4 [0v1 1v1 2v1]"),
    },
  ]);
  assert.deepEqual(one, cfg("e1 [0v1]"));
});

Deno.test("configurationProblem: what a configuration from disk or a peer must be", () => {
  const good = cfg("e3 [0v1 1v1 2v2 4l1]", { nextId: 6 });
  assert.equal(configurationProblem(good), undefined);
  const member = (change: Partial<Member>, index = 0) => ({
    ...good,
    members: good.members.map((m, i) => i === index ? { ...m, ...change } : m),
  });
  const rows: [string, unknown, RegExp][] = [
    ["not an object", [], /must be an object/],
    ["epoch 0", { ...good, epoch: 0 }, /epoch must be an integer ≥ 1/],
    ["epoch not an integer", { ...good, epoch: 1.5 }, /epoch/],
    ["nextId missing", { ...good, nextId: undefined }, /nextId/],
    ["members not a list", { ...good, members: {} }, /members must be a list/],
    ["a member not an object", { ...good, members: [null] }, /members\[0\] must be an object/],
    ["a negative id", member({ id: -1 }), /members\[0\]\.id must be a non-negative integer/],
    ["an id at nextId", member({ id: 6 }), /id 6 must be below nextId 6/],
    ["a repeated id", member({ id: 1 }), /id 1 repeats/],
    ["incarnation 0", member({ incarnation: 0 }), /incarnation must be an integer ≥ 1/],
    ["a url with a path", member({ url: `${url(0)}/x` }), /url must be an origin/],
    ["a url not http", member({ url: "ws://r0.test" }), /url must be http or https/],
    ["a url not a string", member({ url: 7 as unknown as string }), /url must be a string/],
    ["a repeated url", member({ url: url(1) }), /url repeats/],
    ["an unknown role", member({ role: "witness" as "voter" }), /role must be/],
    ["an even number of voters", member({ role: "learner" }), /odd number of voters, has 2/],
    ["no voters", { ...good, members: [] }, /odd number of voters, has 0/],
  ];
  for (const [name, value, want] of rows) {
    assert.match(configurationProblem(value) ?? "accepted", want, name);
  }
});

Deno.test("bootstrap, describe, majority and member URLs", () => {
  const config = bootstrapConfiguration([url(0), `${url(1)}/`, url(2)]);
  assert.deepEqual(config, cfg("e1 [0v1 1v1 2v1]"));
  assert.equal(describeConfiguration(cfg("e3 [0v1 1v1 2v2 3l1]")), "e3 [0v1 1v1 2v2 3l1]");
  assert.deepEqual(voterIds(cfg("e3 [0v1 1l1 2v2 3v1]")), [0, 2, 3]);
  assert.deepEqual([1, 2, 3, 4, 5, 7].map(majority), [1, 2, 2, 3, 3, 4]);
  assert.throws(() => bootstrapConfiguration([url(0), url(1)]), /odd number of voters/);
  assert.throws(() => bootstrapConfiguration([url(0), url(0), url(1)]), /url repeats/);
  assert.throws(() => bootstrapConfiguration([]), RangeError);
  assert.equal(memberUrlProblem("https://a.test:8443"), undefined);
  assert.match(memberUrlProblem("https://u:p@a.test") ?? "", /must be an origin/);
});

Deno.test("leases: set through a change of epoch, every member keeps its place", () => {
  const all = leaseEveryKey();
  const withLeases: Configuration = { ...cfg("e2 [0v1 1v1 2v1]"), leases: all };
  runTable([
    {
      name: "all: every key to every member",
      config: three,
      change: { kind: "leases", leases: "all" },
      want: { ...cfg("e2 [0v1 1v1 2v1]"), leases: all },
    },
    {
      name: "rules with their own durations",
      config: three,
      change: {
        kind: "leases",
        leases: { rules: [{ prefix: "cfg/", holders: [0, 2] }], leaseMs: 1000, renewMs: 250 },
      },
      want: {
        ...cfg("e2 [0v1 1v1 2v1]"),
        leases: leaseEveryKey({
          rules: [{ prefix: "cfg/", holders: [0, 2] }],
          leaseMs: 1000,
          renewMs: 250,
        }),
      },
    },
    {
      name: "none removes them",
      config: withLeases,
      change: { kind: "leases", leases: "none" },
      want: cfg("e3 [0v1 1v1 2v1]"),
    },
    {
      name: "a holder that was never a member",
      config: three,
      change: { kind: "leases", leases: { rules: [{ prefix: "", holders: [5] }] } },
      want: /cannot set leases: lease holder 5 is not a member position/,
    },
    {
      name: "a renewal as long as the lease",
      config: three,
      change: { kind: "leases", leases: { rules: [], leaseMs: 1000, renewMs: 1000 } },
      want: /renewMs/,
    },
    {
      name: "not a setting",
      config: three,
      change: { kind: "leases", leases: "some" },
      want: /leases must be "all", "none" or an object/,
    },
    {
      name: "the guards still apply: a change in flight",
      config: three,
      view: { inFlight: true },
      change: { kind: "leases", leases: "all" },
      want: /in flight/,
    },
  ]);
});
