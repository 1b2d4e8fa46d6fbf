import assert from "node:assert/strict";
import {
  ClientRequestError,
  KvClient,
  KvClientError,
  KvError,
  normalizeServerUrl,
  OutcomeUnknownError,
  PreconditionFailedError,
  UnavailableError,
} from "../../src/client/mod.ts";
import { MAX_VALUE_BYTES } from "../../src/kv/commands.ts";
import { deadServerUrl, type ServedCluster, startServedCluster, waitFor } from "./helpers.ts";

async function withCluster(
  body: (cluster: ServedCluster) => Promise<void>,
  options: Parameters<typeof startServedCluster>[0] = {},
): Promise<void> {
  const cluster = await startServedCluster(options);
  try {
    await body(cluster);
  } finally {
    await cluster.stop();
  }
}

const bytes = (...values: number[]) => new Uint8Array(values);

Deno.test("put, get, delete and list round-trip text, binary values and awkward keys", async () => {
  await withCluster(async ({ urls }) => {
    const kv = new KvClient({ servers: urls });
    const { version } = await kv.put("greeting", "hello");
    assert.match(version, /^\d+\.\d+\.\d+$/);
    const entry = await kv.get("greeting");
    assert.ok(entry !== undefined);
    assert.equal(entry.key, "greeting");
    assert.equal(entry.text(), "hello");
    assert.deepEqual(entry.value, new TextEncoder().encode("hello"));
    assert.equal(entry.version, version);

    const binary = bytes(0xff, 0x00, 0xef, 0xbb, 0xbf, 0x0a);
    await kv.put("binary", binary);
    assert.deepEqual((await kv.get("binary"))?.value, binary);
    await kv.put("empty", new Uint8Array());
    assert.equal((await kv.get("empty"))?.value.length, 0);

    // Keys are one path segment whatever they contain: slashes, escapes, query and fragment characters.
    const awkward = [
      "a/b/c",
      "100%",
      "%2F",
      "sp ace+plus",
      "q?x=1&y",
      "frag#ment",
      "ünïcødé €",
      "a..b",
      "/",
    ];
    for (const key of awkward) {
      const written = await kv.put(key, `value of ${key}`);
      const read = await kv.get(key);
      assert.equal(read?.text(), `value of ${key}`, key);
      assert.equal(read?.version, written.version, key);
    }
    const listed = await kv.list({ limit: 1000 });
    for (const key of awkward) assert.ok(listed.items.some((item) => item.key === key), key);
    // "." and ".." would be resolved away by any URL parser: refused before sending.
    await assert.rejects(kv.put(".", "x"), RangeError);
    await assert.rejects(kv.get(".."), RangeError);

    await kv.delete("greeting");
    assert.equal(await kv.get("greeting"), undefined, "a missing key reads as undefined");
    await kv.delete("greeting"); // idempotent
    assert.equal(await kv.get("never-written"), undefined);
  });
});

Deno.test("local reads answer from a replica's executed state", async () => {
  await withCluster(async ({ urls, nodes }) => {
    const kv = new KvClient({ servers: urls });
    const { version } = await kv.put("k", "v");
    // Each replica executes the committed put on its own schedule: wait until it has.
    await waitFor(
      () => nodes.every((node) => node.state.read("k") !== undefined),
      5000,
      "execution everywhere",
    );
    for (const server of urls) {
      const entry = await kv.get("k", { consistency: "local", server });
      assert.equal(entry?.text(), "v");
      assert.equal(entry?.version, version);
      const page = await kv.list({ consistency: "local", server });
      assert.deepEqual(page.items.map((item) => item.key), ["k"]);
    }
    assert.equal(await kv.get("missing", { consistency: "local" }), undefined);
  });
});

Deno.test("compare-and-set and compare-and-delete throw PreconditionFailedError with the current version", async () => {
  await withCluster(async ({ urls }) => {
    const kv = new KvClient({ servers: urls });
    const first = await kv.put("doc", "v1", { ifAbsent: true });
    await assert.rejects(kv.put("doc", "other", { ifAbsent: true }), (error) => {
      assert.ok(error instanceof PreconditionFailedError);
      assert.equal(error.current, first.version);
      assert.equal(error.status, 412);
      assert.match(error.message, /Precondition failed/);
      return true;
    });
    const second = await kv.put("doc", "v2", { ifVersion: first.version });
    assert.notEqual(second.version, first.version);
    await assert.rejects(kv.put("doc", "v3", { ifVersion: first.version }), (error) => {
      assert.ok(error instanceof PreconditionFailedError);
      assert.equal(error.current, second.version);
      return true;
    });
    await assert.rejects(kv.delete("doc", { ifVersion: first.version }), (error) => {
      assert.ok(error instanceof PreconditionFailedError);
      assert.equal(error.current, second.version);
      return true;
    });
    assert.equal((await kv.get("doc"))?.text(), "v2", "failed conditions changed nothing");
    await kv.delete("doc", { ifVersion: second.version });
    assert.equal(await kv.get("doc"), undefined);
    await assert.rejects(kv.put("doc", "v4", { ifVersion: second.version }), (error) => {
      assert.ok(error instanceof PreconditionFailedError);
      assert.equal(error.current, null, "a missing key has no current version");
      return true;
    });
    await assert.rejects(kv.put("doc", "x", { ifVersion: "1.0.0", ifAbsent: true }), TypeError);
  });
});

