/**
 * Linearizable reads served from the replica's own state under its quorum
 * leases (`src/core/lease.ts`). The core says whether a read may be served
 * now, held (a write to its keys is pending here), or must go through the
 * protocol; this module holds reads until the write executes (Bodega's
 * lesson: held, not redirected), with a deadline, and reads in the order the
 * card asks: the state first, then the clock, then the lease.
 *
 * @module
 */

import type { Access } from "../core/conflict.ts";
import type { LeaseReadVerdict } from "../core/lease_state.ts";
import type { Clock } from "../runtime/clock.ts";

/** How long a read is held for a pending write before it goes through the protocol (ms). */
export const DEFAULT_READ_HOLD_MS = 1000;
/** Reads held at once; past it a read goes through the protocol at once. */
export const MAX_HELD_READS = 10_000;

/** What {@linkcode LeaseReads} needs of the core. */
export interface LeaseReadCore {
  /** The core's verdict on a local read of `accesses` at `now`. */
  localRead(accesses: readonly Access[], now: number): LeaseReadVerdict;
  /** Whether the lease still holds at `now`. */
  leaseStillValid(now: number): boolean;
}

/** Counters for `/status` and `/metrics`. */
export interface LeaseReadMetrics {
  /** Reads served from local state under a lease. */
  localReads: number;
  /** Of those, reads that were held for a pending write first. */
  heldReads: number;
  /** Total time reads spent held (ms). */
  heldReadMs: number;
  /** Reads that went through the protocol: no lease, not leased here, or held too long. */
  fallbacks: { noLease: number; notLeased: number; heldTooLong: number; expiredDuringRead: number };
}

/**
 * For tests only: a process stall (a GC pause, a SIGSTOP) between a local
 * read's verdict and its state read, the window riak_ensemble #41 was in.
 */
export interface LeaseReadStall {
  /**
   * Stalls this read, or not (returns false): when it does, `resume` is
   * called once the process goes on, before anything else of it runs.
   */
  readonly stall: (resume: () => void) => boolean;
  /**
   * The broken order, for a negative test: the lease is checked with the
   * verdict, before the stall, and not after the state read.
   */
  readonly unsafeCheckBeforeStall?: boolean;
}

/** Settings of {@linkcode LeaseReads}. */
export interface LeaseReadsOptions {
  /** Longest a read is held for a pending write (ms; default {@linkcode DEFAULT_READ_HOLD_MS}). */
  readonly holdMs?: number;
  /** Called as a local read is served, right after its state read and lease check (invariant checks). */
  readonly served?: (accesses: readonly Access[]) => void;
  /** For tests only: stalls reads between the verdict and the state read. */
  readonly stall?: LeaseReadStall;
}

interface HeldRead {
  readonly since: number;
  readonly attempt: () => boolean;
  readonly giveUp: () => void;
}

/** Serves reads under leases for one replica; the driver re-runs held reads as the core moves. */
export class LeaseReads {
  readonly #clock: Clock;
  readonly #holdMs: number;
  readonly #served: ((accesses: readonly Access[]) => void) | undefined;
  readonly #stall: LeaseReadStall | undefined;
  #held: HeldRead[] = [];
  readonly metrics: LeaseReadMetrics = {
    localReads: 0,
    heldReads: 0,
    heldReadMs: 0,
    fallbacks: { noLease: 0, notLeased: 0, heldTooLong: 0, expiredDuringRead: 0 },
  };

  /** Reads on `clock`, held at most `holdMs` for a pending write. */
  constructor(clock: Clock, options: LeaseReadsOptions = {}) {
    this.#clock = clock;
    this.#holdMs = options.holdMs ?? DEFAULT_READ_HOLD_MS;
    this.#served = options.served;
    this.#stall = options.stall;
  }

  /** Reads held now. */
  get heldCount(): number {
    return this.#held.length;
  }

  /**
   * Serves `read` from local state if the lease allows, now or once the
   * writes it waits on executed: `done` gets `{ value }`, or undefined when
   * the read must go through the protocol. `core()` is asked at each attempt
   * (the core is rebuilt at an epoch change; leases do not survive it).
   * Callbacks, not a promise: the simulator's completions must not go
   * through microtasks. `done` is called once, possibly before this returns.
   */
  readThen<T>(
    core: () => LeaseReadCore | undefined,
    accesses: readonly Access[],
    read: () => T,
    done: (result: { value: T } | undefined) => void,
  ): void {
    const since = this.#clock.now();
    let wasHeld = false;
    const attempt = (): boolean => {
      const current = core();
      if (current === undefined) {
        this.metrics.fallbacks.noLease++;
        done(undefined);
        return true;
      }
      const verdict = current.localRead(accesses, this.#clock.now());
      if (verdict.verdict === "refuse") {
        if (verdict.reason === "not-leased" || verdict.reason === "disabled") {
          this.metrics.fallbacks.notLeased++;
        } else {
          this.metrics.fallbacks.noLease++;
        }
        done(undefined);
        return true;
      }
      if (verdict.verdict === "hold") {
        wasHeld = true;
        return false;
      }
      const serve = (checkLease: boolean) => {
        // The state, then the clock (riak_ensemble #41: a lease checked
        // before the read lets a read that ran late return stale data).
        const value = read();
        if (checkLease && !current.leaseStillValid(this.#clock.now())) {
          this.metrics.fallbacks.expiredDuringRead++;
          done(undefined);
          return;
        }
        this.metrics.localReads++;
        if (wasHeld) {
          this.metrics.heldReads++;
          this.metrics.heldReadMs += this.#clock.now() - since;
        }
        this.#served?.(accesses);
        done({ value });
      };
      const stall = this.#stall;
      if (stall !== undefined) {
        const checkLease = stall.unsafeCheckBeforeStall !== true;
        if (stall.stall(() => serve(checkLease))) return true;
      }
      serve(true);
      return true;
    };
    if (attempt()) return;
    if (this.#held.length >= MAX_HELD_READS) {
      this.metrics.fallbacks.heldTooLong++;
      done(undefined);
      return;
    }
    this.#held.push({
      since,
      attempt,
      giveUp: () => {
        this.metrics.fallbacks.heldTooLong++;
        done(undefined);
      },
    });
  }

  /**
   * Tries the held reads again (after a Ready was advanced: writes may have
   * executed), and sends those held past the deadline through the protocol.
   */
  retry(): void {
    if (this.#held.length === 0) return;
    const now = this.#clock.now();
    const held = this.#held;
    this.#held = [];
    for (const read of held) {
      if (read.attempt()) continue;
      if (now - read.since >= this.#holdMs) {
        read.giveUp();
        continue;
      }
      this.#held.push(read);
    }
  }
}
