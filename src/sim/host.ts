/**
 * One simulated replica process: the production driver over a disk that
 * survives crashes, a clock whose timers are events on virtual time, and a
 * gate that drops everything of an earlier incarnation (a crash ends the
 * process) and holds everything back while the process is paused (SIGSTOP).
 *
 * The disk completes a commit after a virtual fsync delay, or at once; a crash
 * while a commit is in flight either loses it or lands it (the disk finished,
 * the process died before it went on: the crash between persist and send).
 *
 * @module
 */

import type { Configuration } from "../core/configuration.ts";
import { ReplicaDriver, type ReplicaDriverOptions } from "../driver/driver.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { Completion, Eventual } from "../runtime/completion.ts";
import type { Random } from "../runtime/random.ts";
import { MemoryStorage } from "../storage/memory.ts";
import type {
  LoadedState,
  PersistBatch,
  ReplicaSnapshot,
  ReplicaStorage,
} from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { PeerTransport } from "../transport/types.ts";
import type { EventQueue } from "./event_queue.ts";

/** Most events a paused process holds back (a socket buffer's worth). */
const MAX_DEFERRED = 100_000;

/** What a host needs from the simulation around it. */
export interface SimHostOptions {
  /** Replica id. */
  readonly id: number;
  /** The event queue. */
  readonly queue: EventQueue;
  /** Virtual time now. */
  readonly now: () => number;
  /** Draws for disk delays and the driver's randomness. */
  readonly random: Random;
  /** Longest virtual fsync, in milliseconds (0: every commit completes at once). */
  readonly diskMaxMs: number;
  /** The driver's settings, but for the edges the host supplies. */
  readonly driver: Omit<ReplicaDriverOptions, "id" | "storage" | "transport" | "clock" | "random">;
  /** The network's transport for this replica. */
  readonly transport: PeerTransport<KvCommand>;
  /** Called with each batch the disk makes durable (invariant checks). */
  readonly onDurable: (batch: PersistBatch<KvCommand>) => void;
  /** Called with each snapshot the disk installs (invariant checks). */
  readonly onInstalled?: (snapshot: ReplicaSnapshot<KvCommand>) => void;
  /** Called with each epoch the disk starts in place (invariant checks). */
  readonly onEpochStarted?: (configuration: Configuration) => void;
  /**
   * How the process's clock runs: `rate` local milliseconds per simulated
   * one, from `offsetMs` at simulated time 0 (quorum leases' drift,
   * `lease_config.ts`). Absent: the simulated time itself.
   */
  readonly clock?: { readonly rate: number; readonly offsetMs: number };
}

/** One replica process of the simulation. */
export class SimHost {
  /** The disk: survives crashes (not {@linkcode SimHost.wipe}). */
  disk = new MemoryStorage<KvCommand>({ snapshotEveryCommits: 50 });
  /**
   * The configuration this replica joined with (`deno task start --join`),
   * after its disk was wiped and it was replaced: every later boot passes
   * it, as a restarted joiner's command line does.
   */
  #joined: Configuration | undefined;
  readonly #options: SimHostOptions;
  #driver: ReplicaDriver | undefined;
  #incarnation = 0;
  #up = false;
  #retired = false;
  #paused = false;
  /** Stalled in the middle of a read (`stall`): like paused, but ended only by the stall. */
  #stalled = false;
  #deferred: (() => void)[] = [];
  /** The commit in flight: its batch, until the disk lands it. */
  #inFlight: PersistBatch<KvCommand> | undefined;

  /** Creates a host; {@linkcode SimHost.boot} starts its process. */
  constructor(options: SimHostOptions) {
    this.#options = options;
  }

  /** The running driver, if the process is up. */
  get driver(): ReplicaDriver | undefined {
    return this.#up ? this.#driver : undefined;
  }

  /** Whether the process runs (it may be paused). */
  get up(): boolean {
    return this.#up;
  }

