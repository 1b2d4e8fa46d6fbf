import assert from "node:assert/strict";
import { newDriverMetrics } from "../../src/driver/metrics.ts";
import {
  SNAPSHOT_RETRY_MS,
  SNAPSHOT_SHORT_RETRY_MS,
  SnapshotFetcher,
} from "../../src/driver/snapshot_fetcher.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { Eventual } from "../../src/runtime/completion.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import { type ReplicaSnapshot, SnapshotBelowFloorError } from "../../src/storage/types.ts";
import { UnavailableError } from "../../src/errors.ts";

const SNAPSHOT: ReplicaSnapshot<KvCommand> = {
  barrier: "0.a.1",
  executedPrefix: [1, 1, 1],
  records: [],
  entries: [],
  digest: "0:00000000",
};

function fetcherWith(outcomes: (Error | undefined)[]) {
  const clock = new ManualClock();
  const asked: number[] = [];
  const installed: string[] = [];
  const fetcher = new SnapshotFetcher({
    id: 2,
    clock,
    timeoutMs: 10_000,
    metrics: newDriverMetrics(),
    fetch: (peer) => {
      asked.push(peer);
      const answer = new Eventual<ReplicaSnapshot<KvCommand>>();
      const outcome = outcomes.shift();
      if (outcome === undefined) answer.resolve(SNAPSHOT);
      else answer.reject(outcome);
      return answer;
    },
    install: (snapshot, done) => {
      installed.push(snapshot.barrier);
      done();
    },
  });
  return { clock, asked, installed, fetcher };
}

Deno.test("a snapshot refused for being below this replica's floor: the next source at once, no backoff", () => {
  const { clock, asked, installed, fetcher } = fetcherWith([
    new SnapshotBelowFloorError(
      "Snapshot prefix [1 1 1] is below the prune floor [1 1 2] in row 2",
    ),
  ]);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1]);
  clock.advance(SNAPSHOT_SHORT_RETRY_MS - 1);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1], "not before the short wait");
  clock.advance(1);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1, 0], "then the next source");
  assert.deepEqual(installed, ["0.a.1"]);
  assert.equal(fetcher.busy, false);
});

Deno.test("any other failure backs off, doubling, and tries the next source", () => {
  const { clock, asked, fetcher } = fetcherWith([new Error("cut"), new Error("cut")]);
  fetcher.maybeStart(clock.now(), [1, 0]);
  clock.advance(SNAPSHOT_RETRY_MS - 1);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1]);
  clock.advance(1);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1, 0]);
  clock.advance(SNAPSHOT_RETRY_MS);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1, 0], "the second wait is twice the first");
  clock.advance(SNAPSHOT_RETRY_MS);
  fetcher.maybeStart(clock.now(), [1, 0]);
  assert.deepEqual(asked, [1, 0, 1]);
  // Nobody pruned past it any more: nothing to fetch.
  clock.advance(60_000);
  fetcher.maybeStart(clock.now(), []);
  assert.deepEqual(asked, [1, 0, 1]);
});

Deno.test("sources that refuse at once (503) are passed over without backing off, each once in a row", () => {
  // Peers seen in a later epoch may have been removed since: they refuse.
  const refusal = () => new UnavailableError("This replica has no state of its epoch to give yet");
  const { clock, asked, installed, fetcher } = fetcherWith([refusal(), refusal()]);
  const sources = [6, 3, 0];
  fetcher.maybeStart(clock.now(), sources);
  clock.advance(SNAPSHOT_SHORT_RETRY_MS);
  fetcher.maybeStart(clock.now(), sources);
  clock.advance(SNAPSHOT_SHORT_RETRY_MS);
  fetcher.maybeStart(clock.now(), sources);
  assert.deepEqual(asked, [6, 3, 0], "the third source after two short waits");
  assert.deepEqual(installed, ["0.a.1"]);
});

Deno.test("when every source refused in a row, the wait doubles again", () => {
  const refusal = () => new UnavailableError("No quorum of replicas is reachable");
  const { clock, asked, fetcher } = fetcherWith([refusal(), refusal(), refusal()]);
  const sources = [1, 0];
  fetcher.maybeStart(clock.now(), sources);
  clock.advance(SNAPSHOT_SHORT_RETRY_MS);
  fetcher.maybeStart(clock.now(), sources);
  assert.deepEqual(asked, [1, 0]);
  // Both refused: no quick pass again, but the doubled wait (two failures).
  clock.advance(SNAPSHOT_RETRY_MS);
  fetcher.maybeStart(clock.now(), sources);
  assert.deepEqual(asked, [1, 0], "not before the doubled wait");
  clock.advance(SNAPSHOT_RETRY_MS);
  fetcher.maybeStart(clock.now(), sources);
  assert.deepEqual(asked, [1, 0, 1]);
});
