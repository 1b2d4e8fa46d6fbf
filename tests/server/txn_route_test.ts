/**
 * `POST /txn` (src/server/txn_route.ts, src/server/txn_body.ts) through the
 * app on an in-process cluster: all or nothing, 412 naming each failed
 * check, 400 for bad input with nothing proposed, 413 past the body bound,
 * 504 when the outcome is unknown, the client token; and the body's table.
 */

import assert from "node:assert/strict";
import { MAX_VALUE_BYTES } from "../../src/kv/curl_keys.ts";
import { failedChecks, MAX_TXN_BODY_BYTES, txnCommandOf } from "../../src/server/txn_body.ts";
import { waitFor } from "./cluster_helpers.ts";
import { withClusterApp } from "./app_helpers.ts";

const TOKEN = "client-token-0123456";

function txn(body: unknown, headers: Record<string, string> = {}): RequestInit {
  return {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "content-type": "application/json", ...headers },
  };
}

Deno.test("txnCommandOf: the body's forms, and a 400 message for each mistake", () => {
  const now = 1_000_000;
  const ok = txnCommandOf({
    checks: [{ key: "a", version: "3.1.0" }, { key: "b", absent: true }],
    ops: [
      { op: "put", key: "a", value: "text" },
      { op: "put", key: "c", valueBase64: "AAE=", ttl: "30s" },
      { op: "delete", key: "b" },
    ],
  }, now);
  assert.deepEqual(ok, {
    command: {
      op: "atomic",
      checks: [{ key: "a", version: "3.1.0" }, { key: "b", version: null }],
      mutations: [
        { kind: "set", key: "a", value: new TextEncoder().encode("text") },
        { kind: "set", key: "c", value: new Uint8Array([0, 1]), expiresAt: now + 30_000 },
        { kind: "delete", key: "b" },
      ],
    },
  });
  assert.ok(
    "command" in txnCommandOf({ ops: [{ op: "delete", key: "x" }] }, now),
    "checks optional",
  );
  const big = "x".repeat(MAX_VALUE_BYTES + 1);
  const table: [unknown, RegExp][] = [
    [[], /JSON object/],
    [null, /JSON object/],
    [{ ops: [] }, /at least one operation/],
    [{ checks: [] }, /at least one operation/],
    [{ check: [], ops: [{ op: "delete", key: "x" }] }, /Unknown field "check"/],
    [{ checks: {}, ops: [{ op: "delete", key: "x" }] }, /"checks" must be a list/],
    [{ ops: [{ op: "get", key: "x" }] }, /ops\[0\]: "op" must be "put" or "delete"/],
    [{ ops: [{ op: "put", key: "x" }] }, /exactly one of "value"/],
    [{ ops: [{ op: "put", key: "x", value: "a", valueBase64: "YQ==" }] }, /exactly one/],
    [{ ops: [{ op: "put", key: "x", value: 5 }] }, /"value" must be a string/],
    [{ ops: [{ op: "put", key: "x", valueBase64: "%%%" }] }, /not base64/],
    [{ ops: [{ op: "put", key: "x", value: big }] }, /larger than/],
    [{ ops: [{ op: "put", key: "x", valueBase64: btoa(big) }] }, /larger than/],
    [{ ops: [{ op: "put", key: "x", value: "v", ttl: "0s" }] }, /ops\[0\]: ttl must be/],
    [{ ops: [{ op: "put", key: "x", value: "v", ttl: true }] }, /"ttl" must be text/],
    [{ ops: [{ op: "put", key: "x", value: "v", expires: 5 }] }, /unknown field "expires"/],
    [{ ops: [{ op: "delete", key: "x", value: "v" }] }, /unknown field "value" for a delete/],
    [{ ops: [{ op: "delete", key: "" }] }, /ops\[0\]: Key must not be empty/],
    [{ ops: [{ op: "delete", key: 7 }] }, /key must be a string/],
    [{ ops: [{ op: "delete", key: "k".repeat(1025) }] }, /longer than 1024 bytes/],
    [{ ops: [{ op: "delete", key: "\ufffedb" }] }, /U\+FFFE/],
    [{ checks: [{ key: "a" }], ops: [{ op: "delete", key: "x" }] }, /checks\[0\]: "version"/],
    [
      { checks: [{ key: "a", version: "1.0.0", absent: true }], ops: [{ op: "delete", key: "x" }] },
      /either "version" or "absent": true/,
    ],
    [{ checks: [{ key: "a", absent: false }], ops: [{ op: "delete", key: "x" }] }, /either/],
    [
      { checks: [{ key: "a", version: "v".repeat(300) }], ops: [{ op: "delete", key: "x" }] },
      /Check version is empty or too long/,
    ],
    [
      { checks: Array(101).fill({ key: "a", absent: true }), ops: [{ op: "delete", key: "x" }] },
      /Too many checks: 101 \(max 100\)/,
    ],
    [{ ops: Array(1001).fill({ op: "delete", key: "x" }) }, /Too many ops: 1001 \(max 1000\)/],
    [
      // 14 values of 60 KiB: past the command's 800 KiB in all.
      {
        ops: Array.from(
          { length: 14 },
          (_, i) => ({ op: "put", key: `k${i}`, value: big.slice(1) }),
        ),
      },
      /Total mutation size too large/,
    ],
  ];
  for (const [body, expected] of table) {
    const parsed = txnCommandOf(body, now);
    assert.ok("problem" in parsed, JSON.stringify(body).slice(0, 80));
    assert.match(parsed.problem, expected, JSON.stringify(body).slice(0, 80));
  }
});

