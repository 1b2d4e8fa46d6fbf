import assert from "node:assert/strict";
import type { ReplicaDriver } from "../../src/driver/driver.ts";
import { databaseDataSpan, databaseKey, versionstampCounter } from "../../src/kv/database_keys.ts";
import type { KvResult } from "../../src/kv/state_machine.ts";
import type { SnapshotRange } from "../../src/kv/txn_commands.ts";
import { startTestCluster, waitFor } from "../server/cluster_helpers.ts";

const key = (...bytes: number[]) => databaseKey("app", new Uint8Array(bytes));
const u64 = (n: number) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
};
const WHOLE: SnapshotRange = { ...databaseDataSpan("app"), limit: 1000, reverse: false };

function stampOf(result: KvResult): string {
  assert.ok(result.op === "atomic" && result.ok, Deno.inspect(result));
  return result.version;
}

function keysRead(result: KvResult): string[][] {
  assert.ok(result.op === "snapshot", Deno.inspect(result));
  return result.ranges.map((range) => range.map((entry) => entry.key));
}

Deno.test("atomic commands replicate; a snapshot read at another replica sees them without a command", async () => {
  const cluster = await startTestCluster(3);
  try {
    const [writer, , reader] = cluster.nodes as [ReplicaDriver, ReplicaDriver, ReplicaDriver];
    const stamps: string[] = [];
    for (let i = 0; i < 5; i++) {
      const result = await writer.submit({
        op: "atomic",
        database: "app",
        floor: writer.state.highestStamp,
        checks: i === 0 ? [{ key: key(1), version: null }] : [],
        mutations: [
          { kind: "set", key: key(1 + i), value: u64(i), encoding: 2, expiresAt: 1000 + i },
          { kind: "sum", key: key(100), value: u64(1), encoding: 2 },
        ],
      });
      stamps.push(stampOf(result));
      // Acknowledged at 0: a snapshot at 2 that starts now sees it.
      const read = await reader.read({ op: "snapshot", ranges: [WHOLE] });
      assert.equal(keysRead(read)[0]!.length, i + 2);
    }
    // Through one replica, with the floor, versionstamps increase across keys.
    for (let i = 1; i < stamps.length; i++) {
      assert.ok(versionstampCounter(stamps[i]!)! > versionstampCounter(stamps[i - 1]!)!);
    }
    const proposed = reader.metrics.commandsProposed;
    const both = await reader.read({
      op: "snapshot",
      ranges: [WHOLE, { start: key(2), end: `${key(2)}\u0000`, limit: 1, reverse: false }],
    });
    assert.deepEqual(keysRead(both)[1], [key(2)]);
    assert.equal(reader.metrics.commandsProposed, proposed, "no read became a command");
    assert.ok(reader.quorumReadStatus().served >= 6);
    // The counter is 5 on every replica: each sum applied exactly once.
    await waitFor(
      () => cluster.nodes.every((node) => node.state.digest === writer.state.digest),
      5000,
      "every replica at the same state",
    );
    for (const node of cluster.nodes) {
      assert.deepEqual(node.state.read(key(100))?.value, u64(5));
      assert.equal(node.state.highestStamp, writer.state.highestStamp);
    }
    // Expiry: a replicated delete of what expired, at the version that expired.
    const expired = cluster.nodes[1]!.state.expiredEntries(1002, 10);
    assert.deepEqual(expired.map((e) => e.key), [key(1), key(2), key(3)]);
    const result = await cluster.nodes[1]!.submit({ op: "expire", keys: expired });
    assert.deepEqual(result, { op: "expire", ok: true, deleted: 3 });
    const after = await reader.read({ op: "snapshot", ranges: [WHOLE] });
    assert.deepEqual(keysRead(after)[0], [key(4), key(5), key(100)]);
  } finally {
    await cluster.stop();
  }
});

Deno.test("with quorum reads off a snapshot read is a command, and answers the same", async () => {
  const cluster = await startTestCluster(3, { quorumReads: false });
  try {
    const [writer, reader] = cluster.nodes as [ReplicaDriver, ReplicaDriver];
    stampOf(
      await writer.submit({
        op: "atomic",
        database: "app",
        checks: [],
        mutations: [{ kind: "set", key: key(7), value: u64(7), encoding: 2 }],
      }),
    );
    const proposed = reader.metrics.commandsProposed;
    const read = await reader.read({ op: "snapshot", ranges: [WHOLE] });
    assert.deepEqual(keysRead(read), [[key(7)]]);
    assert.equal(reader.metrics.commandsProposed, proposed + 1);
  } finally {
    await cluster.stop();
  }
});

Deno.test("a restarted replica keeps its highest versionstamp and its expiring keys", async () => {
  const cluster = await startTestCluster(3, { snapshotEveryCommits: 3 });
  try {
    const writer = cluster.nodes[0]!;
    for (let i = 0; i < 6; i++) {
      stampOf(
        await writer.submit({
          op: "atomic",
          database: "app",
          floor: writer.state.highestStamp,
          checks: [],
          mutations: [{ kind: "set", key: key(i), value: u64(i), encoding: 2, expiresAt: 50 + i }],
        }),
      );
    }
    const highest = writer.state.highestStamp;
    await cluster.restart(0);
    const restarted = cluster.nodes[0]!;
    assert.equal(restarted.state.highestStamp, highest);
    assert.equal(restarted.state.expiredEntries(1000, 100).length, 6);
  } finally {
    await cluster.stop();
  }
});
