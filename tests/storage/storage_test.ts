import assert from "node:assert/strict";
import { decode as decodeMsgpack } from "@msgpack/msgpack";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { encodedKeyLength } from "../../src/storage/codec.ts";
import {
  DENO_KV_LIMITS,
  DenoKvStorage,
  type DenoKvStorageOptions,
  FailpointCrash,
  FORMAT_VERSION,
  openDenoKvStorage,
  StorageFormatError,
} from "../../src/storage/deno_kv/mod.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { PersistBatch } from "../../src/storage/types.ts";
import {
  batch,
  del,
  executed,
  instance,
  normalize,
  prefixOf,
  put,
  reference,
  REPLICAS,
  runStorageContract,
  set,
  type StorageFactory,
  whole,
  withSnapshot,
} from "./contract.ts";
import { runEpochInstallContract } from "./epoch_install_contract.ts";
import { runInstallContract } from "./install_contract.ts";

/** Asserts that `promise` rejects with an instance of `type` whose message contains `text`. */
async function rejectsWith(
  promise: Promise<unknown>,
  type: abstract new (...args: never[]) => Error,
  text: string,
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${error}`);
    assert.ok(error.message.includes(text), `expected "${text}" in "${error.message}"`);
    return true;
  });
}

const OPTIONS: DenoKvStorageOptions<KvCommand> = { isCommand: isKvCommand, replicas: REPLICAS };

const memoryFactory: StorageFactory = {
  name: "MemoryStorage",
  propertyRuns: 100,
  create() {
    const storage = new MemoryStorage<KvCommand>();
    return Promise.resolve({
      storage,
      reopen: () => Promise.resolve(),
      crashDuring(b, step) {
        const before = storage.commits;
        storage.commitSync(b, step);
        return Promise.resolve(storage.commits === before);
      },
      dispose: () => Promise.resolve(),
    });
  },
};

/** A temporary directory, removed by `dispose`. */
async function tempDir(): Promise<{ path: string; dispose: () => Promise<void> }> {
  const path = await Deno.makeTempDir({ prefix: "epaxos-kv-storage-" });
  return { path, dispose: () => Deno.remove(path, { recursive: true }) };
}

/**
 * Deno KV storage. With `loadFirst`, every opening loads before anything is
 * committed, as a replica does, which makes deletes name their keys; a
 * storage not loaded lists the range instead.
 */
function denoKvFactory(loadFirst: boolean): StorageFactory {
  return {
    name: loadFirst ? "DenoKvStorage, loaded first" : "DenoKvStorage",
    propertyRuns: 25,
    async create() {
      const dir = await tempDir();
      const path = `${dir.path}/replica.kv`;
      const open = async (options: DenoKvStorageOptions<KvCommand>) => {
        const opened = await openDenoKvStorage(path, options);
        if (loadFirst) await opened.load();
        return opened;
      };
      let storage = await open(OPTIONS);
      return {
        get storage() {
          return storage;
        },
        async reopen() {
          storage.close();
          storage = await open(OPTIONS);
        },
        async crashDuring(b, step) {
          storage.close();
          const crashing = await open({ ...OPTIONS, crashAfterCommits: step });
          let crashed = false;
          try {
            await crashing.commit(b);
          } catch (error) {
            if (!(error instanceof FailpointCrash)) throw error;
            crashed = true;
          } finally {
            crashing.close();
          }
          storage = await open(OPTIONS);
          return crashed;
        },
        async dispose() {
          storage.close();
          await dir.dispose();
        },
      };
    },
  };
}

for (const factory of [memoryFactory, denoKvFactory(false), denoKvFactory(true)]) {
  runStorageContract(factory);
  runInstallContract(factory);
  runEpochInstallContract(factory);
}

// --- Deno KV specifics -------------------------------------------------------

/** Runs `fn` with a path to a fresh file in a temporary directory. */
async function withFile(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await fn(`${dir.path}/replica.kv`);
  } finally {
    await dir.dispose();
  }
}

/** Runs `fn` on the file opened as a plain `Deno.Kv`. */
async function rawKv(path: string, fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(path);
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

async function keysUnder(path: string, prefix: Deno.KvKey): Promise<Deno.KvKey[]> {
  const keys: Deno.KvKey[] = [];
  await rawKv(path, async (kv) => {
    for await (const entry of kv.list({ prefix })) keys.push(entry.key);
  });
  return keys;
}

const bytes = (length: number, seed = 1) => new Uint8Array(length).fill(seed);

Deno.test("DenoKvStorage: a fresh file gets the current format version", async () => {
  await withFile(async (path) => {
    (await openDenoKvStorage(path, OPTIONS)).close();
    await rawKv(path, async (kv) => {
      assert.equal((await kv.get(["meta", "format"])).value, FORMAT_VERSION);
    });
  });
});

/** Every key and value of the file at `path`, for comparing before and after. */
async function everything(path: string): Promise<[Deno.KvKey, unknown][]> {
  const entries: [Deno.KvKey, unknown][] = [];
  await rawKv(path, async (kv) => {
    for await (const entry of kv.list({ prefix: [] })) entries.push([entry.key, entry.value]);
  });
  return entries;
}

for (
  const [found, hint] of [
    [FORMAT_VERSION - 1, "an earlier build wrote it"],
    [FORMAT_VERSION + 1, "a later build wrote it"],
  ] as const
) {
  Deno.test(`DenoKvStorage: a file of format ${found} is refused, naming both, and left as it is`, async () => {
    await withFile(async (path) => {
      // A store written by another build: its format key and some of its data.
      await rawKv(path, async (kv) => {
        await kv.set(["meta", "format"], found);
        await kv.set(["i", 0, 1, 0], new Uint8Array([1, 2, 3]));
      });
      const before = await everything(path);
      await assert.rejects(
        openDenoKvStorage(path, OPTIONS),
        (error: Error) =>
          error instanceof StorageFormatError &&
          error.message.startsWith(
            `File has storage format ${found}, but this build reads only format ${FORMAT_VERSION}: ${hint}`,
          ),
      );
      assert.deepStrictEqual(await everything(path), before, "nothing written");
    });
  });
}

Deno.test("DenoKvStorage: a file of this build's format opens (the refusals' positive case)", async () => {
  await withFile(async (path) => {
    await rawKv(path, async (kv) => {
      await kv.set(["meta", "format"], FORMAT_VERSION);
    });
    const storage = await openDenoKvStorage(path, OPTIONS);
    try {
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole()));
    } finally {
      storage.close();
    }
  });
});

Deno.test("DenoKvStorage: a file of another application is refused", async () => {
  await withFile(async (path) => {
    await rawKv(path, async (kv) => {
      await kv.set(["users", "alice"], { name: "Alice" });
    });
    await rejectsWith(
      openDenoKvStorage(path, OPTIONS),
      StorageFormatError,
      'File holds data (key ["users", "alice"]) but no storage format version',
    );
  });
});

Deno.test("DenoKvStorage: a corrupted record is a clear error naming its key", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, OPTIONS);
    await storage.commit(batch([instance([0, 1]), instance([1, 2])]));
    storage.close();
    await rawKv(path, async (kv) => {
      // Count 1, then 0xc1, a byte MessagePack never uses.
      await kv.set(["i", 1, 2, 0], new Uint8Array([0, 0, 0, 1, 0xc1]));
    });
    const reopened = await openDenoKvStorage(path, OPTIONS);
    try {
      await rejectsWith(
        reopened.load(),
        StorageFormatError,
        'Malformed instance record at key ["i", 1, 2, 0]: Value is not valid MessagePack',
      );
    } finally {
      reopened.close();
    }
  });
});

Deno.test("DenoKvStorage: a record with a foreign command is refused", async () => {
  await withFile(async (path) => {
    const anything = (_: unknown): _ is KvCommand => true;
    const lax = await openDenoKvStorage(path, { isCommand: anything });
    const bogus = [{ op: "explode", request: "r" } as unknown as KvCommand];
    await lax.commit(batch([instance([2, 7], { command: bogus })]));
    lax.close();
    const strict = await openDenoKvStorage(path, OPTIONS);
    try {
      await rejectsWith(
        strict.load(),
        StorageFormatError,
        'Malformed instance record at key ["i", 2, 7, 0]: Record has a malformed command',
      );
    } finally {
      strict.close();
    }
  });
});

Deno.test("DenoKvStorage: a missing chunk or a bad entry is a clear error", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, OPTIONS);
    const large = [put("a", bytes(50_000)), put("b", bytes(50_000))];
    await storage.commit(batch([executed([0, 3], large)], [[0, 3, [set("a", bytes(1))]]]));
    storage.close();
    assert.equal((await keysUnder(path, ["i", 0, 3])).length, 2);
    await rawKv(path, async (kv) => {
      await kv.delete(["i", 0, 3, 1]);
    });
    let reopened = await openDenoKvStorage(path, OPTIONS);
    await rejectsWith(
      reopened.load(),
      StorageFormatError,
      'Malformed instance record at key ["i", 0, 3, 0]: chunk 1 of 2 is missing',
    );
    await reopened.commit(batch([{ kind: "delete", owner: 0, from: 3, to: 3 }]));
    reopened.close();
    await rawKv(path, async (kv) => {
      // Chunk count 1, then an empty MessagePack array.
      await kv.set(["e", 99, 0], new Uint8Array([0, 0, 0, 1, 0x90]));
    });
    reopened = await openDenoKvStorage(path, OPTIONS);
    try {
      await rejectsWith(
        reopened.load(),
        StorageFormatError,
        'Malformed effects log entry at key ["e", 99, 0]: Effects entry is not an [owner, number, changes] triple',
      );
    } finally {
      reopened.close();
    }
  });
});

Deno.test("DenoKvStorage: 1000 small records with effects take the fewest atomic commits", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, OPTIONS);
    try {
      const records = [];
      const effects: [number, number, ReturnType<typeof set>[]][] = [];
      for (let n = 1; n <= 1000; n++) {
        records.push(executed([0, n], [put(`key-${n}`, bytes(16))]));
        effects.push([0, n, [set(`key-${n}`, bytes(16), { version: `${n}.0.0` })]]);
      }
      await storage.commit(batch(records, effects));
      // 2000 writes in units of 2, at most 1000 mutations per atomic commit.
      assert.equal(storage.atomicCommits, 2);
      assert.equal(storage.redoUnits, 0);
    } finally {
      storage.close();
    }
  });
});

Deno.test("DenoKvStorage: a unit too large for one commit is all or nothing across crashes", async () => {
  // Over 800 KiB: the redo log itself takes two atomic commits.
  const huge = Array.from({ length: 14 }, (_, i) => put(`v${i}`, bytes(60 * 1024, i)));
  const unit = batch([executed([1, 1], huge)], [[1, 1, [set("v0", bytes(60 * 1024))]]]);
  const before = batch([instance([0, 1])]);
  let replayed = 0;
  let crashed = true;
  for (let step = 0; crashed; step++) {
    assert.ok(step < 100, "the batch never completes");
    await withFile(async (path) => {
      const first = await openDenoKvStorage(path, OPTIONS);
      await first.commit(before);
      first.close();
      const crashing = await openDenoKvStorage(path, { ...OPTIONS, crashAfterCommits: step });
      crashed = await crashing.commit(unit).then(() => false, (error) => {
        assert.ok(error instanceof FailpointCrash);
        return true;
      });
      assert.equal(crashing.redoUnits, 1);
      crashing.close();
      const restarted = await openDenoKvStorage(path, OPTIONS);
      try {
        const units = prefixOf(await restarted.load(), { before: whole(before), last: unit });
        if (crashed && units === 1) replayed++;
        assert.deepStrictEqual(await keysUnder(path, ["redo"]), []);
      } finally {
        restarted.close();
      }
    });
  }
  assert.ok(replayed > 0, "no crash landed between the redo marker and the end of the unit");
});

Deno.test("DenoKvStorage: a write that can never fit is refused before anything is written", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, OPTIONS);
    try {
      // Values are split across pages; a key alone cannot be.
      const hugeKey = "\u20ac".repeat(30_000);
      const tooLarge = batch([instance([0, 1])], [[0, 1, [set(hugeKey, bytes(1))]]]);
      await rejectsWith(
        storage.commit(withSnapshot([], tooLarge)),
        Error,
        `Entry of key "${
          "\u20ac".repeat(32)
        }" encodes to 90015 bytes, more than a snapshot page holds`,
      );
      assert.deepStrictEqual(normalize(await storage.load()), reference([]));
      // The largest key and value the key-value layer accepts do fit: a
      // curl key's, and a Deno KV database's (a 64 KiB value, a 2 KiB key
      // plus a versionstamp suffix, every byte 2 bytes of UTF-8).
      const b = batch([instance([0, 1])], [[0, 1, [set("\u0000".repeat(1024), bytes(60 * 1024))]]]);
      await storage.commit(withSnapshot([], b));
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(b)));
      const databaseKey = `\ufffeapp\u0000d${"\u00ff".repeat(2048 + 22)}`;
      const c = batch([instance([0, 2])], [[0, 2, [set(databaseKey, bytes(65_536))]]]);
      await storage.commit(withSnapshot(whole(b), c));
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(b, c)));
    } finally {
      storage.close();
    }
  });
});

