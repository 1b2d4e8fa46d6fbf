/**
 * The state one replica's handlers share, and the primitives they all use:
 * creating and indexing instances, queueing messages, picking thrifty peers,
 * running the executor, pruning. The handlers live in `replica.ts` (the
 * public `Replica` and the commit protocol, EPaxos* Figure 3) and
 * `recoverer.ts` (recovery, Figure 5); both hold this object. Not exported
 * from the package: only `Replica` is.
 *
 * @module
 */

import { type Access, batchAccesses, ConflictIndex, type ConflictModel } from "./conflict.ts";
import { type Deps, describeDeps, seqOf } from "./deps.ts";
import { describeRecord } from "./describe.ts";
import { Executor } from "./executor.ts";
import { Housekeeping } from "./housekeeping.ts";
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
import { type Lead, Leads } from "./lead.ts";
import { type LeaseConfiguration, leaseConfigurationProblem } from "./lease.ts";
import { LeaseState, type UnsafeLeaseOptions } from "./lease_state.ts";
import { ProgressTracker } from "./progress.ts";
import { QuorumReadTable, type UnsafeQuorumReadOptions } from "./quorum_read.ts";
import { MAX_REPLICAS, type QuorumSizes, quorumSizes } from "./quorum.ts";
import { ReadyBuilder } from "./ready_builder.ts";
import { peersToPrunePast, snapshotSources } from "./retention.ts";
import { newReplicaStats, type ReplicaStats } from "./stats.ts";
import { Timers, type TimingOptions } from "./timing.ts";
import { type InstanceRecord, type Message, NOP, type Payload, Phase } from "./types.ts";

/**
 * Most own PreAccepts one Ready sends before its records are durable (the
 * rest wait for the write, as every other message does). A restarted replica
 * skips this many numbers of its row, so bounding it bounds the gaps.
 */
export const MAX_EARLY_PREACCEPTS = 8;

/**
 * Frontier periods after its start during which a replica does not prune
 * past a peer it has not heard from (`retention.ts`): time for every live
 * peer's gossip to arrive.
 */
export const RETENTION_GRACE_FRONTIERS = 20;

/**
 * A peer whose frontier gossip has not arrived for this many frontier periods
 * does not count when deciding whether every peer pruned past this replica
 * (it may be down, its floor stale).
 */
export const SNAPSHOT_HEARD_FRONTIERS = 10;

/**
 * Frontier periods after its start during which a replica decides that it is
 * cut off only once it has heard from every peer.
 */
export const SNAPSHOT_GRACE_FRONTIERS = 5;

