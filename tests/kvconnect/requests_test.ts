/** KV Connect's request checks: Deno KV's limits, 400 with denokv's wording beyond. */

import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  AtomicWriteSchema,
  MutationType,
  SnapshotReadSchema,
  ValueEncoding,
  WatchSchema,
} from "../../src/kvconnect/gen/datapath_pb.ts";
import { atomicWriteOf, readRangesOf, watchKeysOf } from "../../src/kvconnect/requests.ts";
import {
  MAX_DATABASE_KEY_BYTES as MAX_WRITE_KEY_BYTES,
  MAX_DATABASE_READ_KEY_BYTES as MAX_READ_KEY_BYTES,
  MAX_DATABASE_VALUE_BYTES as MAX_VALUE_BYTES,
} from "../../src/kv/database_keys.ts";
import {
  MAX_ATOMIC_CHECKS as MAX_CHECKS,
  MAX_ATOMIC_MUTATIONS as MAX_MUTATIONS,
} from "../../src/kv/txn_commands.ts";
import { ClientRequestError } from "../../src/errors.ts";

const key = (length: number) => new Uint8Array(length).fill(0x61);
const le64 = (n: number) => {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n), true);
  return bytes;
};
const set = (
  keyBytes: Uint8Array,
  data = new Uint8Array([1]),
  encoding = ValueEncoding.VE_BYTES,
) => ({
  key: keyBytes,
  mutationType: MutationType.M_SET,
  value: { data, encoding },
});

function refusedWith(run: () => unknown, message: string): void {
  assert.throws(run, (error) => {
    assert.ok(error instanceof ClientRequestError);
    assert.equal(error.status, 400);
    assert.equal(error.message, message);
    return true;
  });
}

Deno.test("snapshot reads: up to 10 ranges, 1000 entries, limits from 1, bounds of 2049 bytes", () => {
  const range = (limit: number, bound = key(3)) => ({ start: bound, end: bound, limit });
  assert.equal(readRangesOf(create(SnapshotReadSchema, { ranges: [range(1000)] })).length, 1);
  assert.equal(
    readRangesOf(create(SnapshotReadSchema, { ranges: [range(1, key(MAX_READ_KEY_BYTES))] }))
      .length,
    1,
  );
  const cases: [unknown[], string][] = [
    [
      Array.from({ length: 11 }, () => range(1)),
      "Too many read ranges requested in one read request.",
    ],
    [
      [range(600), range(401)],
      "The total number of entries requested across read ranges in the read request is too large.",
    ],
    [[range(0)], "The read range limit of the snapshot read request is invalid."],
    [[range(-5)], "The read range limit of the snapshot read request is invalid."],
    [[range(1, key(MAX_READ_KEY_BYTES + 1))], "A key exceeds the key size limit."],
  ];
  for (const [ranges, message] of cases) {
    refusedWith(
      () => readRangesOf(create(SnapshotReadSchema, { ranges: ranges as never })),
      message,
    );
  }
});