Deno.test("DenoKvStorage: calls are serialized and a closed storage refuses them", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, OPTIONS);
    const first = batch([instance([0, 1])]);
    const second = batch([instance([0, 1], { phase: 2 })]);
    await Promise.all([storage.commit(first), storage.commit(second)]);
    assert.deepStrictEqual(normalize(await storage.load()), reference(whole(first, second)));
    storage.close();
    await rejectsWith(storage.load(), Error, "Storage is closed");
  });
});

Deno.test("DenoKvStorage: a passed-in Deno.Kv is checked on first use", async () => {
  await withFile(async (path) => {
    await rawKv(path, async (kv) => {
      await kv.set(["meta", "format"], 7);
    });
    const storage = new DenoKvStorage(await Deno.openKv(path), OPTIONS);
    try {
      await rejectsWith(storage.load(), StorageFormatError, "File has storage format 7");
    } finally {
      storage.close();
    }
  });
});

Deno.test("DENO_KV_LIMITS and encodedKeyLength match this Deno", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const tooLarge = (op: Deno.AtomicOperation) => rejectsWith(op.commit(), TypeError, "too large");
    const empty = new Uint8Array(0);
    // Keys padded to exactly the limit, by the computed length, fit; one byte more does not.
    const shapes: ((pad: string) => Deno.KvKey)[] = [
      (pad) => ["i", 1, 2, 3, pad],
      (pad) => ["kv", new Uint8Array([1, 0, 2]), pad],
      (pad) => ["kv", `\u0000é😀${pad}`],
    ];
    for (const shape of shapes) {
      const pad = "x".repeat(DENO_KV_LIMITS.key - encodedKeyLength(shape("")));
      assert.equal(encodedKeyLength(shape(pad)), DENO_KV_LIMITS.key);
      assert.ok((await kv.atomic().set(shape(pad), empty).commit()).ok);
      await tooLarge(kv.atomic().set(shape(`${pad}x`), empty));
    }
    // Mutations.
    const many = (n: number) => {
      const op = kv.atomic();
      for (let i = 0; i < n; i++) op.delete(["m", i]);
      return op;
    };
    assert.ok((await many(DENO_KV_LIMITS.mutations).commit()).ok);
    await rejectsWith(many(DENO_KV_LIMITS.mutations + 1).commit(), TypeError, "Too many");
    // Keys of sets: 40 keys of 2048 bytes is exactly 80 KiB.
    const longKeys = (extra: number) => {
      const op = kv.atomic();
      for (let i = 0; i < 40; i++) {
        const key = ["k", `${i}`.padStart(2, "0")];
        op.set([...key, "x".repeat(DENO_KV_LIMITS.key - encodedKeyLength([...key, ""]))], empty);
      }
      if (extra > 0) op.set(["e"], empty);
      return op;
    };
    assert.ok((await longKeys(0).commit()).ok);
    await tooLarge(longKeys(1));
    // Total: each set costs its key twice and its value.
    const total = (extra: number) => {
      const op = kv.atomic();
      let used = 0;
      for (let i = 0; used < DENO_KV_LIMITS.totalBytes; i++) {
        const key = ["t", i];
        const cost = 2 * encodedKeyLength(key);
        const value = Math.min(DENO_KV_LIMITS.value, DENO_KV_LIMITS.totalBytes - used - cost);
        op.set(
          key,
          new Uint8Array(value + (used + cost + value === DENO_KV_LIMITS.totalBytes ? extra : 0)),
        );
        used += cost + value;
      }
      return op;
    };
    assert.ok((await total(0).commit()).ok);
    await tooLarge(total(1));
  } finally {
    kv.close();
  }
});

