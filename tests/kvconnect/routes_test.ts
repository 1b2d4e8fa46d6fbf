/**
 * KV Connect's routes in the app, without processes: the metadata exchange,
 * the data path's checks (version, token, database id), limits, and the
 * errors a blindly retrying client must get (5xx only when nothing was
 * proposed).
 */

import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  AtomicWriteOutputSchema,
  AtomicWriteSchema,
  AtomicWriteStatus,
  MutationType,
  SnapshotReadOutputSchema,
  SnapshotReadSchema,
  SnapshotReadStatus,
  ValueEncoding,
} from "../../src/kvconnect/gen/datapath_pb.ts";
import { Hono } from "hono";
import { createApp } from "../../src/server/app.ts";
import { kvConnectRoute } from "../../src/kvconnect/routes.ts";
import { databaseKey } from "../../src/kv/database_keys.ts";
import { startTestCluster, type TestCluster, waitFor } from "../server/cluster_helpers.ts";

const SECRET = "test-secret-0123456789";

type App = Hono;

interface Session {
  readonly token: string;
  readonly databaseId: string;
  readonly endpoint: string;
}

async function exchange(app: App, name: string, token = "anything"): Promise<Session> {
  const response = await app.request(`/databases/${name}/connect`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ supportedVersions: [1, 2, 3] }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const metadata = await response.json();
  return {
    token: metadata.token,
    databaseId: metadata.databaseId,
    endpoint: metadata.endpoints[0].url,
  };
}

function dataPath(
  app: App,
  session: Session,
  method: string,
  body: Uint8Array,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(app.request(`${session.endpoint}/${method}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${session.token}`,
      "x-denokv-version": "3",
      "x-denokv-database-id": session.databaseId,
      "content-type": "application/x-protobuf",
      ...headers,
    },
    body: body as Uint8Array<ArrayBuffer>,
  }));
}

const bytes = (text: string) => new TextEncoder().encode(text);

function setWrite(key: string, value: string, count = 1): Uint8Array {
  return toBinary(
    AtomicWriteSchema,
    create(AtomicWriteSchema, {
      mutations: Array.from({ length: count }, (_, i) => ({
        key: bytes(count === 1 ? key : `${key}${i}`),
        mutationType: MutationType.M_SET,
        value: { data: bytes(value), encoding: ValueEncoding.VE_BYTES },
      })),
    }),
  );
}

function readOf(key: string): Uint8Array {
  return toBinary(
    SnapshotReadSchema,
    create(SnapshotReadSchema, {
      ranges: [{ start: bytes(key), end: bytes(`${key}\0`), limit: 1 }],
    }),
  );
}

async function withCluster(
  body: (cluster: TestCluster) => Promise<void>,
  options: Parameters<typeof startTestCluster>[1] = {},
): Promise<void> {
  const cluster = await startTestCluster(3, options);
  try {
    await body(cluster);
  } finally {
    await cluster.stop();
  }
}

