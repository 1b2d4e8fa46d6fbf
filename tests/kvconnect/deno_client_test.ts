/**
 * Deno's own KV client, unmodified (`Deno.openKv(url)`), against a real
 * local cluster of three replica processes: every operation written through
 * one replica and read through another, databases isolated, concurrent
 * atomic checks on one key where exactly one wins, watch, and a history of
 * concurrent operations checked for linearizability (src/check).
 */

import assert from "node:assert/strict";
import { describeCheckResult, HistoryRecorder } from "../../src/check/mod.ts";
import { type ProcessCluster, startProcessCluster } from "../../src/chaos/process_cluster.ts";

/** Any token will do on a cluster without a client token; Deno's client insists on one. */
Deno.env.set("DENO_KV_ACCESS_TOKEN", "any-token-at-all");

function open(cluster: ProcessCluster, replica: number, database: string): Promise<Deno.Kv> {
  return Deno.openKv(`${cluster.urls[replica]}/databases/${database}/connect`);
}

async function collect<T>(iterator: Deno.KvListIterator<T>): Promise<[Deno.KvKey, T][]> {
  const entries: [Deno.KvKey, T][] = [];
  for await (const entry of iterator) entries.push([entry.key, entry.value]);
  return entries;
}

async function everyOperation(cluster: ProcessCluster): Promise<void> {
  const kvs = await Promise.all([0, 1, 2].map((id) => open(cluster, id, "ops")));
  const [a, b, c] = kvs as [Deno.Kv, Deno.Kv, Deno.Kv];
  try {
    // set at one, get at another: same value, same versionstamp.
    const written = await a.set(["user", "ada"], { name: "Ada", born: 1815 });
    assert.ok(written.ok);
    assert.match(written.versionstamp, /^[0-9a-f]{20}$/);
    const read = await b.get<{ name: string }>(["user", "ada"]);
    assert.deepEqual(read.value, { name: "Ada", born: 1815 });
    assert.equal(read.versionstamp, written.versionstamp);
    assert.deepEqual((await c.get(["user", "nobody"])).value, null);

    // getMany, list by prefix, start/end, reverse, limit, cursor.
    for (const [i, name] of ["bob", "cy", "dee", "eve"].entries()) {
      await kvs[i % 3]!.set(["user", name], { name, i });
    }
    const many = await c.getMany([["user", "bob"], ["user", "zed"], ["user", "eve"]]);
    assert.deepEqual(many.map((entry) => entry.value), [{ name: "bob", i: 0 }, null, {
      name: "eve",
      i: 3,
    }]);
    const names = (entries: [Deno.KvKey, unknown][]) => entries.map(([key]) => key[1]);
    assert.deepEqual(names(await collect(a.list({ prefix: ["user"] }))), [
      "ada",
      "bob",
      "cy",
      "dee",
      "eve",
    ]);
    assert.deepEqual(
      names(await collect(b.list({ start: ["user", "bob"], end: ["user", "dee"] }))),
      ["bob", "cy"],
    );
    assert.deepEqual(
      names(await collect(c.list({ prefix: ["user"] }, { reverse: true, limit: 2 }))),
      ["eve", "dee"],
    );
    const firstPage = a.list({ prefix: ["user"] }, { limit: 2 });
    assert.deepEqual(names(await collect(firstPage)), ["ada", "bob"]);
    const nextPage = b.list({ prefix: ["user"] }, { cursor: firstPage.cursor, limit: 2 });
    assert.deepEqual(names(await collect(nextPage)), ["cy", "dee"]);
    // Pages of 1 through many round trips, at another replica.
    assert.deepEqual(
      names(await collect(c.list({ prefix: ["user"] }, { batchSize: 1 }))).length,
      5,
    );

    // delete at one, gone at another.
    await b.delete(["user", "cy"]);
    assert.equal((await c.get(["user", "cy"])).versionstamp, null);

    // atomic check-and-set: a stale versionstamp fails, the current one wins.
    const current = await a.get(["user", "ada"]);
    const stale = await b.atomic().check({
      key: ["user", "ada"],
      versionstamp: "00000000000000000000",
    })
      .set(["user", "ada"], "stale").commit();
    assert.equal(stale.ok, false);
    const fresh = await b.atomic().check(current).set(["user", "ada"], "fresh").commit();
    assert.ok(fresh.ok);
    assert.ok(fresh.versionstamp > current.versionstamp!, "versionstamps increase per key");
    assert.equal((await c.get(["user", "ada"])).value, "fresh");
    const mustBeAbsent = await c.atomic().check({ key: ["user", "ada"], versionstamp: null })
      .set(["user", "ada"], "x").commit();
    assert.equal(mustBeAbsent.ok, false);

    // sum, min, max on KvU64 at different replicas.
    await a.atomic().sum(["n", "sum"], 5n).commit();
    await b.atomic().sum(["n", "sum"], 7n).commit();
    await c.atomic().sum(["n", "sum"], 2n ** 64n - 1n).commit(); // wraps mod 2^64
    assert.equal((await a.get<Deno.KvU64>(["n", "sum"])).value?.value, 11n);
    await a.atomic().max(["n", "max"], 5n).commit();
    await b.atomic().max(["n", "max"], 3n).commit();
    await c.atomic().min(["n", "min"], 5n).commit();
    await a.atomic().min(["n", "min"], 9n).commit();
    assert.equal((await b.get<Deno.KvU64>(["n", "max"])).value?.value, 5n);
    assert.equal((await b.get<Deno.KvU64>(["n", "min"])).value?.value, 5n);
    // sum on a value that is not a KvU64: 400 with denokv's message, nothing applied.
    await a.set(["n", "text"], "not a number");
    await assert.rejects(
      b.atomic().sum(["n", "text"], 1n).commit(),
      /Failed to perform 'sum' mutation on a non-U64 value in the database/,
    );
    assert.equal((await c.get(["n", "text"])).value, "not a number");
    // Sums of plain numbers and bigints (denokv's V8 sums, outside Deno's
    // typed API), at different replicas.
    const sum = (key: Deno.KvKey, value: number | bigint) =>
      ({ type: "sum", key, value }) as unknown as Deno.KvMutation;
    await a.atomic().mutate(sum(["n", "float"], 1.5)).commit();
    await b.atomic().mutate(sum(["n", "float"], 2)).commit();
    assert.equal((await c.get(["n", "float"])).value, 3.5);
    await c.atomic().mutate(sum(["n", "big"], 2n ** 70n)).commit();
    await a.atomic().mutate(sum(["n", "big"], -1n)).commit();
    assert.equal((await b.get(["n", "big"])).value, 2n ** 70n - 1n);
    await assert.rejects(
      a.atomic().mutate(sum(["n", "sum"], 1)).commit(),
      /Cannot sum KvU64 with Number/,
    );

    // A multi-key atomic: all or nothing.
    const both = await a.atomic().set(["pair", 1], "one").set(["pair", 2], "two").commit();
    assert.ok(both.ok);
    const pair = await c.getMany([["pair", 1], ["pair", 2]]);
    assert.deepEqual(pair.map((entry) => entry.versionstamp), [
      both.versionstamp,
      both.versionstamp,
    ]);

    // A versionstamped key: the commit's versionstamp ends the key.
    const logged = await b.atomic().set(["log", b.commitVersionstamp()], "entry").commit();
    assert.ok(logged.ok);
    const log = await collect(c.list({ prefix: ["log"] }));
    assert.equal(log.length, 1);
    assert.equal(log[0]![0][1], logged.versionstamp);

    // expireIn is stored with the entry (the key stays readable before it).
    await a.set(["temp"], "soon gone", { expireIn: 60_000 });
    assert.equal((await b.get(["temp"])).value, "soon gone");

    // Values of every encoding round-trip: V8, bytes, KvU64.
    await c.set(["bytes"], new Uint8Array([0, 255, 7]));
    assert.deepEqual((await a.get(["bytes"])).value, new Uint8Array([0, 255, 7]));
    await c.set(["u64"], new Deno.KvU64(42n));
    assert.equal((await b.get<Deno.KvU64>(["u64"])).value?.value, 42n);
  } finally {
    for (const kv of kvs) kv.close();
  }
}

