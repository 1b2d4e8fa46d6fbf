/**
 * The safety invariants the bounded explorer (`explore.ts`) checks at every
 * state it reaches, over what each replica holds in memory, what it persisted
 * and the commands it applied. The cross-replica checks of the simulator's
 * {@linkcode InvariantChecker} (Visibility, one execution order per key) run
 * on a fresh checker fed the state; the rest is here:
 *
 * - Agreement: every copy of a committed instance, in any replica's memory or
 *   storage, has the same payload and dependencies; in particular no instance
 *   is committed as a Nop at one replica and as a command at another.
 * - Each replica applies an instance at most once (after a crash, what was
 *   applied but not durably marked is applied again, and counts once).
 * - Each replica's execution order respects the committed dependencies: when
 *   it applied an instance, every conflicting instance in its dependencies was
 *   either applied before it or in the same strongly connected component, and
 *   none was still undecided there.
 *
 * @module
 */

import { type Access, accessesConflict, batchAccesses } from "../core/conflict.ts";
import { depsEqual } from "../core/deps.ts";
import { describeRecord } from "../core/describe.ts";
import { describeId, instanceKey, keyNumber, keyOwner } from "../core/instance.ts";
import { type InstanceRecord, NOP, type Payload, Phase } from "../core/types.ts";
import { describeKvCommand, type KvCommand, kvConflicts } from "../kv/commands.ts";
import { InvariantChecker, InvariantViolation } from "./invariants.ts";
import { BARRIER_REQUEST } from "./explore.ts";

/** What the explorer knows of one replica at one state. */
export interface ExploredReplicaView {
  /** Every instance record the running replica holds in memory. */
  readonly memory: readonly InstanceRecord<KvCommand>[];
  /** Every instance record its storage holds. */
  readonly persisted: readonly InstanceRecord<KvCommand>[];
  /**
   * The instances it applied, as instance keys in order: what survived its
   * last crash (durably marked executed), then what it applied since.
   */
  readonly applied: readonly number[];
}

/**
 * Checks every invariant over the replicas' views (`views[i]` is replica
 * `i`'s).
 *
 * @throws {InvariantViolation} naming the first one that fails.
 */
export function checkExploredState(
  views: readonly ExploredReplicaView[],
  options: { readonly barrier?: boolean } = {},
): void {
  checkAgreement(views);
  const checker = new InvariantChecker(views.length);
  views.forEach((view, replica) => {
    const committed = committedAt(view);
    checker.onPersist(
      replica,
      [...committed.values()].map((record) => ({ ...record, kind: "instance" as const })),
      0,
    );
    checkAppliedOnce(replica, view.applied);
    checkDependencyOrder(replica, view, committed);
    if (options.barrier) checkNothingAfterBarrier(replica, view, committed);
  });
  views.forEach((view, replica) => {
    for (const key of view.applied) {
      checker.onDurableExecution(replica, keyOwner(key), keyNumber(key));
    }
  });
  checker.checkVisibility();
  checker.checkExecutionOrder();
}

/**
 * The fence's promise (`Replica.fenced`): no write executes after a
 * configuration-change barrier (a backup command here, request
 * {@linkcode BARRIER_REQUEST}), so the state at the barrier is the epoch's
 * last and the same everywhere.
 */
function checkNothingAfterBarrier(
  replica: number,
  view: ExploredReplicaView,
  committed: ReadonlyMap<number, InstanceRecord<KvCommand>>,
): void {
  let barrier: number | undefined;
  for (const key of view.applied) {
    const command = committed.get(key)?.command;
    if (command === undefined || command === NOP) continue;
    if (barrier === undefined) {
      if (command.some((c) => c.op === "backup" && c.request === BARRIER_REQUEST)) barrier = key;
      continue;
    }
    const write = command.find((c) => c.op === "put" || c.op === "delete");
    if (write !== undefined) {
      throw new InvariantViolation(
        "nothing executes after a configuration-change barrier",
        `replica ${replica} applied ${describeId(keyOwner(key), keyNumber(key))} (${
          describeKvCommand(write)
        }) after the barrier ${describeId(keyOwner(barrier), keyNumber(barrier))}`,
      );
    }
  }
}

function checkAgreement(views: readonly ExploredReplicaView[]): void {
  const seen = new Map<number, { record: InstanceRecord<KvCommand>; where: string }>();
  views.forEach((view, replica) => {
    for (
      const [records, place] of [[view.memory, "memory"], [view.persisted, "storage"]] as const
    ) {
      for (const record of records) {
        if (record.phase !== Phase.Committed) continue;
        const key = instanceKey(record.owner, record.number);
        const where = `replica ${replica} (${place})`;
        const first = seen.get(key);
        if (first === undefined) {
          seen.set(key, { record, where });
          continue;
        }
        const a = first.record;
        if ((a.command === NOP) !== (record.command === NOP)) {
          throw new InvariantViolation(
            "no instance is committed both as a Nop and as a command",
            `${first.where} has ${describe(a)} but ${where} has ${describe(record)}`,
          );
        }
        if (!samePayload(a.command!, record.command!) || !depsEqual(a.deps!, record.deps!)) {
          throw new InvariantViolation(
            "Agreement",
            `${first.where} has ${describe(a)} but ${where} has ${describe(record)}`,
          );
        }
      }
    }
  });
}

