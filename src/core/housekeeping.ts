/**
 * Housekeeping: which instances exist (per row, the highest number heard of),
 * which this replica needs finished (`wanted`: what the executor waits on, gaps
 * in a row, orphans nobody drives), and when to ask peers for their commits or
 * to recover an instance. The periodic `scan` returns a plan; the replica
 * carries it out (sends the requests, starts the recoveries).
 *
 * @module
 */

import { type Deps, emptyDeps } from "./deps.ts";
import { type Instance, instanceKey, keyNumber, keyOwner } from "./instance.ts";
import type { ProgressTracker } from "./progress.ts";
import type { Timers } from "./timing.ts";

/** Most instances one commit request asks for (and one answer carries). */
export const CATCH_UP_RANGE = 64;

/** A request for the commits of `count` instances of row `owner` from `number` on. */
export interface CommitRequest {
  /** Row. */
  readonly owner: number;
  /** First number. */
  readonly number: number;
  /** How many. */
  readonly count: number;
}

/** What one scan found to do, in the order to do it. */
export interface ScanPlan {
  /** Ranges missing from rows (a lost Commit, or this replica was down). */
  readonly gapRequests: readonly CommitRequest[];
  /** Instances to recover now (keys). */
  readonly recover: readonly number[];
  /** Wanted instances to ask peers for, coalesced into ranges. */
  readonly requests: readonly CommitRequest[];
}

/** What a scan reads of the replica. */
export interface ScanView<C> {
  /** Instances the executor waits on. */
  readonly waitedOn: Iterable<number>;
  /** Per row, every instance up to here is known to the executor. */
  readonly knownPrefix: readonly number[];
  /** Instances held and not committed. */
  readonly uncommitted: Iterable<Instance<C>>;
  /** Whether this replica leads instance `key`. */
  isLeading(key: number): boolean;
  /** Whether instance `key` is held and committed. */
  isCommitted(key: number): boolean;
}

interface Wanted {
  readonly since: number;
  lastRequest: number;
  /** No recovery before this tick: backoff after a preempted or failed attempt. */
  notBefore: number;
  /** Recovery attempts so far; the backoff doubles with each. */
  attempts: number;
  /**
   * This replica ignored the instance's first PreAccept for the fence
   * (`Replica.fenced`): its coordinator can finish it only through
   * recovery, so recovery starts after the request delay, not the recovery
   * delay, and the configuration change that waits on it is not held up.
   */
  fenced?: boolean;
}

/** Highest numbers per row, wanted instances and row gaps of one replica. */
export class Housekeeping {
  readonly #self: number;
  readonly #replicas: number;
  readonly #timers: Timers;
  readonly #progress: ProgressTracker;
  readonly #rowHighest: number[];
  readonly #wanted = new Map<number, Wanted>();
  /**
   * Per row, where the known prefix stopped short of the highest number, since
   * when, and when the missing range was last asked for.
   */
  readonly #gaps: { at: number; since: number; lastRequest: number }[];

