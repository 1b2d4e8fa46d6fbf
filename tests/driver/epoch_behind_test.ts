/**
 * A replica behind a later epoch, asked for its own epoch's state by a peer
 * further behind: the state it holds is whole (between Readies, whole
 * components only), so it gives it. Found by the simulator with membership
 * changes (`deno task sim --seed 301 --replicas 3 --members some`): the only
 * replica of epoch 4 lost its disk; the replica in epoch 3 waited for a
 * snapshot of epoch 4 from it and refused its epoch-3 state to the replica in
 * epoch 2, whose vote it needed to finish epoch 3. Nothing could move.
 */

import assert from "node:assert/strict";
import { AHEAD_GRACE_MS, ReplicaDriver } from "../../src/driver/driver.ts";
import { defaultConfiguration } from "../../src/driver/epoch.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { PeerTransport } from "../../src/transport/types.ts";

/** A transport that sends nowhere: the test hands the driver its batches. */
function silentTransport(): PeerTransport<KvCommand> {
  return { send: () => {}, stats: () => [], close: () => Promise.resolve() };
}

/** Stops `driver`, running what the stop queues on the manual clock. */
async function stop(driver: ReplicaDriver, clock: ManualClock): Promise<void> {
  const stopped = driver.stop();
  clock.runSoon();
  await stopped;
}

/** Replica 2, restarted in epoch 3 (so without the state the epoch started with). */
function replicaInEpoch3(clock: ManualClock): ReplicaDriver {
  const configuration = { ...defaultConfiguration(3), epoch: 3 };
  const value = new TextEncoder().encode("1");
  return ReplicaDriver.fromLoaded({
    id: 2,
    replicas: 3,
    storage: new MemoryStorage<KvCommand>(),
    transport: silentTransport(),
    clock,
    random: new SeededRandom(1),
  }, {
    records: [],
    pruneFloor: [0, 0, 0],
    entries: [["a", { value, version: "1.0.0e3" }]],
    configuration,
  });
}

Deno.test("a replica behind a later epoch gives its own epoch's state to a peer further behind", async () => {
  const clock = new ManualClock();
  const driver = replicaInEpoch3(clock);
  // Replica 1 is in epoch 4; past the grace, this replica waits for its snapshot.
  driver.receive({ from: 1, epoch: 4, messages: [] });
  clock.advance(AHEAD_GRACE_MS);
  assert.equal(driver.catchingUpBySnapshot, true);
  const snapshot = await driver.takeSnapshot(0, 2);
  assert.equal(snapshot.configuration?.epoch, 3);
  assert.deepEqual(snapshot.entries.map(([key]) => key), ["a"]);
  assert.deepEqual(snapshot.executedPrefix, [0, 0, 0]);
  await stop(driver, clock);
});

Deno.test("a replica behind a later epoch still gives nothing while it installs", async () => {
  const clock = new ManualClock();
  const driver = replicaInEpoch3(clock);
  driver.receive({ from: 1, epoch: 4, messages: [] });
  clock.advance(AHEAD_GRACE_MS);
  // An install in progress: the state is about to be replaced.
  const installing = driver.installSnapshot({
    barrier: "1.x.1",
    executedPrefix: [0, 0, 0, 0],
    records: [],
    entries: [],
    digest: "",
    configuration: { ...defaultConfiguration(3), epoch: 4 },
  });
  await assert.rejects(driver.takeSnapshot(0, 2), /no state of its epoch/);
  await installing.catch(() => {});
  await stop(driver, clock);
});
