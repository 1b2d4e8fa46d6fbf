import assert from "node:assert/strict";
import { Hono } from "hono";
import { createApp } from "../../src/server/app.ts";
import { adminRoute, describeMembers } from "../../src/server/admin_route.ts";
import { startTestCluster, waitFor } from "./cluster_helpers.ts";
import { readBackup } from "../../src/kv/backup.ts";

const SECRET = "admin-secret-0123456789";
const URLS = ["http://10.0.0.1:8001", "http://10.0.0.2:8001", "http://10.0.0.3:8001"];

Deno.test("the admin route refuses requests without the cluster secret and does nothing", async () => {
  const cluster = await startTestCluster(3);
  try {
    const app = createApp({ node: cluster.nodes[0]!, replicas: 3, secret: SECRET, urls: URLS });
    const strangers: Record<string, string>[] = [
      {},
      { authorization: "Bearer wrong-secret-0123456789" },
      { authorization: `Basic ${SECRET}` },
    ];
    for (const headers of strangers) {
      for (const path of ["/admin/members", "/admin/other"]) {
        const answer = await app.request(path, { headers });
        assert.equal(answer.status, 401, `${path} ${JSON.stringify(headers)}`);
        assert.match(answer.headers.get("www-authenticate") ?? "", /^Bearer /);
        assert.match((await answer.json()).error, /^The admin route (needs|refused)/);
      }
    }
    // With the secret, an unknown admin path is a 404 like any other.
    const unknown = await app.request("/admin/other", {
      headers: { authorization: `Bearer ${SECRET}` },
    });
    assert.equal(unknown.status, 404);
    assert.ok("error" in await unknown.json());
  } finally {
    await cluster.stop();
  }
});

Deno.test("GET /admin/members lists every member: epoch 1, voters, caught up when quiet", async () => {
  const cluster = await startTestCluster(3);
  try {
    const app = createApp({
      node: cluster.nodes[1]!,
      replicas: 3,
      secret: SECRET,
      urls: URLS,
      names: ["va", "ca", "ie"],
    });
    await cluster.nodes[0]!.submit({ op: "put", key: "k", value: new Uint8Array([1]) });
    const members = async () => {
      const answer = await app.request("/admin/members", {
        headers: { authorization: `Bearer ${SECRET}` },
      });
      assert.equal(answer.status, 200);
      return await answer.json();
    };
    // Frontier gossip tells replica 1 that everyone executed the write.
    const node = cluster.nodes[1]!;
    await waitFor(
      () => node.core.executionLag().every((lag) => lag === 0) && node.state.size === 1,
      5000,
      "gossip to settle",
    );
    const body = await members();
    assert.equal(body.epoch, 1);
    assert.deepEqual(
      body.members.map((
        m: Record<string, unknown>,
      ) => [m.id, m.name, m.url, m.role, m.state, m.self]),
      [
        [0, "va", URLS[0], "voter", "caught-up", false],
        [1, "ca", URLS[1], "voter", "caught-up", true],
        [2, "ie", URLS[2], "voter", "caught-up", false],
      ],
    );
    const self = body.members[1];
    assert.equal(self.lastContactMsAgo, 0);
    for (const peer of [body.members[0], body.members[2]]) {
      assert.equal(typeof peer.lastContactMsAgo, "number");
      assert.ok(peer.lastContactMsAgo >= 0 && peer.lastContactMsAgo < 5000);
    }
  } finally {
    await cluster.stop();
  }
});

Deno.test("a member that misses writes is lagging by the instances it missed, then catches up", async () => {
  const cluster = await startTestCluster(3);
  try {
    const node = cluster.nodes[0]!;
    const route = new Hono().route(
      "/admin",
      adminRoute({ node, secret: SECRET, caughtUpInstances: 0 }),
    );
    const member = async (id: number) => {
      const answer = await route.request("/admin/members", {
        headers: { authorization: `Bearer ${SECRET}` },
      });
      return (await answer.json()).members[id];
    };
    cluster.network.setDown(2, true);
    for (let i = 0; i < 5; i++) {
      await node.submit({ op: "put", key: `k${i}`, value: new Uint8Array([i]) });
    }
    await waitFor(
      () => describeMembers({ node, secret: SECRET }).members[2]!.lagInstances >= 5,
      5000,
      "replica 2 to fall behind",
    );
    const behind = await member(2);
    assert.equal(behind.state, "lagging");
    assert.ok(behind.lagInstances >= 5, JSON.stringify(behind));
    assert.equal((await member(0)).state, "caught-up");
    // Not heard from for longer than the window: not alive.
    const view = { node, secret: SECRET, aliveWithinMs: 300 };
    await waitFor(() => !describeMembers(view).members[2]!.alive, 5000, "replica 2 to be dead");
    assert.ok(describeMembers(view).members[0]!.alive && describeMembers(view).members[1]!.alive);

    cluster.network.setDown(2, false);
    await waitFor(
      () => describeMembers({ node, secret: SECRET }).members[2]!.lagInstances === 0,
      10_000,
      "replica 2 to catch up",
    );
    const caughtUp = await member(2);
    assert.equal(caughtUp.state, "caught-up");
    assert.equal(caughtUp.lagInstances, 0);
    assert.equal(caughtUp.alive, true);
  } finally {
    await cluster.stop();
  }
});

