/**
 * Watch on the curl API through a real HTTP server (Deno.serve, as the
 * replica runs it) on an in-process cluster: `GET /watch` server-sent events
 * of a key and of a prefix (snapshot, put and delete events, keep-alives, a
 * reset for a reader that fell behind), blocking reads `GET /kv/K?index=&wait=`,
 * the shared bound on watchers, places freed when a client goes away, and
 * the client token.
 */

import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { WatchSchema } from "../../src/kvconnect/gen/datapath_pb.ts";
import { freePorts, waitUntil } from "../../src/chaos/process_cluster.ts";
import { createApp } from "../../src/server/app.ts";
import { startTestCluster, type TestCluster } from "./cluster_helpers.ts";

const SECRET = "test-secret-0123456789";
const TOKEN = "client-token-0123456";

interface Served {
  readonly cluster: TestCluster;
  readonly base: string;
  /** Writes through replica 1 (another replica than the one watched). */
  put(key: string, value: string, query?: string): Promise<string>;
  del(key: string): Promise<void>;
  /** Watchers open at replica 0 (its /status). */
  watchers(): Promise<number>;
  /** Fetches `path` at replica 0 as an event stream, cancelled at the end of the test. */
  events(path: string, init?: RequestInit): Promise<EventReader>;
}

async function withServer(
  body: (served: Served) => Promise<void>,
  options: { maxWatchers?: number; clientToken?: string } = {},
): Promise<void> {
  const cluster = await startTestCluster(3);
  const [port] = freePorts(1);
  const app = createApp({
    node: cluster.nodes[0]!,
    replicas: 3,
    secret: SECRET,
    watchKeepAliveMs: 300,
    ...options,
  });
  const other = createApp({ node: cluster.nodes[1]!, replicas: 3, secret: SECRET, ...options });
  const auth: Record<string, string> = options.clientToken === undefined
    ? {}
    : { authorization: `Bearer ${options.clientToken}` };
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, app.fetch);
  const opened: EventReader[] = [];
  try {
    await body({
      cluster,
      base: `http://127.0.0.1:${port}`,
      async put(key, value, query = "") {
        const answer = await other.request(`/kv/${key}${query}`, {
          method: "PUT",
          body: value,
          headers: auth,
        });
        assert.equal(answer.status, 200);
        return (await answer.json()).version;
      },
      async del(key) {
        const answer = await other.request(`/kv/${key}`, { method: "DELETE", headers: auth });
        assert.equal(answer.status, 204);
      },
      async watchers() {
        // `/status` follows the client credentials (src/server/access.ts).
        return (await (await app.request("/status", { headers: auth })).json()).watchers.open;
      },
      async events(path, init) {
        const response = await fetch(`http://127.0.0.1:${port}${path}`, init);
        assert.equal(response.status, 200);
        const reader = new EventReader(response);
        opened.push(reader);
        return reader;
      },
    });
  } finally {
    // An open stream never ends by itself: the server would wait for it.
    await Promise.all(opened.map((reader) => reader.cancel().catch(() => {})));
    await server.shutdown();
    await cluster.stop();
  }
}

interface SseEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
}

/** Reads a `text/event-stream` body: events and comments, in order. */
class EventReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  #buffer = "";
  /** The read in flight: kept across a timeout, so that no chunk is lost. */
  #reading: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
  /** Comments seen (keep-alives). */
  comments = 0;

  /** The response's header fields. */
  readonly headers: Headers;

  constructor(response: Response) {
    this.headers = response.headers;
    this.#reader = response.body!.getReader();
  }

  /** The next event (skipping comments), failing after `deadlineMs`. */
  async next(deadlineMs = 5000): Promise<SseEvent> {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        if (block.startsWith(":")) {
          this.comments++;
          continue;
        }
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
        const data = /^data: (.*)$/m.exec(block)?.[1] ?? "null";
        return { event, data: JSON.parse(data) };
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error("No event in time");
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.#reading ??= this.#reader.read();
      const read = await Promise.race([
        this.#reading,
        new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), remaining)),
      ]);
      clearTimeout(timer);
      if (read === "late") throw new Error("No event in time");
      this.#reading = undefined;
      if (read.done) throw new Error("The stream ended");
      this.#buffer += this.#decoder.decode(read.value, { stream: true });
    }
  }

  /** Waits for a keep-alive comment. */
  async keepAlive(deadlineMs = 3000): Promise<void> {
    const seen = this.comments;
    const deadline = Date.now() + deadlineMs;
    while (this.comments === seen) {
      if (Date.now() > deadline) throw new Error("No keep-alive in time");
      // Consumes the comment and waits for an event that never comes, briefly.
      await this.next(200).catch(() => {});
    }
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }
}

