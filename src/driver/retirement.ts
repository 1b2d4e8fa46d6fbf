/**
 * When a replica process stops taking part in its cluster (retires): a
 * configuration change it executed removed it or replaced it by a new
 * incarnation (it then answers its old epoch's messages for a while:
 * {@linkcode Leaving}); or it learns of a later epoch that does not have it
 * as the member it is (it was removed or replaced while away, or it comes
 * back with its data lost): from a snapshot of that epoch, or from the
 * configuration of a peer that refused its batches as from an earlier epoch
 * ({@linkcode ConfigurationChecks}). A retired process installs nothing of
 * the new epoch and serves nothing; its storage keeps saying who it is.
 *
 * @module
 */

import { type Configuration, voterIds } from "../core/configuration.ts";
import { type InstanceRecord, NOP } from "../core/types.ts";
import type { KvCommand, ReconfCommand } from "../kv/commands.ts";
import type { Clock } from "../runtime/clock.ts";
import { memberOf, reconfToNext } from "./epoch.ts";

/** Who a replica process is, for {@linkcode foreignEpochReason}. */
export interface ProcessIdentity {
  /** Its member id. */
  readonly id: number;
  /** Its incarnation (its configuration's when it started). */
  readonly incarnation: number;
  /** The epoch it is in. */
  readonly epoch: number;
  /**
   * It started with an empty store, not to join, and has persisted no
   * instance record since: it may be a replica whose data was lost.
   */
  readonly amnesiac: boolean;
}

/**
 * Why process `self` must not go on in `config`'s epoch, a later one than its
 * own (and retires instead), or `undefined` (also for no configuration, or
 * not a later epoch): that epoch removed this member or names another
 * incarnation of it (it was replaced while away); or this process started
 * with an empty store, persisted nothing, and the cluster is past epoch 1
 * (amnesia: EPaxos replicas must not forget what they promised; only a
 * replace, then a --join, brings its id back).
 */
export function foreignEpochReason(
  config: Configuration | undefined,
  self: ProcessIdentity,
): string | undefined {
  if (config === undefined || config.epoch <= self.epoch) return undefined;
  const member = memberOf(config, self.id);
  if (member === undefined) return `epoch ${config.epoch} does not have it as a member`;
  if (member.incarnation !== self.incarnation) {
    return `epoch ${config.epoch} names incarnation ${member.incarnation} of it, ` +
      `not this process's ${self.incarnation}`;
  }
  if (self.amnesiac) {
    return `it started with an empty store as incarnation ${self.incarnation}, and the cluster ` +
      `is in epoch ${config.epoch}: a replica whose data is lost must be replaced ` +
      `(deno task admin replace ${self.id}) and started with --join`;
  }
  return undefined;
}

/**
 * Why the change to `next`, executed by process `id` of `incarnation`, ends
 * its membership, or `undefined` if it stays a member.
 */
export function endedMembershipReason(
  next: Configuration,
  id: number,
  incarnation: number,
): string | undefined {
  const member = memberOf(next, id);
  if (member === undefined) return `epoch ${next.epoch} removed it`;
  if (member.incarnation !== incarnation) {
    return `epoch ${next.epoch} replaced it by incarnation ${member.incarnation}`;
  }
  return undefined;
}

/**
 * Longest a member that executed the change ending its membership keeps
 * answering its old epoch's messages ({@linkcode Leaving}), in milliseconds,
 * when it does not learn sooner that `f + 1` voters of the new
 * configuration run it. The members still in the old epoch finish the
 * change within a recovery or two when they can (about a second on a LAN);
 * one still there after a minute is down or cut off, and will take the new
 * epoch's state from a member that runs it when it returns. A member that
 * needed the leaving ones' answers for longer (more than `f` of the old
 * epoch down or cut off beyond that) waits until enough of them return.
 */
export const LEAVING_MAX_MS = 60_000;

/**
 * A member that executed the change ending its membership (removed, or
 * replaced by a new incarnation) keeps answering its old epoch's messages
 * (membership design, Retire): the old epoch may otherwise lack a quorum
 * to recover the change itself while no member of the new configuration
 * has executed it (removing 2 of 5 with a third member down: the two left
 * need a third answer). It serves no client and proposes nothing, and stops
 * once `f + 1` voters of the new configuration (other than its own id) are
 * known to run the new epoch or a later one (any `f + 1` include one that a
 * quorum of the new configuration can get the epoch's state from: laggards
 * fetch it from a peer ahead), or after {@linkcode LEAVING_MAX_MS}.
 */
export class Leaving {
  /** The configuration that ended this process's membership. */
  readonly next: Configuration;
  readonly #self: number;
  readonly #sinceMs: number;
  readonly #maxMs: number;
  /** Voters of `next` known to run its epoch or a later one (bounded by its voters). */
  readonly #running = new Set<number>();

  /** Leaving for `next` since `nowMs`, for at most `maxMs`. */
  constructor(next: Configuration, self: number, window: { nowMs: number; maxMs: number }) {
    this.next = next;
    this.#self = self;
    this.#sinceMs = window.nowMs;
    this.#maxMs = window.maxMs;
  }

  /** How many of the new configuration's voters must run it: `f + 1`. */
  get needed(): number {
    return Math.floor((voterIds(this.next).length - 1) / 2) + 1;
  }

