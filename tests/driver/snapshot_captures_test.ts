import assert from "node:assert/strict";
import { SnapshotCaptures } from "../../src/driver/snapshot_captures.ts";
import type { Execution } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import type { ReplicaSnapshot } from "../../src/storage/types.ts";

function execution(
  number: number,
  command: KvCommand,
  lastOfComponent: boolean,
): Execution<KvCommand> {
  return { owner: 0, number, command: [command], local: true, lastOfComponent };
}

Deno.test("a snapshot is read at the end of its barrier's component, and every replica's digest there is kept", () => {
  const captures = new SnapshotCaptures();
  let state = "s0";
  const got: string[] = [];
  const refused: string[] = [];
  let barrierAnswer:
    | ((result: { op: "backup"; ok: true; entries: []; digest: string }) => void)
    | undefined;
  captures.take(
    {
      resolve: (snapshot) => got.push(`${snapshot.barrier}@${snapshot.digest}`),
      reject: (error) => refused.push(error.message),
    },
    (answer) => {
      barrierAnswer = answer.resolve;
      return "r.1";
    },
  );
  const snapshotAt = (barrier: string): ReplicaSnapshot<KvCommand> => ({
    barrier,
    executedPrefix: [0],
    records: [],
    entries: [],
    digest: state,
  });
  const digest = () => state;
  // The barrier and a write ordered after it in the same component.
  captures.onApplied(execution(1, { op: "backup", request: "r.1" }, false), snapshotAt, digest);
  // The driver answers the barrier right after applying it, mid-component.
  barrierAnswer!({ op: "backup", ok: true, entries: [], digest: "" });
  assert.deepEqual(got, [], "not in the middle of the component");
  assert.deepEqual(refused, []);
  assert.equal(captures.digestAfter("r.1"), undefined);
  state = "s1";
  const value = new TextEncoder().encode("v");
  captures.onApplied(
    execution(2, { op: "put", request: "r.2", key: "k", value }, true),
    snapshotAt,
    digest,
  );
  assert.deepEqual(got, ["r.1@s1"]);
  assert.equal(captures.digestAfter("r.1"), "s1");
  // Another replica's barrier (not taken here) gets its digest recorded too.
  captures.onApplied(execution(3, { op: "backup", request: "x.9" }, true), snapshotAt, digest);
  assert.equal(captures.digestAfter("x.9"), "s1");
  assert.equal(captures.size, 0);
});
