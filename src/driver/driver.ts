/**
 * The driver: one replica's core, storage, transport, clock and key-value
 * state, run in the order the core requires (etcd raft's `Ready` contract).
 * It takes one Ready at a time: sends the messages that may leave early (the
 * coordinator's own PreAccepts), persists the records in one storage commit
 * (group commit), then sends the rest of its messages, executes its commands
 * (answering their clients: the answer rule of ./answer.ts) and advances. No message but
 * the early ones leaves before the records it depends on are durable.
 *
 * The same code runs in the replica process, the simulator, the scenario
 * tests and `bench:core`; only the edges differ (storage, transport, clock
 * with timers, randomness). A storage commit may complete synchronously (the
 * simulator's disk calls back inside `then`), so the loop is written as a
 * trampoline, never as recursion.
 *
 * Client commands are batched adaptively (SOSP'13 §5): a command that arrives
 * while nothing is being persisted is proposed at once; commands that arrive
 * during a storage commit wait for it (at most `batchWindowMs`, or until the
 * batch is full) and are proposed together as one instance.
 *
 * @module
 */

import {
  type Configuration,
  describeConfiguration,
  sameConfiguration,
} from "../core/configuration.ts";
import { describeExecution, describeMessage } from "../core/describe.ts";
import { instanceKey } from "../core/instance.ts";
import { Replica, type ReplicaStats } from "../core/replica.ts";
import { type Decided, type Message, NOP, type Ready } from "../core/types.ts";
import {
  describeKvCommand,
  type KvCommand,
  type KvCommandInput,
  kvConflicts,
  type ReconfCommand,
} from "../kv/commands.ts";
import { type KvMutation, type KvResult, KvStateMachine } from "../kv/state_machine.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { LoadedState, ReplicaSnapshot, ReplicaStorage } from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { PeerStats, PeerTransport } from "../transport/types.ts";
import {
  ClientRequestError,
  OutcomeUnknownError,
  SnapshotInstalledError,
  UnavailableError,
} from "../errors.ts";
import { blindWriteAnswers, type CommitAnswer } from "./answer.ts";
import { AppliedSet, snapshotAt } from "./applied.ts";
import { SnapshotCaptures } from "./snapshot_captures.ts";
import {
  coreMembership,
  defaultConfiguration,
  judgeBatch,
  memberOf,
  nextEpochSnapshot,
  peerMembership,
  reconfToNext,
  versionTagFor,
} from "./epoch.ts";
import { SnapshotFetcher } from "./snapshot_fetcher.ts";
import { type DriverMetrics, newDriverMetrics } from "./metrics.ts";
import {
  DEFAULT_MAX_HELD_COMMANDS,
  DEFAULT_SNAPSHOT_FETCH_TIMEOUT_MS,
  hardHeldLimit,
  NODE_TIMING,
  type ReplicaDriverOptions,
  type SnapshotCapture,
} from "./options.ts";
import { type Answer, Waiters } from "./waiters.ts";

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

/**
 * How long peers are seen in a later epoch before this replica, still in the
 * earlier one, takes a snapshot of theirs instead of executing the change
 * itself (`ReplicaDriver.#behindAnEpoch`).
 */
export const AHEAD_GRACE_MS = 1000;

/**
 * How long a replica keeps the state its epoch started with for peers still
 * behind it ({@linkcode ReplicaDriver.takeSnapshotWith}): they learn of the
 * new epoch within a second or two of its start.
 */
export const EPOCH_BASE_KEPT_MS = 60_000;

