/**
 * One replica's side of the quorum leases (`lease.ts` has the rules and the
 * argument): as a grantor, the promises it made; as a holder, the requests it
 * sent and the grants it holds; the writes it was told of but has not
 * executed (notices). Volatile by design: a restarted grantor names every
 * holder for a lease length instead of remembering (see `lease.ts`).
 *
 * Time comes from the driver (`Replica.observeTime`): a monotonic clock in
 * milliseconds, never read here.
 *
 * @module
 */

import { type Access, accessesConflict } from "./conflict.ts";
import type { Deps } from "./deps.ts";
import {
  caughtUp,
  grantorPromiseUntil,
  holderLeaseUntil,
  type LeaseConfiguration,
  leaseHolderMask,
  leaseQuorumSize,
} from "./lease.ts";

/** Requests remembered per grantor (a grant for an older one is ignored: its lease is shorter anyway). */
export const MAX_LEASE_REQUESTS_REMEMBERED = 16;
/** Grants waiting to catch up, per grantor; a newer one replaces the oldest. */
export const MAX_PENDING_GRANTS = 8;
/** Writes a holder was told of and has not executed; past it a holder stops acknowledging. */
export const MAX_LEASE_NOTICES = 65_536;

interface PendingGrant {
  readonly until: number;
  readonly frontier: Deps;
}

/** What {@linkcode LeaseState.readVerdict} says of a local read. */
export type LeaseReadVerdict =
  | { readonly verdict: "serve" }
  | {
    /** A write to the key is pending here: wait for it to execute, then ask again. */
    readonly verdict: "hold";
    /** The instances waited on, as `[owner, number]`. */
    readonly pending: readonly (readonly [number, number])[];
  }
  | {
    /** No local read: not leased here, or too few valid grants. */
    readonly verdict: "refuse";
    /** Why, for metrics and logs. */
    readonly reason: "not-leased" | "no-lease" | "disabled";
  };

/** Counters for `/status` and `/metrics`. */
export interface LeaseStats {
  /** Grants this replica handed out. */
  grantsGiven: number;
  /** Requests this replica left unanswered: their holder keeps a write of its waiting. */
  grantsWithheld: number;
  /** Grants received that counted (their request was remembered). */
  grantsReceived: number;
  /** Writes that waited for a holder's acknowledgement beyond their quorum. */
  writesHeldForHolders: number;
  /** Writes decided without a named holder's acknowledgement, after its promise ran out. */
  writesReleased: number;
  /** Total time (ms) writes waited on holders beyond their quorum. */
  writeHoldMs: number;
  /** Notices answered. */
  noticesAcknowledged: number;
  /** Notices not answered because too many were pending. */
  noticesRefused: number;
}

/**
 * For tests only, never in production: breaks one rule of the lease
 * protocol, so a test can show that the simulator catches it.
 */
export interface UnsafeLeaseOptions {
  /** A grant counts at once, without catching up to its frontier. */
  readonly skipCatchUp?: boolean;
  /** A restarted grantor names nobody it does not remember promising. */
  readonly ignoreRestart?: boolean;
}

/** The lease bookkeeping of replica `self`. */
export class LeaseState {
  readonly configuration: LeaseConfiguration;
  readonly #unsafe: UnsafeLeaseOptions;
  readonly #self: number;
  readonly #positions: number;
  readonly #voterMask: number;
  readonly #memberMask: number;
  /** The last time the driver observed (ms, monotonic). */
  now = 0;
  /** Grantor: per holder, until when (own clock) it is promised. */
  readonly #promisedUntil: number[];
  /** Grantor: until when it names every holder, having restarted. */
  readonly #restartUntil: number;
  /**
   * Grantor: holders (bitmask) that left a write this replica coordinates
   * unacknowledged past a notice retry; no renewal for them until they
   * acknowledge one (see {@linkcode LeaseState.withholdFrom}).
   */
  #withheld = 0;
  /** Grantor: per row, the highest instance number held (its frontier in every grant). */
  readonly #seenHighest: number[];
  /** Holder: per grantor, recent request sequence numbers and send times. */
  readonly #sent: { seq: number; at: number }[][];
  #nextSeq: number;
  #nextRequestAt = 0;
  /** Holder: per grantor, whether a grant came from it since the last request to it. */
  readonly #heard: boolean[];
  /** Holder: per grantor, grants not caught up yet. */
  readonly #pending: PendingGrant[][];
  /** Holder: per grantor, until when a caught-up grant lasts (own clock). */
  readonly #validUntil: number[];
  /** Holder: writes told of by notice and not executed here, by instance key. */
  readonly #notices = new Map<number, readonly Access[]>();
  /** The same, by the single key they write (most writes), for reads to look up. */
  readonly #noticesByKey = new Map<string, Set<number>>();
  /** The same, for writes of spans (few: configuration changes). */
  readonly #spanNotices = new Set<number>();
  readonly stats: LeaseStats = {
    grantsGiven: 0,
    grantsWithheld: 0,
    grantsReceived: 0,
    writesHeldForHolders: 0,
    writesReleased: 0,
    writeHoldMs: 0,
    noticesAcknowledged: 0,
    noticesRefused: 0,
  };