Deno.test("other refusals throw ClientRequestError with the status and the server's message", async () => {
  await withCluster(async ({ urls, nodes }) => {
    const kv = new KvClient({ servers: urls });
    const proposed = nodes[0]!.metrics.commandsProposed;
    await assert.rejects(kv.put("big", new Uint8Array(MAX_VALUE_BYTES + 1)), (error) => {
      assert.ok(error instanceof ClientRequestError);
      assert.equal(error.status, 413);
      assert.match(error.message, /Value is larger than 61440 bytes/);
      assert.equal(error.server, urls[0]);
      return true;
    });
    await kv.put("just-fits", new Uint8Array(MAX_VALUE_BYTES));
    await assert.rejects(kv.get("k".repeat(1025)), (error) => {
      assert.ok(error instanceof ClientRequestError);
      assert.equal(error.status, 414);
      assert.match(error.message, /Key is longer than 1024 bytes/);
      return true;
    });
    await assert.rejects(kv.put("", "x"), (error) => {
      assert.ok(error instanceof ClientRequestError);
      assert.equal(error.status, 400);
      assert.match(error.message, /Key must not be empty/);
      return true;
    });
    await assert.rejects(kv.list({ limit: 0 }), (error) => {
      assert.ok(error instanceof ClientRequestError);
      assert.equal(error.status, 400);
      assert.match(error.message, /limit must be an integer/);
      return true;
    });
    assert.equal(
      nodes[0]!.metrics.commandsProposed,
      proposed + 1,
      "only the put that fits was proposed",
    );
  });
});

Deno.test("a client token is sent as a bearer token, and its absence is a 401 ClientRequestError", async () => {
  await withCluster(async ({ urls }) => {
    await assert.rejects(new KvClient({ servers: urls }).get("k"), (error) => {
      assert.ok(error instanceof ClientRequestError);
      assert.equal(error.status, 401);
      assert.match(error.message, /needs the client token/);
      return true;
    });
    await assert.rejects(
      new KvClient({ servers: urls, token: "wrong-token-0123456" }).put("k", "v"),
      {
        name: "ClientRequestError",
      },
    );
    const kv = new KvClient({ servers: urls, token: "client-token-0123456" });
    await kv.put("k", "v");
    assert.equal((await kv.get("k"))?.text(), "v");
  }, { clientToken: "client-token-0123456" });
});

Deno.test("pages and entries follow cursors across pages", async () => {
  await withCluster(async ({ urls }) => {
    const kv = new KvClient({ servers: urls, strategy: "round-robin" });
    const keys = Array.from({ length: 25 }, (_, i) => `item/${String(i).padStart(2, "0")}`);
    await Promise.all(keys.map((key) => kv.put(key, `v-${key}`)));
    await kv.put("other", "not listed");

    const first = await kv.list({ prefix: "item/", limit: 7 });
    assert.equal(first.items.length, 7);
    assert.equal(first.cursor, "item/06");
    const second = await kv.list({ prefix: "item/", limit: 7, cursor: first.cursor! });
    assert.equal(second.items[0]!.key, "item/07");

    const pages = [];
    for await (const page of kv.pages({ prefix: "item/", limit: 7 })) pages.push(page);
    assert.deepEqual(pages.map((page) => page.items.length), [7, 7, 7, 4]);
    assert.equal(pages.at(-1)!.cursor, null);

    const seen = [];
    for await (const entry of kv.entries({ prefix: "item/", limit: 7 })) {
      assert.equal(entry.text(), `v-${entry.key}`);
      seen.push(entry.key);
    }
    assert.deepEqual(seen, keys);
    const exact = [];
    for await (const page of kv.pages({ prefix: "item/", limit: 5 })) exact.push(page.items.length);
    assert.deepEqual(
      exact,
      [5, 5, 5, 5, 5],
      "an exact multiple ends on the page whose cursor is null",
    );
    const none = [];
    for await (const entry of kv.entries({ prefix: "nothing/" })) none.push(entry);
    assert.deepEqual(none, []);
  });
});

