import assert from "node:assert/strict";
import { accessesConflict } from "../../src/core/conflict.ts";
import {
  describeKvCommand,
  isKvCommand,
  type KvCommand,
  kvConflicts,
} from "../../src/kv/commands.ts";
import {
  databaseDataSpan,
  databaseKey,
  databaseRange,
  stampBucketKey,
  stampBucketOf,
  suffixStampBucketOf,
  versionstampOf,
} from "../../src/kv/database_keys.ts";
import {
  type AtomicCommand,
  atomicCommandProblem,
  type AtomicMutation,
  expireCommandProblem,
  MAX_ATOMIC_CHECKS,
  MAX_ATOMIC_MUTATIONS,
  snapshotCommandProblem,
  stampBucketsOf,
} from "../../src/kv/txn_commands.ts";

const bytes = (...values: number[]) => new Uint8Array(values);
const u64 = (n: number) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
};
const key = (...values: number[]) => databaseKey("app", bytes(...values));

function atomic(
  fields: Partial<Omit<AtomicCommand, "op" | "request">> = {},
): AtomicCommand {
  return { op: "atomic", request: "r", database: "app", checks: [], mutations: [], ...fields };
}

function set(k: string, value = bytes(1), extra: Partial<AtomicMutation> = {}): AtomicMutation {
  return { kind: "set", key: k, value, encoding: 3, ...extra } as AtomicMutation;
}

Deno.test("atomic commands: what validation accepts and refuses, with messages for a 400", () => {
  const many = (n: number, make: (i: number) => unknown) =>
    Array.from({ length: n }, (_, i) => make(i));
  const table: [string, unknown, RegExp | undefined][] = [
    ["an empty commit", atomic(), undefined],
    ["a curl command", { ...atomic(), database: undefined, mutations: [set("k")] }, undefined],
    [
      "every kind",
      atomic({
        floor: 12,
        checks: [{ key: key(1), version: null }, { key: key(2), version: versionstampOf(3) }],
        mutations: [
          set(key(1), bytes(1), { expiresAt: 1_700_000_000_000 }),
          { kind: "delete", key: key(2) },
          { kind: "sum", key: key(3), value: u64(1), encoding: 2 },
          { kind: "min", key: key(3), value: u64(1) },
          { kind: "max", key: key(3), value: u64(1), encoding: 2 },
          { kind: "setSuffixVersionstamped", key: key(4), value: bytes(1), encoding: 1 },
        ],
      }),
      undefined,
    ],
    [
      "100 checks",
      atomic({ checks: many(100, (i) => ({ key: key(i), version: null })) as never }),
      undefined,
    ],
    [
      "101 checks",
      atomic({ checks: many(101, (i) => ({ key: key(i), version: null })) as never }),
      /Too many checks \(max 100\)/,
    ],
    [
      "1000 mutations",
      atomic({ mutations: many(1000, (i) => set(key(i >> 8, i))) as never }),
      undefined,
    ],
    [
      "1001 mutations",
      atomic({ mutations: many(1001, (i) => set(key(i >> 8, i))) as never }),
      /Too many mutations \(max 1000\)/,
    ],
    [
      "a 2048-byte key",
      atomic({ mutations: [set(databaseKey("app", new Uint8Array(2048)))] }),
      undefined,
    ],
    [
      "a 2049-byte key",
      atomic({ mutations: [set(databaseKey("app", new Uint8Array(2049)))] }),
      /Key too large for write \(max 2048 bytes\)/,
    ],
    [
      "a 65,536-byte value",
      atomic({ mutations: [set(key(1), new Uint8Array(65_536))] }),
      undefined,
    ],
    [
      "a 65,537-byte value",
      atomic({ mutations: [set(key(1), new Uint8Array(65_537))] }),
      /Value too large \(max 65536 bytes\)/,
    ],
    [
      "a curl value over the curl limit",
      { ...atomic(), database: undefined, mutations: [set("k", new Uint8Array(61 * 1024))] },
      /Value too large \(max 61440 bytes\)/,
    ],
    [
      "a total over 800 KiB",
      atomic({ mutations: many(13, (i) => set(key(i), new Uint8Array(65_536))) as never }),
      /Total mutation size too large \(max 819200 bytes\)/,
    ],
    [
      "keys over 80 KiB in total",
      atomic({
        mutations: many(41, (i) => set(databaseKey("app", new Uint8Array(2048).fill(i)))) as never,
      }),
      /Total key size too large \(max 81920 bytes\)/,
    ],
    [
      "a 7-byte sum operand",
      atomic({ mutations: [{ kind: "sum", key: key(1), value: new Uint8Array(7) }] }),
      /Failed to perform 'sum' mutation on a non-U64 operand/,
    ],
    [
      "a V8 max operand",
      atomic({ mutations: [{ kind: "max", key: key(1), value: u64(1), encoding: 1 }] }),
      /Failed to perform 'max' mutation on a non-U64 operand/,
    ],
    [
      "a versionstamped key without a database",
      {
        ...atomic(),
        database: undefined,
        mutations: [{ kind: "setSuffixVersionstamped", key: "k", value: bytes(1) }],
      },
      /needs a Deno KV database/,
    ],
    [
      "a key of another database",
      atomic({ mutations: [set(databaseKey("other", bytes(1)))] }),
      /not a key of database app/,
    ],
    [
      "a stamp bucket",
      atomic({ mutations: [set(stampBucketKey("app", 1))] }),
      /not a key of database app/,
    ],
    ["a curl key in a database", atomic({ mutations: [set("k")] }), /not a key of database app/],
    [
      "an empty key",
      atomic({ mutations: [set(databaseKey("app", new Uint8Array(0)))] }),
      /must not be empty/,
    ],
    [
      "a database key in a curl command",
      { ...atomic(), database: undefined, mutations: [set(key(1))] },
      /U\+FFFE/,
    ],
    [
      "an unknown kind",
      atomic({ mutations: [{ kind: "append", key: key(1) } as never] }),
      /Unknown mutation kind/,
    ],
    [
      "an unknown encoding",
      atomic({ mutations: [set(key(1), bytes(1), { encoding: 4 })] }),
      /encoding/,
    ],
    [
      "a negative expiry",
      atomic({ mutations: [set(key(1), bytes(1), { expiresAt: -5 })] }),
      /Expiry/,
    ],
    ["a bad name", { ...atomic(), database: "a/b" }, /only letters/],
    ["a negative floor", atomic({ floor: -1 }), /Floor/],
    ["a fractional floor", atomic({ floor: 1.5 }), /Floor/],
    [
      "a check of a curl version in a database",
      atomic({ checks: [{ key: key(1), version: "1.0.0" }] }),
      /10 bytes/,
    ],
    ["a check without a version", atomic({ checks: [{ key: key(1) } as never] }), /string or null/],
    ["checks not a list", { ...atomic(), checks: "x" }, /not a list/],
  ];
  for (const [what, command, expected] of table) {
    const problem = atomicCommandProblem(command);
    if (expected === undefined) {
      assert.equal(problem, undefined, what);
      assert.ok(isKvCommand(command), what);
    } else {
      assert.match(problem ?? "accepted", expected, what);
      assert.ok(!isKvCommand(command), what);
    }
  }
  assert.equal(MAX_ATOMIC_CHECKS, 100);
  assert.equal(MAX_ATOMIC_MUTATIONS, 1000);
});