Deno.test("DenoKvStorage: snapshots keep the file bounded while the log grows", async () => {
  await withFile(async (path) => {
    // A small threshold, so that a few hundred changes trigger snapshots.
    const storage = await openDenoKvStorage(path, { ...OPTIONS, snapshotLogBytes: 16 * 1024 });
    const history: PersistBatch<KvCommand>[] = [];
    try {
      let largestFile = 0;
      for (let n = 1; n <= 600; n++) {
        // 50 keys rewritten over and over: the state stays small.
        let b = batch([], [[0, n, [set(`key-${n % 50}`, bytes(100, n), { version: `${n}.0.0` })]]]);
        if (storage.wantsSnapshot()) b = withSnapshot(whole(...history), b);
        await storage.commit(b);
        history.push(b);
        if (n > 300 && n % 20 === 0) {
          largestFile = Math.max(largestFile, (await keysUnder(path, [])).length);
        }
      }
      assert.ok(storage.snapshotsWritten >= 3, `${storage.snapshotsWritten} snapshots`);
      // The state is 50 entries in one page; the log between snapshots stays
      // near 16 KiB (about 130 entries): the file never holds all 600.
      assert.ok(largestFile < 250, `${largestFile} keys in the file`);
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(...history)));
    } finally {
      storage.close();
    }
    const reopened = await openDenoKvStorage(path, OPTIONS);
    try {
      assert.deepStrictEqual(normalize(await reopened.load()), reference(whole(...history)));
    } finally {
      reopened.close();
    }
  });
});