Deno.test("atomic writes: Deno KV's limits, valid versionstamps, kinds and encodings, U64 operands", () => {
  const ok = atomicWriteOf(create(AtomicWriteSchema, {
    checks: [{ key: key(3), versionstamp: new Uint8Array(0) }, {
      key: key(3),
      versionstamp: Uint8Array.fromHex("000000000000002a0000"),
    }],
    mutations: [
      set(key(MAX_WRITE_KEY_BYTES), new Uint8Array(MAX_VALUE_BYTES)),
      { key: key(2), mutationType: MutationType.M_DELETE },
      { key: key(2), mutationType: MutationType.M_SUM, value: { data: le64(5), encoding: 2 } },
      { key: key(2), mutationType: MutationType.M_MIN, value: { data: le64(1), encoding: 2 } },
      { key: key(2), mutationType: MutationType.M_MAX, value: { data: le64(9), encoding: 2 } },
      {
        key: key(2),
        mutationType: MutationType.M_SET_SUFFIX_VERSIONSTAMPED_KEY,
        value: { data: new Uint8Array([7]), encoding: 1 },
        expireAtMs: 1_700_000_000_000n,
      },
      { ...set(key(2)), expireAtMs: -1n },
    ],
  }));
  assert.deepEqual(ok.checks.map((check) => check.versionstamp), [null, "000000000000002a0000"]);
  assert.deepEqual(ok.mutations.map((mutation) => mutation.kind), [
    "set",
    "delete",
    "sum",
    "min",
    "max",
    "setSuffixVersionstamped",
    "set",
  ]);
  assert.equal((ok.mutations[5] as { expiresAt?: number }).expiresAt, 1_700_000_000_000);
  assert.equal("expiresAt" in ok.mutations[6]!, false);

  const check = { key: key(3), versionstamp: new Uint8Array(0) };
  const cases: [Record<string, unknown>, string][] = [
    [
      { checks: Array.from({ length: MAX_CHECKS + 1 }, () => check) },
      "Too many checks included in atomic write.",
    ],
    [
      { mutations: Array.from({ length: MAX_MUTATIONS + 1 }, () => set(key(1))) },
      "Too many mutations / enqueues included in atomic write.",
    ],
    [{ mutations: [set(key(MAX_WRITE_KEY_BYTES + 1))] }, "A key exceeds the key size limit."],
    [{ checks: [{ key: key(MAX_READ_KEY_BYTES + 1) }] }, "A key exceeds the key size limit."],
    [
      { mutations: [set(key(1), new Uint8Array(MAX_VALUE_BYTES + 1))] },
      "A value exceeds the value size limit.",
    ],
    [
      { mutations: Array.from({ length: 13 }, () => set(key(1), new Uint8Array(MAX_VALUE_BYTES))) },
      "The total size of the atomic write is too large.",
    ],
    [{ checks: [{ key: key(1), versionstamp: new Uint8Array(9) }] }, "Invalid versionstamp."],
    [
      { mutations: [{ key: key(1), mutationType: MutationType.M_SET }] },
      "Invalid mutation kind or arguments.",
    ],
    [{ mutations: [{ ...set(key(1)), mutationType: 7 }] }, "Invalid mutation kind or arguments."],
    [
      { mutations: [set(key(1), new Uint8Array(1), 9 as ValueEncoding)] },
      "The value encoding 9 is unknown.",
    ],
    [{ mutations: [{ ...set(key(1)), expireAtMs: -2n }] }, "Invalid mutation expire at."],
    [
      {
        mutations: [{
          key: key(1),
          mutationType: MutationType.M_SUM,
          value: { data: le64(1), encoding: 1 },
        }],
      },
      // A V8 sum (denokv's `sum_v8`) whose operand is not a V8 number.
      "Some of the parameters are not valid V8 values",
    ],
    [
      {
        mutations: [{
          key: key(1),
          mutationType: MutationType.M_SUM,
          value: { data: le64(1), encoding: 3 },
        }],
      },
      "Failed to perform 'sum' mutation on a non-U64 operand",
    ],
    [
      {
        mutations: [{
          key: key(1),
          mutationType: MutationType.M_SUM,
          value: { data: le64(1), encoding: 2 },
          sumMin: le64(0),
        }],
      },
      "Failed to perform 'sum' mutation on a non-U64 operand",
    ],
    [
      {
        mutations: [{
          key: key(1),
          mutationType: MutationType.M_MAX,
          value: { data: new Uint8Array(4), encoding: 2 },
        }],
      },
      "Failed to perform 'max' mutation on a non-U64 operand",
    ],
    [
      { enqueues: [{ payload: new Uint8Array(1) }] },
      "Enqueue operations are not supported in KV Connect",
    ],
  ];
  for (const [fields, message] of cases) {
    refusedWith(() => atomicWriteOf(create(AtomicWriteSchema, fields as never)), message);
  }
});

Deno.test("watches: 1 to 10 keys of at most 2048 bytes", () => {
  const keys = (count: number, length = 3) =>
    create(WatchSchema, { keys: Array.from({ length: count }, () => ({ key: key(length) })) });
  assert.equal(watchKeysOf(keys(10)).length, 10);
  refusedWith(() => watchKeysOf(keys(11)), "Too many keys watched in a single watch request.");
  refusedWith(() => watchKeysOf(keys(0)), "A watch names at least one key.");
  refusedWith(
    () => watchKeysOf(keys(1, MAX_WRITE_KEY_BYTES + 1)),
    "A key exceeds the key size limit.",
  );
});