Deno.test("snapshot and expire commands: what validation accepts and refuses", () => {
  const range = (start: string, end: string, limit = 10, reverse = false) => ({
    start,
    end,
    limit,
    reverse,
  });
  const whole = databaseRange("app", bytes(0), bytes(0xff));
  const snapshots: [string, unknown, RegExp | undefined][] = [
    ["a database range", { ranges: [range(whole.start, whole.end)] }, undefined],
    [
      "from the first key",
      { ranges: [range(databaseKey("app", bytes()), whole.end, 1000, true)] },
      undefined,
    ],
    ["ten ranges", { ranges: Array(10).fill(range(whole.start, whole.end)) }, undefined],
    ["a curl range", { ranges: [range("a", "b")] }, undefined],
    ["the whole database", {
      ranges: [range(databaseDataSpan("app").start, databaseDataSpan("app").end)],
    }, undefined],
    [
      "past the database",
      { ranges: [range(whole.start, `${databaseDataSpan("app").end}\u0000`)] },
      /Range bound/,
    ],
    ["the whole curl keyspace", { ranges: [range("", "\ufffe")] }, undefined],
    ["eleven ranges", { ranges: Array(11).fill(range(whole.start, whole.end)) }, /max 10/],
    ["no range", { ranges: [] }, /at least one/],
    ["limit 0", { ranges: [range("a", "b", 0)] }, /limit/],
    ["limit 1001", { ranges: [range("a", "b", 1001)] }, /limit/],
    ["into the databases", { ranges: [range("a", "\uffff")] }, /curl keyspace/],
    ["into the buckets", { ranges: [range(whole.start, stampBucketKey("app", 9))] }, /Range bound/],
    [
      "two databases",
      { ranges: [range(whole.start, databaseKey("app2", bytes(1)))] },
      /Range bound/,
    ],
    ["from curl into a database", { ranges: [range("a", whole.end)] }, /curl keyspace/],
    ["a 2049-byte bound", {
      ranges: [range(whole.start, databaseKey("app", new Uint8Array(2049)))],
    }, undefined],
    ["a 2050-byte bound", {
      ranges: [range(whole.start, databaseKey("app", new Uint8Array(2050)))],
    }, /Range bound/],
    ["no direction", { ranges: [{ start: "a", end: "b", limit: 1 }] }, /direction/],
  ];
  for (const [what, fields, expected] of snapshots) {
    const command = { op: "snapshot", request: "r", ...(fields as object) };
    const problem = snapshotCommandProblem(command);
    if (expected === undefined) assert.equal(problem, undefined, what);
    else assert.match(problem ?? "accepted", expected, what);
    assert.equal(isKvCommand(command), expected === undefined, what);
  }
  const expires: [string, unknown, RegExp | undefined][] = [
    ["a curl key", [{ key: "k", version: "1.0.0" }], undefined],
    ["a database key", [{ key: key(1), version: versionstampOf(1) }], undefined],
    ["256 keys", Array(256).fill({ key: "k", version: "1.0.0" }), undefined],
    ["257 keys", Array(257).fill({ key: "k", version: "1.0.0" }), /max 256/],
    ["none", [], /at least one/],
    ["a bucket", [{ key: stampBucketKey("app", 1), version: versionstampOf(1) }], /bucket/],
    ["no version", [{ key: "k" }], /pair/],
    ["an empty version", [{ key: "k", version: "" }], /empty/],
    ["a bad key", [{ key: "", version: "1.0.0" }], /empty/],
  ];
  for (const [what, keys, expected] of expires) {
    const command = { op: "expire", request: "r", keys };
    const problem = expireCommandProblem(command);
    if (expected === undefined) assert.equal(problem, undefined, what);
    else assert.match(problem ?? "accepted", expected, what);
    assert.equal(isKvCommand(command), expected === undefined, what);
  }
  // A put with a TTL, and a malformed one.
  const put = { op: "put", request: "r", key: "k", value: bytes(1) };
  assert.ok(isKvCommand({ ...put, expiresAt: 1_700_000_000_000 }));
  assert.ok(!isKvCommand({ ...put, expiresAt: "soon" }));
  assert.ok(!isKvCommand({ ...put, key: "\ufffek" }));
  assert.ok(!isKvCommand({ op: "list", request: "r", prefix: "\ufffe", limit: 1 }));
});