/** The committed records of one replica: from memory, else from storage. */
function committedAt(view: ExploredReplicaView): Map<number, InstanceRecord<KvCommand>> {
  const committed = new Map<number, InstanceRecord<KvCommand>>();
  for (const record of view.persisted) {
    if (record.phase === Phase.Committed) {
      committed.set(instanceKey(record.owner, record.number), record);
    }
  }
  for (const record of view.memory) {
    if (record.phase === Phase.Committed) {
      committed.set(instanceKey(record.owner, record.number), record);
    }
  }
  return committed;
}

function checkAppliedOnce(replica: number, applied: readonly number[]): void {
  const seen = new Set<number>();
  for (const key of applied) {
    if (seen.has(key)) {
      throw new InvariantViolation(
        "executed at most once",
        `replica ${replica} applied ${describeKey(key)} twice`,
      );
    }
    seen.add(key);
  }
}

function checkDependencyOrder(
  replica: number,
  view: ExploredReplicaView,
  committed: ReadonlyMap<number, InstanceRecord<KvCommand>>,
): void {
  const known = new Map<number, InstanceRecord<KvCommand>>();
  for (const record of view.persisted) known.set(instanceKey(record.owner, record.number), record);
  for (const record of view.memory) known.set(instanceKey(record.owner, record.number), record);
  const position = new Map<number, number>();
  view.applied.forEach((key, index) => position.set(key, index));
  const accessCache = new Map<number, readonly Access[]>();
  const accessesOf = (key: number, payload: Payload<KvCommand>): readonly Access[] => {
    if (payload === NOP) return [];
    let accesses = accessCache.get(key);
    if (accesses === undefined) {
      accesses = batchAccesses(kvConflicts, payload);
      accessCache.set(key, accesses);
    }
    return accesses;
  };
  const edges = (from: number): number[] => {
    const record = committed.get(from);
    if (record === undefined || record.command === NOP) return [];
    const accesses = accessesOf(from, record.command!);
    const result: number[] = [];
    forEachDependency(record, (to) => {
      const target = committed.get(to);
      if (target === undefined || target.command === NOP) return;
      if (accessesConflict(accesses, accessesOf(to, target.command!))) result.push(to);
    });
    return result;
  };
  for (const key of view.applied) {
    const record = committed.get(key);
    if (record === undefined) {
      throw new InvariantViolation(
        "nothing executes before it commits",
        `replica ${replica} applied ${describeKey(key)}, which it does not hold committed`,
      );
    }
    if (record.command === NOP) continue;
    const accesses = accessesOf(key, record.command!);
    forEachDependency(record, (dependency) => {
      const other = committed.get(dependency);
      if (other === undefined) {
        const held = known.get(dependency);
        const original = held?.initialCommand ?? held?.command;
        if (
          original === undefined || original === NOP ||
          accessesConflict(accesses, batchAccesses(kvConflicts, original))
        ) {
          throw new InvariantViolation(
            "execution respects committed dependencies",
            `replica ${replica} applied ${describeKey(key)} while its dependency ${
              describeKey(dependency)
            } was ${held === undefined ? "unknown" : "undecided"} there${
              held === undefined ? "" : `: ${describe(held)}`
            }`,
          );
        }
        return;
      }
      if (other.command === NOP) return;
      if (!accessesConflict(accesses, accessesOf(dependency, other.command!))) return;
      const after = position.get(dependency);
      if (after !== undefined && after < position.get(key)!) return;
      if (reaches(dependency, key, edges)) return; // one strongly connected component
      throw new InvariantViolation(
        "execution respects committed dependencies",
        `replica ${replica} applied ${describeKey(key)} ${
          after === undefined ? "without" : "before"
        } its conflicting dependency ${describeKey(dependency)}, which does not depend on it`,
      );
    });
  }
}

/** Calls `visit` with every instance in `record`'s dependencies but itself. */
function forEachDependency(record: InstanceRecord<KvCommand>, visit: (key: number) => void): void {
  const deps = record.deps!;
  // The last entry is `seq`, not a row.
  for (let row = 0; row < deps.length - 1; row++) {
    for (let number = 1; number <= deps[row]!; number++) {
      if (row === record.owner && number === record.number) continue;
      visit(instanceKey(row, number));
    }
  }
}

/** Whether `to` is reachable from `from` along `edges` (bounded by the instances held). */
function reaches(from: number, to: number, edges: (key: number) => number[]): boolean {
  const seen = new Set<number>([from]);
  const stack = [from];
  while (stack.length > 0) {
    const next = stack.pop()!;
    for (const target of edges(next)) {
      if (target === to) return true;
      if (!seen.has(target)) {
        seen.add(target);
        stack.push(target);
      }
    }
  }
  return false;
}

function samePayload(a: Payload<KvCommand>, b: Payload<KvCommand>): boolean {
  if (a === b) return true;
  if (a === NOP || b === NOP || a.length !== b.length) return false;
  return a.every((command, index) => command.request === b[index]!.request);
}

function describe(record: InstanceRecord<KvCommand>): string {
  return describeRecord(record, describeKvCommand);
}

function describeKey(key: number): string {
  return describeId(keyOwner(key), keyNumber(key));
}
