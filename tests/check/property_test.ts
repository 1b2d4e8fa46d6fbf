/**
 * The optimized checker against a brute-force one on small random histories.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkOperations,
  type CheckResult,
  HistoryRecorder,
  type KvAppendInput,
  kvAppendModel,
  type KvAppendOutput,
  type KvInput,
  kvModel,
  type KvOutput,
  type Model,
  type Operation,
  type OptionalValue,
  type RegisterInput,
  registerModel,
  type RegisterOutput,
} from "../../src/check/mod.ts";

/**
 * Brute force, straight from the definition: some subset of the
 * indeterminate operations took effect, and all determinate ones plus that
 * subset can be ordered, consistently with real time (A before B when A
 * completed before B was invoked), into a sequence the model accepts, each
 * key having its own state.
 */
function naiveLinearizable<S, I, O>(
  model: Model<S, I, O>,
  operations: readonly Operation<I, O>[],
): boolean {
  const indeterminate = operations.flatMap((op, i) => op.output === undefined ? [i] : []);
  const determinate = operations.flatMap((op, i) => op.output === undefined ? [] : [i]);
  for (let mask = 0; mask < 1 << indeterminate.length; mask++) {
    const included = [
      ...determinate,
      ...indeterminate.filter((_, bit) => (mask & (1 << bit)) !== 0),
    ];
    if (orderExists({ model, operations }, { remaining: included, states: new Map() })) return true;
  }
  return false;
}

interface Problem<S, I, O> {
  readonly model: Model<S, I, O>;
  readonly operations: readonly Operation<I, O>[];
}

function orderExists<S, I, O>(
  problem: Problem<S, I, O>,
  position: { readonly remaining: readonly number[]; readonly states: ReadonlyMap<string, S> },
): boolean {
  const { model, operations } = problem;
  const { remaining, states } = position;
  if (remaining.length === 0) return true;
  for (const x of remaining) {
    const blocked = remaining.some((y) => operations[y].completedAt < operations[x].invokedAt);
    if (blocked) continue;
    const op = operations[x];
    const result = model.step(states.get(op.key) ?? model.init(), op.input, op.output);
    if (!result.ok) continue;
    const nextStates = new Map(states).set(op.key, result.state);
    const rest = remaining.filter((y) => y !== x);
    if (orderExists(problem, { remaining: rest, states: nextStates })) return true;
  }
  return false;
}

/** Checks that a linearizable result carries a valid witness for every key. */
function assertValidWitness<S, I, O>(problem: Problem<S, I, O>, result: CheckResult): void {
  const { model, operations } = problem;
  const seen = new Set<number>();
  for (const key of result.keys) {
    let state = model.init();
    const order = key.linearization;
    for (let i = 0; i < order.length; i++) {
      const op = operations[order[i]];
      assert.equal(op.key, key.key);
      assert.ok(!seen.has(order[i]), "each operation appears once");
      seen.add(order[i]);
      for (let j = i + 1; j < order.length; j++) {
        assert.ok(
          !(operations[order[j]].completedAt < op.invokedAt),
          "a later operation in the witness completed before an earlier one was invoked",
        );
      }
      const step = model.step(state, op.input, op.output);
      assert.ok(step.ok, `the model rejects ${model.describeOperation(op.input, op.output)}`);
      state = step.state;
    }
  }
  assert.equal(seen.size, operations.length, "the witness covers every operation");
}

function assertAgrees<S, I, O>(
  model: Model<S, I, O>,
  operations: readonly Operation<I, O>[],
): boolean {
  const result = checkOperations(model, operations, { stopOnFailure: false });
  const expected = naiveLinearizable(model, operations);
  assert.equal(
    result.verdict,
    expected ? "linearizable" : "not-linearizable",
    operations.map((op) =>
      `${op.key} ${
        model.describeOperation(op.input, op.output)
      } [${op.invokedAt}, ${op.completedAt}]`
    ).join("\n"),
  );
  if (expected) assertValidWitness({ model, operations }, result);
  return expected;
}

const VALUES = ["x", "y", "z"];

/** One scripted move of the simulated clients; numbers pick among options. */
const moveArbitrary = fc.record({
  action: fc.nat(99),
  pick: fc.nat(99),
  f: fc.nat(99),
  value: fc.nat(99),
});

type Client =
  | { readonly phase: "invoked"; readonly call: KvCallLike }
  | {
    readonly phase: "applied";
    readonly call: KvCallLike;
    readonly ok: boolean;
    readonly value: OptionalValue;
  };