Deno.test("atomic accesses: checks read, mutations write, a versionstamped key its span, buckets", () => {
  const command = atomic({
    checks: [{ key: key(1), version: null }],
    mutations: [
      set(key(2)),
      { kind: "delete", key: key(3) },
      { kind: "setSuffixVersionstamped", key: key(4), value: bytes(1) },
    ],
  });
  const buckets = [
    stampBucketKey("app", stampBucketOf("app", key(2))),
    stampBucketKey("app", stampBucketOf("app", key(3))),
    stampBucketKey("app", suffixStampBucketOf("app", key(4))),
  ];
  assert.deepEqual(stampBucketsOf(command), [...new Set(buckets)]);
  assert.deepEqual(kvConflicts.accesses(command), [
    { key: key(1), write: false },
    { key: key(2), write: true },
    { key: key(3), write: true },
    { key: key(4), end: `${key(4)}\uffff`, write: true },
    ...[...new Set(buckets)].map((bucket) => ({ key: bucket, write: true })),
  ]);
  // A curl command stamps nothing.
  const curl: AtomicCommand = {
    ...atomic({ mutations: [set("k")] }),
    database: undefined,
  } as never;
  assert.deepEqual(stampBucketsOf(curl), []);
  assert.deepEqual(kvConflicts.accesses(curl), [{ key: "k", write: true }]);
  // Two writes of different keys in one bucket conflict; in different buckets they do not.
  const keysByBucket = new Map<number, string[]>();
  for (let i = 0; i < 100_000; i++) {
    const k = databaseKey("app", bytes(i >> 16, (i >> 8) & 255, i & 255));
    const bucket = stampBucketOf("app", k);
    keysByBucket.set(bucket, [...(keysByBucket.get(bucket) ?? []), k]);
  }
  const [sameA, sameB] = [...keysByBucket.values()].find((keys) => keys.length >= 2)!;
  const accessesOf = (k: string) => kvConflicts.accesses(atomic({ mutations: [set(k)] }));
  assert.ok(accessesConflict(accessesOf(sameA!), accessesOf(sameB!)));
  const [[, [otherA]], [, [otherB]]] = [...keysByBucket.entries()];
  assert.ok(!accessesConflict(accessesOf(otherA!), accessesOf(otherB!)));
  // A versionstamped write conflicts with any key it may create, and a read of it.
  const stamped = kvConflicts.accesses(
    atomic({ mutations: [{ kind: "setSuffixVersionstamped", key: key(4), value: bytes(1) }] }),
  );
  const later = key(4, 2, 0x30, 0);
  assert.ok(accessesConflict(stamped, [{ key: later, write: false }]));
  assert.ok(!accessesConflict(stamped, [{ key: key(5), write: false }]));
});