/** What a command counts toward `maxBatchBytes`. */
function batchBytesOf(command: KvCommand): number {
  return command.op === "put" ? command.value.length + command.key.length : 64;
}

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
  /** A snapshot is being installed: the loop and the inputs wait. */
  #installing = false;
  /** The configuration of this replica's epoch. */
  #configuration: Configuration;
  /** Peers whose batches showed them in a later epoch, with that epoch: sources of its snapshot. */
  #aheadPeers = new Map<number, number>();
  /** When a peer was first seen in a later epoch (this epoch). */
  #aheadSinceMs: number | undefined;
  /**
   * This process's incarnation: its configuration's when it started. A later
   * configuration that gives its id another incarnation replaced it.
   */
  readonly #incarnation: number;
  /**
   * Why this replica takes no part any more: a configuration change it
   * executed removed it, or replaced it by a new incarnation. It installs
   * nothing of the new epoch (a restart executes the change again and stops
   * here again), and serves nothing.
   */
  #retired: string | undefined;
  /**
   * Storage held nothing at the start, and the replica was not started to
   * join: if its cluster turns out to be past epoch 1 before this process
   * persisted anything, it is a replica whose data was lost, come back
   * under the incarnation that voted (or, rarely, a new cluster's member
   * started after a change: it is replaced all the same).
   */
  readonly #startedEmpty: boolean;
  /** This process has persisted instance records (it took part, with a memory of it). */
  #persistedRecords = false;
  /** Started with `joining` and no snapshot installed yet. */
  #joining: boolean;
  /**
   * The state this replica's epoch started with (installed when it executed
   * the change), kept for peers still in an earlier epoch
   * ({@linkcode ReplicaDriver.takeSnapshotWith}): references to the entries,
   * not a copy of the values. Not kept across a restart.
   */
  #epochBase: ReplicaSnapshot<KvCommand> | undefined;
  /** When `#epochBase` was kept: it is let go {@linkcode EPOCH_BASE_KEPT_MS} later. */
  #epochBaseSinceMs = 0;
  /** A configuration change executed in the component being executed: the epoch ends at its end. */
  #endingEpoch: ReconfCommand | undefined;
  /** The incarnation each peer last sent a batch this replica took as (bounded by the member ids). */
  readonly #heardIncarnation = new Map<number, number>();
  /** Refused batch senders already logged (reason by sender), bounded by the member ids. */
  readonly #refusedLogged = new Map<number, string>();
  /** Fetches snapshots when peers pruned past this replica. */
  readonly #snapshotFetcher: SnapshotFetcher;
  readonly #storage: ReplicaStorage<KvCommand>;
  readonly #transport: PeerTransport<KvCommand>;
  readonly #clock: Clock;
  readonly #tickMs: number;
  readonly #bootId: string;
  readonly #startedMs: number;
  readonly #waiters = new Waiters();
  #requestCounter = 0;
  #batch: KvCommand[] = [];
  #batchBytes = 0;
  /** When each instance proposed here (and not yet decided) was proposed. */
  readonly #proposedAtMs = new Map<number, number>();
  /** Answers the broken rule gives once the next Ready is written (bounded by the proposals of one turn). */
  #unsafeEarlyAnswers: CommitAnswer[] = [];
  #batchTimer: Timer | undefined;
  #markerTimer: Timer | undefined;
  #tickTimer: Timer | undefined;
  #flushMarkers = false;
  #pendingEffects = new Map<number, readonly KvMutation[]>();
  /** A `soon` callback is queued to run the loop. */
  #scheduled = false;
  /** The loop is running (on this stack). */
  #pumping = false;
  /** A storage commit is in flight. */
  #persisting = false;
  #started = false;
  #stopped = false;
  #lastTickMs: number;
  #loopError: Error | undefined;
  #idleWaiters: (() => void)[] = [];

  private constructor(options: ReplicaDriverOptions, loaded: LoadedState<KvCommand>) {
    this.id = options.id;
    this.#options = options;
    this.#configuration = loaded.configuration ?? options.configuration ??
      defaultConfiguration(options.replicas);
    // A joiner whose storage already holds its epoch installed once before a restart.
    this.#joining = options.joining === true &&
      (loaded.configuration?.epoch ?? 1) < this.#configuration.epoch;
    this.#incarnation = memberOf(this.#configuration, options.id)?.incarnation ?? 1;
    this.#startedEmpty = options.joining !== true && loaded.records.length === 0 &&
      loaded.pruneFloor === undefined && loaded.entries.length === 0 &&
      loaded.configuration === undefined;
    if (memberOf(this.#configuration, options.id) === undefined) {
      this.#retired = `it is not a member of epoch ${this.#configuration.epoch}`;
    }
    this.#core = ReplicaDriver.#newCore(options, loaded, this.#configuration);
    this.#kv = ReplicaDriver.#newState(options, loaded, this.#configuration);
    this.#applied = new AppliedSet(this.#core.replicas, loaded.pruneFloor, loaded.records);
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
    this.#lastTickMs = this.#clock.now();
    this.#startedMs = this.#clock.now();
    this.#bootId = options.random.int(2 ** 32).toString(36);
    this.#transport.reconfigure?.(peerMembership(this.#configuration, this.#incarnation));
    options.log?.(
      `replica ${options.id}: loaded ${loaded.records.length} instances and ${loaded.entries.length} keys ` +
        `in epoch ${describeConfiguration(this.#configuration)}`,
    );
  }

  static #newCore(
    options: ReplicaDriverOptions,
    loaded: LoadedState<KvCommand>,
    configuration: Configuration,
    rebuilt = false,
  ): Replica<KvCommand> {
    return new Replica<KvCommand>(
      {
        id: options.id,
        ...coreMembership(configuration, options.id),
        conflicts: kvConflicts,
        timing: { ...NODE_TIMING, ...options.timing },
        retentionCommands: options.maxHeldCommands ?? DEFAULT_MAX_HELD_COMMANDS,
      },
      {
        records: loaded.records,
        pruneFloor: loaded.pruneFloor,
        ...(rebuilt ? { nothingInFlight: true } : {}),
      },
    );
  }

  static #newState(
    options: ReplicaDriverOptions,
    loaded: LoadedState<KvCommand>,
    configuration: Configuration,
  ): KvStateMachine {
    const versionTag = versionTagFor(options.versionTag, configuration.epoch);
    return new KvStateMachine(loaded.entries, versionTag === undefined ? {} : { versionTag });
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
    this.#kick();
  }

  /** Stops ticking, refuses new work, waits for the Ready in flight, then closes everything. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#snapshotFetcher.stop();
    this.#tickTimer?.cancel();
    this.#batchTimer?.cancel();
    this.#markerTimer?.cancel();
    // Write whatever markers are held back before closing.
    this.#kick(true);
    await this.whenIdle();
    this.#waiters.rejectAll(() => new OutcomeUnknownError("The replica is shutting down"));
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
    return this.#configuration;
  }

  /**
   * Why this replica takes no part in the cluster any more (a configuration
   * change removed it or replaced it by a new incarnation), or `undefined`.
   */
  get retired(): string | undefined {
    return this.#retired;
  }

  /** Whether this replica was removed or replaced ({@linkcode ReplicaDriver.retired}). */
  get removed(): boolean {
    return this.#retired !== undefined;
  }

  /** Whether this replica joined (`joining`) and has not installed its first snapshot yet. */
  get joining(): boolean {
    return this.#joining;
  }

  /** The executed key-value state (for local reads). */
  get state(): KvStateMachine {
    return this.#kv;
  }

  /** The driver's clock reading (the clock of `lastContactMs` in peer stats). */
  now(): number {
    return this.#clock.now();
  }

  /** Milliseconds since this driver started. */
  get uptimeMs(): number {
    return this.#clock.now() - this.#startedMs;
  }

  /** Client commands waiting for their answer. */
  get pendingCommands(): number {
    return this.#waiters.size;
  }

  /** What the transport knows about each peer. */
  peers(): PeerStats[] {
    return this.#transport.stats();
  }

  /** Voters (other than this replica) heard from within the contact window: only they make quorums. */
  reachablePeers(): number {
    const now = this.#clock.now();
    const window = this.#options.contactWindowMs ?? 3000;
    const voters = this.#core.voters;
    return this.#transport.stats().filter((peer) =>
      peer.peer !== this.id && voters.includes(peer.peer) &&
      peer.lastContactMs !== undefined && now - peer.lastContactMs <= window
    ).length;
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
    const request = `${this.id}.${this.#bootId}.${++this.#requestCounter}`;
    const refusal = this.#admissionProblem(barrier);
    if (refusal !== undefined) {
      this.metrics.requestsRefused++;
      answer.reject(refusal);
      return request;
    }
    const command = { ...input, request } as KvCommand;
    // No timer per request (thousands in flight under load cost the event
    // loop measurably): the tick sweeps expired waiters, oldest first.
    const submittedMs = this.#clock.now();
    const deadlineMs = submittedMs + (this.#options.requestTimeoutMs ?? 5000);
    this.#waiters.add(request, answer, submittedMs, deadlineMs);
    this.#enqueue(command);
    return request;
  }

  /** Steps a batch received from a peer (already decoded and validated). */
  receive(batch: PeerBatch<KvCommand>): void {
    // While a snapshot is installed, the core is about to be replaced:
    // peers retransmit what matters.
    if (this.#stopped || this.#installing) return;
    const verdict = judgeBatch(this.#configuration, batch);
    if (!verdict.take) {
      if (verdict.ahead) {
        this.#aheadPeers.set(batch.from, batch.epoch ?? 1);
        this.#aheadSinceMs ??= this.#clock.now();
      }
      this.#noteRefusedBatch(batch.from, verdict.reason);
      return;
    }
    this.#heardIncarnation.set(batch.from, batch.incarnation ?? 1);
    // A joiner votes only once its snapshot is in: its storage holds no
    // epoch yet, and an install of a later epoch drops every record.
    if (this.#joining || this.removed) return;
    this.metrics.batchesReceived++;
    this.metrics.messagesReceived += batch.messages.length;
    const log = this.#options.traceMessages ? this.#options.log : undefined;
    for (const message of batch.messages) {
      log?.(`recv ${describeMessage(message, describeKvCommand)}`);
      this.#core.step(message);
    }
    this.#kick();
  }

  /**
   * Whether member `id` of this epoch has been heard from as the incarnation
   * the configuration names (a replaced member's new process has, once one
   * of its batches was taken; its old process never again).
   */
  heardAsCurrent(id: number): boolean {
    const member = memberOf(this.#configuration, id);
    return member !== undefined && this.#heardIncarnation.get(id) === member.incarnation;
  }

  /** Logs a refused sender once per reason (a sender's reason changes with epochs). */
  #noteRefusedBatch(from: number, reason: string): void {
    if (this.#refusedLogged.get(from) === reason) return;
    this.#refusedLogged.set(from, reason);
    this.#options.log?.(
      `replica ${this.id}: not taking batches from replica ${from}: ${reason} (logged once)`,
    );
  }

  /** Resolves when no Ready is being processed or queued (for tests and shutdown). */
  whenIdle(): Promise<void> {
    if (this.#idle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
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
    if (peerEpoch !== undefined && peerEpoch < this.#configuration.epoch) {
      // A peer behind this replica's epoch gets the state this epoch started
      // with (or, see below, the state now), without a barrier: a barrier needs a quorum of this epoch, and
      // the peer may be what that quorum lacks (peers in the old epoch can
      // no longer finish it there: those that moved on take none of its
      // batches). It then catches up in this epoch by commits, from the start.
      // After a restart (the base is not kept), the state now: between
      // Readies it holds whole components only, the instances applied are
      // closed under dependencies, so the peer can go on from it.
      // Not from a replica that has no whole state of its epoch to give
      // (joining, installing, or pruned past in it): it answers as
      // unavailable, and the peer asks another. A replica itself behind a
      // later epoch, or fetching a snapshot of one, still has its epoch's
      // state whole, and gives it: the peer may be the vote it needs to
      // finish its epoch when no replica of the later one is left to give
      // that (the simulator's seed 301, n = 3, with membership changes).
      const base = this.#epochBase?.configuration?.epoch === this.#configuration.epoch
        ? this.#epochBase
        : this.#installing || this.#retired !== undefined || this.#joining ||
            this.#core.snapshotSources().length > 0
        ? undefined
        : {
          ...this.#snapshotAt(`${this.id}.${this.#bootId}.state${++this.#requestCounter}`),
          unchecked: true,
        };
      if (base === undefined) {
        answer.reject(
          new UnavailableError("This replica has no state of its epoch to give yet", {
            retryAfterSeconds: 1,
          }),
        );
        return;
      }
      if (forPeer !== undefined) this.#core.holdForSnapshot(forPeer, base.executedPrefix);
      answer.resolve(base);
      return;
    }
    const kept: SnapshotCapture = forPeer === undefined ? answer : {
      // Keep what the peer will need after installing it, here.
      resolve: (snapshot) => {
        this.#core.holdForSnapshot(forPeer, snapshot.executedPrefix);
        answer.resolve(snapshot);
      },
      reject: answer.reject,
    };
    this.#snapshotCaptures.take(kept, (barrier) => {
      const request = this.#submit({ op: "backup" }, barrier, true);
      // The barrier ends its instance: nothing batched after it changes the
      // state it read, so the state after the instance is the state at it.
      this.#flushBatch();
      this.#kick();
      return request;
    });
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
    carried?: readonly (readonly KvCommand[])[],
  ): void {
    if (this.#stopped || this.#installing) {
      reject(new UnavailableError("The replica is stopping or installing a snapshot already"));
      return;
    }
    if (this.#retired !== undefined) {
      reject(new UnavailableError(`This replica left the cluster (${this.#retired})`));
      return;
    }
    const refusal = carried === undefined ? this.#foreignSnapshot(snapshot) : undefined;
    if (refusal !== undefined) {
      // Nothing of it is installed: storage must keep saying who this
      // process is, for its next start too.
      this.#retire(refusal, snapshot.configuration!);
      resolve();
      return;
    }
    if (
      carried === undefined && this.#epochBase !== undefined &&
      snapshot.barrier === this.#epochBase.barrier
    ) {
      // The state this epoch started with, fetched while this replica was
      // behind; it has since executed the change itself and gone on.
      resolve();
      return;
    }
    let installedMs = 0;
    this.#replaceState(
      (loaded, fail) => {
        const started = this.#clock.now();
        this.#storage.install(snapshot).then(() => {
          installedMs = this.#clock.now() - started;
          this.#storage.load().then(loaded, fail);
        }, fail);
      },
      carried,
      (elapsedMs) => {
        this.metrics.snapshotsInstalled++;
        this.#options.log?.(
          `replica ${this.id}: installed a snapshot of ${snapshot.entries.length} keys ` +
            `at ${snapshot.barrier} (executed up to ${snapshot.executedPrefix.join(",")}): ` +
            `storage ${Math.round(installedMs)} ms, reload ${
              Math.round(elapsedMs - installedMs)
            } ms`,
        );
        resolve();
      },
      reject,
    );
  }

  /**
   * Replaces the core and the state by what `write` leaves in storage (an
   * install, or the start of an epoch in place) and hands to `loaded`, once
   * no Ready is in flight (storage takes nothing else during a commit); the
   * loop and the inputs wait meanwhile. `done` gets the milliseconds it
   * took. Callbacks, not a promise chain: the simulator's storage completes
   * on virtual time and does not chain.
   */
  #replaceState(
    write: (
      loaded: (state: LoadedState<KvCommand>) => void,
      fail: (error: unknown) => void,
    ) => void,
    carried: readonly (readonly KvCommand[])[] | undefined,
    done: (elapsedMs: number) => void,
    reject: (error: Error) => void,
  ): void {
    this.#installing = true;
    const fail = (error: unknown) => {
      this.#installing = false;
      this.#kick();
      reject(error instanceof Error ? error : new Error(String(error)));
    };
    const run = () => {
      const started = this.#clock.now();
      write((loaded) => {
        this.#rebuild(loaded, carried);
        this.#installing = false;
        done(this.#clock.now() - started);
        this.#kick();
      }, fail);
    };
    if (this.#idle()) run();
    else this.#idleWaiters.push(run);
  }

  /** Per row, every instance up to here is applied to the key-value state ({@linkcode AppliedSet}). */
  get appliedPrefix(): readonly number[] {
    return this.#applied.prefix;
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
    return this.#installing || this.#snapshotFetcher.busy || this.#joining ||
      this.#behindAnEpoch();
  }

  /**
   * Replaces the core and the state by what storage holds (after an install).
   * `carried`: own proposals of an epoch that ended here, proposed again in
   * the new one with their waiters kept, and so are the commands not yet
   * proposed; without it (a snapshot from a peer), every waiter fails.
   */
  #rebuild(
    loaded: LoadedState<KvCommand>,
    carried: readonly (readonly KvCommand[])[] | undefined,
  ): void {
    const unproposed = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    const kept = new Set<string>();
    if (carried !== undefined) {
      for (const commands of carried) for (const command of commands) kept.add(command.request);
      for (const command of unproposed) kept.add(command.request);
    } else {
      for (const command of unproposed) {
        this.#waiters.reject(
          command.request,
          new UnavailableError("The replica installed a snapshot before proposing the command"),
        );
      }
    }
    this.#waiters.rejectAll(
      () =>
        new SnapshotInstalledError(
          "The replica installed a snapshot while the command was in flight",
        ),
      kept,
    );
    this.#snapshotCaptures.rejectAll("The replica installed a snapshot while taking one");
    this.#proposedAtMs.clear();
    this.#unsafeEarlyAnswers = [];
    // Effects of executions not yet persisted: the snapshot's state replaces them.
    this.#pendingEffects = new Map();
    const previous = this.#configuration;
    this.#configuration = loaded.configuration ?? previous;
    this.#endingEpoch = undefined;
    if (this.#configuration.epoch >= (this.#options.configuration?.epoch ?? 1)) {
      this.#joining = false;
    }
    if (!sameConfiguration(this.#configuration, previous)) {
      this.#aheadPeers = new Map();
      this.#aheadSinceMs = undefined;
      this.#transport.reconfigure?.(peerMembership(this.#configuration, this.#incarnation));
      this.#options.log?.(
        `replica ${this.id}: epoch ${describeConfiguration(this.#configuration)} ` +
          `(was ${describeConfiguration(previous)})`,
      );
    }
    // No Ready is in flight (the install waited for idle): nothing to skip.
    this.#core = ReplicaDriver.#newCore(this.#options, loaded, this.#configuration, true);
    this.#kv = ReplicaDriver.#newState(this.#options, loaded, this.#configuration);
    this.#applied = new AppliedSet(this.#core.replicas, loaded.pruneFloor, loaded.records);
    this.#lastTickMs = this.#clock.now();
    this.#updatePeerOrder();
    // Own proposals of the old epoch first, in their order, then what waited.
    if (carried === undefined) return;
    for (const commands of carried) for (const command of commands) this.#enqueue(command);
    for (const command of unproposed) this.#enqueue(command);
  }

  /**
   * Why this process must not take `snapshot` from a peer (and retires
   * instead), or `undefined`: its epoch removed this member or names another
   * incarnation of it (it was replaced while away); or this process started
   * with an empty store, persisted nothing, and the cluster is past epoch 1
   * (amnesia: EPaxos replicas must not forget what they promised; only a
   * replace, then a --join, brings its id back).
   */
  #foreignSnapshot(snapshot: ReplicaSnapshot<KvCommand>): string | undefined {
    const config = snapshot.configuration;
    if (config === undefined || config.epoch <= this.#configuration.epoch) return undefined;
    const member = memberOf(config, this.id);
    if (member === undefined) return `epoch ${config.epoch} does not have it as a member`;
    if (member.incarnation !== this.#incarnation) {
      return `epoch ${config.epoch} names incarnation ${member.incarnation} of it, ` +
        `not this process's ${this.#incarnation}`;
    }
    if (this.#startedEmpty && !this.#persistedRecords) {
      return `it started with an empty store as incarnation ${this.#incarnation}, and the cluster ` +
        `is in epoch ${config.epoch}: a replica whose data is lost must be replaced ` +
        `(deno task admin replace ${this.id}) and started with --join`;
    }
    return undefined;
  }

  /**
   * Stops taking part: the old core takes nothing more, clients are refused
   * with `reason`, and storage keeps the old epoch (with the change
   * committed, so a restart ends up here again).
   */
  #retire(reason: string, next: Configuration): void {
    this.#retired = reason;
    this.#options.log?.(
      `replica ${this.id}: ${reason} (${
        describeConfiguration(next)
      }); it serves nothing from now on`,
    );
    this.#configuration = next;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#waiters.rejectAll(() =>
      new OutcomeUnknownError(`This replica left the cluster (${reason}) before answering`)
    );
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
    const member = memberOf(next, this.id);
    if (member === undefined || member.incarnation !== this.#incarnation) {
      this.#retire(
        member === undefined
          ? `epoch ${next.epoch} removed it`
          : `epoch ${next.epoch} replaced it by incarnation ${member.incarnation}`,
        next,
      );
      return;
    }
    const snapshot = nextEpochSnapshot(reconf, this.#kv);
    this.#epochBase = snapshot;
    this.#epochBaseSinceMs = this.#clock.now();
    // A change of this replica's for the same epoch lost to `reconf`: it is
    // not proposed again (it was decided against the old configuration).
    const lost = (command: KvCommand) => {
      if (command.op !== "reconf") return false;
      this.#waiters.reject(
        command.request,
        new ClientRequestError(
          `Another configuration change started epoch ${next.epoch} first; nothing of this one was made`,
          409,
        ),
      );
      return true;
    };
    const carried: KvCommand[][] = [];
    for (const commands of this.#core.unexecutedProposals()) {
      const kept = commands.filter((command) => !lost(command));
      if (kept.length > 0) carried.push(kept);
    }
    this.#batch = this.#batch.filter((command) => !lost(command));
    const failed = (error: Error) => {
      this.#loopError = error;
      this.#options.log?.(
        `replica ${this.id}: could not start epoch ${next.epoch}, refusing writes: ${error.message}`,
      );
    };
    if (this.#storage.startEpoch === undefined) {
      this.#installSnapshot(snapshot, () => {}, failed, carried);
      return;
    }
    // In place: storage keeps the state it holds and takes the executions'
    // effects not yet persisted, instead of writing the whole state again.
    this.#replaceState(
      (loaded, fail) =>
        this.#storage.startEpoch!({
          configuration: next,
          effects: [...this.#pendingEffects.values()],
        }).then(() =>
          loaded({
            records: [],
            pruneFloor: snapshot.executedPrefix,
            entries: snapshot.entries,
            configuration: next,
          }), fail),
      carried,
      (elapsedMs) =>
        this.#options.log?.(
          `replica ${this.id}: started epoch ${next.epoch} in place at ${reconf.request} ` +
            `(${snapshot.entries.length} keys) in ${Math.round(elapsedMs)} ms`,
        ),
      failed,
    );
  }

  // ---------------------------------------------------------------------------
  // Admission and batching.

  #admissionProblem(barrier: boolean): UnavailableError | undefined {
    if (this.#stopped) return new UnavailableError("The replica is shutting down");
    if (this.#retired !== undefined) {
      return new UnavailableError(
        `This replica takes no part in the cluster any more: ${this.#retired}; ask another replica`,
      );
    }
    if (this.#joining) {
      return new UnavailableError(
        "The replica is joining: it waits for a snapshot of the cluster's state",
        { retryAfterSeconds: 1 },
      );
    }
    if (!this.#core.isVoter) {
      return new UnavailableError(
        "The replica is a learner: it proposes nothing until promoted; ask a voter",
      );
    }
    if (this.#installing) {
      return new UnavailableError("The replica is installing a snapshot from a peer", {
        retryAfterSeconds: 1,
      });
    }
    if (this.#behindAnEpoch()) {
      return new UnavailableError(
        `Replicas ${
          [...this.#aheadPeers.keys()].join(", ")
        } are in a later epoch than this replica's ` +
          `${this.#configuration.epoch}; it waits for a snapshot of it`,
        { retryAfterSeconds: 1 },
      );
    }
    const snapshotSources = this.#core.snapshotSources();
    if (snapshotSources.length > 0) {
      // It cannot execute what it missed until the snapshot is installed.
      return new UnavailableError(
        `Peers pruned past this replica (replicas ${
          snapshotSources.join(", ")
        }); it waits for a snapshot`,
        { retryAfterSeconds: 1 },
      );
    }
    if (this.#loopError !== undefined) {
      return new UnavailableError(`The replica cannot persist: ${this.#loopError.message}`, {
        retryAfterSeconds: 5,
      });
    }
    if (this.#waiters.size >= (this.#options.maxPendingCommands ?? 20_000)) {
      return new UnavailableError("Too many requests in progress");
    }
    // Peers far behind are pruned past at the bound (retention.ts); above it
    // this replica holds only what is in flight (peers' frontier gossip lags
    // a little) and what it cannot execute or prune yet (more than f peers
    // far behind): the hard limit guards memory against the latter.
    const heldLimit = hardHeldLimit(this.maxHeldCommands);
    if (this.#core.heldCommands >= heldLimit && !barrier) {
      const behind = this.#core.executionLag()
        .map((instances, replica) => ({ instances, replica }))
        .filter((entry) => entry.instances > 0)
        .map((entry) => `replica ${entry.replica} (${entry.instances} instances behind)`);
      return new UnavailableError(
        `This replica holds ${this.#core.heldCommands} commands (limit ${heldLimit}) ` +
          (behind.length === 0
            ? "it has not executed yet"
            : `for peers far behind that are not pruned past yet: ${behind.join(", ")}`),
        { retryAfterSeconds: 5 },
      );
    }
    if (!this.quorumReachable()) return new UnavailableError("No quorum of replicas is reachable");
    return undefined;
  }

  #enqueue(command: KvCommand): void {
    this.#batch.push(command);
    this.#batchBytes += batchBytesOf(command);
    const full = this.#batch.length >= (this.#options.maxBatchCommands ?? 1000) ||
      this.#batchBytes >= (this.#options.maxBatchBytes ?? 512 * 1024);
    if (full || !this.#persisting) {
      // Full, or nothing is being persisted: propose in this turn (the loop
      // starts from `soon`, so same-turn arrivals join).
      this.#kick();
    } else {
      this.#batchTimer ??= this.#clock.setTimer(this.#options.batchWindowMs ?? 5, () => {
        this.#batchTimer = undefined;
        this.#flushBatch();
        this.#kick();
      });
    }
  }

  #flushBatch(): void {
    if (this.#batch.length === 0 || this.#installing || !this.#core.isVoter) return;
    let commands: KvCommand[];
    const change = this.#batch.findIndex((command) => command.op === "reconf");
    if (change >= 0) {
      // A configuration change is proposed alone in its instance: a fenced
      // replica still pre-accepts changes (so concurrent ones can finish),
      // so an instance holding one may commit after the change that ends
      // the epoch and never execute in it; nothing else may ride with it.
      commands = this.#batch.splice(change, 1);
    } else if (this.#core.fenced) {
      // A configuration change in flight fences the epoch (Replica.fenced):
      // nothing new is proposed in it; the batch waits for the next epoch
      // (or for the change to become a Nop). Admission bounds what waits.
      return;
    } else {
      // Bounded by count and by bytes: what waited through a fence may be
      // far more than one instance may carry (or one peer batch).
      const limit = this.#options.maxBatchCommands ?? 1000;
      const maxBytes = this.#options.maxBatchBytes ?? 512 * 1024;
      let take = 0;
      let bytes = 0;
      while (take < this.#batch.length && take < limit && (take === 0 || bytes < maxBytes)) {
        bytes += batchBytesOf(this.#batch[take]!);
        take++;
      }
      commands = take === this.#batch.length ? this.#batch : this.#batch.slice(0, take);
      this.#batch = take === this.#batch.length ? [] : this.#batch.slice(take);
    }
    this.#batchBytes = 0;
    for (const command of this.#batch) this.#batchBytes += batchBytesOf(command);
    this.#batchTimer?.cancel();
    this.#batchTimer = undefined;
    if (this.#batch.length > 0) this.#kick();
    const { number } = this.#core.propose(commands);
    this.#options.observer?.proposed?.(number, commands);
    if (this.#options.unsafeAnswerBlindWritesBeforeDurable) {
      this.#unsafeEarlyAnswers.push(
        ...blindWriteAnswers(this.id, number, commands, this.#kv.versionTag),
      );
    }
    // Bounded by the proposals in flight (each is decided, as a Nop at worst).
    this.#proposedAtMs.set(number, this.#clock.now());
    this.metrics.instancesProposed++;
    this.metrics.commandsProposed += commands.length;
    this.metrics.batchSize.observe(commands.length);
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
    if (this.#installing) return;
    this.metrics.requestsTimedOut += this.#waiters.expire(
      now,
      () => new OutcomeUnknownError("The command was proposed but did not execute in time"),
    );
    let ticks = Math.floor((now - this.#lastTickMs) / this.#tickMs);
    if (ticks <= 0) return;
    this.#lastTickMs += ticks * this.#tickMs;
    // After a long pause (GC, SIGSTOP) do not replay every missed tick.
    ticks = Math.min(ticks, 200);
    // A joiner's or a removed replica's core takes no part until it has an epoch to serve.
    if (!this.#joining && !this.removed) { for (let i = 0; i < ticks; i++) this.#core.tick(); }
    this.#updatePeerOrder();
    this.#snapshotFetcher.maybeStart(now, this.#snapshotSources());
    // Peers behind this epoch get the state now after this (unchecked by a
    // second replica): the base holds the whole state's entries alive.
    if (this.#epochBase !== undefined && now - this.#epochBaseSinceMs > EPOCH_BASE_KEPT_MS) {
      this.#epochBase = undefined;
    }
    this.#kick();
  }

  /**
   * Whether peers have been in a later epoch for {@linkcode AHEAD_GRACE_MS}
   * while this replica was not: it missed the change (or is too slow to
   * execute it) and takes a snapshot of the new epoch. Within the grace it
   * is most likely about to execute the change itself: the first replica
   * to execute it sends batches of the new epoch at once.
   */
  #behindAnEpoch(): boolean {
    return this.#aheadSinceMs !== undefined &&
      this.#clock.now() - this.#aheadSinceMs >= AHEAD_GRACE_MS;
  }

  /**
   * Peers to fetch a snapshot from, best first: those seen in a later epoch
   * (the latest first); else those that pruned past this replica; else, for
   * a joiner, its epoch's voters.
   */
  #snapshotSources(): readonly number[] {
    // Behind an epoch first: this epoch's own sources (pruned past) are stuck in it too.
    if (this.#behindAnEpoch()) {
      return [...this.#aheadPeers].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map(([peer]) => peer);
    }
    const pruned = this.#core.snapshotSources();
    if (pruned.length > 0) return pruned;
    if (this.#joining) {
      return this.#configuration.members
        .filter((member) => member.role === "voter" && member.id !== this.id)
        .map((member) => member.id);
    }
    return [];
  }

  /**
   * Feeds the core the closest responsive peers first, and round trips in
   * ticks (SOSP'13 §4.4: thrifty quorums pick the closest live replicas). A
   * peer that leaves a request unanswered for twice its round trip plus a
   * margin drops to the back at once, and comes back when it answers.
   */
  #updatePeerOrder(): void {
    const now = this.#clock.now();
    const window = this.#options.contactWindowMs ?? 3000;
    const margin = this.#options.silenceMarginMs ?? 20;
    const peers = this.#transport.stats();
    const live = (peer: PeerStats) => {
      if (peer.lastContactMs === undefined || now - peer.lastContactMs > window) return false;
      if (peer.oldestOutstandingMs === undefined) return true;
      const patience = 2 * (peer.roundTripMs ?? this.#tickMs * 10) + margin;
      return now - peer.oldestOutstandingMs <= patience;
    };
    const probeInterval = this.#options.probeIntervalMs ?? 100;
    // A joiner probes nobody: its batches carry an epoch it has no state of
    // yet, and a peer behind would take it for a source of that state.
    if (this.#transport.probe !== undefined && !this.#joining) {
      for (const peer of peers) {
        const idle = peer.lastContactMs === undefined || now - peer.lastContactMs >= probeInterval;
        if (idle && peer.oldestOutstandingMs === undefined && peer.queued === 0) {
          this.#transport.probe(peer.peer);
        }
      }
    }
    if (this.#options.fixedPeerOrder) return;
    const order = [...peers].sort((a, b) => {
      if (live(a) !== live(b)) return live(a) ? -1 : 1;
      return (a.roundTripMs ?? Number.POSITIVE_INFINITY) -
          (b.roundTripMs ?? Number.POSITIVE_INFINITY) ||
        a.peer - b.peer;
    });
    this.#core.setPeerOrder(order.map((peer) => peer.peer));
    for (const peer of peers) {
      if (peer.roundTripMs !== undefined) {
        this.#core.setRoundTrip(peer.peer, peer.roundTripMs / this.#tickMs);
      }
    }
  }

  // ---------------------------------------------------------------------------
  // The Ready loop.

  /** Queues a run of the loop. With `flushMarkers`, held-back executed markers are written too. */
  #kick(flushMarkers = false): void {
    if (flushMarkers) this.#flushMarkers = true;
    if (this.#scheduled || this.#pumping || this.#persisting) return;
    this.#scheduled = true;
    this.#clock.soon(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  /** Takes Readies until there is nothing to do or a storage commit is in flight. */
  #pump(): void {
    if (this.#installing) {
      if (this.#idle()) this.#settleIdle();
      return;
    }
    if (this.#pumping || this.#persisting || this.#loopError !== undefined) return;
    this.#pumping = true;
    try {
      // An install (the end of an epoch, in #execute) stops the old core's loop.
      while (
        !this.#persisting && !this.#installing && this.#retired === undefined &&
        this.#loopError === undefined
      ) {
        this.#flushBatch();
        if (!this.#readyWanted()) break;
        this.#takeReady(this.#core.ready());
      }
    } finally {
      this.#pumping = false;
    }
    if (this.#idle()) this.#settleIdle();
  }

  /** Whether to take a Ready now; holds back a Ready of executed markers only. */
  #readyWanted(): boolean {
    if (!this.#core.hasUrgentReady()) {
      if (!this.#core.hasReady()) return false;
      const delay = this.#options.markerDelayMs ?? 20;
      if (!this.#flushMarkers && delay > 0) {
        // Only executed markers: let them ride with the next commit.
        this.#markerTimer ??= this.#clock.setTimer(delay, () => {
          this.#markerTimer = undefined;
          this.#kick(true);
        });
        return false;
      }
    }
    this.#flushMarkers = false;
    this.#markerTimer?.cancel();
    this.#markerTimer = undefined;
    return true;
  }

  #takeReady(ready: Ready<KvCommand>): void {
    // The coordinator's own PreAccepts leave while its record is written
    // (Raft thesis §10.2.1); its vote counts once this Ready is advanced.
    this.#send(ready.earlyMessages);
    const effects = this.#pendingEffects;
    const early = this.#unsafeEarlyAnswers;
    if (early.length > 0) this.#unsafeEarlyAnswers = [];
    if (ready.records.length === 0 && effects.size === 0) {
      this.#afterPersist(ready, early);
      return;
    }
    this.#pendingEffects = new Map();
    // Storage that logs changes asks now and then for the whole state, after
    // this batch's effects: the key-value state now, since every execution
    // whose effects are pending has been applied (a copy, taken before the
    // commit, so later executions cannot leak into it).
    const snapshot = this.#storage.wantsSnapshot?.() ? [...this.#kv.entries()] : undefined;
    if (ready.records.length > 0) this.#persistedRecords = true;
    const started = this.#clock.now();
    this.#persisting = true;
    this.#storage.commit({ records: ready.records, effects, snapshot }).then(() => {
      this.#persisting = false;
      this.#observeCommit(this.#clock.now() - started, ready.records.length, effects.size);
      this.#afterPersist(ready, early);
      // Completed later than the call: the loop is not on the stack, restart it.
      if (!this.#pumping) this.#pump();
    }, (error: unknown) => {
      this.#persisting = false;
      // A storage failure: stop accepting writes rather than send messages
      // whose records are not durable.
      this.#loopError = error instanceof Error ? error : new Error(String(error));
      this.#options.log?.(`replica ${this.id}: storage failed, refusing writes: ${error}`);
      this.#settleIdle();
    });
  }

  #afterPersist(ready: Ready<KvCommand>, unsafeEarly: readonly CommitAnswer[]): void {
    // The core this Ready came from: the end of an epoch (#execute) may
    // replace this.#core before the Ready is advanced.
    const core = this.#core;
    this.#noteDecided(ready.decided);
    // The answer rule (./answer.ts): a blind write is answered here, at
    // commit: its instance is decided and the decision is durable (a quorum
    // persisted it before replying, and this Ready's commit record is written).
    // Not earlier: EPaxos* recovery trusts the coordinator's own record, and a
    // coordinator that restarted pre-accepted makes it choose a Nop (see
    // tests/scenarios/testdata/fast_commit_durability.txt). Every other
    // command is answered after it executed here, in #execute.
    this.#answerDecided(ready.decided);
    for (const { request, result } of unsafeEarly) {
      if (this.#answer(request, result)) this.metrics.commandsAnsweredAtCommit++;
    }
    this.#send(ready.messages);
    this.#execute(ready);
    core.advance();
  }

  #observeCommit(elapsedMs: number, records: number, effects: number): void {
    this.metrics.storageCommitSeconds.observe(elapsedMs / 1000);
    if (elapsedMs > 20) {
      this.#options.log?.(
        `slow storage commit: ${
          Math.round(elapsedMs)
        } ms for ${records} records and ${effects} effects`,
      );
    }
  }

  #idle(): boolean {
    return !this.#scheduled && !this.#pumping && !this.#persisting;
  }

  #settleIdle(): void {
    const waiting = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiting) resolve();
  }

  #noteDecided(decided: readonly Decided<KvCommand>[]): void {
    if (decided.length === 0) return;
    const now = this.#clock.now();
    for (const { number } of decided) {
      const proposedAt = this.#proposedAtMs.get(number);
      if (proposedAt === undefined) continue;
      this.#proposedAtMs.delete(number);
      this.metrics.commitSeconds.observe((now - proposedAt) / 1000);
      this.metrics.recentCommitMs.observe(now - proposedAt);
    }
  }

  /** Answers the blind writes of this replica's decided instances (./answer.ts). */
  #answerDecided(decided: readonly Decided<KvCommand>[]): void {
    for (const { number, command } of decided) {
      for (
        const { request, result } of blindWriteAnswers(
          this.id,
          number,
          command,
          this.#kv.versionTag,
        )
      ) {
        if (this.#answer(request, result)) this.metrics.commandsAnsweredAtCommit++;
      }
    }
  }

  #answer(request: string, result: KvResult): boolean {
    const submittedMs = this.#waiters.resolve(request, result);
    if (submittedMs === undefined) return false;
    const latencyMs = this.#clock.now() - submittedMs;
    this.metrics.commandsAnswered++;
    this.metrics.requestSeconds.observe(latencyMs / 1000);
    this.metrics.recentRequestMs.observe(latencyMs);
    return true;
  }

  #send(messages: readonly Message<KvCommand>[]): void {
    if (messages.length === 0) return;
    if (this.#options.traceMessages) {
      for (const message of messages) {
        this.#options.log?.(`send ${describeMessage(message, describeKvCommand)}`);
      }
    }
    this.#transport.send(messages);
  }

  /** A snapshot of the state now, at barrier `barrier`, with the configuration of a later epoch. */
  #snapshotAt(barrier: string): ReplicaSnapshot<KvCommand> {
    const snapshot = snapshotAt(barrier, this.#applied, this.#core, this.#kv);
    // Epoch 1's configuration is the cluster file's: a snapshot of it carries none.
    return this.#configuration.epoch === 1
      ? snapshot
      : { ...snapshot, configuration: this.#configuration };
  }

  #execute(ready: Ready<KvCommand>): void {
    const trace = this.#options.traceMessages ? this.#options.log : undefined;
    const observer = this.#options.observer;
    for (const execution of ready.executions) {
      // The epoch ended in this Ready: by the fence nothing of it follows
      // but Nops, and the old core's executions mean nothing to the new one.
      if (this.#installing || this.#retired !== undefined) break;
      trace?.(`exec ${describeExecution(execution, describeKvCommand)}`);
      if (execution.command !== NOP && this.#endingEpoch === undefined) {
        this.#endingEpoch = reconfToNext(execution.command, this.#configuration.epoch);
      }
      const applied = this.#kv.apply(execution, execution.local);
      this.#applied.add(execution.owner, execution.number);
      observer?.executed?.(execution);
      this.#pendingEffects.set(instanceKey(execution.owner, execution.number), applied.mutations);
      this.#snapshotCaptures.onApplied(
        execution,
        (barrier) => this.#snapshotAt(barrier),
        () => this.#kv.digest,
      );
      for (const { request, result } of applied.results) this.#answer(request, result);
      // Where a snapshot would be read: the end of the change's component.
      // The rest of this Ready belongs to the old epoch (the install may
      // even have completed already, on a disk that calls back at once).
      if (this.#endingEpoch !== undefined && execution.lastOfComponent !== false) {
        this.#endEpoch(this.#endingEpoch);
        break;
      }
    }
    for (const abandoned of ready.abandoned) {
      for (const command of abandoned.commands) {
        // Replaced by a Nop every time it was proposed: it never executed.
        this.#waiters.reject(
          command.request,
          new UnavailableError(`The command could not be ordered: ${abandoned.reason}`),
        );
      }
    }
  }
}
