import assert from "node:assert/strict";
import {
  checkKvEvents,
  checkOperations,
  type CheckResult,
  describeCheckResult,
  HistoryRecorder,
  type KvEvent,
  kvHistoryFromEvents,
  kvModel,
  type Operation,
  type RegisterInput,
  registerModel,
  type RegisterOutput,
} from "../../src/check/mod.ts";

/** Builds a kv history from compact steps: [process, action, ...]. */
type Step =
  | [number, "put", string, string]
  | [number, "get", string]
  | [number, "delete", string]
  | [number, "cas", string, string | null, string]
  | [number, "ok"]
  | [number, "read", string | null]
  | [number, "fail"]
  | [number, "info"];

function record(steps: readonly Step[]): HistoryRecorder {
  const recorder = new HistoryRecorder();
  for (const step of steps) {
    const [process, action] = step;
    switch (step[1]) {
      case "put":
        recorder.invoke(process, { f: "put", key: step[2], value: step[3] });
        break;
      case "get":
        recorder.invoke(process, { f: "get", key: step[2] });
        break;
      case "delete":
        recorder.invoke(process, { f: "delete", key: step[2] });
        break;
      case "cas":
        recorder.invoke(process, { f: "cas", key: step[2], from: step[3], to: step[4] });
        break;
      case "ok":
        recorder.ok(process);
        break;
      case "read":
        recorder.ok(process, { value: step[2] });
        break;
      case "fail":
        recorder.fail(process);
        break;
      case "info":
        recorder.info(process);
        break;
      default:
        throw new Error(`Unknown action ${action}`);
    }
  }
  return recorder;
}

function verdictOf(steps: readonly Step[]): CheckResult["verdict"] {
  return record(steps).check().verdict;
}

Deno.test("empty history is linearizable", () => {
  const result = checkKvEvents([]);
  assert.equal(result.verdict, "linearizable");
  assert.equal(result.keys.length, 0);
  assert.equal(result.operationCount, 0);
});

Deno.test("sequential put then get of the same value is linearizable", () => {
  assert.equal(
    verdictOf([[0, "put", "a", "v1"], [0, "ok"], [1, "get", "a"], [1, "read", "v1"]]),
    "linearizable",
  );
});

Deno.test("stale read after a completed write is not linearizable", () => {
  assert.equal(
    verdictOf([[0, "put", "a", "v1"], [0, "ok"], [1, "get", "a"], [1, "read", null]]),
    "not-linearizable",
  );
});

Deno.test("a read concurrent with a write may see either value", () => {
  for (const seen of ["v1", null]) {
    assert.equal(
      verdictOf([[0, "put", "a", "v1"], [1, "get", "a"], [1, "read", seen], [0, "ok"]]),
      "linearizable",
    );
  }
});

Deno.test("new-then-old read inversion during a write is not linearizable", () => {
  assert.equal(
    verdictOf([
      [0, "put", "a", "v1"],
      [1, "get", "a"],
      [1, "read", "v1"],
      [2, "get", "a"],
      [2, "read", null],
      [0, "ok"],
    ]),
    "not-linearizable",
  );
});

Deno.test("indeterminate write that must have happened", () => {
  // Only the timed-out put can explain the read.
  assert.equal(
    verdictOf([[0, "put", "a", "v1"], [0, "info"], [1, "get", "a"], [1, "read", "v1"]]),
    "linearizable",
  );
  // The same with no completion at all.
  assert.equal(
    verdictOf([[0, "put", "a", "v1"], [1, "get", "a"], [1, "read", "v1"]]),
    "linearizable",
  );
  // Once seen, it cannot be unseen.
  assert.equal(
    verdictOf([
      [0, "put", "a", "v1"],
      [0, "info"],
      [1, "get", "a"],
      [1, "read", "v1"],
      [1, "get", "a"],
      [1, "read", null],
    ]),
    "not-linearizable",
  );
});

Deno.test("indeterminate write that must not have happened (yet)", () => {
  // Never observed: fine.
  assert.equal(
    verdictOf([[0, "put", "a", "v1"], [0, "info"], [1, "get", "a"], [1, "read", null]]),
    "linearizable",
  );
  // Observed absent, then present: it took effect between the reads.
  assert.equal(
    verdictOf([
      [0, "put", "a", "v1"],
      [0, "info"],
      [1, "get", "a"],
      [1, "read", null],
      [1, "get", "a"],
      [1, "read", "v1"],
    ]),
    "linearizable",
  );
  // It cannot have taken effect before it was invoked.
  assert.equal(
    verdictOf([[1, "get", "a"], [1, "read", "v1"], [0, "put", "a", "v1"], [0, "info"]]),
    "not-linearizable",
  );
});

