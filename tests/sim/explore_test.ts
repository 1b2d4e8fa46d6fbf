import assert from "node:assert/strict";
import {
  CI_CRASH_BOUND,
  CI_EXPLORE_BOUND,
  explore,
  type ExploreOptions,
  type ExploreResult,
  replayExploration,
} from "../../src/sim/explore.ts";
import {
  describeExploreResult,
  parseExploreArguments,
  runExplore,
} from "../../src/sim/explore_main.ts";

function report(options: ExploreOptions, result: ExploreResult): void {
  for (const line of describeExploreResult(options, result)) console.log(`  ${line}`);
}

function assertClean(result: ExploreResult): void {
  assert.equal(result.violation, undefined, result.violation?.trace.join("\n"));
  assert.equal(result.truncated, false);
}

Deno.test("the CI bound explores every path without a violation and reaches recovery", () => {
  const result = explore(CI_EXPLORE_BOUND);
  report(CI_EXPLORE_BOUND, result);
  assertClean(result);
  assert.ok(result.distinct > 500_000, `only ${result.distinct} distinct states`);
  assert.equal(result.maxDepth, CI_EXPLORE_BOUND.depth);
  assert.ok(result.settled > 0, "no path ends with every command applied everywhere");
  // Drops and a timeout reach the slow path and every step of recovery.
  for (const type of ["accept", "recover", "recoverok", "validate", "waiting", "nack"]) {
    assert.ok(result.messageTypes[type]! > 0, `no ${type} message was ever sent`);
  }
});

Deno.test("the CI crash bound explores crash-restarts without a violation", () => {
  const result = explore(CI_CRASH_BOUND);
  report(CI_CRASH_BOUND, result);
  assertClean(result);
  assert.ok(result.distinct > 100_000, `only ${result.distinct} distinct states`);
  assert.ok(result.messageTypes.recover! > 0, "no restart recovered its skipped numbers");
});

Deno.test("the explorer finds a fast quorum one smaller than correct, and the path replays", () => {
  const options: ExploreOptions = {
    ...CI_EXPLORE_BOUND,
    unsafeQuorumSizes: { fastQuorumSize: 1 },
  };
  const result = explore(options);
  report(options, result);
  const violation = result.violation;
  assert.ok(violation !== undefined, "the broken decider went unnoticed");
  console.log(violation.trace.map((line) => `  ${line}`).join("\n"));
  assert.match(violation.message, /^(Visibility|Agreement|conflicting commands|execution)/);
  assert.ok(violation.path.length > 0 && violation.path.length <= CI_EXPLORE_BOUND.depth);
  // The printed lines, indented ones included, reproduce it.
  const replayed = replayExploration(options, violation.trace);
  assert.equal(replayed.violation?.message, violation.message);
  // The same path with the correct quorum sizes breaks nothing.
  const correct = replayExploration({ commands: options.commands }, violation.path);
  assert.equal(correct.violation, undefined);
});

Deno.test("the explorer finds a slow quorum one smaller than correct, through a timeout", () => {
  const options: ExploreOptions = {
    ...CI_EXPLORE_BOUND,
    unsafeQuorumSizes: { slowQuorumSize: 1 },
  };
  const result = explore(options);
  report(options, result);
  const violation = result.violation;
  assert.ok(violation !== undefined, "the broken decider went unnoticed");
  console.log(`  ${violation.message}, after ${violation.path.length} events`);
  assert.ok(violation.path.some((line) => line.startsWith("tick ")));
  assert.equal(replayExploration(options, violation.path).violation?.message, violation.message);
});

Deno.test("two runs of one bound give the same figures", () => {
  const options: ExploreOptions = { depth: 10, drops: 0, ticks: 1, crashes: 0, commands: 3 };
  const { elapsedMs: _first, ...first } = explore(options);
  const { elapsedMs: _second, ...second } = explore(options);
  assert.deepEqual(first, second);
  assert.ok(first.distinct > 10_000);
});

Deno.test("the explore command line is validated, and a violation exits 1 with the path", () => {
  assert.deepEqual(parseExploreArguments([]).options.depth, CI_EXPLORE_BOUND.depth);
  assert.equal(parseExploreArguments(["--depth=5", "--commands", "3"]).options.commands, 3);
  assert.throws(() => parseExploreArguments(["--commands", "4"]), /--commands must be 2 or 3/);
  assert.throws(() => parseExploreArguments(["--depth", "x"]), /--depth needs a whole number/);
  assert.throws(() => parseExploreArguments(["--crashes", "-1"]), /--crashes must be/);
  assert.throws(() => parseExploreArguments(["--max-states", "0"]), /--max-states must be/);
  assert.throws(() => parseExploreArguments(["--bogus", "1"]), /Unknown option --bogus/);
  assert.throws(() => parseExploreArguments(["--depth"]), /Missing value for --depth/);

  const lines: string[] = [];
  const args = parseExploreArguments(["--depth", "6", "--drops", "0", "--ticks", "0"]);
  assert.equal(runExplore(args, (line) => lines.push(line)), 0);
  assert.match(lines[1]!, /^states explored \d+, distinct \d+, .* time \d+ ms$/);
  assert.equal(lines.at(-1), "ok: every invariant held on every path");

  const broken = explore({ ...args.options, unsafeQuorumSizes: { fastQuorumSize: 1 } });
  const path = broken.violation!.path.join("\n");
  const replayLines: string[] = [];
  const replay = {
    options: { ...args.options, unsafeQuorumSizes: { fastQuorumSize: 1 } },
    replay: true,
  };
  assert.equal(runExplore(replay, (line) => replayLines.push(line), () => path), 1);
  assert.match(replayLines[0]!, /^violation: /);
  assert.throws(
    () => runExplore(replay, () => {}, () => "deliver 0->1 nothing"),
    /Line 1: no such event enabled/,
  );
});

Deno.test("a configuration-change barrier fences: no write executes after it, on every path", () => {
  // The fence (Replica.fenced): a replica holding the barrier ignores
  // PreAccepts of instances it has not seen, so every write that commits is
  // in the barrier's dependencies and executes before it.
  const options: ExploreOptions = { ...CI_EXPLORE_BOUND, depth: 10, barrier: "fenced" };
  const result = explore(options);
  report(options, result);
  assertClean(result);
  assert.ok(result.distinct > 50_000, `only ${result.distinct} distinct states`);
});

Deno.test("without the fence, a write executes after the barrier, and the path replays", () => {
  const options: ExploreOptions = { ...CI_EXPLORE_BOUND, depth: 8, barrier: "unfenced" };
  const result = explore(options);
  const violation = result.violation;
  assert.ok(violation !== undefined, "a write after the barrier went unnoticed");
  console.log(violation.trace.map((line) => `  ${line}`).join("\n"));
  assert.match(violation.message, /^nothing executes after a configuration-change barrier/);
  const replayed = replayExploration(options, violation.trace);
  assert.equal(replayed.violation?.message, violation.message);
  // The command line takes the same option, to search or replay it.
  assert.deepEqual(parseExploreArguments(["--barrier", "unfenced"]).options.barrier, "unfenced");
  assert.throws(() => parseExploreArguments(["--barrier", "maybe"]), /fenced or unfenced/);
});
