/**
 * Range watchers of the watch hub (the curl API's `GET /watch` of a prefix):
 * changed keys of the range coalesced, bounded, a reset past the bound or
 * when the state is replaced, one bound on watchers of both kinds.
 */

import assert from "node:assert/strict";
import { WatchHub } from "../../src/kv/watch_hub.ts";
import type { KvEntry } from "../../src/kv/state_machine.ts";

function hubOf(maxWatchers?: number): WatchHub {
  const state = new Map<string, KvEntry>();
  return new WatchHub({
    read: (key) => state.get(key),
    ...(maxWatchers === undefined ? {} : { maxWatchers }),
  });
}

Deno.test("a range watcher holds the changed keys of its range, each once, in first-change order", () => {
  const hub = hubOf();
  const watcher = hub.watchRange("user/", "user/\uffff")!;
  assert.equal(watcher.dirty, false, "opens with nothing pending");
  for (const key of ["user/b", "other", "user/a", "user/b", "user", "user/\uffff"]) {
    hub.changed(key);
  }
  assert.equal(watcher.dirty, true);
  assert.equal(watcher.pending, 2);
  assert.deepEqual(watcher.take(1), { reset: false, keys: ["user/b"] });
  assert.equal(watcher.dirty, true, "the rest stays for the next take");
  assert.deepEqual(watcher.take(10), { reset: false, keys: ["user/a"] });
  assert.equal(watcher.dirty, false);
  assert.deepEqual(watcher.take(10), { reset: false, keys: [] });
});

Deno.test("past its bound a range watcher holds a reset, not the keys: it never grows", () => {
  const hub = hubOf();
  const watcher = hub.watchRange("", "\ufffe", 3)!;
  for (const key of ["a", "b", "c", "a", "b"]) hub.changed(key);
  assert.equal(watcher.pending, 3, "a key already held costs nothing");
  hub.changed("d");
  assert.equal(watcher.pending, 0);
  assert.deepEqual(watcher.take(10), { reset: true });
  assert.equal(watcher.dirty, false, "the reset is taken");
  hub.changed("e");
  assert.deepEqual(watcher.take(10), { reset: false, keys: ["e"] });
  for (let i = 0; i < 10_000; i++) hub.changed(`k${i}`);
  assert.equal(watcher.pending, 0);
  assert.deepEqual(watcher.take(10), { reset: true });
});

Deno.test("the state replaced resets every range watcher; noteApplied feeds the hub", () => {
  const hub = hubOf();
  const watcher = hub.watchRange("a", "b")!;
  const keyWatcher = hub.watch(["a1"])!;
  keyWatcher.take();
  hub.noteApplied({ kind: "instance", applied: { mutations: [{ key: "a1" }, { key: "z" }] } });
  assert.deepEqual(watcher.take(10), { reset: false, keys: ["a1"] });
  assert.equal(keyWatcher.dirty, true);
  hub.noteApplied({ kind: "replaced" });
  assert.deepEqual(watcher.take(10), { reset: true });
});

Deno.test("one bound counts watchers of both kinds; closing frees a place and wakes a waiter", async () => {
  const hub = hubOf(2);
  const ranged = hub.watchRange("a", "b")!;
  const keyed = hub.watch(["k"])!;
  assert.equal(hub.size, 2);
  assert.equal(hub.watchRange("c", "d"), undefined);
  assert.equal(hub.watch(["x"]), undefined);
  const waiting = ranged.next();
  ranged.close();
  await waiting;
  ranged.close();
  assert.equal(hub.size, 1, "closed once, counted once");
  hub.changed("a1");
  assert.equal(ranged.dirty, false, "a closed watcher hears nothing");
  const again = hub.watchRange("a", "b")!;
  const woken = again.next();
  hub.changed("a2");
  await woken;
  assert.deepEqual(again.take(5), { reset: false, keys: ["a2"] });
  keyed.close();
  again.close();
  assert.equal(hub.size, 0);
});
