/**
 * A driver's client commands on their way: the waiters (one per command,
 * answered once: `waiters.ts`), the batch of commands not yet proposed, and
 * the answers given at commit (the answer rule, `answer.ts`) or at
 * execution.
 *
 * Client commands are batched adaptively (SOSP'13 §5): a command that
 * arrives while nothing is being persisted is proposed at once; commands that
 * arrive during a storage commit wait for it (at most `batchWindowMs`, or
 * until the batch is full) and are proposed together as one instance.
 *
 * @module
 */

import type { Replica } from "../core/replica.ts";
import type { Abandoned, Decided } from "../core/types.ts";
import {
  ClientRequestError,
  OutcomeUnknownError,
  SnapshotInstalledError,
  UnavailableError,
} from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import { atomicBatchBytes } from "../kv/txn_commands.ts";
import type { KvResult } from "../kv/state_machine.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { blindWriteAnswers, type CommitAnswer } from "./answer.ts";
import type { DriverMetrics } from "./metrics.ts";
import type { ReplicaDriverOptions } from "./options.ts";
import { type Answer, Waiters } from "./waiters.ts";

/** What a command counts toward `maxBatchBytes`: its keys and values (an atomic command's all of them). */
export function batchBytesOf(command: KvCommand): number {
  if (command.op === "put") return command.value.length + command.key.length;
  return command.op === "atomic" ? atomicBatchBytes(command) : 64;
}

/** What {@linkcode Proposals} needs of its driver. */
export interface ProposalsHost {
  /** This replica's id (the owner of its instances). */
  readonly id: number;
  /** The driver's settings (batch bounds, request timeout, observer). */
  readonly options: ReplicaDriverOptions;
  /** Time and timers. */
  readonly clock: Clock;
  /** Counters and histograms. */
  readonly metrics: DriverMetrics;
  /** The core proposals go to now. */
  core(): Replica<KvCommand>;
  /** The key-value state's version tag (versions of blind writes answered at commit). */
  versionTag(): string | undefined;
  /** Whether a snapshot is being installed (nothing is proposed meanwhile). */
  installing(): boolean;
  /** Whether a storage commit is in flight (commands then wait to be batched). */
  persisting(): boolean;
  /** Queues a run of the Ready loop. */
  kick(): void;
}

/** Client commands waiting to be proposed or answered. */
export class Proposals {
  readonly #host: ProposalsHost;
  /** Tells this process's request ids from those of its earlier runs. */
  readonly #bootId: string;
  #requestCounter = 0;
  readonly #waiters = new Waiters();
  #batch: KvCommand[] = [];
  #batchBytes = 0;
  #batchTimer: Timer | undefined;
  /** When each instance proposed here (and not yet decided) was proposed. */
  readonly #proposedAtMs = new Map<number, number>();
  /** Answers the broken rule gives once the next Ready is written (bounded by the proposals of one turn). */
  #unsafeEarlyAnswers: CommitAnswer[] = [];

  /** Nothing waiting. */
  constructor(host: ProposalsHost) {
    this.#host = host;
    this.#bootId = host.options.random.int(2 ** 32).toString(36);
  }

  /** A new request id of this replica's, `ID.BOOT.N` (with `kind` before `N`). */
  nextRequest(kind = ""): string {
    return `${this.#host.id}.${this.#bootId}.${kind}${++this.#requestCounter}`;
  }

  /** Client commands waiting for their answer. */
  get size(): number {
    return this.#waiters.size;
  }

