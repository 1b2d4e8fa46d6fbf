import assert from "node:assert/strict";
import {
  describeKvCommand,
  isKvCommand,
  keyProblem,
  type KvCommand,
  MAX_CONDITION_VERSIONS,
  MAX_KEY_BYTES,
  MAX_LIST_LIMIT,
  MAX_VALUE_BYTES,
  prefixEnd,
  utf8Length,
} from "../../src/kv/commands.ts";
import fc from "fast-check";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("keyProblem accepts ordinary keys and refuses unaddressable or oversized ones", () => {
  for (const key of ["a", "users/42", "é", "\u{1F600}", "a".repeat(MAX_KEY_BYTES), "..."]) {
    assert.equal(keyProblem(key), undefined, `key ${JSON.stringify(key)}`);
  }
  assert.match(keyProblem("")!, /empty/);
  assert.match(keyProblem(".")!, /\. or \.\./);
  assert.match(keyProblem("..")!, /\. or \.\./);
  assert.match(keyProblem("a".repeat(MAX_KEY_BYTES + 1))!, /longer/);
  // The limit is in UTF-8 bytes, not UTF-16 code units: 512 × "é" is 1024
  // bytes, 513 × "é" is 1026 (in 513 code units).
  assert.equal(keyProblem("é".repeat(512)), undefined);
  assert.match(keyProblem("é".repeat(513))!, /longer/);
  assert.match(keyProblem("\u{1F600}".repeat(257))!, /longer/);
  assert.match(keyProblem("a\uffffb")!, /U\+FFFF/);
  assert.match(keyProblem("a\ud800b")!, /Unicode/);
  assert.match(keyProblem("\udc00")!, /Unicode/);
});

Deno.test("utf8Length counts what TextEncoder writes, lone surrogates included", () => {
  for (
    const text of ["", "a", "é", "€", "\u{1F600}", "\ud800", "\udc00", "a\ud800b", "\ud800\ud800"]
  ) {
    assert.equal(utf8Length(text), bytes(text).length, JSON.stringify(text));
  }
  // Strings of raw UTF-16 code units, so that lone surrogates and pairs both occur
  // (fast-check's "binary" unit never yields a lone surrogate).
  const codeUnit = fc.oneof(
    fc.integer({ min: 0, max: 0x7f }),
    fc.integer({ min: 0x80, max: 0x7ff }),
    fc.integer({ min: 0x800, max: 0xffff }),
    fc.integer({ min: 0xd800, max: 0xdfff }),
  ).map((unit) => String.fromCharCode(unit));
  const units = (minLength: number, maxLength: number) =>
    fc.array(codeUnit, { minLength, maxLength }).map((parts) => parts.join(""));
  fc.assert(fc.property(units(0, 600), (text) => utf8Length(text) === bytes(text).length));
  // Keys around the limit: 341 code units (at most 1023 bytes) to 1024 (the
  // most that can fit); the verdict is the encoded length's.
  fc.assert(
    fc.property(units(330, 1030), (key) => {
      const tooLong = /longer than/.test(keyProblem(key) ?? "");
      return tooLong === (bytes(key).length > MAX_KEY_BYTES);
    }),
  );
  // Both verdicts occur near the limit, so the property above tests both ways.
  assert.equal(keyProblem("é".repeat(512)), undefined);
  assert.match(keyProblem("é".repeat(513))!, /longer than/);
  assert.match(keyProblem("\ud800".repeat(342))!, /longer than/);
});

Deno.test("isKvCommand accepts every well-formed command", () => {
  const valid: KvCommand[] = [
    { op: "put", request: "r1", key: "k", value: bytes("v") },
    { op: "put", request: "r2", key: "k", value: new Uint8Array(MAX_VALUE_BYTES), ifVersion: null },
    { op: "put", request: "r3", key: "k", value: bytes(""), ifVersion: "3.1.0" },
    { op: "get", request: "r4", key: "k" },
    { op: "delete", request: "r5", key: "k" },
    { op: "delete", request: "r6", key: "k", ifVersion: null },
    { op: "delete", request: "r7", key: "k", ifVersion: "x".repeat(64) },
    { op: "put", request: "r7a", key: "k", value: bytes("v"), ifVersion: ["1.0.0", "2.0.0"] },
    {
      op: "delete",
      request: "r7b",
      key: "k",
      ifVersion: Array.from({ length: MAX_CONDITION_VERSIONS }, (_, i) => `${i}.0.0`),
    },
    { op: "list", request: "r8", prefix: "", limit: 1 },
    { op: "list", request: "r9", prefix: "a/", after: "a/b", limit: MAX_LIST_LIMIT },
    { op: "list", request: "", prefix: "a".repeat(MAX_KEY_BYTES), limit: 5 },
  ];
  for (const command of valid) assert.ok(isKvCommand(command), JSON.stringify(command));
});

