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
 * This file holds the public replica, the commit protocol's handlers and the
 * timers that drive them. Around it: `recoverer.ts` (recovery's handlers),
 * `recovery.ts` and `quorum.ts` (the decisions, as pure functions),
 * `replica_state.ts` (the state the handlers share), `lead.ts` (leads and
 * deadlines), `timing.ts`, `progress.ts` (frontiers, prune floor),
 * `housekeeping.ts` (what is wanted and when to ask), `ready_builder.ts`
 * (the Ready and its record order), `lease_protocol.ts` (quorum leases) and
 * `quorum_read_protocol.ts` (reads through a majority, `quorum_read.ts`).
 *
 * @module
 */

import { type Access, batchAccesses } from "./conflict.ts";
import { type Deps, depsEqual, depsRaise, depsUnion, emptyInstanceDeps } from "./deps.ts";
import { CATCH_UP_RANGE, type CommitRequest } from "./housekeeping.ts";
import { type Instance, instanceKey, keyNumber, keyOwner, toRecord } from "./instance.ts";
import { type Lead, popCount, repliedMask } from "./lead.ts";
import {
  leaseGateOpen,
  leaseStillValid,
  noteLeaseReply,
  onLeaseGrant,
  onLeaseNotice,
  onLeaseRequest,
  readVerdict,
  sendLeaseNotices,
} from "./lease_protocol.ts";
import type { LeaseReadVerdict, LeaseStats } from "./lease_state.ts";
import type { QuorumReadOutcome, QuorumReadStats } from "./quorum_read.ts";
import {
  evaluateQuorumReads,
  onReadDeps,
  onReadDepsOk,
  quorumReadTick,
  startQuorumRead,
} from "./quorum_read_protocol.ts";
import { decidePreAccept, type QuorumSizes } from "./quorum.ts";
import { Recoverer } from "./recoverer.ts";
import {
  MAX_EARLY_PREACCEPTS,
  type ReplicaOptions,
  ReplicaState,
  type RestoredState,
} from "./replica_state.ts";
import type { ReplicaStats } from "./stats.ts";
import {
  type InstanceRecord,
  isInstanceMessage,
  type Message,
  NOP,
  type Payload,
  Phase,
  type Ready,
} from "./types.ts";

export { DEFAULT_TIMING, type TimingOptions } from "./timing.ts";
export type { RecoveryOutcomes, ReplicaStats } from "./stats.ts";
export type { ReplicaOptions, RestoredState } from "./replica_state.ts";

/**
 * How long a replica keeps what a peer needs after a snapshot it sent it
 * (`Replica.holdForSnapshot`), in frontier periods (at 5 ms ticks, 60 s):
 * time to transfer and install it.
 */
export const SNAPSHOT_HOLD_FRONTIERS = 600;

/**
 * A hold ends when its receiver has not been heard from for this many
 * frontier periods (5 s at 5 ms ticks): it died, or installs for that long
 * (a receiver does not gossip while it installs, about half a second per
 * 100,000 keys).
 */
export const SNAPSHOT_HOLD_SILENCE_FRONTIERS = 50;

/** Messages that only voters are sent: a learner ignores them. */
const VOTER_REQUESTS: ReadonlySet<Message<unknown>["type"]> = new Set([
  "preaccept",
  "accept",
  "recover",
  "validate",
  "readdeps",
]);

/** Replies that count towards a quorum: only a voter's are taken. */
const VOTER_REPLIES: ReadonlySet<Message<unknown>["type"]> = new Set([
  "preacceptok",
  "acceptok",
  "recoverok",
  "validateok",
  "readdepsok",
]);

/** Builds an EPaxos* replica. */
export class Replica<C> {
  readonly #s: ReplicaState<C>;
  readonly #recoverer: Recoverer<C>;

  /**
   * Creates replica `options.id`, empty or from `restored` (what its storage
   * held when it stopped).
   */
  constructor(options: ReplicaOptions<C>, restored?: RestoredState<C>) {
    this.#s = new ReplicaState(options);
    this.#recoverer = new Recoverer(this.#s, {
      commit: (instance, ballot, command, deps) => this.#commit(instance, ballot, command, deps),
      sendAccept: (lead, targets) => this.#sendAccept(lead, targets),
    });
    if (restored !== undefined) {
      const own = this.#s.restore(restored);
      // A learner leads nothing: it counts in no quorum. What of its own row
      // reached the voters (when it voted) is theirs to recover.
      if (this.#s.isVoter) {
        this.#resume(own);
        this.#recoverSkipped();
      }
    }
    this.#s.runExecutor();
  }

  /** This replica's index. */
  get id(): number {
    return this.#s.id;
  }

  /** Quorum sizes of this cluster, from its number of voters. */
  get quorum(): QuorumSizes {
    return this.#s.quorum;
  }

  /** Whether this replica votes; otherwise it is a learner, and cannot propose. */
  get isVoter(): boolean {
    return this.#s.isVoter;
  }

  /** The positions that vote, ascending. */
  get voters(): readonly number[] {
    return this.#s.voters;
  }

  /** The positions that are members (voters and learners), ascending. */
  get members(): readonly number[] {
    return this.#s.members;
  }

  /** The current tick. */
  get now(): number {
    return this.#s.tick;
  }

  /** Counters since this replica was created. */
  get stats(): Readonly<ReplicaStats> {
    return this.#s.stats;
  }

  /** Instances held in memory. */
  get instanceCount(): number {
    return this.#s.instances.size;
  }

  /**
   * Client commands carried by the instances held in memory (counted once per
   * instance, when its command is first learned). Instances leave once every
   * replica executed them, so this grows while a replica is down or behind,
   * up to {@linkcode ReplicaOptions.retentionCommands}; past it, this replica
   * prunes past the peers far behind (`retention.ts`).
   */
  get heldCommands(): number {
    return this.#s.progress.heldCommands;
  }

  /**
   * For each replica, how many instances this replica executed durably that
   * the replica has not reported executing (0 for this replica, and for a
   * position that is not a member): a member far behind, learner or voter,
   * holds back pruning everywhere.
   */
  executionLag(): number[] {
    return this.#s.progress.executionLag();
  }

  /**
   * Whether this replica holds a configuration change (a command that
   * `ConflictModel.fences`) not replaced by a Nop: it then ignores
   * PreAccepts of instances it has not seen, and its driver proposes nothing
   * until the change executes (or is replaced by a Nop).
   */
  get fenced(): boolean {
    return this.#s.fenced();
  }

  /** Own proposals not yet executed. */
  get inflightProposals(): number {
    return this.#s.ownProposals.size;
  }

  /**
   * The commands of own proposals not yet executed, oldest first: when a
   * configuration change ends the epoch, none of them can execute in it any
   * more (the fence), and the driver proposes them again in the next.
   */
  unexecutedProposals(): C[][] {
    return [
      ...[...this.#s.ownProposals.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, own]) => [...own.commands]),
      ...this.#s.deferredReproposals.map((own) => [...own.commands]),
    ];
  }

  /** Positions of this replica's epoch (its highest member id plus one). */
  get replicas(): number {
    return this.#s.n;
  }

  /** Instances known here and not yet committed. */
  get uncommittedCount(): number {
    return this.#s.uncommitted.size;
  }

  /** Known instances not yet executed here. */
  get pendingExecution(): number {
    return this.#s.executor.pendingCount;
  }

  /** Keys held exactly by the conflict index. */
  get indexedKeys(): number {
    return this.#s.index.size;
  }

  /** Per row, every instance up to this number is executed here (durably). */
  get executedFrontier(): Deps {
    return this.#s.progress.executed;
  }

  /** Per row, every instance up to this number is pruned here. */
  get pruneFloor(): Deps {
    return this.#s.progress.pruneFloor;
  }

  /**
   * The peers this replica pruned past (`retention.ts`): it can no longer send
   * them what they missed; they install a snapshot.
   */
  prunedPastPeers(): number[] {
    const peers: number[] = [];
    for (let peer = 0; peer < this.#s.n; peer++) {
      if (this.#s.progress.prunedPast(peer)) peers.push(peer);
    }
    return peers;
  }

  /**
   * The peers to install a snapshot from, best first, if peers pruned past
   * this replica (`retention.ts`); empty otherwise. Until it installs one, it
   * cannot execute what it missed.
   */
  snapshotSources(): readonly number[] {
    return this.#s.snapshotSources();
  }

  /**
   * Keeps, here, what peer `peer` needs after installing a snapshot of
   * `prefix` sent from here (`ProgressTracker.holdFor`), for at most
   * {@linkcode SNAPSHOT_HOLD_FRONTIERS} frontier periods, and while it is not
   * silent for {@linkcode SNAPSHOT_HOLD_SILENCE_FRONTIERS}.
   */
  holdForSnapshot(peer: number, prefix: Deps): void {
    const period = this.#s.timers.timing.frontierTicks;
    this.#s.progress.holdFor(peer, prefix, {
      sinceTick: this.#s.tick,
      untilTick: this.#s.tick + SNAPSHOT_HOLD_FRONTIERS * period,
      silenceTicks: SNAPSHOT_HOLD_SILENCE_FRONTIERS * period,
    });
  }

  /** Per row, the highest instance number known to exist. */
  get rowHighest(): Deps {
    return this.#s.housekeeping.rowHighest;
  }

  /** The record of instance `(owner, number)` as held in memory, if any. */
  instance(owner: number, number: number): InstanceRecord<C> | undefined {
    const instance = this.#s.instances.get(instanceKey(owner, number));
    return instance === undefined ? undefined : toRecord(instance);
  }

  /** Every instance held in memory (for checks and status). */
  *instances(): IterableIterator<InstanceRecord<C>> {
    for (const instance of this.#s.instances.values()) yield toRecord(instance);
  }

  /**
   * Sets the order in which thrifty quorums pick peers, closest live first
   * (SOSP'13 §4.4). Only voters are picked: others in `order` are skipped.
   * Voters missing from `order` come last, in their previous order.
   */
  setPeerOrder(order: readonly number[]): void {
    const seen = new Set<number>();
    const next: number[] = [];
    for (const peer of order) {
      if (peer === this.#s.id || !this.#s.isVoterAt(peer) || seen.has(peer)) continue;
      seen.add(peer);
      next.push(peer);
    }
    for (const peer of this.#s.peerOrder) if (!seen.has(peer)) next.push(peer);
    this.#s.peerOrder = next;
  }

  /** The current thrifty preference order (voters only). */
  get peerOrder(): readonly number[] {
    return this.#s.peerOrder;
  }

  /** Sets the measured round trip to `peer`, in ticks, which scales the timers that widen quorums. */
  setRoundTrip(peer: number, ticks: number): void {
    if (peer === this.#s.id || !this.#s.isMemberAt(peer) || !(ticks >= 0)) return;
    this.#s.timers.setRoundTrip(peer, ticks);
  }

  /**
   * Renders the replica's state as lines: a summary, then every instance that is
   * not finished here (uncommitted, or committed and waiting to execute) with
   * what this replica is doing about it. For failure reports and debugging.
   */
  describeState(limit = 50): string[] {
    return this.#s.describe(limit);
  }

  // ---------------------------------------------------------------------------
  // Inputs. Each ends by running the executor, so that the queries below only read.

  /**
   * Submits a batch of client commands as one new instance (EPaxos* `Submit`,
   * Figure 3 lines 8-10) and returns its id.
   *
   * @throws {Error} at a learner: it counts in no quorum, so it cannot lead one.
   */
  propose(commands: readonly C[]): { owner: number; number: number } {
    if (!this.#s.isVoter) {
      throw new Error(`A learner cannot propose: replica ${this.#s.id} is not a voter`);
    }
    if (commands.length === 0) throw new RangeError("A proposal needs at least one command");
    const id = this.#propose(commands, 0);
    this.#s.runExecutor();
    return id;
  }

  /**
   * Handles one message from a peer. Messages not addressed to this replica
   * are ignored, as are messages from a position that is not a member, the
   * commit protocol's and recovery's requests at a learner, and replies to
   * them from a peer that does not vote.
   */
  step(message: Message<C>): void {
    this.#step(message);
    this.#s.runExecutor();
  }

  /** Advances logical time by one tick: timeouts, retransmissions, gossip, recovery. */
  tick(): void {
    const tick = ++this.#s.tick;
    this.#leaseTick();
    for (const lead of this.#s.leads.due(tick)) this.#onLeadTimeout(lead);
    quorumReadTick(this.#s);
    const timing = this.#s.timers.timing;
    if (tick % timing.frontierTicks === 0) this.#gossipFrontier();
    if (tick % timing.scanTicks === 0) {
      this.#scan();
      // An instance a read waited on may have turned out not to conflict
      // (it became known), which no advance signals.
      evaluateQuorumReads(this.#s);
    }
    if (tick % timing.forgetTicks === 0) {
      this.#s.index.forgetBelow(this.#s.progress.rotateForgetFloor());
    }
    // Amortized: a sweep once the recent keys doubled.
    this.#s.index.maybeSweepRecent(this.#s.progress.executed);
    const deferred = this.#s.deferredReproposals;
    if (deferred.length > 0 && !this.#s.fenced()) {
      // The change that fenced this replica became a Nop: its epoch goes on.
      for (const own of deferred.splice(0)) {
        this.#s.stats.reproposals++;
        this.#propose(own.commands, own.reproposals);
      }
    }
    this.#s.runExecutor();
  }

  /**
   * Takes the driver's clock (monotonic, ms): leases measure time with it.
   * Call before each step and tick; the core never reads a clock itself.
   */
  observeTime(now: number): void {
    this.#s.leases.observe(now);
  }

  /**
   * Whether a read of `accesses` may be served from this replica's state at
   * `now` under its leases (`lease.ts`): "serve", "hold" (a write to the keys
   * is pending here; ask again once it executed, with a deadline), or
   * "refuse" (read through the protocol). A driver that serves must read the
   * state, then read the clock and check {@linkcode Replica.leaseStillValid}.
   */
  localRead(accesses: readonly Access[], now: number): LeaseReadVerdict {
    return readVerdict(this.#s, accesses, now);
  }

  /** Whether the lease that let a local read through still holds at `now` (read after the state). */
  leaseStillValid(now: number): boolean {
    return leaseStillValid(this.#s, now);
  }

  /** Lease counters and, per grantor, how long its grant has left (ms). */
  leaseStatus(now: number): LeaseStats & { remainingMs: number[]; notices: number } {
    return {
      ...this.#s.leases.stats,
      remainingMs: this.#s.leases.remaining(now),
      notices: this.#s.leases.noticeCount,
    };
  }

  /**
   * Starts a linearizable read of `accesses` through a majority of voters
   * (`quorum_read.ts`), given up after `options.timeoutTicks`. Returns its
   * number, or undefined when too many reads are in flight. Its outcome
   * comes from {@linkcode Replica.takeQuorumReadOutcomes}: "serve" (read
   * the state now) or "fallback" (propose it as a command).
   */
  startQuorumRead(
    accesses: readonly Access[],
    options: { readonly timeoutTicks: number },
  ): number | undefined {
    const seq = startQuorumRead(this.#s, accesses, options.timeoutTicks);
    this.#s.runExecutor();
    return seq;
  }

  /**
   * The outcomes of quorum reads since the last call, oldest first. A
   * "serve" stays true: the applied state only grows, by committed
   * instances, so reading it later is reading it at a later point.
   */
  takeQuorumReadOutcomes(): QuorumReadOutcome[] {
    return this.#s.quorumReads.takeOutcomes();
  }

  /** Forgets quorum read `seq` (its caller gave up on it). */
  cancelQuorumRead(seq: number): void {
    this.#s.quorumReads.cancel(seq);
  }

  /** Quorum read counters, and the reads in flight. */
  quorumReadStatus(): QuorumReadStats & { inFlight: number } {
    return { ...this.#s.quorumReads.stats, inFlight: this.#s.quorumReads.size };
  }

  /**
   * As a grantor, per holder, until when (own clock, ms) it names the holder
   * in its replies: the simulator checks that every holder's lease ends first.
   */
  leasePromises(): number[] {
    return this.#s.leases.promises();
  }

  #leaseTick(): void {
    const s = this.#s;
    if (!s.leases.enabled) return;
    const seq = s.leases.dueRequest();
    if (seq !== undefined) {
      s.sendTo(s.voterPeers, (to) => ({
        type: "leaserequest",
        from: s.id,
        to,
        seq,
        ...(s.leases.takeHeard(to) ? { heard: true } : {}),
      }), { early: true });
    }
    if (s.leaseWaiting.size === 0) return;
    for (const lead of [...s.leaseWaiting]) this.#retryLeaseGate(lead);
  }

  // ---------------------------------------------------------------------------
  // Outputs.

  /** Whether {@linkcode Replica.ready} has anything to hand out. Only reads. */
  hasReady(): boolean {
    return this.#s.out.hasAny();
  }

  /**
   * Whether the next Ready holds anything but executed markers. A Ready of
   * markers only gates no message and answers no client (only the durable
   * executed frontier, and so pruning, waits for it), so a driver may hold it
   * back briefly and let it ride with the next storage commit. Only reads: the
   * executor already ran at the end of the input that changed the state.
   */
  hasUrgentReady(): boolean {
    return this.#s.out.hasUrgent();
  }

  /**
   * Hands out everything to do. The driver must persist `records`, then send
   * `messages`, then apply `executions`, then call {@linkcode Replica.advance},
   * before asking again. Stepping the replica while a Ready is in flight is fine.
   */
  ready(): Ready<C> {
    const ready = this.#s.out.take((instance) => this.#s.instances.get(instance.key) === instance);
    this.#s.ownVotesInFlight = this.#s.ownVotesPending;
    this.#s.ownVotesPending = [];
    return ready;
  }

  /**
   * Acknowledges the last Ready: its records are durable, its messages sent and
   * its executions applied (their effects go into the next Ready's persist).
   */
  advance(): void {
    const inFlight = this.#s.out.advance();
    if (inFlight.wroteRecords) this.#s.earlyPreAccepts = true;
    this.#s.executionsApplied += inFlight.executions.length;
    this.#countOwnVotes();
    for (const execution of inFlight.executions) {
      const key = instanceKey(execution.owner, execution.number);
      const instance = this.#s.instances.get(key);
      if (instance !== undefined) {
        instance.applied = true;
        this.#s.out.markExecuted(instance);
      }
      this.#s.leases.forgetNotice(key);
    }
    for (const instance of inFlight.markers) {
      this.#s.progress.noteDurablyExecuted(instance.owner, instance.number);
    }
    if (inFlight.markers.length > 0) this.#s.maybePrune();
    this.#s.runExecutor();
    // Executions were applied: reads waiting on them may be served.
    evaluateQuorumReads(this.#s);
  }

  #step(message: Message<C>): void {
    const s = this.#s;
    if (message.to !== s.id || message.from === s.id) return;
    if (!s.isMemberAt(message.from)) return;
    // A learner is sent none of these (a sender that takes it for a voter
    // is mistaken), and a non-voter's reply never counts towards a quorum.
    if (VOTER_REQUESTS.has(message.type) && !s.isVoter) return;
    if (VOTER_REPLIES.has(message.type) && !s.isVoterAt(message.from)) return;
    if (isInstanceMessage(message)) {
      // An instance at or below the prune floor executed on every replica,
      // the sender included: whatever the message says is stale. Handling it
      // would recreate the instance and run it again.
      if (s.progress.isPruned(message.owner, message.number)) return;
      s.housekeeping.noteExists(message.owner, message.number);
    }
    const recoverer = this.#recoverer;
    switch (message.type) {
      case "preaccept":
        return this.#onPreAccept(message);
      case "preacceptok":
        return this.#onPreAcceptOk(message);
      case "accept":
        return this.#onAccept(message);
      case "acceptok":
        return this.#onAcceptOk(message);
      case "commit":
        return this.#onCommit(message);
      case "recover":
        return recoverer.onRecover(message.from, message.owner, message.number, message.ballot);
      case "recoverok":
        return recoverer.onRecoverOk(message);
      case "validate":
        return recoverer.onValidate(message);
      case "validateok":
        return recoverer.onValidateOk(message.from, message.owner, message.number, message);
      case "waiting":
        return recoverer.onWaiting(message.owner, message.number, message.rmaxSize);
      case "nack":
        return recoverer.onNack(message.owner, message.number, message.ballot);
      case "commitrequest":
        return this.#onCommitRequest(message.from, message.owner, message.number, message.count);
      case "frontier":
        return this.#onFrontier(message.from, message.executed, message.pruned, message.highest);
      case "leaserequest":
        return onLeaseRequest(s, message);
      case "leasegrant":
        return onLeaseGrant(s, message);
      case "leasenotice":
        return onLeaseNotice(s, message);
      case "leaseack":
        return this.#onLeaseAck(message.from, message.owner, message.number);
      case "readdeps":
        return onReadDeps(s, message.from, message.seq, message.accesses);
      case "readdepsok":
        return onReadDepsOk(s, message.from, message.seq, message.deps);
    }
  }

  // ---------------------------------------------------------------------------
  // Commit protocol (EPaxos* Figure 3).

  /**
   * The coordinator's own PreAccepted records of the Ready just advanced are
   * durable: its votes count now (Raft thesis §10.2.1), and may decide.
   */
  #countOwnVotes(): void {
    const votes = this.#s.ownVotesInFlight;
    if (votes.length === 0) return;
    this.#s.ownVotesInFlight = [];
    for (const lead of votes) {
      lead.ownVotePending = false;
      const instance = lead.instance;
      if (this.#s.leads.get(instance.key) !== lead || lead.stage !== "preaccept") continue;
      if (instance.ballot !== 0 || instance.phase !== Phase.PreAccepted) continue;
      lead.preAcceptReplies[this.#s.id] = instance.initialDeps;
      this.#decidePreAccept(lead, false);
    }
  }

  #propose(commands: readonly C[], reproposals: number): { owner: number; number: number } {
    const number = ++this.#s.lastNumber;
    const instance = this.#s.create(this.#s.id, number);
    const accesses = batchAccesses(this.#s.conflicts, commands);
    // D0 = ConflictingIds(p, c), plus our prune floor: instances every replica
    // executed, so peers that forgot their keys still report nothing new. Its
    // `seq` is one more than any conflict's we know (SOSP'13 Figure 2, line 3).
    const deps = emptyInstanceDeps(this.#s.n);
    this.#s.index.collect(accesses, deps);
    depsRaise(deps, this.#s.progress.pruneFloor);
    instance.phase = Phase.PreAccepted;
    instance.command = commands;
    instance.initialCommand = commands;
    instance.deps = deps;
    instance.initialDeps = deps;
    this.#s.learn(instance, commands, accesses);
    this.#s.out.markDirty(instance);
    this.#s.uncommitted.add(instance);
    this.#s.ownProposals.set(instance.key, { commands, reproposals });
    const lead = this.#s.leads.start(instance, 0, "preaccept");
    if (this.#s.earlyPreAccepts && this.#s.ownVotesPending.length < MAX_EARLY_PREACCEPTS) {
      // The PreAccepts leave while our record is written (Raft thesis
      // §10.2.1); our own vote counts once it is durable (#countOwnVotes).
      // Peers still persist before they reply.
      lead.ownVotePending = true;
      this.#s.ownVotesPending.push(lead);
      this.#sendPreAccept(lead, this.#s.pick(this.#s.quorum.preAcceptTargets, 0), true);
    } else {
      lead.preAcceptReplies[this.#s.id] = deps;
      this.#sendPreAccept(lead, this.#s.pick(this.#s.quorum.preAcceptTargets, 0));
    }
    sendLeaseNotices(this.#s, lead, lead.contacted);
    return { owner: this.#s.id, number };
  }

  #sendPreAccept(lead: Lead<C>, targets: number, early = false): void {
    const instance = lead.instance;
    this.#s.sendTo(targets, (to) => ({
      type: "preaccept",
      from: this.#s.id,
      to,
      owner: instance.owner,
      number: instance.number,
      command: instance.command!,
      deps: instance.initialDeps!,
    }), { early });
    lead.contacted |= targets;
    this.#s.setDeadline(lead, this.#s.timers.widenTimeout(lead.contacted));
  }

  /** `HandlePreAccept` (lines 11-18). */
  #onPreAccept(message: Message<C> & { type: "preaccept" }): void {
    if (message.command === NOP) return;
    // The fence (a configuration change held here, not replaced by a Nop):
    // a first-round PreAccept of an instance this replica holds no record of
    // is ignored, as if lost (EPaxos* tolerates that). Any instance that
    // commits then went through a PreAccept quorum that saw it before the
    // fencing instance, and intersects that one's quorum in a replica that
    // reported it: it is in the fencing instance's dependencies, and
    // executes before it (membership design, "fence by ignoring").
    if (
      !this.#s.instances.has(instanceKey(message.owner, message.number)) && this.#s.fenced() &&
      !message.command.some((command) => this.#s.conflicts.fences!(command))
    ) {
      this.#s.stats.fencedPreAccepts++;
      // Only recovery can finish it now (as a Nop, or with dependencies
      // that order it after the change): start that soon, not after the
      // recovery delay, so the change is not held up by it.
      this.#s.housekeeping.wantFenced(instanceKey(message.owner, message.number), this.#s.tick);
      return;
    }
    const instance = this.#s.getOrCreate(message.owner, message.number);
    if (instance.phase === Phase.Committed) return this.#s.sendCommit(instance, message.from);
    if (instance.ballot !== 0) return this.#s.sendNack(instance, message.from);
    if (instance.phase !== Phase.Initial) {
      // A retransmitted PreAccept: `ApplyPreAccept` is disabled, but the
      // coordinator may have lost our reply, so repeat it.
      if (instance.phase === Phase.PreAccepted && instance.deps !== undefined) {
        this.#s.reply(message.from, instance, { type: "preacceptok", deps: instance.deps });
      }
      return;
    }
    const accesses = batchAccesses(this.#s.conflicts, message.command);
    const local = [...message.deps];
    this.#s.index.collect(accesses, local);
    const deps = depsEqual(local, message.deps) ? message.deps : local;
    instance.phase = Phase.PreAccepted;
    instance.command = message.command;
    instance.initialCommand = message.command;
    instance.initialDeps = message.deps;
    instance.deps = deps;
    instance.sinceTick = this.#s.tick;
    this.#s.learn(instance, message.command, accesses);
    this.#s.out.markDirty(instance);
    this.#s.uncommitted.add(instance);
    this.#s.reply(message.from, instance, { type: "preacceptok", deps });
  }

  /** `HandlePreAcceptOK` (lines 19-25). */
  #onPreAcceptOk(message: Message<C> & { type: "preacceptok" }): void {
    const lead = this.#s.leads.get(instanceKey(message.owner, message.number));
    if (lead === undefined || lead.stage !== "preaccept") return;
    const instance = lead.instance;
    if (instance.ballot !== 0 || instance.phase !== Phase.PreAccepted) return;
    lead.preAcceptReplies[message.from] = message.deps;
    noteLeaseReply(this.#s, lead, message.from, message);
    this.#decidePreAccept(lead, false);
  }

  /** A lease holder knows of the write `lead` coordinates: its decision may go on. */
  #onLeaseAck(from: number, owner: number, number: number): void {
    this.#s.leases.heardFrom(from);
    const lead = this.#s.leads.get(instanceKey(owner, number));
    if (lead === undefined) return;
    lead.leaseKnown |= 1 << from;
    if (this.#s.leaseWaiting.has(lead)) this.#retryLeaseGate(lead);
  }

  /** Takes again the decision a lease gate held back. */
  #retryLeaseGate(lead: Lead<C>): void {
    this.#s.leaseWaiting.delete(lead);
    if (!this.#s.leads.isCurrent(lead)) return;
    if (lead.stage === "preaccept") return this.#decidePreAccept(lead, lead.leaseTimedOut);
    if (lead.stage === "accept") return this.#tryCommitAccepted(lead);
  }

  /** Tallies the PreAcceptOK replies and carries out `decidePreAccept`. */
  #decidePreAccept(lead: Lead<C>, timedOut: boolean): void {
    // Our own vote is not durable yet: nothing is decided without it.
    if (lead.ownVotePending) return;
    const instance = lead.instance;
    const initialDeps = instance.initialDeps!;
    let replies = 0;
    let matching = 0;
    let outstanding = 0;
    for (let replica = 0; replica < this.#s.n; replica++) {
      const deps = lead.preAcceptReplies[replica];
      if (deps === undefined) {
        if ((lead.contacted & (1 << replica)) !== 0) outstanding++;
        continue;
      }
      replies++;
      if (depsEqual(deps, initialDeps)) matching++;
    }
    const tally = { matching, replies, outstanding, timedOut, widened: lead.widened };
    switch (decidePreAccept(tally, this.#s.quorum)) {
      case "fast":
        // Quorum leases: every holder named by the quorum knows of the write first.
        if (!leaseGateOpen(this.#s, lead, timedOut)) return;
        this.#s.stats.fastCommits++;
        instance.commitMustPersist = true;
        this.#commit(instance, 0, instance.command!, initialDeps);
        this.#s.broadcastCommit(instance);
        return;
      case "slow":
        return this.#startSlowPath(lead);
      case "widen":
        // Too few peers asked to ever form a quorum: ask the rest now.
        lead.widened = true;
        return this.#sendPreAccept(lead, this.#s.voterPeers & ~lead.contacted);
      case "wait":
        return;
    }
  }

  /** Slow path: `ApplyAccept(p, p, 0, id, c, Dfinal)` with the union of the replies. */
  #startSlowPath(lead: Lead<C>): void {
    const instance = lead.instance;
    let deps: Deps = instance.initialDeps!;
    let replied = 0;
    for (let replica = 0; replica < this.#s.n; replica++) {
      const reply = lead.preAcceptReplies[replica];
      if (reply === undefined) continue;
      deps = depsUnion(deps, reply);
      if (replica !== this.#s.id) replied |= 1 << replica;
    }
    instance.phase = Phase.Accepted;
    instance.deps = deps;
    instance.acceptedBallot = 0;
    this.#s.out.markDirty(instance);
    this.#s.leads.setStage(lead, "accept");
    lead.acks = 1 << this.#s.id;
    lead.contacted = 0;
    lead.widened = false;
    lead.attempts = 0;
    // Thrifty Accept: the n-f-1 closest peers, preferring those that just answered.
    this.#sendAccept(lead, this.#s.pick(this.#s.quorum.acceptTargets, 0, replied));
  }

  #sendAccept(lead: Lead<C>, targets: number): void {
    const instance = lead.instance;
    this.#s.sendTo(targets, (to) => ({
      type: "accept",
      from: this.#s.id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: lead.ballot,
      command: instance.command!,
      deps: instance.deps!,
    }));
    lead.contacted |= targets;
    this.#s.setDeadline(lead, this.#s.timers.widenTimeout(lead.contacted));
  }

  /** `HandleAccept` (lines 26-33). */
  #onAccept(message: Message<C> & { type: "accept" }): void {
    const instance = this.#s.getOrCreate(message.owner, message.number);
    // Departure: a committed replica keeps its decision and answers with it.
    // The spec's guard (`bal = b => phase # committed`) still lets a higher
    // ballot overwrite a commit with the same value; we never un-commit.
    if (instance.phase === Phase.Committed) return this.#s.sendCommit(instance, message.from);
    if (instance.ballot > message.ballot) return this.#s.sendNack(instance, message.from);
    this.#s.preempt(instance, message.ballot);
    instance.ballot = message.ballot;
    instance.acceptedBallot = message.ballot;
    instance.command = message.command;
    instance.deps = message.deps;
    instance.phase = Phase.Accepted;
    instance.sinceTick = this.#s.tick;
    this.#s.learn(instance, message.command);
    this.#s.out.markDirty(instance);
    this.#s.uncommitted.add(instance);
    this.#s.reply(message.from, instance, { type: "acceptok", ballot: message.ballot });
  }

  /** `HandleAcceptOK` (lines 34-36). */
  #onAcceptOk(message: Message<C> & { type: "acceptok" }): void {
    const { from, ballot } = message;
    const lead = this.#s.leads.get(instanceKey(message.owner, message.number));
    if (lead === undefined || lead.stage !== "accept" || lead.ballot !== ballot) return;
    const instance = lead.instance;
    if (instance.ballot !== ballot || instance.phase !== Phase.Accepted) return;
    lead.acks |= 1 << from;
    noteLeaseReply(this.#s, lead, from, message);
    this.#tryCommitAccepted(lead);
  }

  /** Commits `lead`'s instance once an Accept quorum answered and the lease gate is open. */
  #tryCommitAccepted(lead: Lead<C>): void {
    const instance = lead.instance;
    const ballot = lead.ballot;
    if (instance.ballot !== ballot || instance.phase !== Phase.Accepted) return;
    if (popCount(lead.acks) < this.#s.quorum.slowQuorumSize) return;
    if (!leaseGateOpen(this.#s, lead, false)) return;
    if (ballot === 0) {
      this.#s.stats.slowCommits++;
    } else {
      this.#s.stats.recoveriesCommitted++;
    }
    this.#commit(instance, ballot, instance.command!, instance.deps!);
    this.#s.broadcastCommit(instance);
  }

  /** `HandleCommit` (lines 37-42). */
  #onCommit(message: Message<C> & { type: "commit" }): void {
    const instance = this.#s.getOrCreate(message.owner, message.number);
    if (instance.phase === Phase.Committed) return;
    const leading = this.#s.leads.get(instance.key);
    // Departure: the spec's `ApplyCommit` requires `bal = b`. A committed value
    // is unique (Agreement), so a replica records it whatever its ballot.
    this.#commit(instance, message.ballot, message.command, message.deps);
    // A recovery that learns the decision from a committed peer passes it on:
    // the peers that promised its ballot are waiting for it.
    if (leading !== undefined && leading.ballot > 0) this.#s.broadcastCommit(instance);
  }

  #commit(instance: Instance<C>, ballot: number, command: Payload<C>, deps: Deps): void {
    instance.phase = Phase.Committed;
    if (ballot > instance.ballot) instance.ballot = ballot;
    instance.acceptedBallot = ballot;
    instance.command = command;
    instance.deps = deps;
    this.#s.learn(instance, command);
    this.#s.out.markDirty(instance);
    this.#s.leads.drop(instance.key);
    this.#s.uncommitted.delete(instance);
    this.#s.housekeeping.unwant(instance.key);
    this.#s.waitingReports.delete(instance.key);
    this.#s.nackedBallots.delete(instance.key);
    this.#s.executor.noteCommitted(instance);
    const own = this.#s.ownProposals.get(instance.key);
    if (own !== undefined) this.#s.out.decide({ number: instance.number, command });
    if (own !== undefined && command === NOP) {
      // Our proposal was replaced by a Nop in recovery: it never executes, so
      // proposing the same commands again keeps at-most-once semantics.
      this.#s.ownProposals.delete(instance.key);
      if (
        own.reproposals < this.#s.maxReproposals && this.#s.fenced() &&
        !own.commands.some((command) => this.#s.conflicts.fences!(command))
      ) {
        // Fenced: no new instance may start in this epoch (see `fenced`).
        this.#s.deferredReproposals.push({
          commands: own.commands,
          reproposals: own.reproposals + 1,
        });
      } else if (own.reproposals < this.#s.maxReproposals) {
        this.#s.stats.reproposals++;
        this.#propose(own.commands, own.reproposals + 1);
      } else {
        this.#s.out.abandon({
          commands: own.commands,
          reason: `replaced by a Nop ${own.reproposals + 1} times`,
        });
      }
    }
    this.#recoverer.reevaluateWaiting(instance.key);
  }

  /**
   * Recovers, at once and together, the numbers of its own row `restore`
   * skipped: each may have reached a peer in an early PreAccept before the
   * crash, so only recovery may decide it (a Nop where nothing arrived). Every
   * later instance of this row depends on them through the row's prefix.
   */
  #recoverSkipped(): void {
    const skipped = this.#s.skippedNumbers;
    if (skipped === undefined) return;
    for (let number = skipped.from; number <= skipped.to; number++) {
      const instance = this.#s.getOrCreate(this.#s.id, number);
      if (instance.phase !== Phase.Committed) this.#recoverer.start(instance);
    }
  }

  /** Resumes this replica's own unfinished proposals after a restart. */
  #resume(own: readonly Instance<C>[]): void {
    // At ballot 0: same value, same ballot, so re-sending is what a slow
    // coordinator would do.
    for (const instance of own) {
      if (instance.phase === Phase.PreAccepted) {
        const lead = this.#s.leads.start(instance, 0, "preaccept");
        lead.preAcceptReplies[this.#s.id] = instance.initialDeps;
        lead.widened = true;
        this.#sendPreAccept(lead, this.#s.voterPeers);
      } else if (instance.phase === Phase.Accepted) {
        const lead = this.#s.leads.start(instance, 0, "accept");
        lead.acks = 1 << this.#s.id;
        lead.widened = true;
        this.#sendAccept(lead, this.#s.voterPeers);
      }
    }
  }

  #onCommitRequest(from: number, owner: number, number: number, count: number): void {
    const last = number + Math.min(Math.max(count, 1), CATCH_UP_RANGE) - 1;
    for (let current = number; current <= last; current++) {
      const instance = this.#s.instances.get(instanceKey(owner, current));
      if (instance?.phase === Phase.Committed) this.#s.sendCommit(instance, from);
    }
  }

  // ---------------------------------------------------------------------------
  // Progress gossip and housekeeping.

  #gossipFrontier(): void {
    const executed = [...this.#s.progress.executed];
    const pruned = [...this.#s.progress.pruneFloor];
    // Numbers allocated since the last Ready are persisted with the next one,
    // before this gossip leaves, so the current number is safe to announce.
    const highest = this.#s.lastNumber;
    this.#s.sendTo(this.#s.memberPeers, (to) => ({
      type: "frontier",
      from: this.#s.id,
      to,
      executed,
      pruned,
      highest,
    }));
  }

  #onFrontier(from: number, executed: Deps, pruned: Deps, highest: number): void {
    this.#s.progress.notePeer(from, executed, pruned, this.#s.tick);
    this.#s.housekeeping.noteExists(from, highest);
    this.#s.maybePrune();
  }

  /** Carries out the housekeeping scan's plan: commit requests, then recoveries. */
  #scan(): void {
    const s = this.#s;
    const plan = s.housekeeping.scan(s.tick, {
      waitedOn: s.executor.waitedOn(),
      knownPrefix: s.executor.knownPrefix,
      uncommitted: s.uncommitted,
      isLeading: (key) => s.leads.has(key),
      isCommitted: (key) => s.instances.get(key)?.phase === Phase.Committed,
    });
    for (const request of plan.gapRequests) this.#sendCommitRequest(request);
    // A learner never recovers (it counts in no quorum): it keeps asking the
    // members for the commits it wants.
    for (const key of s.isVoter ? plan.recover : []) {
      this.#recoverer.start(s.getOrCreate(keyOwner(key), keyNumber(key)));
    }
    for (const request of plan.requests) this.#sendCommitRequest(request);
  }

  #sendCommitRequest(request: CommitRequest): void {
    // Every member answers from what it committed, learners included.
    this.#s.sendTo(this.#s.memberPeers, (to) => ({
      type: "commitrequest",
      from: this.#s.id,
      to,
      owner: request.owner,
      number: request.number,
      count: request.count,
    }));
  }

  // ---------------------------------------------------------------------------
  // Timers.

  #onLeadTimeout(lead: Lead<C>): void {
    const s = this.#s;
    const instance = lead.instance;
    if (!s.leads.isCurrent(lead)) return;
    switch (lead.stage) {
      case "preaccept": {
        if (instance.ballot !== 0 || instance.phase !== Phase.PreAccepted) {
          return s.leads.drop(instance.key);
        }
        let replies = 0;
        for (const reply of lead.preAcceptReplies) if (reply !== undefined) replies++;
        if (replies >= s.quorum.slowQuorumSize) return this.#decidePreAccept(lead, true);
        if (!lead.widened) {
          // A chosen peer is silent: widen the thrifty set to everyone.
          lead.widened = true;
          return this.#sendPreAccept(lead, s.voterPeers & ~lead.contacted);
        }
        const silent = s.voterPeers & ~repliedMask(lead.preAcceptReplies, s.n);
        lead.attempts++;
        this.#sendPreAccept(lead, silent);
        s.setDeadline(lead, s.timers.retransmitTimeout(lead.attempts));
        return;
      }
      case "accept": {
        if (instance.ballot !== lead.ballot || instance.phase !== Phase.Accepted) {
          return s.leads.drop(instance.key);
        }
        if (!lead.widened) {
          lead.widened = true;
          return this.#sendAccept(lead, s.voterPeers & ~lead.contacted);
        }
        lead.attempts++;
        this.#sendAccept(lead, s.voterPeers & ~lead.acks);
        s.setDeadline(lead, s.timers.retransmitTimeout(lead.attempts));
        return;
      }
      case "recover":
      case "validate":
      case "waiting":
        // Lost messages, a crashed quorum member, or a competing recovery:
        // back off, then try again at a higher ballot.
        s.leads.drop(instance.key);
        return s.housekeeping.deferRecovery(instance.key, s.tick);
    }
  }
}
