/**
 * The in-memory form of an instance at one replica: the spec's per-instance
 * variables plus volatile bookkeeping that is rebuilt after a restart.
 *
 * @module
 */

import type { Access } from "./conflict.ts";
import type { Deps } from "./deps.ts";
import { type InstanceRecord, type Payload, Phase, type StoredInstance } from "./types.ts";

/** Bits reserved for the owner in an instance key (supports up to 16 replicas). */
const OWNER_BITS = 16;

/** A number naming instance `(owner, number)`, for maps. */
export function instanceKey(owner: number, number: number): number {
  return number * OWNER_BITS + owner;
}

/** The owner of the instance named by `key`. */
export function keyOwner(key: number): number {
  return key % OWNER_BITS;
}

/** The number of the instance named by `key`. */
export function keyNumber(key: number): number {
  return Math.floor(key / OWNER_BITS);
}

/**
 * Whether `instanceKey(owner, number)` names exactly that instance: the key
 * packs both into one double, so an owner of 16 or more, or a number past
 * 2^49, would not survive the trip.
 */
export function isInstanceKey(owner: number, number: number): boolean {
  const key = instanceKey(owner, number);
  return keyOwner(key) === owner && keyNumber(key) === number;
}

/** Renders an instance id as `owner.number`. */
export function describeId(owner: number, number: number): string {
  return `${owner}.${number}`;
}

/** An instance at one replica. Mutable; only the replica and its executor touch it. */
export interface Instance<C> {
  /** Row owner. */
  readonly owner: number;
  /** Number in the row. */
  readonly number: number;
  /** `instanceKey(owner, number)`. */
  readonly key: number;
  /** `phase`. */
  phase: Phase;
  /** `bal`. */
  ballot: number;
  /** `abal`. */
  acceptedBallot: number;
  /** `cmd`. */
  command: Payload<C> | undefined;
  /** `dep`. */
  deps: Deps | undefined;
  /** `initCmd`. */
  initialCommand: Payload<C> | undefined;
  /** `initDep`. */
  initialDeps: Deps | undefined;
  /** The highest `seq` this instance is indexed with in the conflict index (-1: not indexed). */
  indexedSeq: number;
  /** Executed here, in memory: the executor emitted it. */
  executed: boolean;
  /** Executor: it was executed last of its strongly connected component (set as it is output). */
  lastOfComponent: boolean;
  /**
   * The persisted `executed` flag: set when the record that carries the
   * instance's execution effects is handed to storage, not before. A record
   * persisted earlier (a commit) must not claim an execution whose effects are
   * not durable.
   */
  executedMarked: boolean;
  /** Its execution is applied to the state machine (the Ready that carried it was advanced). */
  applied: boolean;

  // Volatile bookkeeping.
  /** Accesses of the first non-Nop command learned, as indexed for conflicts. */
  accesses: readonly Access[] | undefined;
  /** Tick at which this replica first learned of the instance or last saw it progress. */
  sinceTick: number;
  /** Executor: Tarjan visit epoch. */
  visitEpoch: number;
  /** Executor: Tarjan index. */
  visitIndex: number;
  /** Executor: Tarjan low link. */
  lowLink: number;
  /** Executor: on the Tarjan stack. */
  onStack: boolean;
  /** Executor: key of the instance whose commit or arrival this one waits for. */
  blockedOn: number | undefined;
  /** Executor: epoch mark used to deduplicate edges. */
  edgeMark: number;
  /** Replica: whether the instance is already listed for the next Ready's records. */
  dirty: boolean;
  /**
   * Replica: this replica decided the instance on the fast path as its
   * coordinator, so its commit record must be written before its Commits leave
   * (see `Replica.ready`).
   */
  commitMustPersist: boolean;
  /** Replica: client commands this instance counts toward `Replica.heldCommands`. */
  heldCommands: number;
}

/** Creates an instance in the initial phase. */
export function newInstance<C>(owner: number, number: number, tick: number): Instance<C> {
  return {
    owner,
    number,
    key: instanceKey(owner, number),
    phase: Phase.Initial,
    ballot: 0,
    acceptedBallot: 0,
    command: undefined,
    deps: undefined,
    initialCommand: undefined,
    initialDeps: undefined,
    indexedSeq: -1,
    executed: false,
    lastOfComponent: false,
    executedMarked: false,
    applied: false,
    accesses: undefined,
    sinceTick: tick,
    visitEpoch: 0,
    visitIndex: 0,
    lowLink: 0,
    onStack: false,
    blockedOn: undefined,
    edgeMark: 0,
    dirty: false,
    commitMustPersist: false,
    heldCommands: 0,
  };
}

/** Snapshots the persistent part of an instance, tagged for a Ready. */
export function toRecord<C>(instance: Instance<C>): StoredInstance<C> {
  const record: {
    kind: "instance";
    owner: number;
    number: number;
    phase: Phase;
    ballot: number;
    acceptedBallot: number;
    executed: boolean;
    command?: Payload<C>;
    deps?: Deps;
    initialCommand?: Payload<C>;
    initialDeps?: Deps;
  } = {
    kind: "instance",
    owner: instance.owner,
    number: instance.number,
    phase: instance.phase,
    ballot: instance.ballot,
    acceptedBallot: instance.acceptedBallot,
    executed: instance.executedMarked,
  };
  if (instance.command !== undefined) record.command = instance.command;
  if (instance.deps !== undefined) record.deps = instance.deps;
  if (instance.initialCommand !== undefined) record.initialCommand = instance.initialCommand;
  if (instance.initialDeps !== undefined) record.initialDeps = instance.initialDeps;
  return record;
}

/** Rebuilds an instance from its persisted record. */
export function fromRecord<C>(record: InstanceRecord<C>, tick: number): Instance<C> {
  const instance = newInstance<C>(record.owner, record.number, tick);
  instance.phase = record.phase;
  instance.ballot = record.ballot;
  instance.acceptedBallot = record.acceptedBallot;
  instance.command = record.command;
  instance.deps = record.deps;
  instance.initialCommand = record.initialCommand;
  instance.initialDeps = record.initialDeps;
  instance.executed = record.executed;
  instance.executedMarked = record.executed;
  // A persisted execution marker follows the effects it marks (`executedMarked`).
  instance.applied = record.executed;
  return instance;
}
