/**
 * The Ready loop of a driver (etcd raft's `Ready` contract): it takes one
 * Ready of the core at a time, sends the messages that may leave early (the
 * coordinator's own PreAccepts), persists the records and the executions'
 * effects in one storage commit (group commit), then answers what the commit
 * made durable, sends the rest of the messages, executes, and advances. No
 * message but the early ones leaves before the records it depends on are
 * durable.
 *
 * A storage commit may complete synchronously (the simulator's disk calls
 * back inside `then`), so the loop is a trampoline, never recursion; and it
 * uses callbacks, not promise chains, since the simulator's storage does not
 * chain.
 *
 * @module
 */

import { describeMessage } from "../core/describe.ts";
import type { Replica } from "../core/replica.ts";
import type { Message, Ready } from "../core/types.ts";
import { describeKvCommand, type KvCommand } from "../kv/commands.ts";
import type { KvMutation, KvStateMachine } from "../kv/state_machine.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { ReplicaStorage } from "../storage/types.ts";
import type { PeerTransport } from "../transport/types.ts";
import type { CommitAnswer } from "./answer.ts";
import type { DriverMetrics } from "./metrics.ts";
import type { ReplicaDriverOptions } from "./options.ts";

/** A storage commit slower than this (ms) is logged. */
export const SLOW_COMMIT_MS = 20;
/** Slow storage commits are logged at most once in this many ms. */
export const SLOW_COMMIT_LOG_INTERVAL_MS = 1000;

/** What the loop needs of its driver. */
export interface ReadyLoopHost {
  /** This replica's id (for logs). */
  readonly id: number;
  /** The driver's settings (`markerDelayMs`, `traceMessages`, `log`). */
  readonly options: ReplicaDriverOptions;
  /** Durable state. */
  readonly storage: ReplicaStorage<KvCommand>;
  /** Peer messages out. */
  readonly transport: PeerTransport<KvCommand>;
  /** Time and timers. */
  readonly clock: Clock;
  /** Counters and histograms (storage commit durations). */
  readonly metrics: DriverMetrics;
  /** The core whose Readies are taken now (an epoch's end or an install replaces it). */
  core(): Replica<KvCommand>;
  /** Whether a snapshot is being installed: the loop waits, and only settles idle waiters. */
  installing(): boolean;
  /** Whether the replica takes no Readies any more (it left the cluster). */
  halted(): boolean;
  /** Proposes the commands waiting to be batched, before each Ready is taken. */
  flushBatch(): void;
  /** The answers the broken answer rule gives once the next Ready is written (and forgets them). */
  takeEarlyAnswers(): readonly CommitAnswer[];
  /**
   * The Ready's records are durable: answers what it decided (the answer
   * rule, `answer.ts`) and the early answers taken with it.
   */
  decided(ready: Ready<KvCommand>, early: readonly CommitAnswer[]): void;
  /** Executes the Ready's commands (its messages have left). */
  execute(ready: Ready<KvCommand>): void;
  /** The key-value state now (storage that logs changes asks for the whole of it now and then). */
  state(): KvStateMachine;
  /** A Ready was advanced: its executions are applied (reads held for them may go on). */
  advanced?(): void;
}

/** Takes the core's Readies in the order its contract requires. */
export class ReadyLoop {
  readonly #host: ReadyLoopHost;
  #markerTimer: Timer | undefined;
  #flushMarkers = false;
  /** Effects of executions not yet persisted, by instance key. */
  #pendingEffects = new Map<number, readonly KvMutation[]>();
  /** When the last slow-commit line was logged (clock ms), and slow commits since then. */
  #slowCommitLoggedAt = -Infinity;
  #slowCommitsUnlogged = 0;
  /** A `soon` callback is queued to run the loop. */
  #scheduled = false;
  /** The loop is running (on this stack). */
  #pumping = false;
  /** A storage commit is in flight. */
  #persisting = false;
  /** Storage failed, or an epoch could not start: the loop takes nothing more. */
  #error: Error | undefined;
  #idleWaiters: (() => void)[] = [];
  /** This process has persisted instance records (it took part, with a memory of it). */
  #persistedRecords = false;

  /** A loop that has taken nothing yet. */
  constructor(host: ReadyLoopHost) {
    this.#host = host;
  }

  /** Whether a storage commit is in flight. */
  get persisting(): boolean {
    return this.#persisting;
  }

  /** Why the loop stopped for good (storage failed), if it did. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** Whether this process has persisted instance records. */
  get persistedRecords(): boolean {
    return this.#persistedRecords;
  }

  /** Stops the loop for good with `error` (writes are refused from now on). */
  fail(error: Error): void {
    this.#error = error;
  }

  /** Notes the effects of an execution applied here, persisted with the next Ready. */
  addEffects(key: number, mutations: readonly KvMutation[]): void {
    this.#pendingEffects.set(key, mutations);
  }

