/**
 * denokv's sum of V8 values: the number codec against V8's own serializer
 * (`node:v8`), and the sum rules of `sqlite/backend.rs`'s `sum_v8`.
 */
import assert from "node:assert/strict";
import { deserialize, serialize } from "node:v8";
import { decodeV8Number, encodeV8Number } from "../../src/kv/v8_numbers.ts";
import { sumV8, V8_ENCODING, v8SumProblem } from "../../src/kv/v8_sum.ts";
import { LE64_ENCODING } from "../../src/kv/entry.ts";
import { atomicCommandProblem } from "../../src/kv/txn_commands.ts";
import { executeAtomic } from "../../src/kv/txn_apply.ts";
import type { KvEntry } from "../../src/kv/entry.ts";

const v8 = (value: unknown) => new Uint8Array(serialize(value));
const u64 = (value: bigint): KvEntry => {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value, true);
  return { value: bytes, version: "00000000000000010000", encoding: LE64_ENCODING };
};
const stored = (value: unknown): KvEntry => ({
  value: v8(value),
  version: "00000000000000010000",
  encoding: V8_ENCODING,
});
const readBack = (outcome: ReturnType<typeof sumV8>) => {
  assert.ok(outcome.ok, outcome.ok ? "" : outcome.message);
  return outcome.encoding === V8_ENCODING
    ? deserialize(outcome.value)
    : new DataView(outcome.value.buffer).getBigUint64(0, true);
};

Deno.test("V8 numbers: every form V8 writes is read, and what is written V8 reads back", () => {
  const numbers = [0, 1, -1, 42, -(2 ** 31), 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1.5, -0.25, 1e300];
  for (const value of numbers) {
    assert.deepEqual(decodeV8Number(v8(value)), { kind: "Number", value }, String(value));
    assert.equal(deserialize(encodeV8Number({ kind: "Number", value })), value);
  }
  assert.ok(Number.isNaN(decodeV8Number(v8(NaN))?.value as number));
  // `U` (uint32), which V8 reads though its serializer writes `I` or `N`.
  const uint32 = new Uint8Array([0xff, 0x0f, 0x55, 0x80, 0x01]);
  assert.equal(deserialize(uint32), 128);
  assert.deepEqual(decodeV8Number(uint32), { kind: "Number", value: 128 });
  const bigints = [0n, 1n, -1n, 2n ** 63n, 2n ** 64n, -(2n ** 64n) - 1n, 3n ** 100n, -(7n ** 80n)];
  for (const value of bigints) {
    assert.deepEqual(decodeV8Number(v8(value)), { kind: "BigInt", value }, String(value));
    const written = encodeV8Number({ kind: "BigInt", value });
    assert.equal(deserialize(written), value);
    // Byte for byte what V8 writes, so every replica and denokv agree.
    assert.deepEqual(written, v8(value), String(value));
  }
});

Deno.test("V8 numbers: a BigInt as large as a value may be is read and written as V8 does", () => {
  for (const value of [(1n << (8n * 65000n)) - 1n, -(3n ** 50000n)]) {
    const bytes = v8(value);
    assert.ok(bytes.length > 8000);
    assert.deepEqual(decodeV8Number(bytes), { kind: "BigInt", value });
    assert.deepEqual(encodeV8Number({ kind: "BigInt", value }), bytes);
  }
});

Deno.test("V8 numbers: other values and malformed bytes are not numbers", () => {
  for (const value of ["1", true, null, undefined, [1], { a: 1 }, new Uint8Array(8)]) {
    assert.equal(decodeV8Number(v8(value)), undefined, JSON.stringify(value));
  }
  const one = v8(1.5);
  assert.equal(decodeV8Number(one.subarray(0, one.length - 1)), undefined, "truncated");
  assert.equal(decodeV8Number(new Uint8Array([...one, 0])), undefined, "bytes left over");
  assert.equal(decodeV8Number(new Uint8Array([0xff, 0x05, 0x49, 0x02])), undefined, "version 5");
  assert.equal(decodeV8Number(new Uint8Array([0x49, 0x02])), undefined, "no header");
  assert.equal(decodeV8Number(new Uint8Array([0xff, 0x0f, 0x5a, 0x11])), undefined, "short BigInt");
});

