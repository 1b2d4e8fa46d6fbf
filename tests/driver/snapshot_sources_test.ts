/**
 * A replica pruned past in its own epoch asks a voter for the snapshot, never
 * a learner: a snapshot of the same epoch is taken at a barrier its source
 * proposes, and a learner proposes nothing (it refuses at once). Found by the
 * simulator with membership changes (`deno task sim --seed 257 --replicas 7
 * --members some`, at 19a604c): learners 7 and 8 had pruned past voter 4 like
 * the voters, and furthest (they led the sources), so replica 4 asked them
 * six times in a row, its waits doubled to 30 s, and it never caught up.
 */

import assert from "node:assert/strict";
import type { Configuration } from "../../src/core/configuration.ts";
import type { FrontierMessage } from "../../src/core/types.ts";
import { ReplicaDriver } from "../../src/driver/driver.ts";
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

/** Epoch 2: voters 0, 1 and 2, learners 3 and 4. */
const CONFIGURATION: Configuration = {
  epoch: 2,
  members: [0, 1, 2, 3, 4].map((id) => ({
    id,
    incarnation: 1,
    url: `http://replica-${id}.invalid`,
    role: id < 3 ? "voter" : "learner",
  })),
  nextId: 5,
};

Deno.test("a replica pruned past fetches its snapshot from a voter, not from a learner further ahead", async () => {
  const clock = new ManualClock();
  const asked: number[] = [];
  const driver = ReplicaDriver.fromLoaded({
    id: 1,
    replicas: 5,
    storage: new MemoryStorage<KvCommand>(),
    transport: silentTransport(),
    clock,
    random: new SeededRandom(1),
    fetchSnapshot: (peer) => {
      asked.push(peer);
      // A learner refuses at once, as its admission does.
      const answer = new Eventual<ReplicaSnapshot<KvCommand>>();
      if (CONFIGURATION.members[peer]?.role === "learner") {
        answer.reject(new Error("The replica is a learner: it proposes nothing until promoted"));
      }
      return answer;
    },
  }, {
    records: [],
    pruneFloor: [0, 0, 0, 0, 0],
    entries: [],
    configuration: CONFIGURATION,
  });
  driver.start();
  // Every peer executed and pruned row 0 past this replica; the learners,
  // further ahead, pruned most, so they come first by what they hold.
  for (const [from, pruned] of [[0, 5], [2, 6], [3, 9], [4, 8]] as const) {
    const frontier: FrontierMessage = {
      type: "frontier",
      from,
      to: 1,
      executed: [10, 0, 0, 0, 0],
      pruned: [pruned, 0, 0, 0, 0],
      highest: 0,
    };
    driver.receive({ from, epoch: 2, incarnation: 1, messages: [frontier] });
  }
  for (let step = 0; step < 20 && asked.length === 0; step++) clock.advance(10);
  assert.deepEqual(asked, [2], "the voter that pruned most, first");
  assert.equal(driver.catchingUpBySnapshot, true);
  const stopped = driver.stop();
  clock.runSoon();
  await stopped;
});