Deno.test("DenoKvStorage: after a loaded process's first cleanup, replaced log and pages are deleted by key, leaving none", async () => {
  await withFile(async (path) => {
    const options = { ...OPTIONS, snapshotLogBytes: 16 * 1024 };
    const history: PersistBatch<KvCommand>[] = [];
    const run = async (storage: DenoKvStorage<KvCommand>, from: number, to: number) => {
      for (let n = from; n <= to; n++) {
        // 200 keys of 100 bytes and 3 of 30 KB: every 7th commit logs 90 KB,
        // more than one chunk.
        const changes = n % 7 === 0
          ? [0, 1, 2].map((i) => set(`big-${i}`, bytes(30_000, n)))
          : [set(`key-${n % 200}`, bytes(100, n))];
        let b = batch([], [[0, n, changes]]);
        if (storage.wantsSnapshot()) b = withSnapshot(whole(...history), b);
        await storage.commit(b);
        history.push(b);
      }
    };
    let storage = await openDenoKvStorage(path, options);
    try {
      await storage.load();
      await run(storage, 1, 400);
      assert.ok(storage.snapshotsWritten >= 3, `${storage.snapshotsWritten} snapshots`);
      assert.ok(storage.keyedCleanups >= 1, `${storage.keyedCleanups} keyed cleanups`);
      // Commits with nothing in them finish the cleanup in progress, if any.
      for (let i = 0; i < 3; i++) await storage.commit(batch([]));
    } finally {
      storage.close();
    }
    // What is in the file: the current snapshot's pages, and log entries
    // after it only.
    const kv = await Deno.openKv(path);
    try {
      const meta = (await kv.get<Uint8Array>(["meta", "snapshot"])).value!;
      const [generation, seq] = decodeMsgpack(meta) as number[];
      for await (const entry of kv.list({ prefix: ["s"] })) {
        assert.equal(entry.key[1], generation, `stale page ${String(entry.key)}`);
      }
      for await (const entry of kv.list({ prefix: ["e"] })) {
        assert.ok((entry.key[1] as number) > seq!, `replaced log key ${String(entry.key)} left`);
      }
    } finally {
      kv.close();
    }
    storage = await openDenoKvStorage(path, options);
    try {
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(...history)));
      // A restart lists once, then deletes by key again.
      await run(storage, 401, 800);
      assert.ok(
        storage.keyedCleanups >= 1,
        `${storage.keyedCleanups} keyed cleanups after restart`,
      );
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(...history)));
    } finally {
      storage.close();
    }
  });
});

