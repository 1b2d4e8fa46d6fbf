import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import { MAX_VALUE_BYTES } from "../../src/kv/commands.ts";
import { createApp } from "../../src/server/app.ts";
import { encodeBatch } from "../../src/transport/codec.ts";
import { PEER_BATCH_PATH } from "../../src/transport/http.ts";
import { startTestCluster, waitFor } from "./cluster_helpers.ts";

const SECRET = "test-secret-0123456789";

async function withApp(
  body: (
    app: Awaited<ReturnType<typeof createApp>>,
    cluster: Awaited<ReturnType<typeof startTestCluster>>,
  ) => Promise<void>,
  options: { clientToken?: string } = {},
) {
  const cluster = await startTestCluster(3);
  try {
    const app = createApp({
      node: cluster.nodes[0]!,
      replicas: 3,
      secret: SECRET,
      ...options,
    });
    await body(app, cluster);
  } finally {
    await cluster.stop();
  }
}

Deno.test("put, get, delete and list behave as documented", async () => {
  await withApp(async (app) => {
    const put = await app.request("/kv/greeting", { method: "PUT", body: "hello" });
    assert.equal(put.status, 200);
    const { key, version } = await put.json();
    assert.equal(key, "greeting");
    assert.equal(put.headers.get("etag"), `"${version}"`);

    const get = await app.request("/kv/greeting");
    assert.equal(get.status, 200);
    assert.equal(await get.text(), "hello");
    assert.equal(get.headers.get("etag"), `"${version}"`);
    assert.equal(get.headers.get("kv-version"), version);

    const local = await app.request("/kv/greeting?consistency=local");
    assert.equal(await local.text(), "hello");

    await app.request("/kv/green", { method: "PUT", body: "tea" });
    await app.request("/kv/blue", { method: "PUT", body: new Uint8Array([0xff, 0x00]) });
    const list = await app.request("/kv?prefix=gr");
    const page = await list.json();
    assert.deepEqual(page.items.map((item: { key: string }) => item.key), ["green", "greeting"]);
    assert.equal(page.cursor, null);
    const paged = await (await app.request("/kv?limit=1")).json();
    assert.equal(paged.items.length, 1);
    assert.equal(paged.items[0].key, "blue");
    assert.equal(paged.items[0].valueBase64, "/wA=");
    assert.equal(paged.cursor, "blue");
    const next = await (await app.request(`/kv?limit=1&cursor=${paged.cursor}`)).json();
    assert.equal(next.items[0].key, "green");

    const deleted = await app.request("/kv/greeting", { method: "DELETE" });
    assert.equal(deleted.status, 204);
    const again = await app.request("/kv/greeting", { method: "DELETE" });
    assert.equal(again.status, 204, "delete is idempotent");
    const missing = await app.request("/kv/greeting");
    assert.equal(missing.status, 404);
    assert.match((await missing.json()).error, /not found/);
  });
});

Deno.test("compare-and-set with If-Match and If-None-Match answers 412 with the current ETag", async () => {
  await withApp(async (app) => {
    const created = await app.request("/kv/doc", {
      method: "PUT",
      body: "v1",
      headers: { "if-none-match": "*" },
    });
    assert.equal(created.status, 200);
    const first = (await created.json()).version;
    const again = await app.request("/kv/doc", {
      method: "PUT",
      body: "v1b",
      headers: { "if-none-match": "*" },
    });
    assert.equal(again.status, 412);
    assert.equal(again.headers.get("etag"), `"${first}"`);
    assert.equal((await again.json()).current, first);

    const updated = await app.request("/kv/doc", {
      method: "PUT",
      body: "v2",
      headers: { "if-match": `"${first}"` },
    });
    assert.equal(updated.status, 200);
    const second = (await updated.json()).version;
    const stale = await app.request("/kv/doc", {
      method: "PUT",
      body: "v3",
      headers: { "if-match": `"${first}"` },
    });
    assert.equal(stale.status, 412);
    assert.equal(stale.headers.get("etag"), `"${second}"`);

    const viaQuery = await app.request(`/kv/doc?cas=${second}`, { method: "PUT", body: "v4" });
    assert.equal(viaQuery.status, 200);

    const staleDelete = await app.request("/kv/doc", {
      method: "DELETE",
      headers: { "if-match": `"${first}"` },
    });
    assert.equal(staleDelete.status, 412);
    assert.equal(await (await app.request("/kv/doc")).text(), "v4");
  });
});

Deno.test("bad client requests get a 4xx with a message and change nothing", async () => {
  await withApp(async (app, cluster) => {
    const node = cluster.nodes[0]!;
    const before = node.metrics.commandsProposed;
    const tooLarge = await app.request("/kv/big", {
      method: "PUT",
      body: new Uint8Array(MAX_VALUE_BYTES + 1),
    });
    assert.equal(tooLarge.status, 413);
    assert.match((await tooLarge.json()).error, /larger than/);
    const longKey = await app.request(`/kv/${"k".repeat(1100)}`, { method: "PUT", body: "x" });
    assert.equal(longKey.status, 414);
    const badEscape = await app.request("/kv/%E0%A4%A", { method: "PUT", body: "x" });
    assert.equal(badEscape.status, 400);
    const badCondition = await app.request("/kv/x", {
      method: "PUT",
      body: "x",
      headers: { "if-none-match": '"abc"' },
    });
    assert.equal(badCondition.status, 400);
    const badLimit = await app.request("/kv?limit=0");
    assert.equal(badLimit.status, 400);
    const badConsistency = await app.request("/kv/x?consistency=eventual");
    assert.equal(badConsistency.status, 400);
    const noRoute = await app.request("/nope");
    assert.equal(noRoute.status, 404);
    assert.equal(node.metrics.commandsProposed, before);
  });
});