async function databasesIsolated(cluster: ProcessCluster): Promise<void> {
  const one = await open(cluster, 0, "tenant-one");
  const two = await open(cluster, 1, "tenant-two");
  try {
    await one.set(["shared"], "one's");
    assert.equal((await two.get(["shared"])).value, null);
    await two.set(["shared"], "two's");
    assert.equal((await one.get(["shared"])).value, "one's");
    assert.deepEqual((await collect(two.list({ prefix: [] }))).map(([, value]) => value), [
      "two's",
    ]);
  } finally {
    one.close();
    two.close();
  }
}

async function oneCheckWins(cluster: ProcessCluster): Promise<void> {
  const kvs = await Promise.all([0, 1, 2].map((id) => open(cluster, id, "race")));
  try {
    for (let round = 0; round < 5; round++) {
      const key = ["slot", round];
      await kvs[0]!.set(key, "initial");
      const seen = await Promise.all(kvs.map((kv) => kv.get(key)));
      assert.ok(seen.every((entry) => entry.versionstamp === seen[0]!.versionstamp));
      const results = await Promise.all(
        kvs.map((kv, id) => kv.atomic().check(seen[id]!).set(key, `winner-${id}`).commit()),
      );
      const winners = results.flatMap((result, id) => result.ok ? [id] : []);
      assert.equal(winners.length, 1, `round ${round}: exactly one check wins`);
      assert.equal((await kvs[(round + 1) % 3]!.get(key)).value, `winner-${winners[0]}`);
    }
  } finally {
    for (const kv of kvs) kv.close();
  }
}