Deno.test("DenoKvStorage: a snapshot is wanted once the log outgrows the threshold and twice the state", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, { ...OPTIONS, snapshotLogBytes: 4096 });
    try {
      assert.equal(storage.wantsSnapshot(), false);
      // About 10 KiB of state, logged once.
      const entries = Array.from({ length: 10 }, (_, i) => set(`big-${i}`, bytes(1000, i)));
      const fill = batch([], [[0, 1, entries]]);
      await storage.commit(fill);
      assert.equal(storage.wantsSnapshot(), true);
      await storage.commit(withSnapshot(whole(fill), batch([])));
      assert.equal(storage.logBytes, 0);
      assert.equal(storage.wantsSnapshot(), false);
      // The threshold is now twice the 10 KiB snapshot, not 4 KiB.
      await storage.commit(batch([], [[0, 2, [set("big-0", bytes(9000, 2))]]]));
      assert.equal(storage.wantsSnapshot(), false);
      await storage.commit(batch([], [[0, 3, [set("big-1", bytes(13000, 3))]]]));
      assert.equal(storage.wantsSnapshot(), true);
    } finally {
      storage.close();
    }
  });
});

Deno.test("DenoKvStorage: a large snapshot is written a slice per commit, and a restart midway loses nothing", async () => {
  await withFile(async (path) => {
    let storage = await openDenoKvStorage(path, { ...OPTIONS, snapshotLogBytes: 4096 });
    const history: PersistBatch<KvCommand>[] = [];
    const commit = async (b: PersistBatch<KvCommand>) => {
      await storage.commit(b);
      history.push(b);
    };
    try {
      // About 1.5 MB of state: six slices of 256 KiB.
      for (let n = 0; n < 10; n++) {
        const changes = Array.from({ length: 300 }, (_, i) => set(`k${n}-${i}`, bytes(500, i)));
        await commit(batch([], [[0, n + 1, changes]]));
      }
      assert.equal(storage.wantsSnapshot(), true);
      await commit(withSnapshot(whole(...history), batch([], [[0, 11, [set("x", bytes(1))]]])));
      assert.equal(storage.snapshotsWritten, 0, "the whole snapshot went in one commit");
      assert.equal(storage.wantsSnapshot(), false, "a second snapshot was wanted while building");
      await commit(batch([], [[0, 12, [del("k0-0")]]]));
      // A restart midway: the new snapshot is not switched to, the log still counts.
      storage.close();
      storage = await openDenoKvStorage(path, { ...OPTIONS, snapshotLogBytes: 4096 });
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(...history)));
      await commit(withSnapshot(whole(...history), batch([], [[0, 13, [set("y", bytes(2))]]])));
      let commits = 1;
      for (let n = 14; storage.snapshotsWritten === 0; n++) {
        assert.ok(commits++ < 20, "the snapshot never completes");
        await commit(batch([], [[0, n, [set(`z${n}`, bytes(3))]]]));
      }
      assert.ok(commits >= 4, `the snapshot took ${commits} commits`);
      // The cleanup finishes, leaving only the log after the snapshot.
      for (let n = 100; n < 110; n++) await commit(batch([], [[0, n, [set("w", bytes(n))]]]));
      assert.ok((await keysUnder(path, ["e"])).length <= 30);
      storage.close();
      storage = await openDenoKvStorage(path, OPTIONS);
      assert.deepStrictEqual(normalize(await storage.load()), reference(whole(...history)));
    } finally {
      storage.close();
    }
  });
});

