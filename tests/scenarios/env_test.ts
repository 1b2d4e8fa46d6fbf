/**
 * Tests of the scenario machinery itself: the script format round-trips, bad
 * commands fail loudly, and the environment's safety checks do catch a
 * divergence (so a regenerated transcript cannot hide one).
 *
 * @module
 */

import assert from "node:assert/strict";
import { NOP } from "../../src/core/types.ts";
import { InvariantViolation } from "../../src/sim/invariants.ts";
import { ScenarioEnv, ScenarioError } from "./env.ts";
import { formatScript, parseScript } from "./script.ts";

Deno.test("a script keeps its comments and commands when rewritten", () => {
  const text = [
    "# header",
    "cluster n=3",
    "----",
    "old output",
    "",
    "# before propose",
    "propose r=0 put(x=1)",
    "----",
    "",
    "# trailer",
    "",
  ].join("\n");
  const script = parseScript(text);
  assert.deepEqual(script.blocks.map((block) => block.command), [
    "cluster n=3",
    "propose r=0 put(x=1)",
  ]);
  assert.deepEqual(script.blocks[0]!.expected, ["old output"]);
  assert.equal(script.blocks[1]!.line, 7);
  const rewritten = formatScript(script, [["new"], ["a", "b"]]);
  assert.equal(
    rewritten,
    "# header\ncluster n=3\n----\nnew\n\n# before propose\npropose r=0 put(x=1)\n----\na\nb\n\n# trailer\n",
  );
  // Rewriting is stable.
  const again = parseScript(rewritten);
  assert.equal(formatScript(again, [["new"], ["a", "b"]]), rewritten);
});

Deno.test("a command without its separator is a syntax error with a line number", () => {
  assert.throws(() => parseScript("cluster n=3\nstabilize\n", "bad.txt"), /bad\.txt:2/);
});

Deno.test("malformed commands are refused", () => {
  const env = new ScenarioEnv();
  assert.throws(() => env.run("stabilize"), ScenarioError);
  env.run("cluster n=3");
  assert.throws(() => env.run("frobnicate"), /Unknown command/);
  assert.throws(() => env.run("propose r=0 put(x)"), /Cannot parse/);
  assert.throws(() => env.run("deliver type=bogus"), /Unknown message type/);
  assert.throws(() => env.run("deliver from=0"), /No message in flight/);
  assert.throws(() => env.run("tick r=7"), /No replica 7/);
  assert.throws(() => env.run("cluster n=3 nonsense=1"), /Unknown timing option/);
});

Deno.test("the environment detects replicas that commit different values", () => {
  const env = new ScenarioEnv();
  env.run("cluster n=3");
  env.run("propose r=0 put(x=1)");
  env.run("stabilize");
  // Forge a Commit of a different value for a new instance at two replicas,
  // bypassing the protocol: the check after the next command must object.
  const base = { owner: 2, number: 1, ballot: 0, deps: [0, 0, 0, 0] } as const;
  const value = (text: string) => [{
    op: "put" as const,
    request: `forged-${text}`,
    key: "x",
    value: new TextEncoder().encode(text),
  }];
  env.core(0).step({ ...base, type: "commit", from: 2, to: 0, command: value("a") });
  env.core(1).step({ ...base, type: "commit", from: 2, to: 1, command: value("b") });
  assert.throws(() => env.run("check"), (error) => {
    assert.ok(error instanceof InvariantViolation);
    assert.match(error.message, /^Agreement: replica 0 has 2\.1 committed .* but replica 1 has/);
    return true;
  });
});

Deno.test("the environment detects conflicting commands that do not see each other", () => {
  const env = new ScenarioEnv();
  env.run("cluster n=3");
  const command = (text: string) => [{
    op: "put" as const,
    request: `forged-${text}`,
    key: "x",
    value: new TextEncoder().encode(text),
  }];
  // Two conflicting instances that (falsely) do not depend on each other,
  // committed in opposite orders at replicas 0 and 1. Visibility fails, and
  // the executions would be free to differ.
  const first = { owner: 1, number: 1, ballot: 0, deps: [0, 0, 0, 0], command: command("a") };
  const second = { owner: 2, number: 1, ballot: 0, deps: [0, 0, 0, 0], command: command("b") };
  env.core(0).step({ ...first, type: "commit", from: 1, to: 0 });
  env.core(0).step({ ...second, type: "commit", from: 2, to: 0 });
  env.core(1).step({ ...second, type: "commit", from: 2, to: 1 });
  env.core(1).step({ ...first, type: "commit", from: 1, to: 1 });
  // A tick makes the driver handle each replica's Ready, which executes them.
  assert.throws(() => env.run("tick n=1"), (error) => {
    assert.ok(error instanceof InvariantViolation);
    assert.match(error.message, /^Visibility: 1\.1 \[0 0 0 \^0\] and 2\.1 \[0 0 0 \^0\] conflict/);
    return true;
  });
});

Deno.test("a proposal goes through the driver, which assigns request ids and batches the line", () => {
  const requestIds = () => {
    const env = new ScenarioEnv();
    env.run("cluster n=3");
    const output = env.run("propose r=0 put(x=1) get(x)");
    assert.equal(output[0], "0 proposes 0.1 {put(x=1), get(x)}");
    const record = env.record(0, 0, 1);
    assert.ok(record !== undefined && record.command !== undefined && record.command !== NOP);
    return record.command.map((command) => command.request);
  };
  const first = requestIds();
  assert.equal(first.length, 2);
  assert.match(first[0]!, /^0\.[0-9a-z]+\.1$/);
  assert.match(first[1]!, /^0\.[0-9a-z]+\.2$/);
  // The boot id comes from a fixed seed: the same script, the same ids.
  assert.deepEqual(requestIds(), first);
});

Deno.test("a manual driver pauses at its storage commit until process-ready", () => {
  const env = new ScenarioEnv();
  env.run("cluster n=3");
  env.run("driver r=0 manual");
  assert.deepEqual(env.run("propose r=0 put(x=1)"), ["0 proposes 0.1 {put(x=1)}"]);
  // Nothing leaves before the record it depends on is durable.
  assert.equal(env.inFlight.length, 0);
  const output = env.run("process-ready r=0");
  assert.equal(output[0], "0 handles a Ready");
  assert.match(output[1]!, /^ {2}persist 0\.1 preaccepted /);
  assert.ok(env.inFlight.length > 0);
  assert.deepEqual(env.run("process-ready r=0"), ["ok"], "nothing else is held");
});

Deno.test("a crash loses a held commit: the disk never saw it", () => {
  const env = new ScenarioEnv();
  env.run("cluster n=3");
  env.run("driver r=0 manual");
  env.run("propose r=0 put(x=1)");
  env.run("crash r=0");
  assert.equal(env.record(0, 0, 1), undefined);
  assert.deepEqual(env.run("restart r=0"), ["0 restarts with 0 records"]);
  assert.equal(env.inFlight.length, 0);
});
