/**
 * A replica refuses, before it serves or writes anything, a data directory
 * whose store another storage format wrote (a rolling upgrade rolled back
 * past a format change, or a store of a much older build); and `--join`
 * wins over `EPAXOS_CONFIG`, so that an image or unit that sets it can start
 * a replacement member (`deploy/`).
 */

import assert from "node:assert/strict";
import { REPLICA_ENV, runReplica } from "../../src/cli/replica.ts";
import { ConfigError } from "../../src/server/config.ts";
import { FORMAT_VERSION, StorageFormatError } from "../../src/storage/deno_kv/mod.ts";

/** A 3-replica cluster file on ports nothing listens on, with its secret inline. */
function clusterFile(): string {
  return JSON.stringify({
    replicas: [0, 1, 2].map((id) => ({ id, url: `http://127.0.0.1:${19390 + id}` })),
    secret: { value: "start-refusals-secret-0123" },
  });
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-start-refusals-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function storeContents(path: string): Promise<[Deno.KvKey, unknown][]> {
  const kv = await Deno.openKv(path);
  try {
    const entries: [Deno.KvKey, unknown][] = [];
    for await (const entry of kv.list({ prefix: [] })) entries.push([entry.key, entry.value]);
    return entries;
  } finally {
    kv.close();
  }
}

for (const found of [FORMAT_VERSION + 1, FORMAT_VERSION - 1]) {
  Deno.test(`a replica on a store of format ${found} refuses to start, naming both formats`, async () => {
    await withDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/cluster.json`, clusterFile());
      await Deno.mkdir(`${dir}/data`);
      const store = `${dir}/data/epaxos.kv`;
      const kv = await Deno.openKv(store);
      await kv.set(["meta", "format"], found);
      await kv.set(["meta", "floor"], new Uint8Array([0x93, 0, 0, 0]));
      kv.close();
      const before = await storeContents(store);
      await assert.rejects(
        runReplica(["--config", `${dir}/cluster.json`, "--id", "0", "--data", `${dir}/data`]),
        (error: unknown) =>
          error instanceof StorageFormatError &&
          error.message.startsWith(
            `File has storage format ${found}, but this build reads only format ${FORMAT_VERSION}: `,
          ),
      );
      assert.deepEqual(await storeContents(store), before, "the store is left as it was");
      // Nothing listens where it would have served.
      await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: 19390 }));
    });
  });
}

Deno.test("--join wins over EPAXOS_CONFIG: the replica goes on to join instead of refusing both", async () => {
  await withDir(async (dir) => {
    const saved = [REPLICA_ENV.config, REPLICA_ENV.clusterSecret].map((name) =>
      [name, Deno.env.get(name)] as const
    );
    Deno.env.set(REPLICA_ENV.config, `${dir}/cluster.json`);
    Deno.env.set(REPLICA_ENV.clusterSecret, "start-refusals-secret-0123");
    try {
      await assert.rejects(
        runReplica([
          "--join",
          "http://127.0.0.1:19399",
          "--url",
          "http://127.0.0.1:19398",
          "--id",
          "3",
          "--data",
          `${dir}/data`,
        ]),
        (error: unknown) =>
          error instanceof ConfigError &&
          error.message.startsWith("--join: cannot reach http://127.0.0.1:19399"),
      );
    } finally {
      for (const [name, value] of saved) {
        if (value === undefined) Deno.env.delete(name);
        else Deno.env.set(name, value);
      }
    }
  });
});