Deno.test("failed cas means the comparison failed at its linearization point", () => {
  const setup: Step[] = [[0, "put", "a", "v1"], [0, "ok"]];
  // The value was v1 throughout, so cas v1 -> v2 cannot have failed.
  assert.equal(verdictOf([...setup, [1, "cas", "a", "v1", "v2"], [1, "fail"]]), "not-linearizable");
  assert.equal(verdictOf([...setup, [1, "cas", "a", "v0", "v2"], [1, "fail"]]), "linearizable");
  // A failed cas writes nothing.
  assert.equal(
    verdictOf([...setup, [1, "cas", "a", "v0", "v2"], [1, "fail"], [2, "get", "a"], [
      2,
      "read",
      "v2",
    ]]),
    "not-linearizable",
  );
  // Concurrent with the put, it may have run first, while the key was absent.
  assert.equal(
    verdictOf([[0, "put", "a", "v1"], [1, "cas", "a", "v1", "v2"], [1, "fail"], [0, "ok"]]),
    "linearizable",
  );
});

Deno.test("successful cas", () => {
  const setup: Step[] = [[0, "put", "a", "v1"], [0, "ok"]];
  assert.equal(
    verdictOf([...setup, [1, "cas", "a", "v1", "v2"], [1, "ok"], [2, "get", "a"], [
      2,
      "read",
      "v2",
    ]]),
    "linearizable",
  );
  assert.equal(verdictOf([...setup, [1, "cas", "a", "v0", "v2"], [1, "ok"]]), "not-linearizable");
  // An indeterminate cas may explain a read of its new value...
  assert.equal(
    verdictOf([...setup, [1, "cas", "a", "v1", "v2"], [1, "info"], [2, "get", "a"], [
      2,
      "read",
      "v2",
    ]]),
    "linearizable",
  );
  // ...but not if its comparison could never hold.
  assert.equal(
    verdictOf([...setup, [1, "cas", "a", "v0", "v2"], [1, "info"], [2, "get", "a"], [
      2,
      "read",
      "v2",
    ]]),
    "not-linearizable",
  );
});

Deno.test("create-only cas from null", () => {
  assert.equal(verdictOf([[0, "cas", "a", null, "v1"], [0, "ok"]]), "linearizable");
  assert.equal(
    verdictOf([[0, "cas", "a", null, "v1"], [0, "ok"], [1, "cas", "a", null, "v2"], [1, "ok"]]),
    "not-linearizable",
  );
  assert.equal(
    verdictOf([[0, "cas", "a", null, "v1"], [0, "ok"], [1, "cas", "a", null, "v2"], [1, "fail"]]),
    "linearizable",
  );
  // Two concurrent creators cannot both win.
  assert.equal(
    verdictOf([[0, "cas", "a", null, "v1"], [1, "cas", "a", null, "v2"], [0, "ok"], [1, "ok"]]),
    "not-linearizable",
  );
  assert.equal(
    verdictOf([[0, "cas", "a", null, "v1"], [1, "cas", "a", null, "v2"], [0, "ok"], [1, "fail"]]),
    "linearizable",
  );
  // On an empty key a create-only cas cannot fail.
  assert.equal(verdictOf([[0, "cas", "a", null, "v1"], [0, "fail"]]), "not-linearizable");
});

Deno.test("delete makes the key absent again", () => {
  const setup: Step[] = [[0, "put", "a", "v1"], [0, "ok"], [0, "delete", "a"], [0, "ok"]];
  assert.equal(verdictOf([...setup, [1, "get", "a"], [1, "read", null]]), "linearizable");
  assert.equal(verdictOf([...setup, [1, "get", "a"], [1, "read", "v1"]]), "not-linearizable");
  assert.equal(verdictOf([...setup, [1, "cas", "a", null, "v2"], [1, "ok"]]), "linearizable");
  // An indeterminate delete may or may not have happened.
  for (const seen of ["v1", null]) {
    assert.equal(
      verdictOf([
        [0, "put", "a", "v1"],
        [0, "ok"],
        [0, "delete", "a"],
        [0, "info"],
        [1, "get", "a"],
        [
          1,
          "read",
          seen,
        ],
      ]),
      "linearizable",
    );
  }
});

Deno.test("failed put, get and delete are dropped", () => {
  assert.equal(
    verdictOf([
      [0, "put", "a", "v1"],
      [0, "fail"],
      [1, "delete", "a"],
      [1, "fail"],
      [2, "get", "a"],
      [2, "fail"],
      [2, "get", "a"],
      [2, "read", null],
    ]),
    "linearizable",
  );
  const history = record([[0, "put", "a", "v1"], [0, "fail"], [1, "get", "a"], [1, "info"]])
    .toHistory();
  assert.equal(history.operations.length, 0, "failed put and indeterminate get constrain nothing");
});

