/**
 * Backup from a live cluster under writes, and restore into a new cluster:
 * real replica processes, the admin CLI as operators run it.
 */

import assert from "node:assert/strict";
import { readBackup, versionTagOf } from "../../src/kv/backup.ts";
import { adminProcessArgs } from "../../src/cli/admin.ts";
import { startProcessCluster, waitUntil } from "../../src/chaos/process_cluster.ts";

async function put(url: string, key: string, value: string, ifMatch?: string) {
  const response = await fetch(`${url}/kv/${encodeURIComponent(key)}`, {
    method: "PUT",
    body: value,
    headers: ifMatch === undefined ? {} : { "if-match": `"${ifMatch}"` },
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.json();
  return { status: response.status, version: body.version as string | undefined };
}

async function get(url: string, key: string) {
  const response = await fetch(`${url}/kv/${encodeURIComponent(key)}`, {
    signal: AbortSignal.timeout(10_000),
  });
  if (response.status === 404) {
    await response.body?.cancel();
    return undefined;
  }
  assert.equal(response.status, 200);
  return { value: await response.text(), version: response.headers.get("kv-version")! };
}

async function stateDigests(urls: readonly string[]): Promise<Set<string>> {
  const all = await Promise.all(urls.map(async (url) => {
    const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(5000) });
    return (await response.json()).stateDigest as string;
  }));
  return new Set(all);
}

async function admin(args: string[], secret: string) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: adminProcessArgs(args),
    env: { EPAXOS_CLUSTER_SECRET: secret },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
}

Deno.test({
  name: "a backup taken under writes restores into a new cluster with the same state",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "epaxos-backup-" });
    const file = `${work}/backup.jsonl`;
    const source = await startProcessCluster(3);
    let acknowledgedBefore: Map<string, string>;
    let startedAfter: string[];
    try {
      const { urls } = source;
      for (let i = 0; i < 60; i++) {
        assert.equal((await put(urls[i % 3]!, `seed/${i}`, `v${i}`)).status, 200);
      }
      // A writer keeps going while the backup is taken.
      const acknowledged = new Map<string, string>();
      let stop = false;
      let counter = 0;
      const writer = (async () => {
        while (!stop) {
          const key = `live/${counter++}`;
          const written = await put(urls[counter % 3]!, key, "x");
          if (written.status === 200) acknowledged.set(key, written.version!);
        }
      })();
      await waitUntil(() => acknowledged.size >= 20, { deadlineMs: 20_000, what: "live writes" });
      acknowledgedBefore = new Map(acknowledged);
      const refused = await admin(["--server", urls[1]!, "backup", "--out", file], "wrong");
      assert.notEqual(refused.code, 0, "a wrong secret is refused");
      assert.match(refused.stderr, /401/);
      const taken = await admin(["--server", urls[1]!, "backup", "--out", file], source.secret);
      assert.equal(taken.code, 0, taken.stderr);
      const firstAfter = counter;
      await waitUntil(() => counter >= firstAfter + 10, { deadlineMs: 20_000, what: "writes" });
      stop = true;
      await writer;
      startedAfter = Array.from({ length: 10 }, (_, i) => `live/${firstAfter + i + 1}`);
      const summary = JSON.parse(taken.stdout);
      assert.equal(summary.file, file);
      assert.ok([0, 2].includes(summary.checkedBy), `checked by ${summary.checkedBy}`);

      const backup = await readBackup((await Deno.open(file)).readable);
      assert.equal(summary.sha256, backup.sha256);
      const inBackup = new Map(backup.entries.map(([key, entry]) => [key, entry.version]));
      // Every write acknowledged before the backup was asked for is in it,
      // with its version; none asked for after the backup answered is.
      for (let i = 0; i < 60; i++) assert.ok(inBackup.has(`seed/${i}`));
      for (const [key, version] of acknowledgedBefore) assert.equal(inBackup.get(key), version);
      for (const key of startedAfter) assert.ok(!inBackup.has(key), `${key} is after the backup`);
    } finally {
      await source.stop();
    }

    // A new cluster seeded from the file: same state on every replica.
    const backup = await readBackup((await Deno.open(file)).readable);
    const restored = await startProcessCluster(3, {
      extraArgs: ["--restore", file],
      readFiles: [file],
    });
    try {
      const { urls } = restored;
      await waitUntil(
        async () => {
          const digests = await stateDigests(urls);
          return digests.size === 1 && digests.has(backup.header.stateDigest);
        },
        { deadlineMs: 20_000, what: "restored replicas to hold the backup's state" },
      );
      // Values too, not only versions (which the digest hashes): a backup of
      // the restored cluster holds exactly the backed-up entries.
      const again = await admin(
        ["--server", urls[0]!, "backup", "--out", `${work}/again.jsonl`],
        restored.secret,
      );
      assert.equal(again.code, 0, again.stderr);
      const copy = await readBackup((await Deno.open(`${work}/again.jsonl`)).readable);
      const byKey = (entries: typeof backup.entries) =>
        new Map(entries.map(([key, entry]) => [key, [entry.version, entry.value.toBase64()]]));
      assert.deepEqual(byKey(copy.entries), byKey(backup.entries));
      const [key, entry] = backup.entries[backup.entries.length - 1]!;
      assert.deepEqual(await get(urls[2]!, key), {
        value: new TextDecoder().decode(entry.value),
        version: entry.version,
      });
      // New versions are above every restored one, and a version from before
      // the backup still matches the entry it named.
      const fresh = await put(urls[0]!, "after-restore", "new");
      assert.equal(fresh.status, 200);
      assert.ok(Number(fresh.version!.split(".")[0]) > backup.header.floor, fresh.version);
      // ...and tagged with the backup, so none equals a version the old
      // cluster gave after the backup either.
      assert.ok(fresh.version!.endsWith(`.${versionTagOf(backup.sha256)}`), fresh.version);
      assert.equal((await put(urls[1]!, key, "updated", entry.version)).status, 200);
      // Restarting a replica with the same command line keeps its state.
      await restored.restart(2);
      await waitUntil(async () => (await get(urls[2]!, "after-restore"))?.value === "new", {
        deadlineMs: 20_000,
        what: "the restarted replica to serve",
      });
    } finally {
      await restored.stop();
      await Deno.remove(work, { recursive: true });
    }
  },
});