/** How to build a replica. */
export interface ReplicaOptions<C> {
  /** This replica's index (its member id), `0 <= id < replicas`; a member. */
  readonly id: number;
  /**
   * Number of positions: member ids run `0..replicas-1`, removed members'
   * included (ids are never reused), so this is the highest id ever used plus
   * one. Every deps vector has a row per position. At most
   * {@linkcode MAX_REPLICAS}: sets of positions are 32-bit bitmasks, instance
   * keys hold the owner in four bits, and snapshot files take that many rows.
   * Without `voters`, every position votes, so it is odd, 3 to 9.
   */
  readonly replicas: number;
  /**
   * The positions that vote (default every position): they count in every
   * quorum and receive PreAccept, Accept, Recover and Validate. Non-empty,
   * distinct, each in `0..replicas-1`, an odd number (from 3: `quorumSizes`
   * takes no fewer); quorum sizes follow their number, not `replicas`.
   */
  readonly voters?: readonly number[];
  /**
   * The positions that are members, voters and learners (default every
   * position); includes every voter and `id`. A learner receives commits and
   * gossip, executes, and counts in no quorum. A position that is not a
   * member (a removed member) is sent nothing, heard from never, and holds
   * back no pruning.
   */
  readonly members?: readonly number[];
  /** Which commands conflict (supplied by the replicated state machine). */
  readonly conflicts: ConflictModel<C>;
  /** Timer settings; missing fields take `DEFAULT_TIMING`. */
  readonly timing?: Partial<TimingOptions>;
  /** How many times a proposal replaced by a Nop is proposed again before it is abandoned. */
  readonly maxReproposals?: number;
  /** Most instances pruned in one step, so a long-delayed prune cannot stall the replica. */
  readonly maxPrunePerStep?: number;
  /**
   * Most client commands held for peers that have not executed them (default:
   * no bound). Beyond it, the replica prunes past peers far behind
   * (`retention.ts`), which then install a snapshot when they return, so a
   * replica away for any length of time never costs the others their memory
   * or their writes.
   */
  readonly retentionCommands?: number;
  /**
   * For tests only, never in production: replaces some of the quorum sizes
   * derived from the number of voters (for instance a fast quorum one smaller than
   * correct), so that a test can show the explorer and the simulator catch a
   * broken decider (`tests/sim/explore_test.ts`). A replica given it is unsafe.
   */
  readonly unsafeQuorumSizes?: Partial<QuorumSizes>;
  /** Quorum leases (`lease.ts`); absent or without rules: none. */
  readonly leases?: LeaseConfiguration;
  /**
   * When this process started (the driver's clock, ms), if this core is the
   * first of the process: as a grantor it names every holder for a lease
   * length, its promises being lost (`lease.ts`, the restart rule). Absent
   * for a core rebuilt in the same process (a new epoch, an installed
   * snapshot), whose old promises ended with the old core's epoch or were
   * kept by a grantor that did not restart.
   */
  readonly leaseRestartedAt?: number;
  /**
   * Where this core's lease request numbers start (default 0): different in
   * every core (the driver draws it), so that a grant answering an earlier
   * core's request, delayed across a restart or a rebuild, matches no
   * request of this one (it would be timed from the later send).
   */
  readonly leaseRequestBase?: number;
  /** For tests only, never in production: breaks a lease rule (`UnsafeLeaseOptions`). */
  readonly unsafeLeases?: UnsafeLeaseOptions;
  /**
   * Where this core's quorum read numbers start (`quorum_read.ts`): drawn
   * by the driver for each core, so that an answer to a read of an earlier
   * incarnation, still in flight after a restart, never counts for a read
   * of this one. Default 1.
   */
  readonly quorumReadSeqBase?: number;
  /** For tests only, never in production: breaks the quorum read's rule (`UnsafeQuorumReadOptions`). */
  readonly unsafeQuorumReads?: UnsafeQuorumReadOptions;
}

/** What a replica reloads after a restart: everything its storage holds. */
export interface RestoredState<C> {
  /** Every instance record persisted and not deleted. */
  readonly records: Iterable<InstanceRecord<C>>;
  /** The last persisted prune floor. */
  readonly pruneFloor?: Deps;
  /**
   * Every record this replica's own proposals needed is durable: the core
   * is rebuilt in the same process after an install (a snapshot, or the
   * start of an epoch), with no Ready in flight, not after a crash. No
   * PreAccept of it can have left without its record, so no number is
   * skipped and recovered (see `restore`). Absent: false.
   */
  readonly nothingInFlight?: boolean;
}

/** One of this replica's own proposals, until it executes or is abandoned. */
export interface OwnProposal<C> {
  /** The client commands. */
  readonly commands: readonly C[];
  /** How many times they were proposed again after a Nop replaced them. */
  readonly reproposals: number;
}

/** No leases: the configuration of a replica given none. */
const NO_LEASES: LeaseConfiguration = { leaseMs: 2000, renewMs: 500, drift: 0, rules: [] };