Deno.test("failedChecks names each failed check with the version it wanted and the current one", () => {
  assert.deepEqual(
    failedChecks([{ key: "a", version: "1.0.0" }, { key: "b", version: null }, {
      key: "c",
      version: "2.0.0",
    }], ["1.0.0", "3.0.0", null]),
    [
      { key: "b", expected: null, current: "3.0.0" },
      { key: "c", expected: "2.0.0", current: null },
    ],
  );
});

Deno.test("POST /txn: checks then ops, all or nothing; 412 names each failed check and applies nothing", async () => {
  await withClusterApp(async ({ app, cluster }) => {
    const a = await (await app.request("/kv/a", { method: "PUT", body: "1" })).json();
    await app.request("/kv/b", { method: "PUT", body: "2" });
    const done = await app.request(
      "/txn",
      txn({
        checks: [{ key: "a", version: a.version }, { key: "c", absent: true }],
        ops: [
          { op: "put", key: "a", value: "text" },
          { op: "put", key: "c", valueBase64: "AAE=", ttl: "30s" },
          { op: "delete", key: "b" },
        ],
      }),
    );
    assert.equal(done.status, 200);
    const { ok, version } = await done.json();
    assert.equal(ok, true);
    const getA = await app.request("/kv/a");
    assert.equal(await getA.text(), "text");
    assert.equal(getA.headers.get("kv-version"), version, "every written key has the version");
    const getC = await app.request("/kv/c");
    assert.deepEqual(new Uint8Array(await getC.arrayBuffer()), new Uint8Array([0, 1]));
    assert.equal(getC.headers.get("kv-version"), version);
    assert.ok(getC.headers.get("kv-expires") !== null, "the op's ttl");
    assert.equal((await app.request("/kv/b")).status, 404);
    // Executed the same on every replica.
    await waitFor(
      () => cluster.nodes.every((peer) => peer.state.read("a")?.version === version),
      5000,
      "the transaction at every replica",
    );

    // Two checks fail, one holds: 412, each failed one named, nothing applied.
    const failed = await app.request(
      "/txn",
      txn({
        checks: [
          { key: "a", version: a.version },
          { key: "c", version: version },
          { key: "c", absent: true },
        ],
        ops: [{ op: "put", key: "d", value: "never" }, { op: "delete", key: "a" }],
      }),
    );
    assert.equal(failed.status, 412);
    const refusal = await failed.json();
    assert.equal(refusal.ok, false);
    assert.match(refusal.error, /2 of 3 checks did not hold; nothing was applied/);
    assert.deepEqual(refusal.failed, [
      { key: "a", expected: a.version, current: version },
      { key: "c", expected: null, current: version },
    ]);
    assert.equal((await app.request("/kv/d")).status, 404);
    assert.equal(await (await app.request("/kv/a")).text(), "text");

    // Ops apply in order: a put then a delete of one key leaves it absent.
    const ordered = await app.request(
      "/txn",
      txn({ ops: [{ op: "put", key: "e", value: "x" }, { op: "delete", key: "e" }] }),
    );
    assert.equal(ordered.status, 200);
    assert.equal((await app.request("/kv/e")).status, 404);
  });
});

Deno.test("POST /txn: bad input is a 400 (or 413) with a message and proposes nothing", async () => {
  await withClusterApp(async ({ app, node }) => {
    const bad = [
      ["{not json", /not JSON/],
      [JSON.stringify({ ops: [{ op: "put", key: "x" }] }), /exactly one of "value"/],
      [JSON.stringify({ ops: Array(1001).fill({ op: "delete", key: "x" }) }), /Too many ops/],
    ] as const;
    for (const [body, expected] of bad) {
      const answer = await app.request("/txn", txn(body));
      assert.equal(answer.status, 400, body.slice(0, 40));
      assert.match((await answer.json()).error, expected);
    }
    const huge = await app.request("/txn", txn(" ".repeat(MAX_TXN_BODY_BYTES + 1)));
    assert.equal(huge.status, 413);
    assert.match((await huge.json()).error, /larger than/);
    assert.equal(node.metrics.commandsProposed, 0);
    const wrong = await app.request("/txn");
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get("allow"), "POST");
  });
});

Deno.test("POST /txn: an unknown outcome is the curl API's 504; with a client token it needs the token", async () => {
  await withClusterApp(async ({ app, cluster }) => {
    const body = { ops: [{ op: "put", key: "t", value: "v" }] };
    const refused = await app.request("/txn", txn(body));
    assert.equal(refused.status, 401);
    assert.equal(cluster.nodes[0]!.metrics.commandsProposed, 0);
    const auth = { authorization: `Bearer ${TOKEN}` };
    assert.equal((await app.request("/txn", txn(body, auth))).status, 200);
    // Cut off, still believing its peers reachable: proposed, never executed.
    cluster.network.setDown(0, true);
    const unknown = await app.request("/txn", txn(body, auth));
    assert.equal(unknown.status, 504);
    assert.match((await unknown.json()).error, /did not execute in time; read the key/);
  }, { nodes: { requestTimeoutMs: 200 }, app: { clientToken: TOKEN } });
});
