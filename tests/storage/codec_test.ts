import assert from "node:assert/strict";
import fc from "fast-check";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import {
  decodeEntry,
  decodeKvKey,
  decodeRecord,
  encodedKeyLength,
  encodeEntry,
  encodeKvKey,
  encodeMsgpack,
  encodeRecordShared,
} from "../../src/storage/codec.ts";
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
