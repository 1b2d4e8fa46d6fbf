import assert from "node:assert/strict";
import { describeMembers } from "../../src/server/admin_route.ts";
import type { KvResult } from "../../src/kv/state_machine.ts";
import { startTestCluster, waitFor } from "./cluster_helpers.ts";

const text = (value: string) => new TextEncoder().encode(value);

Deno.test("a write through one replica reads back through every other", async () => {
  const cluster = await startTestCluster(3);
  try {
    const [a, b, c] = cluster.nodes as [
      typeof cluster.nodes[0],
      typeof cluster.nodes[0],
      typeof cluster.nodes[0],
    ];
    const put = await a.submit({
      op: "put",
      key: "greeting",
      value: text("hello"),
    });
    assert.equal(put.op, "put");
    assert.ok(put.ok);
    for (const node of [b, c]) {
      const got = await node.submit({ op: "get", key: "greeting" });
      assert.ok(got.op === "get" && got.ok && got.entry !== undefined);
      assert.equal(new TextDecoder().decode(got.entry.value), "hello");
      assert.equal(got.entry.version, put.ok ? put.version : "");
    }
  } finally {
    await cluster.stop();
  }
});

Deno.test("concurrent commands are batched into few instances and all answered", async () => {
  const cluster = await startTestCluster(3);
  try {
    const node = cluster.nodes[0]!;
    const results = await Promise.all(
      Array.from(
        { length: 500 },
        (_, i) =>
          node.submit({
            op: "put",
            key: `k${i % 50}`,
            value: text(`v${i}`),
          }),
      ),
    );
    assert.ok(results.every((result) => result.ok));
    assert.equal(node.metrics.commandsAnswered, 500);
    assert.ok(
      node.metrics.instancesProposed < 500,
      `expected batching, got ${node.metrics.instancesProposed} instances for 500 commands`,
    );
    await waitFor(
      () => cluster.nodes.every((other) => other.state.digest === node.state.digest),
      5000,
      "identical state on every replica",
    );
  } finally {
    await cluster.stop();
  }
});

Deno.test("compare-and-set races have exactly one winner", async () => {
  const cluster = await startTestCluster(3);
  try {
    const created = await cluster.nodes[0]!.submit({
      op: "put",
      key: "lock",
      value: text("free"),
    });
    assert.ok(created.op === "put" && created.ok);
    const attempts: Promise<KvResult>[] = cluster.nodes.flatMap((node, id) =>
      [0, 1, 2].map((j) =>
        node.submit({
          op: "put",
          key: "lock",
          value: text(`owner-${id}-${j}`),
          ifVersion: created.ok ? created.version : "",
        })
      )
    );
    const outcomes = await Promise.all(attempts);
    assert.equal(outcomes.filter((outcome) => outcome.ok).length, 1);
  } finally {
    await cluster.stop();
  }
});

Deno.test("a restarted replica reloads its state and keeps serving", async () => {
  const cluster = await startTestCluster(3);
  try {
    const node = cluster.nodes[1]!;
    for (let i = 0; i < 20; i++) {
      await node.submit({
        op: "put",
        key: `r${i}`,
        value: text(`${i}`),
      });
    }
    const digest = node.state.digest;
    await cluster.restart(1);
    assert.equal(cluster.nodes[1]!.state.digest, digest);
    const again = cluster.nodes[1]!;
    await waitFor(() => again.quorumReachable(), 5000, "quorum after restart");
    const got = await again.submit({ op: "get", key: "r7" });
    assert.ok(got.op === "get" && got.ok && got.entry !== undefined);
    assert.equal(new TextDecoder().decode(got.entry.value), "7");
  } finally {
    await cluster.stop();
  }
});

Deno.test("snapshots taken under load restore the same state after a restart", async () => {
  const cluster = await startTestCluster(3, { snapshotEveryCommits: 4 });
  try {
    const node = cluster.nodes[2]!;
    // Overwrites and deletes, so that a stale or partial snapshot would show.
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          round === 3 && i % 3 === 0
            ? node.submit({
              op: "delete",
              key: `s${i}`,
              ifVersion: null,
            })
            : node.submit({
              op: "put",
              key: `s${i}`,
              value: text(`${round}-${i}`),
            })),
      );
    }
    assert.ok(cluster.storages[2]!.snapshots > 0, "no snapshot was taken");
    const digest = node.state.digest;
    await cluster.restart(2);
    assert.equal(cluster.nodes[2]!.state.digest, digest);
  } finally {
    await cluster.stop();
  }
});

Deno.test("without a reachable quorum a write is refused and nothing is proposed", async () => {
  const cluster = await startTestCluster(3);
  try {
    cluster.network.setDown(1, true);
    cluster.network.setDown(2, true);
    const node = cluster.nodes[0]!;
    // The contact window is 3 s; the deadline leaves room for a loaded CI
    // machine (a fresh-clone run once timed out at 10 s).
    await waitFor(() => !node.quorumReachable(), 30_000, "peers to be considered unreachable");
    const proposedBefore = node.metrics.commandsProposed;
    await assert.rejects(
      node.submit({ op: "put", key: "x", value: text("y") }),
      { name: "UnavailableError" },
    );
    assert.equal(node.metrics.commandsProposed, proposedBefore);
  } finally {
    await cluster.stop();
  }
});

Deno.test("retention is bounded: peers prune past a replica that is down, writes go on, and it installs a snapshot when back", async () => {
  const cluster = await startTestCluster(3, { maxHeldCommands: 1000 });
  try {
    const node = cluster.nodes[0]!;
    cluster.network.setDown(2, true);
    // Replica 2 executes nothing. Past the bound, replicas 0 and 1 prune past
    // it instead of refusing writes.
    const put = (i: number) => node.submit({ op: "put", key: `k${i % 50}`, value: text(`v${i}`) });
    for (let i = 0; i < 5000; i += 100) {
      const results = await Promise.allSettled(
        Array.from({ length: 100 }, (_, j) => put(i + j)),
      );
      const failure = results.find((result) => result.status === "rejected");
      if (failure !== undefined) throw (failure as PromiseRejectedResult).reason;
    }
    assert.ok(node.core.stats.retentionPrunes > 0, "replica 0 never pruned past replica 2");
    assert.deepEqual(node.core.prunedPastPeers(), [2]);
    assert.deepEqual(
      describeMembers({ node, secret: "unused" }).members.map((member) => member.state),
      ["caught-up", "caught-up", "pruned-past"],
    );
    // Bounded by what is in flight, far below the hard limit.
    assert.ok(
      node.core.heldCommands < 10 * 1000,
      `replica 0 holds ${node.core.heldCommands} commands`,
    );
    // Back: replica 2 finds it was pruned past, takes a snapshot from a peer,
    // installs it, and executes what followed.
    cluster.network.setDown(2, false);
    await waitFor(
      () =>
        cluster.nodes[2]!.metrics.snapshotsInstalled > 0 &&
        cluster.nodes.every((n) => n.state.digest === node.state.digest),
      20_000,
      "replica 2 to install a snapshot and catch up",
    );
    const entry = cluster.nodes[2]!.state.read("k49");
    assert.equal(new TextDecoder().decode(entry?.value), "v4999");
    // It serves again: a write through it executes everywhere.
    await cluster.nodes[2]!.submit({ op: "put", key: "after", value: text("snapshot") });
    await waitFor(
      () => cluster.nodes.every((n) => n.state.read("after") !== undefined),
      10_000,
      "the write through replica 2 to execute everywhere",
    );
  } finally {
    await cluster.stop();
  }
});
