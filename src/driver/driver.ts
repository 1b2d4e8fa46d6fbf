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

import { describeExecution, describeMessage } from "../core/describe.ts";
import { instanceKey } from "../core/instance.ts";
import { Replica, type ReplicaStats } from "../core/replica.ts";
import type { Decided, Message, Ready } from "../core/types.ts";
import {
  describeKvCommand,
  type KvCommand,
  type KvCommandInput,
  kvConflicts,
} from "../kv/commands.ts";
import { type KvMutation, type KvResult, KvStateMachine } from "../kv/state_machine.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { LoadedState, ReplicaSnapshot, ReplicaStorage } from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { PeerStats, PeerTransport } from "../transport/types.ts";
import { OutcomeUnknownError, SnapshotInstalledError, UnavailableError } from "../errors.ts";
import { blindWriteAnswers, type CommitAnswer } from "./answer.ts";
import { AppliedSet, snapshotAt } from "./applied.ts";
import { SnapshotCaptures } from "./snapshot_captures.ts";
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
    this.#core = ReplicaDriver.#newCore(options, loaded);
    this.#kv = ReplicaDriver.#newState(options, loaded);
    this.#applied = new AppliedSet(options.replicas, loaded.pruneFloor, loaded.records);
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
    options.log?.(
      `replica ${options.id}: loaded ${loaded.records.length} instances and ${loaded.entries.length} keys`,
    );
  }

  static #newCore(
    options: ReplicaDriverOptions,
    loaded: LoadedState<KvCommand>,
  ): Replica<KvCommand> {
    return new Replica<KvCommand>(
      {
        id: options.id,
        replicas: options.replicas,
        conflicts: kvConflicts,
        timing: { ...NODE_TIMING, ...options.timing },
        retentionCommands: options.maxHeldCommands ?? DEFAULT_MAX_HELD_COMMANDS,
      },
      { records: loaded.records, pruneFloor: loaded.pruneFloor },
    );
  }

  static #newState(options: ReplicaDriverOptions, loaded: LoadedState<KvCommand>): KvStateMachine {
    return new KvStateMachine(
      loaded.entries,
      options.versionTag === undefined ? {} : { versionTag: options.versionTag },
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

  /** Peers heard from within the contact window. */
  reachablePeers(): number {
    const now = this.#clock.now();
    const window = this.#options.contactWindowMs ?? 3000;
    return this.#transport.stats().filter((peer) =>
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
    this.metrics.batchesReceived++;
    this.metrics.messagesReceived += batch.messages.length;
    const log = this.#options.traceMessages ? this.#options.log : undefined;
    for (const message of batch.messages) {
      log?.(`recv ${describeMessage(message, describeKvCommand)}`);
      this.#core.step(message);
    }
    this.#kick();
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
  takeSnapshot(forPeer?: number): Promise<ReplicaSnapshot<KvCommand>> {
    return new Promise((resolve, reject) => this.takeSnapshotWith({ resolve, reject }, forPeer));
  }

  /**
   * {@linkcode ReplicaDriver.takeSnapshot} with callbacks instead of a promise
   * (the simulator runs on virtual time, without microtasks). Exactly one is
   * called, possibly before this returns.
   */
  takeSnapshotWith(answer: SnapshotCapture, forPeer?: number): void {
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
  ): void {
    if (this.#stopped || this.#installing) {
      reject(new UnavailableError("The replica is stopping or installing a snapshot already"));
      return;
    }
    this.#installing = true;
    const fail = (error: unknown) => {
      this.#installing = false;
      this.#kick();
      reject(error instanceof Error ? error : new Error(String(error)));
    };
    const install = () => {
      const started = this.#clock.now();
      this.#storage.install(snapshot).then(() => {
        const installedMs = this.#clock.now() - started;
        this.#storage.load().then((loaded) => {
          this.#rebuild(loaded);
          this.#installing = false;
          this.metrics.snapshotsInstalled++;
          this.#options.log?.(
            `replica ${this.id}: installed a snapshot of ${snapshot.entries.length} keys ` +
              `at ${snapshot.barrier} (executed up to ${snapshot.executedPrefix.join(",")}): ` +
              `storage ${Math.round(installedMs)} ms, reload ${
                Math.round(this.#clock.now() - started - installedMs)
              } ms`,
          );
          this.#kick();
          resolve();
        }, fail);
      }, fail);
    };
    // Wait for the Ready in flight: storage takes no install during a commit.
    if (this.#idle()) install();
    else this.#idleWaiters.push(install);
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
    return this.#installing || this.#snapshotFetcher.busy;
  }

  /** Replaces the core and the state by what storage holds (after an install). */
  #rebuild(loaded: LoadedState<KvCommand>): void {
    const unproposed = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    for (const command of unproposed) {
      this.#waiters.reject(
        command.request,
        new UnavailableError("The replica installed a snapshot before proposing the command"),
      );
    }
    this.#waiters.rejectAll(() =>
      new SnapshotInstalledError(
        "The replica installed a snapshot while the command was in flight",
      )
    );
    this.#snapshotCaptures.rejectAll("The replica installed a snapshot while taking one");
    this.#proposedAtMs.clear();
    this.#unsafeEarlyAnswers = [];
    // Effects of executions not yet persisted: the snapshot's state replaces them.
    this.#pendingEffects = new Map();
    this.#core = ReplicaDriver.#newCore(this.#options, loaded);
    this.#kv = ReplicaDriver.#newState(this.#options, loaded);
    this.#applied = new AppliedSet(this.#options.replicas, loaded.pruneFloor, loaded.records);
    this.#lastTickMs = this.#clock.now();
    this.#updatePeerOrder();
  }

  // ---------------------------------------------------------------------------
  // Admission and batching.

  #admissionProblem(barrier: boolean): UnavailableError | undefined {
    if (this.#stopped) return new UnavailableError("The replica is shutting down");
    if (this.#installing) {
      return new UnavailableError("The replica is installing a snapshot from a peer", {
        retryAfterSeconds: 1,
      });
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
    this.#batchBytes += command.op === "put" ? command.value.length + command.key.length : 64;
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
    if (this.#batch.length === 0) return;
    const commands = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#batchTimer?.cancel();
    this.#batchTimer = undefined;
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
    for (let i = 0; i < ticks; i++) this.#core.tick();
    this.#updatePeerOrder();
    this.#snapshotFetcher.maybeStart(now, this.#core.snapshotSources());
    this.#kick();
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
    if (this.#transport.probe !== undefined) {
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
      while (!this.#persisting && this.#loopError === undefined) {
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
    this.#core.advance();
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

  #execute(ready: Ready<KvCommand>): void {
    const trace = this.#options.traceMessages ? this.#options.log : undefined;
    const observer = this.#options.observer;
    for (const execution of ready.executions) {
      trace?.(`exec ${describeExecution(execution, describeKvCommand)}`);
      const applied = this.#kv.apply(execution, execution.local);
      this.#applied.add(execution.owner, execution.number);
      observer?.executed?.(execution);
      this.#pendingEffects.set(instanceKey(execution.owner, execution.number), applied.mutations);
      this.#snapshotCaptures.onApplied(
        execution,
        (barrier) => snapshotAt(barrier, this.#applied, this.#core, this.#kv),
        () => this.#kv.digest,
      );
      for (const { request, result } of applied.results) this.#answer(request, result);
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
