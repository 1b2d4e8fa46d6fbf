/**
 * TTL on the curl API (src/server/ttl.ts): `PUT /kv/KEY?ttl=` through the
 * app on an in-process cluster, `Kv-Expires` on GET, HEAD and list items,
 * the key gone on every replica after it expired, and `parseTtl`'s table.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/server/app.ts";
import { formatExpiry, MAX_TTL_MS, MIN_TTL_MS, parseTtl } from "../../src/server/ttl.ts";
import { waitFor } from "./cluster_helpers.ts";
import { TEST_SECRET, withClusterApp } from "./app_helpers.ts";

Deno.test("parseTtl: seconds, minutes, hours, plain seconds; 1 s to 365 days; a message otherwise", () => {
  const table: [string, number | RegExp][] = [
    ["30s", 30_000],
    ["30", 30_000],
    ["1s", MIN_TTL_MS],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["8760h", MAX_TTL_MS],
    ["31536000", MAX_TTL_MS],
    [" 45s ", 45_000],
    ["0", /from 1s to 365 days/],
    ["0s", /from 1s to 365 days/],
    ["8761h", /got 8761h/],
    ["31536001s", /365 days/],
    ["1.5s", /whole number/],
    ["-5s", /whole number/],
    ["5d", /whole number/],
    ["5ms", /whole number/],
    ["", /whole number/],
    ["s", /whole number/],
    ["9999999999999h", /whole number/],
  ];
  for (const [text, expected] of table) {
    const parsed = parseTtl(text);
    if (typeof expected === "number") {
      assert.deepEqual(parsed, { ms: expected }, text);
    } else {
      assert.ok("problem" in parsed, text);
      assert.match(parsed.problem, expected, text);
    }
  }
});

Deno.test("PUT ?ttl= sets the expiry: Kv-Expires on PUT, GET, HEAD and 304, expiresAt in lists; answered at commit", async () => {
  await withClusterApp(async ({ app, node }) => {
    const before = node.wallClockMs();
    const atCommit = node.metrics.commandsAnsweredAtCommit;
    const put = await app.request("/kv/session?ttl=1h", { method: "PUT", body: "token" });
    assert.equal(put.status, 200);
    assert.equal(node.metrics.commandsAnsweredAtCommit, atCommit + 1, "a blind write with a TTL");
    const answer = await put.json();
    const expires = put.headers.get("kv-expires")!;
    assert.equal(answer.expiresAt, expires);
    const at = Date.parse(expires);
    assert.ok(at >= before + 3_600_000 && at <= node.wallClockMs() + 3_600_000 + 1, expires);
    // Within a second of the wall clock: the process's clock origin is right.
    assert.ok(Math.abs(at - 3_600_000 - Date.now()) < 1000, `${expires} vs now ${Date.now()}`);
    assert.match(expires, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const get = await app.request("/kv/session");
    assert.equal(await get.text(), "token");
    assert.equal(get.headers.get("kv-expires"), expires);
    const head = await app.request("/kv/session", { method: "HEAD" });
    assert.equal(head.headers.get("kv-expires"), expires);
    const unchanged = await app.request("/kv/session", {
      headers: { "if-none-match": `"${answer.version}"` },
    });
    assert.equal(unchanged.status, 304);
    assert.equal(unchanged.headers.get("kv-expires"), expires);
    await app.request("/kv/settled", { method: "PUT", body: "x" });
    const plain = await app.request("/kv/settled");
    assert.equal(plain.headers.get("kv-expires"), null, "no TTL, no header");
    const page = await (await app.request("/kv")).json();
    assert.deepEqual(page.items.map((item: { expiresAt?: string }) => item.expiresAt), [
      expires,
      undefined,
    ]);
    // A rewrite without a TTL clears it; a compare-and-set may set one.
    const rewrite = await app.request("/kv/session", { method: "PUT", body: "again" });
    assert.equal(rewrite.headers.get("kv-expires"), null);
    assert.equal((await rewrite.json()).expiresAt, undefined);
    assert.equal((await app.request("/kv/session")).headers.get("kv-expires"), null);
    const cas = await app.request("/kv/session?ttl=30m", {
      method: "PUT",
      body: "cas",
      headers: { "if-match": put.headers.get("etag")! },
    });
    assert.equal(cas.status, 412, "the old version is gone");
    const created = await app.request("/kv/fresh?ttl=30m", {
      method: "PUT",
      body: "new",
      headers: { "if-none-match": "*" },
    });
    assert.equal(created.status, 200);
    assert.equal(
      formatExpiry(node.state.read("fresh")!.expiresAt!),
      created.headers.get("kv-expires"),
    );
  });
});

Deno.test("a bad ttl is a 400 with the rule, and writes nothing", async () => {
  await withClusterApp(async ({ app, node }) => {
    for (const ttl of ["0", "1.5s", "400d", "9000h", "soon", ""]) {
      const refused = await app.request(`/kv/k?ttl=${encodeURIComponent(ttl)}`, {
        method: "PUT",
        body: "v",
      });
      assert.equal(refused.status, 400, ttl);
      assert.match((await refused.json()).error, /ttl must be a whole number/, ttl);
    }
    assert.equal(node.metrics.commandsProposed, 0);
    assert.equal((await app.request("/kv/k")).status, 404);
  });
});

Deno.test("a key put with ttl=1s is gone from every replica soon after; /status and /metrics count it", async () => {
  await withClusterApp(async ({ app, cluster }) => {
    const put = await app.request("/kv/brief?ttl=1s", { method: "PUT", body: "v" });
    assert.equal(put.status, 200);
    const expiresAt = Date.parse(put.headers.get("kv-expires")!);
    await app.request("/kv/lasting?ttl=1h", { method: "PUT", body: "v" });
    await waitFor(
      () => cluster.nodes.every((node) => node.state.read("brief") === undefined),
      10_000,
      "the expired key gone everywhere",
    );
    // Scan interval + commit latency with every replica up (src/driver/expiry.ts).
    assert.ok(Date.now() - expiresAt < 2500, `gone ${Date.now() - expiresAt} ms after expiry`);
    assert.equal((await app.request("/kv/brief")).status, 404);
    assert.equal((await app.request("/kv/lasting")).status, 200);
    const deleted = cluster.nodes.reduce((sum, node) => sum + node.expiryStatus().keysDeleted, 0);
    assert.equal(deleted, 1);
    const owner = cluster.nodes.findIndex((node) => node.expiryStatus().keysDeleted === 1);
    const ownerApp = createApp({ node: cluster.nodes[owner]!, replicas: 3, secret: TEST_SECRET });
    const status = await (await ownerApp.request("/status")).json();
    assert.deepEqual(status.expiry, {
      commandsProposed: 1,
      keysProposed: 1,
      keysDeleted: 1,
      commandsFailed: 0,
      inFlight: false,
    });
    const metrics = await (await ownerApp.request("/metrics")).text();
    assert.match(metrics, /^epaxos_expire_commands_total\{outcome="proposed"\} 1$/m);
    assert.match(metrics, /^epaxos_expired_keys_total\{outcome="deleted"\} 1$/m);
  });
});