Deno.test("DenoKvStorage: a loaded storage deletes instances by key, every chunk and leftover included", async () => {
  await withFile(async (path) => {
    // Records of 1 chunk (small) and of 3 (150 KB of puts); [0, 3] is
    // rewritten small, leaving chunks 1 and 2 of its earlier version behind.
    const small = [put("s", bytes(10))];
    const large = [0, 1, 2].map((i) => put(`l${i}`, bytes(50_000, i)));
    const first = batch([
      instance([0, 1], { command: small }),
      instance([0, 2], { command: large }),
      instance([0, 3], { command: large }),
      instance([0, 6], { command: large }),
    ]);
    const rewrite = batch([instance([0, 3], { command: small, phase: 2 })]);
    const remove = batch([{ kind: "delete", owner: 0, from: 1, to: 3 }]);
    const instanceKeys = async () => {
      const kv = await Deno.openKv(path);
      try {
        const keys: string[] = [];
        for await (const entry of kv.list({ prefix: ["i"] })) keys.push(entry.key.join("."));
        return keys;
      } finally {
        kv.close();
      }
    };
    // Everything written in this process.
    let storage = await openDenoKvStorage(path, OPTIONS);
    try {
      await storage.load();
      await storage.commit(first);
      await storage.commit(rewrite);
      assert.ok((await instanceKeys()).includes("i.0.3.2"), "a leftover chunk to delete");
      await storage.commit(remove);
      assert.equal(storage.keyedDeletes, 1);
    } finally {
      storage.close();
    }
    assert.deepStrictEqual(await instanceKeys(), ["i.0.6.0", "i.0.6.1", "i.0.6.2"]);
    // Written by an earlier process: what `load` lists is known.
    storage = await openDenoKvStorage(path, OPTIONS);
    try {
      await storage.commit(first);
      await storage.commit(rewrite);
    } finally {
      storage.close();
    }
    storage = await openDenoKvStorage(path, OPTIONS);
    try {
      await storage.load();
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 1, to: 6 }]));
      assert.equal(storage.keyedDeletes, 1);
    } finally {
      storage.close();
    }
    assert.deepStrictEqual(await instanceKeys(), []);
  });
});

