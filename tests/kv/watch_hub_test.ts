import assert from "node:assert/strict";
import { WatchHub } from "../../src/kv/watch_hub.ts";
import type { KvEntry } from "../../src/kv/state_machine.ts";

function stateAndHub(maxWatchers?: number) {
  const state = new Map<string, KvEntry>();
  const hub = new WatchHub({
    read: (key) => state.get(key),
    ...(maxWatchers === undefined ? {} : { maxWatchers }),
  });
  const write = (key: string, version: string) => {
    state.set(key, { value: new Uint8Array([1]), version });
    hub.changed(key);
  };
  return { state, hub, write };
}

Deno.test("a watcher's first take reports every key, then only keys whose version changed", () => {
  const { hub, write } = stateAndHub();
  write("a", "1");
  const watcher = hub.watch(["a", "b"])!;
  assert.equal(watcher.dirty, true);
  const first = watcher.take()!;
  assert.deepEqual(first.map((key) => key.changed), [true, true]);
  assert.equal(first[0]!.entry?.version, "1");
  assert.equal(first[1]!.entry, undefined);
  assert.equal(watcher.dirty, false);
  write("c", "2");
  assert.equal(watcher.dirty, false, "an unwatched key does not make it dirty");
  write("b", "3");
  assert.equal(watcher.dirty, true);
  assert.deepEqual(watcher.take()!.map((key) => key.changed), [false, true]);
  // Dirty without a new version (the whole state replaced by the same): nothing to send.
  hub.changedAll();
  assert.equal(watcher.dirty, true);
  assert.equal(watcher.take(), undefined);
});

Deno.test("a watcher that falls behind holds a flag, not the values in between", () => {
  const { hub, write } = stateAndHub();
  const watcher = hub.watch(["k"])!;
  watcher.take();
  for (let i = 0; i < 1000; i++) write("k", String(i));
  const taken = watcher.take()!;
  assert.equal(taken[0]!.entry?.version, "999");
  assert.equal(watcher.take(), undefined);
});

Deno.test("next() resolves when a watched key changes or the watcher closes", async () => {
  const { hub, write } = stateAndHub();
  const watcher = hub.watch(["k"])!;
  await watcher.next(); // dirty at once
  watcher.take();
  let woke = false;
  const waiting = watcher.next().then(() => woke = true);
  await Promise.resolve();
  assert.equal(woke, false);
  write("k", "1");
  await waiting;
  assert.equal(woke, true);
  watcher.take();
  const closing = watcher.next();
  watcher.close();
  await closing;
  assert.equal(watcher.closed, true);
});

Deno.test("the hub bounds its watchers and forgets closed ones", () => {
  const { hub, write } = stateAndHub(2);
  const one = hub.watch(["a", "a"])!;
  const two = hub.watch(["b"])!;
  assert.equal(hub.watch(["c"]), undefined, "a third watcher is refused");
  assert.equal(hub.size, 2);
  one.close();
  one.close();
  assert.equal(hub.size, 1);
  one.take();
  write("a", "1");
  assert.equal(one.dirty, false, "a closed watcher hears nothing more");
  assert.ok(hub.watch(["c"]) !== undefined);
  two.close();
  assert.throws(() => hub.watch([]), RangeError);
  assert.throws(() => hub.watch(Array.from({ length: 11 }, (_, i) => String(i))), RangeError);
});