Deno.test("keys are checked independently and the failing key is named", () => {
  const steps: Step[] = [
    [0, "put", "a", "v1"],
    [0, "ok"],
    [0, "put", "b", "w1"],
    [0, "ok"],
    [1, "get", "a"],
    [1, "read", "v1"],
    [1, "get", "b"],
    [1, "read", "w0"],
  ];
  const result = record(steps).check({ stopOnFailure: false });
  assert.equal(result.verdict, "not-linearizable");
  assert.deepEqual(result.keys.map((k) => [k.key, k.verdict]), [["a", "linearizable"], [
    "b",
    "not-linearizable",
  ]]);
  const b = result.keys[1];
  assert.match(b.explanation ?? "", /get -> "w0" \(process 1, lines 7-8\) cannot take effect/);
  assert.match(
    b.explanation ?? "",
    /longest linearizable prefix has 1 of 2 operations and leaves state "w1"/,
  );
  assert.match(describeCheckResult(result), /key "b": not-linearizable/);
});

Deno.test("the step budget gives a distinct unknown verdict instead of running on", () => {
  // 16 concurrent writes and reads of distinct values: easy with the cache,
  // but not within 10 steps.
  const events: KvEvent[] = [];
  for (let p = 0; p < 16; p++) {
    events.push({ process: p, type: "invoke", f: "put", key: "k", value: `v${p}` });
  }
  for (let p = 0; p < 16; p++) {
    events.push({ process: p, type: "ok", f: "put", key: "k", value: `v${p}` });
  }
  events.push({ process: 99, type: "invoke", f: "get", key: "k" });
  events.push({ process: 99, type: "ok", f: "get", key: "k", value: "v3" });
  const limited = checkKvEvents(events, { maxStepsPerKey: 10 });
  assert.equal(limited.verdict, "unknown");
  assert.equal(limited.keys[0].steps, 10);
  assert.match(limited.keys[0].explanation ?? "", /gave up after 10 steps/);
  assert.equal(checkKvEvents(events).verdict, "linearizable");
  assert.throws(() => checkKvEvents(events, { maxStepsPerKey: 0 }), RangeError);
});

Deno.test("stopping at the first refuted key leaves the others unknown", () => {
  const events: KvEvent[] = [];
  // Key "hard" needs many steps; key "bad" is refuted at once.
  for (let p = 0; p < 12; p++) {
    events.push({ process: p, type: "invoke", f: "put", key: "hard", value: `v${p}` });
  }
  for (let p = 0; p < 12; p++) {
    events.push({ process: p, type: "ok", f: "put", key: "hard", value: `v${p}` });
  }
  for (let p = 0; p < 12; p++) events.push({ process: p, type: "invoke", f: "get", key: "hard" });
  for (let p = 0; p < 12; p++) {
    events.push({ process: p, type: "ok", f: "get", key: "hard", value: "v0" });
  }
  events.push({ process: 50, type: "invoke", f: "get", key: "bad" });
  events.push({ process: 50, type: "ok", f: "get", key: "bad", value: "ghost" });
  const result = checkKvEvents(events);
  assert.equal(result.verdict, "not-linearizable");
  const bad = result.keys.find((k) => k.key === "bad");
  assert.equal(bad?.verdict, "not-linearizable");
  const all = checkKvEvents(events, { stopOnFailure: false });
  assert.equal(all.keys.find((k) => k.key === "hard")?.verdict, "linearizable");
});

Deno.test("long histories need no recursion: 20000 sequential operations", () => {
  const recorder = new HistoryRecorder();
  for (let i = 0; i < 10_000; i++) {
    recorder.invoke(0, { f: "put", key: "k", value: `v${i}` });
    recorder.ok(0);
    recorder.invoke(1, { f: "get", key: "k" });
    recorder.ok(1, { value: `v${i}` });
  }
  const result = recorder.check();
  assert.equal(result.verdict, "linearizable");
  assert.equal(result.keys[0].linearization.length, 20_000);
});

Deno.test("many concurrent indeterminate writes stay tractable", () => {
  const events: KvEvent[] = [];
  for (let p = 0; p < 24; p++) {
    events.push({ process: p, type: "invoke", f: "put", key: "k", value: `v${p % 3}` });
  }
  for (let p = 0; p < 24; p++) events.push({ process: p, type: "info", f: "put", key: "k" });
  for (const value of ["v0", "v1", "v2", "v0", "v2"]) {
    events.push({ process: 100, type: "invoke", f: "get", key: "k" });
    events.push({ process: 100, type: "ok", f: "get", key: "k", value });
  }
  events.push({ process: 100, type: "invoke", f: "get", key: "k" });
  events.push({ process: 100, type: "ok", f: "get", key: "k", value: "v3" });
  const result = checkKvEvents(events);
  assert.equal(result.verdict, "not-linearizable");
  assert.ok(result.steps < 1_000_000, `took ${result.steps} steps`);
  assert.equal(checkKvEvents(events.slice(0, -2)).verdict, "linearizable");
});

