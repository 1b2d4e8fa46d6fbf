/**
 * One replica as the bounded explorer (`explore.ts`) runs it: the pure core,
 * an in-memory store of what it persisted, and the commands it applied. Each
 * input (a message, a proposal, a timeout, a crash-restart) is followed by
 * the Readies it makes, handled as the production driver does: persist the
 * records, send the messages, apply the executions, advance. Messages leave
 * encoded by the real peer codec and arrive decoded by it, as in the
 * simulator.
 *
 * @module
 */

import type { ConflictModel } from "../core/conflict.ts";
import type { Deps } from "../core/deps.ts";
import { describePayload } from "../core/describe.ts";
import { describeId, instanceKey } from "../core/instance.ts";
import type { QuorumSizes } from "../core/quorum.ts";
import { Replica, type TimingOptions } from "../core/replica.ts";
import type { InstanceRecord, Message, StorageRecord } from "../core/types.ts";
import { describeKvCommand, isKvCommand, type KvCommand, kvConflicts } from "../kv/commands.ts";
import { decodeBatch, encodeBatch } from "../transport/codec.ts";
import type { ExploredReplicaView } from "./explore_check.ts";
import { InvariantChecker } from "./invariants.ts";

/**
 * Timers of explored replicas: the production defaults' shape shrunk about
 * tenfold, so a timeout is a short jump. Two departures: progress gossip and
 * the conflict index's forgetting are off (frontiers would fire on every
 * timeout, and pruning needs far more steps than a path has), and a replica
 * missing a commit recovers it before it asks peers for it (the defaults ask
 * first), so that one timeout reaches recovery: asking first would spend the
 * tick budget on commit requests. Commit requests still go out, later.
 */
export const EXPLORE_TIMING: TimingOptions = {
  defaultRoundTripTicks: 2,
  widenRoundTrips: 2,
  widenMarginTicks: 1,
  retransmitTicks: 5,
  maxRetransmitTicks: 40,
  commitRequestTicks: 40,
  recoveryTicks: 20,
  recoveryStaggerTicks: 5,
  orphanTicks: 100,
  recoveryAttemptTicks: 20,
  frontierTicks: 1_000_000_000,
  scanTicks: 1,
  forgetTicks: 1_000_000_000,
};

/** Replicas of every explored cluster. */
export const EXPLORE_REPLICAS = 3;

/** Longest timeout jump: a replica with nothing due within this many ticks cannot time out. */
export const MAX_TICK_JUMP = 2_000;

/** Most Readies one input may make before the replica is taken to be looping. */
const MAX_READIES = 64;

/** An input to one replica. */
export type ReplicaInput =
  | { readonly kind: "deliver"; readonly bytes: Uint8Array }
  | { readonly kind: "propose"; readonly commands: readonly KvCommand[] }
  | { readonly kind: "tick" }
  | { readonly kind: "crash" };

/** What one input did. */
export interface ReplicaOutput {
  /** Whether anything happened (false: a timeout with nothing due within {@linkcode MAX_TICK_JUMP}). */
  readonly fired: boolean;
  /** Messages sent, each encoded alone as a peer batch, with its receiver. */
  readonly sent: readonly SentMessage[];
  /** Ticks the timeout advanced (0 for other inputs, or a held Ready of markers only). */
  readonly ticks: number;
  /** Lines for a trace: what the replica applied. */
  readonly notes: readonly string[];
}

/** A message as it leaves: its receiver and its bytes. */
export interface SentMessage {
  /** The receiver. */
  readonly to: number;
  /** The message alone in a peer batch, encoded by the real codec. */
  readonly bytes: Uint8Array;
}

/** Settings of an explored replica. */
export interface ExploredReplicaOptions {
  /** Replica id. */
  readonly id: number;
  /** Cluster size. */
  readonly replicas: number;
  /** For tests only: see `ReplicaOptions.unsafeQuorumSizes`. */
  readonly unsafeQuorumSizes?: Partial<QuorumSizes>;
  /** Whether backup commands fence (`ConflictModel.fences`): the barrier of `ExploreOptions`. */
  readonly barrierFences?: boolean;
}

/** The key-value conflicts, with backup commands fencing (the explorer's barrier). */
const FENCING_KV_CONFLICTS: ConflictModel<KvCommand> = {
  accesses: kvConflicts.accesses,
  fences: (command) => command.op === "backup",
};

/** Encodes one message as a peer batch of its own, with the real codec. */
export function encodeMessage(message: Message<KvCommand>): Uint8Array {
  return encodeBatch({ from: message.from, messages: [message] });
}

/** Decodes what {@linkcode encodeMessage} made for replica `self`, validating it as a peer would. */
export function decodeMessage(
  bytes: Uint8Array,
  self: number,
  replicas: number,
): Message<KvCommand> {
  const batch = decodeBatch(bytes, { replicas, self, isCommand: isKvCommand });
  if (batch.messages.length !== 1) throw new Error("An explored batch holds one message");
  return batch.messages[0]!;
}

/** One explored replica: core, store, applied commands. */
export class ExploredReplica {
  readonly #options: ExploredReplicaOptions;
  #core: Replica<KvCommand>;
  readonly #store = new Map<number, InstanceRecord<KvCommand>>();
  #pruneFloor: Deps | undefined;
  #applied: number[] = [];
  /** Checks this replica's own persists: ballots never decrease, commits never change. */
  readonly #checker: InvariantChecker;

