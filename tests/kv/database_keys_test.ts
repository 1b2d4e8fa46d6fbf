import assert from "node:assert/strict";
import fc from "fast-check";
import { keyProblem, listPrefixProblem } from "../../src/kv/curl_keys.ts";
import {
  bytesToLatin1,
  databaseDataPrefix,
  databaseDataSpan,
  databaseKey,
  databaseKeyBytes,
  databaseKeyProblem,
  databaseNameOf,
  databaseNameProblem,
  databaseRange,
  isDatabaseDataKey,
  isStampBucketKey,
  isVersionstamp,
  latin1ToBytes,
  STAMP_BUCKETS,
  stampBucketKey,
  stampBucketOf,
  stampSuffixOf,
  stateKeyProblem,
  suffixStampBucketOf,
  versionstampBytes,
  versionstampCounter,
  versionstampHex,
  versionstampOf,
  versionstampSuffix,
} from "../../src/kv/database_keys.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

Deno.test("database names: 1 to 64 of letters, digits, _ . -", () => {
  const table: [string, boolean][] = [
    ["app", true],
    ["A-b_c.9", true],
    ["x".repeat(64), true],
    ["", false],
    ["x".repeat(65), false],
    ["a/b", false],
    ["a b", false],
    ["a\u0000b", false],
    ["é", false],
    [".", false],
    ["..", false],
  ];
  for (const [name, ok] of table) {
    assert.equal(databaseNameProblem(name) === undefined, ok, JSON.stringify(name));
  }
  assert.match(databaseNameProblem("a/b")!, /only letters, digits/);
});

Deno.test("a database's keys: prefix, bytes one character each, and back", () => {
  assert.equal(databaseDataPrefix("app"), "\ufffeapp\u0000d");
  const key = bytes(0x02, 0x61, 0x00, 0xff, 0x80);
  const stateKey = databaseKey("app", key);
  assert.equal(stateKey, "\ufffeapp\u0000d\u0002a\u0000\u00ff\u0080");
  assert.deepEqual(databaseKeyBytes("app", stateKey), key);
  assert.equal(databaseNameOf(stateKey), "app");
  assert.ok(isDatabaseDataKey(stateKey));
  assert.ok(!isStampBucketKey(stateKey));
  assert.throws(() => databaseKeyBytes("other", stateKey), RangeError);
  assert.throws(() => latin1ToBytes("\u0100"), RangeError);
  // Long keys convert in slices.
  const long = new Uint8Array(10_000).map((_, i) => i % 256);
  assert.deepEqual(latin1ToBytes(bytesToLatin1(long)), long);
  // Neither a curl key nor a foreign string names a database.
  assert.equal(databaseNameOf("app"), undefined);
  assert.equal(databaseNameOf("\ufffeno-terminator"), undefined);
  assert.equal(databaseNameOf("\ufffebad/name\u0000d"), undefined);
});

Deno.test("property: state key order is key byte order, and ranges hold exactly their keys", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 12 }),
      fc.uint8Array({ maxLength: 12 }),
      fc.uint8Array({ maxLength: 12 }),
      (a, b, probe) => {
        const sa = databaseKey("db", a);
        const sb = databaseKey("db", b);
        assert.equal(Math.sign(compareBytes(a, b)), sa < sb ? -1 : sa > sb ? 1 : 0);
        const range = databaseRange("db", a, b);
        const inBytes = compareBytes(probe, a) >= 0 && compareBytes(probe, b) < 0;
        const key = databaseKey("db", probe);
        assert.equal(key >= range.start && key < range.end, inBytes);
        // Every data key is inside the database's span, and outside others'.
        const span = databaseDataSpan("db");
        assert.ok(key >= span.start && key < span.end);
        const other = databaseDataSpan("db2");
        assert.ok(!(key >= other.start && key < other.end));
      },
    ),
  );
});

Deno.test("the curl keyspace ends where the databases' begins", () => {
  assert.match(keyProblem("\ufffeapp\u0000dk")!, /U\+FFFE/);
  assert.equal(keyProblem("\ufffdok"), undefined);
  assert.equal(keyProblem("a\ufffe"), undefined, "only a leading U+FFFE is the database space");
  assert.match(listPrefixProblem("\ufffe")!, /U\+FFFE/);
  assert.match(listPrefixProblem("a\uffff")!, /U\+FFFF/);
  assert.equal(listPrefixProblem(""), undefined);
});

