/**
 * A watch of several keys through Deno's own client keeps the value of a
 * key that did not change when another one does. Deno 2.9's client reads a
 * key reported `changed: false` as deleted (its `WatchEntry::Unchanged` is an
 * untagged serde variant, which reaches JavaScript as `null`, not the
 * `"unchanged"` its `watch` looks for), so the server reports every key with
 * its entry in every frame, as denokv's does; the client drops repeats by
 * versionstamp.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { kvConnectRoute } from "../../src/kvconnect/routes.ts";
import { freePorts } from "../../src/chaos/process_cluster.ts";
import { startTestCluster } from "../server/cluster_helpers.ts";

Deno.env.set("DENO_KV_ACCESS_TOKEN", "any-token-at-all");

/** The next frame of `reader` whose entries' versionstamps are not `seen`'s. */
async function nextFrame(
  reader: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]>,
  seen: (string | null)[],
): Promise<Deno.KvEntryMaybe<unknown>[]> {
  for (let frames = 0; frames < 100; frames++) {
    const frame = (await reader.read()).value!;
    const stamps = frame.map((entry) => entry.versionstamp);
    if (stamps.some((stamp, i) => stamp !== seen[i])) return frame;
  }
  throw new Error("No changed frame in 100");
}

Deno.test({
  name: "watch of two keys: a write of one keeps the other's value (Deno's client)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startTestCluster(3);
    const [port] = freePorts(1);
    const app = new Hono().route(
      "/databases",
      kvConnectRoute({ node: cluster.nodes[0]!, secret: "test-secret-0123456789" }),
    );
    const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, app.fetch);
    const kv = await Deno.openKv(`http://127.0.0.1:${port}/databases/w2/connect`);
    try {
      const a = await kv.set(["a"], "first");
      const reader = kv.watch([["a"], ["b"]]).getReader();
      let frame: Deno.KvEntryMaybe<unknown>[] = (await reader.read()).value!;
      assert.deepEqual(frame.map((entry) => entry.value), ["first", null]);

      // Only b changes: a keeps its value and versionstamp.
      const b = await kv.set(["b"], "second");
      frame = await nextFrame(reader, [a.versionstamp, null]);
      assert.deepEqual(frame.map((entry) => [entry.value, entry.versionstamp]), [
        ["first", a.versionstamp],
        ["second", b.versionstamp],
      ]);

      // Only a changes: b keeps its value.
      const a2 = await kv.set(["a"], "third");
      frame = await nextFrame(reader, [a.versionstamp, b.versionstamp]);
      assert.deepEqual(frame.map((entry) => [entry.value, entry.versionstamp]), [
        ["third", a2.versionstamp],
        ["second", b.versionstamp],
      ]);

      // A delete still reads as one.
      await kv.delete(["b"]);
      frame = await nextFrame(reader, [a2.versionstamp, b.versionstamp]);
      assert.deepEqual(frame.map((entry) => entry.value), ["third", null]);
      await reader.cancel();
    } finally {
      kv.close();
      await server.shutdown();
      await cluster.stop();
    }
  },
});
