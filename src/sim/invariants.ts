/**
 * The protocol invariants the simulator checks (the `Agreement` and
 * `Visibility` invariants of the EPaxos* TLA+ module, among others).
 *
 * @module
 */

import { accessesConflict, batchAccesses } from "../core/conflict.ts";
import type { Access } from "../core/conflict.ts";
import { type Deps, depsContain, depsEqual, describeInstanceDeps } from "../core/deps.ts";
import { describeId, instanceKey, keyNumber, keyOwner } from "../core/instance.ts";
import {
  type InstanceRecord,
  NOP,
  type Payload,
  Phase,
  type StorageRecord,
} from "../core/types.ts";
import { type KvCommand, kvConflicts } from "../kv/commands.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";

/** A broken invariant. */
export class InvariantViolation extends Error {
  /** Creates a violation of `invariant`. */
  constructor(invariant: string, detail: string) {
    super(`${invariant}: ${detail}`);
    this.name = "InvariantViolation";
  }
}

interface Decision {
  readonly command: Payload<KvCommand>;
  readonly deps: Deps;
  readonly accesses: readonly Access[];
  readonly firstCommitAt: number;
}

interface ExecutedEntry {
  readonly instance: number;
  readonly write: boolean;
}

/**
 * What is known of one epoch's instance space (each epoch starts empty, so an
 * instance id means something only within its epoch).
 */
interface EpochLedger {
  readonly decided: Map<number, Decision>;
  /**
   * What instances executed as, where executed: an instance whose commit
   * record no replica wrote (the coordinator answers a slow-path commit
   * once a quorum accepted it, and writes its commit record later) may
   * execute just before the configuration change that ends its epoch; it
   * then survives in the state every replica starts the next epoch with,
   * never as a commit record.
   */
  readonly executedAs: Map<number, Payload<KvCommand>>;
  /** When an instance was first pruned anywhere: it had executed on every replica. */
  readonly prunedAt: Map<number, number>;
}

/** Watches every persisted record and every execution of every replica. */
export class InvariantChecker {
  readonly #replicas: number;
  readonly #ledgers = new Map<number, EpochLedger>();
  /** Each replica's epoch: raised by the install of a later epoch's snapshot. */
  readonly #epochOf: number[];
  readonly #lastRecord: Map<number, InstanceRecord<KvCommand>>[];
  /** Per replica, per epoch and key (`epoch|key`): the durable execution order. */
  readonly #executionLogs: Map<string, ExecutedEntry[]>[];

  /** Creates a checker for `replicas` replicas. */
  constructor(replicas: number) {
    this.#replicas = replicas;
    this.#epochOf = new Array<number>(replicas).fill(1);
    this.#lastRecord = Array.from({ length: replicas }, () => new Map());
    this.#executionLogs = Array.from({ length: replicas }, () => new Map());
  }