Deno.test("the metadata exchange: v3 (or v2), a name-derived id, a relative endpoint, 10+ minutes", async () => {
  await withCluster(async (cluster) => {
    const apps = [0, 1].map((id) =>
      createApp({ node: cluster.nodes[id]!, replicas: 3, secret: SECRET })
    );
    const ask = (app: App, body: unknown) =>
      app.request("/databases/app/connect", {
        method: "POST",
        headers: { authorization: "Bearer t" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const v3 = await (await ask(apps[0]!, { supportedVersions: [1, 2, 3] })).json();
    assert.equal(v3.version, 3);
    assert.deepEqual(v3.endpoints, [{ url: "/databases/app", consistency: "strong" }]);
    assert.ok(Date.parse(v3.expiresAt) >= Date.now() + 10 * 60_000);
    const elsewhere = await (await ask(apps[1]!, { supportedVersions: [2] })).json();
    assert.equal(elsewhere.version, 2);
    assert.equal(elsewhere.databaseId, v3.databaseId, "every replica gives the same id");
    const v1 = await ask(apps[0]!, undefined);
    assert.equal(v1.status, 400);
    assert.match(await v1.text(), /requires at least protocol version 2/);
    // A token issued by one replica is taken by another (same cluster secret).
    const session = await exchange(apps[0]!, "app");
    const write = await dataPath(apps[1]!, session, "atomic_write", setWrite("k", "v"));
    assert.equal(write.status, 200, await write.clone().text());
    const written = fromBinary(AtomicWriteOutputSchema, new Uint8Array(await write.arrayBuffer()));
    assert.equal(written.status, AtomicWriteStatus.AW_SUCCESS);
    assert.equal(written.versionstamp.length, 10);
    const read = await dataPath(apps[0]!, session, "snapshot_read", readOf("k"));
    const output = fromBinary(SnapshotReadOutputSchema, new Uint8Array(await read.arrayBuffer()));
    assert.equal(output.status, SnapshotReadStatus.SR_SUCCESS);
    assert.equal(output.readIsStronglyConsistent, true);
    assert.deepEqual(output.ranges[0]!.values[0]!.value, bytes("v"));
    assert.deepEqual(output.ranges[0]!.values[0]!.versionstamp, written.versionstamp);
  });
});

Deno.test("the data path checks the protocol version, the token, the database id and the name", async () => {
  await withCluster(async (cluster) => {
    const app = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: SECRET });
    const session = await exchange(app, "app");
    const other = await exchange(app, "other");
    const read = readOf("k");
    const cases: [Record<string, string>, Partial<Session>, number, RegExp][] = [
      [{ "x-denokv-version": "1" }, {}, 400, /protocol version/],
      [{ "x-denokv-version": "" }, {}, 400, /protocol version/],
      [{ authorization: "" }, {}, 401, /Malformed authorization header/],
      [
        {},
        { token: "v1.9999999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
        401,
        /Invalid access token/,
      ],
      [{}, { token: other.token }, 401, /Invalid access token/],
      [{}, { databaseId: other.databaseId }, 400, /Invalid database id/],
    ];
    for (const [headers, changes, status, message] of cases) {
      const response = await dataPath(
        app,
        { ...session, ...changes },
        "snapshot_read",
        read,
        headers,
      );
      assert.equal(response.status, status, JSON.stringify([headers, changes]));
      assert.match(await response.text(), message);
    }
    for (const name of ["bad%20name", "-dash-first", "x".repeat(65)]) {
      const response = await app.request(`/databases/${name}/connect`, {
        method: "POST",
        headers: { authorization: "Bearer t" },
        body: "{}",
      });
      assert.equal(response.status, 400, name);
    }
    const wrongMethod = await app.request("/databases/app/snapshot_read");
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get("allow"), "POST");
    assert.equal(cluster.nodes[0]!.state.size, 0, "nothing was written");
  });
});

Deno.test("with a client token, the exchange needs it; without one, any token", async () => {
  await withCluster(async (cluster) => {
    const open = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: SECRET });
    await exchange(open, "app", "whatever-the-client-has");
    const missing = await open.request("/databases/app/connect", { method: "POST", body: "{}" });
    assert.equal(missing.status, 401);
    const guarded = createApp({
      node: cluster.nodes[0]!,
      replicas: 3,
      secret: SECRET,
      clientToken: "client-token-0123456",
    });
    const wrong = await guarded.request("/databases/app/connect", {
      method: "POST",
      headers: { authorization: "Bearer whatever" },
      body: JSON.stringify({ supportedVersions: [3] }),
    });
    assert.equal(wrong.status, 401);
    assert.equal(await wrong.text(), "Invalid access token.");
    const session = await exchange(guarded, "app", "client-token-0123456");
    // The data path takes the token the exchange issued, not the client token.
    const read = await dataPath(guarded, session, "snapshot_read", readOf("k"));
    assert.equal(read.status, 200);
    const withClientToken = await dataPath(
      guarded,
      {
        ...session,
        token: "client-token-0123456",
      },
      "snapshot_read",
      readOf("k"),
    );
    assert.equal(withClientToken.status, 401);
  });
});