Deno.test("a 503 from a replica without a quorum is retried on another replica", async () => {
  await withCluster(async ({ urls, nodes, network }) => {
    network.setDown(0, true);
    await waitFor(() => !nodes[0]!.quorumReachable(), 5000, "replica 0 to lose its quorum");
    const refusedBefore = nodes[0]!.metrics.requestsRefused;

    // Pinned to the partitioned replica: the 503 surfaces, with the server's reason and Retry-After.
    const pinned = new KvClient({ servers: urls });
    await assert.rejects(pinned.put("k", "v", { server: urls[0] }), (error) => {
      assert.ok(error instanceof UnavailableError);
      assert.equal(error.status, 503);
      assert.equal(error.answerStatus, 503);
      assert.equal(error.server, urls[0]);
      assert.equal(error.retryAfterSeconds, 1);
      assert.equal(error.attempts, 1);
      assert.match(error.message, /No quorum of replicas is reachable/);
      return true;
    });

    // Failing over: the first replica refuses, the second takes the write.
    const kv = new KvClient({ servers: urls, strategy: "first" });
    const { version } = await kv.put("k", "v");
    assert.equal(nodes[0]!.metrics.requestsRefused, refusedBefore + 2);
    assert.equal((await kv.get("k", { server: urls[1] }))?.version, version);
    // The refusing replica is now tried last, for a while: no further refusals.
    await kv.put("k2", "v2");
    assert.equal(nodes[0]!.metrics.requestsRefused, refusedBefore + 2);

    // Only the partitioned replica: every attempt is refused, with capped waits in between.
    const alone = new KvClient({ servers: urls[0]!, retries: 2, maxRetryDelayMs: 30 });
    const started = performance.now();
    await assert.rejects(alone.get("k"), (error) => {
      assert.ok(error instanceof UnavailableError);
      assert.equal(error.attempts, 3);
      assert.match(error.message, /^No quorum of replicas is reachable \(3 attempts\)$/);
      return true;
    });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 55, `waited between attempts (${elapsed} ms)`);
    assert.ok(elapsed < 1000, `the Retry-After of 1 s was capped (${elapsed} ms)`);
    assert.equal(nodes[0]!.metrics.requestsRefused, refusedBefore + 5);
    network.setDown(0, false);
  }, { contactWindowMs: 300 });
});

Deno.test("a replica that cannot be connected to is skipped, and none reachable is UnavailableError", async () => {
  await withCluster(async ({ urls }) => {
    const dead = deadServerUrl();
    const kv = new KvClient({ servers: [dead, urls[1]!] });
    const { version } = await kv.put("k", "v");
    assert.equal((await kv.get("k"))?.version, version);
    const status = await kv.status();
    assert.equal(status.id, 1);

    const nothing = new KvClient({ servers: [dead, deadServerUrl()], maxRetryDelayMs: 10 });
    await assert.rejects(nothing.put("k", "v"), (error) => {
      assert.ok(error instanceof UnavailableError);
      assert.equal(error.status, 503, "unavailable, whether or not a replica answered");
      assert.equal(error.answerStatus, undefined, "no replica answered");
      assert.match(
        error.message,
        /^No replica took the request in 3 attempts: http:.*: Cannot connect: .*; http:.*: Cannot connect/,
      );
      return true;
    });
  });
});

Deno.test("a 504 or a client timeout is OutcomeUnknownError and is never retried elsewhere", async () => {
  await withCluster(async ({ urls, nodes, network }) => {
    // Replica 0 is cut off but still believes its peers reachable (contact
    // window 3 s): it proposes, and cannot commit.
    network.setDown(0, true);
    assert.ok(nodes[0]!.quorumReachable());
    const proposedElsewhere = nodes[1]!.metrics.commandsProposed +
      nodes[2]!.metrics.commandsProposed;
    const kv = new KvClient({ servers: urls, strategy: "first" });
    await assert.rejects(kv.put("k", "v"), (error) => {
      assert.ok(error instanceof OutcomeUnknownError);
      assert.equal(error.status, 504);
      assert.equal(error.answerStatus, 504);
      assert.equal(error.server, urls[0]);
      assert.match(error.message, /did not execute in time/);
      return true;
    });
    await assert.rejects(kv.put("k", "v2", { ifVersion: "1.0.0" }), (error) => {
      assert.ok(error instanceof OutcomeUnknownError);
      return true;
    });

    // The client gives up before the server does: also unknown, also not retried.
    const impatient = new KvClient({ servers: urls, timeoutMs: 100 });
    await assert.rejects(impatient.delete("k"), (error) => {
      assert.ok(error instanceof OutcomeUnknownError);
      assert.equal(error.status, 504, "unknown, whether or not a replica answered");
      assert.equal(error.answerStatus, undefined, "no replica answered");
      assert.match(
        error.message,
        /No answer within 100 ms; the request may or may not have taken effect/,
      );
      return true;
    });
    assert.equal(
      nodes[1]!.metrics.commandsProposed + nodes[2]!.metrics.commandsProposed,
      proposedElsewhere,
      "nothing was retried on another replica",
    );
    assert.ok(nodes[0]!.metrics.requestsTimedOut >= 2, "replica 0 answered 504 twice");
    network.setDown(0, false);
  }, { requestTimeoutMs: 300 });
});