  #ledger(epoch: number): EpochLedger {
    let ledger = this.#ledgers.get(epoch);
    if (ledger === undefined) {
      this.#ledgers.set(
        epoch,
        ledger = { decided: new Map(), prunedAt: new Map(), executedAs: new Map() },
      );
    }
    return ledger;
  }

  /** Number of instances decided anywhere, over every epoch. */
  get decidedCount(): number {
    let count = 0;
    for (const ledger of this.#ledgers.values()) count += ledger.decided.size;
    return count;
  }

  /**
   * The non-Nop instances committed anywhere so far, in epoch `epoch` or a
   * later one, that write what `accesses` read (quorum leases: a local read
   * must see every one of them of its own epoch, and none can be of a later
   * one).
   */
  decidedWrites(
    accesses: readonly Access[],
    epoch: number,
  ): { epoch: number; owner: number; number: number }[] {
    const found: { epoch: number; owner: number; number: number }[] = [];
    for (const [at, ledger] of this.#ledgers) {
      if (at < epoch) continue;
      for (const [key, decision] of ledger.decided) {
        if (decision.command === NOP) continue;
        if (!decision.accesses.some((access) => access.write)) continue;
        if (!accessesConflict(accesses, decision.accesses)) continue;
        found.push({ epoch: at, owner: keyOwner(key), number: keyNumber(key) });
      }
    }
    return found;
  }

  /**
   * Checks records as replica `replica` persists them: ballots never decrease,
   * committed records never change, and Agreement (every replica that commits
   * an instance commits the same command and dependencies).
   */
  onPersist(replica: number, records: readonly StorageRecord<KvCommand>[], now: number): void {
    const last = this.#lastRecord[replica]!;
    const ledger = this.#ledger(this.#epochOf[replica]!);
    for (const entry of records) {
      if (entry.kind === "delete") {
        for (let number = entry.from; number <= entry.to; number++) {
          const key = instanceKey(entry.owner, number);
          last.delete(key);
          if (!ledger.prunedAt.has(key)) ledger.prunedAt.set(key, now);
        }
        continue;
      }
      if (entry.kind !== "instance") continue;
      const record = entry;
      const key = instanceKey(record.owner, record.number);
      const id = describeId(record.owner, record.number);
      const previous = last.get(key);
      if (previous !== undefined) {
        if (record.ballot < previous.ballot) {
          throw new InvariantViolation(
            "ballots never decrease",
            `replica ${replica} instance ${id} ballot ${previous.ballot} -> ${record.ballot}`,
          );
        }
        if (previous.phase === Phase.Committed) {
          if (
            record.phase !== Phase.Committed || !sameCommand(record.command!, previous.command!) ||
            !depsEqual(record.deps!, previous.deps!)
          ) {
            throw new InvariantViolation(
              "committed records never change",
              `replica ${replica} instance ${id}`,
            );
          }
        }
      }
      last.set(key, record);
      if (record.phase !== Phase.Committed) continue;
      const decided = ledger.decided.get(key);
      if (decided === undefined) {
        const command = record.command!;
        ledger.decided.set(key, {
          command,
          deps: record.deps!,
          accesses: command === NOP ? [] : batchAccesses(kvConflicts, command),
          firstCommitAt: now,
        });
      } else if (
        !sameCommand(decided.command, record.command!) || !depsEqual(decided.deps, record.deps!)
      ) {
        throw new InvariantViolation(
          "Agreement",
          `instance ${id} committed as ${describePayload(decided.command)} ${
            describeInstanceDeps(decided.deps)
          } and as ${describePayload(record.command!)} ${
            describeInstanceDeps(record.deps)
          } at replica ${replica}`,
        );
      }
    }
  }

  /**
   * Takes a snapshot `replica` installed: its records at or below the
   * snapshot's prefix are gone, the snapshot's records replace its own, and
   * its execution logs start again (the state now holds instances it never
   * executed itself, and it executes again those of its own the snapshot
   * lacks). The snapshot's records are committed records like any other:
   * Agreement holds for them too.
   */
  onSnapshotInstalled(replica: number, snapshot: ReplicaSnapshot<KvCommand>): void {
    const last = this.#lastRecord[replica]!;
    const epoch = snapshot.configuration?.epoch ?? 1;
    if (epoch > this.#epochOf[replica]!) {
      // A later epoch: a fresh instance space, every record of the old one dropped.
      this.#epochOf[replica] = epoch;
      last.clear();
    } else {
      for (const [key, record] of last) {
        if (record.number <= snapshot.executedPrefix[record.owner]!) last.delete(key);
      }
    }
    this.onPersist(
      replica,
      snapshot.records.map((record) => ({ ...record, kind: "instance" as const })),
      Number.NaN,
    );
    // Within the epoch, the state now holds instances it never executed
    // itself: its logs of that epoch start again.
    const logs = this.#executionLogs[replica]!;
    for (const logKey of [...logs.keys()]) {
      if (logKey.startsWith(`${epoch}|`)) logs.delete(logKey);
    }
  }

  /**
   * Takes an execution `replica` applied to its state (not yet durable): it
   * executed as the same payload everywhere (Agreement, for instances whose
   * commit record nobody wrote), and is evidence of its decision.
   */
  onExecuted(replica: number, owner: number, number: number, command: Payload<KvCommand>): void {
    const ledger = this.#ledger(this.#epochOf[replica]!);
    const key = instanceKey(owner, number);
    const seen = ledger.executedAs.get(key) ?? ledger.decided.get(key)?.command;
    if (seen !== undefined && !sameCommand(seen, command)) {
      throw new InvariantViolation(
        "Agreement",
        `instance ${describeId(owner, number)} executed as ${describePayload(command)} ` +
          `at replica ${replica}, decided as ${describePayload(seen)}`,
      );
    }
    ledger.executedAs.set(key, command);
  }

  /**
   * Takes an epoch `replica` started in place (`ReplicaStorage.startEpoch`):
   * like the install of a later epoch's snapshot, every record of the old
   * epoch is gone.
   */
  onEpochStarted(replica: number, epoch: number): void {
    if (epoch <= this.#epochOf[replica]!) {
      throw new InvariantViolation(
        "epochs only rise",
        `replica ${replica} started epoch ${epoch} in epoch ${this.#epochOf[replica]}`,
      );
    }
    this.#epochOf[replica] = epoch;
    this.#lastRecord[replica]!.clear();
  }

  /** Records that `replica` durably executed `owner.number` (in order). */
  onDurableExecution(replica: number, owner: number, number: number): void {
    const key = instanceKey(owner, number);
    const epoch = this.#epochOf[replica]!;
    const decided = this.#ledger(epoch).decided.get(key);
    if (decided === undefined) {
      throw new InvariantViolation(
        "nothing executes before it commits",
        `replica ${replica} executed ${describeId(owner, number)} which is not committed anywhere`,
      );
    }
    const logs = this.#executionLogs[replica]!;
    for (const access of decided.accesses) {
      const logKey = `${epoch}|${
        access.end === undefined ? access.key : `[${access.key},${access.end})`
      }`;
      let log = logs.get(logKey);
      if (log === undefined) logs.set(logKey, log = []);
      log.push({ instance: key, write: access.write });
    }
  }

  /**
   * Acknowledged writes survive: a write answered at commit was decided, in
   * the instance and at the position its version names, with the payload the
   * client was answered for (not replaced by a Nop after the answer, as it
   * could be if the answer came before the decision was durable).
   */
  checkAcknowledged(
    acknowledged: readonly {
      readonly request: string;
      readonly owner: number;
      readonly number: number;
      readonly index: number;
      /** The epoch the version names (`…e2`; 1 without). */
      readonly epoch: number;
    }[],
  ): void {
    for (const { request, owner, number, index, epoch } of acknowledged) {
      const ledger = this.#ledger(epoch);
      const key = instanceKey(owner, number);
      const decided = ledger.decided.get(key);
      const payload = decided?.command ?? ledger.executedAs.get(key);
      const command = payload === undefined || payload === NOP ? undefined : payload[index];
      if (command?.request !== request) {
        throw new InvariantViolation(
          "acknowledged writes survive",
          `${request} was answered as ${
            describeId(owner, number)
          }[${index}], which was decided as ${
            payload === undefined
              ? "nothing (not committed or executed anywhere)"
              : describePayload(payload)
          }`,
        );
      }
    }
  }

  /**
   * Visibility: of two committed conflicting non-Nop commands, one is in the
   * other's dependencies. A pair where one instance had executed on every
   * replica (and been pruned) before the other first committed is exempt:
   * pruning makes that instance invisible to recovery, and the order of the
   * two is fixed anyway, everywhere.
   */
  checkVisibility(): void {
    // Only within an epoch: the change between two epochs orders everything.
    for (const ledger of this.#ledgers.values()) this.#checkVisibilityIn(ledger);
  }

  #checkVisibilityIn(ledger: EpochLedger): void {
    const byKey = new Map<string, number[]>();
    for (const [key, decision] of ledger.decided) {
      if (decision.command === NOP) continue;
      for (const access of decision.accesses) {
        const group = access.end === undefined ? access.key : "\u0000spans";
        let list = byKey.get(group);
        if (list === undefined) byKey.set(group, list = []);
        list.push(key);
      }
    }
    const spans = byKey.get("\u0000spans") ?? [];
    for (const [group, keys] of byKey) {
      const candidates = group === "\u0000spans" ? keys : [...keys, ...spans];
      for (let i = 0; i < keys.length; i++) {
        for (let j = 0; j < candidates.length; j++) {
          const a = keys[i]!;
          const b = candidates[j]!;
          if (a >= b && candidates === keys) continue;
          if (a === b) continue;
          this.#checkPair(ledger, a, b);
        }
      }
    }
  }

  #checkPair(ledger: EpochLedger, a: number, b: number): void {
    const first = ledger.decided.get(a)!;
    const second = ledger.decided.get(b)!;
    if (!accessesConflict(first.accesses, second.accesses)) return;
    if (depsContain(first.deps, keyOwner(b), keyNumber(b))) return;
    if (depsContain(second.deps, keyOwner(a), keyNumber(a))) return;
    const prunedA = ledger.prunedAt.get(a);
    const prunedB = ledger.prunedAt.get(b);
    if (prunedA !== undefined && prunedA <= second.firstCommitAt) return;
    if (prunedB !== undefined && prunedB <= first.firstCommitAt) return;
    throw new InvariantViolation(
      "Visibility",
      `${describeId(keyOwner(a), keyNumber(a))} ${describeInstanceDeps(first.deps)} and ${
        describeId(keyOwner(b), keyNumber(b))
      } ${describeInstanceDeps(second.deps)} conflict and neither depends on the other`,
    );
  }

  /**
   * Conflicting commands executed in the same order on every replica: per key,
   * replicas agree on the order of writes, and each read sees the same last
   * write before it (reads may reorder among themselves).
   */
  checkExecutionOrder(): void {
    const keys = new Set<string>();
    for (const logs of this.#executionLogs) for (const key of logs.keys()) keys.add(key);
    for (const key of keys) {
      const reference = this.#executionLogs.map((logs) => logs.get(key) ?? []);
      for (let a = 0; a < this.#replicas; a++) {
        for (let b = a + 1; b < this.#replicas; b++) {
          compareLogs(key, a, reference[a]!, b, reference[b]!);
        }
      }
    }
  }
}