  /** A replica with empty storage. */
  constructor(options: ExploredReplicaOptions) {
    this.#options = options;
    this.#checker = new InvariantChecker(options.replicas);
    this.#core = this.#boot(undefined);
  }

  /** The running core. */
  get core(): Replica<KvCommand> {
    return this.#core;
  }

  /**
   * Hands the replica one input and handles the Readies it makes.
   *
   * @throws {InvariantViolation} if a persisted record breaks a per-replica invariant.
   */
  apply(input: ReplicaInput): ReplicaOutput {
    const out = { sent: [] as SentMessage[], notes: [] as string[] };
    const id = this.#options.id;
    switch (input.kind) {
      case "deliver":
        this.#core.step(decodeMessage(input.bytes, id, this.#options.replicas));
        this.#drain(out, false);
        return { fired: true, ticks: 0, ...out };
      case "propose":
        this.#core.propose(input.commands);
        this.#drain(out, false);
        return { fired: true, ticks: 0, ...out };
      case "crash":
        // What was applied but not durably marked executed is lost with the
        // process, and applied again after the restart.
        this.#applied = this.#applied.filter((key) => this.#store.get(key)?.executed === true);
        this.#core = this.#boot({
          records: [...this.#store.values()],
          pruneFloor: this.#pruneFloor,
        });
        this.#drain(out, false);
        return { fired: true, ticks: 0, ...out };
      case "tick": {
        // A Ready of executed markers only, held back as the driver holds it,
        // goes out first: its delay is shorter than any protocol timer.
        if (this.#core.hasReady()) {
          this.#drain(out, true);
          return { fired: true, ticks: 0, ...out };
        }
        for (let ticks = 1; ticks <= MAX_TICK_JUMP; ticks++) {
          this.#core.tick();
          if (this.#core.hasReady()) {
            this.#drain(out, true);
            return { fired: true, ticks, ...out };
          }
        }
        return { fired: false, ticks: MAX_TICK_JUMP, ...out };
      }
    }
  }

  /** What this replica holds and applied, for the invariant checks. */
  view(): ExploredReplicaView {
    const memory: InstanceRecord<KvCommand>[] = [];
    for (const record of this.#core.instances()) {
      // Share the stored object when memory holds the same (the usual case
      // after a Ready): the explorer keeps a view per replica state.
      const stored = this.#store.get(instanceKey(record.owner, record.number));
      memory.push(stored !== undefined && sameRecord(stored, record) ? stored : record);
    }
    return { memory, persisted: [...this.#store.values()], applied: [...this.#applied] };
  }

  #boot(
    restored: { records: InstanceRecord<KvCommand>[]; pruneFloor: Deps | undefined } | undefined,
  ): Replica<KvCommand> {
    return new Replica<KvCommand>({
      id: this.#options.id,
      replicas: this.#options.replicas,
      conflicts: this.#options.barrierFences ? FENCING_KV_CONFLICTS : kvConflicts,
      timing: EXPLORE_TIMING,
      ...(this.#options.unsafeQuorumSizes === undefined
        ? {}
        : { unsafeQuorumSizes: this.#options.unsafeQuorumSizes }),
    }, restored);
  }

  /**
   * Handles Readies while one holds more than executed markers (those wait,
   * as the driver lets them ride with the next storage commit); with `force`,
   * at least one.
   */
  #drain(out: { sent: SentMessage[]; notes: string[] }, force: boolean): void {
    const id = this.#options.id;
    for (let round = 0; round < MAX_READIES; round++) {
      if (!this.#core.hasUrgentReady() && !(force && this.#core.hasReady())) return;
      force = false;
      const ready = this.#core.ready();
      for (const message of ready.earlyMessages) {
        out.sent.push({ to: message.to, bytes: encodeMessage(message) });
      }
      this.#persist(ready.records);
      for (const message of ready.messages) {
        out.sent.push({ to: message.to, bytes: encodeMessage(message) });
      }
      for (const execution of ready.executions) {
        this.#applied.push(instanceKey(execution.owner, execution.number));
        out.notes.push(
          `r${id} applies ${describeId(execution.owner, execution.number)} ${
            describePayload(execution.command, describeKvCommand)
          }`,
        );
      }
      this.#core.advance();
    }
    throw new Error(`Replica ${id} still had urgent Readies after ${MAX_READIES} of them`);
  }

  #persist(records: readonly StorageRecord<KvCommand>[]): void {
    this.#checker.onPersist(this.#options.id, records, 0);
    for (const record of records) {
      switch (record.kind) {
        case "instance":
          this.#store.set(instanceKey(record.owner, record.number), record);
          break;
        case "delete":
          for (let number = record.from; number <= record.to; number++) {
            this.#store.delete(instanceKey(record.owner, number));
          }
          break;
        case "floor":
          this.#pruneFloor = record.pruneFloor;
          break;
      }
    }
  }
}

function sameRecord(a: InstanceRecord<KvCommand>, b: InstanceRecord<KvCommand>): boolean {
  return a.phase === b.phase && a.ballot === b.ballot && a.acceptedBallot === b.acceptedBallot &&
    a.executed === b.executed && a.command === b.command && a.deps === b.deps &&
    a.initialCommand === b.initialCommand && a.initialDeps === b.initialDeps;
}