Deno.test({
  name: "GET /watch?prefix=: a snapshot first, then a put or delete event per change, keep-alives",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withServer(async ({ put, del, watchers, events: open }) => {
      const a = await put("app/a", "1");
      await put("app/b", "2", "?ttl=1h");
      await put("other", "x");
      const events = await open("/watch?prefix=app/");
      assert.equal(events.headers.get("content-type"), "text/event-stream; charset=utf-8");
      assert.equal(events.headers.get("cache-control"), "no-cache");
      const snapshot = await events.next();
      assert.equal(snapshot.event, "snapshot");
      assert.equal(snapshot.data.truncated, false);
      const items = snapshot.data.items as Record<string, unknown>[];
      assert.deepEqual(items.map((item) => [item.key, item.value]), [["app/a", "1"], [
        "app/b",
        "2",
      ]]);
      assert.equal(items[0]!.version, a);
      assert.match(String(items[1]!.expiresAt), /Z$/);
      assert.equal(await watchers(), 1);

      await put("other", "y");
      const c = await put("app/c", "3");
      const created = await events.next();
      assert.deepEqual(created, {
        event: "put",
        data: { key: "app/c", value: "3", version: c },
      }, "the unrelated key made no event");
      await del("app/a");
      assert.deepEqual(await events.next(), { event: "delete", data: { key: "app/a" } });
      await events.keepAlive();
    });
  },
});

Deno.test({
  name: "GET /watch?key=: the key's state, then its changes; a client that leaves frees its place",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withServer(async ({ put, del, watchers, events: open }) => {
      const controller = new AbortController();
      const events = await open("/watch?key=cfg", { signal: controller.signal });
      assert.deepEqual(await events.next(), {
        event: "snapshot",
        data: { items: [], truncated: false },
      });
      await put("cfg2", "not this one");
      const v1 = await put("cfg", "on");
      assert.deepEqual(await events.next(), {
        event: "put",
        data: { key: "cfg", value: "on", version: v1 },
      });
      await del("cfg");
      assert.deepEqual(await events.next(), { event: "delete", data: { key: "cfg" } });
      assert.equal(await watchers(), 1);
      controller.abort();
      await waitUntil(async () => await watchers() === 0, {
        deadlineMs: 5000,
        what: "the watcher was not freed",
      });
    });
  },
});