  /**
   * The state of a replica that just started (or entered a new epoch).
   * `restartedAt`: when the process started, if this core is its first (the
   * restart rule); absent in a new epoch, where no promise of the old one
   * counts (`lease.ts`: leases end at a configuration change).
   */
  constructor(
    self: number,
    positions: number,
    options: {
      readonly configuration: LeaseConfiguration;
      readonly voterMask: number;
      readonly memberMask: number;
      readonly restartedAt?: number;
      readonly unsafe?: UnsafeLeaseOptions;
      /** Where request numbers start (`ReplicaOptions.leaseRequestBase`). */
      readonly requestBase?: number;
    },
  ) {
    this.configuration = options.configuration;
    this.#self = self;
    this.#positions = positions;
    this.#voterMask = options.voterMask;
    this.#memberMask = options.memberMask;
    this.#promisedUntil = new Array<number>(positions).fill(Number.NEGATIVE_INFINITY);
    this.#unsafe = options.unsafe ?? {};
    this.#restartUntil = options.restartedAt === undefined || this.#unsafe.ignoreRestart === true
      ? Number.NEGATIVE_INFINITY
      : grantorPromiseUntil(options.restartedAt, options.configuration);
    if (options.restartedAt !== undefined) this.now = options.restartedAt;
    this.#nextSeq = (options.requestBase ?? 0) + 1;
    this.#seenHighest = new Array<number>(positions).fill(0);
    this.#sent = Array.from({ length: positions }, () => []);
    this.#pending = Array.from({ length: positions }, () => []);
    this.#heard = new Array<boolean>(positions).fill(false);
    this.#validUntil = new Array<number>(positions).fill(Number.NEGATIVE_INFINITY);
  }

  /** Whether any rule leases anything. */
  get enabled(): boolean {
    return this.configuration.rules.length > 0;
  }

  /** Takes the driver's clock reading; time never goes back here. */
  observe(now: number): void {
    if (now > this.now) this.now = now;
  }