Deno.test("state keys a backup may hold: curl keys, data keys with a suffix, stamp buckets", () => {
  const table: [string, boolean][] = [
    ["k", true],
    ["", false],
    [databaseKey("app", bytes(1)), true],
    [databaseKey("app", new Uint8Array(2048 + 22)), true],
    [databaseKey("app", new Uint8Array(2048 + 23)), false],
    [databaseDataPrefix("app"), false],
    [`${databaseDataPrefix("app")}\u0100`, false],
    [stampBucketKey("app", 0), true],
    [stampBucketKey("app", STAMP_BUCKETS - 1), true],
    [stampBucketKey("app", STAMP_BUCKETS), false],
    ["\ufffeapp\u0000s1", false],
    ["\ufffeapp", false],
    ["\ufffeapp\u0000x", false],
  ];
  for (const [key, ok] of table) {
    assert.equal(stateKeyProblem(key) === undefined, ok, JSON.stringify(key));
  }
  assert.equal(databaseKeyProblem("app", databaseKey("app", new Uint8Array(2048))), undefined);
  assert.match(
    databaseKeyProblem("app", databaseKey("app", new Uint8Array(2049)))!,
    /max 2048 bytes/,
  );
  assert.ok(isStampBucketKey(stampBucketKey("app", 5)));
  assert.ok(!isDatabaseDataKey(stampBucketKey("app", 5)));
});

Deno.test("versionstamps: 8-byte big-endian counter and two zero bytes, as 20 hex digits", () => {
  const table: [number, string][] = [
    [0, "00000000000000000000"],
    [1, "00000000000000010000"],
    [255, "00000000000000ff0000"],
    [2 ** 32, "00000001000000000000"],
    [Number.MAX_SAFE_INTEGER, "001fffffffffffff0000"],
  ];
  for (const [counter, hex] of table) {
    assert.equal(versionstampOf(counter), hex);
    assert.equal(versionstampCounter(hex), counter);
    assert.ok(isVersionstamp(hex));
    assert.deepEqual(versionstampBytes(hex).length, 10);
    assert.equal(versionstampHex(versionstampBytes(hex)), hex);
  }
  assert.deepEqual(
    versionstampBytes("00000000000001020000"),
    bytes(0, 0, 0, 0, 0, 0, 1, 2, 0, 0),
  );
  assert.equal(versionstampHex(new Uint8Array(0)), null, "an empty check: must be absent");
  assert.throws(() => versionstampHex(new Uint8Array(9)), RangeError);
  assert.throws(() => versionstampBytes("xyz"), RangeError);
  // Not ones this store gives: not hex, an unsafe counter, a curl version.
  for (const version of ["0000000000000001000g", "ffffffffffffffff0000", "1.0.0", ""]) {
    assert.equal(versionstampCounter(version), undefined, version);
  }
  // A restored cluster's suffix (stampSuffixOf) leaves the counter readable.
  assert.equal(versionstampCounter(versionstampOf(7, "abcd")), 7);
  assert.equal(stampSuffixOf(undefined), "0000");
  assert.equal(stampSuffixOf("e3"), "0000", "epochs are not incarnations");
  assert.equal(stampSuffixOf("r0123456789abe2"), "0123");
  // Hex order is counter order.
  assert.ok(versionstampOf(9) < versionstampOf(10));
  assert.ok(versionstampOf(255) < versionstampOf(256));
});

Deno.test("stamp buckets: FNV-1a mod 65,536, a versionstamped key in its prefix's bucket", () => {
  const prefix = databaseKey("app", bytes(0x02, 0x75, 0x00));
  const suffixed = prefix + versionstampSuffix(versionstampOf(77));
  assert.equal(stampBucketOf("app", suffixed), suffixStampBucketOf("app", prefix));
  assert.equal(suffixStampBucketOf("app", prefix), stampBucketOf("app", prefix));
  // Something that only looks like a suffix (upper-case hex) is part of the key.
  const lookalike = prefix + "\u0002" + "A".repeat(20) + "\u0000";
  assert.equal(
    stampBucketOf("app", lookalike),
    suffixStampBucketOf("app", lookalike),
  );
  // A key that ends in a suffix-shaped part, versionstamped again: the bucket
  // of the whole key it was written with.
  assert.equal(
    stampBucketOf("app", suffixed + versionstampSuffix(versionstampOf(78))),
    suffixStampBucketOf("app", suffixed),
  );
  // FNV-1a of "" is the offset basis; of the byte 0x61 ("a") a known value.
  assert.equal(
    stampBucketOf("app", databaseKey("app", new Uint8Array(0))),
    0x811c9dc5 % STAMP_BUCKETS,
  );
  assert.equal(stampBucketOf("app", databaseKey("app", bytes(0x61))), 0xe40c292c % STAMP_BUCKETS);
  assert.equal(STAMP_BUCKETS, 65536);
  assert.equal(stampBucketKey("app", 0x2c), "\ufffeapp\u0000s002c");
  // Buckets spread: 65,536 keys touch most of the buckets (a uniform
  // spread touches 1 - 1/e of them, 63 %).
  const seen = new Set<number>();
  for (let i = 0; i < 65536; i++) {
    seen.add(stampBucketOf("app", databaseKey("app", bytes(i >> 8, i & 255))));
  }
  assert.ok(seen.size > 0.6 * STAMP_BUCKETS, `${seen.size} buckets`);
});