Deno.test("timed-out writes no one observed are searched as one, and failed cas still sees them", () => {
  // The shape of swarm seed 730347213: many clients' writes of unique values
  // time out, and none is read again; failed compare-and-sets are
  // interleaved. Merging the unobserved writes into one value decides it in
  // a few hundred steps; searched one by one, it runs out of budget.
  const events: KvEvent[] = [
    { process: 200, type: "invoke", f: "put", key: "k", value: "a" },
    { process: 200, type: "ok", f: "put", key: "k" },
  ];
  for (let p = 0; p < 20; p++) {
    events.push({ process: p, type: "invoke", f: "put", key: "k", value: `timed-out-${p}` });
  }
  for (let p = 0; p < 20; p++) events.push({ process: p, type: "info", f: "put", key: "k" });
  for (let i = 0; i < 6; i++) {
    events.push({ process: 100, type: "invoke", f: "cas", key: "k", from: "a", to: `c${i}` });
    events.push({ process: 100, type: "fail", f: "cas", key: "k" });
    events.push({ process: 101, type: "invoke", f: "put", key: "k", value: `b${i}` });
    events.push({ process: 101, type: "ok", f: "put", key: "k" });
    events.push({ process: 100, type: "invoke", f: "get", key: "k" });
    events.push({ process: 100, type: "ok", f: "get", key: "k", value: `b${i}` });
    events.push({ process: 101, type: "invoke", f: "put", key: "k", value: "a" });
    events.push({ process: 101, type: "ok", f: "put", key: "k" });
  }
  const { operations } = kvHistoryFromEvents(events);
  const linearizable = checkOperations(kvModel, operations);
  assert.equal(linearizable.verdict, "linearizable");
  assert.ok(linearizable.steps < 10_000, `took ${linearizable.steps} steps`);

  const staleRead: KvEvent[] = [
    ...events,
    { process: 100, type: "invoke", f: "get", key: "k" },
    { process: 100, type: "ok", f: "get", key: "k", value: "never-written" },
  ];
  const stale = kvHistoryFromEvents(staleRead).operations;
  const refuted = checkOperations(kvModel, stale);
  assert.equal(refuted.verdict, "not-linearizable");
  assert.ok(refuted.steps < 10_000, `took ${refuted.steps} steps`);
  const unmerged = { ...kvModel, mergeUnobservedWrites: undefined };
  assert.equal(checkOperations(unmerged, stale, { maxStepsPerKey: 1_000_000 }).verdict, "unknown");
});

Deno.test("an unobserved timed-out write can still be what made a cas fail", () => {
  // put a; put W (timed out, never read); cas a -> b failed. Only W taking
  // effect before the cas explains the failure; merging W's value must keep it.
  const steps: Step[] = [
    [0, "put", "k", "a"],
    [0, "ok"],
    [1, "put", "k", "w"],
    [1, "info"],
    [2, "cas", "k", "a", "b"],
    [2, "fail"],
  ];
  assert.equal(verdictOf(steps), "linearizable");
  // Without W, the failed cas cannot be explained.
  assert.equal(verdictOf(steps.filter(([process]) => process !== 1)), "not-linearizable");
  // A cas that expected W's value observes it: it is not merged away.
  assert.equal(
    verdictOf([...steps, [3, "cas", "k", "w", "c"], [3, "ok"], [4, "get", "k"], [4, "read", "c"]]),
    "linearizable",
  );
});

Deno.test("register operations built by hand; equal positions count as concurrent", () => {
  const op = (
    input: RegisterInput,
    output: RegisterOutput | undefined,
    invokedAt: number,
    completedAt: number,
  ): Operation<RegisterInput, RegisterOutput> => ({
    process: invokedAt,
    key: "r",
    input,
    output,
    invokedAt,
    completedAt,
  });
  // The read's interval touches the write's: concurrent, so it may go first.
  const touching = [
    op({ f: "write", value: "1" }, {}, 0, 5),
    op({ f: "read" }, { value: null }, 5, 6),
  ];
  assert.equal(checkOperations(registerModel, touching).verdict, "linearizable");
  const apart = [
    op({ f: "write", value: "1" }, {}, 0, 4),
    op({ f: "read" }, { value: null }, 5, 6),
  ];
  assert.equal(checkOperations(registerModel, apart).verdict, "not-linearizable");
  const linearization = checkOperations(registerModel, touching).keys[0].linearization;
  assert.deepEqual(linearization, [1, 0]);
});