Deno.test("limits: 400 with denokv's wording, 413 for an oversized body, nothing proposed", async () => {
  await withCluster(async (cluster) => {
    const app = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: SECRET });
    const session = await exchange(app, "app");
    const proposed = cluster.nodes[0]!.metrics.commandsProposed;
    const tooManyRanges = toBinary(
      SnapshotReadSchema,
      create(SnapshotReadSchema, {
        ranges: Array.from(
          { length: 11 },
          () => ({ start: bytes("a"), end: bytes("b"), limit: 1 }),
        ),
      }),
    );
    const cases: [string, Uint8Array, number, string][] = [
      ["snapshot_read", tooManyRanges, 400, "Too many read ranges requested in one read request."],
      [
        "atomic_write",
        setWrite("k", "v", 1001),
        400,
        "Too many mutations / enqueues included in atomic write.",
      ],
      ["atomic_write", setWrite("k".repeat(2049), "v"), 400, "A key exceeds the key size limit."],
      [
        "atomic_write",
        toBinary(
          AtomicWriteSchema,
          create(AtomicWriteSchema, { enqueues: [{ payload: bytes("m") }] }),
        ),
        400,
        "Enqueue operations are not supported in KV Connect",
      ],
      ["atomic_write", new Uint8Array(2 * 1024 * 1024), 413, "The request body is too large."],
      ["watch", new Uint8Array([0x0a, 0xff]), 400, "Request protobuf is invalid"],
    ];
    for (const [method, body, status, message] of cases) {
      const response = await dataPath(app, session, method, body);
      assert.equal(response.status, status, message);
      assert.ok((await response.text()).startsWith(message), message);
    }
    assert.equal(cluster.nodes[0]!.metrics.commandsProposed, proposed, "nothing was proposed");
  });
});

Deno.test("an atomic write the driver gave up on after proposing is held, then answered with its result", async () => {
  await withCluster(async (cluster) => {
    const app = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: SECRET });
    const session = await exchange(app, "app");
    // Cut off, still believing its peers reachable: proposes, cannot commit;
    // the driver gives up after 200 ms, the route holds the answer.
    cluster.network.setDown(0, true);
    const healed = dataPath(app, session, "atomic_write", setWrite("a", "1"));
    await waitFor(
      () => cluster.nodes[0]!.metrics.requestsTimedOut > 0,
      5000,
      "the driver to give up on the write",
    );
    cluster.network.setDown(0, false);
    const answer = await healed;
    assert.equal(answer.status, 200, "held until it executed, then answered with its result");
    const output = fromBinary(AtomicWriteOutputSchema, new Uint8Array(await answer.arrayBuffer()));
    assert.equal(output.status, AtomicWriteStatus.AW_SUCCESS);
  }, { contactWindowMs: 1000, requestTimeoutMs: 200 });
});

Deno.test("an atomic write still unknown after the hold gets a 4xx; one never proposed, a 503", async () => {
  await withCluster(async (cluster) => {
    const node = cluster.nodes[0]!;
    const app = new Hono().route(
      "/databases",
      kvConnectRoute({ node, secret: SECRET, outcomeHoldMs: 300 }),
    );
    const session = await exchange(app, "app");
    cluster.network.setDown(0, true);
    const unknown = await dataPath(app, session, "atomic_write", setWrite("a", "1"));
    assert.equal(unknown.status, 409, "never a 5xx after proposing: the client would resend it");
    assert.match(await unknown.text(), /outcome of this atomic write is unknown/);
    await waitFor(() => !node.quorumReachable(), 5000, "the quorum to be lost");
    const refused = await dataPath(app, session, "atomic_write", setWrite("b", "1"));
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.equal(await refused.text(), "No quorum of replicas is reachable");
    // A read changes nothing: any failure is a 5xx, which the client retries.
    const read = await dataPath(app, session, "snapshot_read", readOf("a"));
    assert.equal(read.status, 503);
  }, { contactWindowMs: 1000, requestTimeoutMs: 200 });
});

Deno.test("an atomic write's value encoding and absolute expiry are stored with the entry", async () => {
  await withCluster(async (cluster) => {
    const node = cluster.nodes[0]!;
    const app = createApp({ node, replicas: 3, secret: SECRET });
    const session = await exchange(app, "app");
    const expireAtMs = Date.now() + 60_000;
    const write = toBinary(
      AtomicWriteSchema,
      create(AtomicWriteSchema, {
        mutations: [{
          key: bytes("t"),
          mutationType: MutationType.M_SET,
          value: { data: bytes("v8 bytes"), encoding: ValueEncoding.VE_V8 },
          expireAtMs: BigInt(expireAtMs),
        }],
      }),
    );
    const response = await dataPath(app, session, "atomic_write", write);
    assert.equal(response.status, 200);
    const entry = node.state.read(databaseKey("app", bytes("t")))!;
    assert.equal(entry.encoding, ValueEncoding.VE_V8);
    assert.equal(entry.expiresAt, expireAtMs);
    const read = await dataPath(app, session, "snapshot_read", readOf("t"));
    const output = fromBinary(SnapshotReadOutputSchema, new Uint8Array(await read.arrayBuffer()));
    assert.equal(output.ranges[0]!.values[0]!.encoding, ValueEncoding.VE_V8);
  });
});