Deno.test("V8 sum: denokv's rules", () => {
  // An absent key takes the operand, written as denokv writes it (a double).
  assert.equal(readBack(sumV8(undefined, v8(3), {})), 3);
  assert.deepEqual(sumV8(undefined, v8(3), {}), {
    ok: true,
    value: encodeV8Number({ kind: "Number", value: 3 }),
    encoding: V8_ENCODING,
  });
  assert.equal(readBack(sumV8(stored(1.5), v8(2), {})), 3.5);
  assert.equal(readBack(sumV8(stored(2n ** 64n), v8(-1n), {})), 2n ** 64n - 1n);
  // A KvU64 plus a BigInt in 0..2^64-1 with no bounds: a KvU64 sum, wrapping.
  assert.deepEqual(sumV8(u64(2n ** 64n - 1n), v8(2n), {}), {
    ok: true,
    value: u64(1n).value,
    encoding: LE64_ENCODING,
  });
  const refused = (outcome: ReturnType<typeof sumV8>) => outcome.ok ? "applied" : outcome.message;
  assert.equal(refused(sumV8(u64(1n), v8(1), {})), "Cannot sum KvU64 with Number");
  assert.equal(refused(sumV8(u64(1n), v8(-1n), {})), "Cannot sum KvU64 with BigInt");
  assert.equal(refused(sumV8(stored(1), v8(1n), {})), "Cannot sum Number with BigInt");
  assert.equal(refused(sumV8(stored("text"), v8(1), {})), "unsupported value type");
  assert.equal(
    refused(sumV8(stored(1), v8("1"), {})),
    "Some of the parameters are not valid V8 values",
  );
});

Deno.test("V8 sum: bounds refuse or clamp a result outside them, and must match the operand", () => {
  const bounds = { sumMin: v8(0), sumMax: v8(10) };
  assert.equal(readBack(sumV8(stored(5), v8(4), bounds)), 9);
  const over = sumV8(stored(5), v8(6), bounds);
  assert.deepEqual(over, {
    ok: false,
    message: "The result of a Sum operation would exceed its range limit",
  });
  assert.equal(readBack(sumV8(stored(5), v8(6), { ...bounds, sumClamp: true })), 10);
  assert.equal(readBack(sumV8(stored(5), v8(-9), { ...bounds, sumClamp: true })), 0);
  assert.equal(
    readBack(sumV8(stored(5n), v8(-9n), { sumMin: v8(0n), sumClamp: true })),
    0n,
  );
  // The first write takes the operand as it is (denokv applies no bounds then).
  assert.equal(readBack(sumV8(undefined, v8(99), bounds)), 99);
  assert.equal(
    v8SumProblem(v8(1), { sumMin: v8(0n) }),
    "Min/max parameters have different types than the operand",
  );
  assert.equal(
    v8SumProblem(v8(1), { sumMax: v8("x") }),
    "Some of the parameters are not valid V8 values",
  );
  assert.equal(v8SumProblem(v8(1), { sumMin: new Uint8Array(), sumMax: v8(2) }), undefined);
});

Deno.test("V8 sum in an atomic command: validated before proposing, all or nothing when it fails", () => {
  const key = "\ufffeapp\u0000d\u0002a\u0000";
  const other = "\ufffeapp\u0000d\u0002b\u0000";
  const command = (value: Uint8Array, extra: Record<string, unknown> = {}) => ({
    op: "atomic" as const,
    request: "r",
    database: "app",
    floor: 0,
    checks: [],
    mutations: [
      { kind: "set" as const, key: other, value: v8("x"), encoding: V8_ENCODING },
      { kind: "sum" as const, key, value, encoding: V8_ENCODING, ...extra },
    ],
  });
  assert.equal(atomicCommandProblem(command(v8(1))), undefined);
  assert.equal(
    atomicCommandProblem(command(v8("1"))),
    "Some of the parameters are not valid V8 values",
  );
  assert.equal(
    atomicCommandProblem(command(v8(1), { sumClamp: "yes" })),
    "Sum clamp is not a boolean",
  );
  assert.equal(
    atomicCommandProblem({
      ...command(v8(1)),
      database: undefined,
      mutations: [{ kind: "sum", key: "k", value: v8(1), encoding: V8_ENCODING }],
    }),
    "A sum of a V8 value needs a Deno KV database",
  );
  const state = new Map<string, KvEntry>([[key, u64(1n)]]);
  const failed = executeAtomic(command(v8(1)), (k) => state.get(k), { version: "v" });
  assert.deepEqual(failed.result, {
    op: "atomic",
    ok: false,
    failure: "invalid",
    message: "Cannot sum KvU64 with Number",
  });
  assert.equal(failed.changes.size, 0, "the set before it is not applied either");
  state.set(key, stored(1));
  const applied = executeAtomic(command(v8(2)), (k) => state.get(k), { version: "v" });
  assert.ok(applied.result.op === "atomic" && applied.result.ok);
  assert.equal(deserialize(applied.changes.get(key)!.value), 3);
  assert.equal(applied.changes.get(key)!.encoding, V8_ENCODING);
});
