import assert from "node:assert/strict";
import { instanceKey, isInstanceKey, keyNumber, keyOwner } from "../../src/core/instance.ts";

Deno.test("instanceKey: owner and number survive the trip, within its range only", () => {
  for (const [owner, number] of [[0, 1], [8, 123_456], [15, 2 ** 49 - 1]]) {
    const key = instanceKey(owner!, number!);
    assert.equal(keyOwner(key), owner);
    assert.equal(keyNumber(key), number);
    assert.equal(isInstanceKey(owner!, number!), true);
  }
  // An owner past 15 spills into the number; a number past 2^49 is rounded.
  assert.equal(isInstanceKey(16, 1), false);
  assert.equal(isInstanceKey(3, 2 ** 52 + 1), false);
});
