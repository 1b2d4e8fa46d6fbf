/**
 * The EPaxos* replica as a pure state machine, in the manner of etcd's raft
 * library: proposals, messages and ticks go in; a {@linkcode Ready} of records
 * to persist, messages to send and commands to execute comes out. It never
 * awaits, reads a clock, draws a random number or touches `Deno.*`.
 *
 * The commit protocol is EPaxos* Figure 3, recovery is Figure 5, both as written
 * in the TLA+ module `EPaxosCommitWithRecovery`; comments name the spec action a
 * handler implements. Where this code departs from the module it says so and
 * why (search for "Departure").
 *
 * @module
 */

import { type Access, accessesConflict, batchAccesses, ConflictIndex } from "./conflict.ts";
import type { ConflictModel } from "./conflict.ts";
import {
  type Deps,
  depsContain,
  depsEqual,
  depsRaise,
  depsUnion,
  describeDeps,
  emptyDeps,
} from "./deps.ts";
import { describeRecord } from "./describe.ts";
import { Executor } from "./executor.ts";
import {
  describeId,
  fromRecord,
  type Instance,
  instanceKey,
  keyNumber,
  keyOwner,
  newInstance,
  toRecord,
} from "./instance.ts";
import { nextBallot, type QuorumSizes, quorumSizes } from "./quorum.ts";
import {
  type Abandoned,
  type Decided,
  type Execution,
  type InstanceRecord,
  type Message,
  NOP,
  type Payload,
  Phase,
  type Ready,
  type RecoverOkMessage,
  type StorageRecord,
} from "./types.ts";

/** Timer settings, in ticks. Round-trip-scaled timers use the driver's measurements. */
export interface TimingOptions {
  /** Round trip assumed for a peer the driver has not measured. */
  readonly defaultRoundTripTicks: number;
  /** A thrifty quorum is widened after this many round trips of its slowest member... */
  readonly widenRoundTrips: number;
  /** ...plus this margin. */
  readonly widenMarginTicks: number;
  /** First retransmission interval after the widened set stays silent; doubles per attempt. */
  readonly retransmitTicks: number;
  /** Cap on the retransmission interval. */
  readonly maxRetransmitTicks: number;
  /** How long the executor waits on a missing commit before asking peers for it. */
  readonly commitRequestTicks: number;
  /** How long the executor waits on a missing commit before recovering it. */
  readonly recoveryTicks: number;
  /** Extra wait per position after the owner, so replicas do not all recover at once. */
  readonly recoveryStaggerTicks: number;
  /** An uncommitted instance nobody waits on is recovered after this long. */
  readonly orphanTicks: number;
  /** A recovery that has not finished after this long starts again at a higher ballot. */
  readonly recoveryAttemptTicks: number;
  /** Period of progress gossip (frontiers). */
  readonly frontierTicks: number;
  /** Period of the housekeeping scan (wanted instances, orphans, gaps). */
  readonly scanTicks: number;
  /** Period after which the conflict index forgets keys every replica pruned. */
  readonly forgetTicks: number;
}

/** Defaults for a 1 ms tick on a local network. */
export const DEFAULT_TIMING: TimingOptions = {
  defaultRoundTripTicks: 20,
  widenRoundTrips: 2,
  widenMarginTicks: 10,
  retransmitTicks: 50,
  maxRetransmitTicks: 2000,
  commitRequestTicks: 50,
  recoveryTicks: 300,
  recoveryStaggerTicks: 100,
  orphanTicks: 2000,
  recoveryAttemptTicks: 500,
  frontierTicks: 50,
  scanTicks: 10,
  forgetTicks: 5000,
};

/** How to build a replica. */
export interface ReplicaOptions<C> {
  /** This replica's index, `0 <= id < replicas`. */
  readonly id: number;
  /** Cluster size `n` (odd, 3 to 9). */
  readonly replicas: number;
  /** Which commands conflict (supplied by the replicated state machine). */
  readonly conflicts: ConflictModel<C>;
  /** Timer settings; missing fields take {@linkcode DEFAULT_TIMING}. */
  readonly timing?: Partial<TimingOptions>;
  /** How many times a proposal replaced by a Nop is proposed again before it is abandoned. */
  readonly maxReproposals?: number;
  /** Most instances pruned in one step, so a long-delayed prune cannot stall the replica. */
  readonly maxPrunePerStep?: number;
}

/** What a replica reloads after a restart: everything its storage holds. */
export interface RestoredState<C> {
  /** Every instance record persisted and not deleted. */
  readonly records: Iterable<InstanceRecord<C>>;
  /** The last persisted prune floor. */
  readonly pruneFloor?: Deps;
}

/** Counters a replica keeps for `/status` and `/metrics`. */
export interface ReplicaStats {
  /** Instances this replica committed on the fast path as their coordinator. */
  fastCommits: number;
  /** Instances this replica committed on the slow path as their coordinator. */
  slowCommits: number;
  /** Recoveries this replica started. */
  recoveriesStarted: number;
  /** Recoveries this replica finished by committing the instance. */
  recoveriesCommitted: number;
  /** Own proposals replaced by a Nop and proposed again. */
  reproposals: number;
  /** Commands executed here. */
  executedCommands: number;
  /** Instances executed here. */
  executedInstances: number;
  /** Instances pruned (executed everywhere and forgotten) here. */
  prunedInstances: number;
  /** How this replica's recoveries decided, by branch of EPaxos* Figure 5. */
  recoveryOutcomes: RecoveryOutcomes;
}

/** Counts of each recovery decision (the branches of `HandleRecoverOK` and what follows). */
export interface RecoveryOutcomes {
  /** A reply was committed: commit it. */
  foundCommitted: number;
  /** The highest-ballot replies include an accepted value: accept it. */
  foundAccepted: number;
  /** The original coordinator answered: accept a Nop. */
  nopCoordinatorAnswered: number;
  /** Too few matching pre-accepts for a fast path: accept a Nop. */
  nopNoFastQuorum: number;
  /** Entered Validate. */
  validated: number;
  /** Validation found no invalidating conflict: accept the command. */
  validatedClean: number;
  /** Validation found a committed invalidating conflict (or the e-rule): accept a Nop. */
  validatedInvalidated: number;
  /** Entered Waiting. */
  waited: number;
  /** Waiting ended with the command accepted. */
  waitedAccepted: number;
  /** Waiting ended with a Nop. */
  waitedNop: number;
}

type LeadStage = "preaccept" | "accept" | "recover" | "validate" | "waiting";

/** What this replica knows while it coordinates an instance (original or recovery). Volatile. */
interface Lead<C> {
  readonly instance: Instance<C>;
  readonly ballot: number;
  stage: LeadStage;
  /** Bitmask of peers sent the current stage's message. */
  contacted: number;
  /** Whether the current stage already went to every peer. */
  widened: boolean;
  /** Retransmissions in the current stage. */
  attempts: number;
  deadline: number;
  /** PreAcceptOK deps by replica. */
  preAcceptReplies: (Deps | undefined)[];
  /** Bitmask of AcceptOK senders at `ballot`. */
  acks: number;
  /** RecoverOK by replica (including late ones); empty unless recovering. */
  recoverReplies: (RecoverReply<C> | undefined)[];
  /** Recovery: the quorum `Q` of the decision, as a bitmask. */
  quorum: number;
  /** Recovery: `c` and `D` under validation. */
  validatedCommand: Payload<C> | undefined;
  validatedDeps: Deps | undefined;
  /** Recovery: `|Rmax|`. */
  rmaxSize: number;
  /** Recovery: ValidateOK invalidator triples by replica. */
  validateReplies: (readonly number[] | undefined)[];
  /** Recovery: the set `I`, instance key to the highest phase reported. */
  invalidators: Map<number, Phase>;
}

interface RecoverReply<C> {
  readonly acceptedBallot: number;
  readonly phase: Phase;
  readonly command: Payload<C> | undefined;
  readonly deps: Deps | undefined;
  readonly initialDeps: Deps | undefined;
}

interface OwnProposal<C> {
  readonly commands: readonly C[];
  readonly reproposals: number;
}

interface Wanted {
  readonly since: number;
  lastRequest: number;
  /** No recovery before this tick: backoff after a preempted or failed attempt. */
  notBefore: number;
  /** Recovery attempts so far; the backoff doubles with each. */
  attempts: number;
}

/** Builds an EPaxos* replica. */
export class Replica<C> {
  readonly #id: number;
  readonly #n: number;
  readonly #quorum: QuorumSizes;
  readonly #conflicts: ConflictModel<C>;
  readonly #timing: TimingOptions;
  readonly #maxReproposals: number;
  readonly #maxPrunePerStep: number;
  readonly #allPeers: number;

  readonly #instances = new Map<number, Instance<C>>();
  readonly #executor: Executor<C>;
  readonly #index: ConflictIndex;
  readonly #leads = new Map<number, Lead<C>>();
  /** Recoveries in the post-waiting stage (few): re-evaluated when what they wait on moves. */
  readonly #waitingLeads = new Set<Lead<C>>();
  readonly #ownProposals = new Map<number, OwnProposal<C>>();
  readonly #uncommitted = new Set<Instance<C>>();
  readonly #wanted = new Map<number, Wanted>();
  /** `Waiting(id, k)` received: instance key to the largest `k`. */
  readonly #waitingReports = new Map<number, number>();
  /** Highest ballot seen in a Nack, per instance, so the next recovery starts above it. */
  readonly #nackedBallots = new Map<number, number>();