Deno.test("GET /admin/backup streams the state, checked against a second replica's digest", async () => {
  const cluster = await startTestCluster(3);
  try {
    // Every replica's app, reachable at its URL through a fetch that calls it.
    let apps: Hono[] = [];
    const fetchApp = (url: string, init: RequestInit) => {
      const target = URLS.findIndex((base) => url.startsWith(base));
      return Promise.resolve(apps[target]!.request(url, init));
    };
    apps = cluster.nodes.map((node) =>
      createApp({ node, replicas: 3, secret: SECRET, urls: URLS, fetch: fetchApp })
    );
    for (const key of ["a", "b", "c"]) {
      await cluster.nodes[0]!.submit({ op: "put", key, value: new TextEncoder().encode(key) });
    }
    await waitFor(
      () => cluster.nodes.every((node) => node.reachablePeers() === 2),
      5000,
      "every replica to hear from the others",
    );
    const headers = { authorization: `Bearer ${SECRET}` };
    for (const rate of ["0", "1001", "fast"]) {
      const refused = await apps[2]!.request(`/admin/backup?rate=${rate}`, { headers });
      assert.equal(refused.status, 400, rate);
      assert.match((await refused.json()).error, /^rate must be/);
    }
    const answer = await apps[2]!.request("/admin/backup?rate=50", { headers });
    assert.equal(answer.status, 200);
    assert.equal(answer.headers.get("backup-keys"), "3");
    const backup = await readBackup(answer.body!);
    assert.deepEqual(backup.entries.map(([key]) => key), ["a", "b", "c"]);
    assert.equal(backup.header.stateDigest, answer.headers.get("backup-state-digest"));
    // Another replica computed the same digest at the same command.
    assert.ok(
      backup.header.checkedBy === 0 || backup.header.checkedBy === 1,
      JSON.stringify(backup.header),
    );
    assert.equal(answer.headers.get("backup-checked-by"), String(backup.header.checkedBy));
  } finally {
    await cluster.stop();
  }
});

Deno.test("a backup whose second replica computed another digest is refused (500)", async () => {
  const cluster = await startTestCluster(3);
  try {
    await cluster.nodes[0]!.submit({ op: "put", key: "a", value: new Uint8Array([1]) });
    await waitFor(
      () => cluster.nodes[1]!.reachablePeers() === 2,
      5000,
      "replica 1 to hear from the others",
    );
    // A peer that answers every digest request with a state it made up.
    const diverged = (_url: string, _init: RequestInit) =>
      Promise.resolve(Response.json({ request: "x", stateDigest: "1:deadbeef" }));
    const logged: string[] = [];
    const app = createApp({
      node: cluster.nodes[1]!,
      replicas: 3,
      secret: SECRET,
      urls: URLS,
      fetch: diverged,
      log: (line) => logged.push(line),
    });
    const answer = await app.request("/admin/backup", {
      headers: { authorization: `Bearer ${SECRET}` },
    });
    assert.equal(answer.status, 500);
    assert.match((await answer.json()).error, /states diverge; backup refused/);
    assert.equal(logged.filter((line) => line.startsWith("DIVERGENCE")).length, 1);
    // Nothing is left streaming: more refusals than the concurrency limit
    // are divergence again, never busy.
    for (let i = 0; i < 3; i++) {
      const again = await app.request("/admin/backup", {
        headers: { authorization: `Bearer ${SECRET}` },
      });
      assert.equal(again.status, 500);
      await again.body?.cancel();
    }
  } finally {
    await cluster.stop();
  }
});

Deno.test("at most two backups stream at once; a cancelled one frees its place", async () => {
  const cluster = await startTestCluster(3);
  try {
    // More than one chunk of file (64 KiB), so that an unread stream stays open.
    await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) =>
          cluster.nodes[0]!.submit({ op: "put", key: `k${i}`, value: new Uint8Array(1000) }),
      ),
    );
    // No other replica answers the digest check: backups go unchecked.
    const unreachable = () => Promise.reject(new TypeError("connection refused"));
    const app = createApp({
      node: cluster.nodes[0]!,
      replicas: 3,
      secret: SECRET,
      urls: URLS,
      fetch: unreachable,
    });
    const headers = { authorization: `Bearer ${SECRET}` };
    // Two streams left unread hold both places.
    const first = await app.request("/admin/backup?rate=1", { headers });
    const second = await app.request("/admin/backup?rate=1", { headers });
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    assert.equal(first.headers.get("backup-checked-by"), "none");
    const third = await app.request("/admin/backup", { headers });
    assert.equal(third.status, 429);
    assert.match((await third.json()).error, /backups are being streamed/);
    // Cancelling one frees its place; reading one to the end frees the other.
    await first.body!.cancel();
    const fourth = await app.request("/admin/backup", { headers });
    assert.equal(fourth.status, 200);
    assert.equal((await readBackup(fourth.body!)).header.checkedBy, null);
    await readBackup(second.body!);
    const fifth = await app.request("/admin/backup", { headers });
    assert.equal(fifth.status, 200);
    await fifth.body!.cancel();
  } finally {
    await cluster.stop();
  }
});
