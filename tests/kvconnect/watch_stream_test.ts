import assert from "node:assert/strict";
import { WatchHub } from "../../src/kv/watch_hub.ts";
import type { KvEntry } from "../../src/kv/state_machine.ts";
import { watchStream } from "../../src/kvconnect/watch_stream.ts";
import { waitFor } from "../wait.ts";

Deno.test("a watch stream sends the first state, changes, keep-alives, and closes its watcher on cancel", async () => {
  const state = new Map<string, KvEntry>();
  const hub = new WatchHub({ read: (key) => state.get(key) });
  const watcher = hub.watch(["k"])!;
  // A frame here is the versions of the changed keys, as text.
  const stream = watchStream(
    watcher,
    (keys) =>
      new TextEncoder().encode(
        keys.filter((key) => key.changed).map((key) => key.entry?.version ?? "-").join(","),
      ),
    { keepAliveMs: 50 },
  );
  const reader = stream.getReader();
  const text = async () => new TextDecoder().decode((await reader.read()).value);
  assert.equal(await text(), "-", "the first frame reports the key, absent");
  const started = Date.now();
  assert.equal(await text(), "\0\0\0\0", "a keep-alive frame when nothing changed");
  assert.ok(Date.now() - started >= 40);
  state.set("k", { value: new Uint8Array(0), version: "v1" });
  hub.changed("k");
  state.set("k", { value: new Uint8Array(0), version: "v2" });
  hub.changed("k");
  assert.equal(await text(), "v2", "changes collapse into the latest state");
  await reader.cancel();
  await waitFor(() => hub.size === 0, 1000, "the watcher to close");
  assert.equal(watcher.closed, true);
});
