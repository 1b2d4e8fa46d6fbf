/**
 * Replicated expiry through the driver (src/driver/expiry.ts), on an
 * in-process cluster on one manual clock (real drivers, memory storage, the
 * in-memory transport with the real codec): keys with an expiry disappear on
 * every replica, a key rewritten after its expiry was found is kept, a down
 * replica's keys still expire, and nothing is proposed when nothing is due.
 * The decider (`expiryChoice`, `expiryRank`) has table tests of its own.
 */

import assert from "node:assert/strict";
import {
  type DueEntry,
  EXPIRY_GRACE_MS,
  EXPIRY_SCAN_INTERVAL_MS,
  expiryChoice,
  ExpiryProposer,
  expiryRank,
} from "../../src/driver/expiry.ts";
import { ReplicaDriver } from "../../src/driver/driver.ts";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { stampBucketKey } from "../../src/kv/database_keys.ts";
import { KvStateMachine } from "../../src/kv/state_machine.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { MemoryNetwork } from "../../src/transport/memory.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** The manual clock's start: its readings are the wall clock (origin 0). */
const START_MS = 1_700_000_000_000;
const TICK_MS = 5;

interface ManualCluster {
  readonly clock: ManualClock;
  readonly network: MemoryNetwork<KvCommand>;
  readonly nodes: ReplicaDriver[];
  /** Runs the cluster for `ms` of its clock, letting the network and storage deliver on the way. */
  run(ms: number): Promise<void>;
  /** Runs until `condition` holds, failing after `maxMs` of the clock. */
  runUntil(condition: () => boolean, maxMs: number, what: string): Promise<void>;
  /** Submits through replica `id` and runs until it is answered. */
  submit(
    id: number,
    input: Parameters<ReplicaDriver["submit"]>[0],
  ): ReturnType<ReplicaDriver["submit"]>;
  stop(): Promise<void>;
}

function macrotask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function startManualCluster(replicas = 3): Promise<ManualCluster> {
  const clock = new ManualClock(START_MS);
  const network = new MemoryNetwork<KvCommand>({ replicas, isCommand: isKvCommand, clock });
  const nodes: ReplicaDriver[] = [];
  for (let id = 0; id < replicas; id++) {
    const node = await ReplicaDriver.open({
      id,
      replicas,
      storage: new MemoryStorage<KvCommand>(),
      transport: network.transport(id),
      clock,
      random: new SeededRandom(id + 1),
      tickMs: TICK_MS,
      // Longer than any wait below, so that a test sees outcomes, not timeouts.
      requestTimeoutMs: 60_000,
    });
    network.attach(id, (batch) => node.receive(batch));
    node.start();
    nodes.push(node);
  }
  const run = async (ms: number) => {
    for (let elapsed = 0; elapsed < ms; elapsed += TICK_MS) {
      clock.advance(TICK_MS);
      await macrotask();
    }
  };
  const runUntil = async (condition: () => boolean, maxMs: number, what: string) => {
    for (let elapsed = 0; !condition(); elapsed += TICK_MS) {
      if (elapsed > maxMs) throw new Error(`Not within ${maxMs} ms of the clock: ${what}`);
      clock.advance(TICK_MS);
      await macrotask();
    }
  };
  const cluster: ManualCluster = {
    clock,
    network,
    nodes,
    run,
    runUntil,
    async submit(id, input) {
      let outcome:
        | { value: Awaited<ReturnType<ReplicaDriver["submit"]>> }
        | { error: unknown }
        | undefined;
      nodes[id]!.submit(input).then((value) => outcome = { value }, (error) => outcome = { error });
      await runUntil(() => outcome !== undefined, 30_000, `the answer to ${input.op}`);
      if ("error" in outcome!) throw outcome.error;
      return outcome!.value;
    },
    async stop() {
      const stopped = Promise.all(nodes.map((node) => node.stop()));
      for (let i = 0; i < 100; i++) {
        clock.runSoon();
        await macrotask();
      }
      await stopped;
    },
  };
  await run(100);
  return cluster;
}

/** A key whose first-ranked voter among 0..replicas-1 is `owner`. */
function keyOwnedBy(owner: number, replicas: number, prefix: string): string {
  const voters = Array.from({ length: replicas }, (_, id) => id);
  for (let i = 0;; i++) {
    const key = `${prefix}${i}`;
    if (expiryRank(key, voters, owner) === 0) return key;
  }
}

/**
 * Puts `key` through replica `via`, expiring a second from now, and runs
 * until replica `seenAt` executed it; returns its expiry.
 */
async function putExpiring(
  cluster: ManualCluster,
  put: { via: number; key: string; value: string; seenAt: number },
): Promise<number> {
  const expiresAt = cluster.clock.now() + 1000;
  await cluster.submit(put.via, {
    op: "put",
    key: put.key,
    value: encoder.encode(put.value),
    expiresAt,
  });
  await cluster.runUntil(
    () => cluster.nodes[put.seenAt]!.state.read(put.key) !== undefined,
    5000,
    `the put at ${put.seenAt}`,
  );
  return expiresAt;
}