/** The state of one replica, shared by its handlers. */
export class ReplicaState<C> {
  /** This replica's index. */
  readonly id: number;
  /** Number of positions (rows of every deps vector); not the number of voters. */
  readonly n: number;
  /** Quorum sizes of the cluster, from its number of voters. */
  readonly quorum: QuorumSizes;
  /** The positions that vote, ascending. */
  readonly voters: readonly number[];
  /** The positions that are members (voters and learners), ascending. */
  readonly members: readonly number[];
  /** Whether this replica votes (otherwise it is a learner). */
  readonly isVoter: boolean;
  /** Which commands conflict. */
  readonly conflicts: ConflictModel<C>;
  /** Timer settings and measured round trips. */
  readonly timers: Timers;
  /** See {@linkcode ReplicaOptions.maxReproposals}. */
  readonly maxReproposals: number;
  /** See {@linkcode ReplicaOptions.maxPrunePerStep}. */
  readonly maxPrunePerStep: number;
  /** See {@linkcode ReplicaOptions.retentionCommands}. */
  readonly retentionCommands: number;
  /** Bitmask of the voters, this replica included if it votes. */
  readonly voterMask: number;
  /** Bitmask of the members, this replica included. */
  readonly memberMask: number;
  /**
   * Bitmask of the voters but this one: where PreAccept, Accept, Recover,
   * Validate and Waiting go, and whose replies count.
   */
  readonly voterPeers: number;
  /** Bitmask of the members but this one: where Commit, gossip and commit requests go. */
  readonly memberPeers: number;
  /** Every instance held, by key. */
  readonly instances = new Map<number, Instance<C>>();
  /** The executor over the held instances. */
  readonly executor: Executor<C>;
  /** Which held instances touch which keys (`ConflictingIds`). */
  readonly index: ConflictIndex;
  /** The instances this replica coordinates or recovers. */
  readonly leads: Leads<C>;
  /** Frontiers, prune floor, held commands. */
  readonly progress: ProgressTracker;
  /** Highest numbers, wanted instances, gaps. */
  readonly housekeeping: Housekeeping;
  /** The next Ready and the one in flight. */
  readonly out = new ReadyBuilder<C>();
  /** Own proposals not yet executed, by instance key. */
  readonly ownProposals = new Map<number, OwnProposal<C>>();
  /**
   * Own proposals replaced by a Nop while this replica was fenced: proposed
   * again once the fence is gone (the change became a Nop), or, if it ends
   * the epoch, by the driver in the next one (`Replica.unexecutedProposals`).
   * A fenced replica originates nothing: the fence's argument counts on it.
   * Bounded by the proposals in flight when the fence came.
   */
  readonly deferredReproposals: OwnProposal<C>[] = [];
  /** Held instances not committed. */
  readonly uncommitted = new Set<Instance<C>>();
  /** Held instances carrying a command that fences (`ConflictModel.fences`); see `fenced`. */
  readonly fencing = new Set<number>();
  /** `Waiting(id, k)` received: instance key to the largest `k`. */
  readonly waitingReports = new Map<number, number>();
  /** Highest ballot seen in a Nack, per instance, so the next recovery starts above it. */
  readonly nackedBallots = new Map<number, number>();
  /** Counters. */
  readonly stats: ReplicaStats = newReplicaStats();
  /** Quorum leases: this replica as grantor and holder. */
  readonly leases: LeaseState;
  /** Leads whose decision waits on lease holders' acknowledgements. */
  readonly leaseWaiting = new Set<Lead<C>>();
  /** Linearizable reads through a majority, in flight here (`quorum_read.ts`). */
  readonly quorumReads: QuorumReadTable;
  /** See {@linkcode ReplicaOptions.unsafeQuorumReads}. */
  readonly unsafeQuorumReads: UnsafeQuorumReadOptions;
  /** Executions handed to the driver since this core was built, in order. */
  executionsQueued = 0;
  /** Of those, the ones applied: the Ready that carried them was advanced. */
  executionsApplied = 0;
  /** The current tick. */
  tick = 0;
  /** The last number this replica allocated in its own row. */
  lastNumber = 0;
  /** The numbers of its own row `restore` skipped, which the replica recovers at once. */
  skippedNumbers: { readonly from: number; readonly to: number } | undefined;
  /**
   * Whether this replica may send its own PreAccepts before their records are
   * durable: once something it wrote is durable (storage held state at
   * restore, or a Ready with records was advanced). A replica whose storage is
   * empty therefore never sent an early PreAccept, and the numbers it
   * allocates cannot collide with ones a crash lost (see `restore`).
   */
  earlyPreAccepts = false;
  /** Own proposals whose PreAccept left early: their vote counts once the next Ready is durable. */
  ownVotesPending: Lead<C>[] = [];
  /** Own votes waiting for the Ready in flight to be advanced. */
  ownVotesInFlight: Lead<C>[] = [];
  /** Thrifty preference order of the voters but this one, closest first. */
  peerOrder: number[] = [];

