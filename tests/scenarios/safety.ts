/**
 * The in-memory half of the scenario safety checks (the simulator's
 * `InvariantChecker` does the persisted half): Agreement over every running
 * replica's committed records, and that every replica executes an instance at
 * most once and conflicting instances in one order.
 *
 * @module
 */

import { type Access, accessesConflict, batchAccesses } from "../../src/core/conflict.ts";
import { depsEqual } from "../../src/core/deps.ts";
import { describeRecord } from "../../src/core/describe.ts";
import { describeId, instanceKey, keyNumber, keyOwner } from "../../src/core/instance.ts";
import type { Replica } from "../../src/core/replica.ts";
import { type InstanceRecord, NOP, type Payload, Phase } from "../../src/core/types.ts";
import { type KvCommand, kvConflicts } from "../../src/kv/commands.ts";
import { InvariantViolation } from "../../src/sim/invariants.ts";
import { describeScenarioCommand, type ExecutedEntry } from "./driver_edges.ts";

/**
 * Checks that every copy of a committed instance held in memory has the same
 * command and dependencies; returns how many committed instances there are.
 * `cores[i]` is replica `i`'s core, undefined while it is down.
 *
 * @throws {InvariantViolation} on a disagreement.
 */
export function checkAgreement(cores: readonly (Replica<KvCommand> | undefined)[]): number {
  const committed = new Map<number, { record: InstanceRecord<KvCommand>; replica: number }>();
  cores.forEach((core, replica) => {
    if (core === undefined) return;
    for (const record of core.instances()) {
      if (record.phase !== Phase.Committed) continue;
      const key = instanceKey(record.owner, record.number);
      const seen = committed.get(key);
      if (seen === undefined) {
        committed.set(key, { record, replica });
      } else if (
        !samePayload(seen.record.command!, record.command!) ||
        !depsEqual(seen.record.deps!, record.deps!)
      ) {
        throw new InvariantViolation(
          "Agreement",
          `replica ${seen.replica} has ${
            describeRecord(seen.record, describeScenarioCommand)
          } but replica ${replica} has ${describeRecord(record, describeScenarioCommand)}`,
        );
      }
    }
  });
  return committed.size;
}

/**
 * Checks each replica's execution log (`logs[i]` is replica `i`'s): every
 * instance at most once, and conflicting instances in the same relative order
 * on every replica that executed both.
 *
 * @throws {InvariantViolation} on a failure.
 */
export function checkExecutionOrders(logs: readonly (readonly ExecutedEntry[])[]): void {
  const positions = logs.map((log, replica) => {
    const position = new Map<number, number>();
    log.forEach((entry, index) => {
      const key = instanceKey(entry.owner, entry.number);
      if (position.has(key)) {
        throw new InvariantViolation(
          "executed at most once",
          `replica ${replica} executed ${describeId(entry.owner, entry.number)} twice`,
        );
      }
      position.set(key, index);
    });
    return position;
  });
  const accesses = new Map<number, readonly Access[]>();
  for (const log of logs) {
    for (const entry of log) {
      if (entry.command === NOP) continue;
      accesses.set(
        instanceKey(entry.owner, entry.number),
        batchAccesses(kvConflicts, entry.command),
      );
    }
  }
  const keys = [...accesses.keys()];
  for (let i = 0; i < keys.length; i++) {
    for (let j = i + 1; j < keys.length; j++) {
      const a = keys[i]!;
      const b = keys[j]!;
      if (!accessesConflict(accesses.get(a)!, accesses.get(b)!)) continue;
      let order: { replica: number; aFirst: boolean } | undefined;
      for (let replica = 0; replica < positions.length; replica++) {
        const pa = positions[replica]!.get(a);
        const pb = positions[replica]!.get(b);
        if (pa === undefined || pb === undefined) continue;
        const aFirst = pa < pb;
        if (order === undefined) {
          order = { replica, aFirst };
        } else if (order.aFirst !== aFirst) {
          throw new InvariantViolation(
            "conflicting commands execute in the same order",
            `replicas ${order.replica} and ${replica} execute ${describeKey(a)} and ${
              describeKey(b)
            } in different orders`,
          );
        }
      }
    }
  }
}

function describeKey(key: number): string {
  return describeId(keyOwner(key), keyNumber(key));
}

function samePayload(a: Payload<KvCommand>, b: Payload<KvCommand>): boolean {
  if (a === b) return true;
  if (a === NOP || b === NOP || a.length !== b.length) return false;
  return a.every((command, index) => command.request === b[index]!.request);
}