function valueAt(node: ReplicaDriver, key: string): string | undefined {
  const entry = node.state.read(key);
  return entry === undefined ? undefined : decoder.decode(entry.value);
}

Deno.test("keys with an expiry disappear on every replica, each deleted once, others kept", async () => {
  const cluster = await startManualCluster(3);
  try {
    const { clock, nodes } = cluster;
    const keys = Array.from({ length: 30 }, (_, i) => `session/${i}`);
    for (const key of keys) {
      await cluster.submit(0, {
        op: "put",
        key,
        value: encoder.encode("v"),
        expiresAt: clock.now() + 2000,
      });
    }
    await cluster.submit(1, { op: "put", key: "forever", value: encoder.encode("kept") });
    await cluster.submit(2, {
      op: "put",
      key: "later",
      value: encoder.encode("kept"),
      expiresAt: clock.now() + 600_000,
    });
    await cluster.run(500);
    for (const node of nodes) assert.equal(node.state.read(keys[0]!)?.value.length, 1);
    // Nothing due yet: no replica proposed anything.
    for (const node of nodes) assert.equal(node.expiryStatus().commandsProposed, 0);
    const expiredAt = START_MS + 2000;
    await cluster.runUntil(
      () => nodes.every((node) => keys.every((key) => node.state.read(key) === undefined)),
      10_000,
      "every expiring key gone on every replica",
    );
    // Within a scan interval plus commit latency of the expiry (every replica up).
    assert.ok(
      clock.now() - expiredAt <= EXPIRY_SCAN_INTERVAL_MS + 500,
      `gone ${clock.now() - expiredAt} ms after expiry`,
    );
    for (const node of nodes) {
      assert.equal(valueAt(node, "forever"), "kept");
      assert.equal(valueAt(node, "later"), "kept");
    }
    // Each key deleted by exactly one command, by its first-ranked voter.
    const deleted = nodes.map((node) => node.expiryStatus().keysDeleted);
    assert.equal(deleted.reduce((a, b) => a + b, 0), keys.length, `deleted per replica ${deleted}`);
    const voters = [0, 1, 2];
    for (const node of nodes) {
      const owned = keys.filter((key) => expiryRank(key, voters, node.id) === 0).length;
      assert.equal(node.expiryStatus().keysProposed, owned, `replica ${node.id}`);
      assert.equal(node.expiryStatus().inFlight, false);
    }
    assert.equal(nodes[0]!.state.digest, nodes[1]!.state.digest);
    assert.equal(nodes[0]!.state.digest, nodes[2]!.state.digest);
  } finally {
    await cluster.stop();
  }
});

Deno.test("a down replica's keys still expire, one grace later, through the next voter", async () => {
  const cluster = await startManualCluster(3);
  try {
    const { clock, network, nodes } = cluster;
    const key = keyOwnedBy(2, 3, "owned-by-2/");
    const expiredAt = await putExpiring(cluster, { via: 0, key, value: "v", seenAt: 2 });
    network.setDown(2, true);
    await cluster.runUntil(
      () => nodes[0]!.state.read(key) === undefined && nodes[1]!.state.read(key) === undefined,
      20_000,
      "the key gone at 0 and 1 with its owner down",
    );
    const took = clock.now() - expiredAt;
    assert.ok(took >= EXPIRY_GRACE_MS, `not before the grace (${took} ms)`);
    assert.ok(
      took <= EXPIRY_GRACE_MS + EXPIRY_SCAN_INTERVAL_MS + 1000,
      `within the bound (${took} ms)`,
    );
    // Rank 1 of the key deleted it: the voter after 2, around (0).
    assert.equal(expiryRank(key, [0, 1, 2], 0), 1);
    assert.equal(nodes[0]!.expiryStatus().keysDeleted, 1);
    assert.equal(nodes[1]!.expiryStatus().keysProposed, 0, "rank 2 waits a second grace");
    // The replica that was down learns the delete when it is back.
    network.setDown(2, false);
    await cluster.runUntil(
      () => nodes[2]!.state.read(key) === undefined,
      20_000,
      "the delete at 2",
    );
  } finally {
    await cluster.stop();
  }
});

Deno.test("a key rewritten after its expiry was found is kept: the delete names the version that expired", async () => {
  const cluster = await startManualCluster(3);
  try {
    const { network, nodes } = cluster;
    const key = keyOwnedBy(0, 3, "rewritten/");
    await putExpiring(cluster, { via: 1, key, value: "old", seenAt: 0 });
    const expired = nodes[0]!.state.read(key)!.version;
    // Replica 0 finds the key expired and proposes its delete, but its
    // messages are lost (it is cut off); meanwhile replicas 1 and 2 rewrite
    // the key, without an expiry.
    network.setDown(0, true);
    await cluster.runUntil(
      () => nodes[0]!.expiryStatus().commandsProposed === 1,
      5000,
      "the expire proposed at 0",
    );
    assert.equal(nodes[0]!.expiryStatus().inFlight, true);
    const rewritten = await cluster.submit(1, { op: "put", key, value: encoder.encode("new") });
    assert.ok(rewritten.op === "put" && rewritten.ok && rewritten.version !== expired);
    // Back: replica 0's expire commits after the rewrite and deletes nothing.
    network.setDown(0, false);
    await cluster.runUntil(
      () => !nodes[0]!.expiryStatus().inFlight,
      30_000,
      "the expire to execute at 0",
    );
    assert.equal(nodes[0]!.expiryStatus().keysDeleted, 0);
    await cluster.run(EXPIRY_GRACE_MS * 3);
    for (const node of nodes) assert.equal(valueAt(node, key), "new", `replica ${node.id}`);
  } finally {
    await cluster.stop();
  }
});