  /** Empty state for replica `options.id`. */
  constructor(options: ReplicaOptions<C>) {
    const { voters, members } = positionsOf(options);
    this.quorum = options.unsafeQuorumSizes === undefined
      ? quorumSizes(voters.length)
      : { ...quorumSizes(voters.length), ...options.unsafeQuorumSizes };
    if (!Number.isInteger(options.id) || options.id < 0 || options.id >= options.replicas) {
      throw new RangeError(`Replica id must be in 0..${options.replicas - 1}, got ${options.id}`);
    }
    if (!members.includes(options.id)) {
      throw new RangeError(`Replica id ${options.id} must be a member`);
    }
    this.id = options.id;
    this.n = options.replicas;
    this.voters = voters;
    this.members = members;
    this.isVoter = voters.includes(this.id);
    this.conflicts = options.conflicts;
    this.timers = new Timers(this.id, this.n, { timing: options.timing, members });
    this.maxReproposals = options.maxReproposals ?? 8;
    this.maxPrunePerStep = options.maxPrunePerStep ?? 8192;
    this.retentionCommands = options.retentionCommands ?? Number.POSITIVE_INFINITY;
    this.voterMask = maskOf(voters);
    this.memberMask = maskOf(members);
    this.voterPeers = this.voterMask & ~(1 << this.id);
    this.memberPeers = this.memberMask & ~(1 << this.id);
    this.executor = new Executor(this.n, (key) => this.instances.get(key));
    this.index = new ConflictIndex(this.n);
    this.leads = new Leads(this.n);
    this.progress = new ProgressTracker(this.id, this.n, { members });
    this.housekeeping = new Housekeeping(this.id, this.n, this.timers, this.progress);
    const leases = options.leases ?? NO_LEASES;
    // Holders are member ids: a rule may name one this epoch no longer has
    // (removed since the rule was set; the configuration keeps ids below
    // `nextId`), and only members hold leases (`leaseHolderMask`), so the
    // ids are checked against every position a core can have.
    const leaseProblem = leaseConfigurationProblem(leases, MAX_REPLICAS);
    if (leaseProblem !== undefined) {
      throw new RangeError(`Invalid lease configuration: ${leaseProblem}`);
    }
    this.leases = new LeaseState(this.id, this.n, {
      configuration: leases,
      voterMask: this.voterMask,
      memberMask: this.memberMask,
      ...(options.leaseRestartedAt === undefined ? {} : { restartedAt: options.leaseRestartedAt }),
      ...(options.unsafeLeases === undefined ? {} : { unsafe: options.unsafeLeases }),
      ...(options.leaseRequestBase === undefined ? {} : { requestBase: options.leaseRequestBase }),
    });
    this.quorumReads = new QuorumReadTable(options.quorumReadSeqBase);
    this.unsafeQuorumReads = options.unsafeQuorumReads ?? {};
    for (let distance = 1; distance < this.n; distance++) {
      const peer = (this.id + distance) % this.n;
      if (this.isVoterAt(peer)) this.peerOrder.push(peer);
    }
  }

  /** Whether position `peer` votes. */
  isVoterAt(peer: number): boolean {
    return peer >= 0 && peer < this.n && (this.voterMask & (1 << peer)) !== 0;
  }

  /** Whether position `peer` is a member (a voter or a learner). */
  isMemberAt(peer: number): boolean {
    return peer >= 0 && peer < this.n && (this.memberMask & (1 << peer)) !== 0;
  }

  /** Creates instance `(owner, number)` in the initial phase. */
  create(owner: number, number: number): Instance<C> {
    const instance = newInstance<C>(owner, number, this.tick);
    this.instances.set(instance.key, instance);
    this.housekeeping.noteExists(owner, number);
    this.leases.noteInstance(owner, number);
    return instance;
  }

  /** The instance `(owner, number)`, created if not held. */
  getOrCreate(owner: number, number: number): Instance<C> {
    return this.instances.get(instanceKey(owner, number)) ?? this.create(owner, number);
  }

