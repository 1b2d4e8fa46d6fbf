/**
 * A replica process's place in its cluster: the configuration of its epoch,
 * its own incarnation, whether it is joining, and whether it retired (and
 * why: `retirement.ts`), or is leaving (it still answers its old epoch's
 * messages: `Leaving`); what its peers' batches show of their epochs and
 * incarnations (which batches it takes: `judgeBatch` in `epoch.ts`); and the
 * state its epoch started with, kept for peers still behind it.
 *
 * @module
 */

import {
  type Configuration,
  describeConfiguration,
  sameConfiguration,
} from "../core/configuration.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { LoadedState, ReplicaSnapshot } from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { PeerTransport } from "../transport/types.ts";
import {
  type BatchVerdict,
  defaultConfiguration,
  judgeBatch,
  memberOf,
  peerMembership,
} from "./epoch.ts";
import type { ReplicaDriverOptions } from "./options.ts";
import {
  endedMembershipReason,
  executedChanges,
  foreignEpochReason,
  Leaving,
  LEAVING_MAX_MS,
} from "./retirement.ts";

/**
 * How long peers are seen in a later epoch before this replica, still in the
 * earlier one, takes a snapshot of theirs instead of executing the change
 * itself ({@linkcode Membership.behind}).
 */
export const AHEAD_GRACE_MS = 1000;

/**
 * How long a replica keeps the state its epoch started with for peers still
 * behind it (`ReplicaDriver.takeSnapshotWith`): they learn of the new epoch
 * within a second or two of its start.
 */
export const EPOCH_BASE_KEPT_MS = 60_000;