Deno.test("a removed or joining replica proposes no expiry; a refused command is tried again later", () => {
  const clock = new ManualClock(10_000);
  const state = new KvStateMachine([["k", {
    value: new Uint8Array(1),
    version: "1.0.0",
    expiresAt: 5000,
  }]]);
  let active = false;
  const submitted: string[][] = [];
  let refuse = true;
  const proposer = new ExpiryProposer({
    id: 0,
    wallClockMs: () => clock.now(),
    active: () => active,
    voters: () => [0],
    expiredEntries: (now, limit) => state.expiredEntries(now, limit),
    read: (key) => state.read(key),
    submit: (command, answer) => {
      submitted.push(command.keys.map(({ key, version }) => `${key}@${version}`));
      if (refuse) answer.reject(new Error("no quorum"));
    },
  });
  proposer.tick(clock.now());
  assert.deepEqual(submitted, [], "inactive: nothing proposed");
  active = true;
  proposer.tick(clock.now());
  // The interval runs from the last scan, active or not.
  clock.advance(EXPIRY_SCAN_INTERVAL_MS);
  proposer.tick(clock.now());
  assert.deepEqual(submitted, [["k@1.0.0"]]);
  assert.equal(proposer.metrics.commandsProposed, 0, "refused at once: nothing proposed");
  assert.equal(proposer.metrics.commandsFailed, 1);
  assert.equal(proposer.inFlight, false);
  refuse = false;
  proposer.tick(clock.now() + 10);
  assert.equal(submitted.length, 1, "not before the scan interval");
  clock.advance(EXPIRY_SCAN_INTERVAL_MS);
  proposer.tick(clock.now());
  assert.equal(submitted.length, 2);
  assert.equal(proposer.inFlight, true);
  clock.advance(EXPIRY_SCAN_INTERVAL_MS);
  proposer.tick(clock.now());
  assert.equal(submitted.length, 2, "one command in flight at most");
});

Deno.test("expiryRank: one voter of rank 0 per key, ranks a permutation; a non-voter has none", () => {
  const voters = [0, 2, 5];
  for (const key of ["a", "b", "session/17", "\u00e9t\u00e9"]) {
    const ranks = voters.map((voter) => expiryRank(key, voters, voter));
    assert.deepEqual([...ranks].sort(), [0, 1, 2], key);
  }
  assert.equal(expiryRank("a", voters, 1), undefined);
});

Deno.test("expiryChoice: rank-staggered, bounded, order kept", () => {
  const voters = [0, 1, 2];
  const ranked = (rank: number) => {
    for (let i = 0;; i++) if (expiryRank(`k${i}`, voters, 0) === rank) return `k${i}`;
  };
  const [r0, r1, r2] = [ranked(0), ranked(1), ranked(2)];
  const due: DueEntry[] = [
    { key: r0, version: "1.0.0", expiresAt: 1000 },
    { key: r1, version: "1.1.0", expiresAt: 1000 },
    { key: r2, version: "1.2.0", expiresAt: 1000 },
  ];
  const choose = (nowMs: number, limit = 256) =>
    expiryChoice(due, { nowMs, voters, self: 0, graceMs: 3000, limit }).map(({ key }) => key);
  const table: [number, string[]][] = [
    [999, []],
    [1000, [r0]],
    [3999, [r0]],
    [4000, [r0, r1]],
    [7000, [r0, r1, r2]],
  ];
  for (const [now, expected] of table) {
    // Entries not yet due are never in the index's answer; those due are
    // chosen by rank.
    assert.deepEqual(choose(now).filter(() => now >= 1000), expected, `at ${now}`);
  }
  assert.deepEqual(choose(7000, 2), [r0, r1], "at most the limit");
  assert.deepEqual(
    expiryChoice(due, { nowMs: 7000, voters, self: 3, graceMs: 3000, limit: 256 }),
    [],
    "a non-voter chooses nothing",
  );
  // A key no expire command may name (a stamp bucket) is left out.
  const bucket = stampBucketKey("app", 7);
  assert.deepEqual(
    expiryChoice([{ key: bucket, version: "1", expiresAt: 0 }], {
      nowMs: 1e12,
      voters: [0],
      self: 0,
      graceMs: 0,
      limit: 256,
    }),
    [],
  );
});