function compareLogs(
  key: string,
  replicaA: number,
  logA: readonly ExecutedEntry[],
  replicaB: number,
  logB: readonly ExecutedEntry[],
): void {
  const inB = new Set(logB.map((entry) => entry.instance));
  const inA = new Set(logA.map((entry) => entry.instance));
  const projectedA = logA.filter((entry) => inB.has(entry.instance));
  const projectedB = logB.filter((entry) => inA.has(entry.instance));
  const shape = (log: readonly ExecutedEntry[]) => {
    const writes: number[] = [];
    const readsAfter = new Map<number, number>();
    for (const entry of log) {
      if (entry.write) {
        writes.push(entry.instance);
      } else {
        readsAfter.set(entry.instance, writes.length === 0 ? -1 : writes[writes.length - 1]!);
      }
    }
    return { writes, readsAfter };
  };
  const shapeA = shape(projectedA);
  const shapeB = shape(projectedB);
  const describe = (instance: number) => describeId(keyOwner(instance), keyNumber(instance));
  for (let i = 0; i < shapeA.writes.length; i++) {
    if (shapeA.writes[i] !== shapeB.writes[i]) {
      throw new InvariantViolation(
        "conflicting commands execute in the same order",
        `key ${key}: write #${i} is ${describe(shapeA.writes[i]!)} at replica ${replicaA} but ${
          shapeB.writes[i] === undefined ? "nothing" : describe(shapeB.writes[i]!)
        } at replica ${replicaB}`,
      );
    }
  }
  for (const [read, lastWrite] of shapeA.readsAfter) {
    if (shapeB.readsAfter.get(read) !== lastWrite) {
      throw new InvariantViolation(
        "conflicting commands execute in the same order",
        `key ${key}: read ${
          describe(read)
        } follows different writes at replicas ${replicaA} and ${replicaB}`,
      );
    }
  }
}

