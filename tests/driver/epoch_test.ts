/**
 * Configuration changes through the driver, on in-process clusters (real
 * drivers, memory storage, the in-memory transport with the real codec):
 * the epoch ends where the change executes, writes go on across it, and a
 * replaced or removed replica takes no part any more.
 */

import assert from "node:assert/strict";
import type { Configuration } from "../../src/core/configuration.ts";
import { decideChange } from "../../src/core/configuration_change.ts";
import { defaultConfiguration } from "../../src/driver/epoch.ts";
import { ReplicaDriver } from "../../src/driver/driver.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { SystemClock } from "../../src/runtime/clock.ts";
import { SystemRandom } from "../../src/runtime/random.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { ClientRequestError, UnavailableError } from "../../src/errors.ts";
import { startTestCluster } from "../server/cluster_helpers.ts";
import { waitFor } from "../wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function allAlive(config: Configuration) {
  return {
    inFlight: false,
    members: new Map(config.members.map((m) => [m.id, { alive: true, caughtUp: true }])),
  };
}

async function read(node: ReplicaDriver, key: string): Promise<string | undefined> {
  const result = await node.submit({ op: "get", key });
  assert.equal(result.op, "get");
  return result.op === "get" && result.entry !== undefined
    ? decoder.decode(result.entry.value)
    : undefined;
}

Deno.test("an epoch bump under writes from every replica: acknowledged writes survive, state equal, versions tagged", async () => {
  const cluster = await startTestCluster(3);
  try {
    const acknowledged = new Map<string, string>();
    let writing = true;
    const writers = cluster.nodes.map(async (node, id) => {
      for (let i = 0; writing && i < 400; i++) {
        const key = `k${id}-${i % 20}`;
        const value = `${id}.${i}`;
        try {
          await node.submit({ op: "put", key, value: encoder.encode(value) });
          acknowledged.set(key, value);
        } catch (error) {
          // Refused (nothing proposed) is allowed; nothing else.
          if (!(error instanceof UnavailableError)) throw error;
        }
      }
    });
    await waitFor(() => acknowledged.size >= 20, 5000, "writes before the change");
    const next = { ...defaultConfiguration(3), epoch: 2 };
    const result = await cluster.nodes[1]!.submit({ op: "reconf", configuration: next });
    assert.deepEqual(result, { op: "reconf", ok: true, epoch: 2 });
    await waitFor(
      () => cluster.nodes.every((node) => node.configuration.epoch === 2),
      5000,
      "every replica in epoch 2",
    );
    await waitFor(() => acknowledged.size >= 50, 10_000, "writes after the change");
    writing = false;
    await Promise.all(writers);
    // Every acknowledged write is readable, through every replica.
    for (const node of cluster.nodes) {
      for (const [key, value] of acknowledged) {
        const seen = await read(node, key);
        // A later write to the key may have been refused after it was
        // proposed; the acknowledged one or a later one of the same writer.
        assert.ok(seen !== undefined, `${key} lost at replica ${node.id}`);
        const [writer, index] = value.split(".").map(Number);
        const [seenWriter, seenIndex] = seen.split(".").map(Number);
        assert.equal(seenWriter, writer);
        assert.ok(seenIndex! >= index!, `${key}: ${seen} is older than acknowledged ${value}`);
      }
    }
    await waitFor(
      () => new Set(cluster.nodes.map((node) => node.state.digest)).size === 1,
      5000,
      "equal states",
    );
    const put = await cluster.nodes[0]!.submit({
      op: "put",
      key: "after",
      value: encoder.encode("x"),
    });
    assert.ok(put.op === "put" && put.ok && put.version.endsWith(".e2"), JSON.stringify(put));
  } finally {
    await cluster.stop();
  }
});

Deno.test("a replace retires the old incarnation: it refuses clients, and the others go on without it", async () => {
  const cluster = await startTestCluster(3);
  try {
    await cluster.nodes[0]!.submit({ op: "put", key: "a", value: encoder.encode("1") });
    const decision = decideChange(defaultConfiguration(3), { kind: "replace", id: 2 }, {
      inFlight: false,
      members: new Map([[0, { alive: true, caughtUp: true }], [1, {
        alive: true,
        caughtUp: true,
      }]]),
    });
    assert.ok(decision.ok, decision.ok ? "" : decision.reason);
    await cluster.nodes[0]!.submit({ op: "reconf", configuration: decision.next });
    await waitFor(
      () => cluster.nodes[0]!.configuration.epoch === 2 && cluster.nodes[2]!.removed,
      5000,
      "epoch 2, replica 2 retired",
    );
    assert.match(cluster.nodes[2]!.retired!, /replaced it by incarnation 2/);
    await assert.rejects(
      cluster.nodes[2]!.submit({ op: "get", key: "a" }),
      (error: unknown) => error instanceof UnavailableError && /no part/.test(error.message),
    );
    // Two voters of three: the slow path commits.
    await cluster.nodes[1]!.submit({ op: "put", key: "b", value: encoder.encode("2") });
    assert.equal(await read(cluster.nodes[0]!, "a"), "1");
    assert.equal(await read(cluster.nodes[0]!, "b"), "2");
  } finally {
    await cluster.stop();
  }
});

