/**
 * Retirement through the driver, on in-process clusters (real drivers, memory
 * storage, the in-memory transport with the real codec): a member removed
 * while it was down learns it when it returns, and a member that executes
 * its own removal answers the old epoch until the new configuration runs
 * (membership design, Retire).
 */

import assert from "node:assert/strict";
import type { Configuration } from "../../src/core/configuration.ts";
import type { Message } from "../../src/core/types.ts";
import { defaultConfiguration } from "../../src/driver/epoch.ts";
import type { ReplicaDriver } from "../../src/driver/driver.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { UnavailableError } from "../../src/errors.ts";
import { createApp } from "../../src/server/app.ts";
import { startTestCluster, type TestCluster } from "../server/cluster_helpers.ts";
import { waitFor } from "../wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Epoch 2 of a cluster of 5 started from `defaultConfiguration`, with members 0, 1 and 2 only. */
function withoutThreeAndFour(): Configuration {
  const base = defaultConfiguration(5);
  return { ...base, epoch: 2, members: base.members.filter((member) => member.id <= 2) };
}

async function read(node: ReplicaDriver, key: string): Promise<string | undefined> {
  const result = await node.submit({ op: "get", key });
  return result.op === "get" && result.entry !== undefined
    ? decoder.decode(result.entry.value)
    : undefined;
}

/** Replicas `receivers` lose every Commit message `sender` sends them (the network ate them). */
function loseCommits(cluster: TestCluster, sender: number, receivers: readonly number[]): void {
  for (const id of receivers) {
    cluster.network.attach(id, (batch) =>
      cluster.nodes[id]!.receive(
        batch.from !== sender ? batch : {
          ...batch,
          messages: batch.messages.filter((message: Message<KvCommand>) =>
            message.type !== "commit"
          ),
        },
      ));
  }
}

Deno.test("a member removed while it was down learns it when it returns: it retires and installs nothing", async () => {
  const cluster = await startTestCluster(5);
  try {
    await cluster.nodes[0]!.submit({ op: "put", key: "a", value: encoder.encode("1") });
    // Replicas 3 and 4 are cut off while the others remove them.
    cluster.network.setDown(3, true);
    cluster.network.setDown(4, true);
    await cluster.nodes[0]!.submit({ op: "reconf", configuration: withoutThreeAndFour() });
    await waitFor(
      () => [0, 1, 2].every((id) => cluster.nodes[id]!.configuration.epoch === 2),
      5000,
      "epoch 2 at replicas 0, 1 and 2",
    );
    // Replica 3 restarts on its store, in epoch 1, and is reachable again:
    // nobody sends a non-member anything, but its peers refuse its batches
    // with their epoch, and it asks one of them for its configuration.
    await cluster.restart(3);
    assert.equal(cluster.nodes[3]!.configuration.epoch, 1);
    cluster.network.setDown(3, false);
    await waitFor(() => cluster.nodes[3]!.removed, 10_000, "replica 3 to retire");
    const zombie = cluster.nodes[3]!;
    assert.match(zombie.retired!, /epoch 2 does not have it as a member/);
    assert.equal(zombie.leaving, false);
    await assert.rejects(
      zombie.submit({ op: "get", key: "a" }),
      (error: unknown) => error instanceof UnavailableError && /no part/.test(error.message),
    );
    // It installed nothing: its store still holds epoch 1.
    assert.equal((await cluster.storages[3]!.load()).configuration, undefined);
    // Operators see it: not ready, and retired in /status.
    const app = createApp({ node: zombie, replicas: 5, secret: "retire-test-secret-0123" });
    const ready = await app.request("/readyz");
    assert.equal(ready.status, 503);
    assert.match(await ready.text(), /takes no part/);
    const status = await (await app.request("/status")).json();
    assert.match(status.retired, /epoch 2 does not have it as a member/);
    assert.equal(status.leaving, false);
    // The others go on without it.
    await cluster.nodes[1]!.submit({ op: "put", key: "b", value: encoder.encode("2") });
    assert.equal(await read(cluster.nodes[0]!, "b"), "2");
  } finally {
    await cluster.stop();
  }
});

