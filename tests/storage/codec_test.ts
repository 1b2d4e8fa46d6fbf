import assert from "node:assert/strict";
import fc from "fast-check";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import {
  decodeEffects,
  decodeEntry,
  decodeKvKey,
  decodeRecord,
  decodeSnapshotPage,
  encodedKeyLength,
  encodeEffects,
  encodeEntry,
  encodeKvKey,
  encodeMsgpack,
  encodeRecordShared,
  encodeSnapshotPages,
  SNAPSHOT_PAGE_BYTES,
} from "../../src/storage/codec.ts";
import type { KvEntry } from "../../src/kv/entry.ts";
import { executed, instance, put } from "./contract.ts";
import type { StoredInstance } from "../../src/core/types.ts";

const CODEC = { isCommand: isKvCommand, replicas: 3 };
const wellFormed = fc.string({ unit: "binary", maxLength: 40 }).filter((s) => s.isWellFormed());

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

Deno.test("key-value keys round-trip, keep their length and order, and never hold a NUL", () => {
  const utf8 = new TextEncoder();
  fc.assert(fc.property(wellFormed, wellFormed, (a, b) => {
    const [encodedA, encodedB] = [encodeKvKey(a), encodeKvKey(b)];
    assert.equal(decodeKvKey(encodedA), a);
    assert.equal(encodedA.length, utf8.encode(a).length);
    assert.ok(!encodedA.includes(0));
    assert.equal(encodedKeyLength(["kv", encodedA]), 4 + 2 + encodedA.length);
    assert.equal(
      Math.sign(compareBytes(encodedA, encodedB)),
      Math.sign(compareBytes(utf8.encode(a), utf8.encode(b))),
    );
  }));
  assert.throws(() => decodeKvKey(new Uint8Array([0x62, 0])), /out of range/);
  assert.throws(() => decodeKvKey(new Uint8Array([0xc1])), /not valid UTF-8/);
});

Deno.test("records round-trip and keep a shared initial command shared", () => {
  const shared = executed([1, 4], [put("a", new Uint8Array([1, 2]))]);
  const decoded = decodeRecord<KvCommand>(encodeRecordShared(shared).slice(), CODEC);
  const { kind: _, ...expected } = shared;
  assert.deepStrictEqual(decoded, expected);
  assert.equal(decoded.initialCommand, decoded.command);
  assert.equal(decoded.initialDeps, decoded.deps);
  const bare = instance([0, 1]);
  const { kind: __, ...bareExpected } = bare;
  assert.deepStrictEqual(decodeRecord(encodeRecordShared(bare).slice(), CODEC), bareExpected);
});

Deno.test("records encode to the library's exact bytes, before and after the payload is cached", () => {
  const payload = [put("a", new Uint8Array([1, 2])), put("b", new Uint8Array([3]))];
  const other = [put("c", new Uint8Array())];
  // Each record beside the fields the format lays down for it (see
  // `encodeRecordShared`): `true` marks an initial command or deps that are
  // the record's own.
  const cases: [StoredInstance<KvCommand>, unknown[]][] = [
    [instance([0, 1]), [0, 1, 1, 0, 0, false, null, null, null, null]],
    [
      instance([1, 2], { command: payload, deps: [1, 0, 0, 2] }),
      [1, 2, 1, 0, 0, false, payload, [1, 0, 0, 2], null, null],
    ],
    [executed([1, 4], payload), [1, 4, 3, 0, 0, true, payload, [3, 0, 0, 1], true, true]],
    [
      { ...executed([2, 5], payload), initialCommand: other },
      [2, 5, 3, 0, 0, true, payload, [4, 0, 0, 1], other, true],
    ],
    [
      instance([0, 3], { command: "nop", deps: [0, 0, 0, 0] }),
      [0, 3, 1, 0, 0, false, "nop", [0, 0, 0, 0], null, null],
    ],
  ];
  for (const [record, fields] of cases) {
    for (let round = 0; round < 2; round++) {
      assert.deepStrictEqual(encodeRecordShared(record).slice(), encodeMsgpack(fields));
    }
  }
});

Deno.test("malformed records say what is wrong", () => {
  const cases: [unknown[], RegExp][] = [
    [[0, 1, 1, 0, 0, false, null, null, null], /array of 10 fields/],
    [[3, 1, 1, 0, 0, false, null, null, null, null], /invalid owner 3/],
    [[0, 0, 1, 0, 0, false, null, null, null, null], /invalid instance number 0/],
    [[0, 1, 4, 0, 0, false, null, null, null, null], /invalid phase 4/],
    [[0, 1, 1, -1, 0, false, null, null, null, null], /invalid ballot/],
    [[0, 1, 1, 0, 0, 1, null, null, null, null], /executed flag/],
    [[0, 1, 1, 0, 0, false, [{ op: "put" }], null, null, null], /malformed command/],
    [[0, 1, 1, 0, 0, false, null, [1, 2], null, null], /malformed deps/],
    [[0, 1, 1, 0, 0, false, null, null, true, null], /initial command refers to none/],
  ];
  for (const [fields, error] of cases) {
    assert.throws(() => decodeRecord(encodeMsgpack(fields), CODEC), error);
  }
});