Deno.test("DenoKvStorage: a storage not loaded, after a failed commit, or for a range too wide, deletes by listing", async () => {
  await withFile(async (path) => {
    const storage = await openDenoKvStorage(path, OPTIONS);
    const large = [0, 1, 2].map((i) => put(`l${i}`, bytes(50_000, i)));
    try {
      await storage.commit(batch([instance([0, 1]), instance([0, 5000])]));
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 1, to: 1 }]));
      assert.equal(storage.keyedDeletes, 0);
      await storage.load();
      // Keyed, this would name 4,999 keys for one record.
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 2, to: 5000 }]));
      assert.equal(storage.keyedDeletes, 0);
      // 499 numbers, one record of 3 chunks: 501 keys, over the 500 named.
      await storage.commit(batch([instance([0, 7000], { command: large })]));
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 6502, to: 7000 }]));
      assert.equal(storage.keyedDeletes, 0);
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 7001, to: 7001 }]));
      assert.equal(storage.keyedDeletes, 1);
      // A refused batch: nothing here is trusted to be known until a load.
      await rejectsWith(
        storage.commit(batch([{ kind: "delete", owner: 0, from: 1.5, to: 2 }])),
        Error,
        "no valid range",
      );
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 7002, to: 7002 }]));
      assert.equal(storage.keyedDeletes, 1);
      assert.deepStrictEqual((await storage.load()).records, []);
      await storage.commit(batch([{ kind: "delete", owner: 0, from: 7003, to: 7003 }]));
      assert.equal(storage.keyedDeletes, 2);
    } finally {
      storage.close();
    }
  });
});
