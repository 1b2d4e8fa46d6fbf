import assert from "node:assert/strict";
import {
  hashString,
  kvAppendModel,
  type KvAppendState,
  kvAppendState,
  kvModel,
  type Model,
  type OptionalValue,
  registerModel,
  type StepResult,
} from "../../src/check/mod.ts";

function stateAfter<S>(result: StepResult<S>): S {
  assert.ok(result.ok, "expected the step to be accepted");
  return result.state;
}

function assertRejected<S>(result: StepResult<S>): void {
  assert.equal(result.ok, false);
}

function assertHashConsistent<S>(model: Model<S, unknown, unknown>, [a, b]: [S, S]): void {
  if (model.equal(a, b)) assert.equal(model.hash(a), model.hash(b));
}

Deno.test("register: starts nil, reads see the last write", () => {
  const m = registerModel;
  const s0 = m.init();
  assert.equal(s0, null);
  assert.equal(stateAfter(m.step(s0, { f: "read" }, { value: null })), null);
  assertRejected(m.step(s0, { f: "read" }, { value: "1" }));
  const s1 = stateAfter(m.step(s0, { f: "write", value: "1" }, {}));
  assert.equal(s1, "1");
  assert.equal(stateAfter(m.step(s1, { f: "read" }, { value: "1" })), "1");
  assertRejected(m.step(s1, { f: "read" }, { value: null }));
  assertRejected(m.step(s1, { f: "read" }, { value: "2" }));
});

Deno.test("register: cas applies only when the comparison holds, and fail means it did not", () => {
  const m = registerModel;
  const cas = { f: "cas", from: "1", to: "2" } as const;
  assert.equal(stateAfter(m.step("1", cas, { ok: true })), "2");
  assertRejected(m.step("3", cas, { ok: true }));
  // A failed cas is a no-op whose comparison must have failed.
  assert.equal(stateAfter(m.step("3", cas, { ok: false })), "3");
  assertRejected(m.step("1", cas, { ok: false }));
  // Unknown outcome: applies if it can, else leaves the state.
  assert.equal(stateAfter(m.step("1", cas, undefined)), "2");
  assert.equal(stateAfter(m.step("3", cas, undefined)), "3");
});

Deno.test("register: indeterminate operations are always accepted", () => {
  const m = registerModel;
  assert.equal(stateAfter(m.step("1", { f: "write", value: "5" }, undefined)), "5");
  assert.equal(stateAfter(m.step("1", { f: "read" }, undefined)), "1");
});

Deno.test("register: descriptions", () => {
  const m = registerModel;
  assert.equal(m.describeState(null), "nil");
  assert.equal(m.describeState("3"), '"3"');
  assert.equal(m.describeOperation({ f: "read" }, { value: null }), "read -> nil");
  assert.equal(
    m.describeOperation({ f: "write", value: "1" }, undefined),
    'write "1" (indeterminate)',
  );
  assert.equal(
    m.describeOperation({ f: "cas", from: "1", to: "2" }, { ok: false }),
    'cas "1" -> "2" (failed)',
  );
});

Deno.test("kvAppend: missing key reads as empty, append concatenates, put replaces", () => {
  const m = kvAppendModel;
  const s0 = m.init();
  assert.equal(s0.value, "");
  assert.equal(stateAfter(m.step(s0, { f: "get" }, { value: "" })).value, "");
  assertRejected(m.step(s0, { f: "get" }, { value: "x" }));
  const s1 = stateAfter(m.step(s0, { f: "append", value: "ab" }, {}));
  const s2 = stateAfter(m.step(s1, { f: "append", value: "c" }, {}));
  assert.equal(s2.value, "abc");
  assert.equal(stateAfter(m.step(s2, { f: "get" }, { value: "abc" })).value, "abc");
  assertRejected(m.step(s2, { f: "get" }, { value: "ab" }));
  const s3 = stateAfter(m.step(s2, { f: "put", value: "z" }, {}));
  assert.equal(s3.value, "z");
});

Deno.test("kvAppend: the incremental hash equals the hash of the whole value", () => {
  const m = kvAppendModel;
  let state: KvAppendState = m.init();
  for (const piece of ["x 0 0 y", "x 1 0 y", "", "é✓", "x 2 1 y"]) {
    state = stateAfter(m.step(state, { f: "append", value: piece }, {}));
    const fresh = kvAppendState(state.value);
    assert.ok(m.equal(state, fresh));
    assert.equal(m.hash(state), m.hash(fresh));
  }
  const put = stateAfter(m.step(state, { f: "put", value: "ab" }, {}));
  const appended = stateAfter(
    m.step(stateAfter(m.step(m.init(), { f: "append", value: "a" }, {})), {
      f: "append",
      value: "b",
    }, {}),
  );
  assert.ok(m.equal(put, appended));
  assert.equal(m.hash(put), m.hash(appended));
  assert.ok(!m.equal(kvAppendState("ab"), kvAppendState("ba")));
});

Deno.test("kv: get, put, delete", () => {
  const m = kvModel;
  const s0 = m.init();
  assert.equal(s0, null);
  assert.equal(stateAfter(m.step(s0, { f: "get" }, { value: null })), null);
  assertRejected(m.step(s0, { f: "get" }, { value: "" }));
  const s1 = stateAfter(m.step(s0, { f: "put", value: "v1" }, {}));
  assert.equal(stateAfter(m.step(s1, { f: "get" }, { value: "v1" })), "v1");
  assertRejected(m.step(s1, { f: "get" }, { value: null }));
  const s2 = stateAfter(m.step(s1, { f: "delete" }, {}));
  assert.equal(s2, null);
  assert.equal(stateAfter(m.step(s2, { f: "delete" }, {})), null);
});

Deno.test("kv: cas, including create-only cas from null", () => {
  const m = kvModel;
  const create = { f: "cas", from: null, to: "v1" } as const;
  assert.equal(stateAfter(m.step(null, create, { ok: true })), "v1");
  assertRejected(m.step("v0", create, { ok: true }));
  assert.equal(stateAfter(m.step("v0", create, { ok: false })), "v0");
  assertRejected(m.step(null, create, { ok: false }));
  const swap = { f: "cas", from: "v1", to: "v2" } as const;
  assert.equal(stateAfter(m.step("v1", swap, { ok: true })), "v2");
  assertRejected(m.step(null, swap, { ok: true }));
  assert.equal(stateAfter(m.step(null, swap, { ok: false })), null);
  assert.equal(stateAfter(m.step("v1", swap, undefined)), "v2");
  assert.equal(stateAfter(m.step("v3", swap, undefined)), "v3");
});

Deno.test("kv: absent and the empty string are different states with different hashes", () => {
  const m = kvModel;
  assert.ok(!m.equal(null, ""));
  assert.notEqual(m.hash(null), m.hash(""));
  const values: OptionalValue[] = [null, "", "a", "b", "ab"];
  for (const a of values) {
    for (const b of values) {
      assertHashConsistent(m as Model<OptionalValue, unknown, unknown>, [a, b]);
    }
  }
  assert.equal(m.describeState(null), "absent");
  assert.equal(m.describeOperation({ f: "get" }, { value: null }), "get -> absent");
  assert.equal(m.describeOperation({ f: "delete" }, undefined), "delete (indeterminate)");
});

Deno.test("hashString is deterministic and spreads similar strings", () => {
  assert.equal(hashString("abc"), hashString("abc"));
  assert.notEqual(hashString("abc"), hashString("acb"));
  assert.equal(hashString("abc") | 0, hashString("abc"));
});
