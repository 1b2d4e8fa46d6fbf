/**
 * Named client tokens through the app of every replica of an in-process
 * cluster: added through one replica's admin route, enforced by every
 * replica once it executed the command; 401 and 403 with what was refused
 * on the curl API, KV Connect and the operations pages; the client token
 * still all-powerful; enforcement on with the first token and off after the
 * last; tokens kept across a restart.
 */

import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import type { Hono } from "hono";
import {
  AtomicWriteSchema,
  MutationType,
  SnapshotReadSchema,
  ValueEncoding,
} from "../../src/kvconnect/gen/datapath_pb.ts";
import { createApp } from "../../src/server/app.ts";
import { tokenKey } from "../../src/kv/token_keys.ts";
import { startTestCluster, type TestCluster, waitFor } from "./cluster_helpers.ts";

const SECRET = "test-secret-0123456789";
const CLIENT_TOKEN = "client-token-0123456";

interface Apps {
  readonly cluster: TestCluster;
  /** The app of each replica. */
  readonly apps: Hono[];
}

async function withApps(
  body: (served: Apps) => Promise<void>,
  options: { readonly clientToken?: string } = {},
): Promise<void> {
  const cluster = await startTestCluster(3);
  try {
    const appOf = (id: number) =>
      createApp({ node: cluster.nodes[id]!, replicas: 3, secret: SECRET, ...options });
    await body({ cluster, apps: [0, 1, 2].map(appOf) });
  } finally {
    await cluster.stop();
  }
}

