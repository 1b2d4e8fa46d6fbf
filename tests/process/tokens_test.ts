/**
 * Named client tokens on a real cluster of three replica processes (issue
 * 18, "Done when"): tokens added with `deno task admin` through one replica
 * are enforced by every replica once it executed them. A read-only token
 * gets 403 on PUT and 200 on GET; a token scoped to `app/` gets 403 outside
 * it; both on every replica, and after a restart.
 */

import assert from "node:assert/strict";
import { adminProcessArgs } from "../../src/cli/admin.ts";
import { startProcessCluster, waitUntil } from "../../src/chaos/process_cluster.ts";

/** Runs `deno task admin` as its own process with the cluster's secret; resolves with its JSON. */
async function admin(secret: string, args: readonly string[]): Promise<Record<string, unknown>> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: adminProcessArgs(args),
    env: { EPAXOS_CLUSTER_SECRET: secret, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assert.equal(output.code, 0, decoder.decode(output.stderr));
  return JSON.parse(decoder.decode(output.stdout));
}

async function send(
  url: string,
  method: string,
  token: string | undefined,
  body?: string,
): Promise<number> {
  const response = await fetch(url, {
    method,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    ...(body === undefined ? {} : { body }),
    signal: AbortSignal.timeout(10_000),
  });
  await response.body?.cancel();
  return response.status;
}

Deno.test({
  name: "multi-process: a read-only token and a token scoped to app/, enforced on every replica",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    try {
      const server = cluster.urls[0]!;
      const reader = await admin(cluster.secret, [
        "--server",
        server,
        "token",
        "add",
        "reader",
        "--prefix",
        "",
        "--read-only",
      ]);
      const scoped = await admin(cluster.secret, [
        "--server",
        server,
        "token",
        "add",
        "app",
        "--prefix",
        "app/",
      ]);
      const readOnly = reader.token as string;
      const app = scoped.token as string;
      for (const [id, url] of cluster.urls.entries()) {
        // Token commands execute in one order everywhere: once this replica
        // knows the second token, it knows the first, and refuses strangers.
        await waitUntil(
          async () =>
            await send(`${url}/kv/probe`, "GET", undefined) === 401 &&
            await send(`${url}/kv/app%2Fprobe`, "GET", app) === 404,
          { deadlineMs: 10_000, what: `replica ${id} to enforce both tokens` },
        );
        assert.equal(
          await send(`${url}/kv/app%2F${id}`, "PUT", app, `v${id}`),
          200,
          `replica ${id}`,
        );
        assert.equal(await send(`${url}/kv/other-${id}`, "PUT", app, "v"), 403, `replica ${id}`);
        assert.equal(await send(`${url}/kv/other-${id}`, "GET", app), 403, `replica ${id}`);
        assert.equal(await send(`${url}/kv?prefix=`, "GET", app), 403, `replica ${id}`);
        assert.equal(await send(`${url}/kv/app%2F${id}`, "GET", readOnly), 200, `replica ${id}`);
        assert.equal(
          await send(`${url}/kv/app%2F${id}`, "PUT", readOnly, "x"),
          403,
          `replica ${id}`,
        );
        assert.equal(
          await send(`${url}/kv/app%2F${id}`, "PUT", undefined, "x"),
          401,
          `replica ${id}`,
        );
        // The operations pages follow the credentials; the probes do not.
        assert.equal(await send(`${url}/status`, "GET", undefined), 401, `replica ${id}`);
        assert.equal(await send(`${url}/readyz`, "GET", undefined), 200, `replica ${id}`);
      }
      // What the read-only token read is what the scoped one wrote, everywhere.
      for (const url of cluster.urls) {
        const response = await fetch(`${url}/kv?prefix=app%2F`, {
          headers: { authorization: `Bearer ${readOnly}` },
        });
        const items = (await response.json()).items.map((item: { key: string }) => item.key);
        assert.deepEqual(items, ["app/0", "app/1", "app/2"]);
      }
      // Kept in each replica's Deno KV file: a restarted replica enforces them from its store.
      await cluster.restart(2);
      const restarted = cluster.urls[2]!;
      assert.equal(await send(`${restarted}/kv/app%2F2`, "PUT", readOnly, "x"), 403);
      assert.equal(await send(`${restarted}/kv/app%2F2`, "GET", undefined), 401);
      assert.equal(await send(`${restarted}/kv/app%2F2`, "GET", readOnly), 200);
      const listed = await admin(cluster.secret, ["--server", cluster.urls[1]!, "token", "list"]);
      assert.deepEqual(
        (listed.tokens as { name: string }[]).map((token) => token.name),
        ["app", "reader"],
      );
    } finally {
      await cluster.stop();
    }
  },
});