  /** The effects not yet persisted, in the order applied. */
  pendingEffects(): (readonly KvMutation[])[] {
    return [...this.#pendingEffects.values()];
  }

  /** Forgets the effects not yet persisted (a snapshot's state replaces them). */
  clearEffects(): void {
    this.#pendingEffects = new Map();
  }

  /** Queues a run of the loop. With `flushMarkers`, held-back executed markers are written too. */
  kick(flushMarkers = false): void {
    if (flushMarkers) this.#flushMarkers = true;
    if (this.#scheduled || this.#pumping || this.#persisting) return;
    this.#scheduled = true;
    this.#host.clock.soon(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  /** Writes the markers held back, then resolves once idle (shutdown). */
  stop(): Promise<void> {
    this.#markerTimer?.cancel();
    // Write whatever markers are held back before closing.
    this.kick(true);
    return this.whenIdle();
  }

  /** Resolves when no Ready is being processed or queued (for tests and shutdown). */
  whenIdle(): Promise<void> {
    if (this.#idle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Runs `callback` now if no Ready is in flight or queued, else once there is none. */
  whenIdleThen(callback: () => void): void {
    if (this.#idle()) callback();
    else this.#idleWaiters.push(callback);
  }

  /** Takes Readies until there is nothing to do or a storage commit is in flight. */
  #pump(): void {
    const host = this.#host;
    if (host.installing()) {
      if (this.#idle()) this.#settleIdle();
      return;
    }
    if (this.#pumping || this.#persisting || this.#error !== undefined) return;
    this.#pumping = true;
    try {
      // An install (the end of an epoch, in the host's execute) stops the old core's loop.
      while (
        !this.#persisting && !host.installing() && !host.halted() && this.#error === undefined
      ) {
        host.flushBatch();
        if (!this.#readyWanted()) break;
        this.#takeReady(host.core().ready());
      }
    } finally {
      this.#pumping = false;
    }
    if (this.#idle()) this.#settleIdle();
  }

  /** Whether to take a Ready now; holds back a Ready of executed markers only. */
  #readyWanted(): boolean {
    const core = this.#host.core();
    if (!core.hasUrgentReady()) {
      if (!core.hasReady()) return false;
      const delay = this.#host.options.markerDelayMs ?? 20;
      if (!this.#flushMarkers && delay > 0) {
        // Only executed markers: let them ride with the next commit.
        this.#markerTimer ??= this.#host.clock.setTimer(delay, () => {
          this.#markerTimer = undefined;
          this.kick(true);
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
    const host = this.#host;
    // The coordinator's own PreAccepts leave while its record is written
    // (Raft thesis §10.2.1); its vote counts once this Ready is advanced.
    this.#send(ready.earlyMessages);
    const effects = this.#pendingEffects;
    const early = host.takeEarlyAnswers();
    if (ready.records.length === 0 && effects.size === 0) {
      this.#afterPersist(ready, early);
      return;
    }
    this.#pendingEffects = new Map();
    // Storage that logs changes asks now and then for the whole state, after
    // this batch's effects: the key-value state now, since every execution
    // whose effects are pending has been applied (a copy, taken before the
    // commit, so later executions cannot leak into it).
    const snapshot = host.storage.wantsSnapshot?.() ? [...host.state().entries()] : undefined;
    if (ready.records.length > 0) this.#persistedRecords = true;
    const started = host.clock.now();
    this.#persisting = true;
    host.storage.commit({ records: ready.records, effects, snapshot }).then(() => {
      this.#persisting = false;
      this.#observeCommit(host.clock.now() - started, ready.records.length, effects.size);
      this.#afterPersist(ready, early);
      // Completed later than the call: the loop is not on the stack, restart it.
      if (!this.#pumping) this.#pump();
    }, (error: unknown) => {
      this.#persisting = false;
      // A storage failure: stop accepting writes rather than send messages
      // whose records are not durable.
      this.#error = error instanceof Error ? error : new Error(String(error));
      host.options.log?.(`replica ${host.id}: storage failed, refusing writes: ${error}`);
      this.#settleIdle();
    });
  }

  #afterPersist(ready: Ready<KvCommand>, unsafeEarly: readonly CommitAnswer[]): void {
    // The core this Ready came from: the end of an epoch (in execute) may
    // replace the host's core before the Ready is advanced.
    const core = this.#host.core();
    // The answer rule (./answer.ts): a blind write is answered here, at
    // commit: its instance is decided and the decision is durable (a quorum
    // persisted it before replying, and this Ready's commit record is written).
    // Not earlier: EPaxos* recovery trusts the coordinator's own record, and a
    // coordinator that restarted pre-accepted makes it choose a Nop (see
    // tests/scenarios/testdata/fast_commit_durability.txt). Every other
    // command is answered after it executed here.
    this.#host.decided(ready, unsafeEarly);
    this.#send(ready.messages);
    this.#host.execute(ready);
    core.advance();
    this.#host.advanced?.();
  }

  #observeCommit(elapsedMs: number, records: number, effects: number): void {
    this.#host.metrics.storageCommitSeconds.observe(elapsedMs / 1000);
    if (elapsedMs <= SLOW_COMMIT_MS) return;
    // At most one line a second: on a loaded machine every commit can be
    // slow, and a line each (~100 a second) cost 1.2 % of the main thread.
    const now = this.#host.clock.now();
    if (now - this.#slowCommitLoggedAt < SLOW_COMMIT_LOG_INTERVAL_MS) {
      this.#slowCommitsUnlogged++;
      return;
    }
    const unlogged = this.#slowCommitsUnlogged;
    this.#slowCommitLoggedAt = now;
    this.#slowCommitsUnlogged = 0;
    this.#host.options.log?.(
      `slow storage commit: ${
        Math.round(elapsedMs)
      } ms for ${records} records and ${effects} effects${
        unlogged === 0
          ? ""
          : ` (and ${unlogged} more over ${SLOW_COMMIT_MS} ms since the last line)`
      }`,
    );
  }

  #idle(): boolean {
    return !this.#scheduled && !this.#pumping && !this.#persisting;
  }

  #settleIdle(): void {
    const waiting = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiting) resolve();
  }

  #send(messages: readonly Message<KvCommand>[]): void {
    if (messages.length === 0) return;
    const options = this.#host.options;
    if (options.traceMessages) {
      for (const message of messages) {
        options.log?.(`send ${describeMessage(message, describeKvCommand)}`);
      }
    }
    this.#host.transport.send(messages);
  }
}
