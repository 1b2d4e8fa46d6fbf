/**
 * The driver: one replica's core, storage, transport, clock and key-value
 * state, run in the order the core requires (etcd raft's `Ready` contract):
 * take one Ready, persist its records in one storage commit (group commit),
 * then send its messages, then execute its commands, then advance. No message
 * leaves before the records it depends on are durable.
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
import { DEFAULT_TIMING, Replica, type ReplicaStats, type TimingOptions } from "../core/replica.ts";
import type { Message, Ready } from "../core/types.ts";
import { describeKvCommand, type KvCommand, kvConflicts } from "../kv/commands.ts";
import { type KvMutation, type KvResult, KvStateMachine } from "../kv/state_machine.ts";
import type { Clock } from "../runtime/clock.ts";
import type { ReplicaStorage } from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { PeerStats, PeerTransport } from "../transport/types.ts";
import { Histogram, RecentWindow } from "./metrics.ts";

/** Why a request could not be proposed: nothing was proposed, the client may retry. */
export class UnavailableError extends Error {
  /** Suggested wait before retrying, in seconds. */
  readonly retryAfterSeconds: number;
  /** Creates an error with a reason for the client. */
  constructor(message: string, retryAfterSeconds = 1) {
    super(message);
    this.name = "UnavailableError";
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The command was proposed but its outcome is not known in time: the client must read to find out. */
export class OutcomeUnknownError extends Error {
  /** Creates an error with a reason for the client. */
  constructor(message: string) {
    super(message);
    this.name = "OutcomeUnknownError";
  }
}

/** Settings of a replica node. */
export interface ReplicaNodeOptions {
  /** This replica's id. */
  readonly id: number;
  /** Cluster size. */
  readonly replicas: number;
  /** Durable state. */
  readonly storage: ReplicaStorage<KvCommand>;
  /** Peer messages out. */
  readonly transport: PeerTransport<KvCommand>;
  /** Time. */
  readonly clock: Clock;
  /** Milliseconds per core tick (default 5). */
  readonly tickMs?: number;
  /** Core timers in ticks (defaults suit a 5 ms tick on a LAN; round trips scale them up). */
  readonly timing?: Partial<TimingOptions>;
  /** Most commands per instance (default 1000). */
  readonly maxBatchCommands?: number;
  /** Most value bytes per instance (default 512 KiB). */
  readonly maxBatchBytes?: number;
  /** Longest a command waits to be batched, in milliseconds (default 5). */
  readonly batchWindowMs?: number;
  /** Most client commands waiting for their outcome before new ones are refused (default 20,000). */
  readonly maxPendingCommands?: number;
  /**
   * Most client commands held in memory (and storage) before new ones are
   * refused (default 1,000,000). Executed instances are dropped only once every
   * replica executed them, so a replica that is down or far behind makes the
   * others hold everything it will need; this bounds that retention. When it is
   * reached, writes are refused with 503 until the replica catches up (it is
   * sent what it missed when it returns) or is removed from the cluster.
   */
  readonly maxHeldCommands?: number;
  /** How long a client waits for its command to execute, in milliseconds (default 5000). */
  readonly requestTimeoutMs?: number;
  /** A peer counts as reachable if heard from within this many milliseconds (default 3000). */
  readonly contactWindowMs?: number;
  /**
   * A peer leaves the thrifty preference order when a request to it has been
   * unanswered for twice its round trip plus this margin (default 20 ms).
   */
  readonly silenceMarginMs?: number;
  /** Idle peers are probed this often, in milliseconds (default 100). */
  readonly probeIntervalMs?: number;
  /** Receives one line per notable event (default: nothing). */
  readonly log?: (line: string) => void;
  /** Log every message sent and received (debugging). */
  readonly traceMessages?: boolean;
  /**
   * How long executed markers may wait to ride with the next storage commit
   * before they get one of their own, in milliseconds (default 20; 0 writes
   * them at once). They gate no message and answer no client.
   */
  readonly markerDelayMs?: number;
}

/** Core timers for a 5 ms tick on a LAN; measured round trips stretch the WAN ones. */
export const NODE_TIMING: Partial<TimingOptions> = {
  defaultRoundTripTicks: 10,
  widenRoundTrips: 2,
  widenMarginTicks: 4,
  retransmitTicks: 20,
  maxRetransmitTicks: 400,
  commitRequestTicks: 20,
  recoveryTicks: 100,
  recoveryStaggerTicks: 40,
  orphanTicks: 600,
  recoveryAttemptTicks: 200,
  frontierTicks: 20,
  scanTicks: 4,
  forgetTicks: 2000,
};

interface Waiter {
  readonly resolve: (result: KvResult) => void;
  readonly reject: (error: Error) => void;
  readonly submittedMs: number;
  /** When the request is answered 504 if it has not executed. */
  readonly deadlineMs: number;
}

/** Default of {@linkcode ReplicaNodeOptions.maxHeldCommands}. */
export const DEFAULT_MAX_HELD_COMMANDS = 1_000_000;

/** Bucket bounds of latency histograms, seconds: loopback to wide area. */
const LATENCY_BUCKETS_SECONDS = [
  0.001,
  0.002,
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.15,
  0.2,
  0.3,
  0.5,
  1,
  2.5,
  5,
];

/** Counters and histograms the metrics endpoint renders. */
export interface NodeMetrics {
  /** Client commands proposed. */
  commandsProposed: number;
  /** Client commands executed here with a waiting client. */
  commandsAnswered: number;
  /** Client requests refused before proposing (503). */
  requestsRefused: number;
  /** Client requests timed out after proposing (504). */
  requestsTimedOut: number;
  /** Instances proposed here. */
  instancesProposed: number;
  /** Peer batches received. */
  batchesReceived: number;
  /** Peer messages received. */
  messagesReceived: number;
  /** Storage commit durations, seconds. */
  readonly storageCommitSeconds: Histogram;
  /** Commands per proposed instance. */
  readonly batchSize: Histogram;
  /** Client-seen latency from submit to execution, seconds. */
  readonly requestSeconds: Histogram;
  /** Time from proposing an instance to deciding it (fast, slow or recovered), seconds. */
  readonly commitSeconds: Histogram;
  /** The last client-seen latencies, milliseconds (for `/status`). */
  readonly recentRequestMs: RecentWindow;
  /** The last propose-to-decide times, milliseconds (for `/status`). */
  readonly recentCommitMs: RecentWindow;
}

/** One replica, driving its core. */
export class ReplicaNode {
  readonly id: number;
  readonly #options: ReplicaNodeOptions;
  readonly #core: Replica<KvCommand>;
  readonly #kv: KvStateMachine;
  readonly #storage: ReplicaStorage<KvCommand>;
  readonly #transport: PeerTransport<KvCommand>;
  readonly #clock: Clock;
  readonly #tickMs: number;
  readonly #bootId: string;
  #requestCounter = 0;
  readonly #waiters = new Map<string, Waiter>();
  #batch: KvCommand[] = [];
  #batchBytes = 0;
  /** When each instance proposed here (and not yet decided) was proposed. */
  readonly #proposedAtMs = new Map<number, number>();
  #batchTimer: ReturnType<typeof setTimeout> | undefined;
  #markerTimer: ReturnType<typeof setTimeout> | undefined;
  #pendingEffects = new Map<number, readonly KvMutation[]>();
  #running = false;
  #stopped = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #lastTickMs: number;
  #loopError: Error | undefined;
  #idle: Promise<void> = Promise.resolve();
  #idleResolve: (() => void) | undefined;
  readonly #startedMs: number;
  readonly metrics: NodeMetrics;

  private constructor(
    options: ReplicaNodeOptions,
    core: Replica<KvCommand>,
    kv: KvStateMachine,
  ) {
    this.id = options.id;
    this.#options = options;
    this.#core = core;
    this.#kv = kv;
    this.#storage = options.storage;
    this.#transport = options.transport;
    this.#clock = options.clock;
    this.#tickMs = options.tickMs ?? 5;
    this.#lastTickMs = this.#clock.now();
    this.#startedMs = this.#clock.now();
    this.#bootId = crypto.randomUUID().slice(0, 8);
    this.metrics = {
      commandsProposed: 0,
      commandsAnswered: 0,
      requestsRefused: 0,
      requestsTimedOut: 0,
      instancesProposed: 0,
      batchesReceived: 0,
      messagesReceived: 0,
      storageCommitSeconds: new Histogram([
        0.0005,
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.064,
        0.128,
        0.256,
        0.512,
        1,
      ]),
      batchSize: new Histogram([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]),
      requestSeconds: new Histogram(LATENCY_BUCKETS_SECONDS),
      commitSeconds: new Histogram(LATENCY_BUCKETS_SECONDS),
      recentRequestMs: new RecentWindow(),
      recentCommitMs: new RecentWindow(),
    };
  }

  /**
   * Opens a replica: loads what its storage holds, rebuilds the core and the
   * key-value state, and resumes or recovers unfinished instances.
   */
  static async open(options: ReplicaNodeOptions): Promise<ReplicaNode> {
    const loaded = await options.storage.load();
    const core = new Replica<KvCommand>(
      {
        id: options.id,
        replicas: options.replicas,
        conflicts: kvConflicts,
        timing: { ...NODE_TIMING, ...options.timing },
      },
      { records: loaded.records, pruneFloor: loaded.pruneFloor },
    );
    const node = new ReplicaNode(options, core, new KvStateMachine(loaded.entries));
    options.log?.(
      `replica ${options.id}: loaded ${loaded.records.length} instances and ${loaded.entries.length} keys`,
    );
    return node;
  }

  /** Starts ticking and runs the first Ready (resumed proposals, recovery). */
  start(): void {
    if (this.#ticker !== undefined || this.#stopped) return;
    this.#lastTickMs = this.#clock.now();
    this.#ticker = setInterval(() => this.#onTimer(), this.#tickMs);
    this.#kick();
  }

  /** Stops ticking, refuses new work, waits for the Ready in flight, then closes everything. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    if (this.#batchTimer !== undefined) clearTimeout(this.#batchTimer);
    if (this.#markerTimer !== undefined) clearTimeout(this.#markerTimer);
    // Write whatever markers are held back before closing.
    this.#kick(true);
    await this.#idle;
    for (const [request, waiter] of this.#waiters) {
      waiter.reject(new OutcomeUnknownError("The replica is shutting down"));
      this.#waiters.delete(request);
    }
    await this.#transport.close();
    this.#storage.close();
  }

  /** The core's counters. */
  get stats(): Readonly<ReplicaStats> {
    return this.#core.stats;
  }

  /** The core itself (read-only uses: status, describe). */
  get core(): Replica<KvCommand> {
    return this.#core;
  }

  /** The executed key-value state (for local reads). */
  get state(): KvStateMachine {
    return this.#kv;
  }

  /** The node's clock reading (the clock of `lastContactMs` in peer stats). */
  now(): number {
    return this.#clock.now();
  }

  /** Milliseconds since this node started. */
  get uptimeMs(): number {
    return this.#clock.now() - this.#startedMs;
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

  /** The retention bound: see {@linkcode ReplicaNodeOptions.maxHeldCommands}. */
  get maxHeldCommands(): number {
    return this.#options.maxHeldCommands ?? DEFAULT_MAX_HELD_COMMANDS;
  }

  /** A request id unique to this process. */
  newRequestId(): string {
    return `${this.id}.${this.#bootId}.${++this.#requestCounter}`;
  }

  /**
   * Proposes `command` and resolves with its result once it has executed here.
   *
   * @throws {UnavailableError} if no quorum is reachable or too much is pending
   *   (nothing was proposed).
   * @throws {OutcomeUnknownError} if the command was proposed but did not
   *   execute in time.
   */
  submit(command: KvCommand): Promise<KvResult> {
    if (this.#stopped) {
      this.metrics.requestsRefused++;
      return Promise.reject(new UnavailableError("The replica is shutting down"));
    }
    if (this.#loopError !== undefined) {
      this.metrics.requestsRefused++;
      return Promise.reject(
        new UnavailableError(`The replica cannot persist: ${this.#loopError.message}`, 5),
      );
    }
    if (this.#waiters.size >= (this.#options.maxPendingCommands ?? 20_000)) {
      this.metrics.requestsRefused++;
      return Promise.reject(new UnavailableError("Too many requests in progress"));
    }
    const heldLimit = this.#options.maxHeldCommands ?? DEFAULT_MAX_HELD_COMMANDS;
    if (this.#core.heldCommands >= heldLimit) {
      this.metrics.requestsRefused++;
      const lag = this.#core.executionLag();
      const behind = lag.map((instances, replica) => ({ instances, replica }))
        .filter((entry) => entry.instances > 0)
        .sort((a, b) => b.instances - a.instances)
        .map((entry) => `replica ${entry.replica} (${entry.instances} instances behind)`);
      return Promise.reject(
        new UnavailableError(
          `${this.#core.heldCommands} commands are held until every replica executes them ` +
            `(limit ${heldLimit}); waiting for ${behind.join(", ") || "pruning to catch up"}`,
          5,
        ),
      );
    }
    if (!this.quorumReachable()) {
      this.metrics.requestsRefused++;
      return Promise.reject(new UnavailableError("No quorum of replicas is reachable"));
    }
    return new Promise<KvResult>((resolve, reject) => {
      // No timer per request (thousands in flight under load cost the event
      // loop measurably): the tick sweeps expired waiters, oldest first.
      const submittedMs = this.#clock.now();
      const deadlineMs = submittedMs + (this.#options.requestTimeoutMs ?? 5000);
      this.#waiters.set(command.request, { resolve, reject, submittedMs, deadlineMs });
      this.#enqueue(command);
    });
  }

  /** Steps a batch received from a peer (already decoded and validated). */
  receive(batch: PeerBatch<KvCommand>): void {
    if (this.#stopped) return;
    this.metrics.batchesReceived++;
    this.metrics.messagesReceived += batch.messages.length;
    const log = this.#options.traceMessages ? this.#options.log : undefined;
    for (const message of batch.messages) {
      log?.(`recv ${describeMessage(message, describeKvCommand)}`);
      this.#core.step(message);
    }
    this.#kick();
  }

  /** Resolves when no Ready is being processed (for tests and shutdown). */
  whenIdle(): Promise<void> {
    return this.#idle;
  }

  // ---------------------------------------------------------------------------

  #enqueue(command: KvCommand): void {
    this.#batch.push(command);
    this.#batchBytes += command.op === "put" ? command.value.length + command.key.length : 64;
    const full = this.#batch.length >= (this.#options.maxBatchCommands ?? 1000) ||
      this.#batchBytes >= (this.#options.maxBatchBytes ?? 512 * 1024);
    if (full || !this.#running) {
      // Full, or nothing is being persisted: propose in this turn of the event
      // loop (the loop starts in a microtask, so same-turn arrivals join).
      this.#kick();
    } else if (this.#batchTimer === undefined) {
      this.#batchTimer = setTimeout(() => {
        this.#batchTimer = undefined;
        this.#flushBatch();
        this.#kick();
      }, this.#options.batchWindowMs ?? 5);
    }
  }

  #flushBatch(): void {
    if (this.#batch.length === 0) return;
    const commands = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    if (this.#batchTimer !== undefined) {
      clearTimeout(this.#batchTimer);
      this.#batchTimer = undefined;
    }
    const { number } = this.#core.propose(commands);
    // Bounded by the proposals in flight (each is decided, as a Nop at worst).
    this.#proposedAtMs.set(number, this.#clock.now());
    this.metrics.instancesProposed++;
    this.metrics.commandsProposed += commands.length;
    this.metrics.batchSize.observe(commands.length);
  }

  #onTimer(): void {
    const now = this.#clock.now();
    this.#expireWaiters(now);
    let ticks = Math.floor((now - this.#lastTickMs) / this.#tickMs);
    if (ticks <= 0) return;
    this.#lastTickMs += ticks * this.#tickMs;
    // After a long pause (GC, SIGSTOP) do not replay every missed tick.
    ticks = Math.min(ticks, 200);
    for (let i = 0; i < ticks; i++) this.#core.tick();
    this.#updatePeerOrder();
    this.#kick();
  }

  /**
   * Answers 504 to requests past their deadline. Every request has the same
   * timeout, so the map's insertion order is deadline order: the sweep stops
   * at the first waiter still in time.
   */
  #expireWaiters(now: number): void {
    for (const [request, waiter] of this.#waiters) {
      if (waiter.deadlineMs > now) break;
      this.#waiters.delete(request);
      this.metrics.requestsTimedOut++;
      waiter.reject(
        new OutcomeUnknownError("The command was proposed but did not execute in time"),
      );
    }
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

  /**
   * Runs the Ready loop if it is not running already. With `flushMarkers`,
   * held-back executed markers are written too.
   */
  #kick(flushMarkers = false): void {
    if (flushMarkers) this.#flushMarkers = true;
    if (this.#running) return;
    this.#running = true;
    this.#idle = new Promise((resolve) => this.#idleResolve = resolve);
    queueMicrotask(() => this.#loop());
  }

  #flushMarkers = false;

  async #loop(): Promise<void> {
    try {
      for (;;) {
        this.#flushBatch();
        if (!this.#core.hasUrgentReady()) {
          if (!this.#core.hasReady()) break;
          const delay = this.#options.markerDelayMs ?? 20;
          if (!this.#flushMarkers && delay > 0) {
            // Only executed markers: let them ride with the next commit.
            this.#markerTimer ??= setTimeout(() => {
              this.#markerTimer = undefined;
              this.#kick(true);
            }, delay);
            break;
          }
        }
        this.#flushMarkers = false;
        if (this.#markerTimer !== undefined) {
          clearTimeout(this.#markerTimer);
          this.#markerTimer = undefined;
        }
        const ready = this.#core.ready();
        await this.#persist(ready);
        this.#noteDecided(ready.decided.map((decided) => decided.number));
        this.#send(ready.messages);
        this.#execute(ready);
        this.#core.advance();
      }
    } catch (error) {
      // A storage failure: stop accepting writes rather than send messages
      // whose records are not durable.
      this.#loopError = error as Error;
      this.#options.log?.(`replica ${this.id}: storage failed, refusing writes: ${error}`);
    } finally {
      this.#running = false;
      this.#idleResolve?.();
    }
    if (this.#loopError === undefined && (this.#batch.length > 0 || this.#core.hasUrgentReady())) {
      this.#kick();
    }
  }

  async #persist(ready: Ready<KvCommand>): Promise<void> {
    const effects = this.#pendingEffects;
    if (ready.records.length === 0 && effects.size === 0) return;
    this.#pendingEffects = new Map();
    // Storage that logs changes asks now and then for the whole state, after
    // this batch's effects: the key-value state now, since every execution
    // whose effects are pending has been applied (a copy, taken before the
    // await, so later executions cannot leak into it).
    const snapshot = this.#storage.wantsSnapshot?.() ? [...this.#kv.entries()] : undefined;
    const started = this.#clock.now();
    await this.#storage.commit({ records: ready.records, effects, snapshot });
    const elapsed = this.#clock.now() - started;
    this.metrics.storageCommitSeconds.observe(elapsed / 1000);
    if (elapsed > 20) {
      this.#options.log?.(
        `slow storage commit: ${
          Math.round(elapsed)
        } ms for ${ready.records.length} records and ${effects.size} effects`,
      );
    }
  }

  #noteDecided(numbers: readonly number[]): void {
    if (numbers.length === 0) return;
    const now = this.#clock.now();
    for (const number of numbers) {
      const proposedAt = this.#proposedAtMs.get(number);
      if (proposedAt === undefined) continue;
      this.#proposedAtMs.delete(number);
      this.metrics.commitSeconds.observe((now - proposedAt) / 1000);
      this.metrics.recentCommitMs.observe(now - proposedAt);
    }
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
    const now = this.#clock.now();
    const trace = this.#options.traceMessages ? this.#options.log : undefined;
    for (const execution of ready.executions) {
      trace?.(`exec ${describeExecution(execution, describeKvCommand)}`);
      const applied = this.#kv.apply(execution, execution.local);
      this.#pendingEffects.set(instanceKey(execution.owner, execution.number), applied.mutations);
      for (const { request, result } of applied.results) {
        const waiter = this.#waiters.get(request);
        if (waiter === undefined) continue;
        this.#waiters.delete(request);
        this.metrics.commandsAnswered++;
        this.metrics.requestSeconds.observe((now - waiter.submittedMs) / 1000);
        this.metrics.recentRequestMs.observe(now - waiter.submittedMs);
        waiter.resolve(result);
      }
    }
    for (const abandoned of ready.abandoned) {
      for (const command of abandoned.commands) {
        const waiter = this.#waiters.get(command.request);
        if (waiter === undefined) continue;
        this.#waiters.delete(command.request);
        // Replaced by a Nop every time it was proposed: it never executed.
        waiter.reject(
          new UnavailableError(`The command could not be ordered: ${abandoned.reason}`),
        );
      }
    }
  }
}

/** The timers a node gives its core, for `/status`. */
export function nodeTiming(options: Partial<TimingOptions> = {}): TimingOptions {
  return { ...DEFAULT_TIMING, ...NODE_TIMING, ...options };
}
