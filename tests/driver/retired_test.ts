/**
 * A replica that learned it was removed (or replaced) takes nothing more:
 * no snapshot fetched, none installed. Found by the simulator with
 * membership changes (`deno task sim --seed 150 --replicas 5 --members
 * some`): a member removed while it was away retired on the first snapshot
 * of the epoch that removed it, went on fetching, and installed the next
 * one (of the epoch it now held, so not judged foreign), again every 130 ms,
 * each time making a live member propose a snapshot barrier for it.
 */

import assert from "node:assert/strict";
import { AHEAD_GRACE_MS, ReplicaDriver } from "../../src/driver/driver.ts";
import { defaultConfiguration } from "../../src/driver/epoch.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import { Eventual } from "../../src/runtime/completion.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { ReplicaSnapshot } from "../../src/storage/types.ts";
import type { PeerTransport } from "../../src/transport/types.ts";

/** A transport that sends nowhere: the test hands the driver its batches. */
function silentTransport(): PeerTransport<KvCommand> {
  return { send: () => {}, stats: () => [], close: () => Promise.resolve() };
}

/** A snapshot of `epoch` whose members are replicas 0, 2 and 3 (not 1). */
function snapshotWithout1(epoch: number): ReplicaSnapshot<KvCommand> {
  const members = defaultConfiguration(5).members.filter((member) => [0, 2, 3].includes(member.id));
  return {
    barrier: `0.x.${epoch}`,
    executedPrefix: [0, 0, 0, 0],
    records: [],
    entries: [],
    digest: "0:00000000",
    configuration: { epoch, members, nextId: 5 },
  };
}

Deno.test("a removed replica fetches no snapshot and installs none once it retired", async () => {
  const clock = new ManualClock();
  const storage = new MemoryStorage<KvCommand>();
  const fetched: number[] = [];
  const driver = ReplicaDriver.fromLoaded({
    id: 1,
    replicas: 3,
    storage,
    transport: silentTransport(),
    clock,
    random: new SeededRandom(1),
    tickMs: 1,
    fetchSnapshot: (peer) => {
      fetched.push(peer);
      return new Eventual<ReplicaSnapshot<KvCommand>>();
    },
  }, { records: [], pruneFloor: undefined, entries: [] });
  driver.start();
  // Epoch 5 removed it: it retires on that snapshot and installs nothing of it.
  await driver.installSnapshot(snapshotWithout1(5));
  assert.match(driver.retired ?? "", /epoch 5 does not have it as a member/);
  // Peers move on to epoch 6: past the grace it would fetch from them.
  driver.receive({ from: 0, epoch: 6, messages: [] });
  clock.advance(AHEAD_GRACE_MS + 100);
  assert.deepEqual(fetched, [], "a retired replica fetches no snapshot");
  // Nor does it install one of the epoch it now names.
  await assert.rejects(driver.installSnapshot(snapshotWithout1(5)), /left the cluster/);
  assert.equal(storage.loadSync().configuration, undefined, "its store keeps epoch 1");
  const stopped = driver.stop();
  clock.runSoon();
  await stopped;
});
