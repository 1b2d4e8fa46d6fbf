import assert from "node:assert/strict";
import { Bitset } from "../../src/check/mod.ts";
import { StateCache } from "../../src/check/state_cache.ts";

Deno.test("Bitset: set, clear, has, count across word boundaries", () => {
  const bits = new Bitset(70);
  assert.equal(bits.words.length, 3);
  for (const i of [0, 31, 32, 63, 64, 69]) bits.set(i);
  assert.equal(bits.count(), 6);
  assert.ok(bits.has(31) && bits.has(32) && bits.has(69));
  assert.ok(!bits.has(1) && !bits.has(33));
  bits.clear(32);
  assert.ok(!bits.has(32));
  assert.equal(bits.count(), 5);
  bits.set(31);
  assert.equal(bits.count(), 5, "setting twice changes nothing");
});

Deno.test("Bitset: clone is independent and equals compares members", () => {
  const a = new Bitset(40);
  a.set(3);
  a.set(39);
  const b = a.clone();
  assert.ok(a.equals(b));
  b.set(4);
  assert.ok(!a.equals(b));
  assert.ok(!a.has(4));
  assert.throws(() => new Bitset(-1), RangeError);
  assert.equal(new Bitset(0).count(), 0);
});

Deno.test("StateCache: adds each (bitset, state) pair once and survives growth", () => {
  const words = new Uint32Array(2);
  const cache = new StateCache<string>(words, (a, b) => a === b);
  // Deliberately colliding hashes force the bitset and state comparisons.
  for (let i = 0; i < 5000; i++) {
    words[0] = i;
    words[1] = i >>> 3;
    assert.ok(cache.add(i & 7, `s${i % 3}`));
  }
  assert.equal(cache.size, 5000);
  for (let i = 0; i < 5000; i += 97) {
    words[0] = i;
    words[1] = i >>> 3;
    assert.ok(cache.has(i & 7, `s${i % 3}`));
    assert.ok(!cache.add(i & 7, `s${i % 3}`));
    assert.ok(!cache.has(i & 7, `s${(i + 1) % 3}`));
  }
  words[0] = 1_000_000;
  assert.ok(!cache.has(0, "s0"));
});