  /**
   * Records that `instance`'s original command is known, the first time a
   * non-Nop payload is seen: it enters the conflict index (so later commands
   * depend on it, `ConflictingIds` over `cmd`) and the executor's view.
   */
  learn(instance: Instance<C>, command: Payload<C>, accesses?: readonly Access[]): void {
    if (command === NOP) return;
    if (instance.accesses !== undefined) return this.#raiseSeq(instance);
    this.#index(instance, command, accesses);
    this.executor.noteKnown(instance);
  }

  /**
   * Whether this replica holds an instance carrying a fencing command that is
   * not replaced by a Nop (its epoch is closing). Instances that left, or
   * were committed as Nops, leave the set here.
   */
  fenced(): boolean {
    for (const key of this.fencing) {
      const instance = this.instances.get(key);
      if (
        instance === undefined || (instance.phase === Phase.Committed && instance.command === NOP)
      ) {
        this.fencing.delete(key);
        continue;
      }
      return true;
    }
    return false;
  }

  #index(instance: Instance<C>, command: readonly C[], accesses?: readonly Access[]): void {
    if (this.conflicts.fences !== undefined && command.some(this.conflicts.fences)) {
      this.fencing.add(instance.key);
    }
    instance.accesses = accesses ?? batchAccesses(this.conflicts, command);
    instance.heldCommands = command.length;
    this.progress.heldCommands += command.length;
    instance.indexedSeq = this.#seenSeq(instance);
    this.index.add(instance.owner, instance.number, instance.accesses, instance.indexedSeq);
  }

  /**
   * Re-indexes a known instance whose `seq` rose (an Accept or Commit with the
   * slow path's maximum), so that commands proposed after it get a higher one.
   */
  #raiseSeq(instance: Instance<C>): void {
    const seq = this.#seenSeq(instance);
    if (seq <= instance.indexedSeq) return;
    instance.indexedSeq = seq;
    this.index.add(instance.owner, instance.number, instance.accesses!, seq);
  }

  /** The highest `seq` held for `instance`: its current or initial dependencies'. */
  #seenSeq(instance: Instance<C>): number {
    const current = instance.deps === undefined ? 0 : seqOf(instance.deps, this.n);
    const initial = instance.initialDeps === undefined ? 0 : seqOf(instance.initialDeps, this.n);
    return Math.max(current, initial);
  }

  /**
   * Queues the message `build` makes for each peer in the bitmask `targets`;
   * with `early`, as messages that may leave before the next Ready's records
   * are durable (`ReadyBuilder.sendEarly`).
   */
  sendTo(
    targets: number,
    build: (to: number) => Message<C>,
    options: { readonly early?: boolean } = {},
  ): void {
    for (let peer = 0; peer < this.n; peer++) {
      if ((targets & (1 << peer)) === 0 || peer === this.id) continue;
      if (options.early) this.out.sendEarly(build(peer));
      else this.out.send(build(peer));
    }
  }

  /** Queues a reply about `instance` to `to`. */
  reply(
    to: number,
    instance: Instance<C>,
    body:
      | { type: "preacceptok"; deps: Deps }
      | { type: "acceptok"; ballot: number }
      | { type: "validateok"; ballot: number; invalidators: readonly number[] },
  ): void {
    const from = this.id;
    const { owner, number } = instance;
    switch (body.type) {
      case "preacceptok":
        return this.out.send({
          type: "preacceptok",
          from,
          to,
          owner,
          number,
          deps: body.deps,
          ...this.#leaseNaming(instance),
        });
      case "acceptok":
        return this.out.send({
          type: "acceptok",
          from,
          to,
          owner,
          number,
          ballot: body.ballot,
          ...this.#leaseNaming(instance),
        });
      case "validateok":
        return this.out.send({
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

  /**
   * The lease holders this replica, as a grantor acknowledging `instance`,
   * names (the card: "grantors name the holders they have promised"), with
   * its promises' time left; nothing when it names nobody.
   */
  #leaseNaming(instance: Instance<C>): { holders?: number; leaseMs?: number } {
    if (!this.leases.enabled || instance.command === NOP || instance.accesses === undefined) {
      return {};
    }
    const { holders, remainingMs } = this.leases.named(instance.accesses);
    return holders === 0 ? {} : { holders, leaseMs: Math.ceil(remainingMs) };
  }

  /** Tells `to` that `instance` is promised to a higher ballot. */
  sendNack(instance: Instance<C>, to: number): void {
    this.out.send({
      type: "nack",
      from: this.id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: instance.ballot,
    });
  }

  /** Sends `instance`'s Commit to `to`. */
  sendCommit(instance: Instance<C>, to: number): void {
    this.out.send(this.#commitMessage(instance, to));
  }

  /**
   * Sends `instance`'s Commit to every member but this one (with thrifty
   * operation some voters hear of it first here; learners only ever do).
   */
  broadcastCommit(instance: Instance<C>): void {
    this.sendTo(this.memberPeers, (to) => this.#commitMessage(instance, to));
  }

  #commitMessage(instance: Instance<C>, to: number): Message<C> {
    return {
      type: "commit",
      from: this.id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: instance.acceptedBallot,
      command: instance.command!,
      deps: instance.deps!,
    };
  }

  /** Picks `count` peers in preference order, those in `prefer` first, skipping `exclude`. */
  pick(count: number, exclude: number, prefer = 0): number {
    let chosen = 0;
    let picked = 0;
    for (const pass of [true, false]) {
      for (const peer of this.peerOrder) {
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

  /** Sets `lead`'s deadline `ticks` from now. */
  setDeadline(lead: Lead<C>, ticks: number): void {
    this.leads.setDeadline(lead, this.tick, ticks);
  }

  /** Drops our lead of `instance` if a higher ballot has taken over, and backs off. */
  preempt(instance: Instance<C>, ballot: number): void {
    const lead = this.leads.get(instance.key);
    if (lead !== undefined && lead.ballot < ballot) {
      this.leads.drop(instance.key);
      this.housekeeping.deferRecovery(instance.key, this.tick);
    }
  }

  /**
   * See `Replica.snapshotSources`. Asked on every client command (admission)
   * and every prune step: computed once per tick and progress change.
   */
  snapshotSources(): readonly number[] {
    const cache = this.#snapshotSourcesCache;
    if (cache.tick !== this.tick || cache.version !== this.progress.version) {
      cache.tick = this.tick;
      cache.version = this.progress.version;
      cache.sources = this.#snapshotSources();
    }
    return cache.sources;
  }

  readonly #snapshotSourcesCache = { tick: -1, version: -1, sources: [] as number[] };

  #snapshotSources(): number[] {
    const period = this.timers.timing.frontierTicks;
    // Right after a start (or a snapshot install) the first gossip to arrive
    // may be that of a peer that pruned past this replica while the one that
    // kept what it needs is not heard yet: decide once every peer was heard
    // from, or after a grace (found in bench:snapshot: a second snapshot
    // fetched right after the first was installed).
    if (this.tick < SNAPSHOT_GRACE_FRONTIERS * period) {
      for (const peer of this.members) {
        if (!this.progress.heard(peer)) return [];
      }
    }
    const window = SNAPSHOT_HEARD_FRONTIERS * period;
    return snapshotSources(
      this.id,
      this.progress.executed,
      { executed: this.progress.peerExecuted, pruned: this.progress.peerPruned },
      this.progress.heardLately(this.tick, window),
    );
  }

  /** Runs the executor and queues what it executed. */
  runExecutor(): void {
    const executed = this.executor.run();
    for (const instance of executed) {
      const own = this.ownProposals.get(instance.key);
      if (own !== undefined) this.ownProposals.delete(instance.key);
      this.out.execute({
        owner: instance.owner,
        number: instance.number,
        command: instance.command!,
        local: own !== undefined,
        lastOfComponent: instance.lastOfComponent,
      });
      this.executionsQueued++;
      this.stats.executedInstances++;
      if (instance.command !== NOP) this.stats.executedCommands += instance.command!.length;
    }
  }

  /**
   * Forgets instances every replica has executed durably: they can never be
   * needed again, except by a replica that lost its disk (not supported).
   * Past the retention bound, peers far behind do not count
   * (`retention.ts`): they install a snapshot instead.
   */
  maybePrune(): void {
    // A replica cut off waits for a snapshot, which replaces what it holds:
    // pruning meanwhile only raised its floor above what a source had
    // executed of its own row (the numbers it recovered at a restart), and
    // the first snapshot was refused every time.
    if (this.snapshotSources().length > 0) return;
    let budget = this.maxPrunePerStep;
    let changed = false;
    const unheard: number[] = [];
    for (const peer of this.members) if (!this.progress.heard(peer)) unheard.push(peer);
    for (let peer = 0; peer < this.n; peer++) this.progress.held(peer, this.tick);
    const pastPeers = peersToPrunePast(
      this.progress.executionLag(),
      { commands: this.progress.heldCommands, instances: this.instances.size },
      this.retentionCommands,
      {
        unheard,
        graceOver: this.tick >= RETENTION_GRACE_FRONTIERS * this.timers.timing.frontierTicks,
        members: this.members,
      },
    );
    if (pastPeers.length > 0) this.stats.retentionPrunes++;
    for (let row = 0; row < this.n && budget > 0; row++) {
      const floor = this.progress.pruneTarget(row, pastPeers);
      let current = this.progress.pruneFloor[row]!;
      if (floor <= current) continue;
      const from = current + 1;
      while (current < floor && budget > 0) {
        current++;
        budget--;
        const key = instanceKey(row, current);
        const instance = this.instances.get(key);
        if (instance === undefined) continue;
        this.instances.delete(key);
        this.progress.heldCommands -= instance.heldCommands;
        instance.dirty = false; // a pruned instance is not written again
        this.uncommitted.delete(instance);
        this.leads.drop(key);
        this.ownProposals.delete(key);
        this.stats.prunedInstances++;
      }
      this.out.addRecord({ kind: "delete", owner: row, from, to: current });
      this.progress.setPruneFloor(row, current);
      this.executor.markPrunedPrefix(row, current);
      changed = true;
    }
    if (changed) this.out.addRecord({ kind: "floor", pruneFloor: [...this.progress.pruneFloor] });
  }

  /**
   * Loads what storage held before a restart. Returns this replica's own
   * unfinished instances at ballot 0, for the coordinator to resume.
   */
  restore(restored: RestoredState<C>): Instance<C>[] {
    let hadState = restored.pruneFloor !== undefined;
    this.progress.restore(restored.pruneFloor);
    const pruneFloor = this.progress.pruneFloor;
    if (restored.pruneFloor !== undefined) this.index.raiseAbsentFloor(pruneFloor);
    const loaded: Instance<C>[] = [];
    for (const record of restored.records) {
      hadState = true;
      if (record.owner < 0 || record.owner >= this.n) continue;
      if (this.progress.isPruned(record.owner, record.number)) {
        // Pruned before the crash but its delete was not persisted: finish it.
        this.out.addRecord({
          kind: "delete",
          owner: record.owner,
          from: record.number,
          to: record.number,
        });
        continue;
      }
      const instance = fromRecord(record, this.tick);
      this.instances.set(instance.key, instance);
      loaded.push(instance);
      this.housekeeping.noteExists(instance.owner, instance.number);
      this.leases.noteInstance(instance.owner, instance.number);
      if (instance.owner === this.id && instance.number > this.lastNumber) {
        this.lastNumber = instance.number;
      }
    }
    this.lastNumber = Math.max(this.lastNumber, pruneFloor[this.id]!);
    if (hadState && restored.nothingInFlight === true) {
      this.earlyPreAccepts = true;
    } else if (hadState) {
      // Up to MAX_EARLY_PREACCEPTS proposals of the Ready in flight at a crash
      // may have reached peers without their records: never reuse their
      // numbers. The replica recovers the skipped numbers itself at once (as
      // Nops where nothing arrived; see `Replica`'s constructor): left to the
      // peers' gap handling, the executor found them one at a time, each after
      // a recovery delay, and a restart stalled every conflicting command for
      // about four seconds (chaos kill-random timelines).
      this.skippedNumbers = {
        from: this.lastNumber + 1,
        to: this.lastNumber + MAX_EARLY_PREACCEPTS,
      };
      this.lastNumber += MAX_EARLY_PREACCEPTS;
      this.earlyPreAccepts = true;
    }
    for (let row = 0; row < this.n; row++) this.executor.markPrunedPrefix(row, pruneFloor[row]!);
    loaded.sort((a, b) => a.number - b.number || a.owner - b.owner);
    for (const instance of loaded) {
      const original = instance.initialCommand !== undefined && instance.initialCommand !== NOP
        ? instance.initialCommand
        : instance.command;
      if (original !== undefined && original !== NOP) this.#index(instance, original);
    }
    // Executed instances first, so the executor's prefixes are right before it runs.
    for (const instance of loaded) {
      if (instance.executed) this.executor.restoreExecuted(instance);
    }
    for (const instance of loaded) {
      if (instance.executed) {
        this.progress.noteDurablyExecuted(instance.owner, instance.number);
        continue;
      }
      if (instance.accesses !== undefined) this.executor.noteKnown(instance);
      if (instance.phase === Phase.Committed) {
        this.executor.noteCommitted(instance);
      } else if (instance.phase !== Phase.Initial || instance.command !== undefined) {
        this.uncommitted.add(instance);
      }
    }
    return loaded.filter((instance) => instance.owner === this.id && instance.ballot === 0);
  }

  /**
   * Renders the state as lines: a summary, then every instance that is not
   * finished here (uncommitted, or committed and waiting to execute) with what
   * this replica is doing about it.
   */
  describe(limit: number): string[] {
    const lines = [
      `replica ${this.id} tick=${this.tick} instances=${this.instances.size} leads=${this.leads.size} ` +
      `uncommitted=${this.uncommitted.size} pending=${this.executor.pendingCount} ` +
      `wanted=${this.housekeeping.wantedCount} executed=${describeDeps(this.progress.executed)} ` +
      `known=${describeDeps(this.executor.knownPrefix)} highest=${
        describeDeps(this.housekeeping.rowHighest)
      } ` +
      `pruned=${describeDeps(this.progress.pruneFloor)}`,
    ];
    let shown = 0;
    for (const instance of this.instances.values()) {
      if (instance.executed) continue;
      if (shown++ >= limit) {
        lines.push("...");
        break;
      }
      const lead = this.leads.get(instance.key);
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
}

/**
 * The voters and members of `options`, ascending, checked (see
 * {@linkcode ReplicaOptions.voters} and {@linkcode ReplicaOptions.members}).
 *
 * @throws {RangeError} if `replicas` is out of range, or either list is not
 * made of distinct positions, or the voters are not an odd number from 3
 * (`quorumSizes` takes no fewer), or a voter is not a member.
 */
function positionsOf(
  options: {
    readonly replicas: number;
    readonly voters?: readonly number[];
    readonly members?: readonly number[];
  },
): { voters: readonly number[]; members: readonly number[] } {
  const replicas = options.replicas;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new RangeError(`A cluster has 1 to ${MAX_REPLICAS} positions, got ${replicas}`);
  }
  const every = Array.from({ length: replicas }, (_, position) => position);
  const voters = options.voters === undefined
    ? every
    : checkedPositions(options.voters, replicas, "voters");
  const members = options.members === undefined
    ? every
    : checkedPositions(options.members, replicas, "members");
  // Without voters given, `quorumSizes` says what is wrong with `replicas`.
  if (options.voters !== undefined && (voters.length < 3 || voters.length % 2 === 0)) {
    throw new RangeError(
      `A cluster needs an odd number of voters from 3 to ${MAX_REPLICAS}, got ${voters.length}`,
    );
  }
  const outside = voters.find((voter) => !members.includes(voter));
  if (outside !== undefined) throw new RangeError(`Voter ${outside} must be a member`);
  return { voters, members };
}

/** `positions` sorted ascending, checked to be distinct integers in `0..replicas-1`. */
function checkedPositions(positions: readonly number[], replicas: number, what: string): number[] {
  const sorted = [...positions].sort((a, b) => a - b);
  for (const [index, position] of sorted.entries()) {
    if (!Number.isInteger(position) || position < 0 || position >= replicas) {
      throw new RangeError(`Each of the ${what} must be in 0..${replicas - 1}, got ${position}`);
    }
    if (index > 0 && sorted[index - 1] === position) {
      throw new RangeError(`The ${what} repeat position ${position}`);
    }
  }
  return sorted;
}

/** The bitmask of `positions`. */
function maskOf(positions: readonly number[]): number {
  let mask = 0;
  for (const position of positions) mask |= 1 << position;
  return mask;
}