Deno.test("the peer route refuses requests without the credential, from strangers, or malformed", async () => {
  await withApp(async (app, cluster) => {
    const node = cluster.nodes[0]!;
    const received = node.metrics.batchesReceived;
    const digest = node.state.digest;
    const batch = encodeBatch({
      from: 1,
      messages: [{ type: "nack", from: 1, to: 0, owner: 1, number: 1, ballot: 3 }],
    });
    const post = (body: Uint8Array, headers: Record<string, string> = {}) =>
      app.request(PEER_BATCH_PATH, {
        method: "POST",
        body: body as Uint8Array<ArrayBuffer>,
        headers,
      });
    assert.equal((await post(batch)).status, 401);
    assert.equal(
      (await post(batch, { authorization: "Bearer wrong-secret-0123456789" })).status,
      401,
    );
    const auth = { authorization: `Bearer ${SECRET}` };
    const stranger = encode({ v: 1, from: 7, messages: [] });
    assert.equal((await post(stranger, auth)).status, 403);
    assert.equal((await post(new Uint8Array([0xc1, 0x00]), auth)).status, 400);
    const wrongTarget = encodeBatch({
      from: 1,
      messages: [{ type: "nack", from: 1, to: 2, owner: 1, number: 1, ballot: 3 }],
    });
    assert.equal((await post(wrongTarget, auth)).status, 400);
    const badCommand = encode({
      v: 1,
      from: 1,
      messages: [{
        type: "preaccept",
        from: 1,
        to: 0,
        owner: 1,
        number: 1,
        command: [{ op: "put" }],
        deps: [0, 0, 0, 0],
      }],
    });
    const refused = await post(badCommand, auth);
    assert.equal(refused.status, 400);
    assert.match((await refused.json()).error, /Malformed preaccept/);
    assert.equal(node.metrics.batchesReceived, received, "nothing refused reached the replica");
    assert.equal(node.state.digest, digest);
    assert.equal((await post(batch, auth)).status, 204);
    assert.equal(node.metrics.batchesReceived, received + 1);
  });
});

Deno.test("the driver's errors are answered with their status: 503 with Retry-After, 504 with advice", async () => {
  const cluster = await startTestCluster(3, { contactWindowMs: 1000, requestTimeoutMs: 200 });
  try {
    const app = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: SECRET });
    const put = (key: string) => app.request(`/kv/${key}`, { method: "PUT", body: "v" });
    // Cut off, but still believing its peers reachable: proposes, cannot commit.
    cluster.network.setDown(0, true);
    const unknown = await put("a");
    assert.equal(unknown.status, 504);
    assert.equal(unknown.headers.get("retry-after"), null);
    assert.deepEqual(await unknown.json(), {
      error:
        "The command was proposed but did not execute in time; read the key to learn whether it applied",
    });
    // Once the peers are considered unreachable: refused, nothing proposed.
    await waitFor(() => !cluster.nodes[0]!.quorumReachable(), 5000, "the quorum to be lost");
    const refused = await put("b");
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.deepEqual(await refused.json(), { error: "No quorum of replicas is reachable" });
  } finally {
    await cluster.stop();
  }
});

Deno.test("a configured client token guards the client routes but not the peer or health routes", async () => {
  await withApp(async (app) => {
    assert.equal((await app.request("/kv/x")).status, 401);
    const ok = await app.request("/kv/x", {
      method: "PUT",
      body: "y",
      headers: { authorization: "Bearer client-token-0123456" },
    });
    assert.equal(ok.status, 200);
    assert.equal((await app.request("/livez")).status, 200);
  }, { clientToken: "client-token-0123456" });
});

Deno.test("operations routes report readiness, status and Prometheus metrics", async () => {
  await withApp(async (app) => {
    await app.request("/kv/a", { method: "PUT", body: "1" });
    assert.equal((await app.request("/livez")).status, 200);
    assert.equal((await app.request("/readyz")).status, 200);
    const status = await (await app.request("/status")).json();
    assert.equal(status.id, 0);
    assert.equal(status.peers.length, 2);
    assert.ok(status.commits.fast + status.commits.slow >= 1);
    assert.match(status.stateDigest, /^\d+:[0-9a-f]{8}$/);
    const metrics = await (await app.request("/metrics")).text();
    assert.match(metrics, /^# TYPE epaxos_proposals_committed_total counter$/m);
    assert.match(metrics, /^epaxos_proposals_committed_total\{path="fast"\} \d+$/m);
    assert.match(metrics, /^epaxos_storage_commit_duration_seconds_bucket\{le="\+Inf"\} \d+$/m);
  });
});