Deno.test("strategies spread requests: round-robin visits every replica in turn", async () => {
  await withCluster(async ({ urls, nodes }) => {
    const before = nodes.map((node) => node.metrics.commandsProposed);
    const kv = new KvClient({ servers: urls, strategy: "round-robin" });
    for (let i = 0; i < 6; i++) await kv.put(`rr${i}`, "x");
    assert.deepEqual(nodes.map((node, id) => node.metrics.commandsProposed - before[id]!), [
      2,
      2,
      2,
    ]);
    const random = new KvClient({ servers: urls.join(","), strategy: "random" });
    for (let i = 0; i < 6; i++) await random.put(`rnd${i}`, "x");
    assert.equal(
      nodes.reduce((sum, node, id) => sum + node.metrics.commandsProposed - before[id]!, 0),
      12,
    );
  });
});

Deno.test("status reports a replica's /status", async () => {
  await withCluster(async ({ urls }) => {
    const kv = new KvClient({ servers: urls });
    await kv.put("a", "1");
    for (const [id, server] of urls.entries()) {
      const status = await kv.status(server);
      assert.equal(status.id, id);
      assert.equal(status.name, `replica-${id}`);
      assert.equal(status.replicas, 3);
      assert.equal(status.peers.length, 2);
      assert.equal(typeof status.ready, "boolean");
      assert.match(status.stateDigest, /^\d+:[0-9a-f]{8}$/);
    }
    assert.equal((await kv.status()).id, 0);
  });
});

Deno.test("the constructor validates and normalizes its options", () => {
  assert.equal(normalizeServerUrl("127.0.0.1:8001/"), "http://127.0.0.1:8001");
  assert.equal(normalizeServerUrl(" https://kv.example/base// "), "https://kv.example/base");
  const kv = new KvClient({ servers: "http://a:1, http://b:2/,http://a:1" });
  assert.deepEqual(kv.servers, ["http://a:1", "http://b:2"]);
  assert.throws(() => new KvClient({ servers: [] }), TypeError);
  assert.throws(() => new KvClient({ servers: " , " }), TypeError);
  assert.throws(() => new KvClient({ servers: "ftp://a" }), TypeError);
  assert.throws(() => new KvClient({ servers: "http://a?x=1" }), TypeError);
  assert.throws(() => new KvClient({ servers: "http://a", timeoutMs: 0 }), RangeError);
  assert.throws(() => new KvClient({ servers: "http://a", retries: -1 }), RangeError);
  assert.throws(() => new KvClient({ servers: "http://a", retries: 1.5 }), RangeError);
  assert.throws(
    () => new KvClient({ servers: "http://a", strategy: "fastest" as "first" }),
    RangeError,
  );
  assert.ok(new PreconditionFailedError("x", null) instanceof KvClientError);
  assert.ok(new OutcomeUnknownError("x") instanceof KvClientError);
  assert.ok(new UnavailableError("x", { attempts: 1 }) instanceof KvClientError);
  assert.equal(new ClientRequestError("x", 400).status, 400);
});

Deno.test("the client throws the classes a replica throws, each with its status as a type", () => {
  // One vocabulary: the client's names are the classes of src/errors.ts.
  assert.equal(KvClientError, KvError);
  const unavailable = new UnavailableError("x");
  assert.ok(unavailable instanceof KvClientError);
  assert.equal(unavailable.status, 503);
  assert.equal(unavailable.attempts, 1);
  assert.equal(unavailable.retryAfterSeconds, undefined);
  assert.equal(new OutcomeUnknownError("x").status, 504);
  const failed = new PreconditionFailedError("x", "1.0.0", {
    server: "http://a",
    answerStatus: 412,
  });
  assert.equal(failed.status, 412);
  assert.equal(failed.current, "1.0.0");
  assert.equal(failed.server, "http://a");
  const refused = new ClientRequestError("x", 413);
  assert.equal(refused.status, 413);
  assert.equal(refused.name, "ClientRequestError");
});