  /** Notes that `peer` runs epoch `epoch` (its batch, its refusal of ours, or its answer said so). */
  noteRunning(peer: number, epoch: number): void {
    if (epoch < this.next.epoch || peer === this.#self) return;
    if (voterIds(this.next).includes(peer)) this.#running.add(peer);
  }

  /** The new configuration's voters not yet known to run it (whom to ask). */
  unknown(): number[] {
    return voterIds(this.next).filter((id) => id !== this.#self && !this.#running.has(id));
  }

  /** Why it may stop answering the old epoch now, or `undefined`. */
  doneReason(nowMs: number): string | undefined {
    if (this.#running.size >= this.needed) {
      return `voters ${[...this.#running].sort((a, b) => a - b).join(", ")} of epoch ` +
        `${this.next.epoch} run it`;
    }
    if (nowMs - this.#sinceMs >= this.#maxMs) {
      return `${Math.round(nowMs - this.#sinceMs)} ms passed with only ${this.#running.size} of ` +
        `the ${this.needed} voters needed known to run epoch ${this.next.epoch}`;
    }
    return undefined;
  }
}

/**
 * The configuration changes to the epoch after `epoch` among `records` that
 * executed. A process that finds one at its start (still in `epoch`)
 * executed the change that ended its membership and went on answering the
 * old epoch ({@linkcode Leaving}), which wrote the marker: a member that
 * stays starts the next epoch in the same step, and nothing of the old one
 * is kept. (A concurrent change for the same epoch that lost may have
 * executed after it, as a no-op.)
 */
export function executedChanges(
  records: Iterable<InstanceRecord<KvCommand>>,
  epoch: number,
): ReconfCommand[] {
  const changes: ReconfCommand[] = [];
  for (const record of records) {
    if (!record.executed || record.command === undefined || record.command === NOP) continue;
    const change = reconfToNext(record.command, epoch);
    if (change !== undefined) changes.push(change);
  }
  return changes;
}

/** How often one peer is asked for its configuration, at most, in milliseconds. */
export const CONFIGURATION_CHECK_INTERVAL_MS = 500;

/** Longest one configuration check may take, in milliseconds. */
export const CONFIGURATION_CHECK_TIMEOUT_MS = 5000;

/** Settings of {@linkcode ConfigurationChecks}. */
export interface ConfigurationChecksOptions {
  /** This replica's id (for logs). */
  readonly id: number;
  /** Time and timers. */
  readonly clock: Clock;
  /** Asks a peer for its configuration (`ReplicaDriverOptions.fetchConfiguration`). */
  readonly fetch: (peer: number, signal: AbortSignal) => PromiseLike<Configuration>;
  /** Receives a line when a peer cannot be asked (once until it answers). */
  readonly log?: (line: string) => void;
}

/**
 * Asks peers for their configuration: at most one check in flight per peer,
 * each peer at most every {@linkcode CONFIGURATION_CHECK_INTERVAL_MS}, each
 * check abandoned after {@linkcode CONFIGURATION_CHECK_TIMEOUT_MS} (the maps
 * are bounded by the member ids). Callbacks, not promise chains.
 */
export class ConfigurationChecks {
  readonly #options: ConfigurationChecksOptions;
  /** When each peer was last asked. */
  readonly #askedMs = new Map<number, number>();
  readonly #inFlight = new Map<number, AbortController>();
  /** Peers whose failure was logged, until they answer. */
  readonly #failedLogged = new Set<number>();
  #stopped = false;

  /** No check yet. */
  constructor(options: ConfigurationChecksOptions) {
    this.#options = options;
  }

  /**
   * Asks `peer` for its configuration, unless a check of it is in flight or
   * it was asked recently; `answer` gets the configuration.
   */
  ask(peer: number, answer: (configuration: Configuration) => void): void {
    const { clock, fetch, log, id } = this.#options;
    const now = clock.now();
    const asked = this.#askedMs.get(peer);
    if (this.#stopped || this.#inFlight.has(peer)) return;
    if (asked !== undefined && now - asked < CONFIGURATION_CHECK_INTERVAL_MS) return;
    this.#askedMs.set(peer, now);
    const controller = new AbortController();
    this.#inFlight.set(peer, controller);
    const settle = () => {
      if (this.#inFlight.get(peer) !== controller) return false;
      this.#inFlight.delete(peer);
      deadline.cancel();
      return !this.#stopped;
    };
    const failed = (error: unknown) => {
      if (!settle() || this.#failedLogged.has(peer)) return;
      this.#failedLogged.add(peer);
      log?.(
        `replica ${id}: could not ask replica ${peer} for its configuration (${
          error instanceof Error ? error.message : String(error)
        }); asking again later (logged once until it answers)`,
      );
    };
    const deadline = clock.setTimer(CONFIGURATION_CHECK_TIMEOUT_MS, () => {
      controller.abort();
      failed(new Error("timed out"));
    });
    fetch(peer, controller.signal).then((configuration) => {
      if (!settle()) return;
      this.#failedLogged.delete(peer);
      answer(configuration);
    }, failed);
  }

  /** Abandons the checks in flight and starts no other. */
  stop(): void {
    this.#stopped = true;
    for (const controller of this.#inFlight.values()) controller.abort();
    this.#inFlight.clear();
  }
}
