/**
 * The assertions standing in for `@std/assert` fail when they should: a
 * suite on assertions that cannot fail would pass whatever the server does.
 */

import nodeAssert from "node:assert/strict";
import {
  assert,
  assertEquals,
  AssertionError,
  assertNotEquals,
  assertRejects,
  assertThrows,
} from "./test_util.ts";

Deno.test("assert and assertEquals fail on a false value and a difference", () => {
  nodeAssert.throws(() => assert(false), AssertionError);
  nodeAssert.throws(() => assert(0, "zero"), /zero/);
  nodeAssert.throws(() => assertEquals({ a: 1 }, { a: 2 }), AssertionError);
  nodeAssert.throws(() => assertEquals([1, 2], [1, 2, 3]), AssertionError);
  nodeAssert.throws(() => assertEquals(new Deno.KvU64(1n), new Deno.KvU64(2n)), AssertionError);
  nodeAssert.throws(() => assertEquals(new Uint8Array([1]), new Uint8Array([2])), AssertionError);
  nodeAssert.throws(() => assertEquals(new ArrayBuffer(2), new ArrayBuffer(3)), AssertionError);
  nodeAssert.throws(() => assertEquals(1, "1"), AssertionError);
  nodeAssert.throws(() => assertNotEquals({ a: 1 }, { a: 1 }), AssertionError);
  assertEquals({ key: ["a"], value: new Date(0) }, { key: ["a"], value: new Date(0) });
  assertEquals(new Deno.KvU64(7n), new Deno.KvU64(7n));
  assertNotEquals(1, 2);
});

Deno.test("assertThrows checks that it throws, the class and the message", () => {
  nodeAssert.throws(() => assertThrows(() => {}), AssertionError);
  nodeAssert.throws(
    () =>
      assertThrows(() => {
        throw new Error("x");
      }, TypeError),
    /instance of TypeError/,
  );
  nodeAssert.throws(
    () =>
      assertThrows(
        () => {
          throw new TypeError("one");
        },
        TypeError,
        "two",
      ),
    /include "two"/,
  );
  const error = assertThrows(
    () => {
      throw new RangeError("out");
    },
    RangeError,
    "ou",
  );
  nodeAssert.equal(error.message, "out");
});

Deno.test("assertRejects checks that it rejects, the class and the message", async () => {
  await nodeAssert.rejects(assertRejects(() => Promise.resolve(1)), AssertionError);
  await nodeAssert.rejects(
    assertRejects(() => Promise.reject(new Error("x")), TypeError),
    /instance of TypeError/,
  );
  await nodeAssert.rejects(
    assertRejects(() => Promise.reject(new Error("KV Connect failed: 400")), Error, "409"),
    /include "409"/,
  );
  const error = await assertRejects(() => Promise.reject(new TypeError("bad")), Error, "ba");
  nodeAssert.ok(error instanceof TypeError);
});
