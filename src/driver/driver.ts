/**
 * The driver: one replica's core, storage, transport, clock and key-value
 * state, run in the order the core requires (etcd raft's `Ready` contract).
 * It takes one Ready at a time (./ready_loop.ts): sends the messages that may
 * leave early (the coordinator's own PreAccepts), persists the records in one
 * storage commit (group commit), then sends the rest of its messages,
 * executes its commands (answering their clients: the answer rule of
 * ./answer.ts) and advances. No message but the early ones leaves before the
 * records it depends on are durable.
 *
 * The same code runs in the replica process, the simulator, the scenario
 * tests and `bench:core`; only the edges differ (storage, transport, clock
 * with timers, randomness).
 *
 * Its parts, each in its own file: the Ready loop (`ready_loop.ts`); client
 * commands, batched and answered (`proposals.ts`, `waiters.ts`,
 * `answer.ts`), once admitted (`admission.ts`); the peer order
 * (`peer_order.ts`); epochs (`epoch.ts`), this process's membership and its
 * peers' epochs (`membership.ts`), and retirement (`retirement.ts`,
 * `epoch_watch.ts`);
 * snapshots given to peers (`peer_snapshots.ts`, `snapshot_captures.ts`),
 * fetched (`snapshot_fetcher.ts`) and installed (`state_switch.ts`); the
 * state rebuilt from storage (`open_state.ts`). This file composes them, and
 * holds the core and the key-value state, which an epoch's end or an install
 * replaces.
 *
 * @module
 */

import type { Access } from "../core/conflict.ts";
import { type Configuration, describeConfiguration } from "../core/configuration.ts";
import { describeExecution, describeMessage } from "../core/describe.ts";
import { instanceKey } from "../core/instance.ts";
import type { Replica, ReplicaStats } from "../core/replica.ts";
import { NOP, type Ready } from "../core/types.ts";
import {
  describeKvCommand,
  type KvCommand,
  type KvCommandInput,
  kvConflicts,
  type ReconfCommand,
} from "../kv/commands.ts";
import type { AppliedInstance, KvResult, KvStateMachine } from "../kv/state_machine.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { LoadedState, ReplicaSnapshot, ReplicaStorage } from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { BatchRefusal, PeerStats, PeerTransport } from "../transport/types.ts";
import { OutcomeUnknownError, UnavailableError } from "../errors.ts";
import { admissionProblem } from "./admission.ts";
import { type AppliedSet, snapshotAt } from "./applied.ts";
import { SnapshotCaptures } from "./snapshot_captures.ts";
import { nextEpochSnapshot, reconfToNext } from "./epoch.ts";
import { EpochWatch } from "./epoch_watch.ts";
import { SnapshotFetcher } from "./snapshot_fetcher.ts";
import { type ExpiryMetrics, ExpiryProposer } from "./expiry.ts";
import { type DriverMetrics, newDriverMetrics } from "./metrics.ts";
import { openState } from "./open_state.ts";
import { type LeaseReadMetrics, LeaseReads } from "./lease_reads.ts";
import { type QuorumReadMetrics, QuorumReads } from "./quorum_reads.ts";
import type { LeaseRule } from "../core/lease.ts";

/** What {@linkcode ReplicaDriver.quorumReadStatus} reports. */
export interface QuorumReadStatus extends QuorumReadMetrics {
  /** Reads waiting now. */
  readonly waiting: number;
  /** Reads served after waiting for an instance named by the majority to apply here. */
  readonly waitedOnInstances: number;
  /** `readdeps` this replica answered as a voter. */
  readonly answeredForPeers: number;
  /** Read requests sent again (to further or silent voters). */
  readonly retransmissions: number;
}

/**
 * What a listener of {@linkcode ReplicaDriver.onApplied} hears: one instance
 * applied to the key-value state (its net mutations, and its results when
 * this replica proposed it), or the whole state replaced (a snapshot
 * installed, an epoch started): any key may have changed.
 */
export type AppliedChange =
  | { readonly kind: "instance"; readonly applied: AppliedInstance }
  | { readonly kind: "replaced" };

