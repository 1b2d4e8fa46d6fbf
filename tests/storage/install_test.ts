import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { decode as decodeMsgpack } from "@msgpack/msgpack";
import { backupStream, readBackup } from "../../src/kv/backup.ts";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { KvStateMachine } from "../../src/kv/state_machine.ts";
import type { Configuration } from "../../src/core/configuration.ts";
import { encodeMsgpack } from "../../src/storage/codec.ts";
import {
  type DenoKvStorage,
  type DenoKvStorageOptions,
  FailpointCrash,
  FORMAT_VERSION,
  openDenoKvStorage,
  seedDenoKvStore,
  StorageFormatError,
} from "../../src/storage/deno_kv/mod.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { MalformedSnapshotError } from "../../src/storage/snapshot_check.ts";
import type { PersistBatch, ReplicaSnapshot } from "../../src/storage/types.ts";
import {
  batch,
  executed,
  instance,
  normalize,
  put,
  reference,
  REPLICAS,
  set,
  whole,
  withSnapshot,
} from "./contract.ts";
import { configurationOf } from "./epoch_install_contract.ts";
import {
  bytes,
  entry,
  heldHistory,
  heldSnapshot,
  installedState,
  manyEntries,
  PREFIX,
  snapshotOf,
} from "./install_contract.ts";

const OPTIONS: DenoKvStorageOptions<KvCommand> = { isCommand: isKvCommand, replicas: REPLICAS };
const SEED_OPTIONS = { isCommand: isKvCommand, replicas: REPLICAS };

