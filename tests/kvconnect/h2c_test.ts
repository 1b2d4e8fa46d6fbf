/**
 * Deno's KV client speaks HTTP/2 only, cleartext from the first byte over
 * `http://` (prior knowledge, no upgrade): the replica's listener, Deno.serve
 * as src/cli/replica.ts runs it, must answer that. Checked with Deno's own
 * HTTP client restricted to HTTP/2, and against a server that speaks only
 * HTTP/1.1, which that client cannot use.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/server/app.ts";
import { freePorts } from "../../src/chaos/process_cluster.ts";
import { startTestCluster } from "../server/cluster_helpers.ts";

Deno.test("the replica's listener answers cleartext HTTP/2 with prior knowledge", async () => {
  const cluster = await startTestCluster(3);
  const [port] = freePorts(1);
  const app = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: "test-secret-0123456789" });
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, app.fetch);
  const client = Deno.createHttpClient({ http1: false, http2: true });
  try {
    const response = await fetch(`http://127.0.0.1:${port}/livez`, { client });
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok\n");
  } finally {
    client.close();
    await server.shutdown();
    await cluster.stop();
  }
});

Deno.test("an HTTP/2-only client cannot use a server that speaks only HTTP/1.1 (the check can fail)", async () => {
  const [port] = freePorts(1);
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const serving = (async () => {
    for await (const connection of listener) {
      const buffer = new Uint8Array(1024);
      await connection.read(buffer).catch(() => null);
      await connection.write(
        new TextEncoder().encode(
          "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
        ),
      ).catch(() => 0);
      connection.close();
    }
  })();
  const client = Deno.createHttpClient({ http1: false, http2: true });
  try {
    await assert.rejects(fetch(`http://127.0.0.1:${port}/livez`, { client }));
  } finally {
    client.close();
    listener.close();
    await serving.catch(() => {});
  }
});
