/**
 * KV Connect's watch on a replica's listener (in process, Deno.serve as the
 * replica runs it): Deno's own client sees the first state and later
 * writes; a bound on watchers answers 503 before anything starts; a client
 * that goes away frees its place.
 */

import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { Hono } from "hono";
import { WatchSchema } from "../../src/kvconnect/gen/datapath_pb.ts";
import { kvConnectRoute } from "../../src/kvconnect/routes.ts";
import { freePorts } from "../../src/chaos/process_cluster.ts";
import { startTestCluster, waitFor } from "../server/cluster_helpers.ts";

Deno.env.set("DENO_KV_ACCESS_TOKEN", "any-token-at-all");

Deno.test({
  name: "watch: first state, later writes, a bound on watchers, and places freed on cancel",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startTestCluster(3);
    const [port] = freePorts(1);
    const app = new Hono().route(
      "/databases",
      kvConnectRoute({
        node: cluster.nodes[0]!,
        secret: "test-secret-0123456789",
        maxWatchers: 1,
        watchKeepAliveMs: 100,
      }),
    );
    const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, app.fetch);
    const url = `http://127.0.0.1:${port}/databases/w/connect`;
    const kv = await Deno.openKv(url);
    try {
      const reader = kv.watch([["a"], ["b"]]).getReader();
      assert.deepEqual((await reader.read()).value!.map((entry) => entry.versionstamp), [
        null,
        null,
      ]);
      const written = await kv.set(["a"], 1);
      let frame = (await reader.read()).value!;
      while (frame[0]!.versionstamp === null) frame = (await reader.read()).value!;
      assert.equal(frame[0]!.versionstamp, written.versionstamp);
      assert.equal(frame[0]!.value, 1);

      // A second watch is refused while the first holds the only place.
      const metadata = await (await fetch(url, {
        method: "POST",
        headers: { authorization: "Bearer t" },
        body: JSON.stringify({ supportedVersions: [3] }),
      })).json();
      const watchRaw = () =>
        fetch(`http://127.0.0.1:${port}${metadata.endpoints[0].url}/watch`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${metadata.token}`,
            "x-denokv-version": "3",
            "x-denokv-database-id": metadata.databaseId,
          },
          body: toBinary(
            WatchSchema,
            create(WatchSchema, { keys: [{ key: new Uint8Array([1]) }] }),
          ),
        });
      const refused = await watchRaw();
      assert.equal(refused.status, 503);
      assert.ok(refused.headers.get("retry-after") !== null);
      await refused.body?.cancel();

      // Once the client cancels, its place is free again.
      await reader.cancel();
      let accepted: Response | undefined;
      let asking = false;
      await waitFor(
        () => {
          if (accepted === undefined && !asking) {
            asking = true;
            watchRaw().then(async (response) => {
              if (response.status === 200) accepted = response;
              else await response.body?.cancel();
              asking = false;
            });
          }
          return accepted !== undefined;
        },
        10_000,
        "the cancelled watch's place to be freed",
        50,
      );
      const body = accepted!.body!.getReader();
      const first = await body.read();
      assert.ok(first.value!.length > 4, "the first frame reports the key");
      await body.cancel();
    } finally {
      kv.close();
      await server.shutdown();
      await cluster.stop();
    }
  },
});