type KvCallLike = Parameters<HistoryRecorder["invoke"]>[1];

/**
 * Runs clients against a sequential store: each operation takes effect at one
 * instant between its invocation and completion, so the recorded history is
 * linearizable by construction. Some completions are lost or reported as
 * `info`, and some operations never take effect at all.
 */
function simulate(
  moves: readonly { action: number; pick: number; f: number; value: number }[],
): HistoryRecorder {
  const recorder = new HistoryRecorder();
  const store = new Map<string, string>();
  const clients = new Map<number, Client>();
  const keys = ["a", "b"];
  let invoked = 0;
  const processes = 4;
  for (const move of moves) {
    const process = move.pick % processes;
    const client = clients.get(process);
    const key = keys[move.value % 2];
    if (client === undefined) {
      if (invoked >= 7) continue;
      const value = VALUES[move.value % 3];
      const from = move.value % 4 === 0 ? null : VALUES[(move.value >> 2) % 3];
      const calls: KvCallLike[] = [
        { f: "get", key },
        { f: "put", key, value },
        { f: "delete", key },
        { f: "cas", key, from, to: value },
      ];
      const call = calls[move.f % 4];
      recorder.invoke(process, call);
      clients.set(process, { phase: "invoked", call });
      invoked++;
    } else if (client.phase === "invoked" && move.action < 60) {
      // The operation takes effect now.
      const { call } = client;
      const current = store.get(call.key) ?? null;
      let ok = true;
      if (call.f === "put") store.set(call.key, call.value);
      if (call.f === "delete") store.delete(call.key);
      if (call.f === "cas") {
        ok = current === call.from;
        if (ok) store.set(call.key, call.to);
      }
      clients.set(process, { phase: "applied", call, ok, value: current });
    } else if (client.phase === "invoked") {
      // It never takes effect; the client times out.
      recorder.info(process);
      clients.delete(process);
    } else {
      if (move.action < 15) recorder.info(process);
      else if (client.call.f === "get") recorder.ok(process, { value: client.value });
      else if (client.ok) recorder.ok(process);
      else recorder.fail(process);
      clients.delete(process);
    }
  }
  return recorder;
}

Deno.test("property: histories of a sequential store are linearizable, by both checkers", () => {
  fc.assert(
    fc.property(fc.array(moveArbitrary, { minLength: 10, maxLength: 40, size: "max" }), (moves) => {
      const history = simulate(moves).toHistory();
      const result = checkOperations(kvModel, history.operations);
      assert.equal(result.verdict, "linearizable");
      assertValidWitness({ model: kvModel, operations: history.operations }, result);
      assert.ok(naiveLinearizable(kvModel, history.operations));
    }),
    { numRuns: 400 },
  );
});

/** Random operation intervals over a small clock; some never return. */
function intervalArbitrary() {
  return fc.record({
    invokedAt: fc.nat(12),
    length: fc.nat(8),
    indeterminate: fc.nat(9).map((n) => n < 2),
  });
}

function toOperation<I, O>(spec: {
  readonly index: number;
  readonly interval: { invokedAt: number; length: number; indeterminate: boolean };
  readonly key: string;
  readonly input: I;
  readonly output: O;
}): Operation<I, O> {
  const { index, interval, key, input, output } = spec;
  return {
    process: index,
    key,
    input,
    output: interval.indeterminate ? undefined : output,
    invokedAt: interval.invokedAt,
    completedAt: interval.indeterminate ? Infinity : interval.invokedAt + interval.length,
  };
}

const optionalValue = fc.constantFrom<OptionalValue>(null, "x", "y");
// Writes also write "z", which no get returns and no cas expects: writes of
// unobserved values are what the model's `mergeUnobservedWrites` rewrites.
const writtenValue = fc.constantFrom("x", "y", "z");

const kvOperation = fc.tuple(
  intervalArbitrary(),
  fc.constantFrom("a", "b"),
  fc.oneof(
    fc.record({ f: fc.constant("get" as const) }),
    fc.record({ f: fc.constant("put" as const), value: writtenValue }),
    fc.record({ f: fc.constant("delete" as const) }),
    fc.record({ f: fc.constant("cas" as const), from: optionalValue, to: writtenValue }),
  ),
  optionalValue,
  fc.boolean(),
);