Deno.test("snapshot reads read their ranges; expiry writes its keys; curl lists stop at U+FFFE", () => {
  const whole = databaseRange("app", bytes(0), bytes(0xff));
  const snapshot: KvCommand = {
    op: "snapshot",
    request: "r",
    ranges: [{ ...whole, limit: 5, reverse: false }, {
      start: "a",
      end: "b",
      limit: 1,
      reverse: true,
    }],
  };
  assert.deepEqual(kvConflicts.accesses(snapshot), [
    { key: whole.start, end: whole.end, write: false },
    { key: "a", end: "b", write: false },
  ]);
  // Deno's get, [key, key ‖ 0x00): a point read of the key.
  const get: KvCommand = {
    op: "snapshot",
    request: "r",
    ranges: [{ start: key(1), end: `${key(1)}\u0000`, limit: 1, reverse: false }],
  };
  assert.deepEqual(kvConflicts.accesses(get), [{ key: key(1), write: false }]);
  assert.ok(accessesConflict(kvConflicts.accesses(get), [{ key: key(1), write: true }]));
  assert.ok(
    !accessesConflict(kvConflicts.accesses(get), [{ key: `${key(1)}\u0000`, write: true }]),
  );
  const expire: KvCommand = {
    op: "expire",
    request: "r",
    keys: [{ key: "k", version: "1.0.0" }, { key: key(1), version: versionstampOf(2) }],
  };
  assert.deepEqual(kvConflicts.accesses(expire), [
    { key: "k", write: true },
    { key: key(1), write: true },
  ]);
  const everything: KvCommand = { op: "list", request: "r", prefix: "", limit: 10 };
  assert.deepEqual(kvConflicts.accesses(everything), [{ key: "", end: "\ufffe", write: false }]);
  // A curl list never conflicts with a database's write.
  assert.ok(
    !accessesConflict(kvConflicts.accesses(everything), [{ key: key(1), write: true }]),
  );
  // A backup still reads everything.
  assert.ok(
    accessesConflict(kvConflicts.accesses({ op: "backup", request: "r" }), [
      { key: key(1), write: true },
    ]),
  );
});

Deno.test("describe lines of the multi-key commands", () => {
  assert.equal(
    describeKvCommand(atomic({
      floor: 7,
      checks: [{ key: key(1, 2), version: null }],
      mutations: [
        set(key(0xab), bytes(1, 2, 3), { expiresAt: 99 }),
        { kind: "sum", key: key(3), value: u64(1) },
        { kind: "setSuffixVersionstamped", key: key(4), value: bytes(1) },
        { kind: "delete", key: key(5) },
      ],
    })),
    "atomic(app >7: check app:0102@absent; set app:ab=3B exp 99; sum app:03=8B; set app:04‖stamp=1B; +1)",
  );
  assert.equal(
    describeKvCommand({ ...atomic({ mutations: [set("k")] }), database: undefined } as never),
    "atomic(set k=1B)",
  );
  assert.equal(
    describeKvCommand({
      op: "snapshot",
      request: "r",
      ranges: [{ start: key(1), end: key(2), limit: 3, reverse: true }],
    }),
    "snapshot(rev [app:01, app:02) ×3)",
  );
  assert.equal(
    describeKvCommand({
      op: "expire",
      request: "r",
      keys: [{ key: stampBucketKey("app", 3), version: "v" }, { key: "k", version: "1.0.0" }],
    }),
    "expire(app:bucket 0003@v, k@1.0.0)",
  );
  assert.equal(
    describeKvCommand({ op: "put", request: "r", key: "k", value: bytes(), expiresAt: 5 }),
    'put(k="" exp 5)',
  );
});