Deno.test({
  name: "GET /watch: a reader that falls behind gets each key once, and past the bound a reset",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startTestCluster(3);
    try {
      const node = cluster.nodes[0]!;
      const app = createApp({ node, replicas: 3, secret: SECRET });
      const txn = (ops: unknown[]) =>
        app.request("/txn", { method: "POST", body: JSON.stringify({ ops }) });
      // Through the app, without a socket: nothing pulls the body until
      // it is read, the slowest client there is.
      const slow = await app.request("/watch?prefix=n/");
      const coalesced = await app.request("/watch?prefix=n/");
      const put = (key: string, value: string) => ({ op: "put", key, value });
      // 600 keys, each written 3 times, then deleted for half of them.
      for (let round = 0; round < 3; round++) {
        const keys = Array.from({ length: 600 }, (_, i) => put(`n/${i}`, `r${round}`));
        assert.equal((await txn(keys)).status, 200);
      }
      const deletes = Array.from({ length: 300 }, (_, i) => ({ op: "delete", key: `n/${i}` }));
      assert.equal((await txn(deletes)).status, 200);
      const behind = new EventReader(coalesced);
      assert.equal((await behind.next()).event, "snapshot");
      const seen = new Map<string, SseEvent>();
      while (seen.size < 600) {
        const event = await behind.next();
        assert.ok(!seen.has(String(event.data.key)), `key ${event.data.key} once`);
        seen.set(String(event.data.key), event);
      }
      assert.deepEqual(seen.get("n/0"), { event: "delete", data: { key: "n/0" } });
      assert.equal(seen.get("n/599")!.data.value, "r2", "the latest value");
      await behind.cancel();

      // 1100 more keys changed: past the bound of 1000 held keys.
      const more = Array.from({ length: 550 }, (_, i) => put(`n/x${i}`, "v"));
      assert.equal((await txn(more)).status, 200);
      assert.equal((await txn(more.map((op) => ({ ...op, key: `${op.key}y` })))).status, 200);
      const events = new EventReader(slow);
      assert.equal((await events.next()).event, "snapshot");
      const reset = await events.next();
      assert.equal(reset.event, "reset");
      assert.equal((reset.data.items as unknown[]).length, 1000);
      assert.equal(reset.data.truncated, true, "1400 keys under the prefix");
      await events.cancel();
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "blocking reads: answer when the version differs from index, or after wait",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withServer(async ({ base, put }) => {
      const v1 = await put("flag", "1");
      // Differs already: at once.
      const stale = await fetch(`${base}/kv/flag?index=0.0.0&wait=10s`);
      assert.equal(await stale.text(), "1");
      assert.equal(stale.headers.get("kv-version"), v1);
      // Same version, nothing changes: after the wait, the same answer.
      let started = Date.now();
      const quiet = await fetch(`${base}/kv/flag?index=${v1}&wait=300ms`);
      assert.ok(Date.now() - started >= 290, `waited ${Date.now() - started} ms`);
      assert.equal(quiet.status, 200);
      assert.equal(quiet.headers.get("kv-version"), v1);
      await quiet.body?.cancel();
      // A write elsewhere ends the wait with the new value.
      started = Date.now();
      const waiting = fetch(`${base}/kv/flag?index=${v1}&wait=30s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const v2 = await put("flag", "2");
      const changed = await waiting;
      assert.ok(Date.now() - started < 5000);
      assert.equal(await changed.text(), "2");
      assert.equal(changed.headers.get("kv-version"), v2);
      // A missing key: index=absent waits for it to be created.
      const creation = fetch(`${base}/kv/new?index=absent&wait=30s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await put("new", "here");
      assert.equal(await (await creation).text(), "here");
      const gone = await fetch(`${base}/kv/missing?index=absent&wait=200ms`);
      assert.equal(gone.status, 404);
      await gone.body?.cancel();
      // Bad input.
      for (
        const [query, message] of [
          ["wait=5s", /wait needs index/],
          ["index=&wait=5s", /index must be a version/],
          ["index=1.0.0&wait=soon", /wait must be a whole number/],
          ["index=1.0.0&wait=0", /wait must be/],
        ] as const
      ) {
        const refused = await fetch(`${base}/kv/flag?${query}`);
        assert.equal(refused.status, 400, query);
        assert.match((await refused.json()).error, message, query);
      }
    });
  },
});

Deno.test({
  name:
    "watches, streams and blocking reads share one bound with KV Connect's; the client token guards them",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withServer(async ({ base, put, watchers }) => {
      const auth = { authorization: `Bearer ${TOKEN}` };
      for (const path of ["/watch?key=a", "/kv/a?index=absent&wait=1s"]) {
        const refused = await fetch(`${base}${path}`);
        assert.equal(refused.status, 401, path);
        await refused.body?.cancel();
      }
      const bad = await fetch(`${base}/watch?key=a&prefix=b`, { headers: auth });
      assert.equal(bad.status, 400);
      assert.match((await bad.json()).error, /exactly one of key= .* or prefix=/);
      const v = await put("a", "1");
      const controller = new AbortController();
      const blocked = fetch(`${base}/kv/a?index=${v}&wait=30s`, {
        headers: auth,
        signal: controller.signal,
      }).catch(() => undefined);
      await waitUntil(async () => await watchers() === 1, {
        deadlineMs: 5000,
        what: "the blocking read holds no watcher",
      });
      const full = await fetch(`${base}/watch?prefix=`, { headers: auth });
      assert.equal(full.status, 503);
      assert.equal(full.headers.get("retry-after"), "5");
      const fullRead = await fetch(`${base}/kv/a?index=${v}&wait=1s`, { headers: auth });
      assert.equal(fullRead.status, 503);
      assert.match((await fullRead.json()).error, /serves 1 watches already/);
      // Deno KV's watch (KV Connect) counts against the same bound.
      const metadata = await (await fetch(`${base}/databases/w/connect`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({ supportedVersions: [3] }),
      })).json();
      const kvWatch = await fetch(`${base}${metadata.endpoints[0].url}/watch`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${metadata.token}`,
          "x-denokv-version": "3",
          "x-denokv-database-id": metadata.databaseId,
        },
        body: toBinary(WatchSchema, create(WatchSchema, { keys: [{ key: new Uint8Array([1]) }] })),
      });
      assert.equal(kvWatch.status, 503);
      await kvWatch.body?.cancel();
      // The client of the blocking read goes away: its place is freed.
      controller.abort();
      await blocked;
      await waitUntil(async () => await watchers() === 0, {
        deadlineMs: 5000,
        what: "the blocking read's watcher was not freed",
      });
      const open = await fetch(`${base}/watch?prefix=`, { headers: auth });
      assert.equal(open.status, 200);
      await open.body?.cancel();
    }, { maxWatchers: 1, clientToken: TOKEN });
  },
});