  #tick = 0;
  #lastNumber = 0;
  readonly #rowHighest: number[];
  readonly #pruneFloor: number[];
  #forgetFloor: number[];
  readonly #durableExecuted: number[];
  readonly #durableAbove: Set<number>[];
  readonly #peerExecuted: number[][];
  readonly #peerPruned: number[][];
  #peerOrder: number[];
  readonly #roundTrips: number[];
  /**
   * Per row, where the known prefix stopped short of the highest number, since
   * when, and when the missing range was last asked for.
   */
  readonly #gaps: { at: number; since: number; lastRequest: number }[];

  // The next Ready.
  /** Instances to write in the next Ready (each once: see `Instance.dirty`). */
  #dirty: Instance<C>[] = [];
  #extraRecords: StorageRecord<C>[] = [];
  #outbox: Message<C>[] = [];
  #executions: Execution<C>[] = [];
  #abandoned: Abandoned<C>[] = [];
  #decided: Decided<C>[] = [];
  #heldCommands = 0;
  /** Instances executed and applied; their executed markers go into the next Ready. */
  #markersToPersist: Instance<C>[] = [];
  // The Ready in flight.
  #inFlight: { executions: Execution<C>[]; markers: Instance<C>[] } | undefined;
  #nextDeadline = 0;

