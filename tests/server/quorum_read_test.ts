import assert from "node:assert/strict";
import type { ReplicaDriver } from "../../src/driver/driver.ts";
import { OutcomeUnknownError } from "../../src/errors.ts";
import type { KvResult } from "../../src/kv/state_machine.ts";
import { startTestCluster, waitFor } from "./cluster_helpers.ts";

const text = (value: string) => new TextEncoder().encode(value);
const valueOf = (result: KvResult) =>
  result.op === "get" && result.ok && result.entry !== undefined
    ? new TextDecoder().decode(result.entry.value)
    : undefined;

/** Messages received by every node so far. */
const messages = (nodes: readonly ReplicaDriver[]) =>
  nodes.reduce((sum, node) => sum + node.metrics.messagesReceived, 0);

Deno.test("without a lease a read goes through a majority, not a command, and sees the last write", async () => {
  const cluster = await startTestCluster(3);
  try {
    const [writer, , reader] = cluster.nodes as [ReplicaDriver, ReplicaDriver, ReplicaDriver];
    const proposedBefore = reader.metrics.commandsProposed;
    for (let i = 0; i < 20; i++) {
      const put = await writer.submit({ op: "put", key: "k", value: text(`v${i}`) });
      assert.ok(put.ok);
      // Acknowledged at 0: a read at 2 that starts now must see it.
      assert.equal(valueOf(await reader.read({ op: "get", key: "k" })), `v${i}`);
    }
    const list = await reader.read({ op: "list", prefix: "", limit: 10 });
    assert.ok(list.op === "list" && list.ok && list.entries.length === 1);
    const status = reader.quorumReadStatus();
    assert.equal(status.served, 21);
    assert.deepEqual(status.fallbacks, { refused: 0, timedOut: 0, interrupted: 0 });
    assert.equal(reader.metrics.commandsProposed, proposedBefore, "no read became a command");
    assert.ok(cluster.nodes.some((node) => node.quorumReadStatus().answeredForPeers > 0));
  } finally {
    await cluster.stop();
  }
});

Deno.test("a quorum read that no majority answers in time is proposed as a command", async () => {
  const cluster = await startTestCluster(3, { quorumReadTimeoutMs: 100, requestTimeoutMs: 300 });
  try {
    const reader = cluster.nodes[2]!;
    // Both peers go silent; the reader still counts them reachable (they
    // were heard from within the contact window), so the read starts.
    cluster.network.setDown(0, true);
    cluster.network.setDown(1, true);
    const started = Date.now();
    await assert.rejects(reader.read({ op: "get", key: "k" }), OutcomeUnknownError);
    const elapsed = Date.now() - started;
    const status = reader.quorumReadStatus();
    assert.equal(status.fallbacks.timedOut, 1);
    assert.equal(status.served, 0);
    assert.equal(reader.metrics.commandsProposed, 1, "then proposed as a command");
    assert.ok(elapsed >= 100, `answered after ${elapsed} ms`);
  } finally {
    cluster.network.setDown(0, false);
    cluster.network.setDown(1, false);
    await cluster.stop();
  }
});

Deno.test("quorum reads can be turned off: reads are commands again", async () => {
  const cluster = await startTestCluster(3, { quorumReads: false });
  try {
    const reader = cluster.nodes[1]!;
    await cluster.nodes[0]!.submit({ op: "put", key: "k", value: text("v") });
    assert.equal(valueOf(await reader.read({ op: "get", key: "k" })), "v");
    assert.equal(reader.quorumReadStatus().served, 0);
    assert.equal(reader.metrics.commandsProposed, 1);
  } finally {
    await cluster.stop();
  }
});

Deno.test("in process: a quorum read against a command, latency and messages", async () => {
  for (const n of [3, 5]) {
    const cluster = await startTestCluster(n);
    try {
      const reader = cluster.nodes[n - 1]!;
      await cluster.nodes[0]!.submit({ op: "put", key: "k", value: text("v") });
      await waitFor(() => reader.state.read("k") !== undefined, 5000, "the write at the reader");
      const rounds = 200;
      // Gossip and probes flow all the time: count them while idle, per ms.
      const idleFrom = messages(cluster.nodes);
      const idleStarted = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 500));
      const idlePerMs = (messages(cluster.nodes) - idleFrom) / (performance.now() - idleStarted);
      const measure = async (read: () => Promise<KvResult>) => {
        const before = messages(cluster.nodes);
        const started = performance.now();
        for (let i = 0; i < rounds; i++) assert.equal(valueOf(await read()), "v");
        const elapsed = performance.now() - started;
        // Let the commits' last messages land before counting.
        await new Promise((resolve) => setTimeout(resolve, 50));
        const background = idlePerMs * (performance.now() - started);
        return {
          ms: elapsed / rounds,
          messages: (messages(cluster.nodes) - before - background) / rounds,
        };
      };
      const answered = () =>
        cluster.nodes.reduce((sum, node) => sum + node.quorumReadStatus().answeredForPeers, 0);
      const answeredBefore = answered();
      const quorum = await measure(() => reader.read({ op: "get", key: "k" }));
      const command = await measure(() => reader.submit({ op: "get", key: "k" }));
      console.log(
        `n=${n}: quorum read ${quorum.ms.toFixed(2)} ms, ${quorum.messages.toFixed(1)} messages; ` +
          `command ${command.ms.toFixed(2)} ms, ${command.messages.toFixed(1)} messages`,
      );
      // Thrifty: a request and an answer for each peer of the closest majority.
      // (a little more when a slow answer makes the read ask the others too).
      const asked = answered() - answeredBefore;
      console.log(`n=${n}: ${(asked / rounds).toFixed(2)} voters asked per read`);
      assert.ok(asked >= rounds * Math.floor(n / 2) && asked < rounds * (n - 1), `${asked} asked`);
      assert.equal(reader.quorumReadStatus().served, rounds);
    } finally {
      await cluster.stop();
    }
  }
});