  /** Housekeeping for replica `self` of `replicas`. */
  constructor(self: number, replicas: number, timers: Timers, progress: ProgressTracker) {
    this.#self = self;
    this.#replicas = replicas;
    this.#timers = timers;
    this.#progress = progress;
    this.#rowHighest = emptyDeps(replicas);
    this.#gaps = Array.from(
      { length: replicas },
      () => ({ at: -1, since: 0, lastRequest: -Infinity }),
    );
  }

  /** Per row, the highest instance number known to exist. */
  get rowHighest(): Deps {
    return this.#rowHighest;
  }

  /** How many instances are wanted. */
  get wantedCount(): number {
    return this.#wanted.size;
  }

  /** Notes that instance `(owner, number)` exists. */
  noteExists(owner: number, number: number): void {
    if (number > this.#rowHighest[owner]!) this.#rowHighest[owner] = number;
  }

  /** Wants instance `key` finished: asked for, then recovered, unless it commits first. */
  want(key: number, now: number): void {
    if (this.#wanted.has(key)) return;
    if (this.#progress.isPruned(keyOwner(key), keyNumber(key))) return;
    // Bounded by the instances that exist: at most one entry per instance.
    this.#wanted.set(key, { since: now, lastRequest: -Infinity, notBefore: 0, attempts: 0 });
    this.noteExists(keyOwner(key), keyNumber(key));
  }

  /**
   * Wants `key`, an instance whose first PreAccept the fence made this
   * replica ignore: see `Wanted.fenced`. Bounded as `want` is.
   */
  wantFenced(key: number, now: number): void {
    this.want(key, now);
    const wanted = this.#wanted.get(key);
    if (wanted !== undefined) wanted.fenced = true;
  }

  /** Stops wanting instance `key` (it committed). */
  unwant(key: number): void {
    this.#wanted.delete(key);
  }

  /** Recovery attempts made on instance `key` so far. */
  attempts(key: number): number {
    return this.#wanted.get(key)?.attempts ?? 0;
  }

  /**
   * Backs off before this replica (re)starts recovering `key`: another replica
   * holds a higher ballot, or our attempt failed. The wait doubles with each
   * attempt and is staggered by distance from the owner, so competing
   * recoveries stop preempting each other (without it, ballots climb for ever).
   */
  deferRecovery(key: number, now: number): void {
    if (this.#progress.isPruned(keyOwner(key), keyNumber(key))) return;
    this.want(key, now);
    const wanted = this.#wanted.get(key)!;
    wanted.attempts++;
    wanted.notBefore = now + this.#timers.recoveryAttemptTimeout(wanted.attempts) +
      this.#distance(keyOwner(key)) *
        this.#timers.scaled(this.#timers.timing.recoveryStaggerTicks, 1);
  }

  /**
   * Finds instances nobody is finishing and plans to ask for, or recover, them.
   * What the executor waits on is urgent; a gap in a row, or an uncommitted
   * instance nobody needs, only after the orphan delay. Every delay is at least
   * a few measured round trips, so a slow WAN commit is never mistaken for a
   * failure.
   */
  scan<C>(now: number, view: ScanView<C>): ScanPlan {
    const timing = this.#timers.timing;
    for (const key of view.waitedOn) this.want(key, now);
    const orphanAge = this.#timers.scaled(timing.orphanTicks, 20);
    const requestDelay = this.#timers.scaled(timing.commitRequestTicks, 2);
    const gapRequests: CommitRequest[] = [];
    for (let row = 0; row < this.#replicas; row++) {
      const known = view.knownPrefix[row]!;
      const highest = this.#rowHighest[row]!;
      const gap = this.#gaps[row]!;
      if (known >= highest) {
        gap.at = -1;
        continue;
      }
      if (gap.at !== known) {
        gap.at = known;
        gap.since = now;
        continue;
      }
      const age = now - gap.since;
      if (age >= requestDelay && now - gap.lastRequest >= requestDelay) {
        // Instances this replica never heard of (a lost Commit, or it was down):
        // ask peers for a whole range of commits at once, not one at a time.
        gap.lastRequest = now;
        gapRequests.push({
          owner: row,
          number: known + 1,
          count: Math.min(CATCH_UP_RANGE, highest - known),
        });
      }
      if (age >= orphanAge) this.want(instanceKey(row, known + 1), now);
    }
    for (const instance of view.uncommitted) {
      if (now - instance.sinceTick >= orphanAge && !view.isLeading(instance.key)) {
        this.want(instance.key, now);
      }
    }
    const recoveryDelay = this.#timers.scaled(timing.recoveryTicks, 5);
    const stagger = this.#timers.scaled(timing.recoveryStaggerTicks, 1);
    const recover: number[] = [];
    const requested: number[] = [];
    for (const [key, wanted] of this.#wanted) {
      const owner = keyOwner(key);
      if (view.isCommitted(key) || this.#progress.isPruned(owner, keyNumber(key))) {
        this.#wanted.delete(key);
        continue;
      }
      if (view.isLeading(key)) continue;
      const waited = now - wanted.since;
      if (waited >= requestDelay && now - wanted.lastRequest >= requestDelay) {
        wanted.lastRequest = now;
        requested.push(key);
      }
      // The replica after the owner tries first, the owner itself last.
      const delay = wanted.fenced === true
        ? requestDelay
        : recoveryDelay + this.#distance(owner) * stagger;
      if (waited >= delay && now >= wanted.notBefore) {
        recover.push(key);
      }
    }
    return { gapRequests, recover, requests: coalesceRequests(requested) };
  }

  /** Position of this replica after `owner` in ring order, 0 for the next one. */
  #distance(owner: number): number {
    return (this.#self - owner - 1 + this.#replicas) % this.#replicas;
  }
}

/**
 * Coalesces instance keys into commit requests: consecutive numbers of a row
 * become one range (at most 256 long), rows in the order first seen.
 */
export function coalesceRequests(keys: readonly number[]): CommitRequest[] {
  const result: CommitRequest[] = [];
  if (keys.length === 0) return result;
  const byRow = new Map<number, number[]>();
  for (const key of keys) {
    const row = keyOwner(key);
    let numbers = byRow.get(row);
    if (numbers === undefined) byRow.set(row, numbers = []);
    numbers.push(keyNumber(key));
  }
  for (const [owner, numbers] of byRow) {
    numbers.sort((a, b) => a - b);
    let start = numbers[0]!;
    let count = 1;
    for (let i = 1; i < numbers.length; i++) {
      if (numbers[i] === start + count && count < 256) {
        count++;
      } else {
        result.push({ owner, number: start, count });
        start = numbers[i]!;
        count = 1;
      }
    }
    result.push({ owner, number: start, count });
  }
  return result;
}
