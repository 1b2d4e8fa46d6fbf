/**
 * Runs every scenario script in `testdata/` and compares each command's output
 * with the transcript checked into the file. `REWRITE=1` writes the fresh
 * transcripts back instead (review the diff before committing it).
 *
 * The transcript alone could bless a regression, so each scenario also has a
 * programmatic check below of the facts it exists to show, and the
 * environment checks Agreement, Visibility and execution order after every
 * command whatever the transcript says.
 *
 * @module
 */

import assert from "node:assert/strict";
import { depsEqual } from "../../src/core/deps.ts";
import { describePayload } from "../../src/core/describe.ts";
import { isInstanceMessage, type Message, NOP, Phase } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { describeScenarioCommand, ScenarioEnv } from "./env.ts";
import { formatScript, parseScript } from "./script.ts";

const TESTDATA = new URL("./testdata/", import.meta.url);
const REWRITE = Deno.env.get("REWRITE") === "1";

/** Runs a script; returns the environment at its end and each command's output. */
function runScript(text: string, name: string): { env: ScenarioEnv; outputs: string[][] } {
  const script = parseScript(text, name);
  const env = new ScenarioEnv();
  const outputs: string[][] = [];
  for (const block of script.blocks) {
    try {
      outputs.push(env.run(block.command));
    } catch (error) {
      throw new Error(`${name}:${block.line}: ${block.command}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  return { env, outputs };
}

/** Every replica, crashed ones included, executed exactly `expected` (instance ids, in order). */
function assertExecuted(
  env: ScenarioEnv,
  expected: readonly string[],
  replicas: readonly number[] = allReplicas(env),
): void {
  for (const id of replicas) {
    assert.deepEqual(env.executedIds(id), expected, `execution order at replica ${id}`);
  }
}

/**
 * Instances of its own row replica 0 recovers at once when it restarts with
 * one record of its own (0.1): the numbers a crash may have sent in early
 * PreAccepts without their records (`MAX_EARLY_PREACCEPTS`).
 */
const SKIPPED_AT_RESTART = ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"];

/**
 * {@linkcode assertExecuted} for the commands, with the Nops of
 * {@linkcode SKIPPED_AT_RESTART} apart: they conflict with nothing, so each
 * replica runs them wherever they commit in its order; replica 0 (which
 * recovered them) ran them all.
 */
function assertExecutedBesidesSkipped(
  env: ScenarioEnv,
  expected: readonly string[],
  replicas: readonly number[],
): void {
  for (const id of replicas) {
    const executed = env.executedIds(id);
    assert.deepEqual(
      executed.filter((instance) => !SKIPPED_AT_RESTART.includes(instance)),
      expected,
      `execution order at replica ${id}`,
    );
    const skipped = executed.filter((instance) => SKIPPED_AT_RESTART.includes(instance));
    if (id === 0) assert.deepEqual(skipped, SKIPPED_AT_RESTART, "replica 0 ran the skipped Nops");
  }
}

/** Every running replica holds the key-value state `expected` (`key=value`, in key order). */
function assertKv(env: ScenarioEnv, expected: readonly string[]): void {
  for (const id of allReplicas(env)) {
    if (env.isUp(id)) assert.deepEqual(env.kvState(id), expected, `key-value state at ${id}`);
  }
}

/**
 * Every replica that holds instance `id` committed (in memory, or on disk if it
 * is down) holds `payload` (as rendered, `nop` or `{put(x=1)}`) and `deps`;
 * at least `atLeast` replicas do.
 */
function assertCommittedEverywhere(
  env: ScenarioEnv,
  id: string,
  expected: { payload: string; deps: readonly number[]; atLeast?: number },
): void {
  const [owner, number] = id.split(".").map(Number) as [number, number];
  let committed = 0;
  for (const replica of allReplicas(env)) {
    const record = env.record(replica, owner, number);
    if (record?.phase !== Phase.Committed) continue;
    committed++;
    assert.equal(
      describePayload(record.command, describeScenarioCommand),
      expected.payload,
      `command of ${id} at replica ${replica}`,
    );
    assert.deepEqual([...record.deps!], expected.deps, `deps of ${id} at replica ${replica}`);
  }
  assert.ok(
    committed >= (expected.atLeast ?? env.replicas),
    `${id} committed at ${committed} replicas, expected at least ${
      expected.atLeast ?? env.replicas
    }`,
  );
}

/** The messages sent of type `type` about instance `id`. */
function sentAbout<T extends Message<KvCommand>["type"]>(
  env: ScenarioEnv,
  type: T,
  id: string,
): (Message<KvCommand> & { type: T })[] {
  const [owner, number] = id.split(".").map(Number) as [number, number];
  return env.sent.filter((message): message is Message<KvCommand> & { type: T } =>
    message.type === type && isInstanceMessage(message) && message.owner === owner &&
    message.number === number
  );
}

function allReplicas(env: ScenarioEnv): number[] {
  return Array.from({ length: env.replicas }, (_, id) => id);
}

/** Recovery outcomes that moved at replica `id`, as `name=count`, sorted. */
function outcomes(env: ScenarioEnv, id: number): string[] {
  return Object.entries(env.stats(id).recoveryOutcomes)
    .filter(([, count]) => count !== 0)
    .map(([name, count]) => `${name}=${count}`)
    .sort();
}

/**
 * What each scenario exists to show, checked on the environment at the end of
 * its script. A rewritten transcript cannot change these.
 */
const CHECKS: Record<string, (env: ScenarioEnv) => void> = {
  "fast_path.txt": (env) => {
    const preAccepts = sentAbout(env, "preaccept", "0.1");
    assert.deepEqual(preAccepts.map((m) => m.to), [1, 2], "thrifty: PreAccept to n-e-1 = 2 peers");
    assert.ok(
      sentAbout(env, "preacceptok", "0.1").every((m) => depsEqual(m.deps, [0, 0, 0, 0, 0, 0])),
      "every reply matches initDep",
    );
    assert.equal(sentAbout(env, "accept", "0.1").length, 0, "no Accept round");
    assert.deepEqual(sentAbout(env, "commit", "0.1").map((m) => m.to), [1, 2, 3, 4]);
    assert.equal(env.stats(0).fastCommits, 1);
    assertCommittedEverywhere(env, "0.1", { payload: "{put(x=1)}", deps: [0, 0, 0, 0, 0, 0] });
    assertExecuted(env, ["0.1"]);
    assertKv(env, ["x=1"]);
  },
  "slow_path.txt": (env) => {
    assert.equal(env.stats(0).slowCommits, 1, "0.1 takes the slow path");
    assert.equal(env.stats(1).fastCommits, 1, "1.1 takes the fast path");
    const accepts = sentAbout(env, "accept", "0.1");
    assert.deepEqual(accepts.map((m) => m.to), [1, 2], "Accept to n-f-1 = 2 peers");
    assert.ok(accepts.every((m) => m.ballot === 0));
    assertCommittedEverywhere(env, "0.1", { payload: "{put(x=1)}", deps: [0, 1, 0, 0, 0, 1] });
    assertCommittedEverywhere(env, "1.1", { payload: "{put(x=2)}", deps: [0, 0, 0, 0, 0, 0] });
    assertExecuted(env, ["1.1", "0.1"]);
    assertKv(env, ["x=1"]);
  },
  "seed002_dependency_cycle.txt": (env) => {
    assert.equal(env.stats(0).slowCommits, 1);
    assert.equal(env.stats(3).slowCommits, 1);
    // The cycle: each depends on the other.
    assertCommittedEverywhere(env, "0.1", { payload: "{put(x=a)}", deps: [0, 0, 0, 1, 0, 1] });
    assertCommittedEverywhere(env, "3.1", { payload: "{put(x=d)}", deps: [1, 0, 0, 0, 0, 1] });
    // Broken by instance id, identically everywhere.
    assertExecuted(env, ["0.1", "3.1"]);
    assertKv(env, ["x=d"]);
  },
  "fast_commit_durability.txt": (env) => {
    // The fast-path Ready persisted the commit: the restarted coordinator knew it.
    const recover = sentAbout(env, "recover", "0.1").find((m) => m.from === 2 && m.to === 0);
    assert.ok(recover !== undefined);
    const answer = env.sent.slice(env.sent.indexOf(recover)).find((m) =>
      m.from === 0 && m.to === 2 && isInstanceMessage(m) && m.owner === 0 && m.number === 1
    );
    assert.equal(answer?.type, "commit", "the restarted coordinator answers Recover with Commit");
    assert.ok(
      sentAbout(env, "accept", "0.1").every((m) => m.command !== NOP),
      "no Nop is ever proposed for 0.1",
    );
    assertCommittedEverywhere(env, "0.1", {
      payload: "{put(x=1)}",
      deps: [0, 0, 0, 0, 0, 0],
      atLeast: 3,
    });
    // The restarted coordinator also recovered, as Nops, the numbers of its
    // row its restart skipped (nothing had reached a peer).
    assertExecutedBesidesSkipped(env, ["0.1"], [0, 1, 2]);
    for (const id of [0, 1, 2]) assert.deepEqual(env.kvState(id), ["x=1"]);
  },
  "recovery_found_committed.txt": (env) => {
    // Replica 1 answered replica 2's Recover with the Commit.
    const recover = sentAbout(env, "recover", "0.1").find((m) => m.from === 2 && m.to === 1);
    assert.ok(recover !== undefined);
    const sent = env.sent;
    const answer = sent.slice(sent.indexOf(recover)).find((m) =>
      m.type === "commit" && m.from === 1 && m.to === 2
    );
    assert.ok(answer !== undefined, "a committed replica answers Recover with Commit");
    assert.ok(env.stats(2).recoveriesStarted >= 1);
    // Recovery decided nothing itself: no recovery Accept, no Validate.
    assert.ok(sentAbout(env, "accept", "0.1").every((m) => m.ballot === 0));
    assert.equal(sentAbout(env, "validate", "0.1").length, 0);
    assertCommittedEverywhere(env, "0.1", { payload: "{put(x=1)}", deps: [0, 0, 0, 0, 0, 0] });
    assertExecuted(env, ["0.1"]);
  },
  "recovery_found_accepted.txt": (env) => {
    assert.deepEqual(outcomes(env, 1), ["foundAccepted=1"]);
    const recoveryAccepts = sentAbout(env, "accept", "0.1").filter((m) => m.ballot === 2);
    assert.ok(recoveryAccepts.length > 0);
    assert.ok(recoveryAccepts.every((m) => depsEqual(m.deps, [0, 0, 0, 0, 1, 1])));
    assertCommittedEverywhere(env, "0.1", { payload: "{put(x=1)}", deps: [0, 0, 0, 0, 1, 1] });
    assertExecutedBesidesSkipped(env, ["4.1", "0.1"], [0, 1, 2, 3, 4]);
    for (const skipped of SKIPPED_AT_RESTART) {
      assertCommittedEverywhere(env, skipped, { payload: "nop", deps: [0, 0, 0, 0, 0, 0] });
    }
    assertKv(env, ["x=1"]);
  },
  "recovery_nop_coordinator.txt": (env) => {
    assert.deepEqual(outcomes(env, 1), ["nopCoordinatorAnswered=1"]);
    assert.equal(env.stats(0).reproposals, 1, "the coordinator proposes its command again");
    assertCommittedEverywhere(env, "0.1", { payload: "nop", deps: [0, 0, 0, 0] });
    assertCommittedEverywhere(env, "0.2", { payload: "{put(x=1)}", deps: [1, 0, 0, 1] });
    assertExecuted(env, ["0.1", "0.2"]);
    assertKv(env, ["x=1"]);
  },
  "recovery_validate_clean.txt": (env) => {
    assert.deepEqual(outcomes(env, 1), ["validated=1", "validatedClean=1"]);
    assert.ok(sentAbout(env, "validateok", "0.1").every((m) => m.invalidators.length === 0));
    assertCommittedEverywhere(env, "0.1", {
      payload: "{put(x=1)}",
      deps: [0, 0, 0, 0, 0, 0],
      atLeast: 4,
    });
    assertExecuted(env, ["0.1"], [1, 2, 3, 4]);
  },
  "recovery_validate_invalidated.txt": (env) => {
    assert.deepEqual(outcomes(env, 1), ["validated=1", "validatedInvalidated=1"]);
    assert.ok(
      sentAbout(env, "validateok", "0.1").every((m) =>
        m.invalidators.join(",") === `3,1,${Phase.Committed}`
      ),
    );
    assertCommittedEverywhere(env, "3.1", {
      payload: "{put(x=2)}",
      deps: [0, 0, 0, 0, 0, 0],
      atLeast: 4,
    });
    assertCommittedEverywhere(env, "0.1", { payload: "nop", deps: [0, 0, 0, 0, 0, 0], atLeast: 4 });
    assertExecuted(env, ["3.1", "0.1"], [1, 2, 3, 4]);
    assertKv(env, ["x=2"]);
  },
  "recovery_waiting_accepted.txt": (env) => {
    assert.deepEqual(outcomes(env, 1), ["validated=1", "waited=1", "waitedAccepted=1"]);
    assert.equal(sentAbout(env, "waiting", "0.1").length, 4, "Waiting to every peer");
    assertCommittedEverywhere(env, "0.1", {
      payload: "{put(x=1)}",
      deps: [0, 0, 0, 0, 0, 0],
      atLeast: 4,
    });
    assertCommittedEverywhere(env, "3.1", {
      payload: "{put(x=2)}",
      deps: [1, 0, 0, 0, 0, 1],
      atLeast: 4,
    });
    assertExecuted(env, ["0.1", "3.1"], [1, 2, 3, 4]);
    assertKv(env, ["x=2"]);
  },
  "recovery_waiting_nop.txt": (env) => {
    assert.deepEqual(outcomes(env, 1), ["validated=1", "waited=1", "waitedNop=1"]);
    assertCommittedEverywhere(env, "3.1", {
      payload: "{put(x=2)}",
      deps: [0, 0, 0, 0, 0, 0],
      atLeast: 4,
    });
    assertCommittedEverywhere(env, "0.1", { payload: "nop", deps: [0, 0, 0, 0, 0, 0], atLeast: 4 });
    assertExecuted(env, ["3.1", "0.1"], [1, 2, 3, 4]);
    assertKv(env, ["x=2"]);
  },
  "sutra_stale_ballot.txt": (env) => {
    assert.deepEqual(outcomes(env, 2), ["nopNoFastQuorum=1"], "step 2: a Nop at replica 2");
    assert.deepEqual(outcomes(env, 1), ["foundAccepted=1"], "step 3: c2 chosen at ballot 5");
    assert.deepEqual(outcomes(env, 0), ["foundAccepted=1"], "step 4");
    // Step 4: both replies are at the recovery's ballot 7; only abal tells the
    // Nop (abal 3) from the chosen c2 (abal 5, replica 0's own reply).
    const stale = sentAbout(env, "recoverok", "0.1").find((m) => m.from === 2 && m.to === 0);
    assert.ok(stale !== undefined);
    assert.equal(stale.ballot, 7);
    assert.equal(stale.acceptedBallot, 3);
    assert.equal(stale.command, NOP);
    const step4 = sentAbout(env, "accept", "0.1").filter((m) => m.ballot === 7);
    assert.ok(step4.length > 0 && step4.every((m) => m.command !== NOP), "c2 is re-proposed");
    // Agreement, replica 1's disk included: c2 with deps {2.1} everywhere.
    assertCommittedEverywhere(env, "0.1", { payload: "{put(x=c2)}", deps: [0, 0, 1, 1] });
    assert.equal(env.record(1, 0, 1)!.acceptedBallot, 5, "replica 1 committed at ballot 5");
    assert.equal(env.record(0, 0, 1)!.acceptedBallot, 7, "replica 0 committed at ballot 7");
    assertExecuted(env, ["2.1", "0.1"]);
    assertKv(env, ["x=c2"]);
  },
};

const names: string[] = [];
for await (const entry of Deno.readDir(TESTDATA)) {
  if (entry.isFile && entry.name.endsWith(".txt")) names.push(entry.name);
}
names.sort();

Deno.test("every scenario with a check has a script", () => {
  assert.deepEqual(Object.keys(CHECKS).sort(), names);
});

for (const name of names) {
  Deno.test(`scenario ${name}`, async () => {
    const url = new URL(name, TESTDATA);
    const text = await Deno.readTextFile(url);
    const { env, outputs } = runScript(text, name);
    const script = parseScript(text, name);
    if (REWRITE) {
      await Deno.writeTextFile(url, formatScript(script, outputs));
    } else {
      script.blocks.forEach((block, index) => {
        assert.equal(
          outputs[index]!.join("\n"),
          block.expected.join("\n"),
          `${name}:${block.line}: output of "${block.command}" differs (REWRITE=1 regenerates)`,
        );
      });
    }
    const check = CHECKS[name];
    assert.ok(check !== undefined, `scenario ${name} has no programmatic check in CHECKS`);
    check(env);
  });
}