  /**
   * Takes an admitted command: its client waits (until the request timeout at
   * most), and the command joins the batch.
   */
  add(command: KvCommand, answer: Answer): void {
    // No timer per request (thousands in flight under load cost the event
    // loop measurably): the tick sweeps expired waiters, oldest first.
    const submittedMs = this.#host.clock.now();
    const deadlineMs = submittedMs + (this.#host.options.requestTimeoutMs ?? 5000);
    this.#waiters.add(command.request, answer, submittedMs, deadlineMs);
    this.enqueue(command);
  }

  /** Adds `command` to the batch, and proposes it now or within the batch window. */
  enqueue(command: KvCommand): void {
    const options = this.#host.options;
    this.#batch.push(command);
    this.#batchBytes += batchBytesOf(command);
    const full = this.#batch.length >= (options.maxBatchCommands ?? 1000) ||
      this.#batchBytes >= (options.maxBatchBytes ?? 512 * 1024);
    if (full || !this.#host.persisting()) {
      // Full, or nothing is being persisted: propose in this turn (the loop
      // starts from `soon`, so same-turn arrivals join).
      this.#host.kick();
    } else {
      this.#batchTimer ??= this.#host.clock.setTimer(options.batchWindowMs ?? 5, () => {
        this.#batchTimer = undefined;
        this.flush();
        this.#host.kick();
      });
    }
  }

  /** Proposes the batch as one instance (or part of it, within the bounds). */
  flush(): void {
    const host = this.#host;
    const core = host.core();
    if (this.#batch.length === 0 || host.installing() || !core.isVoter) return;
    let commands: KvCommand[];
    const change = this.#batch.findIndex((command) => command.op === "reconf");
    if (change >= 0) {
      // A configuration change is proposed alone in its instance: a fenced
      // replica still pre-accepts changes (so concurrent ones can finish),
      // so an instance holding one may commit after the change that ends
      // the epoch and never execute in it; nothing else may ride with it.
      commands = this.#batch.splice(change, 1);
    } else if (core.fenced) {
      // A configuration change in flight fences the epoch (Replica.fenced):
      // nothing new is proposed in it; the batch waits for the next epoch
      // (or for the change to become a Nop). Admission bounds what waits.
      return;
    } else {
      // Bounded by count and by bytes: what waited through a fence may be
      // far more than one instance may carry (or one peer batch).
      const limit = host.options.maxBatchCommands ?? 1000;
      const maxBytes = host.options.maxBatchBytes ?? 512 * 1024;
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
    if (this.#batch.length > 0) host.kick();
    const { number } = core.propose(commands);
    host.options.observer?.proposed?.(number, commands);
    if (host.options.unsafeAnswerBlindWritesBeforeDurable) {
      this.#unsafeEarlyAnswers.push(
        ...blindWriteAnswers(host.id, number, commands, host.versionTag()),
      );
    }
    // Bounded by the proposals in flight (each is decided, as a Nop at worst).
    this.#proposedAtMs.set(number, host.clock.now());
    host.metrics.instancesProposed++;
    host.metrics.commandsProposed += commands.length;
    host.metrics.batchSize.observe(commands.length);
  }

  /** The answers the broken answer rule owes once the next Ready is written; forgets them. */
  takeEarlyAnswers(): readonly CommitAnswer[] {
    const early = this.#unsafeEarlyAnswers;
    if (early.length > 0) this.#unsafeEarlyAnswers = [];
    return early;
  }

  /**
   * A Ready's records are durable: notes commit latencies, answers the blind
   * writes of this replica's decided instances (`answer.ts`), then `early`.
   */
  decided(decided: readonly Decided<KvCommand>[], early: readonly CommitAnswer[]): void {
    this.#noteDecided(decided);
    for (const { number, command } of decided) {
      for (
        const { request, result } of blindWriteAnswers(
          this.#host.id,
          number,
          command,
          this.#host.versionTag(),
        )
      ) {
        if (this.answer(request, result)) this.#host.metrics.commandsAnsweredAtCommit++;
      }
    }
    for (const { request, result } of early) {
      if (this.answer(request, result)) this.#host.metrics.commandsAnsweredAtCommit++;
    }
  }

  /** Answers `request` with `result` if it still waits; returns whether it did. */
  answer(request: string, result: KvResult): boolean {
    const submittedMs = this.#waiters.resolve(request, result);
    if (submittedMs === undefined) return false;
    const metrics = this.#host.metrics;
    const latencyMs = this.#host.clock.now() - submittedMs;
    metrics.commandsAnswered++;
    metrics.requestSeconds.observe(latencyMs / 1000);
    metrics.recentRequestMs.observe(latencyMs);
    return true;
  }

  /** Fails the commands of instances replaced by a Nop every time they were proposed. */
  abandon(abandoned: readonly Abandoned<KvCommand>[]): void {
    for (const { commands, reason } of abandoned) {
      for (const command of commands) {
        // Replaced by a Nop every time it was proposed: it never executed.
        this.#waiters.reject(
          command.request,
          new UnavailableError(`The command could not be ordered: ${reason}`),
        );
      }
    }
  }

  /** Answers every request past its deadline with a timeout; returns how many. */
  expire(nowMs: number): number {
    return this.#waiters.expire(
      nowMs,
      () => new OutcomeUnknownError("The command was proposed but did not execute in time"),
    );
  }

  /** Stops the batch window's timer (shutdown). */
  cancelTimer(): void {
    this.#batchTimer?.cancel();
  }

  /** Answers every waiting request with `error()`. */
  rejectAll(error: () => Error): void {
    this.#waiters.rejectAll(error);
  }

  /** The replica left the cluster for `reason`: nothing is proposed, every client is answered. */
  retire(reason: string): void {
    this.#batch = [];
    this.#batchBytes = 0;
    this.#waiters.rejectAll(() =>
      new OutcomeUnknownError(`This replica left the cluster (${reason}) before answering`)
    );
  }

  /**
   * The commands to propose again in epoch `epoch`, which starts here:
   * `unexecuted` (this replica's own proposals that did not execute) and the
   * batch, without the configuration changes among them. Those lost to the
   * change that started the epoch: they are not proposed again (they were
   * decided against the old configuration), and their clients are told.
   */
  carryOver(unexecuted: readonly (readonly KvCommand[])[], epoch: number): KvCommand[][] {
    const lost = (command: KvCommand) => {
      if (command.op !== "reconf") return false;
      this.#waiters.reject(
        command.request,
        new ClientRequestError(
          `Another configuration change started epoch ${epoch} first; nothing of this one was made`,
          409,
        ),
      );
      return true;
    };
    const carried: KvCommand[][] = [];
    for (const commands of unexecuted) {
      const kept = commands.filter((command) => !lost(command));
      if (kept.length > 0) carried.push(kept);
    }
    this.#batch = this.#batch.filter((command) => !lost(command));
    return carried;
  }

  /**
   * The core and the state are being replaced: takes the batch out (and
   * returns it) and answers every waiting client, but those of `carried`
   * and of the batch when `carried` is given (an epoch that ended here: they
   * are proposed again, {@linkcode Proposals.requeue}).
   */
  reset(carried: readonly (readonly KvCommand[])[] | undefined): KvCommand[] {
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
    this.#proposedAtMs.clear();
    this.#unsafeEarlyAnswers = [];
    return unproposed;
  }

  /** Proposes again, in the new epoch, own proposals of the old one first, in their order, then what waited. */
  requeue(carried: readonly (readonly KvCommand[])[], unproposed: readonly KvCommand[]): void {
    for (const commands of carried) for (const command of commands) this.enqueue(command);
    for (const command of unproposed) this.enqueue(command);
  }

  #noteDecided(decided: readonly Decided<KvCommand>[]): void {
    if (decided.length === 0) return;
    const now = this.#host.clock.now();
    for (const { number } of decided) {
      const proposedAt = this.#proposedAtMs.get(number);
      if (proposedAt === undefined) continue;
      this.#proposedAtMs.delete(number);
      this.#host.metrics.commitSeconds.observe((now - proposedAt) / 1000);
      this.#host.metrics.recentCommitMs.observe(now - proposedAt);
    }
  }
}