async function watchAcrossReplicas(cluster: ProcessCluster): Promise<void> {
  const watching = await open(cluster, 2, "watched");
  const writing = await open(cluster, 0, "watched");
  const stream = watching.watch([["w", "a"], ["w", "b"]]);
  const reader = stream.getReader();
  try {
    const first = await reader.read();
    assert.deepEqual(first.value!.map((entry) => entry.value), [null, null]);
    const written = await writing.set(["w", "b"], "hello");
    // The next frame (skipping any repeat of the first state) shows the write.
    for (;;) {
      const frame = await reader.read();
      if (frame.value![1]!.versionstamp === null) continue;
      assert.equal(frame.value![1]!.value, "hello");
      assert.equal(frame.value![1]!.versionstamp, written.versionstamp);
      break;
    }
  } finally {
    await reader.cancel();
    watching.close();
    writing.close();
  }
}

/**
 * Nine clients, three per replica, run random get / set / delete / check-set
 * operations on three keys; values are unique, so a check of the versionstamp
 * a client read is a compare-and-set of the value it read.
 */
async function linearizableHistory(cluster: ProcessCluster, seed: number): Promise<void> {
  console.log(`linearizability history seed ${seed}`);
  let state = seed;
  const random = () => {
    state = (Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return state / 2 ** 32;
  };
  const recorder = new HistoryRecorder({ now: () => performance.now() });
  const clients = await Promise.all(
    Array.from({ length: 9 }, (_, process) => open(cluster, process % 3, "history")),
  );
  const keys = ["k0", "k1", "k2"];
  let unique = 0;
  try {
    await Promise.all(clients.map(async (kv, process) => {
      const last = new Map<string, Deno.KvEntryMaybe<string>>();
      for (let step = 0; step < 25; step++) {
        const key = keys[Math.floor(random() * keys.length)]!;
        const choice = random();
        const seen = last.get(key);
        if (choice < 0.35) {
          recorder.invoke(process, { f: "get", key });
          const entry = await kv.get<string>([key]);
          recorder.ok(process, { value: entry.value });
          last.set(key, entry);
        } else if (choice < 0.6) {
          const value = `v${process}-${unique++}`;
          recorder.invoke(process, { f: "put", key, value });
          await kv.set([key], value);
          recorder.ok(process);
        } else if (choice < 0.7) {
          recorder.invoke(process, { f: "delete", key });
          await kv.delete([key]);
          recorder.ok(process);
        } else if (seen !== undefined) {
          const value = `v${process}-${unique++}`;
          recorder.invoke(process, { f: "cas", key, from: seen.value, to: value });
          const result = await kv.atomic().check(seen).set([key], value).commit();
          if (result.ok) recorder.ok(process);
          else recorder.fail(process);
        }
      }
    }));
  } finally {
    for (const kv of clients) kv.close();
  }
  const result = recorder.check();
  assert.equal(result.verdict, "linearizable", describeCheckResult(result));
}

Deno.test({
  name: "Deno's own client against a real 3-replica cluster",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await startProcessCluster(3);
    try {
      await t.step(
        "every operation, written at one replica and read at another",
        () => everyOperation(cluster),
      );
      await t.step("two databases are isolated", () => databasesIsolated(cluster));
      await t.step(
        "concurrent atomic checks on one key at different replicas: one wins",
        () => oneCheckWins(cluster),
      );
      await t.step(
        "watch at one replica sees a write at another",
        () => watchAcrossReplicas(cluster),
      );
      await t.step(
        "a history of concurrent operations is linearizable",
        () => linearizableHistory(cluster, Date.now() % 100_000),
      );
    } catch (error) {
      for (let id = 0; id < 3; id++) console.log(`--- replica ${id}\n${cluster.output(id)}`);
      throw error;
    } finally {
      await cluster.stop();
    }
  },
});