Deno.test("property: kv model, arbitrary histories, optimized agrees with brute force", () => {
  let linearizable = 0;
  fc.assert(
    fc.property(fc.array(kvOperation, { minLength: 2, maxLength: 7, size: "max" }), (specs) => {
      const operations = specs.map(([interval, key, input, read, ok], i) => {
        const output: KvOutput = input.f === "get"
          ? { value: read }
          : input.f === "cas"
          ? { ok }
          : {};
        return toOperation<KvInput, KvOutput>({ index: i, interval, key, input, output });
      });
      if (assertAgrees(kvModel, operations)) linearizable++;
    }),
    { numRuns: 600 },
  );
  // Both answers must be exercised for the comparison to mean anything.
  assert.ok(linearizable > 30 && linearizable < 570, `${linearizable} of 600 linearizable`);
});

const registerOperation = fc.tuple(
  intervalArbitrary(),
  fc.oneof(
    fc.record({ f: fc.constant("read" as const) }),
    fc.record({ f: fc.constant("write" as const), value: fc.constantFrom("1", "2") }),
    fc.record({
      f: fc.constant("cas" as const),
      from: fc.constantFrom<OptionalValue>(null, "1", "2"),
      to: fc.constantFrom("1", "2"),
    }),
  ),
  fc.constantFrom<OptionalValue>(null, "1", "2"),
  fc.boolean(),
);

Deno.test("property: register model, arbitrary histories, optimized agrees with brute force", () => {
  fc.assert(
    fc.property(
      fc.array(registerOperation, { minLength: 2, maxLength: 8, size: "max" }),
      (specs) => {
        const operations = specs.map(([interval, input, read, ok], i) => {
          const output: RegisterOutput = input.f === "read"
            ? { value: read }
            : input.f === "cas"
            ? { ok }
            : {};
          return toOperation<RegisterInput, RegisterOutput>({
            index: i,
            interval,
            key: "r",
            input,
            output,
          });
        });
        assertAgrees(registerModel, operations);
      },
    ),
    { numRuns: 500 },
  );
});

const appendOperation = fc.tuple(
  intervalArbitrary(),
  fc.oneof(
    fc.record({ f: fc.constant("get" as const) }),
    fc.record({ f: fc.constant("put" as const), value: fc.constantFrom("a", "b") }),
    fc.record({ f: fc.constant("append" as const), value: fc.constantFrom("a", "b") }),
  ),
  fc.constantFrom("", "a", "b", "ab", "ba", "aa"),
);

Deno.test("property: kvAppend model, arbitrary histories, optimized agrees with brute force", () => {
  fc.assert(
    fc.property(fc.array(appendOperation, { minLength: 2, maxLength: 7, size: "max" }), (specs) => {
      const operations = specs.map(([interval, input, read], i) => {
        const output: KvAppendOutput = input.f === "get" ? { value: read } : {};
        return toOperation<KvAppendInput, KvAppendOutput>({
          index: i,
          interval,
          key: "k",
          input,
          output,
        });
      });
      assertAgrees(kvAppendModel, operations);
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: many indeterminate writes with few values, optimized agrees with brute force", () => {
  // Stresses the reductions for indeterminate operations: equal inputs,
  // blind writes, no-ops.
  const writesThenReads = fc.tuple(
    fc.array(
      fc.record({ value: fc.constantFrom("x", "y"), invokedAt: fc.nat(6), delete: fc.boolean() }),
      { minLength: 1, maxLength: 6, size: "max" },
    ),
    fc.array(fc.record({ seen: optionalValue, invokedAt: fc.nat(10), length: fc.nat(3) }), {
      maxLength: 3,
      size: "max",
    }),
  );
  fc.assert(
    fc.property(writesThenReads, ([writes, reads]) => {
      const operations: Operation<KvInput, KvOutput>[] = [
        ...writes.map((w, i): Operation<KvInput, KvOutput> => ({
          process: i,
          key: "k",
          input: w.delete ? { f: "delete" } : { f: "put", value: w.value },
          output: undefined,
          invokedAt: w.invokedAt,
          completedAt: Infinity,
        })),
        ...reads.map((r, i): Operation<KvInput, KvOutput> => ({
          process: 100 + i,
          key: "k",
          input: { f: "get" },
          output: { value: r.seen },
          invokedAt: r.invokedAt,
          completedAt: r.invokedAt + r.length,
        })),
      ];
      assertAgrees(kvModel, operations);
    }),
    { numRuns: 500 },
  );
});