  /** Whether the process is paused, or stalled in the middle of a read. */
  get paused(): boolean {
    return this.#paused || this.#stalled;
  }

  /** Whether it answers now: up and not paused. */
  get answering(): boolean {
    return this.#up && !this.#paused && !this.#stalled;
  }

  /**
   * Whether a process of this replica ever started: a slot of a member id
   * not added yet has none, and nothing restarts it.
   */
  get started(): boolean {
    return this.#incarnation > 0;
  }

  /** Whether it was stopped for good ({@linkcode SimHost.retire}). */
  get retired(): boolean {
    return this.#retired;
  }

  /**
   * Stops the process for good, as an operator stops a member a
   * configuration change removed: nothing boots it again.
   */
  retire(): void {
    this.crash(false);
    this.#retired = true;
  }

  /** Starts a process on what the disk holds (not once retired). */
  boot(): void {
    if (this.#up || this.#retired) return;
    this.#incarnation++;
    this.#up = true;
    this.#paused = false;
    this.#stalled = false;
    this.#deferred = [];
    const loaded: LoadedState<KvCommand> = this.disk.loadSync();
    this.#driver = ReplicaDriver.fromLoaded({
      ...this.#options.driver,
      ...(this.#joined === undefined ? {} : { configuration: this.#joined, joining: true }),
      id: this.#options.id,
      storage: this.#storage(),
      transport: this.#options.transport,
      clock: this.#clock(),
      random: this.#options.random,
    }, loaded);
    this.#driver.start();
  }