  readonly #stats: ReplicaStats = {
    fastCommits: 0,
    slowCommits: 0,
    recoveriesStarted: 0,
    recoveriesCommitted: 0,
    reproposals: 0,
    executedCommands: 0,
    executedInstances: 0,
    prunedInstances: 0,
    recoveryOutcomes: {
      foundCommitted: 0,
      foundAccepted: 0,
      nopCoordinatorAnswered: 0,
      nopNoFastQuorum: 0,
      validated: 0,
      validatedClean: 0,
      validatedInvalidated: 0,
      waited: 0,
      waitedAccepted: 0,
      waitedNop: 0,
    },
  };

  /**
   * Creates replica `options.id`, empty or from `restored` (what its storage
   * held when it stopped).
   */
  constructor(options: ReplicaOptions<C>, restored?: RestoredState<C>) {
    this.#quorum = quorumSizes(options.replicas);
    if (!Number.isInteger(options.id) || options.id < 0 || options.id >= options.replicas) {
      throw new RangeError(`Replica id must be in 0..${options.replicas - 1}, got ${options.id}`);
    }
    this.#id = options.id;
    this.#n = options.replicas;
    this.#conflicts = options.conflicts;
    this.#timing = { ...DEFAULT_TIMING, ...options.timing };
    this.#maxReproposals = options.maxReproposals ?? 8;
    this.#maxPrunePerStep = options.maxPrunePerStep ?? 8192;
    this.#allPeers = ((1 << this.#n) - 1) & ~(1 << this.#id);
    this.#executor = new Executor(this.#n, (key) => this.#instances.get(key));
    this.#index = new ConflictIndex(this.#n);
    this.#rowHighest = emptyDeps(this.#n);
    this.#pruneFloor = emptyDeps(this.#n);
    this.#forgetFloor = emptyDeps(this.#n);
    this.#durableExecuted = emptyDeps(this.#n);
    this.#durableAbove = Array.from({ length: this.#n }, () => new Set<number>());
    this.#peerExecuted = Array.from({ length: this.#n }, () => emptyDeps(this.#n));
    this.#peerPruned = Array.from({ length: this.#n }, () => emptyDeps(this.#n));
    this.#peerOrder = [];
    for (let distance = 1; distance < this.#n; distance++) {
      this.#peerOrder.push((this.#id + distance) % this.#n);
    }
    this.#roundTrips = new Array<number>(this.#n).fill(this.#timing.defaultRoundTripTicks);
    this.#gaps = Array.from(
      { length: this.#n },
      () => ({ at: -1, since: 0, lastRequest: -Infinity }),
    );
    if (restored !== undefined) this.#restore(restored);
  }

  /** This replica's index. */
  get id(): number {
    return this.#id;
  }

  /** Quorum sizes of this cluster. */
  get quorum(): QuorumSizes {
    return this.#quorum;
  }

  /** The current tick. */
  get now(): number {
    return this.#tick;
  }

  /** Counters since this replica was created. */
  get stats(): Readonly<ReplicaStats> {
    return this.#stats;
  }

  /** Instances held in memory. */
  get instanceCount(): number {
    return this.#instances.size;
  }

  /**
   * Client commands carried by the instances held in memory (counted once per
   * instance, when its command is first learned). Instances leave only when
   * every replica executed them, so this grows while a replica is down or
   * behind: the driver bounds it (see `ReplicaDriver`).
   */
  get heldCommands(): number {
    return this.#heldCommands;
  }

  /**
   * For each replica, how many instances this replica executed durably that
   * the replica has not reported executing (0 for this replica): a replica far
   * behind holds back pruning everywhere.
   */
  executionLag(): number[] {
    return this.#peerExecuted.map((executed, replica) => {
      if (replica === this.#id) return 0;
      let lag = 0;
      for (let row = 0; row < this.#n; row++) {
        lag += Math.max(0, this.#durableExecuted[row]! - executed[row]!);
      }
      return lag;
    });
  }

  /** Own proposals not yet executed. */
  get inflightProposals(): number {
    return this.#ownProposals.size;
  }

  /** Instances known here and not yet committed. */
  get uncommittedCount(): number {
    return this.#uncommitted.size;
  }

  /** Known instances not yet executed here. */
  get pendingExecution(): number {
    return this.#executor.pendingCount;
  }

  /** Keys held exactly by the conflict index. */
  get indexedKeys(): number {
    return this.#index.size;
  }

  /** Per row, every instance up to this number is executed here (durably). */
  get executedFrontier(): Deps {
    return this.#durableExecuted;
  }

  /** Per row, every instance up to this number is pruned here. */
  get pruneFloor(): Deps {
    return this.#pruneFloor;
  }

  /** Per row, the highest instance number known to exist. */
  get rowHighest(): Deps {
    return this.#rowHighest;
  }

  /** The record of instance `(owner, number)` as held in memory, if any. */
  instance(owner: number, number: number): InstanceRecord<C> | undefined {
    const instance = this.#instances.get(instanceKey(owner, number));
    return instance === undefined ? undefined : toRecord(instance);
  }

  /** Every instance held in memory (for checks and status). */
  *instances(): IterableIterator<InstanceRecord<C>> {
    for (const instance of this.#instances.values()) yield toRecord(instance);
  }

  /**
   * Sets the order in which thrifty quorums pick peers, closest live first
   * (SOSP'13 §4.4). Peers missing from `order` come last, in index order.
   */
  setPeerOrder(order: readonly number[]): void {
    const seen = new Set<number>();
    const next: number[] = [];
    for (const peer of order) {
      if (peer === this.#id || peer < 0 || peer >= this.#n || seen.has(peer)) continue;
      seen.add(peer);
      next.push(peer);
    }
    for (const peer of this.#peerOrder) if (!seen.has(peer)) next.push(peer);
    this.#peerOrder = next;
  }

  /** The current thrifty preference order. */
  get peerOrder(): readonly number[] {
    return this.#peerOrder;
  }

  /** Sets the measured round trip to `peer`, in ticks, which scales the timers that widen quorums. */
  setRoundTrip(peer: number, ticks: number): void {
    if (peer === this.#id || peer < 0 || peer >= this.#n || !(ticks >= 0)) return;
    this.#roundTrips[peer] = Math.max(1, Math.ceil(ticks));
  }

  /**
   * Renders the replica's state as lines: a summary, then every instance that is
   * not finished here (uncommitted, or committed and waiting to execute) with
   * what this replica is doing about it. For failure reports and debugging.
   */
  describeState(limit = 50): string[] {
    const lines = [
      `replica ${this.#id} tick=${this.#tick} instances=${this.#instances.size} leads=${this.#leads.size} ` +
      `uncommitted=${this.#uncommitted.size} pending=${this.#executor.pendingCount} ` +
      `wanted=${this.#wanted.size} executed=${describeDeps(this.#durableExecuted)} ` +
      `known=${describeDeps(this.#executor.knownPrefix)} highest=${
        describeDeps(this.#rowHighest)
      } ` +
      `pruned=${describeDeps(this.#pruneFloor)}`,
    ];
    let shown = 0;
    for (const instance of this.#instances.values()) {
      if (instance.executed) continue;
      if (shown++ >= limit) {
        lines.push("...");
        break;
      }
      const lead = this.#leads.get(instance.key);
      const parked = instance.blockedOn === undefined
        ? ""
        : ` waits-on=${describeId(keyOwner(instance.blockedOn), keyNumber(instance.blockedOn))}`;
      const leading = lead === undefined
        ? ""
        : ` lead=${lead.stage}@${lead.ballot} deadline=${lead.deadline}`;
      lines.push(`  ${describeRecord(toRecord(instance))}${leading}${parked}`);
    }
    return lines;
  }

  // ---------------------------------------------------------------------------
  // Inputs.

  /**
   * Submits a batch of client commands as one new instance (EPaxos* `Submit`,
   * Figure 3 lines 8-10) and returns its id.
   */
  propose(commands: readonly C[]): { owner: number; number: number } {
    if (commands.length === 0) throw new RangeError("A proposal needs at least one command");
    return this.#propose(commands, 0);
  }

  /** Handles one message from a peer. Messages not addressed to this replica are ignored. */
  step(message: Message<C>): void {
    if (message.to !== this.#id || message.from === this.#id) return;
    if (message.from < 0 || message.from >= this.#n) return;
    if (message.type !== "frontier") {
      // An instance at or below the prune floor executed on every replica,
      // the sender included: whatever the message says is stale. Handling it
      // would recreate the instance and run it again.
      if (message.number <= this.#pruneFloor[message.owner]!) return;
      this.#noteExists(message.owner, message.number);
    }
    switch (message.type) {
      case "preaccept":
        return this.#onPreAccept(message);
      case "preacceptok":
        return this.#onPreAcceptOk(message.from, message.owner, message.number, message.deps);
      case "accept":
        return this.#onAccept(message);
      case "acceptok":
        return this.#onAcceptOk(message.from, message.owner, message.number, message.ballot);
      case "commit":
        return this.#onCommit(message);
      case "recover":
        return this.#onRecover(message.from, message.owner, message.number, message.ballot);
      case "recoverok":
        return this.#onRecoverOk(message);
      case "validate":
        return this.#onValidate(message);
      case "validateok":
        return this.#onValidateOk(message.from, message.owner, message.number, message);
      case "waiting":
        return this.#onWaiting(message.owner, message.number, message.rmaxSize);
      case "nack":
        return this.#onNack(message.owner, message.number, message.ballot);
      case "commitrequest":
        return this.#onCommitRequest(message.from, message.owner, message.number, message.count);
      case "frontier":
        return this.#onFrontier(message.from, message.executed, message.pruned, message.highest);
    }
  }

  /** Advances logical time by one tick: timeouts, retransmissions, gossip, recovery. */
  tick(): void {
    const tick = ++this.#tick;
    if (tick >= this.#nextDeadline) {
      const due: Lead<C>[] = [];
      let next = Number.POSITIVE_INFINITY;
      for (const lead of this.#leads.values()) {
        if (lead.deadline <= tick) {
          due.push(lead);
        } else if (lead.deadline < next) {
          next = lead.deadline;
        }
      }
      // Handlers below only lower this through #setDeadline.
      this.#nextDeadline = next;
      for (const lead of due) this.#onLeadTimeout(lead);
    }
    if (tick % this.#timing.frontierTicks === 0) this.#gossipFrontier();
    if (tick % this.#timing.scanTicks === 0) this.#scan();
    if (tick % this.#timing.forgetTicks === 0) this.#forget();
  }

  // ---------------------------------------------------------------------------
  // Outputs.

  /** Whether {@linkcode Replica.ready} has anything to hand out. */
  hasReady(): boolean {
    return this.hasUrgentReady() || this.#markersToPersist.length > 0;
  }

  /**
   * Whether the next Ready holds anything but executed markers. A Ready of
   * markers only gates no message and answers no client (only the durable
   * executed frontier, and so pruning, waits for it), so a driver may hold it
   * back briefly and let it ride with the next storage commit.
   */
  hasUrgentReady(): boolean {
    this.#runExecutor();
    return this.#dirty.length > 0 || this.#extraRecords.length > 0 || this.#outbox.length > 0 ||
      this.#executions.length > 0 || this.#abandoned.length > 0;
  }

  /**
   * Hands out everything to do. The driver must persist `records`, then send
   * `messages`, then apply `executions`, then call {@linkcode Replica.advance},
   * before asking again. Stepping the replica while a Ready is in flight is fine.
   */
  ready(): Ready<C> {
    if (this.#inFlight !== undefined) {
      throw new Error("The previous Ready has not been advanced");
    }
    this.#runExecutor();
    const markers = this.#markersToPersist;
    this.#markersToPersist = [];
    // Order matters to storage, which may split a Ready into several atomic
    // commits applied in order: the prune floor before the deletes it implies
    // (an instance at or below a persisted floor is dropped on reload), and
    // executed markers in execution order, so that whatever part of a split
    // commit survives a crash is a prefix of the execution order.
    const records: StorageRecord<C>[] = [];
    const extra = this.#extraRecords;
    for (const record of extra) if (record.kind === "floor") records.push(record);
    // An instance already executed in memory is usually written once, with its
    // executed marker in a later Ready: its commit record is not needed for
    // safety, because a recovery finds the decision in the PreAccept or Accept
    // records a quorum persisted (a fast-path decision through Validate, a
    // slow one as the accepted value).
    // Except a fast-path commit at its own coordinator (found by
    // tests/scenarios/testdata/fast_commit_durability.txt): recovery trusts
    // the coordinator's answer (Figure 5: initCoord in Q => accept a Nop). If
    // it crashed after this Ready's Commits left and before the marker, it
    // would restart "pre-accepted", answer Recover so, and a recovery with it
    // in the quorum could commit a Nop over the committed command.
    const deferCommit = (instance: Instance<C>) =>
      instance.executed && !instance.executedMarked && !instance.commitMustPersist;
    if (markers.length === 0) {
      for (const instance of this.#dirty) {
        if (!instance.dirty || deferCommit(instance)) continue;
        records.push(toRecord(instance));
      }
    } else {
      const markerKeys = new Set<number>();
      for (const instance of markers) markerKeys.add(instance.key);
      for (const instance of this.#dirty) {
        if (!instance.dirty || deferCommit(instance)) continue;
        if (!markerKeys.has(instance.key)) {
          records.push(toRecord(instance));
        }
      }
      for (const instance of markers) {
        if (this.#instances.get(instance.key) !== instance || !markerKeys.delete(instance.key)) {
          continue;
        }
        instance.executedMarked = true;
        records.push(toRecord(instance));
      }
    }
    for (const record of extra) if (record.kind !== "floor") records.push(record);
    const ready: Ready<C> = {
      records,
      messages: this.#outbox,
      executions: this.#executions,
      abandoned: this.#abandoned,
      earlyMessages: [],
      decided: this.#decided,
    };
    this.#inFlight = { executions: this.#executions, markers };
    for (const instance of this.#dirty) instance.dirty = false;
    this.#dirty = [];
    this.#extraRecords = [];
    this.#outbox = [];
    this.#executions = [];
    this.#abandoned = [];
    this.#decided = [];
    return ready;
  }

  /**
   * Acknowledges the last Ready: its records are durable, its messages sent and
   * its executions applied (their effects go into the next Ready's persist).
   */
  advance(): void {
    const inFlight = this.#inFlight;
    if (inFlight === undefined) throw new Error("There is no Ready to advance");
    this.#inFlight = undefined;
    for (const execution of inFlight.executions) {
      const instance = this.#instances.get(instanceKey(execution.owner, execution.number));
      if (instance !== undefined) this.#markersToPersist.push(instance);
    }
    for (const instance of inFlight.markers) this.#noteDurablyExecuted(instance);
    if (inFlight.markers.length > 0) this.#maybePrune();
  }

  // ---------------------------------------------------------------------------
  // Commit protocol (EPaxos* Figure 3).

  #propose(commands: readonly C[], reproposals: number): { owner: number; number: number } {
    const number = ++this.#lastNumber;
    const instance = this.#create(this.#id, number);
    const accesses = batchAccesses(this.#conflicts, commands);
    // D0 = ConflictingIds(p, c), plus our prune floor: instances every replica
    // executed, so peers that forgot their keys still report nothing new.
    const deps = emptyDeps(this.#n);
    this.#index.collect(accesses, deps);
    depsRaise(deps, this.#pruneFloor);
    instance.phase = Phase.PreAccepted;
    instance.command = commands;
    instance.initialCommand = commands;
    instance.deps = deps;
    instance.initialDeps = deps;
    this.#learn(instance, commands, accesses);
    this.#markDirty(instance);
    this.#uncommitted.add(instance);
    this.#ownProposals.set(instance.key, { commands, reproposals });
    const lead = this.#newLead(instance, 0, "preaccept");
    lead.preAcceptReplies[this.#id] = deps;
    this.#sendPreAccept(lead, this.#pick(this.#quorum.preAcceptTargets, 0));
    return { owner: this.#id, number };
  }

  #sendPreAccept(lead: Lead<C>, targets: number): void {
    const instance = lead.instance;
    this.#sendTo(targets, (to) => ({
      type: "preaccept",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      command: instance.command!,
      deps: instance.initialDeps!,
    }));
    lead.contacted |= targets;
    this.#setDeadline(lead, this.#widenTimeout(lead.contacted));
  }

  /** `HandlePreAccept` (lines 11-18). */
  #onPreAccept(message: Message<C> & { type: "preaccept" }): void {
    if (message.command === NOP) return;
    const instance = this.#getOrCreate(message.owner, message.number);
    if (instance.phase === Phase.Committed) return this.#sendCommit(instance, message.from);
    if (instance.ballot !== 0) return this.#sendNack(instance, message.from);
    if (instance.phase !== Phase.Initial) {
      // A retransmitted PreAccept: `ApplyPreAccept` is disabled, but the
      // coordinator may have lost our reply, so repeat it.
      if (instance.phase === Phase.PreAccepted && instance.deps !== undefined) {
        this.#reply(message.from, instance, { type: "preacceptok", deps: instance.deps });
      }
      return;
    }
    const accesses = batchAccesses(this.#conflicts, message.command);
    const local = [...message.deps];
    this.#index.collect(accesses, local);
    const deps = depsEqual(local, message.deps) ? message.deps : local;
    instance.phase = Phase.PreAccepted;
    instance.command = message.command;
    instance.initialCommand = message.command;
    instance.initialDeps = message.deps;
    instance.deps = deps;
    instance.sinceTick = this.#tick;
    this.#learn(instance, message.command, accesses);
    this.#markDirty(instance);
    this.#uncommitted.add(instance);
    this.#reply(message.from, instance, { type: "preacceptok", deps });
  }

  /** `HandlePreAcceptOK` (lines 19-25). */
  #onPreAcceptOk(from: number, owner: number, number: number, deps: Deps): void {
    const lead = this.#leads.get(instanceKey(owner, number));
    if (lead === undefined || lead.stage !== "preaccept") return;
    const instance = lead.instance;
    if (instance.ballot !== 0 || instance.phase !== Phase.PreAccepted) return;
    lead.preAcceptReplies[from] = deps;
    this.#decidePreAccept(lead, false);
  }

  #decidePreAccept(lead: Lead<C>, timedOut: boolean): void {
    const instance = lead.instance;
    const initialDeps = instance.initialDeps!;
    let replies = 0;
    let matching = 0;
    let outstanding = 0;
    for (let replica = 0; replica < this.#n; replica++) {
      const deps = lead.preAcceptReplies[replica];
      if (deps === undefined) {
        if ((lead.contacted & (1 << replica)) !== 0) outstanding++;
        continue;
      }
      replies++;
      if (depsEqual(deps, initialDeps)) matching++;
    }
    // Fast path: at least n-e replies (ours included) equal initDep exactly.
    if (matching >= this.#quorum.fastQuorumSize) {
      this.#stats.fastCommits++;
      instance.commitMustPersist = true;
      this.#commit(instance, 0, instance.command!, initialDeps);
      this.#broadcastCommit(instance);
      return;
    }
    const fastStillPossible = matching + outstanding >= this.#quorum.fastQuorumSize;
    if (replies >= this.#quorum.slowQuorumSize && (timedOut || !fastStillPossible)) {
      this.#startSlowPath(lead);
      return;
    }
    if (
      !fastStillPossible && !lead.widened && replies + outstanding < this.#quorum.slowQuorumSize
    ) {
      // Too few peers asked to ever form a quorum: ask the rest now.
      lead.widened = true;
      this.#sendPreAccept(lead, this.#allPeers & ~lead.contacted);
    }
  }

  /** Slow path: `ApplyAccept(p, p, 0, id, c, Dfinal)` with the union of the replies. */
  #startSlowPath(lead: Lead<C>): void {
    const instance = lead.instance;
    let deps: Deps = instance.initialDeps!;
    let replied = 0;
    for (let replica = 0; replica < this.#n; replica++) {
      const reply = lead.preAcceptReplies[replica];
      if (reply === undefined) continue;
      deps = depsUnion(deps, reply);
      if (replica !== this.#id) replied |= 1 << replica;
    }
    instance.phase = Phase.Accepted;
    instance.deps = deps;
    instance.acceptedBallot = 0;
    this.#markDirty(instance);
    this.#setStage(lead, "accept");
    lead.acks = 1 << this.#id;
    lead.contacted = 0;
    lead.widened = false;
    lead.attempts = 0;
    // Thrifty Accept: the n-f-1 closest peers, preferring those that just answered.
    this.#sendAccept(lead, this.#pick(this.#quorum.acceptTargets, 0, replied));
  }

  #sendAccept(lead: Lead<C>, targets: number): void {
    const instance = lead.instance;
    this.#sendTo(targets, (to) => ({
      type: "accept",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: lead.ballot,
      command: instance.command!,
      deps: instance.deps!,
    }));
    lead.contacted |= targets;
    this.#setDeadline(lead, this.#widenTimeout(lead.contacted));
  }

  /** `HandleAccept` (lines 26-33). */
  #onAccept(message: Message<C> & { type: "accept" }): void {
    const instance = this.#getOrCreate(message.owner, message.number);
    // Departure: a committed replica keeps its decision and answers with it.
    // The spec's guard (`bal = b => phase # committed`) still lets a higher
    // ballot overwrite a commit with the same value; we never un-commit.
    if (instance.phase === Phase.Committed) return this.#sendCommit(instance, message.from);
    if (instance.ballot > message.ballot) return this.#sendNack(instance, message.from);
    this.#preempt(instance, message.ballot);
    instance.ballot = message.ballot;
    instance.acceptedBallot = message.ballot;
    instance.command = message.command;
    instance.deps = message.deps;
    instance.phase = Phase.Accepted;
    instance.sinceTick = this.#tick;
    this.#learn(instance, message.command);
    this.#markDirty(instance);
    this.#uncommitted.add(instance);
    this.#reply(message.from, instance, { type: "acceptok", ballot: message.ballot });
  }

  /** `HandleAcceptOK` (lines 34-36). */
  #onAcceptOk(from: number, owner: number, number: number, ballot: number): void {
    const lead = this.#leads.get(instanceKey(owner, number));
    if (lead === undefined || lead.stage !== "accept" || lead.ballot !== ballot) return;
    const instance = lead.instance;
    if (instance.ballot !== ballot || instance.phase !== Phase.Accepted) return;
    lead.acks |= 1 << from;
    if (popCount(lead.acks) < this.#quorum.slowQuorumSize) return;
    if (ballot === 0) {
      this.#stats.slowCommits++;
    } else {
      this.#stats.recoveriesCommitted++;
    }
    this.#commit(instance, ballot, instance.command!, instance.deps!);
    this.#broadcastCommit(instance);
  }

  /** `HandleCommit` (lines 37-42). */
  #onCommit(message: Message<C> & { type: "commit" }): void {
    const instance = this.#getOrCreate(message.owner, message.number);
    if (instance.phase === Phase.Committed) return;
    const leading = this.#leads.get(instance.key);
    // Departure: the spec's `ApplyCommit` requires `bal = b`. A committed value
    // is unique (Agreement), so a replica records it whatever its ballot.
    this.#commit(instance, message.ballot, message.command, message.deps);
    // A recovery that learns the decision from a committed peer passes it on:
    // the peers that promised its ballot are waiting for it.
    if (leading !== undefined && leading.ballot > 0) this.#broadcastCommit(instance);
  }

  #commit(instance: Instance<C>, ballot: number, command: Payload<C>, deps: Deps): void {
    instance.phase = Phase.Committed;
    if (ballot > instance.ballot) instance.ballot = ballot;
    instance.acceptedBallot = ballot;
    instance.command = command;
    instance.deps = deps;
    this.#learn(instance, command);
    this.#markDirty(instance);
    this.#dropLead(instance.key);
    this.#uncommitted.delete(instance);
    this.#wanted.delete(instance.key);
    this.#waitingReports.delete(instance.key);
    this.#nackedBallots.delete(instance.key);
    this.#executor.noteCommitted(instance);
    const own = this.#ownProposals.get(instance.key);
    if (own !== undefined) this.#decided.push({ number: instance.number, command });
    if (own !== undefined && command === NOP) {
      // Our proposal was replaced by a Nop in recovery: it never executes, so
      // proposing the same commands again keeps at-most-once semantics.
      this.#ownProposals.delete(instance.key);
      if (own.reproposals < this.#maxReproposals) {
        this.#stats.reproposals++;
        this.#propose(own.commands, own.reproposals + 1);
      } else {
        this.#abandoned.push({
          commands: own.commands,
          reason: `replaced by a Nop ${own.reproposals + 1} times`,
        });
      }
    }
    this.#reevaluateWaiting(instance.key);
  }

  #reevaluateWaiting(key: number): void {
    if (this.#waitingLeads.size === 0) return;
    for (const lead of [...this.#waitingLeads]) {
      if (lead.invalidators.has(key)) this.#evaluatePostWaiting(lead);
    }
  }

  #broadcastCommit(instance: Instance<C>): void {
    this.#sendTo(this.#allPeers, (to) => this.#commitMessage(instance, to));
  }

  #sendCommit(instance: Instance<C>, to: number): void {
    this.#outbox.push(this.#commitMessage(instance, to));
  }

  #commitMessage(instance: Instance<C>, to: number): Message<C> {
    return {
      type: "commit",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: instance.acceptedBallot,
      command: instance.command!,
      deps: instance.deps!,
    };
  }

  // ---------------------------------------------------------------------------
  // Recovery (EPaxos* Figure 5).

  /** `StartRecover` (lines 43-45), with a ballot this replica owns. */
  #startRecovery(instance: Instance<C>): void {
    const above = Math.max(instance.ballot, this.#nackedBallots.get(instance.key) ?? 0);
    const ballot = nextBallot(above, this.#id, this.#n);
    instance.ballot = ballot;
    instance.sinceTick = this.#tick;
    this.#markDirty(instance);
    const lead = this.#newLead(instance, ballot, "recover");
    lead.attempts = this.#wanted.get(instance.key)?.attempts ?? 0;
    lead.recoverReplies[this.#id] = this.#recoverReplyOf(instance);
    this.#stats.recoveriesStarted++;
    this.#sendTo(this.#allPeers, (to) => ({
      type: "recover",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot,
    }));
    lead.contacted = this.#allPeers;
    lead.widened = true;
    this.#setDeadline(lead, this.#recoveryAttemptTimeout(lead.attempts));
  }

  /** `HandleRecover` (lines 46-49). */
  #onRecover(from: number, owner: number, number: number, ballot: number): void {
    const instance = this.#getOrCreate(owner, number);
    if (instance.phase === Phase.Committed) return this.#sendCommit(instance, from);
    if (instance.ballot > ballot) return this.#sendNack(instance, from);
    if (instance.ballot < ballot) {
      this.#preempt(instance, ballot);
      instance.ballot = ballot;
      this.#markDirty(instance);
    }
    // At an equal ballot this repeats the answer for a retransmitted Recover.
    const reply = this.#recoverReplyOf(instance);
    const message: RecoverOkMessage<C> = {
      type: "recoverok",
      from: this.#id,
      to: from,
      owner,
      number,
      ballot,
      acceptedBallot: reply.acceptedBallot,
      phase: reply.phase,
      ...(reply.command !== undefined ? { command: reply.command } : {}),
      ...(reply.deps !== undefined ? { deps: reply.deps } : {}),
      ...(reply.initialDeps !== undefined ? { initialDeps: reply.initialDeps } : {}),
    };
    this.#outbox.push(message);
  }

  /** `HandleRecoverOK` (lines 50-60), and the late-reply branch of `HandlePostWaiting`. */
  #onRecoverOk(message: RecoverOkMessage<C>): void {
    const lead = this.#leads.get(instanceKey(message.owner, message.number));
    if (lead === undefined || lead.ballot !== message.ballot) return;
    if (lead.instance.ballot !== lead.ballot) return;
    if (lead.stage === "preaccept" || lead.stage === "accept") return;
    lead.recoverReplies[message.from] = {
      acceptedBallot: message.acceptedBallot,
      phase: message.phase,
      command: message.command,
      deps: message.deps,
      initialDeps: message.initialDeps,
    };
    if (message.phase === Phase.Committed && message.command !== undefined && message.deps) {
      return this.#finishRecoveryWithCommit(lead, message.command, message.deps);
    }
    if (lead.stage === "recover") {
      let replies = 0;
      for (const reply of lead.recoverReplies) if (reply !== undefined) replies++;
      if (replies >= this.#quorum.slowQuorumSize) this.#decideRecovery(lead);
    } else if (lead.stage === "waiting") {
      this.#evaluatePostWaiting(lead);
    }
  }

  #finishRecoveryWithCommit(lead: Lead<C>, command: Payload<C>, deps: Deps): void {
    this.#stats.recoveriesCommitted++;
    this.#stats.recoveryOutcomes.foundCommitted++;
    this.#commit(lead.instance, lead.ballot, command, deps);
    this.#broadcastCommit(lead.instance);
  }

  #decideRecovery(lead: Lead<C>): void {
    const instance = lead.instance;
    let quorum = 0;
    let maxAccepted = -1;
    for (let replica = 0; replica < this.#n; replica++) {
      const reply = lead.recoverReplies[replica];
      if (reply === undefined) continue;
      quorum |= 1 << replica;
      // Departure: any committed reply decides, not only those in U. A
      // committed value is final, so this can only save a round.
      if (reply.phase === Phase.Committed && reply.command !== undefined && reply.deps) {
        return this.#finishRecoveryWithCommit(lead, reply.command, reply.deps);
      }
      if (reply.acceptedBallot > maxAccepted) maxAccepted = reply.acceptedBallot;
    }
    lead.quorum = quorum;
    // U: the replies with the highest abal. An accepted one carries the only
    // value that may have been chosen at a lower ballot.
    for (let replica = 0; replica < this.#n; replica++) {
      const reply = lead.recoverReplies[replica];
      if (reply === undefined || reply.acceptedBallot !== maxAccepted) continue;
      if (reply.phase === Phase.Accepted && reply.command !== undefined && reply.deps) {
        this.#stats.recoveryOutcomes.foundAccepted++;
        return this.#startRecoveryAccept(lead, reply.command, reply.deps);
      }
    }
    // The original coordinator answered, so it can no longer take the fast
    // path (its ballot moved past 0): nothing was decided.
    if ((quorum & (1 << instance.owner)) !== 0) {
      this.#stats.recoveryOutcomes.nopCoordinatorAnswered++;
      return this.#startRecoveryAccept(lead, NOP, emptyDeps(this.#n));
    }
    let rmaxSize = 0;
    let chosen: RecoverReply<C> | undefined;
    for (let replica = 0; replica < this.#n; replica++) {
      const reply = lead.recoverReplies[replica];
      if (reply === undefined || reply.phase !== Phase.PreAccepted) continue;
      if (reply.deps === undefined || reply.initialDeps === undefined) continue;
      if (!depsEqual(reply.deps, reply.initialDeps)) continue;
      rmaxSize++;
      chosen ??= reply;
    }
    const quorumSize = popCount(quorum);
    if (chosen !== undefined && rmaxSize >= quorumSize - this.#quorum.fastFailures) {
      // The command may have committed on the fast path with these deps:
      // validate them against the conflicts the quorum knows.
      this.#stats.recoveryOutcomes.validated++;
      return this.#startValidation(lead, chosen.command!, chosen.deps!, rmaxSize);
    }
    this.#stats.recoveryOutcomes.nopNoFastQuorum++;
    return this.#startRecoveryAccept(lead, NOP, emptyDeps(this.#n));
  }

  #startValidation(lead: Lead<C>, command: Payload<C>, deps: Deps, rmaxSize: number): void {
    const instance = lead.instance;
    const invalidators = this.#computeInvalidators(instance, command, deps);
    // `ApplyValidate(p, p, b, id, c, D)`.
    instance.command = command;
    instance.initialCommand = command;
    instance.initialDeps = deps;
    this.#learn(instance, command);
    this.#markDirty(instance);
    this.#setStage(lead, "validate");
    lead.validatedCommand = command;
    lead.validatedDeps = deps;
    lead.rmaxSize = rmaxSize;
    lead.validateReplies = new Array(this.#n).fill(undefined);
    lead.validateReplies[this.#id] = invalidators;
    lead.attempts = 0;
    this.#sendTo(lead.quorum & this.#allPeers, (to) => ({
      type: "validate",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: lead.ballot,
      command,
      deps,
    }));
    this.#setDeadline(lead, this.#recoveryAttemptTimeout(0));
    this.#decideValidation(lead);
  }

  /** `ComputeI`: conflicting instances outside `deps` that may not have seen `instance`. */
  #computeInvalidators(instance: Instance<C>, command: Payload<C>, deps: Deps): number[] {
    const result: number[] = [];
    if (command === NOP) return result;
    const accesses = batchAccesses(this.#conflicts, command);
    const owner = instance.owner;
    const number = instance.number;
    for (const other of this.#instances.values()) {
      if (other === instance || other.accesses === undefined) continue;
      if (depsContain(deps, other.owner, other.number)) continue;
      if (other.phase === Phase.Committed) {
        if (other.command === NOP || depsContain(other.deps!, owner, number)) continue;
      } else {
        if (other.initialCommand === undefined || other.initialCommand === NOP) continue;
        if (other.initialDeps !== undefined && depsContain(other.initialDeps, owner, number)) {
          continue;
        }
      }
      if (!accessesConflict(accesses, other.accesses)) continue;
      result.push(other.owner, other.number, other.phase);
    }
    return result;
  }

  /** `HandleValidate` (lines 81-87). */
  #onValidate(message: Message<C> & { type: "validate" }): void {
    const instance = this.#getOrCreate(message.owner, message.number);
    if (instance.phase === Phase.Committed) return this.#sendCommit(instance, message.from);
    if (instance.ballot !== message.ballot) {
      if (instance.ballot > message.ballot) this.#sendNack(instance, message.from);
      return;
    }
    const invalidators = this.#computeInvalidators(instance, message.command, message.deps);
    instance.command = message.command;
    instance.initialCommand = message.command;
    instance.initialDeps = message.deps;
    this.#learn(instance, message.command);
    this.#markDirty(instance);
    this.#reply(message.from, instance, {
      type: "validateok",
      ballot: message.ballot,
      invalidators,
    });
  }

  /** `HandleValidateOK` (lines 61-68). */
  #onValidateOk(
    from: number,
    owner: number,
    number: number,
    message: { ballot: number; invalidators: readonly number[] },
  ): void {
    const lead = this.#leads.get(instanceKey(owner, number));
    if (lead === undefined || lead.stage !== "validate" || lead.ballot !== message.ballot) return;
    if ((lead.quorum & (1 << from)) === 0 || lead.instance.ballot !== lead.ballot) return;
    lead.validateReplies[from] = message.invalidators;
    this.#decideValidation(lead);
  }

  #decideValidation(lead: Lead<C>): void {
    for (let replica = 0; replica < this.#n; replica++) {
      if ((lead.quorum & (1 << replica)) !== 0 && lead.validateReplies[replica] === undefined) {
        return;
      }
    }
    const invalidators = new Map<number, Phase>();
    for (const triples of lead.validateReplies) {
      if (triples === undefined) continue;
      for (let i = 0; i + 2 < triples.length; i += 3) {
        const key = instanceKey(triples[i]!, triples[i + 1]!);
        const phase = triples[i + 2]! as Phase;
        if ((invalidators.get(key) ?? -1) < phase) invalidators.set(key, phase);
      }
    }
    if (invalidators.size === 0) {
      this.#stats.recoveryOutcomes.validatedClean++;
      return this.#startRecoveryAccept(lead, lead.validatedCommand!, lead.validatedDeps!);
    }
    const quorumSize = popCount(lead.quorum);
    let committedConflict = false;
    let ownerOutsideQuorum = false;
    for (const [key, phase] of invalidators) {
      if (phase === Phase.Committed) committedConflict = true;
      if ((lead.quorum & (1 << keyOwner(key))) === 0) ownerOutsideQuorum = true;
    }
    if (
      committedConflict ||
      (lead.rmaxSize === quorumSize - this.#quorum.fastFailures && ownerOutsideQuorum)
    ) {
      this.#stats.recoveryOutcomes.validatedInvalidated++;
      return this.#startRecoveryAccept(lead, NOP, emptyDeps(this.#n));
    }
    this.#stats.recoveryOutcomes.waited++;
    this.#setStage(lead, "waiting");
    lead.invalidators = invalidators;
    const instance = lead.instance;
    this.#sendTo(this.#allPeers, (to) => ({
      type: "waiting",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      rmaxSize: lead.rmaxSize,
    }));
    // The instances in I must commit for us to finish: make sure someone drives them.
    for (const key of invalidators.keys()) this.#want(key);
    this.#setDeadline(lead, this.#recoveryAttemptTimeout(lead.attempts) * 2);
    this.#evaluatePostWaiting(lead);
  }

  /** `HandlePostWaiting` (lines 69-80). */
  #evaluatePostWaiting(lead: Lead<C>): void {
    if (this.#leads.get(lead.instance.key) !== lead || lead.stage !== "waiting") {
      this.#waitingLeads.delete(lead);
      return;
    }
    if (lead.instance.ballot !== lead.ballot) return;
    const self = lead.instance;
    let allDecided = true;
    for (const key of lead.invalidators.keys()) {
      const other = this.#instances.get(key);
      if (other === undefined) {
        if (keyNumber(key) <= this.#pruneFloor[keyOwner(key)]!) {
          // Departure: pruned here, so we cannot tell whether it depends on us.
          // Start over at a higher ballot; the new attempt will not see it.
          return this.#startRecovery(self);
        }
        allDecided = false;
        continue;
      }
      if (other.phase !== Phase.Committed) {
        allDecided = false;
        continue;
      }
      if (other.command !== NOP && !depsContain(other.deps!, self.owner, self.number)) {
        this.#stats.recoveryOutcomes.waitedNop++;
        return this.#startRecoveryAccept(lead, NOP, emptyDeps(this.#n));
      }
    }
    if (allDecided) {
      this.#stats.recoveryOutcomes.waitedAccepted++;
      return this.#startRecoveryAccept(lead, lead.validatedCommand!, lead.validatedDeps!);
    }
    const deadlockBound = this.#n - this.#quorum.maxFailures - this.#quorum.fastFailures;
    for (const key of lead.invalidators.keys()) {
      if ((this.#waitingReports.get(key) ?? 0) > deadlockBound) {
        this.#stats.recoveryOutcomes.waitedNop++;
        return this.#startRecoveryAccept(lead, NOP, emptyDeps(this.#n));
      }
    }
    for (let replica = 0; replica < this.#n; replica++) {
      if ((lead.quorum & (1 << replica)) !== 0) continue;
      const reply = lead.recoverReplies[replica];
      if (reply === undefined) continue;
      if (reply.phase === Phase.Committed && reply.command !== undefined && reply.deps) {
        return this.#finishRecoveryWithCommit(lead, reply.command, reply.deps);
      }
      if (reply.phase === Phase.Accepted && reply.command !== undefined && reply.deps) {
        this.#stats.recoveryOutcomes.waitedAccepted++;
        return this.#startRecoveryAccept(lead, reply.command, reply.deps);
      }
      if (replica === self.owner) {
        this.#stats.recoveryOutcomes.waitedNop++;
        return this.#startRecoveryAccept(lead, NOP, emptyDeps(this.#n));
      }
    }
  }

  #onWaiting(owner: number, number: number, rmaxSize: number): void {
    const key = instanceKey(owner, number);
    const instance = this.#instances.get(key);
    if (instance?.phase === Phase.Committed) return;
    if (keyNumber(key) <= this.#pruneFloor[owner]!) return;
    if ((this.#waitingReports.get(key) ?? 0) >= rmaxSize) return;
    // Bounded: one entry per uncommitted instance a recovery waits on.
    if (this.#waitingReports.size >= 65536) return;
    this.#waitingReports.set(key, rmaxSize);
    this.#reevaluateWaiting(key);
  }

  /** Recovery's `ApplyAccept(p, p, bal, id, c, D)` and Accept to every peer. */
  #startRecoveryAccept(lead: Lead<C>, command: Payload<C>, deps: Deps): void {
    const instance = lead.instance;
    instance.ballot = lead.ballot;
    instance.acceptedBallot = lead.ballot;
    instance.command = command;
    instance.deps = deps;
    instance.phase = Phase.Accepted;
    this.#learn(instance, command);
    this.#markDirty(instance);
    this.#setStage(lead, "accept");
    lead.acks = 1 << this.#id;
    lead.contacted = 0;
    lead.widened = true;
    lead.attempts = 0;
    this.#sendAccept(lead, this.#allPeers);
  }

  #onNack(owner: number, number: number, ballot: number): void {
    const key = instanceKey(owner, number);
    if ((this.#nackedBallots.get(key) ?? 0) < ballot) {
      if (this.#nackedBallots.size >= 65536) this.#nackedBallots.clear();
      this.#nackedBallots.set(key, ballot);
    }
    const lead = this.#leads.get(key);
    if (lead !== undefined && lead.ballot < ballot) {
      this.#dropLead(key);
      this.#deferRecovery(key);
    }
  }

  #onCommitRequest(from: number, owner: number, number: number, count: number): void {
    const last = number + Math.min(Math.max(count, 1), CATCH_UP_RANGE) - 1;
    for (let current = number; current <= last; current++) {
      const instance = this.#instances.get(instanceKey(owner, current));
      if (instance?.phase === Phase.Committed) this.#sendCommit(instance, from);
    }
  }

  // ---------------------------------------------------------------------------
  // Progress gossip, pruning, housekeeping.

  #gossipFrontier(): void {
    const executed = [...this.#durableExecuted];
    const pruned = [...this.#pruneFloor];
    // Numbers allocated since the last Ready are persisted with the next one,
    // before this gossip leaves, so the current number is safe to announce.
    const highest = this.#lastNumber;
    this.#sendTo(this.#allPeers, (to) => ({
      type: "frontier",
      from: this.#id,
      to,
      executed,
      pruned,
      highest,
    }));
  }

  #onFrontier(from: number, executed: Deps, pruned: Deps, highest: number): void {
    depsRaise(this.#peerExecuted[from]!, executed);
    depsRaise(this.#peerPruned[from]!, pruned);
    this.#noteExists(from, highest);
    this.#maybePrune();
  }

  #noteDurablyExecuted(instance: Instance<C>): void {
    const owner = instance.owner;
    if (instance.number === this.#durableExecuted[owner]! + 1) {
      let prefix = instance.number;
      const above = this.#durableAbove[owner]!;
      while (above.delete(prefix + 1)) prefix++;
      this.#durableExecuted[owner] = prefix;
    } else if (instance.number > this.#durableExecuted[owner]!) {
      this.#durableAbove[owner]!.add(instance.number);
    }
  }

  /**
   * Forgets instances every replica has executed durably: they can never be
   * needed again, except by a replica that lost its disk (not supported).
   */
  #maybePrune(): void {
    let budget = this.#maxPrunePerStep;
    let changed = false;
    for (let row = 0; row < this.#n && budget > 0; row++) {
      let floor = this.#durableExecuted[row]!;
      for (let replica = 0; replica < this.#n; replica++) {
        if (replica !== this.#id) floor = Math.min(floor, this.#peerExecuted[replica]![row]!);
      }
      let current = this.#pruneFloor[row]!;
      if (floor <= current) continue;
      const from = current + 1;
      while (current < floor && budget > 0) {
        current++;
        budget--;
        const key = instanceKey(row, current);
        const instance = this.#instances.get(key);
        if (instance === undefined) continue;
        this.#instances.delete(key);
        this.#heldCommands -= instance.heldCommands;
        instance.dirty = false; // a pruned instance is not written again
        this.#uncommitted.delete(instance);
        this.#dropLead(key);
        this.#ownProposals.delete(key);
        this.#stats.prunedInstances++;
      }
      this.#extraRecords.push({ kind: "delete", owner: row, from, to: current });
      this.#pruneFloor[row] = current;
      this.#executor.markPrunedPrefix(row, current);
      changed = true;
    }
    if (changed) this.#extraRecords.push({ kind: "floor", pruneFloor: [...this.#pruneFloor] });
  }

  /**
   * Lets the conflict index forget keys whose instances every replica pruned
   * at least one forget period ago: a PreAccept delayed longer than that makes a
   * replica report the forgotten floor, which costs a slow path, never safety.
   */
  #forget(): void {
    const globalFloor = [...this.#pruneFloor];
    for (let replica = 0; replica < this.#n; replica++) {
      if (replica === this.#id) continue;
      for (let row = 0; row < this.#n; row++) {
        globalFloor[row] = Math.min(globalFloor[row]!, this.#peerPruned[replica]![row]!);
      }
    }
    this.#index.forgetBelow(this.#forgetFloor);
    this.#forgetFloor = globalFloor;
  }

  /**
   * Finds instances nobody is finishing and asks for, or recovers, them. What
   * the executor waits on is urgent; a gap in a row, or an uncommitted instance
   * nobody needs, only after the orphan delay. Every delay is at least a few
   * measured round trips, so a slow WAN commit is never mistaken for a failure.
   */
  #scan(): void {
    for (const key of this.#executor.waitedOn()) this.#want(key);
    const orphanAge = this.#scaled(this.#timing.orphanTicks, 20);
    const requestDelay = this.#scaled(this.#timing.commitRequestTicks, 2);
    for (let row = 0; row < this.#n; row++) {
      const known = this.#executor.knownPrefix[row]!;
      const highest = this.#rowHighest[row]!;
      const gap = this.#gaps[row]!;
      if (known >= highest) {
        gap.at = -1;
        continue;
      }
      if (gap.at !== known) {
        gap.at = known;
        gap.since = this.#tick;
        continue;
      }
      const age = this.#tick - gap.since;
      if (age >= requestDelay && this.#tick - gap.lastRequest >= requestDelay) {
        // Instances this replica never heard of (a lost Commit, or it was down):
        // ask peers for a whole range of commits at once, not one at a time.
        gap.lastRequest = this.#tick;
        this.#sendCommitRequest(row, known + 1, Math.min(CATCH_UP_RANGE, highest - known));
      }
      if (age >= orphanAge) this.#want(instanceKey(row, known + 1));
    }
    for (const instance of this.#uncommitted) {
      if (this.#tick - instance.sinceTick >= orphanAge && !this.#leads.has(instance.key)) {
        this.#want(instance.key);
      }
    }
    const recoveryDelay = this.#scaled(this.#timing.recoveryTicks, 5);
    const stagger = this.#scaled(this.#timing.recoveryStaggerTicks, 1);
    const requests = new Map<number, number>();
    for (const [key, wanted] of this.#wanted) {
      const owner = keyOwner(key);
      const number = keyNumber(key);
      const instance = this.#instances.get(key);
      if (instance?.phase === Phase.Committed || number <= this.#pruneFloor[owner]!) {
        this.#wanted.delete(key);
        continue;
      }
      if (this.#leads.has(key)) continue;
      const waited = this.#tick - wanted.since;
      if (waited >= requestDelay && this.#tick - wanted.lastRequest >= requestDelay) {
        wanted.lastRequest = this.#tick;
        requests.set(key, 1);
      }
      // The replica after the owner tries first, the owner itself last.
      const distance = (this.#id - owner - 1 + this.#n) % this.#n;
      if (waited >= recoveryDelay + distance * stagger && this.#tick >= wanted.notBefore) {
        this.#startRecovery(this.#getOrCreate(owner, number));
      }
    }
    this.#sendCommitRequests(requests);
  }

  /** `base` ticks, or `roundTrips` times the slowest measured peer if that is longer. */
  #scaled(base: number, roundTrips: number): number {
    let slowest = 0;
    for (let peer = 0; peer < this.#n; peer++) {
      if (peer !== this.#id) slowest = Math.max(slowest, this.#roundTrips[peer]!);
    }
    return Math.max(base, Math.ceil(slowest * roundTrips));
  }

  #sendCommitRequests(requests: Map<number, number>): void {
    if (requests.size === 0) return;
    // Coalesce consecutive numbers of a row into one request.
    const byRow = new Map<number, number[]>();
    for (const key of requests.keys()) {
      const row = keyOwner(key);
      let numbers = byRow.get(row);
      if (numbers === undefined) byRow.set(row, numbers = []);
      numbers.push(keyNumber(key));
    }
    for (const [row, numbers] of byRow) {
      numbers.sort((a, b) => a - b);
      let start = numbers[0]!;
      let count = 1;
      const flush = () => this.#sendCommitRequest(row, start, count);
      for (let i = 1; i < numbers.length; i++) {
        if (numbers[i] === start + count && count < 256) {
          count++;
        } else {
          flush();
          start = numbers[i]!;
          count = 1;
        }
      }
      flush();
    }
  }

  #sendCommitRequest(owner: number, number: number, count: number): void {
    this.#sendTo(this.#allPeers, (to) => ({
      type: "commitrequest",
      from: this.#id,
      to,
      owner,
      number,
      count,
    }));
  }

  #want(key: number): void {
    if (this.#wanted.has(key)) return;
    if (keyNumber(key) <= this.#pruneFloor[keyOwner(key)]!) return;
    // Bounded by the instances that exist: at most one entry per instance.
    this.#wanted.set(key, { since: this.#tick, lastRequest: -Infinity, notBefore: 0, attempts: 0 });
    this.#noteExists(keyOwner(key), keyNumber(key));
  }

  // ---------------------------------------------------------------------------
  // Timers.

  #onLeadTimeout(lead: Lead<C>): void {
    const instance = lead.instance;
    if (this.#leads.get(instance.key) !== lead) return;
    switch (lead.stage) {
      case "preaccept": {
        if (instance.ballot !== 0 || instance.phase !== Phase.PreAccepted) {
          return this.#dropLead(instance.key);
        }
        let replies = 0;
        for (const reply of lead.preAcceptReplies) if (reply !== undefined) replies++;
        if (replies >= this.#quorum.slowQuorumSize) return this.#decidePreAccept(lead, true);
        if (!lead.widened) {
          // A chosen peer is silent: widen the thrifty set to everyone.
          lead.widened = true;
          return this.#sendPreAccept(lead, this.#allPeers & ~lead.contacted);
        }
        const silent = this.#allPeers & ~this.#repliedMask(lead.preAcceptReplies);
        lead.attempts++;
        this.#sendPreAccept(lead, silent);
        this.#setDeadline(lead, this.#retransmitTimeout(lead.attempts));
        return;
      }
      case "accept": {
        if (instance.ballot !== lead.ballot || instance.phase !== Phase.Accepted) {
          return this.#dropLead(instance.key);
        }
        if (!lead.widened) {
          lead.widened = true;
          return this.#sendAccept(lead, this.#allPeers & ~lead.contacted);
        }
        lead.attempts++;
        this.#sendAccept(lead, this.#allPeers & ~lead.acks);
        this.#setDeadline(lead, this.#retransmitTimeout(lead.attempts));
        return;
      }
      case "recover":
      case "validate":
      case "waiting":
        // Lost messages, a crashed quorum member, or a competing recovery:
        // back off, then try again at a higher ballot.
        this.#dropLead(instance.key);
        return this.#deferRecovery(instance.key);
    }
  }

  #repliedMask(replies: readonly (unknown | undefined)[]): number {
    let mask = 0;
    for (let replica = 0; replica < this.#n; replica++) {
      if (replies[replica] !== undefined) mask |= 1 << replica;
    }
    return mask;
  }

  #widenTimeout(targets: number): number {
    let slowest = 0;
    for (let peer = 0; peer < this.#n; peer++) {
      if ((targets & (1 << peer)) !== 0) slowest = Math.max(slowest, this.#roundTrips[peer]!);
    }
    return Math.ceil(slowest * this.#timing.widenRoundTrips) + this.#timing.widenMarginTicks;
  }

  #retransmitTimeout(attempts: number): number {
    const base = this.#scaled(this.#timing.retransmitTicks, 2);
    return Math.min(Math.max(base, this.#timing.maxRetransmitTicks), base * 2 ** attempts);
  }

  #recoveryAttemptTimeout(attempts: number): number {
    const base = this.#scaled(this.#timing.recoveryAttemptTicks, 4);
    return Math.min(Math.max(base, this.#timing.maxRetransmitTicks * 4), base * 2 ** attempts);
  }

  #setDeadline(lead: Lead<C>, ticks: number): void {
    lead.deadline = this.#tick + Math.max(1, ticks);
    if (lead.deadline < this.#nextDeadline) this.#nextDeadline = lead.deadline;
  }

  // ---------------------------------------------------------------------------
  // Helpers.

  /** Queues the message `build` makes for each peer in the bitmask `targets`. */
  #sendTo(targets: number, build: (to: number) => Message<C>): void {
    for (let peer = 0; peer < this.#n; peer++) {
      if ((targets & (1 << peer)) !== 0 && peer !== this.#id) this.#outbox.push(build(peer));
    }
  }

  #setStage(lead: Lead<C>, stage: LeadStage): void {
    lead.stage = stage;
    if (stage === "waiting") {
      this.#waitingLeads.add(lead);
    } else {
      this.#waitingLeads.delete(lead);
    }
  }

  #dropLead(key: number): void {
    const lead = this.#leads.get(key);
    if (lead === undefined) return;
    this.#leads.delete(key);
    this.#waitingLeads.delete(lead);
  }

  #newLead(instance: Instance<C>, ballot: number, stage: LeadStage): Lead<C> {
    this.#dropLead(instance.key);
    const lead: Lead<C> = {
      instance,
      ballot,
      stage,
      contacted: 0,
      widened: false,
      attempts: 0,
      deadline: Number.POSITIVE_INFINITY,
      preAcceptReplies: stage === "preaccept" ? new Array(this.#n) : NO_REPLIES,
      acks: 0,
      recoverReplies: stage === "recover" ? new Array(this.#n) : NO_REPLIES,
      quorum: 0,
      validatedCommand: undefined,
      validatedDeps: undefined,
      rmaxSize: 0,
      validateReplies: NO_REPLIES,
      invalidators: NO_INVALIDATORS,
    };
    this.#leads.set(instance.key, lead);
    return lead;
  }

  /** Drops our lead of `instance` if a higher ballot has taken over, and backs off. */
  #preempt(instance: Instance<C>, ballot: number): void {
    const lead = this.#leads.get(instance.key);
    if (lead !== undefined && lead.ballot < ballot) {
      this.#dropLead(instance.key);
      this.#deferRecovery(instance.key);
    }
  }

  /**
   * Backs off before this replica (re)starts recovering `key`: another replica
   * holds a higher ballot, or our attempt failed. The wait doubles with each
   * attempt and is staggered by distance from the owner, so competing
   * recoveries stop preempting each other (without it, ballots climb for ever).
   */
  #deferRecovery(key: number): void {
    if (keyNumber(key) <= this.#pruneFloor[keyOwner(key)]!) return;
    let wanted = this.#wanted.get(key);
    if (wanted === undefined) {
      this.#want(key);
      wanted = this.#wanted.get(key)!;
    }
    wanted.attempts++;
    const distance = (this.#id - keyOwner(key) - 1 + this.#n) % this.#n;
    wanted.notBefore = this.#tick + this.#recoveryAttemptTimeout(wanted.attempts) +
      distance * this.#scaled(this.#timing.recoveryStaggerTicks, 1);
  }

  #recoverReplyOf(instance: Instance<C>): RecoverReply<C> {
    return {
      acceptedBallot: instance.acceptedBallot,
      phase: instance.phase,
      command: instance.command,
      deps: instance.deps,
      initialDeps: instance.initialDeps,
    };
  }

  /** Picks `count` peers in preference order, those in `prefer` first, skipping `exclude`. */
  #pick(count: number, exclude: number, prefer = 0): number {
    let chosen = 0;
    let picked = 0;
    for (const pass of [true, false]) {
      for (const peer of this.#peerOrder) {
        if (picked >= count) return chosen;
        const bit = 1 << peer;
        if ((exclude & bit) !== 0 || (chosen & bit) !== 0) continue;
        if (pass && (prefer & bit) === 0) continue;
        chosen |= bit;
        picked++;
      }
    }
    return chosen;
  }

  #reply(
    to: number,
    instance: Instance<C>,
    body:
      | { type: "preacceptok"; deps: Deps }
      | { type: "acceptok"; ballot: number }
      | { type: "validateok"; ballot: number; invalidators: readonly number[] },
  ): void {
    const from = this.#id;
    const { owner, number } = instance;
    switch (body.type) {
      case "preacceptok":
        this.#outbox.push({ type: "preacceptok", from, to, owner, number, deps: body.deps });
        return;
      case "acceptok":
        this.#outbox.push({ type: "acceptok", from, to, owner, number, ballot: body.ballot });
        return;
      case "validateok":
        this.#outbox.push({
          type: "validateok",
          from,
          to,
          owner,
          number,
          ballot: body.ballot,
          invalidators: body.invalidators,
        });
    }
  }

  #sendNack(instance: Instance<C>, to: number): void {
    this.#outbox.push({
      type: "nack",
      from: this.#id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: instance.ballot,
    });
  }

  #create(owner: number, number: number): Instance<C> {
    const instance = newInstance<C>(owner, number, this.#tick);
    this.#instances.set(instance.key, instance);
    this.#noteExists(owner, number);
    return instance;
  }

  #getOrCreate(owner: number, number: number): Instance<C> {
    return this.#instances.get(instanceKey(owner, number)) ?? this.#create(owner, number);
  }

  #noteExists(owner: number, number: number): void {
    if (number > this.#rowHighest[owner]!) this.#rowHighest[owner] = number;
  }

  /**
   * Records that `instance`'s original command is known, the first time a
   * non-Nop payload is seen: it enters the conflict index (so later commands
   * depend on it, `ConflictingIds` over `cmd`) and the executor's view.
   */
  #learn(instance: Instance<C>, command: Payload<C>, accesses?: readonly Access[]): void {
    if (instance.accesses !== undefined || command === NOP) return;
    instance.accesses = accesses ?? batchAccesses(this.#conflicts, command);
    instance.heldCommands = command.length;
    this.#heldCommands += command.length;
    this.#index.add(instance.owner, instance.number, instance.accesses);
    this.#executor.noteKnown(instance);
  }

  #markDirty(instance: Instance<C>): void {
    if (instance.dirty) return;
    instance.dirty = true;
    this.#dirty.push(instance);
  }

  #runExecutor(): void {
    const executed = this.#executor.run();
    for (const instance of executed) {
      const own = this.#ownProposals.get(instance.key);
      if (own !== undefined) this.#ownProposals.delete(instance.key);
      this.#executions.push({
        owner: instance.owner,
        number: instance.number,
        command: instance.command!,
        local: own !== undefined,
      });
      this.#stats.executedInstances++;
      if (instance.command !== NOP) this.#stats.executedCommands += instance.command!.length;
    }
  }

  #restore(restored: RestoredState<C>): void {
    if (restored.pruneFloor !== undefined) {
      depsRaise(this.#pruneFloor, restored.pruneFloor);
      this.#index.raiseAbsentFloor(this.#pruneFloor);
    }
    const loaded: Instance<C>[] = [];
    for (const record of restored.records) {
      if (record.owner < 0 || record.owner >= this.#n) continue;
      if (record.number <= this.#pruneFloor[record.owner]!) {
        // Pruned before the crash but its delete was not persisted: finish it.
        this.#extraRecords.push({
          kind: "delete",
          owner: record.owner,
          from: record.number,
          to: record.number,
        });
        continue;
      }
      const instance = fromRecord(record, this.#tick);
      this.#instances.set(instance.key, instance);
      loaded.push(instance);
      this.#noteExists(instance.owner, instance.number);
      if (instance.owner === this.#id && instance.number > this.#lastNumber) {
        this.#lastNumber = instance.number;
      }
    }
    this.#lastNumber = Math.max(this.#lastNumber, this.#pruneFloor[this.#id]!);
    for (let row = 0; row < this.#n; row++) {
      this.#executor.markPrunedPrefix(row, this.#pruneFloor[row]!);
      this.#durableExecuted[row] = this.#pruneFloor[row]!;
    }
    loaded.sort((a, b) => a.number - b.number || a.owner - b.owner);
    for (const instance of loaded) {
      const original = instance.initialCommand !== undefined && instance.initialCommand !== NOP
        ? instance.initialCommand
        : instance.command;
      if (original !== undefined && original !== NOP) {
        instance.accesses = batchAccesses(this.#conflicts, original);
        instance.heldCommands = original.length;
        this.#heldCommands += original.length;
        this.#index.add(instance.owner, instance.number, instance.accesses);
      }
    }
    // Executed instances first, so the executor's prefixes are right before it runs.
    for (const instance of loaded) {
      if (instance.executed) this.#executor.restoreExecuted(instance);
    }
    for (const instance of loaded) {
      if (instance.executed) {
        this.#noteDurablyExecuted(instance);
        continue;
      }
      if (instance.accesses !== undefined) this.#executor.noteKnown(instance);
      if (instance.phase === Phase.Committed) {
        this.#executor.noteCommitted(instance);
      } else if (instance.phase !== Phase.Initial || instance.command !== undefined) {
        this.#uncommitted.add(instance);
      }
    }
    // Resume our own unfinished proposals at ballot 0: same value, same ballot,
    // so re-sending is what a slow coordinator would do.
    for (const instance of loaded) {
      if (instance.owner !== this.#id || instance.ballot !== 0) continue;
      if (instance.phase === Phase.PreAccepted) {
        const lead = this.#newLead(instance, 0, "preaccept");
        lead.preAcceptReplies[this.#id] = instance.initialDeps;
        lead.widened = true;
        this.#sendPreAccept(lead, this.#allPeers);
      } else if (instance.phase === Phase.Accepted) {
        const lead = this.#newLead(instance, 0, "accept");
        lead.acks = 1 << this.#id;
        lead.widened = true;
        this.#sendAccept(lead, this.#allPeers);
      }
    }
  }
}

/** Shared empty values for the fields a lead's current stage does not use; never mutated. */
/** Most instances one commit request asks for (and one answer carries). */
const CATCH_UP_RANGE = 64;

const NO_INVALIDATORS: Map<number, Phase> = new Map();
const NO_REPLIES = Object.freeze([]) as unknown as never[];

function popCount(mask: number): number {
  let count = 0;
  for (let bits = mask; bits !== 0; bits &= bits - 1) count++;
  return count;
}