Deno.test("concurrent changes for the same epoch: one wins everywhere, the other changes nothing", async () => {
  const cluster = await startTestCluster(3);
  try {
    const base = defaultConfiguration(3);
    const a = decideChange(base, { kind: "add", url: "http://10.0.0.1:1" }, allAlive(base));
    const b = decideChange(base, { kind: "add", url: "http://10.0.0.2:1" }, allAlive(base));
    assert.ok(a.ok && b.ok);
    const outcomes = await Promise.allSettled([
      cluster.nodes[0]!.submit({ op: "reconf", configuration: a.next }),
      cluster.nodes[2]!.submit({ op: "reconf", configuration: b.next }),
    ]);
    // The loser executed after the winner in the old epoch (a no-op there),
    // or was refused when the winner ended the epoch before it executed.
    assert.ok(outcomes.some((outcome) => outcome.status === "fulfilled"));
    for (const outcome of outcomes) {
      if (outcome.status === "rejected") {
        assert.ok(
          outcome.reason instanceof ClientRequestError && outcome.reason.status === 409,
          String(outcome.reason),
        );
      }
    }
    await waitFor(
      () => cluster.nodes.every((node) => node.configuration.epoch === 2),
      5000,
      "epoch 2 everywhere",
    );
    const chosen = JSON.stringify(cluster.nodes[0]!.configuration);
    assert.ok(chosen === JSON.stringify(a.next) || chosen === JSON.stringify(b.next));
    for (const node of cluster.nodes) assert.equal(JSON.stringify(node.configuration), chosen);
    // The loser executed in epoch 2 as a stale change: still epoch 2.
    await cluster.nodes[1]!.submit({ op: "put", key: "x", value: encoder.encode("1") });
    assert.ok(cluster.nodes.every((node) => node.configuration.epoch === 2));
  } finally {
    await cluster.stop();
  }
});

Deno.test("a replica whose store was wiped, started again as it was, retires instead of voting with amnesia", async () => {
  const cluster = await startTestCluster(3);
  try {
    await cluster.nodes[0]!.submit({ op: "put", key: "a", value: encoder.encode("1") });
    await cluster.nodes[0]!.submit({
      op: "reconf",
      configuration: { ...defaultConfiguration(3), epoch: 2 },
    });
    await waitFor(
      () => cluster.nodes.every((node) => node.configuration.epoch === 2),
      5000,
      "epoch 2",
    );
    // Replica 2 loses its disk and comes back under its old incarnation.
    cluster.storages[2] = new MemoryStorage<KvCommand>();
    await cluster.restart(2);
    await waitFor(() => cluster.nodes[2]!.removed, 10_000, "replica 2 to retire");
    assert.match(cluster.nodes[2]!.retired!, /started with an empty store .* must be replaced/);
    // It gave nothing and takes nothing; the others go on.
    await cluster.nodes[1]!.submit({ op: "put", key: "b", value: encoder.encode("2") });
    assert.equal(await read(cluster.nodes[0]!, "b"), "2");
  } finally {
    await cluster.stop();
  }
});

Deno.test("a joiner gives no snapshot of its epoch to a peer behind it: it has no state yet", async () => {
  const cluster = await startTestCluster(3);
  try {
    const joiner = ReplicaDriver.fromLoaded({
      id: 2,
      replicas: 3,
      configuration: { ...defaultConfiguration(3), epoch: 2 },
      joining: true,
      storage: new MemoryStorage<KvCommand>(),
      transport: cluster.network.transport(2),
      clock: new SystemClock(),
      random: new SystemRandom(),
    }, { records: [], pruneFloor: undefined, entries: [] });
    assert.equal(joiner.joining, true);
    await assert.rejects(
      joiner.takeSnapshot(0, 1),
      (error: unknown) =>
        error instanceof UnavailableError && /no state of its epoch/.test(error.message),
    );
    await joiner.stop();
  } finally {
    await cluster.stop();
  }
});
