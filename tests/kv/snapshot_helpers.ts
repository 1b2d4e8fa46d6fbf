/**
 * Snapshots for the tests of the snapshot file, route and fetch.
 *
 * @module
 */

import { type InstanceRecord, NOP, Phase } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { type KvEntry, KvStateMachine } from "../../src/kv/state_machine.ts";
import type { ReplicaSnapshot } from "../../src/storage/types.ts";

const encoder = new TextEncoder();

/** A committed, executed record of `command` with seq-carrying deps. */
export function record(
  owner: number,
  number: number,
  command: InstanceRecord<KvCommand>["command"],
  extra: Partial<InstanceRecord<KvCommand>> = {},
): InstanceRecord<KvCommand> {
  const deps = [number - 1, 2, 0, 5];
  return {
    owner,
    number,
    phase: Phase.Committed,
    ballot: 0,
    acceptedBallot: 0,
    command,
    deps,
    initialCommand: command,
    initialDeps: deps,
    executed: true,
    ...extra,
  };
}

/** A snapshot with awkward keys, bytes values, and records of every shape. */
export function sampleSnapshot(size = 50): ReplicaSnapshot<KvCommand> {
  const machine = new KvStateMachine([
    ["a", { value: encoder.encode("one"), version: "3.0.0" }],
    ["é/ü", { value: new Uint8Array([0, 255, 10, 13, 34, 92]), version: "17.2.4" }],
    ['quote"and\\slash\n', { value: new Uint8Array(0), version: "2.0.1" }],
    ...Array.from(
      { length: size },
      (_, i) =>
        [`k${i}`, { value: new Uint8Array(i * 7 + 1).fill(i), version: `${i}.1.0` }] as [
          string,
          KvEntry,
        ],
    ),
  ]);
  const { entries, digest } = machine.snapshot();
  const binary = new Uint8Array(256).map((_, i) => i);
  const put: KvCommand = { op: "put", request: "p1", key: "bin", value: binary };
  const records = [
    record(0, 11, [put, { op: "delete", request: "d1", key: "a", ifVersion: "3.0.0" }]),
    record(1, 4, NOP),
    // Recovered: the initial command differs from the committed one.
    record(2, 9, [{ op: "put", request: "p2", key: "x", value: new Uint8Array([1, 2]) }], {
      ballot: 7,
      acceptedBallot: 7,
      initialCommand: [{ op: "get", request: "g1", key: "x" }],
      initialDeps: [0, 0, 0, 1],
    }),
    record(0, 12, [{ op: "put", request: "p3", key: "y", value: binary, ifVersion: null }]),
    record(1, 5, [{ op: "backup", request: "barrier-1" }]),
  ];
  return { barrier: "barrier-1", executedPrefix: [10, 3, 8], records, entries, digest };
}