/** Runs `fn` with a path to a fresh file in a temporary directory. */
async function withFile(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-kv-install-" });
  try {
    await fn(`${dir}/replica.kv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Opens the store at `path`, runs `fn` on it and closes it. */
async function withStorage<T>(
  path: string,
  fn: (storage: DenoKvStorage<KvCommand>) => Promise<T>,
  options: DenoKvStorageOptions<KvCommand> = OPTIONS,
): Promise<T> {
  const storage = await openDenoKvStorage(path, options);
  try {
    return await fn(storage);
  } finally {
    storage.close();
  }
}

/** What a fresh open of `path` loads, normalized. */
function loadNormalized(path: string): Promise<unknown> {
  return withStorage(path, async (storage) => normalize(await storage.load()));
}

/**
 * Fills a store as a replica that ran a while does: the held records of the
 * install contract, a snapshot (so an older generation and a replaced log
 * exist) and log entries after it. Its history, for the reference.
 */
async function fillStore(path: string): Promise<PersistBatch<KvCommand>[]> {
  const history: PersistBatch<KvCommand>[] = [];
  await withStorage(path, async (storage) => {
    const commit = async (b: PersistBatch<KvCommand>) => {
      await storage.commit(b);
      history.push(b);
    };
    for (const b of heldHistory()) await commit(b);
    const fill = Array.from({ length: 10 }, (_, i) => set(`fill-${i}`, bytes(1000, i)));
    await commit(batch([], [[0, 20, fill]]));
    assert.ok(storage.wantsSnapshot());
    await commit(withSnapshot(whole(...history), batch([], [[0, 21, [set("s", bytes(2))]]])));
    assert.equal(storage.snapshotsWritten, 1);
    for (let n = 22; n < 25; n++) await commit(batch([], [[0, n, [set(`after-${n}`, bytes(n))]]]));
  }, { ...OPTIONS, snapshotLogBytes: 4096 });
  return history;
}

/** Checks that the file holds the current snapshot's pages, the log after it, and no redo log. */
async function assertTidy(path: string): Promise<void> {
  const kv = await Deno.openKv(path);
  try {
    const meta = (await kv.get<Uint8Array>(["meta", "snapshot"])).value!;
    const [generation, seq, pages] = decodeMsgpack(meta) as number[];
    let count = 0;
    for await (const item of kv.list({ prefix: ["s"] })) {
      assert.equal(item.key[1], generation, `stale page ${String(item.key)}`);
      count++;
    }
    assert.equal(count, pages);
    for await (const item of kv.list({ prefix: ["e"] })) {
      assert.ok((item.key[1] as number) > seq!, `replaced log key ${String(item.key)} left`);
    }
    for await (const item of kv.list({ prefix: ["redo"] })) {
      assert.fail(`redo log key ${String(item.key)} left`);
    }
  } finally {
    kv.close();
  }
}

/**
 * A snapshot over the filled store whose switch needs the redo log and whose
 * pages several commits; of the epoch of `configuration` if given.
 */
function largeSnapshot(configuration?: Configuration): ReplicaSnapshot<KvCommand> {
  const records = Array.from(
    { length: 1100 },
    (_, i) => executed([1, i + 3], [put(`r${i}`, bytes(20, i))]),
  );
  return snapshotOf({ prefix: PREFIX, records, entries: manyEntries(2500, 500), configuration });
}

/** The configuration of epoch 2 of the crash tests: the same three voters, one replaced. */
const EPOCH_2: Configuration = {
  ...configurationOf(2, 3),
  members: configurationOf(2, 3).members.map((m) => m.id === 1 ? { ...m, incarnation: 2 } : m),
};

/** A snapshot of epoch 2 over the filled store: every record it holds goes. */
function epochSnapshot(): ReplicaSnapshot<KvCommand> {
  return snapshotOf({
    prefix: [1, 0, 3],
    configuration: EPOCH_2,
    records: [
      executed([0, 8], [put("eight", bytes(8))]),
      executed([1, 2], [put("two", bytes(2))]),
      executed([2, 4], [put("four", bytes(4))]),
    ],
    entries: [entry("eight", bytes(8), "2.0.0"), entry("k2", bytes(3), "2.0.1")],
  });
}

/**
 * Installs `snapshot` on a filled store crashing after every number of atomic
 * commits in turn: each restart loads the state before or all of the state
 * after (never before again once after), and a commit and a second install
 * then complete on it.
 */
async function crashEveryStep(snapshot: ReplicaSnapshot<KvCommand>, loadFirst: boolean) {
  // Of the snapshot's epoch: the same epoch after it, a later one if it never happened.
  const second = snapshotOf({
    prefix: [9, 1300, 3],
    records: [executed([2, 5], [put("five", bytes(5))])],
    entries: [entry("second", bytes(7), "9.0.0")],
    configuration: snapshot.configuration,
  });
  const after = batch([executed([0, 30], [put("x", bytes(1))])], [[0, 30, [set("x", bytes(1))]]]);
  let sawAfter = false;
  const crashedAt = { before: 0, after: 0 };
  let crashed = true;
  for (let step = 0; crashed; step++) {
    assert.ok(step <= 100, "the install never completes");
    await withFile(async (path) => {
      const history = await fillStore(path);
      const memory = new MemoryStorage<KvCommand>();
      for (const b of history) memory.commitSync(b);
      const before = normalize(memory.loadSync());
      const installed = normalize(installedState(memory.loadSync(), snapshot));
      crashed = await withStorage(path, async (storage) => {
        if (loadFirst) await storage.load();
        return await storage.install(snapshot).then(() => false, (error) => {
          assert.ok(error instanceof FailpointCrash, `step ${step}: ${error}`);
          return true;
        });
      }, { ...OPTIONS, crashAfterCommits: step });
      const loaded = await loadNormalized(path);
      // Boolean comparisons: a failed assertion would render (and diff) both states.
      const isAfter = isDeepStrictEqual(loaded, installed);
      assert.ok(
        isAfter || isDeepStrictEqual(loaded, before),
        `step ${step}: neither before nor after`,
      );
      if (!crashed) assert.ok(isAfter, `step ${step} completed but kept the state before`);
      assert.ok(isAfter || !sawAfter, `step ${step} went back to the state before`);
      sawAfter ||= isAfter;
      if (crashed) crashedAt[isAfter ? "after" : "before"]++;
      if (isAfter) memory.installSync(snapshot);
      // The store goes on: a commit and another install complete.
      memory.commitSync(after);
      memory.installSync(second);
      await withStorage(path, async (storage) => {
        if (loadFirst) await storage.load();
        await storage.commit(after);
        await storage.install(second);
        assert.deepStrictEqual(normalize(await storage.load()), normalize(memory.loadSync()));
      });
      await assertTidy(path);
      assert.deepStrictEqual(await loadNormalized(path), normalize(memory.loadSync()));
    });
  }
  assert.ok(crashedAt.before > 0, "no crash left the state before");
  assert.ok(crashedAt.after > 0, "no crash came after the switch");
  return crashedAt;
}

Deno.test("DenoKvStorage: install: a crash at any atomic commit loads before or after, small switch", async () => {
  await crashEveryStep(heldSnapshot(), false);
});

Deno.test("DenoKvStorage: install: a crash at any atomic commit loads before or after, loaded first", async () => {
  await crashEveryStep(heldSnapshot(), true);
});

Deno.test("DenoKvStorage: install: a crash at any atomic commit loads before or after, switch through the redo log", async () => {
  const crashedAt = await crashEveryStep(largeSnapshot(), true);
  // Pages over several commits, the redo log's and the switch's.
  assert.ok(crashedAt.before >= 3, `${crashedAt.before} crashes before the switch`);
  assert.ok(crashedAt.after >= 2, `${crashedAt.after} crashes after the switch`);
});

Deno.test("DenoKvStorage: install of a later epoch: a crash at any atomic commit loads before or after, configuration included", async () => {
  await crashEveryStep(epochSnapshot(), false);
});

Deno.test("DenoKvStorage: install of a later epoch: a crash at any atomic commit loads before or after, switch through the redo log", async () => {
  const crashedAt = await crashEveryStep(largeSnapshot(EPOCH_2), true);
  assert.ok(crashedAt.before >= 3, `${crashedAt.before} crashes before the switch`);
  assert.ok(crashedAt.after >= 2, `${crashedAt.after} crashes after the switch`);
});

Deno.test("DenoKvStorage: install of a later epoch through the redo log leaves no record of the old epoch and a tidy file", async () => {
  await withFile(async (path) => {
    await fillStore(path);
    const snapshot = largeSnapshot(EPOCH_2);
    await withStorage(path, async (storage) => {
      await storage.install(snapshot);
      assert.equal(storage.redoUnits, 1);
    });
    await assertTidy(path);
    const state = await withStorage(path, (storage) => storage.load());
    assert.deepStrictEqual(
      normalize(state),
      normalize({
        records: snapshot.records,
        pruneFloor: [...PREFIX],
        entries: snapshot.entries,
        configuration: EPOCH_2,
      }),
    );
  });
});

Deno.test("DenoKvStorage: a store whose configuration key is unreadable is refused at open and at load", async () => {
  const cases: [unknown, string][] = [
    ["not bytes", 'Malformed configuration at key ["meta", "configuration"]: not bytes'],
    [new Uint8Array([0xc1]), "Value is not valid MessagePack"],
    [encodeMsgpack([1, 2, 3]), "configuration must be an object"],
    [
      encodeMsgpack({ ...configurationOf(2, 3), nextId: 1 }),
      "configuration members[1].id 1 must be below nextId 1",
    ],
    [encodeMsgpack(configurationOf(2, 4)), "must have an odd number of voters, has 4"],
  ];
  for (const [value, text] of cases) {
    await withFile(async (path) => {
      await withStorage(path, (storage) => storage.install(epochSnapshot()));
      const kv = await Deno.openKv(path);
      await kv.set(["meta", "configuration"], value);
      kv.close();
      await assert.rejects(openDenoKvStorage(path, OPTIONS), (error: unknown) => {
        assert.ok(error instanceof StorageFormatError, `got ${error}`);
        assert.ok(error.message.includes(text), error.message);
        return true;
      });
    });
  }
  // Spoiled while open: the next load refuses it too.
  await withFile(async (path) => {
    await withStorage(path, async (storage) => {
      await storage.install(epochSnapshot());
      assert.deepStrictEqual((await storage.load()).configuration, EPOCH_2);
      const kv = await Deno.openKv(path);
      await kv.set(["meta", "configuration"], encodeMsgpack({ epoch: 2 }));
      kv.close();
      await assert.rejects(storage.load(), StorageFormatError, "configuration nextId");
    });
  });
});

Deno.test("DenoKvStorage: a store of epoch 1 has no configuration key; an epoch install writes it and nothing else of the format", async () => {
  await withFile(async (path) => {
    await fillStore(path);
    const read = async () => {
      const kv = await Deno.openKv(path);
      try {
        return {
          configuration: (await kv.get(["meta", "configuration"])).versionstamp,
          format: (await kv.get(["meta", "format"])).value,
        };
      } finally {
        kv.close();
      }
    };
    assert.deepStrictEqual(await read(), { configuration: null, format: FORMAT_VERSION });
    await withStorage(path, (storage) => storage.install(heldSnapshot()));
    assert.deepStrictEqual(await read(), { configuration: null, format: FORMAT_VERSION });
    await withStorage(path, (storage) => storage.install(epochSnapshot()));
    const after = await read();
    assert.notEqual(after.configuration, null);
    assert.equal(after.format, FORMAT_VERSION);
  });
});

Deno.test("DenoKvStorage: install: a large switch goes through the redo log, and the file is tidy after", async () => {
  await withFile(async (path) => {
    const history = await fillStore(path);
    const snapshot = largeSnapshot();
    await withStorage(path, async (storage) => {
      const before = await storage.load();
      const commits = storage.atomicCommits;
      await storage.install(snapshot);
      assert.equal(storage.redoUnits, 1);
      assert.ok(storage.atomicCommits - commits >= 6, `${storage.atomicCommits - commits} commits`);
      assert.equal(storage.logBytes, 0);
      assert.equal(storage.wantsSnapshot(), false);
      assert.deepStrictEqual(
        normalize(await storage.load()),
        normalize(installedState(before, snapshot)),
      );
    });
    await assertTidy(path);
    const memory = new MemoryStorage<KvCommand>();
    for (const b of history) memory.commitSync(b);
    memory.installSync(snapshot);
    assert.deepStrictEqual(await loadNormalized(path), normalize(memory.loadSync()));
  });
});

Deno.test("DenoKvStorage: install: what the storage knows stays right, so deletes and cleanups go by key after it", async () => {
  await withFile(async (path) => {
    const history = await fillStore(path);
    const memory = new MemoryStorage<KvCommand>();
    for (const b of history) memory.commitSync(b);
    const snapshot = heldSnapshot();
    memory.installSync(snapshot);
    await withStorage(path, async (storage) => {
      // Not loaded: the install itself learns every record chunk and log entry.
      await storage.install(snapshot);
      const prune = batch([{ kind: "delete", owner: 1, from: 3, to: 5 }]);
      await storage.commit(prune);
      memory.commitSync(prune);
      assert.equal(storage.keyedDeletes, 1);
      // The snapshots after it clean up what they replace by key.
      for (let n = 40; storage.keyedCleanups < 1; n++) {
        assert.ok(n < 400, "no keyed cleanup");
        const fill = Array.from({ length: 5 }, (_, i) => set(`f${i}`, bytes(1000, n)));
        let b = batch([executed([0, n], [put("f", bytes(1))])], [[0, n, fill]]);
        if (storage.wantsSnapshot()) {
          const state = new Map(memory.loadSync().entries);
          for (const change of fill) if (change.kind === "set") state.set(change.key, change.entry);
          b = { ...b, snapshot: [...state] };
        }
        await storage.commit(b);
        memory.commitSync(b);
      }
      assert.ok(storage.snapshotsWritten >= 1, `${storage.snapshotsWritten} snapshots`);
      assert.deepStrictEqual(normalize(await storage.load()), normalize(memory.loadSync()));
    }, { ...OPTIONS, snapshotLogBytes: 4096 });
    assert.deepStrictEqual(await loadNormalized(path), normalize(memory.loadSync()));
  });
});

Deno.test("DenoKvStorage: install drops a snapshot being built; later snapshots complete and leave no stray pages", async () => {
  await withFile(async (path) => {
    const history: PersistBatch<KvCommand>[] = [];
    const memory = new MemoryStorage<KvCommand>();
    await withStorage(path, async (storage) => {
      const commit = async (b: PersistBatch<KvCommand>) => {
        await storage.commit(b);
        memory.commitSync(b);
        history.push(b);
      };
      // About 1.5 MB of state: its snapshot takes several commits.
      for (let n = 0; n < 10; n++) {
        const changes = Array.from({ length: 300 }, (_, i) => set(`k${n}-${i}`, bytes(500, i)));
        await commit(batch([], [[0, n + 1, changes]]));
      }
      await commit(withSnapshot(whole(...history), batch([], [[0, 11, [set("x", bytes(1))]]])));
      assert.equal(storage.snapshotsWritten, 0, "the snapshot is still being built");
      // A snapshot smaller than the one being built: its pages come first.
      const snapshot = snapshotOf({ prefix: [11, 0, 0], entries: [entry("only", bytes(3))] });
      await storage.install(snapshot);
      memory.installSync(snapshot);
      for (let n = 12; n < 20; n++) await commit(batch([], [[0, n, [set(`n${n}`, bytes(n))]]]));
      assert.equal(storage.snapshotsWritten, 0, "the dropped snapshot was switched to");
      assert.deepStrictEqual(normalize(await storage.load()), normalize(memory.loadSync()));
    }, { ...OPTIONS, snapshotLogBytes: 4096 });
    await assertTidy(path);
    assert.deepStrictEqual(await loadNormalized(path), normalize(memory.loadSync()));
  });
});

Deno.test("DenoKvStorage: install keeps a seeded store's restore mark", async () => {
  await withFile(async (path) => {
    const machine = new KvStateMachine([entry("seeded", bytes(4), "3.0.0")]).snapshot();
    const backup = await readBackup(
      backupStream(machine.entries, { stateDigest: machine.digest, createdAt: new Date() }),
    );
    assert.equal(await seedDenoKvStore(path, backup, SEED_OPTIONS), "seeded");
    const snapshot = snapshotOf({ prefix: [5, 3, 4], entries: [entry("new", bytes(2))] });
    await withStorage(path, async (storage) => {
      assert.equal(storage.seededFrom, backup.sha256);
      await storage.install(snapshot);
      assert.equal(storage.seededFrom, backup.sha256);
    });
    await withStorage(path, async (storage) => {
      assert.equal(storage.seededFrom, backup.sha256);
      assert.deepStrictEqual(
        normalize(await storage.load()),
        normalize({ records: [], pruneFloor: [5, 3, 4], entries: snapshot.entries }),
      );
    });
    // Seeding again from the same backup still finds it seeded.
    assert.equal(await seedDenoKvStore(path, backup, SEED_OPTIONS), "already-seeded");
  });
});

Deno.test("DenoKvStorage: install refuses what it could not read back, writing nothing", async () => {
  await withFile(async (path) => {
    const history = await fillStore(path);
    const keys = async () => {
      const kv = await Deno.openKv(path);
      try {
        const all: string[] = [];
        for await (const item of kv.list({ prefix: [] })) all.push(JSON.stringify(item.key));
        return all;
      } finally {
        kv.close();
      }
    };
    const before = await keys();
    const foreign = [{ op: "explode", request: "r" } as unknown as KvCommand];
    const cases: [ReplicaSnapshot<KvCommand>, string][] = [
      [
        snapshotOf({ prefix: PREFIX, records: [executed([0, 9], foreign)] }),
        "Snapshot record 0.9 is not storable: Record has a malformed command",
      ],
      [
        snapshotOf({
          prefix: PREFIX,
          records: [executed([0, 9], [put("a", bytes(1))]), {
            ...executed([0, 10], [put("b", bytes(1))]),
            deps: [1, 2],
          }],
        }),
        "Snapshot record 0.10 is not storable: Record has malformed deps",
      ],
      [
        snapshotOf({ prefix: PREFIX, entries: [entry("\u20ac".repeat(30_000), bytes(1))] }),
        `Snapshot entries are not storable: Entry of key "${"\u20ac".repeat(32)}" encodes to`,
      ],
    ];
    await withStorage(path, async (storage) => {
      for (const [snapshot, text] of cases) {
        await assert.rejects(storage.install(snapshot), (error: unknown) => {
          assert.ok(error instanceof MalformedSnapshotError, `got ${error}`);
          assert.ok(error.message.includes(text), error.message);
          return true;
        });
      }
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(...history)));
    });
    assert.deepStrictEqual(await keys(), before);
  });
});

Deno.test("DenoKvStorage: load right after install on the same object, which never loaded", async () => {
  await withFile(async (path) => {
    const snapshot = snapshotOf({
      prefix: [1, 1, 1],
      records: [executed([0, 2], [put("a", bytes(1))])],
      entries: [entry("a", bytes(1), "2.0.0")],
    });
    await withStorage(path, async (storage) => {
      await storage.commit(batch([instance([0, 1]), instance([1, 3], { phase: 1 })]));
      await storage.install(snapshot);
      const state = normalize(await storage.load());
      assert.deepStrictEqual(
        state,
        normalize({
          records: [snapshot.records[0]!, instance([1, 3], { phase: 1 })],
          pruneFloor: [1, 1, 1],
          entries: snapshot.entries,
        }),
      );
    });
  });
});