/** This process's membership, and what it knows of its peers'. */
export class Membership {
  readonly #id: number;
  readonly #log: ((line: string) => void) | undefined;
  readonly #transport: PeerTransport<KvCommand>;
  /** `ReplicaDriverOptions.maxLeavingMs`, or its default. */
  readonly #maxLeavingMs: number;
  /** The epoch a joiner was started to join (1 otherwise): it joined once it has a state of it. */
  readonly #joinsEpoch: number;
  /** The configuration of this replica's epoch. */
  #configuration: Configuration;
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
   * Retired by a change it executed, it still answers its old epoch's
   * messages (`#configuration` is the old epoch's until this ends).
   */
  #leaving: Leaving | undefined;
  /**
   * Storage held nothing at the start, and the replica was not started to
   * join: if its cluster turns out to be past epoch 1 before this process
   * persisted anything, it is a replica whose data was lost, come back
   * under the incarnation that voted (or, rarely, a new cluster's member
   * started after a change: it is replaced all the same).
   */
  readonly #startedEmpty: boolean;
  /** Started with `joining` and no snapshot installed yet. */
  #joining: boolean;
  /** Peers whose batches showed them in a later epoch, with that epoch: sources of its snapshot. */
  readonly #ahead = new Map<number, number>();
  /** When a peer was first seen in a later epoch (this epoch). */
  #aheadSinceMs: number | undefined;
  /** The incarnation each peer last sent a batch this replica took as (bounded by the member ids). */
  readonly #heardIncarnation = new Map<number, number>();
  /** Refused batch senders already logged (reason by sender), bounded by the member ids. */
  readonly #refusedLogged = new Map<number, string>();
  /**
   * The state this replica's epoch started with (installed when it executed
   * the change), kept for peers still in an earlier epoch: references to the
   * entries, not a copy of the values. Not kept across a restart.
   */
  #base: ReplicaSnapshot<KvCommand> | undefined;
  /** When `#base` was kept: it is let go {@linkcode EPOCH_BASE_KEPT_MS} later. */
  #baseSinceMs = 0;

  /**
   * The membership of replica `options.id` as it starts on `loaded`: storage's
   * configuration, else the one it was given, else epoch 1's of `replicas`.
   * Storage that holds the executed change that ended its membership
   * (written while it was leaving) makes it leave again.
   */
  constructor(options: ReplicaDriverOptions, loaded: LoadedState<KvCommand>) {
    this.#id = options.id;
    this.#log = options.log;
    this.#transport = options.transport;
    this.#maxLeavingMs = options.maxLeavingMs ?? LEAVING_MAX_MS;
    this.#joinsEpoch = options.configuration?.epoch ?? 1;
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
      return;
    }
    for (const change of executedChanges(loaded.records, this.#configuration.epoch)) {
      const ended = this.endedReason(change.configuration);
      if (ended === undefined) continue;
      this.retire(ended, change.configuration, { nowMs: options.clock.now() });
      return;
    }
  }

  /** The configuration of this replica's epoch. */
  get configuration(): Configuration {
    return this.#configuration;
  }

  /** Why this replica takes no part in the cluster any more, or `undefined`. */
  get retired(): string | undefined {
    return this.#retired;
  }

  /** Whether it joins and has not installed its first snapshot yet. */
  get joining(): boolean {
    return this.#joining;
  }

  /** While it leaves ({@linkcode Leaving}): the change that ended its membership, and who runs it. */
  get leaving(): Leaving | undefined {
    return this.#leaving;
  }

  /** Whether it takes no batch and no Ready any more: retired, and done leaving. */
  get silent(): boolean {
    return this.#retired !== undefined && this.#leaving === undefined;
  }

  /** Tells the transport this epoch's members, and this process's own incarnation. */
  announce(): void {
    this.#transport.reconfigure?.(peerMembership(this.#configuration, this.#incarnation));
  }

  /**
   * Takes the configuration storage holds after its state was replaced (an
   * install, or an epoch started here): a joiner has joined once it holds
   * its epoch, and a new epoch's members are announced.
   */
  adopt(configuration: Configuration | undefined): void {
    const previous = this.#configuration;
    this.#configuration = configuration ?? previous;
    if (this.#configuration.epoch >= this.#joinsEpoch) this.#joining = false;
    if (!sameConfiguration(this.#configuration, previous)) {
      this.#ahead.clear();
      this.#aheadSinceMs = undefined;
      this.announce();
      this.#log?.(
        `replica ${this.#id}: epoch ${describeConfiguration(this.#configuration)} ` +
          `(was ${describeConfiguration(previous)})`,
      );
    }
  }

  /**
   * Why this process must not go on in `config`'s later epoch (it retires
   * instead), or `undefined` ({@linkcode foreignEpochReason}).
   * `persistedRecords`: whether it has persisted instance records.
   */
  foreignReason(config: Configuration | undefined, persistedRecords: boolean): string | undefined {
    return foreignEpochReason(config, {
      id: this.#id,
      incarnation: this.#incarnation,
      epoch: this.#configuration.epoch,
      amnesiac: this.#startedEmpty && !persistedRecords,
    });
  }

  /** Why executing the change to `next` ends this process's membership, or `undefined`. */
  endedReason(next: Configuration): string | undefined {
    return endedMembershipReason(next, this.#id, this.#incarnation);
  }

  /**
   * Stops taking part for `reason`, with `next` (the configuration that
   * removed or replaced it) as its configuration from now on; or, with
   * `leaving` (it executed that change itself), after answering its old
   * epoch's messages for a while ({@linkcode Leaving}, ended by
   * {@linkcode Membership.stopLeaving}).
   */
  retire(reason: string, next: Configuration, leaving?: { readonly nowMs: number }): void {
    this.#retired = reason;
    if (leaving !== undefined && this.#maxLeavingMs > 0) {
      this.#leaving = new Leaving(next, this.#id, {
        nowMs: leaving.nowMs,
        maxMs: this.#maxLeavingMs,
      });
      this.#log?.(
        `replica ${this.#id}: ${reason} (${describeConfiguration(next)}); it serves nothing ` +
          `from now on, and answers epoch ${this.#configuration.epoch}'s messages until ` +
          `${this.#leaving.needed} voters of epoch ${next.epoch} run it ` +
          `(${this.#maxLeavingMs} ms at most)`,
      );
      return;
    }
    this.#log?.(
      `replica ${this.#id}: ${reason} (${
        describeConfiguration(next)
      }); it serves nothing from now on`,
    );
    this.#configuration = next;
  }

  /** Stops answering the old epoch's messages (`why`): it takes no part at all from now on. */
  stopLeaving(why: string): void {
    const leaving = this.#leaving;
    if (leaving === undefined) return;
    this.#leaving = undefined;
    this.#log?.(
      `replica ${this.#id}: stops answering epoch ${this.#configuration.epoch}'s messages: ${why}`,
    );
    this.#configuration = leaving.next;
  }

  /**
   * Judges `batch` in this replica's epoch ({@linkcode judgeBatch}) and notes
   * what it shows: a sender in a later epoch, or the incarnation of a sender
   * taken. A refused sender is logged once per reason.
   */
  judge(batch: PeerBatch<unknown>, nowMs: number): BatchVerdict {
    const verdict = judgeBatch(this.#configuration, batch);
    if (!verdict.take) {
      if (verdict.ahead) this.noteAhead(batch.from, batch.epoch ?? 1, nowMs);
      this.#noteRefused(batch.from, verdict.reason);
      return verdict;
    }
    this.#heardIncarnation.set(batch.from, batch.incarnation ?? 1);
    return verdict;
  }

  /** Notes that `peer` is in `epoch`, later than this replica's (its batch or its refusal of ours said so). */
  noteAhead(peer: number, epoch: number, nowMs: number): void {
    this.#leaving?.noteRunning(peer, epoch);
    // A refusal of a batch sent before this replica started the peer's
    // epoch arrives after it did: the peer is not ahead any more. Taken as
    // ahead, it made the replica "behind" for good after the grace (every
    // command refused, waiting for a snapshot of its own epoch: the epoch
    // test under a load average of 16).
    if (epoch <= this.#configuration.epoch) return;
    this.#ahead.set(peer, epoch);
    this.#aheadSinceMs ??= nowMs;
  }

  /**
   * Whether member `id` of this epoch has been heard from as the incarnation
   * the configuration names.
   */
  heardAsCurrent(id: number): boolean {
    const member = memberOf(this.#configuration, id);
    return member !== undefined && this.#heardIncarnation.get(id) === member.incarnation;
  }

  /**
   * Whether peers have been in a later epoch for {@linkcode AHEAD_GRACE_MS}
   * while this replica was not: it missed the change (or is too slow to
   * execute it) and takes a snapshot of the new epoch. Within the grace it
   * is most likely about to execute the change itself: the first replica
   * to execute it sends batches of the new epoch at once.
   */
  behind(nowMs: number): boolean {
    return this.#aheadSinceMs !== undefined && nowMs - this.#aheadSinceMs >= AHEAD_GRACE_MS;
  }

  /** The peers seen in a later epoch, in the order first seen. */
  aheadPeers(): number[] {
    return [...this.#ahead.keys()];
  }

  /**
   * Peers to fetch a snapshot from, best first: those seen in a later epoch
   * (the latest first), once behind; else the voters among `pruned()`, those
   * that pruned past this replica; else, for a joiner, its epoch's voters.
   * None for a retired replica: it installs nothing.
   */
  snapshotSources(nowMs: number, pruned: () => readonly number[]): readonly number[] {
    if (this.#retired !== undefined) return [];
    // Behind an epoch first: this epoch's own sources (pruned past) are stuck in it too.
    if (this.behind(nowMs)) {
      return [...this.#ahead].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map(([peer]) => peer);
    }
    // Voters only: a snapshot of this replica's own epoch is taken at a
    // barrier its source proposes, and a learner proposes nothing (it
    // refuses at once), nor does a member removed since. Learners prune
    // past a replica like voters, and execute furthest ahead, so they led
    // the list: the fetcher asked them over and over, its waits doubled to
    // 30 s, and a voter pruned past stayed behind for good (the simulator,
    // seed 257 at n = 7 with membership changes, at 19a604c).
    const sources = pruned().filter((peer) => this.#isVoter(peer));
    if (sources.length > 0) return sources;
    if (this.#joining) {
      return this.#configuration.members
        .filter((member) => member.role === "voter" && member.id !== this.#id)
        .map((member) => member.id);
    }
    return [];
  }

  /** Whether `id` is a voter of this replica's epoch. */
  #isVoter(id: number): boolean {
    return memberOf(this.#configuration, id)?.role === "voter";
  }

  /** Keeps `snapshot`, the state this replica's new epoch starts with, for peers behind it. */
  keepBase(snapshot: ReplicaSnapshot<KvCommand>, nowMs: number): void {
    this.#base = snapshot;
    this.#baseSinceMs = nowMs;
  }

  /** The state this replica's epoch started with, if kept. */
  base(): ReplicaSnapshot<KvCommand> | undefined {
    return this.#base?.configuration?.epoch === this.#configuration.epoch ? this.#base : undefined;
  }

  /** Whether the state kept for peers behind is the snapshot at `barrier`. */
  isBase(barrier: string): boolean {
    return this.#base !== undefined && this.#base.barrier === barrier;
  }

  /**
   * Lets the kept base go after {@linkcode EPOCH_BASE_KEPT_MS}: peers behind
   * this epoch get the state now after this (unchecked by a second
   * replica), and the base holds the whole state's entries alive.
   */
  expireBase(nowMs: number): void {
    if (this.#base !== undefined && nowMs - this.#baseSinceMs > EPOCH_BASE_KEPT_MS) {
      this.#base = undefined;
    }
  }

  /** Logs a refused sender once per reason (a sender's reason changes with epochs). */
  #noteRefused(from: number, reason: string): void {
    if (this.#refusedLogged.get(from) === reason) return;
    this.#refusedLogged.set(from, reason);
    this.#log?.(
      `replica ${this.#id}: not taking batches from replica ${from}: ${reason} (logged once)`,
    );
  }
}