/** What {@linkcode ReplicaDriver.leaseStatus} reports. */
export interface LeaseStatus {
  /** Whether the configuration leases any key. */
  readonly configured: boolean;
  /** Lease length (ms) and declared drift, when configured. */
  readonly leaseMs?: number;
  readonly drift?: number;
  /** The lease rules, when configured. */
  readonly rules?: readonly LeaseRule[];
  /** Whether this replica holds a majority of caught-up grants now. */
  readonly valid: boolean;
  /** Per voter id, how long its grant to this replica has left (ms). */
  readonly grantRemainingMs: Record<string, number>;
  /** Grants given as a grantor and received as a holder. */
  readonly grants: {
    readonly given: number;
    readonly received: number;
    /** Requests left unanswered: their holder left a write of this replica unacknowledged. */
    readonly withheld: number;
  };
  /** Writes this replica coordinated that waited on holders, and those decided after promises ran out. */
  readonly writes: {
    readonly heldForHolders: number;
    readonly released: number;
    readonly heldMs: number;
  };
  /** Writes told of by notice: pending here, acknowledged, refused (too many). */
  readonly notices: {
    readonly pending: number;
    readonly acknowledged: number;
    readonly refused: number;
  };
  /** Local reads, held reads and fallbacks. */
  readonly reads: LeaseReadMetrics & { readonly held: number };
  /** Local reads over every linearizable read answered (null before any). */
  readonly localReadRatio: number | null;
}
import {
  DEFAULT_MAX_HELD_COMMANDS,
  DEFAULT_SNAPSHOT_FETCH_TIMEOUT_MS,
  type ReplicaDriverOptions,
  type SnapshotCapture,
} from "./options.ts";
import { Membership } from "./membership.ts";
import { reachableVoters, updatePeerOrder } from "./peer_order.ts";
import { takeSnapshotFor } from "./peer_snapshots.ts";
import { Proposals } from "./proposals.ts";
import { ReadyLoop } from "./ready_loop.ts";
import { type Carried, StateSwitch } from "./state_switch.ts";
import type { Answer } from "./waiters.ts";

export {
  DEFAULT_MAX_HELD_COMMANDS,
  DEFAULT_SNAPSHOT_FETCH_TIMEOUT_MS,
  hardHeldLimit,
  MAX_SNAPSHOTS_IN_PROGRESS,
  NODE_TIMING,
  nodeTiming,
  type ReplicaDriverObserver,
  type ReplicaDriverOptions,
  type SnapshotCapture,
} from "./options.ts";

export { AHEAD_GRACE_MS, EPOCH_BASE_KEPT_MS } from "./membership.ts";

/** One replica, driving its core. */
export class ReplicaDriver {
  /** This replica's id. */
  readonly id: number;
  /** Counters and histograms. */
  readonly metrics: DriverMetrics = newDriverMetrics();
  readonly #options: ReplicaDriverOptions;
  #core: Replica<KvCommand>;
  #kv: KvStateMachine;
  /** The instances whose effects `#kv` holds. */
  #applied: AppliedSet;
  /** Snapshots taken here, by the request id of their barrier, until it executes. */
  readonly #snapshotCaptures = new SnapshotCaptures();
  /** This process's place in the cluster, and what it knows of its peers'. */
  readonly #membership: Membership;
  /** Replaces the state by storage's after an install or at an epoch's start. */
  readonly #switch: StateSwitch;
  /** A configuration change executed in the component being executed: the epoch ends at its end. */
  #endingEpoch: ReconfCommand | undefined;
  /** Fetches snapshots when peers pruned past this replica. */
  readonly #snapshotFetcher: SnapshotFetcher;
  /** Learns of later epochs that no longer have this process as a member. */
  readonly #epochWatch: EpochWatch;
  readonly #storage: ReplicaStorage<KvCommand>;
  readonly #transport: PeerTransport<KvCommand>;
  readonly #clock: Clock;
  readonly #tickMs: number;
  readonly #startedMs: number;
  /** Client commands waiting to be proposed or answered. */
  readonly #proposals: Proposals;
  /** Takes the core's Readies. */
  readonly #loop: ReadyLoop;
  /** Linearizable reads served locally under quorum leases. */
  readonly #leaseReads: LeaseReads;
  /** Linearizable reads through a majority of voters, when no lease serves them. */
  readonly #quorumReads: QuorumReads;
  /** Proposes the deletes of expired keys (./expiry.ts). */
  readonly #expiry: ExpiryProposer;
  /** Listeners of {@linkcode ReplicaDriver.onApplied} (a handful: the app's, the tests'). */
  readonly #appliedListeners = new Set<(change: AppliedChange) => void>();
  #tickTimer: Timer | undefined;
  #started = false;
  #stopped = false;
  #lastTickMs: number;