function sameCommand(a: Payload<KvCommand>, b: Payload<KvCommand>): boolean {
  if (a === b) return true;
  if (a === NOP || b === NOP || a.length !== b.length) return false;
  return a.every((command, index) => command.request === b[index]!.request);
}

function describePayload(payload: Payload<KvCommand>): string {
  return payload === NOP ? "nop" : `[${payload.map((command) => command.request).join(" ")}]`;
}

/** A backup a client was answered, by the request id the replicas know it by. */
export interface AnsweredBackup {
  /** The backup command's request id. */
  readonly request: string;
  /** The digest of the state the answering replica read. */
  readonly digest: string;
}

/**
 * Every replica that executed a backup command (and still remembers it: a
 * restart forgets) computed the digest the answer read, since the state at
 * one point of the execution order is the same everywhere. `digestAt` holds,
 * per replica, its `KvStateMachine.digestAtBackup`. Returns how many digests
 * were compared.
 *
 * @throws {InvariantViolation} naming the replica and the backup that differ.
 */
export function checkBackupDigests(
  backups: readonly AnsweredBackup[],
  digestAt: readonly ((request: string) => string | undefined)[],
): number {
  let compared = 0;
  for (const backup of backups) {
    for (const [id, digestOf] of digestAt.entries()) {
      const digest = digestOf(backup.request);
      if (digest === undefined) continue;
      compared++;
      if (digest !== backup.digest) {
        throw new InvariantViolation(
          "identical state at a backup",
          `replica ${id} computed ${digest} at backup ${backup.request}, the answer read ${backup.digest}`,
        );
      }
    }
  }
  return compared;
}

/**
 * Identical state at every configuration change: where an epoch starts
 * (the end of the change's component), every replica that executed the
 * change and still remembers its digest (`ReplicaDriver.digestAfterBarrier`)
 * holds the same state. Returns how many digests were compared.
 *
 * @throws {InvariantViolation} naming the change and the digests.
 */
export function checkChangeDigests(
  requests: readonly string[],
  digestAt: readonly ((request: string) => string | undefined)[],
): number {
  let compared = 0;
  for (const request of requests) {
    const digests = new Map<string, number>();
    for (const [id, digestOf] of digestAt.entries()) {
      const digest = digestOf(request);
      if (digest === undefined) continue;
      compared++;
      if (!digests.has(digest)) digests.set(digest, id);
    }
    if (digests.size > 1) {
      throw new InvariantViolation(
        "identical state at a configuration change",
        `at ${request}: ${
          [...digests].map(([digest, id]) => `replica ${id} ${digest}`).join(", ")
        }`,
      );
    }
  }
  return compared;
}