  /** Notes that instance `(owner, number)` is held here (the grantor's frontier). */
  noteInstance(owner: number, number: number): void {
    if (number > this.#seenHighest[owner]!) this.#seenHighest[owner] = number;
  }

  /** The holders of the keys `accesses` write, as a bitmask of members. */
  holdersOf(accesses: readonly Access[]): number {
    return leaseHolderMask(accesses, this.configuration.rules, this.#memberMask);
  }

  // ---------------------------------------------------------------------------
  // Grantor.

  /**
   * The holders this grantor names for a write with `accesses`, as a bitmask,
   * and how long (own clock, ms) the longest of those promises has left.
   */
  named(accesses: readonly Access[]): { holders: number; remainingMs: number } {
    if (!this.enabled) return { holders: 0, remainingMs: 0 };
    const wanted = this.holdersOf(accesses) & ~(1 << this.#self);
    let holders = 0;
    for (let holder = 0; holder < this.#positions; holder++) {
      if ((wanted & (1 << holder)) !== 0 && this.#promisedTo(holder) > this.now) {
        holders |= 1 << holder;
      }
    }
    return { holders, remainingMs: this.promiseRemaining(holders) };
  }

  /** How long (own clock, ms) the longest of the promises to the holders in `mask` has left. */
  promiseRemaining(mask: number): number {
    let until = this.now;
    for (let holder = 0; holder < this.#positions; holder++) {
      if ((mask & (1 << holder)) !== 0) until = Math.max(until, this.#promisedTo(holder));
    }
    return until - this.now;
  }

  /** Until when (own clock, ms) this grantor names `holder`: its promise, or the restart rule's bound. */
  #promisedTo(holder: number): number {
    return Math.max(this.#promisedUntil[holder]!, this.#restartUntil);
  }

  /** Whether some rule leases keys to member `id`. */
  #leasesTo(id: number): boolean {
    return (this.#memberMask & (1 << id)) !== 0 &&
      this.configuration.rules.some((rule) => rule.holders === "all" || rule.holders.includes(id));
  }

  /**
   * Stops renewing the promises to the holders in `mask`: they left a write
   * this replica coordinates unacknowledged. A holder that can send but not
   * receive (a one-way partition) keeps asking, and each grant would renew
   * a promise that keeps the write waiting for as long as the partition
   * lasts; withheld, the promise runs out within a lease and the write goes
   * on (Paxos Quorum Leases: a holder that does not acknowledge a write is
   * not renewed). Withholding a grant is always safe: it promises less.
   */
  withholdFrom(mask: number): void {
    this.#withheld |= mask & ~(1 << this.#self);
  }

  /**
   * `holder` hears this replica (it acknowledged a write of it, or its
   * request says an empty grant reached it): grant it again.
   */
  heardFrom(holder: number): void {
    this.#withheld &= ~(1 << holder);
  }

  /**
   * Per holder, until when (own clock, ms) this grantor names it: its
   * promise, or the restart rule's bound (for invariant checks).
   */
  promises(): number[] {
    return this.#promisedUntil.map((_, holder) => this.#promisedTo(holder));
  }

  /**
   * Handles a holder's request: promises it a lease and returns the frontier
   * to send with the grant, or undefined if `holder` holds no lease here (or
   * its grants are withheld).
   */
  grant(
    holder: number,
    executedFloor: Deps,
    heard = false,
  ): { readonly frontier: Deps; readonly empty: boolean } | undefined {
    if (!this.#leasesTo(holder)) return undefined;
    const frontier = new Array<number>(this.#positions);
    for (let row = 0; row < this.#positions; row++) {
      frontier[row] = Math.max(this.#seenHighest[row]!, executedFloor[row] ?? 0);
    }
    // A withheld holder that shows it hears this grantor (it received an
    // empty grant, and this request came through) is connected both ways
    // again: it is granted again without waiting for a write of ours.
    if (heard) this.heardFrom(holder);
    if ((this.#withheld & (1 << holder)) !== 0) {
      this.stats.grantsWithheld++;
      return { frontier, empty: true };
    }
    this.#promisedUntil[holder] = Math.max(
      this.#promisedUntil[holder]!,
      grantorPromiseUntil(this.now, this.configuration),
    );
    this.stats.grantsGiven++;
    return { frontier, empty: false };
  }

  // ---------------------------------------------------------------------------
  // Holder.

  /** Whether some rule leases keys to this replica. */
  get holds(): boolean {
    return this.#leasesTo(this.#self);
  }

  /**
   * The request to send each grantor now, if it is time: a sequence number,
   * remembered with the send time. Undefined when not due.
   */
  dueRequest(): number | undefined {
    if (!this.enabled || !this.holds || this.now < this.#nextRequestAt) return undefined;
    if (this.#notices.size >= MAX_LEASE_NOTICES) return undefined;
    this.#nextRequestAt = this.now + this.configuration.renewMs;
    const seq = this.#nextSeq++;
    for (let grantor = 0; grantor < this.#positions; grantor++) {
      if (grantor === this.#self || (this.#voterMask & (1 << grantor)) === 0) continue;
      const sent = this.#sent[grantor]!;
      sent.push({ seq, at: this.now });
      if (sent.length > MAX_LEASE_REQUESTS_REMEMBERED) sent.shift();
    }
    return seq;
  }

  /** Takes a grant answering request `seq` from `grantor`, with its frontier. */
  onGrant(
    grantor: number,
    seq: number,
    frontier: Deps,
    options: { readonly executed: Deps; readonly empty?: boolean },
  ): void {
    const { executed } = options;
    if ((this.#voterMask & (1 << grantor)) === 0 || grantor === this.#self) return;
    const request = this.#sent[grantor]!.find((sent) => sent.seq === seq);
    if (request === undefined) return;
    this.#heard[grantor] = true;
    if (options.empty === true) return;
    this.stats.grantsReceived++;
    const until = holderLeaseUntil(request.at, this.configuration);
    if (this.#unsafe.skipCatchUp === true || caughtUp(frontier, executed)) {
      this.#validUntil[grantor] = Math.max(this.#validUntil[grantor]!, until);
      return;
    }
    const pending = this.#pending[grantor]!;
    pending.push({ until, frontier });
    if (pending.length > MAX_PENDING_GRANTS) pending.shift();
  }

  /** Whether a grant (or an empty one) from `grantor` came since the last request to it; resets. */
  takeHeard(grantor: number): boolean {
    const heard = this.#heard[grantor]!;
    this.#heard[grantor] = false;
    return heard;
  }

  /** Moves grants whose frontier this replica has executed to valid. */
  #catchUp(executed: Deps): void {
    for (let grantor = 0; grantor < this.#positions; grantor++) {
      const pending = this.#pending[grantor]!;
      if (pending.length === 0) continue;
      let kept = 0;
      for (const grant of pending) {
        if (caughtUp(grant.frontier, executed)) {
          this.#validUntil[grantor] = Math.max(this.#validUntil[grantor]!, grant.until);
        } else if (grant.until > this.now) {
          pending[kept++] = grant;
        }
      }
      pending.length = kept;
    }
  }

  /**
   * Whether this replica holds valid, caught-up grants from a majority of
   * voters at `now` (itself counting when it votes).
   */
  leaseValid(now: number, executed: Deps): boolean {
    this.#catchUp(executed);
    let grants = (this.#voterMask & (1 << this.#self)) !== 0 ? 1 : 0;
    let voters = 0;
    for (let grantor = 0; grantor < this.#positions; grantor++) {
      if ((this.#voterMask & (1 << grantor)) === 0) continue;
      voters++;
      if (grantor !== this.#self && this.#validUntil[grantor]! > now) grants++;
    }
    return grants >= leaseQuorumSize(voters);
  }

  /** Per grantor, how long (ms, own clock) its caught-up grant has left; 0 when none. */
  remaining(now: number): number[] {
    return this.#validUntil.map((until) => Math.max(0, until - now));
  }

  /**
   * Records a write this replica was told of (it must hold reads of its keys
   * until it executes). Returns whether it may acknowledge: false when too
   * many are pending (the coordinator then waits for the promises to run out).
   */
  notice(key: number, accesses: readonly Access[]): boolean {
    if (!this.#notices.has(key) && this.#notices.size >= MAX_LEASE_NOTICES) {
      this.stats.noticesRefused++;
      return false;
    }
    if (!this.#notices.has(key)) {
      this.#notices.set(key, accesses);
      for (const access of accesses) {
        if (!access.write) continue;
        if (access.end !== undefined) {
          this.#spanNotices.add(key);
          continue;
        }
        let keys = this.#noticesByKey.get(access.key);
        if (keys === undefined) this.#noticesByKey.set(access.key, keys = new Set());
        keys.add(key);
      }
    }
    this.stats.noticesAcknowledged++;
    return true;
  }

  /** Forgets the notice of instance `key` (it executed here, or left). */
  forgetNotice(key: number): void {
    const accesses = this.#notices.get(key);
    if (accesses === undefined) return;
    this.#notices.delete(key);
    this.#spanNotices.delete(key);
    for (const access of accesses) {
      if (!access.write || access.end !== undefined) continue;
      const keys = this.#noticesByKey.get(access.key);
      keys?.delete(key);
      if (keys?.size === 0) this.#noticesByKey.delete(access.key);
    }
  }

  /** Notices pending. */
  get noticeCount(): number {
    return this.#notices.size;
  }

  /** Instance keys of the notices whose writes conflict with `accesses`. */
  conflictingNotices(accesses: readonly Access[]): number[] {
    if (this.#notices.size === 0) return [];
    const found = new Set<number>();
    const spans = accesses.some((access) => access.end !== undefined);
    if (spans) {
      // A span read (a list) meets any single-key write inside it: scan.
      for (const [key, written] of this.#notices) {
        if (accessesConflict(accesses, written)) found.add(key);
      }
      return [...found];
    }
    for (const access of accesses) {
      for (const key of this.#noticesByKey.get(access.key) ?? []) found.add(key);
    }
    for (const key of this.#spanNotices) {
      if (accessesConflict(accesses, this.#notices.get(key)!)) found.add(key);
    }
    return [...found];
  }
}
