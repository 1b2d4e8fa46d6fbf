import assert from "node:assert/strict";
import { type Backup, backupStream, readBackup } from "../../src/kv/backup.ts";
import { isKvCommand } from "../../src/kv/commands.ts";
import { type KvEntry, KvStateMachine } from "../../src/kv/state_machine.ts";
import {
  openDenoKvStorage,
  RestoreRefusedError,
  seedDenoKvStore,
  StorageFormatError,
} from "../../src/storage/deno_kv/mod.ts";

const REPLICAS = 3;
const options = { replicas: REPLICAS, isCommand: isKvCommand };

/** A backup of `keys` entries of `valueBytes` each, written and read back as a file would be. */
async function makeBackup(keys: number, valueBytes: number, salt = 0): Promise<Backup> {
  const entries: [string, KvEntry][] = [];
  for (let i = 0; i < keys; i++) {
    const value = new Uint8Array(valueBytes).fill((i + salt) % 251);
    entries.push([`key/${String(i).padStart(6, "0")}`, { value, version: `${i + 1}.${i % 3}.0` }]);
  }
  const snapshot = new KvStateMachine(entries).snapshot();
  const stream = backupStream(snapshot.entries, {
    stateDigest: snapshot.digest,
    createdAt: new Date(),
  });
  return await readBackup(stream);
}

async function loadStore(path: string) {
  const storage = await openDenoKvStorage(path, options);
  try {
    return await storage.load();
  } finally {
    storage.close();
  }
}

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-restore-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("seeding writes the backup's state and a prune floor above every restored version", async () => {
  await withDir(async (dir) => {
    // About 1.5 MB of state: several snapshot slices, so several commits.
    const backup = await makeBackup(3000, 500);
    const path = `${dir}/epaxos.kv`;
    assert.equal(await seedDenoKvStore(path, backup, options), "seeded");
    const loaded = await loadStore(path);
    assert.deepEqual(
      [...loaded.entries].sort(([a], [b]) => (a < b ? -1 : 1)),
      backup.entries,
    );
    assert.deepEqual(loaded.pruneFloor, [3000, 3000, 3000]);
    assert.deepEqual(loaded.records, []);
    // An open store says which backup it came from (the version tag's source).
    const opened = await openDenoKvStorage(path, options);
    assert.equal(opened.seededFrom, backup.sha256);
    opened.close();
    // Seeding again from the same backup (a repeated command line) changes nothing.
    assert.equal(await seedDenoKvStore(path, backup, options), "already-seeded");
    assert.equal((await loadStore(path)).entries.length, 3000);
  });
});

Deno.test("seeding refuses a directory that holds another store, and changes nothing", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/epaxos.kv`;
    const first = await makeBackup(10, 8);
    const second = await makeBackup(10, 8, 1);
    await seedDenoKvStore(path, first, options);
    await assert.rejects(seedDenoKvStore(path, second, options), (error: unknown) => {
      assert.ok(error instanceof RestoreRefusedError);
      assert.equal(error.status, 409);
      assert.match(error.message, /seeded from another backup/);
      return true;
    });
    assert.deepEqual((await loadStore(path)).entries.length, 10);
    // A store that was never seeded: a replica's own data.
    const own = `${dir}/own.kv`;
    const storage = await openDenoKvStorage(own, options);
    await storage.commit({
      records: [{ kind: "floor", pruneFloor: [1, 0, 0] }],
      effects: new Map(),
    });
    assert.equal(storage.seededFrom, undefined);
    storage.close();
    await assert.rejects(seedDenoKvStore(own, first, options), /already holds a store;/);
    assert.deepEqual((await loadStore(own)).pruneFloor, [1, 0, 0]);
  });
});

Deno.test("an interrupted seeding is refused by a plain open and starts over when repeated", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/epaxos.kv`;
    const backup = await makeBackup(200, 100);
    // What a crash after the mark and part of the state leaves.
    const kv = await Deno.openKv(path);
    await kv.atomic()
      .set(["meta", "format"], 2)
      .set(["meta", "restore"], [backup.sha256, false])
      .set(["meta", "floor"], new Uint8Array([0x93, 0, 0, 0]))
      .commit();
    kv.close();
    await assert.rejects(loadStore(path), (error: unknown) => {
      assert.ok(error instanceof StorageFormatError);
      assert.match(error.message, /did not finish/);
      return true;
    });
    assert.equal(await seedDenoKvStore(path, backup, options), "seeded");
    const loaded = await loadStore(path);
    assert.equal(loaded.entries.length, 200);
    assert.deepEqual(loaded.pruneFloor, [200, 200, 200]);
  });
});
