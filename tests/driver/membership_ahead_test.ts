import assert from "node:assert/strict";
import { defaultConfiguration } from "../../src/driver/epoch.ts";
import { AHEAD_GRACE_MS, Membership } from "../../src/driver/membership.ts";
import type { ReplicaDriverOptions } from "../../src/driver/options.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import type { LoadedState } from "../../src/storage/types.ts";

/** Replica 0's membership, loaded in epoch 2 of three replicas. */
function membershipInEpoch2(): Membership {
  // Only what the constructor reads: the membership never sends here.
  const options = {
    id: 0,
    replicas: 3,
    transport: {},
    clock: { now: () => 0 },
  } as unknown as ReplicaDriverOptions;
  const loaded: LoadedState<KvCommand> = {
    records: [],
    pruneFloor: undefined,
    entries: [],
    configuration: { ...defaultConfiguration(3), epoch: 2 },
  } as unknown as LoadedState<KvCommand>;
  return new Membership(options, loaded);
}

Deno.test("a peer's refusal naming this replica's own epoch does not make it behind", () => {
  const membership = membershipInEpoch2();
  // A batch sent in epoch 1, refused by a peer in epoch 2, answered after
  // this replica started epoch 2 itself.
  membership.noteAhead(1, 2, 0);
  assert.equal(membership.behind(AHEAD_GRACE_MS * 10), false);
  assert.deepEqual(membership.aheadPeers(), []);
});

Deno.test("negative: a peer in a later epoch makes the replica behind after the grace", () => {
  const membership = membershipInEpoch2();
  membership.noteAhead(1, 3, 0);
  assert.equal(membership.behind(AHEAD_GRACE_MS - 1), false, "within the grace");
  assert.equal(membership.behind(AHEAD_GRACE_MS), true);
  assert.deepEqual(membership.aheadPeers(), [1]);
});
