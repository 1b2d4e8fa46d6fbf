import assert from "node:assert/strict";
import {
  defaultDataDir,
  describeExit,
  localClusterSecret,
  replicaCommand,
  writeLocalClusterConfig,
} from "../../src/cli/start.ts";
import { loadClusterConfig, resolveSecret } from "../../src/server/config.ts";

const posix = Deno.build.os !== "windows";

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-start-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the local cluster secret is made once, owner-only, and reused", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/cluster-secret`;
    const first = await localClusterSecret(path);
    assert.match(first, /^[0-9a-f]{48}$/);
    assert.equal(await Deno.readTextFile(path), `${first}\n`);
    if (posix) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.equal(await localClusterSecret(path), first, "a later launch reuses it");
    assert.equal(await resolveSecret({ file: path }, "secret"), first, "replicas read the same");
  });
});

Deno.test({
  name: "a local cluster secret others may read, or too short, is refused and left as it is",
  ignore: !posix,
  async fn() {
    await withTempDir(async (dir) => {
      const open = `${dir}/open`;
      await Deno.writeTextFile(open, "0123456789abcdef0123\n", { mode: 0o644 });
      await Deno.chmod(open, 0o644);
      await assert.rejects(() => localClusterSecret(open), /may be read by others.*chmod 600/);
      assert.equal((await Deno.stat(open)).mode! & 0o777, 0o644);
      assert.equal(await Deno.readTextFile(open), "0123456789abcdef0123\n");

      const short = `${dir}/short`;
      await Deno.writeTextFile(short, "short\n", { mode: 0o600 });
      await assert.rejects(() => localClusterSecret(short), /holds no secret.*remove it/);
      assert.equal(await Deno.readTextFile(short), "short\n");
    });
  },
});

Deno.test("the local cluster file points at the secret file, which each replica may read", async () => {
  await withTempDir(async (dir) => {
    const secretPath = `${dir}/cluster-secret`;
    await localClusterSecret(secretPath);
    const urls = ["http://127.0.0.1:9101", "http://127.0.0.1:9102", "http://127.0.0.1:9103"];
    const configPath = await writeLocalClusterConfig(dir, urls, secretPath);
    assert.equal(configPath, `${dir}/local-cluster.json`);
    const config = await loadClusterConfig(configPath);
    assert.deepEqual(config.secret, { file: secretPath });
    assert.deepEqual(config.replicas.map((replica) => replica.url), urls);
    assert.deepEqual(config.replicas.map((replica) => replica.name), [
      "local-0",
      "local-1",
      "local-2",
    ]);

    const args = replicaCommand({
      configPath,
      id: 1,
      dataDir: `${dir}/replica-1`,
      listen: "127.0.0.1:9102",
      secrets: [config.secret],
    });
    const read = args.find((arg) => arg.startsWith("--allow-read="))!;
    assert.ok(read.split("=")[1]!.split(",").includes(secretPath), read);
    const env = args.find((arg) => arg.startsWith("--allow-env="))!;
    assert.ok(!env.includes("EPAXOS_CLUSTER_SECRET"), "the secret no longer travels in env");

    // Started alone, a local replica finds the data the local cluster gave it.
    assert.equal(defaultDataDir(configPath, config.replicas[1]!), `${dir}/replica-1`);
  });
});

/** A replica of a cluster file under /c, its secret in the environment. */
const common = {
  configPath: "/c/cluster.json",
  id: 0,
  dataDir: "/c/replica-0",
  listen: "127.0.0.1:9101",
  secrets: [{ env: "EPAXOS_CLUSTER_SECRET" }],
};

Deno.test("--restore reaches the replica with read permission on the backup only", () => {
  const plain = replicaCommand(common);
  assert.ok(!plain.includes("--restore"));
  const args = replicaCommand({ ...common, restore: "/b/backup.jsonl" });
  assert.deepEqual(args.slice(args.indexOf("--restore"), args.indexOf("--restore") + 2), [
    "--restore",
    "/b/backup.jsonl",
  ]);
  const read = args.find((arg) => arg.startsWith("--allow-read="))!;
  assert.deepEqual(read.split("=")[1]!.split(",").sort(), [
    "/b/backup.jsonl",
    "/c/cluster.json",
    "/c/replica-0",
  ]);
  const write = args.find((arg) => arg.startsWith("--allow-write="))!;
  assert.equal(write, "--allow-write=/c/replica-0");
});

Deno.test("--cors-origin reaches every replica it starts, once per origin", () => {
  assert.ok(!replicaCommand(common).includes("--cors-origin"));
  const args = replicaCommand({
    ...common,
    corsOrigins: ["http://localhost:5173", "https://app.example"],
  });
  const flags = args.flatMap((arg, i) => arg === "--cors-origin" ? [args[i + 1]] : []);
  assert.deepEqual(flags, ["http://localhost:5173", "https://app.example"]);
});

Deno.test("a replica of another cluster file keeps its data under data/<name> by default", () => {
  const replica = { id: 2, name: "ie", url: "http://ie.internal:8001" };
  assert.equal(defaultDataDir("/etc/epaxos/cluster.json", replica), "data/ie");
  assert.equal(defaultDataDir("cluster.json", replica), "data/ie");
});

Deno.test("a child's end is described by its exit code or signal", () => {
  assert.equal(describeExit({ success: false, code: 1, signal: null }), "exited with code 1");
  assert.equal(
    describeExit({ success: false, code: 137, signal: "SIGKILL" }),
    "was ended by signal SIGKILL",
  );
});