Deno.test("records written before seq existed read with seq 0", () => {
  // Rows only: the format before an instance's dependencies carried its seq.
  const old = [1, 2, 3, 0, 0, true, [put("a", new Uint8Array([1]))], [1, 0, 0], true, [0, 0, 0]];
  const decoded = decodeRecord<KvCommand>(encodeMsgpack(old), CODEC);
  assert.deepStrictEqual(decoded.deps, [1, 0, 0, 0]);
  assert.deepStrictEqual(decoded.initialDeps, [0, 0, 0, 0]);
  assert.throws(
    () =>
      decodeRecord(encodeMsgpack([0, 1, 1, 0, 0, false, null, [1, 2, 3, 4, 5], null, null]), CODEC),
    /malformed deps/,
  );
});

Deno.test("entries round-trip", () => {
  const entry = { value: new Uint8Array([0, 255]), version: "3.1.0" };
  assert.deepStrictEqual(decodeEntry(encodeEntry(entry)), entry);
  assert.throws(() => decodeEntry(encodeMsgpack(["v", "not bytes"])), /not bytes/);
});

/** Entries with each combination of the Deno KV fields. */
const DENO_ENTRIES: [string, KvEntry][] = [
  ["plain", { value: new Uint8Array([1]), version: "3.1.0" }],
  ["\ufffedb\u0000d\u0002a\u0000", {
    value: new Uint8Array([1, 2]),
    version: "00000000000000070000",
    encoding: 1,
    expiresAt: 1_800_000_000_000,
  }],
  ["encoded", { value: new Uint8Array(8), version: "00000000000000080000", encoding: 2 }],
  ["expiring", { value: new Uint8Array([3]), version: "4.0.1", expiresAt: 12 }],
];

Deno.test("entries with an encoding and an expiry round-trip; the old shape reads as before", () => {
  for (const [, entry] of DENO_ENTRIES) {
    assert.deepStrictEqual(decodeEntry(encodeEntry(entry)), entry);
  }
  // An entry without the fields keeps the old two-field shape, byte for byte.
  assert.deepStrictEqual(
    encodeEntry(DENO_ENTRIES[0]![1]),
    encodeMsgpack(["3.1.0", new Uint8Array([1])]),
  );
  // Written before the fields existed: `[version, value]`.
  assert.deepStrictEqual(decodeEntry(encodeMsgpack(["9.0.0", new Uint8Array([7])])), {
    value: new Uint8Array([7]),
    version: "9.0.0",
  });
  // `nil` for the absent one of the two.
  assert.deepStrictEqual(decodeEntry(encodeMsgpack(["v", new Uint8Array(), null, 5])), {
    value: new Uint8Array(),
    version: "v",
    expiresAt: 5,
  });
  for (
    const bad of [["v", new Uint8Array(), 9, null], ["v", new Uint8Array(), 1, -3], [
      "v",
      new Uint8Array(),
      1,
    ]]
  ) {
    assert.throws(() => decodeEntry(encodeMsgpack(bad)), /Entry/, JSON.stringify(bad));
  }
});

Deno.test("effects carry the new fields, and effects written before them read as before", () => {
  const mutations = DENO_ENTRIES.map(([key, entry]) => ({ kind: "set" as const, key, entry }));
  const decoded = decodeEffects(
    encodeEffects(1, 7, [...mutations, { kind: "delete", key: "gone" }]),
  );
  assert.deepStrictEqual(decoded, {
    owner: 1,
    number: 7,
    mutations: [...mutations, { kind: "delete", key: "gone" }],
  });
  const old = encodeMsgpack([0, 3, [["k", "3.0.0", new Uint8Array([1])], ["d"]]]);
  assert.deepStrictEqual(decodeEffects(old).mutations, [
    { kind: "set", key: "k", entry: { value: new Uint8Array([1]), version: "3.0.0" } },
    { kind: "delete", key: "d" },
  ]);
  assert.throws(
    () => decodeEffects(encodeMsgpack([0, 3, [["k", "v", new Uint8Array(), 7, null]]])),
    /malformed set/,
  );
});

Deno.test("snapshot pages carry the new fields and split values too large for one page", () => {
  // A Deno KV database's largest entry: a 64 KiB value under a 2070-byte key
  // of characters that take 2 bytes of UTF-8 each.
  const big = new Uint8Array(65_536).map((_, i) => i * 31);
  const entries: [string, KvEntry][] = [
    ...DENO_ENTRIES,
    [`\ufffedb\u0000d${"\u00ff".repeat(2070)}`, {
      value: big,
      version: "00000000000000090000",
      encoding: 3,
      expiresAt: 77,
    }],
    ["after", { value: new Uint8Array(40_000).fill(5), version: "5.0.0" }],
  ];
  const pages = encodeSnapshotPages(entries);
  assert.ok(pages.length >= 3, `${pages.length} pages`);
  for (const page of pages) assert.ok(page.length <= SNAPSHOT_PAGE_BYTES, `${page.length} bytes`);
  const into = new Map<string, KvEntry>();
  for (const page of pages) decodeSnapshotPage(page, into);
  assert.deepStrictEqual([...into], entries);
  // A page written before the fields existed: key, version, value triples.
  const old = new Map<string, KvEntry>();
  decodeSnapshotPage(encodeMsgpack(["k", "3.0.0", new Uint8Array([1])]), old);
  assert.deepStrictEqual([...old], [["k", { value: new Uint8Array([1]), version: "3.0.0" }]]);
  // A continuation of an entry never started, and a malformed meta, are refused.
  assert.throws(
    () => decodeSnapshotPage(encodeMsgpack(["k", null, new Uint8Array(1)]), new Map()),
    /malformed entry at position 0/,
  );
  assert.throws(
    () => decodeSnapshotPage(encodeMsgpack(["k", ["v", 1], new Uint8Array(1)]), new Map()),
    /malformed entry at position 0/,
  );
});