  /**
   * Ends the process. With `landInFlight`, a commit in flight reaches the disk
   * first (the crash falls between persist and what follows it).
   */
  crash(landInFlight: boolean): void {
    if (!this.#up) return;
    if (landInFlight && this.#inFlight !== undefined) this.#land(this.#inFlight);
    this.#inFlight = undefined;
    this.#up = false;
    this.#paused = false;
    this.#stalled = false;
    this.#deferred = [];
    this.#driver = undefined;
  }

  /** Loses the disk (the process must be down): amnesia. */
  wipe(): void {
    if (this.#up) throw new Error(`replica ${this.#options.id} is running`);
    this.disk = new MemoryStorage<KvCommand>({ snapshotEveryCommits: 50 });
    this.#joined = undefined;
  }

  /**
   * Starts a process on an empty disk as a member of `configuration` (a new
   * incarnation that replaced this one), as `--join` does.
   */
  bootJoining(configuration: Configuration): void {
    this.#joined = configuration;
    this.boot();
  }

  /** Stops the process without ending it: events wait until {@linkcode SimHost.resume}. */
  pause(): void {
    if (this.#up) this.#paused = true;
  }

  /** Lets a paused process go on, running what it held back, in order (a stall goes on). */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#runDeferred();
  }

  #runDeferred(): void {
    if (this.#paused || this.#stalled) return;
    const deferred = this.#deferred;
    this.#deferred = [];
    for (let i = 0; i < deferred.length; i++) {
      if (this.#paused || this.#stalled) {
        this.#deferred = deferred.slice(i).concat(this.#deferred);
        return;
      }
      deferred[i]!();
    }
  }

  /** Hands the process a batch from a peer; returns whether it was taken. */
  receive(batch: PeerBatch<KvCommand>): boolean {
    if (!this.#up) return false;
    this.#gate(() => this.#driver?.receive(batch))();
    return true;
  }

  /**
   * Wraps `run` so that it runs only in the process's current incarnation,
   * and later if it is paused (for events the simulation delivers to it).
   */
  gate(run: () => void): () => void {
    return this.#gate(run);
  }

  /** Wraps `run` so that it runs only in this incarnation, and later if paused. */
  #gate(run: () => void): () => void {
    const incarnation = this.#incarnation;
    return () => {
      if (!this.#up || this.#incarnation !== incarnation) return;
      if (this.#paused || this.#stalled) {
        if (this.#deferred.length < MAX_DEFERRED) this.#deferred.push(run);
        return;
      }
      run();
    };
  }

  /** What this process's clock reads at simulated time `simulatedMs`. */
  localTime(simulatedMs: number): number {
    const clock = this.#options.clock;
    return clock === undefined ? simulatedMs : clock.offsetMs + clock.rate * simulatedMs;
  }

  /**
   * Stalls the process for `delayMs` simulated milliseconds (a GC pause, a
   * SIGSTOP) in the middle of what it is doing: nothing else of it runs
   * until `then` has, which it does first when the stall ends, unless the
   * process crashed meanwhile.
   */
  stall(delayMs: number, then: () => void): void {
    if (!this.answering) return;
    const incarnation = this.#incarnation;
    this.#stalled = true;
    this.#options.queue.schedule(this.#options.now() + Math.max(0, delayMs), () => {
      if (!this.#up || this.#incarnation !== incarnation) return;
      then();
      this.#stalled = false;
      this.#runDeferred();
    });
  }

  #clock(): Clock {
    const { queue, now } = this.#options;
    const rate = this.#options.clock?.rate ?? 1;
    // A timer fires once at least `delayMs` passed on this clock: in
    // simulated time, `delayMs / rate` (rounded up a hair, so float error
    // never fires it early).
    const after = (delayMs: number) =>
      rate === 1 ? Math.max(0, delayMs) : Math.max(0, delayMs) / rate * (1 + 1e-12) + 1e-9;
    return {
      now: () => this.localTime(now()),
      setTimer: (delayMs: number, callback: () => void): Timer => {
        let cancelled = false;
        queue.schedule(now() + after(delayMs), this.#gate(() => cancelled || callback()));
        return { cancel: () => cancelled = true };
      },
      soon: (callback: () => void) => queue.schedule(now(), this.#gate(callback)),
    };
  }

  #storage(): ReplicaStorage<KvCommand> {
    const incarnation = this.#incarnation;
    return {
      // Settled at once, on the caller's stack: a run needs no event loop.
      load: () => {
        const loaded = new Eventual<LoadedState<KvCommand>>();
        loaded.resolve(this.disk.loadSync());
        return loaded;
      },
      install: (snapshot) => {
        const installed = new Eventual<void>();
        if (!this.#up || this.#incarnation !== incarnation) {
          installed.reject(new Error("the process that asked has crashed"));
          return installed;
        }
        try {
          // One synchronous step: a crash (between events) keeps all or none.
          this.disk.installSync(snapshot);
          this.#options.onInstalled?.(snapshot);
          installed.resolve();
        } catch (error) {
          installed.reject(error);
        }
        return installed;
      },
      startEpoch: (start) => {
        const started = new Eventual<void>();
        if (this.#incarnation !== incarnation) {
          started.reject(new Error("the process that asked has crashed"));
          return started;
        }
        try {
          this.disk.startEpochSync(start);
          this.#options.onEpochStarted?.(start.configuration);
          started.resolve();
        } catch (error) {
          started.reject(error);
        }
        return started;
      },
      commit: (batch) => this.#commit(batch),
      wantsSnapshot: () => this.disk.wantsSnapshot(),
      close: () => {},
    };
  }

  #commit(batch: PersistBatch<KvCommand>): PromiseLike<void> {
    const completion = new Completion();
    const delay = this.#options.random.int(this.#options.diskMaxMs + 1);
    if (delay === 0) {
      this.#land(batch);
      completion.complete();
      return completion;
    }
    this.#inFlight = batch;
    this.#options.queue.schedule(
      this.#options.now() + delay,
      this.#gate(() => {
        if (this.#inFlight !== batch) return;
        this.#inFlight = undefined;
        this.#land(batch);
        completion.complete();
      }),
    );
    return completion;
  }

  #land(batch: PersistBatch<KvCommand>): void {
    this.disk.commitSync(batch);
    this.#options.onDurable(batch);
  }
}