  private constructor(options: ReplicaDriverOptions, loaded: LoadedState<KvCommand>) {
    this.id = options.id;
    this.#options = options;
    this.#membership = new Membership(options, loaded);
    const opened = openState(options, loaded, { configuration: this.#membership.configuration });
    this.#core = opened.core;
    this.#kv = opened.kv;
    this.#applied = opened.applied;
    this.#snapshotFetcher = new SnapshotFetcher({
      id: options.id,
      clock: options.clock,
      ...(options.fetchSnapshot === undefined ? {} : { fetch: options.fetchSnapshot }),
      timeoutMs: options.snapshotFetchTimeoutMs ?? DEFAULT_SNAPSHOT_FETCH_TIMEOUT_MS,
      install: (snapshot, done, fail) => this.#installSnapshot(snapshot, done, fail),
      metrics: this.metrics,
      ...(options.log === undefined ? {} : { log: options.log }),
    });
    this.#storage = options.storage;
    this.#transport = options.transport;
    this.#clock = options.clock;
    this.#tickMs = options.tickMs ?? 5;
    const localRead = options.observer?.localRead;
    this.#leaseReads = new LeaseReads(options.clock, {
      ...(options.leaseReadHoldMs === undefined ? {} : { holdMs: options.leaseReadHoldMs }),
      ...(localRead === undefined ? {} : { served: (accesses) => localRead(accesses) }),
      ...(options.leaseReadStall === undefined ? {} : { stall: options.leaseReadStall }),
    });
    this.#quorumReads = new QuorumReads(options.clock, {
      tickMs: this.#tickMs,
      ...(options.quorumReadTimeoutMs === undefined
        ? {}
        : { timeoutMs: options.quorumReadTimeoutMs }),
    });
    this.#lastTickMs = this.#clock.now();
    this.#startedMs = this.#clock.now();
    // What every part of the driver is given: the edges and the settings.
    const edges = {
      id: options.id,
      options,
      storage: options.storage,
      transport: options.transport,
      clock: options.clock,
      metrics: this.metrics,
    };
    this.#loop = new ReadyLoop({
      ...edges,
      core: () => this.#core,
      installing: () => this.#switch.installing,
      halted: () => this.#membership.silent,
      flushBatch: () => this.#proposals.flush(),
      takeEarlyAnswers: () => this.#proposals.takeEarlyAnswers(),
      decided: (ready, early) => this.#proposals.decided(ready.decided, early),
      execute: (ready) => this.#execute(ready),
      state: () => this.#kv,
      advanced: () => {
        this.#leaseReads.retry();
        this.#quorumReads.drain(this.#core);
      },
    });
    this.#proposals = new Proposals({
      ...edges,
      core: () => this.#core,
      versionTag: () => this.#kv.versionTag,
      installing: () => this.#switch.installing,
      persisting: () => this.#loop.persisting,
      kick: () => this.#loop.kick(),
    });
    this.#expiry = new ExpiryProposer({
      id: options.id,
      wallClockMs: () => this.wallClockMs(),
      active: () => this.#leaseCore()?.isVoter === true,
      voters: () => this.#core.voters,
      expiredEntries: (now, limit) => this.#kv.expiredEntries(now, limit),
      read: (key) => this.#kv.read(key),
      submit: (command, answer) => this.submitWith(command, answer),
    }, { scanIntervalMs: options.expiryScanIntervalMs, graceMs: options.expiryGraceMs });
    this.#switch = new StateSwitch({
      ...edges,
      loop: this.#loop,
      rebuild: (state, carried) => this.#rebuild(state, carried),
    });
    this.#epochWatch = new EpochWatch({
      ...edges,
      membership: this.#membership,
      stopped: () => this.#stopped,
      installing: () => this.#switch.installing,
      persistedRecords: () => this.#loop.persistedRecords,
      retire: (reason, configuration) => this.#retire(reason, configuration),
    });
    this.#membership.announce();
    this.#transport.onEpochRefusal?.((peer, epoch) => this.#epochWatch.peerAhead(peer, epoch));
    options.log?.(
      `replica ${options.id}: loaded ${loaded.records.length} instances and ${loaded.entries.length} keys ` +
        `in epoch ${describeConfiguration(this.#membership.configuration)}`,
    );
  }

  /**
   * Opens a replica: loads what its storage holds, rebuilds the core and the
   * key-value state, and resumes or recovers unfinished instances.
   */
  static async open(options: ReplicaDriverOptions): Promise<ReplicaDriver> {
    return new ReplicaDriver(options, await options.storage.load());
  }

  /** {@linkcode ReplicaDriver.open} on state already loaded (the simulator's disk reads synchronously). */
  static fromLoaded(options: ReplicaDriverOptions, loaded: LoadedState<KvCommand>): ReplicaDriver {
    return new ReplicaDriver(options, loaded);
  }

  /** Starts ticking and runs the first Ready (resumed proposals, recovery). */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#lastTickMs = this.#clock.now();
    this.#scheduleTick();
    this.#loop.kick();
  }

  /** Stops ticking, refuses new work, waits for the Ready in flight, then closes everything. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#snapshotFetcher.stop();
    this.#epochWatch.stop();
    this.#tickTimer?.cancel();
    this.#proposals.cancelTimer();
    await this.#loop.stop();
    // Refused as commands: the replica is stopped.
    this.#quorumReads.release(undefined);
    this.#proposals.rejectAll(() => new OutcomeUnknownError("The replica is shutting down"));
    this.#snapshotCaptures.rejectAll("The replica is shutting down");
    await this.#transport.close();
    this.#storage.close();
  }

  /** The core's counters. */
  get stats(): Readonly<ReplicaStats> {
    return this.#core.stats;
  }

  /** The core itself (read-only uses: status, describe, invariant checks). */
  get core(): Replica<KvCommand> {
    return this.#core;
  }

  /** The configuration of this replica's epoch. */
  get configuration(): Configuration {
    return this.#membership.configuration;
  }

  /**
   * Why this replica takes no part in the cluster any more (a configuration
   * change removed it or replaced it by a new incarnation), or `undefined`.
   */
  get retired(): string | undefined {
    return this.#membership.retired;
  }

  /** Whether this replica was removed or replaced ({@linkcode ReplicaDriver.retired}). */
  get removed(): boolean {
    return this.#membership.retired !== undefined;
  }

  /**
   * Whether this replica, retired by a change it executed, still answers its
   * old epoch's messages (`Leaving` in ./retirement.ts): it serves no client.
   */
  get leaving(): boolean {
    return this.#membership.leaving !== undefined;
  }

  /** Whether this replica joined (`joining`) and has not installed its first snapshot yet. */
  get joining(): boolean {
    return this.#membership.joining;
  }

  /**
   * Calls `listener` with every change to the executed key-value state, in
   * execution order: each applied instance, and once after the state was
   * replaced (watch streams follow the state through it, `src/kv/watch_hub.ts`).
   * It runs inside the Ready loop: it must be quick and must not throw (an
   * error is logged and ignored). Returns the function that removes it.
   */
  onApplied(listener: (change: AppliedChange) => void): () => void {
    this.#appliedListeners.add(listener);
    return () => this.#appliedListeners.delete(listener);
  }

  #notifyApplied(change: AppliedChange): void {
    for (const listener of this.#appliedListeners) {
      try {
        listener(change);
      } catch (error) {
        this.#options.log?.(`replica ${this.id}: an applied-state listener failed: ${error}`);
      }
    }
  }

  /** The executed key-value state (for local reads). */
  get state(): KvStateMachine {
    return this.#kv;
  }

  /** The driver's clock reading (the clock of `lastContactMs` in peer stats). */
  now(): number {
    return this.#clock.now();
  }

  /** Wall-clock time by this driver's clock, ms since the Unix epoch (what `expiresAt` is judged by). */
  wallClockMs(): number {
    return this.#clock.now() + (this.#options.wallClockOriginMs ?? 0);
  }

  /** Expiry's counters, and whether an expire command of this replica's is in flight (./expiry.ts). */
  expiryStatus(): ExpiryMetrics & { readonly inFlight: boolean } {
    return { ...this.#expiry.metrics, inFlight: this.#expiry.inFlight };
  }

  /** Milliseconds since this driver started. */
  get uptimeMs(): number {
    return this.#clock.now() - this.#startedMs;
  }

  /** Client commands waiting for their answer. */
  get pendingCommands(): number {
    return this.#proposals.size;
  }

  /** What the transport knows about each peer. */
  peers(): PeerStats[] {
    return this.#transport.stats();
  }

  /** Voters (other than this replica) heard from within the contact window: only they make quorums. */
  reachablePeers(): number {
    return reachableVoters(this.#transport.stats(), {
      self: this.id,
      voters: this.#core.voters,
      now: this.#clock.now(),
      windowMs: this.#options.contactWindowMs ?? 3000,
    });
  }

  /** Whether a fast quorum (this replica and `n - e - 1` peers) is reachable. */
  fastQuorumReachable(): boolean {
    return this.reachablePeers() >= this.#core.quorum.fastQuorumSize - 1;
  }

  /** Whether a slow quorum (this replica and `n - f - 1` peers) is reachable. */
  quorumReachable(): boolean {
    return this.reachablePeers() >= this.#core.quorum.slowQuorumSize - 1;
  }

  /** The retention bound: see {@linkcode ReplicaDriverOptions.maxHeldCommands}. */
  get maxHeldCommands(): number {
    return this.#options.maxHeldCommands ?? DEFAULT_MAX_HELD_COMMANDS;
  }

  /**
   * Proposes `input` under a request id of this replica's and resolves with
   * its result when the answer rule allows (./answer.ts): a blind write once
   * its decision is durable, anything else once it has executed here.
   *
   * @throws {UnavailableError} if no quorum is reachable or too much is pending
   *   (nothing was proposed).
   * @throws {OutcomeUnknownError} if the command was proposed but not answered
   *   in time.
   */
  /**
   * A linearizable read (get, list, or a Deno KV snapshot of several
   * ranges, read at one point): served from this replica's state
   * when its quorum leases allow (`src/core/lease.ts`), held while a write
   * to its keys is pending here, otherwise proposed as a command like
   * {@linkcode ReplicaDriver.submit}.
   */
  read(input: KvCommandInput & { op: "get" | "list" | "snapshot" }): Promise<KvResult> {
    return new Promise((resolve, reject) => this.readWith(input, { resolve, reject }));
  }

  /** {@linkcode ReplicaDriver.read} with callbacks (the simulator's clients). */
  readWith(input: KvCommandInput & { op: "get" | "list" | "snapshot" }, answer: Answer): void {
    const command = { ...input, request: "" } as KvCommand;
    const accesses = kvConflicts.accesses(command);
    const readState = (): KvResult =>
      input.op === "get"
        ? { op: "get", ok: true, entry: this.#kv.read(input.key) }
        : input.op === "list"
        ? this.#kv.list(input.prefix, input.after, input.limit)
        : this.#kv.snapshotRead(input.ranges);
    this.#leaseReads.readThen(
      () => this.#leaseCore(),
      accesses,
      readState,
      (result) => {
        if (result !== undefined) return answer.resolve(result.value);
        this.#quorumRead(input, accesses, readState, answer);
      },
    );
  }

  /**
   * A read no lease serves: through a majority of voters
   * (`src/core/quorum_read.ts`), one round trip and no instance, or, when
   * that cannot be done or takes too long, as a command.
   */
  #quorumRead(
    input: KvCommandInput & { op: "get" | "list" | "snapshot" },
    accesses: readonly Access[],
    readState: () => KvResult,
    answer: Answer,
  ): void {
    const core = this.#options.quorumReads === false ? undefined : this.#leaseCore();
    // What would refuse the command (no quorum reachable, too much
    // pending) refuses the read too, at once rather than after a timeout.
    if (core === undefined || this.#admissionProblem(false) !== undefined) {
      this.submitWith(input, answer);
      return;
    }
    this.#quorumReads.readThen(core, accesses, readState, (result) => {
      if (result !== undefined) return answer.resolve(result.value);
      this.submitWith(input, answer);
    });
    this.#loop.kick();
  }

  /** Quorum read counters for `/status` and `/metrics`. */
  quorumReadStatus(): QuorumReadStatus {
    const core = this.#core.quorumReadStatus();
    return {
      ...this.#quorumReads.metrics,
      waiting: this.#quorumReads.waitingCount,
      waitedOnInstances: core.waited,
      answeredForPeers: core.answered,
      retransmissions: core.retransmissions,
    };
  }

  /** The core, when this replica may serve reads under its leases at all. */
  #leaseCore(): Replica<KvCommand> | undefined {
    // Removed (retired) or leaving (it executed its own removal and answers
    // only the old epoch): it serves no client.
    const serving = !this.#stopped && !this.#switch.installing && !this.#membership.joining &&
      !this.removed && !this.leaving;
    return serving ? this.#core : undefined;
  }

  /**
   * The lease state for `/status` and `/metrics`: the configuration's
   * leases, whether this replica may read locally now, per grantor how long
   * its grant has left, the writes that waited on holders, and the reads.
   */
  leaseStatus(): LeaseStatus {
    const leases = this.#membership.configuration.leases;
    const now = this.#clock.now();
    const core = this.#leaseCore();
    const status = this.#core.leaseStatus(now);
    const reads = this.#leaseReads.metrics;
    const fallbacks = Object.values(reads.fallbacks).reduce((a, b) => a + b, 0);
    return {
      configured: leases !== undefined && leases.rules.length > 0,
      ...(leases === undefined
        ? {}
        : { leaseMs: leases.leaseMs, drift: leases.drift, rules: leases.rules }),
      valid: core !== undefined && leases !== undefined && core.leaseStillValid(now),
      grantRemainingMs: Object.fromEntries(
        this.#membership.configuration.members
          .filter((member) => member.id !== this.id && member.role === "voter")
          .map((member) => [member.id, Math.round(status.remainingMs[member.id] ?? 0)]),
      ),
      grants: {
        given: status.grantsGiven,
        received: status.grantsReceived,
        withheld: status.grantsWithheld,
      },
      writes: {
        heldForHolders: status.writesHeldForHolders,
        released: status.writesReleased,
        heldMs: Math.round(status.writeHoldMs),
      },
      notices: {
        pending: status.notices,
        acknowledged: status.noticesAcknowledged,
        refused: status.noticesRefused,
      },
      reads: { ...reads, held: this.#leaseReads.heldCount },
      localReadRatio: reads.localReads + fallbacks === 0
        ? null
        : reads.localReads / (reads.localReads + fallbacks),
    };
  }

  submit(input: KvCommandInput): Promise<KvResult> {
    return new Promise((resolve, reject) => this.submitWith(input, { resolve, reject }));
  }

  /**
   * {@linkcode ReplicaDriver.submit} with callbacks instead of a promise (the
   * simulator answers its clients on virtual time, without microtasks).
   * Exactly one of `answer`'s functions is called, possibly before this returns
   * (a refusal). Returns the request id assigned.
   */
  submitWith(input: KvCommandInput, answer: Answer): string {
    return this.#submit(input, answer, false);
  }

  /**
   * Admits and enqueues a command. A snapshot barrier is admitted even when
   * this replica holds too much: a snapshot is what lets it prune.
   */
  #submit(input: KvCommandInput, answer: Answer, barrier: boolean): string {
    const request = this.#proposals.nextRequest();
    const refusal = this.#admissionProblem(barrier);
    if (refusal !== undefined) {
      this.metrics.requestsRefused++;
      answer.reject(refusal);
      return request;
    }
    this.#proposals.add({ ...input, request } as KvCommand, answer);
    return request;
  }

  /**
   * Steps a batch received from a peer (already decoded and validated).
   * Returns this replica's epoch for a batch of an earlier one (its sender
   * missed a change), for the sender to learn of it.
   */
  receive(batch: PeerBatch<KvCommand>): BatchRefusal | undefined {
    // While a snapshot is installed, the core is about to be replaced:
    // peers retransmit what matters.
    if (this.#stopped || this.#switch.installing) return undefined;
    const verdict = this.#membership.judge(batch, this.#clock.now());
    // A joiner votes only once its snapshot is in: its storage holds no
    // epoch yet, and an install of a later epoch drops every record. A
    // retired replica takes nothing, unless it still answers its old epoch.
    const answering = !this.#membership.joining && !this.#membership.silent;
    if (!verdict.take) {
      if (verdict.ahead) this.#epochWatch.peerAhead(batch.from, batch.epoch ?? 1);
      return verdict.behind && answering
        ? { epoch: this.#membership.configuration.epoch }
        : undefined;
    }
    if (!answering) return undefined;
    this.metrics.batchesReceived++;
    this.metrics.messagesReceived += batch.messages.length;
    const log = this.#options.traceMessages ? this.#options.log : undefined;
    this.#core.observeTime(this.#clock.now());
    for (const message of batch.messages) {
      log?.(`recv ${describeMessage(message, describeKvCommand)}`);
      this.#core.step(message);
    }
    this.#quorumReads.drain(this.#core);
    this.#loop.kick();
    return undefined;
  }

  /**
   * Whether member `id` of this epoch has been heard from as the incarnation
   * the configuration names (a replaced member's new process has, once one
   * of its batches was taken; its old process never again).
   */
  heardAsCurrent(id: number): boolean {
    return this.#membership.heardAsCurrent(id);
  }

  /** Resolves when no Ready is being processed or queued (for tests and shutdown). */
  whenIdle(): Promise<void> {
    return this.#loop.whenIdle();
  }

  // ---------------------------------------------------------------------------
  // Snapshots: taken here for a peer that was pruned past, installed here when
  // this replica was (src/core/retention.ts).

  /**
   * Takes a snapshot for a peer: proposes a barrier command (a backup command,
   * which conflicts with every command, so every replica executes the same
   * instances before it and records its digest there) and resolves, once it
   * executed here, with the state it read and exactly the instances applied
   * to that state. With `forPeer`, this replica then keeps what that peer will
   * need after installing it (`Replica.holdForSnapshot`), so it catches up
   * from here instead of being pruned past again while the snapshot travels.
   *
   * @throws {UnavailableError} if `MAX_SNAPSHOTS_IN_PROGRESS` are
   *   being taken already, or the barrier could not be proposed.
   * @throws {OutcomeUnknownError} if the barrier did not execute in time.
   */
  takeSnapshot(forPeer?: number, peerEpoch?: number): Promise<ReplicaSnapshot<KvCommand>> {
    return new Promise((resolve, reject) =>
      this.takeSnapshotWith({ resolve, reject }, forPeer, peerEpoch)
    );
  }

  /**
   * {@linkcode ReplicaDriver.takeSnapshot} with callbacks instead of a promise
   * (the simulator runs on virtual time, without microtasks). Exactly one is
   * called, possibly before this returns.
   */
  takeSnapshotWith(answer: SnapshotCapture, forPeer?: number, peerEpoch?: number): void {
    takeSnapshotFor(
      {
        captures: this.#snapshotCaptures,
        epoch: this.#membership.configuration.epoch,
        core: () => this.#core,
        base: () => this.#membership.base(),
        stateNow: () =>
          this.#switch.installing || this.#membership.retired !== undefined ||
            this.#membership.joining || this.#core.snapshotSources().length > 0
            ? undefined
            : {
              ...this.#snapshotAt(this.#proposals.nextRequest("state")),
              unchecked: true,
            },
        proposeBarrier: (barrier) => {
          const request = this.#submit({ op: "backup" }, barrier, true);
          // The barrier ends its instance: nothing batched after it changes the
          // state it read, so the state after the instance is the state at it.
          this.#proposals.flush();
          this.#loop.kick();
          return request;
        },
      },
      answer,
      { forPeer, peerEpoch },
    );
  }

  /**
   * Installs a snapshot from a peer (its storage first, atomically; then the
   * core and the key-value state are rebuilt from storage, as at a restart).
   * Commands waiting here fail as outcome unknown: the ones proposed may
   * still execute.
   */
  installSnapshot(snapshot: ReplicaSnapshot<KvCommand>): Promise<void> {
    return new Promise((resolve, reject) => this.#installSnapshot(snapshot, resolve, reject));
  }

  #installSnapshot(
    snapshot: ReplicaSnapshot<KvCommand>,
    resolve: () => void,
    reject: (error: Error) => void,
    carried?: Carried,
  ): void {
    if (this.#stopped || this.#switch.installing) {
      reject(new UnavailableError("The replica is stopping or installing a snapshot already"));
      return;
    }
    if (this.#membership.retired !== undefined) {
      reject(new UnavailableError(`This replica left the cluster (${this.#membership.retired})`));
      return;
    }
    const refusal = carried === undefined
      ? this.#membership.foreignReason(snapshot.configuration, this.#loop.persistedRecords)
      : undefined;
    if (refusal !== undefined) {
      // Nothing of it is installed: storage must keep saying who this
      // process is, for its next start too.
      this.#retire(refusal, snapshot.configuration!);
      resolve();
      return;
    }
    if (carried === undefined && this.#membership.isBase(snapshot.barrier)) {
      // The state this epoch started with, fetched while this replica was
      // behind; it has since executed the change itself and gone on.
      resolve();
      return;
    }
    this.#switch.install(snapshot, carried, resolve, reject);
  }

  /** Per row, every instance up to here is applied to the key-value state ({@linkcode AppliedSet}). */
  get appliedPrefix(): readonly number[] {
    return this.#applied.prefix;
  }

  /** Whether instance `(owner, number)` of this epoch is applied to the key-value state. */
  hasApplied(owner: number, number: number): boolean {
    return this.#applied.has(owner, number);
  }

  /**
   * The digest of the state at the end of the component of barrier `request`
   * (where snapshots are taken), if it executed here recently.
   */
  digestAfterBarrier(request: string): string | undefined {
    return this.#snapshotCaptures.digestAfter(request);
  }

  /** Whether a snapshot is being installed, or fetched to be installed. */
  get catchingUpBySnapshot(): boolean {
    return this.#switch.installing || this.#snapshotFetcher.busy || this.#membership.joining ||
      this.#membership.behind(this.#clock.now());
  }

  /**
   * Replaces the core and the state by what storage holds (after an install).
   * `carried`: own proposals of an epoch that ended here, proposed again in
   * the new one with their waiters kept, and so are the commands not yet
   * proposed; without it (a snapshot from a peer), every waiter fails.
   */
  #rebuild(
    loaded: LoadedState<KvCommand>,
    carried: Carried | undefined,
  ): void {
    const unproposed = this.#proposals.reset(carried);
    this.#snapshotCaptures.rejectAll("The replica installed a snapshot while taking one");
    // Effects of executions not yet persisted: the snapshot's state replaces them.
    this.#loop.clearEffects();
    this.#membership.adopt(loaded.configuration);
    this.#endingEpoch = undefined;
    // No Ready is in flight (the install waited for idle): nothing to skip.
    const opened = openState(this.#options, loaded, {
      configuration: this.#membership.configuration,
      rebuilt: true,
    });
    this.#core = opened.core;
    this.#kv = opened.kv;
    this.#applied = opened.applied;
    this.#lastTickMs = this.#clock.now();
    this.#updatePeerOrder();
    this.#notifyApplied({ kind: "replaced" });
    // Own proposals of the old epoch first, in their order, then what waited.
    if (carried === undefined) return;
    this.#proposals.requeue(carried, unproposed);
  }

  /**
   * Stops taking part: clients are refused with `reason`, storage keeps the
   * old epoch (a restart ends up here again), and the old core takes
   * nothing more, or, `leaving` (this replica executed the change that
   * ended its membership), only its old epoch's messages for a while
   * (`Leaving` in ./retirement.ts).
   */
  #retire(reason: string, next: Configuration, leaving = false): void {
    this.#membership.retire(reason, next, leaving ? { nowMs: this.#clock.now() } : undefined);
    this.#proposals.retire(reason);
    this.#snapshotCaptures.rejectAll(`This replica left the cluster: ${reason}`);
    // Nothing more to catch up on: a snapshot of the epoch it now names would
    // not be judged foreign, and each fetch has a member take a barrier for
    // it (the simulator, seed 150 at n = 5 with membership changes).
    this.#snapshotFetcher.stop();
  }

  /**
   * Ends this replica's epoch at the end of the component of `reconf`, which
   * just executed here (`epoch.ts`): by the fence, no instance of the epoch
   * executes after it, so the state now is the new epoch's first. The loop
   * stops taking Readies of the old core; the state is installed as a
   * snapshot of the new epoch, and the core rebuilt for its configuration.
   * This replica's own proposals that did not execute (replaced by Nops, or
   * undecided: by the fence they can never execute in the old epoch) are
   * proposed again in the new one, and their clients keep waiting.
   */
  #endEpoch(reconf: ReconfCommand): void {
    const next = reconf.configuration;
    const ended = this.#membership.endedReason(next);
    if (ended !== undefined) {
      // The members that remain may still need its answers to finish the
      // change in the old epoch (membership design, Retire).
      this.#retire(ended, next, true);
      return;
    }
    const snapshot = nextEpochSnapshot(reconf, this.#kv);
    this.#membership.keepBase(snapshot, this.#clock.now());
    // A change of this replica's for the same epoch lost to `reconf` is not
    // proposed again (it was decided against the old configuration).
    const carried = this.#proposals.carryOver(this.#core.unexecutedProposals(), next.epoch);
    const failed = (error: Error) => {
      this.#loop.fail(error);
      this.#options.log?.(
        `replica ${this.id}: could not start epoch ${next.epoch}, refusing writes: ${error.message}`,
      );
    };
    if (this.#storage.startEpoch === undefined) {
      this.#installSnapshot(snapshot, () => {}, failed, carried);
      return;
    }
    this.#switch.startEpochInPlace(reconf, snapshot, carried, failed);
  }

  // ---------------------------------------------------------------------------
  // Admission (./admission.ts).

  #admissionProblem(barrier: boolean): UnavailableError | undefined {
    const now = this.#clock.now();
    return admissionProblem({
      barrier,
      stopped: this.#stopped,
      retired: this.#membership.retired,
      joining: this.#membership.joining,
      installing: this.#switch.installing,
      core: this.#core,
      epoch: this.#membership.configuration.epoch,
      aheadPeers: this.#membership.behind(now) ? this.#membership.aheadPeers() : undefined,
      loopError: this.#loop.error,
      pending: this.#proposals.size,
      maxPending: this.#options.maxPendingCommands ?? 20_000,
      maxHeldCommands: this.maxHeldCommands,
      quorumReachable: () => this.quorumReachable(),
    });
  }

  // ---------------------------------------------------------------------------
  // Time.

  #scheduleTick(): void {
    this.#tickTimer = this.#clock.setTimer(this.#tickMs, () => {
      if (this.#stopped) return;
      this.#onTimer();
      this.#scheduleTick();
    });
  }

  #onTimer(): void {
    const now = this.#clock.now();
    if (this.#switch.installing) return;
    this.metrics.requestsTimedOut += this.#proposals.expire(now);
    let ticks = Math.floor((now - this.#lastTickMs) / this.#tickMs);
    if (ticks <= 0) return;
    this.#lastTickMs += ticks * this.#tickMs;
    // After a long pause (GC, SIGSTOP) do not replay every missed tick.
    ticks = Math.min(ticks, 200);
    // A joiner's or a removed replica's core takes no part until it has an epoch to serve.
    if (!this.#membership.joining && !this.removed) {
      this.#core.observeTime(now);
      for (let i = 0; i < ticks; i++) this.#core.tick();
    }
    this.#leaseReads.retry();
    this.#quorumReads.drain(this.#core);
    // Reads of a core an install or an epoch's end replaced go through the
    // protocol of the new one now that it takes commands.
    this.#quorumReads.release(this.#leaseCore());
    this.#updatePeerOrder();
    this.#snapshotFetcher.maybeStart(now, this.#snapshotSources());
    this.#membership.expireBase(now);
    this.#epochWatch.tick(now);
    this.#expiry.tick(now);
    this.#loop.kick();
  }

  /** Peers to fetch a snapshot from, best first ({@linkcode Membership.snapshotSources}). */
  #snapshotSources(): readonly number[] {
    return this.#membership.snapshotSources(this.#clock.now(), () => this.#core.snapshotSources());
  }

  /** Feeds the core the closest responsive peers first (./peer_order.ts). */
  #updatePeerOrder(): void {
    updatePeerOrder(this.#core, this.#transport, {
      now: this.#clock.now(),
      tickMs: this.#tickMs,
      options: this.#options,
      probe: !this.#membership.joining,
    });
  }

  // ---------------------------------------------------------------------------
  // Execution (the Ready loop's, ./ready_loop.ts).

  /** A snapshot of the state now, at barrier `barrier`, with the configuration of a later epoch. */
  #snapshotAt(barrier: string): ReplicaSnapshot<KvCommand> {
    const snapshot = snapshotAt(barrier, this.#applied, this.#core, this.#kv);
    // Epoch 1's configuration is the cluster file's: a snapshot of it carries none.
    return this.#membership.configuration.epoch === 1
      ? snapshot
      : { ...snapshot, configuration: this.#membership.configuration };
  }

  #execute(ready: Ready<KvCommand>): void {
    const trace = this.#options.traceMessages ? this.#options.log : undefined;
    const observer = this.#options.observer;
    for (const execution of ready.executions) {
      // The epoch ended in this Ready: by the fence nothing of it follows
      // but Nops, and the old core's executions mean nothing to the new one.
      if (this.#switch.installing || this.#membership.retired !== undefined) break;
      trace?.(`exec ${describeExecution(execution, describeKvCommand)}`);
      if (execution.command !== NOP && this.#endingEpoch === undefined) {
        this.#endingEpoch = reconfToNext(execution.command, this.#membership.configuration.epoch);
      }
      const applied = this.#kv.apply(execution, execution.local);
      this.#applied.add(execution.owner, execution.number);
      observer?.executed?.(execution);
      this.#loop.addEffects(instanceKey(execution.owner, execution.number), applied.mutations);
      this.#snapshotCaptures.onApplied(
        execution,
        (barrier) => this.#snapshotAt(barrier),
        () => this.#kv.digest,
      );
      for (const { request, result } of applied.results) this.#proposals.answer(request, result);
      if (this.#appliedListeners.size > 0) this.#notifyApplied({ kind: "instance", applied });
      // Where a snapshot would be read: the end of the change's component.
      // The rest of this Ready belongs to the old epoch (the install may
      // even have completed already, on a disk that calls back at once).
      if (this.#endingEpoch !== undefined && execution.lastOfComponent !== false) {
        this.#endEpoch(this.#endingEpoch);
        break;
      }
    }
    this.#proposals.abandon(ready.abandoned);
  }
}
