import assert from "node:assert/strict";
import { UsageError } from "../../src/cli/args.ts";
import { restoreFromBackup } from "../../src/cli/restore.ts";
import { backupStream } from "../../src/kv/backup.ts";
import { KvStateMachine } from "../../src/kv/state_machine.ts";
import { seedingOf } from "../../src/storage/deno_kv/mod.ts";

/** A backup file of a small state in `dir`, and its state digest. */
async function backupFile(dir: string): Promise<{ file: string; digest: string }> {
  const machine = new KvStateMachine([["k", { value: new Uint8Array([7]), version: "4.1.0" }]]);
  const snapshot = machine.snapshot();
  const file = `${dir}/backup.jsonl`;
  await Deno.writeFile(
    file,
    backupStream(snapshot.entries, { stateDigest: snapshot.digest, createdAt: new Date() }),
  );
  return { file, digest: snapshot.digest };
}

/** A fetch where peer `url` answers /status with `digest`, or does not answer. */
function peers(digests: Record<string, string | undefined>) {
  return (url: string, _init: RequestInit) => {
    const digest = digests[new URL(url).origin];
    return digest === undefined
      ? Promise.reject(new TypeError("connection refused"))
      : Promise.resolve(Response.json({ stateDigest: digest }));
  };
}

Deno.test("--restore seeds a new cluster's replica, and then ignores the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-cli-restore-" });
  try {
    const { file, digest } = await backupFile(dir);
    const path = `${dir}/epaxos.kv`;
    const options = {
      replicas: 3,
      peerUrls: ["http://10.0.0.2:8001", "http://10.0.0.3:8001"],
      // One peer already seeded from the same backup, one not started.
      fetch: peers({ "http://10.0.0.2:8001": digest }),
    };
    assert.match(await restoreFromBackup(file, path, options), /^restored backup /);
    const seeding = await seedingOf(path);
    assert.ok(seeding.store && seeding.mark?.complete);
    // Restarted with the same command line, even with the file gone.
    await Deno.remove(file);
    assert.match(await restoreFromBackup(file, path, options), /already seeded .* ignored$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--restore is refused, changing nothing, when a peer serves another state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-cli-restore-" });
  try {
    const { file } = await backupFile(dir);
    const path = `${dir}/epaxos.kv`;
    await assert.rejects(
      restoreFromBackup(file, path, {
        replicas: 3,
        peerUrls: ["http://10.0.0.2:8001"],
        fetch: peers({ "http://10.0.0.2:8001": "9:0badc0de" }),
      }),
      (error: unknown) => {
        assert.ok(error instanceof UsageError);
        assert.match(error.message, /already serves another state .* moved on/);
        return true;
      },
    );
    assert.deepEqual(await seedingOf(path), { store: false });
    // Not a backup at all: refused with the reason.
    await Deno.writeTextFile(`${dir}/not.jsonl`, "hello\n");
    await assert.rejects(
      restoreFromBackup(`${dir}/not.jsonl`, path, { replicas: 3, peerUrls: [] }),
      /--restore .*not\.jsonl: Line 1: not JSON/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