function admin(app: Hono, method: string, path: string, body?: unknown): Promise<Response> {
  return Promise.resolve(app.request(`/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  }));
}

/** Adds a token through `app`'s admin route and resolves with its secret. */
async function addToken(app: Hono, body: Record<string, unknown>): Promise<string> {
  const response = await admin(app, "POST", "/tokens", body);
  const answer = await response.json();
  assert.equal(response.status, 201, JSON.stringify(answer));
  assert.match(answer.token, /^ekv_[A-Za-z0-9_-]{43}$/);
  return answer.token;
}

/** Waits until every replica executed the token `name`'s addition (or removal, `present` false). */
function executedEverywhere(cluster: TestCluster, name: string, present = true): Promise<void> {
  return waitFor(
    () => cluster.nodes.every((node) => (node.state.tokens.byName(name) !== undefined) === present),
    5000,
    `every replica to have executed the token ${name}`,
  );
}

function request(
  app: Hono,
  method: string,
  path: string,
  token?: string,
  body?: string,
): Promise<Response> {
  return Promise.resolve(app.request(path, {
    method,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    ...(body === undefined ? {} : { body }),
  }));
}

async function status(response: Response): Promise<number> {
  await response.body?.cancel();
  return response.status;
}

Deno.test("an open cluster stays open until the first named token, and is open again after the last", async () => {
  await withApps(async ({ cluster, apps }) => {
    assert.equal(await status(await request(apps[1]!, "PUT", "/kv/a", undefined, "1")), 200);
    assert.equal(await status(await request(apps[1]!, "GET", "/status")), 200);
    const token = await addToken(apps[0]!, {
      name: "reader",
      prefixes: [{ prefix: "", access: "read" }],
    });
    await executedEverywhere(cluster, "reader");
    for (const app of apps) {
      const refused = await request(app, "GET", "/kv/a");
      assert.equal(refused.status, 401);
      assert.equal(refused.headers.get("www-authenticate"), 'Bearer realm="epaxos-kv"');
      assert.deepEqual(await refused.json(), {
        error: "This route needs a named token (Authorization: Bearer <token>)",
      });
      const wrong = await request(app, "GET", "/kv/a", "ekv_not-a-token");
      assert.equal(wrong.status, 401);
      assert.match((await wrong.json()).error, /neither the client token nor a named token's/);
      assert.equal(await status(await request(app, "GET", "/kv/a", token)), 200);
      assert.equal(await status(await request(app, "GET", "/livez")), 200);
      assert.equal(await status(await request(app, "GET", "/readyz")), 200);
    }
    const removed = await admin(apps[2]!, "DELETE", "/tokens/reader");
    assert.deepEqual(await removed.json(), { name: "reader", removed: true });
    await executedEverywhere(cluster, "reader", false);
    for (const app of apps) {
      assert.equal(await status(await request(app, "PUT", "/kv/b", undefined, "2")), 200);
    }
  });
});

Deno.test("a read-only token: 200 on GET, 403 on PUT and DELETE naming what was refused, on every replica", async () => {
  await withApps(async ({ cluster, apps }) => {
    const writer = await addToken(apps[0]!, {
      name: "writer",
      prefixes: [{ prefix: "", access: "read-write" }],
    });
    const reader = await addToken(apps[0]!, {
      name: "reader",
      prefixes: [{ prefix: "", access: "read" }],
    });
    await executedEverywhere(cluster, "reader");
    assert.equal(
      await status(await request(apps[0]!, "PUT", "/kv/cfg%2Fmode", writer, "fast")),
      200,
    );
    for (const [id, app] of apps.entries()) {
      const read = await request(app, "GET", "/kv/cfg%2Fmode", reader);
      assert.equal(read.status, 200, `replica ${id}`);
      assert.equal(await read.text(), "fast");
      const put = await request(app, "PUT", "/kv/cfg%2Fmode", reader, "slow");
      assert.equal(put.status, 403, `replica ${id}`);
      assert.deepEqual(await put.json(), {
        error: 'Token "reader" may not PUT key "cfg/mode": it needs read-write, and it may only ' +
          'read under ""',
        token: "reader",
        method: "PUT",
        key: "cfg/mode",
        needed: "read-write",
      });
      const del = await request(app, "DELETE", "/kv/cfg%2Fmode", reader);
      assert.equal(del.status, 403);
      assert.equal((await del.json()).method, "DELETE");
    }
    assert.equal(cluster.nodes[0]!.state.read("cfg/mode")!.value.length, 4, "nothing written");
  });
});

Deno.test("a token scoped to app/: 403 outside it, lists only inside it, every key of a txn, watches", async () => {
  await withApps(async ({ cluster, apps }) => {
    const scoped = await addToken(apps[1]!, {
      name: "app",
      prefixes: [{ prefix: "app/", access: "read-write" }],
    });
    await executedEverywhere(cluster, "app");
    for (const [id, app] of apps.entries()) {
      assert.equal(await status(await request(app, "PUT", `/kv/app%2F${id}`, scoped, "v")), 200);
      const outside = await request(app, "PUT", "/kv/other", scoped, "v");
      assert.equal(outside.status, 403, `replica ${id}`);
      const body = await outside.json();
      assert.equal(body.key, "other");
      assert.equal(body.needed, "read-write");
      assert.match(body.error, /none of its prefixes covers key "other"/);
      assert.equal(await status(await request(app, "GET", "/kv/other", scoped)), 403);
    }
    const app = apps[2]!;
    // Lists: inside the granted prefix only.
    const inside = await request(app, "GET", "/kv?prefix=app%2F", scoped);
    assert.equal(inside.status, 200);
    assert.equal((await inside.json()).items.length, 3);
    for (const prefix of ["", "ap", "other/"]) {
      const refused = await request(app, "GET", `/kv?prefix=${encodeURIComponent(prefix)}`, scoped);
      assert.equal(refused.status, 403, prefix);
      const answer = await refused.json();
      assert.equal(answer.prefix, prefix);
      assert.equal(answer.needed, "read");
    }
    // A transaction: every key, the first refused named; nothing applied.
    const txn = (checks: unknown[], ops: unknown[]) =>
      request(app, "POST", "/txn", scoped, JSON.stringify({ checks, ops }));
    assert.equal(
      await status(
        await txn([{ key: "app/0", absent: true }], [{ op: "put", key: "app/x", value: "1" }]),
      ),
      412,
    );
    const mixed = await txn([], [
      { op: "put", key: "app/y", value: "1" },
      { op: "delete", key: "secret/z" },
    ]);
    assert.equal(mixed.status, 403);
    assert.deepEqual(
      [(await mixed.json()).key, cluster.nodes[2]!.state.read("app/y")],
      ["secret/z", undefined],
    );
    const check = await txn([{ key: "elsewhere", absent: true }], [{
      op: "put",
      key: "app/y",
      value: "1",
    }]);
    assert.equal(check.status, 403);
    assert.equal((await check.json()).needed, "read");
    // Watches and blocking reads need read.
    assert.equal(await status(await request(app, "GET", "/watch?key=other", scoped)), 403);
    assert.equal(await status(await request(app, "GET", "/watch?prefix=", scoped)), 403);
    assert.equal(await status(await request(app, "GET", "/kv/other?index=x&wait=1s", scoped)), 403);
    const watch = await request(app, "GET", "/watch?prefix=app%2F", scoped);
    assert.equal(watch.status, 200);
    await watch.body?.cancel();
  });
});

Deno.test("the client token stays all-powerful beside named tokens", async () => {
  await withApps(async ({ cluster, apps }) => {
    const scoped = await addToken(apps[0]!, {
      name: "app",
      prefixes: [{ prefix: "app/", access: "read" }],
    });
    await executedEverywhere(cluster, "app");
    for (const app of apps) {
      assert.equal(await status(await request(app, "PUT", "/kv/anything", CLIENT_TOKEN, "v")), 200);
      assert.equal(await status(await request(app, "GET", "/kv?prefix=", CLIENT_TOKEN)), 200);
      assert.equal(await status(await request(app, "GET", "/status", CLIENT_TOKEN)), 200);
      assert.equal(await status(await request(app, "PUT", "/kv/app%2Fx", scoped, "v")), 403);
      const refused = await request(app, "GET", "/kv/x");
      assert.equal(refused.status, 401);
      assert.deepEqual(await refused.json(), { error: "This route needs the client token" });
    }
  }, { clientToken: CLIENT_TOKEN });
});

Deno.test("/status and /metrics follow the credentials (a scrape token); /livez and /readyz stay open", async () => {
  await withApps(async ({ cluster, apps }) => {
    const scrape = await addToken(apps[0]!, { name: "prometheus", ops: true });
    const data = await addToken(apps[0]!, {
      name: "data",
      prefixes: [{ prefix: "", access: "read-write" }],
    });
    await executedEverywhere(cluster, "data");
    for (const app of apps) {
      for (const path of ["/status", "/metrics"]) {
        assert.equal(await status(await request(app, "GET", path)), 401, path);
        assert.equal(await status(await request(app, "GET", path, scrape)), 200, path);
        const refused = await request(app, "GET", path, data);
        assert.equal(refused.status, 403, path);
        assert.deepEqual(await refused.json(), {
          error: `Token "data" may not GET ${path}: it needs ops, and it holds no grant on the ` +
            "operations pages",
          token: "data",
          method: "GET",
          path,
          needed: "ops",
        });
      }
      assert.equal(await status(await request(app, "GET", "/kv/x", scrape)), 403);
      assert.equal(await status(await request(app, "GET", "/livez")), 200);
      assert.equal(await status(await request(app, "GET", "/readyz")), 200);
      // A wrong method is still a 405, guarded or not.
      assert.equal(await status(await request(app, "POST", "/status")), 405);
    }
  });
});

// --- KV Connect ----------------------------------------------------------------

const bytes = (text: string) => new TextEncoder().encode(text);

function readOf(key: string): Uint8Array {
  return toBinary(
    SnapshotReadSchema,
    create(SnapshotReadSchema, {
      ranges: [{ start: bytes(key), end: bytes(`${key}\0`), limit: 1 }],
    }),
  );
}

function setWrite(key: string, value: string): Uint8Array {
  return toBinary(
    AtomicWriteSchema,
    create(AtomicWriteSchema, {
      mutations: [{
        key: bytes(key),
        mutationType: MutationType.M_SET,
        value: { data: bytes(value), encoding: ValueEncoding.VE_BYTES },
      }],
    }),
  );
}

interface Session {
  readonly token: string;
  readonly databaseId: string;
}

async function connect(app: Hono, database: string, token: string): Promise<Session | Response> {
  const response = await app.request(`/databases/${database}/connect`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: JSON.stringify({ supportedVersions: [3] }),
  });
  if (response.status !== 200) return response;
  const metadata = await response.json();
  return { token: metadata.token, databaseId: metadata.databaseId };
}

function dataPath(
  app: Hono,
  database: string,
  session: Session,
  method: string,
  body: Uint8Array,
): Promise<Response> {
  return Promise.resolve(app.request(`/databases/${database}/${method}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${session.token}`,
      "x-denokv-version": "3",
      "x-denokv-database-id": session.databaseId,
    },
    body: body as Uint8Array<ArrayBuffer>,
  }));
}

Deno.test("KV Connect: a database's grant rules the exchange and every data-path request; removal stops it at once", async () => {
  await withApps(async ({ cluster, apps }) => {
    const writer = await addToken(apps[0]!, {
      name: "writer",
      databases: [{ database: "main", access: "read-write" }],
    });
    const reader = await addToken(apps[0]!, {
      name: "reader",
      databases: [{ database: "main", access: "read" }],
    });
    await executedEverywhere(cluster, "reader");
    const app = apps[1]!;
    const writing = await connect(app, "main", writer) as Session;
    assert.equal(
      await status(await dataPath(app, "main", writing, "atomic_write", setWrite("k", "v"))),
      200,
    );
    const reading = await connect(app, "main", reader) as Session;
    assert.equal(
      await status(await dataPath(app, "main", reading, "snapshot_read", readOf("k"))),
      200,
    );
    const write = await dataPath(app, "main", reading, "atomic_write", setWrite("k", "w"));
    assert.equal(write.status, 403);
    assert.equal(
      await write.text(),
      'Token "reader" may not atomic_write database "main": it needs read-write, and it may only ' +
        'read database "main".',
    );
    // Another database: refused at the exchange.
    const other = await connect(app, "other", writer) as Response;
    assert.equal(other.status, 403);
    assert.match(await other.text(), /no grant on database "other"/);
    const unknown = await connect(app, "main", "ekv_unknown") as Response;
    assert.equal(unknown.status, 401);
    assert.equal(await unknown.text(), "Invalid access token.");
    // The curl API takes none of it: a database grant is not a prefix grant.
    assert.equal(await status(await request(app, "GET", "/kv/k", writer)), 403);
    // Removed: the issued data-path token stops working at once, everywhere.
    assert.equal((await admin(apps[2]!, "DELETE", "/tokens/writer")).status, 200);
    await executedEverywhere(cluster, "writer", false);
    const after = await dataPath(app, "main", writing, "snapshot_read", readOf("k"));
    assert.equal(after.status, 401);
    assert.equal(await after.text(), "Invalid access token.");
  });
});

Deno.test("KV Connect: a data-path token issued while open stops when the first named token arrives", async () => {
  await withApps(async ({ cluster, apps }) => {
    const session = await connect(apps[0]!, "main", "anything") as Session;
    assert.equal(
      await status(await dataPath(apps[0]!, "main", session, "snapshot_read", readOf("k"))),
      200,
    );
    await addToken(apps[0]!, { name: "ops", ops: true });
    await executedEverywhere(cluster, "ops");
    assert.equal(
      await status(await dataPath(apps[0]!, "main", session, "snapshot_read", readOf("k"))),
      401,
    );
  });
});

// --- The admin routes ----------------------------------------------------------

Deno.test("admin token routes: the cluster secret, lists without secrets, 400/404/409 changing nothing", async () => {
  await withApps(async ({ cluster, apps }) => {
    const app = apps[0]!;
    const node = cluster.nodes[0]!;
    assert.equal(await status(await request(app, "GET", "/admin/tokens")), 401);
    assert.equal(await status(await request(app, "GET", "/admin/tokens", CLIENT_TOKEN)), 401);
    const token = await addToken(app, {
      name: "ci",
      prefixes: [{ prefix: "app/", access: "read" }, { prefix: "cfg/", access: "read-write" }],
      databases: [{ database: "main", access: "read" }],
    });
    const listed = await (await admin(app, "GET", "/tokens")).json();
    assert.equal(listed.tokens.length, 1);
    const [entry] = listed.tokens;
    assert.deepEqual(Object.keys(entry).sort(), [
      "created",
      "databases",
      "name",
      "ops",
      "prefixes",
    ]);
    assert.equal(entry.ops, false);
    assert.ok(!JSON.stringify(listed).includes(token), "the token is never listed");
    // Stored hashed: the state holds its SHA-256, not the token.
    const stored = new TextDecoder().decode(node.state.read(tokenKey("ci"))!.value);
    assert.ok(!stored.includes(token));
    assert.ok(!JSON.stringify(listed).includes(JSON.parse(stored).hash), "nor its hash");

    const proposed = node.metrics.commandsProposed;
    const bad: [unknown, number, RegExp][] = [
      [{ name: "a/b", ops: true }, 400, /Token name may hold only/],
      [{ name: "x" }, 400, /at least one grant/],
      [{ name: "x", ops: true, hash: "0".repeat(64) }, 400, /Unknown field "hash"/],
      [{ name: "x", prefixes: [{ prefix: "a", access: "admin" }] }, 400, /"read" or "read-write"/],
      [{ name: "x", databases: [{ database: "no/slash", access: "read" }] }, 400, /Database name/],
      [[], 400, /JSON object/],
    ];
    for (const [body, expected, pattern] of bad) {
      const response = await admin(app, "POST", "/tokens", body);
      assert.equal(response.status, expected, JSON.stringify(body));
      assert.match((await response.json()).error, pattern);
    }
    for (const [body, expected] of [["not json", 400], ["x".repeat(64 * 1024 + 1), 413]] as const) {
      const response = await app.request("/admin/tokens", {
        method: "POST",
        headers: { authorization: `Bearer ${SECRET}` },
        body,
      });
      assert.equal(response.status, expected);
      assert.match(
        (await response.json()).error,
        /^The body is (not JSON|larger than 65536 bytes)$/,
      );
    }
    assert.equal(node.metrics.commandsProposed, proposed, "nothing proposed for a bad body");
    const taken = await admin(app, "POST", "/tokens", { name: "ci", ops: true });
    assert.equal(taken.status, 409);
    assert.match((await taken.json()).error, /A token named ci exists/);
    const missing = await admin(app, "DELETE", "/tokens/nobody");
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { error: "No token named nobody" });
    assert.equal((await admin(app, "DELETE", "/tokens/a%20b")).status, 400);
    assert.equal(node.state.tokens.size, 1);
  });
});

Deno.test("tokens survive a restart: the index is rebuilt from storage", async () => {
  await withApps(async ({ cluster, apps }) => {
    const reader = await addToken(apps[0]!, {
      name: "reader",
      prefixes: [{ prefix: "", access: "read" }],
    });
    await executedEverywhere(cluster, "reader");
    await cluster.restart(2);
    const restarted = createApp({ node: cluster.nodes[2]!, replicas: 3, secret: SECRET });
    assert.equal(await status(await request(restarted, "PUT", "/kv/x", reader, "v")), 403);
    assert.equal(await status(await request(restarted, "PUT", "/kv/x", undefined, "v")), 401);
    assert.equal(await status(await request(restarted, "GET", "/kv?prefix=", reader)), 200);
  });
});

Deno.test("the dashboard follows named tokens: by bearer or session; 403 without ops; removal ends a session", async () => {
  await withApps(async ({ cluster, apps }) => {
    const app = apps[0]!;
    assert.equal(
      await status(await request(app, "GET", "/ui")),
      200,
      "open while nothing is enforced",
    );
    const ops = await addToken(app, { name: "ops", ops: true });
    const data = await addToken(app, { name: "data", prefixes: [{ prefix: "", access: "read" }] });
    await executedEverywhere(cluster, "data");
    const locked = await request(app, "GET", "/ui");
    assert.equal(locked.status, 401);
    assert.match(await locked.text(), /needs a token with the operations grant/);
    assert.equal(await status(await request(app, "GET", "/ui", ops)), 200);
    const refused = await request(app, "GET", "/ui", data);
    assert.equal(refused.status, 403);
    assert.match(await refused.text(), /Token &quot;data&quot; may not GET \/ui: it needs ops/);
    assert.equal(await status(await request(app, "GET", "/ui/events", data)), 403);
    // Sessions: only for a token that may see it.
    assert.equal(await status(await request(app, "POST", "/ui/session", data)), 403);
    assert.equal(await status(await request(app, "POST", "/ui/session", "ekv_unknown")), 401);
    const made = await request(app, "POST", "/ui/session", ops);
    assert.equal(made.status, 204);
    const cookie = made.headers.get("set-cookie")!.split(";")[0]!;
    const withCookie = (headers: Record<string, string> = {}) =>
      app.request("/ui", { headers: { cookie, ...headers } });
    assert.equal(await status(await withCookie()), 200);
    // The session is valid on every replica (one cluster secret), and names its token.
    assert.equal(await status(await apps[2]!.request("/ui", { headers: { cookie } })), 200);
    const [name, value] = cookie.split("=") as [string, string];
    const dataHash = cluster.nodes[0]!.state.tokens.byName("data")!.hash;
    const swapped = `${name}=${dataHash}${value.slice(64)}`;
    assert.equal(await status(await app.request("/ui", { headers: { cookie: swapped } })), 401);
    // Removed: its session ends at once.
    assert.equal((await admin(app, "DELETE", "/tokens/ops")).status, 200);
    assert.equal(await status(await withCookie()), 401);
  });
});