Deno.test("isKvCommand refuses malformed commands from peers", () => {
  const value = bytes("v");
  const invalid: unknown[] = [
    null,
    undefined,
    "put",
    42,
    {},
    { op: "put", key: "k", value },
    { op: "put", request: 7, key: "k", value },
    { op: "put", request: "r".repeat(129), key: "k", value },
    { op: "put", request: "r", key: "", value },
    { op: "put", request: "r", key: "..", value },
    { op: "put", request: "r", key: 1, value },
    { op: "put", request: "r", key: "k", value: "v" },
    { op: "put", request: "r", key: "k", value: [1, 2] },
    { op: "put", request: "r", key: "k", value: new Uint8Array(MAX_VALUE_BYTES + 1) },
    { op: "put", request: "r", key: "k", value, ifVersion: "" },
    { op: "put", request: "r", key: "k", value, ifVersion: "x".repeat(65) },
    { op: "put", request: "r", key: "k", value, ifVersion: 3 },
    { op: "get", request: "r" },
    { op: "get", request: "r", key: "a\uffff" },
    { op: "delete", request: "r", key: "k", ifVersion: false },
    // Lists: 2 to MAX_CONDITION_VERSIONS distinct versions (one is a string).
    { op: "put", request: "r", key: "k", value, ifVersion: [] },
    { op: "put", request: "r", key: "k", value, ifVersion: ["1.0.0"] },
    { op: "put", request: "r", key: "k", value, ifVersion: ["1.0.0", "1.0.0"] },
    { op: "put", request: "r", key: "k", value, ifVersion: ["1.0.0", ""] },
    { op: "put", request: "r", key: "k", value, ifVersion: ["1.0.0", "x".repeat(65)] },
    { op: "delete", request: "r", key: "k", ifVersion: ["1.0.0", null] },
    { op: "delete", request: "r", key: "k", ifVersion: ["1.0.0", 2] },
    {
      op: "delete",
      request: "r",
      key: "k",
      ifVersion: Array.from({ length: MAX_CONDITION_VERSIONS + 1 }, (_, i) => `${i}.0.0`),
    },
    { op: "delete", request: "r", key: "a".repeat(MAX_KEY_BYTES + 1) },
    { op: "list", request: "r", prefix: "", limit: 0 },
    { op: "list", request: "r", prefix: "", limit: MAX_LIST_LIMIT + 1 },
    { op: "list", request: "r", prefix: "", limit: 1.5 },
    { op: "list", request: "r", prefix: "", limit: "10" },
    { op: "list", request: "r", prefix: "", limit: Number.NaN },
    { op: "list", request: "r", limit: 10 },
    { op: "list", request: "r", prefix: "a\uffff", limit: 10 },
    { op: "list", request: "r", prefix: "a".repeat(MAX_KEY_BYTES + 1), limit: 10 },
    { op: "list", request: "r", prefix: "", after: 3, limit: 10 },
    { op: "list", request: "r", prefix: "", after: "a".repeat(MAX_KEY_BYTES + 1), limit: 10 },
    { op: "scan", request: "r", key: "k" },
  ];
  for (const command of invalid) {
    assert.ok(!isKvCommand(command), `accepted ${Deno.inspect(command)}`);
  }
});

Deno.test("prefixEnd bounds exactly the keys that start with the prefix", () => {
  const keys = ["", "a", "a\u0000", "ab", "a\u{1F600}", "a\ufffe", "b", "`", "\u{1F600}"];
  for (const prefix of ["", "a", "ab", "\u{1F600}"]) {
    const end = prefixEnd(prefix);
    for (const key of keys) {
      assert.equal(
        key >= prefix && key < end,
        key.startsWith(prefix),
        `key ${JSON.stringify(key)} prefix ${JSON.stringify(prefix)}`,
      );
    }
  }
});

Deno.test("describeKvCommand renders each command on one short line", () => {
  assert.equal(
    describeKvCommand({ op: "put", request: "r", key: "k", value: bytes("hi") }),
    'put(k="hi")',
  );
  assert.equal(
    describeKvCommand({ op: "put", request: "r", key: "k", value: bytes("x"), ifVersion: null }),
    'put(k="x" if absent)',
  );
  assert.equal(
    describeKvCommand({ op: "put", request: "r", key: "k", value: new Uint8Array(30) }),
    "put(k=30B)",
  );
  assert.equal(
    describeKvCommand({ op: "put", request: "r", key: "k", value: new Uint8Array([0, 1]) }),
    "put(k=2B)",
  );
  assert.equal(describeKvCommand({ op: "get", request: "r", key: "k" }), "get(k)");
  assert.equal(
    describeKvCommand({ op: "delete", request: "r", key: "k", ifVersion: "1.0.0" }),
    "del(k if 1.0.0)",
  );
  assert.equal(
    describeKvCommand({ op: "delete", request: "r", key: "k", ifVersion: ["1.0.0", "2.1.0"] }),
    "del(k if 1.0.0|2.1.0)",
  );
  assert.equal(
    describeKvCommand({ op: "list", request: "r", prefix: "a/", after: "a/b", limit: 3 }),
    "list(a/* after a/b limit 3)",
  );
});
