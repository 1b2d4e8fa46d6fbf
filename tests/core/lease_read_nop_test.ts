import assert from "node:assert/strict";
import type { ConflictModel } from "../../src/core/conflict.ts";
import { leaseEveryKey } from "../../src/core/lease.ts";
import { Replica } from "../../src/core/replica.ts";
import { type InstanceRecord, type Message, NOP, Phase } from "../../src/core/types.ts";

interface Command {
  readonly key: string;
  readonly write: boolean;
}

const model: ConflictModel<Command> = { accesses: (c) => [{ key: c.key, write: c.write }] };
const leases = leaseEveryKey({ leaseMs: 1000, renewMs: 200, drift: 0.01 });
const readA = [{ key: "a", write: false }];

Deno.test("a lease holder waits for every write it knows, not only the latest of a row (which may be a Nop)", () => {
  let now = 0;
  const replicas = Array.from(
    { length: 3 },
    (_, id) => new Replica<Command>({ id, replicas: 3, conflicts: model, leases }),
  );
  /** What replica 0's disk holds. */
  const disk = new Map<string, InstanceRecord<Command>>();
  /** Instances the holder applied (its Readies are advanced at once). */
  const applied = new Set<string>();
  let drop: (message: Message<Command>) => boolean = () => false;
  const settle = () => {
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      for (const replica of replicas) {
        while (replica.hasReady()) {
          moved = true;
          const ready = replica.ready();
          for (const execution of ready.executions) {
            if (replica.id === 2) applied.add(`${execution.owner}.${execution.number}`);
          }
          for (const record of ready.records) {
            if (replica.id === 0 && record.kind === "instance") {
              disk.set(`${record.owner}.${record.number}`, record);
            }
          }
          replica.advance();
          for (const message of [...ready.earlyMessages, ...ready.messages]) {
            if (drop(message)) continue;
            replicas[message.to]!.observeTime(now);
            replicas[message.to]!.step(message);
          }
        }
      }
      if (!moved) return;
    }
    throw new Error("The cluster did not settle in 1000 rounds");
  };
  const run = (ms: number) => {
    for (let elapsed = 0; elapsed < ms; elapsed += 5) {
      now += 5;
      for (const replica of replicas) {
        replica.observeTime(now);
        replica.tick();
      }
      settle();
    }
  };
  run(30);
  const holder = replicas[2]!;
  assert.deepEqual(holder.localRead(readA, now), { verdict: "serve" });
  // 0.1 writes "a" with the fast quorum {0, 2}; its commit never reaches 2.
  replicas[0]!.setPeerOrder([2, 1]);
  drop = (message) => message.to === 2 && message.type === "commit";
  replicas[0]!.propose([{ key: "a", write: true }]);
  settle();
  assert.equal(replicas[0]!.instance(0, 1)?.phase, Phase.Committed, "0.1 decided: acknowledged");
  assert.equal(holder.instance(0, 1)?.phase, Phase.PreAccepted);
  // 0.2 writes "a" too: its early PreAccept reaches 2, then 0 crashes before
  // its record is durable, and recovers 0.2 (a number it skipped) with 1: a Nop.
  replicas[0]!.propose([{ key: "a", write: true }]);
  for (const message of replicas[0]!.ready().earlyMessages) {
    if (message.to === 2) holder.step(message);
  }
  replicas[0] = new Replica<Command>(
    { id: 0, replicas: 3, conflicts: model, leases, leaseRestartedAt: now },
    { records: [...disk.values()] },
  );
  drop = (message) =>
    message.from === 2 || (message.to === 2 && (message.type !== "commit" || message.number === 1));
  settle();
  assert.equal(holder.instance(0, 2)?.phase, Phase.Committed);
  assert.equal(holder.instance(0, 2)?.command, NOP);
  assert.ok(applied.has("0.2"), "the Nop executed: it waits on nothing");
  assert.ok(!applied.has("0.1"));
  // The latest write of row 0 to "a" is applied, but 0.1, acknowledged, is
  // not: serving now would return the value from before 0.1.
  const verdict = holder.localRead(readA, now);
  assert.equal(verdict.verdict, "hold");
  assert.deepEqual(verdict.verdict === "hold" ? verdict.pending : [], [[0, 1]]);
  // Healed: 2 asks for 0.1's commit (an orphan after DEFAULT_TIMING's
  // 2000 ticks), executes it, and serves.
  drop = () => false;
  for (let step = 0; step < 3000 && !applied.has("0.1"); step++) run(5);
  assert.ok(applied.has("0.1"));
  assert.equal(holder.localRead(readA, now).verdict, "serve");
});