Deno.test("removing 2 of 5 with a third member down: the removed ones answer epoch 1 until 0 and 1 run epoch 2", async () => {
  const cluster = await startTestCluster(5);
  try {
    await cluster.nodes[0]!.submit({ op: "put", key: "a", value: encoder.encode("1") });
    // Replica 2 is down; replica 3 proposes removing 3 and 4, and its
    // Commits to 0 and 1 are lost: only 3 and 4 know the change committed,
    // and they execute it first. 0 and 1 must recover it in epoch 1, where
    // a quorum is 3 of 5: they need an answer from 3 or 4.
    cluster.network.setDown(2, true);
    loseCommits(cluster, 3, [0, 1]);
    const result = await cluster.nodes[3]!.submit({
      op: "reconf",
      configuration: withoutThreeAndFour(),
    });
    assert.deepEqual(result, { op: "reconf", ok: true, epoch: 2 });
    await waitFor(
      () => cluster.nodes[3]!.removed && cluster.nodes[4]!.removed,
      5000,
      "replicas 3 and 4 to execute their removal",
    );
    assert.match(cluster.nodes[3]!.retired!, /epoch 2 removed it/);
    const taken = () =>
      cluster.nodes[3]!.metrics.messagesReceived + cluster.nodes[4]!.metrics.messagesReceived;
    const takenAtRemoval = taken();
    await waitFor(
      () =>
        cluster.nodes[0]!.configuration.epoch === 2 && cluster.nodes[1]!.configuration.epoch === 2,
      15_000,
      "replicas 0 and 1 to finish the change and run epoch 2",
    );
    assert.ok(taken() > takenAtRemoval, "3 and 4 took epoch-1 messages after their removal");
    // Once two voters of {0, 1, 2} (f + 1) run epoch 2, 3 and 4 stop answering.
    await waitFor(
      () => !cluster.nodes[3]!.leaving && !cluster.nodes[4]!.leaving,
      10_000,
      "replicas 3 and 4 to stop answering epoch 1",
    );
    assert.equal(cluster.nodes[3]!.configuration.epoch, 2);
    // Epoch 2 has a quorum (0 and 1 of three): writes go on.
    await cluster.nodes[0]!.submit({ op: "put", key: "b", value: encoder.encode("2") });
    assert.equal(await read(cluster.nodes[1]!, "a"), "1");
    assert.equal(await read(cluster.nodes[1]!, "b"), "2");
    // A restart of a removed member finds its removal executed in its
    // store: it retires again (it does not come back as an epoch-1 voter).
    await cluster.restart(3);
    assert.match(cluster.nodes[3]!.retired ?? "", /epoch 2 removed it/);
    await assert.rejects(
      cluster.nodes[3]!.submit({ op: "get", key: "a" }),
      (error: unknown) => error instanceof UnavailableError && /no part/.test(error.message),
    );
  } finally {
    await cluster.stop();
  }
});

Deno.test("the same case when removed members stop answering at once: the change waits for the member that was down", async () => {
  const cluster = await startTestCluster(5, { maxLeavingMs: 0 });
  try {
    await cluster.nodes[0]!.submit({ op: "put", key: "a", value: encoder.encode("1") });
    cluster.network.setDown(2, true);
    loseCommits(cluster, 3, [0, 1]);
    await cluster.nodes[3]!.submit({ op: "reconf", configuration: withoutThreeAndFour() });
    await waitFor(
      () => cluster.nodes[3]!.removed && cluster.nodes[4]!.removed,
      5000,
      "replicas 3 and 4 to execute their removal",
    );
    assert.ok(!cluster.nodes[3]!.leaving && !cluster.nodes[4]!.leaving);
    // 0 and 1 try to recover the change, and fail: two answers of five.
    await waitFor(
      () =>
        cluster.nodes[0]!.stats.recoveriesStarted + cluster.nodes[1]!.stats.recoveriesStarted >= 3,
      15_000,
      "recovery to be tried again after a failed attempt",
    );
    assert.equal(cluster.nodes[0]!.configuration.epoch, 1);
    assert.equal(cluster.nodes[1]!.configuration.epoch, 1);
    // Only the return of the third old member lets them finish it.
    cluster.network.setDown(2, false);
    await waitFor(
      () => [0, 1, 2].every((id) => cluster.nodes[id]!.configuration.epoch === 2),
      20_000,
      "epoch 2 once replica 2 is back",
    );
  } finally {
    await cluster.stop();
  }
});
