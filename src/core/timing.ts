/**
 * The replica's timer settings and the timeouts derived from them. Every timer
 * counts ticks (the core reads no clock); those that wait on peers scale with
 * the round trips the driver measured, so a slow wide-area link is never taken
 * for a failure ("no retransmission, no timeouts" was a defect of the original
 * code; see the protocol card).
 *
 * @module
 */

/** Timer settings, in ticks. Round-trip-scaled timers use the driver's measurements. */
export interface TimingOptions {
  /** Round trip assumed for a peer the driver has not measured. */
  readonly defaultRoundTripTicks: number;
  /** A thrifty quorum is widened after this many round trips of its slowest member... */
  readonly widenRoundTrips: number;
  /** ...plus this margin. */
  readonly widenMarginTicks: number;
  /** First retransmission interval after the widened set stays silent; doubles per attempt. */
  readonly retransmitTicks: number;
  /** Cap on the retransmission interval. */
  readonly maxRetransmitTicks: number;
  /** How long the executor waits on a missing commit before asking peers for it. */
  readonly commitRequestTicks: number;
  /** How long the executor waits on a missing commit before recovering it. */
  readonly recoveryTicks: number;
  /** Extra wait per position after the owner, so replicas do not all recover at once. */
  readonly recoveryStaggerTicks: number;
  /** An uncommitted instance nobody waits on is recovered after this long. */
  readonly orphanTicks: number;
  /** A recovery that has not finished after this long starts again at a higher ballot. */
  readonly recoveryAttemptTicks: number;
  /** Period of progress gossip (frontiers). */
  readonly frontierTicks: number;
  /** Period of the housekeeping scan (wanted instances, orphans, gaps). */
  readonly scanTicks: number;
  /** Period after which the conflict index forgets keys every replica pruned. */
  readonly forgetTicks: number;
}

/** Defaults for a 1 ms tick on a local network. */
export const DEFAULT_TIMING: TimingOptions = {
  defaultRoundTripTicks: 20,
  widenRoundTrips: 2,
  widenMarginTicks: 10,
  retransmitTicks: 50,
  maxRetransmitTicks: 2000,
  commitRequestTicks: 50,
  recoveryTicks: 300,
  recoveryStaggerTicks: 100,
  orphanTicks: 2000,
  recoveryAttemptTicks: 500,
  frontierTicks: 50,
  scanTicks: 10,
  forgetTicks: 5000,
};

/** What else {@linkcode Timers} takes. */
export interface TimersOptions {
  /** Settings; missing fields take {@linkcode DEFAULT_TIMING}. */
  readonly timing?: Partial<TimingOptions> | undefined;
  /**
   * The positions that are members (default every position): a removed
   * member is never measured, and its assumed round trip must not slow the
   * timers.
   */
  readonly members?: readonly number[] | undefined;
}

/** The timer settings of one replica and the round trips it measured to each peer. */
export class Timers {
  /** The settings, defaults filled in. */
  readonly timing: TimingOptions;
  readonly #roundTrips: number[];
  /** The members but this replica: whose round trips scale the timers. */
  readonly #peers: readonly number[];

  /** Timers for replica `self` of `replicas` positions. */
  constructor(self: number, replicas: number, options: TimersOptions = {}) {
    this.timing = { ...DEFAULT_TIMING, ...options.timing };
    this.#roundTrips = new Array<number>(replicas).fill(this.timing.defaultRoundTripTicks);
    const members = options.members ?? Array.from({ length: replicas }, (_, peer) => peer);
    this.#peers = members.filter((peer) => peer !== self && peer >= 0 && peer < replicas);
  }

  /** Sets the measured round trip to `peer`, in ticks (at least one). */
  setRoundTrip(peer: number, ticks: number): void {
    this.#roundTrips[peer] = Math.max(1, Math.ceil(ticks));
  }

  /** `base` ticks, or `roundTrips` times the slowest measured member if that is longer. */
  scaled(base: number, roundTrips: number): number {
    let slowest = 0;
    for (const peer of this.#peers) slowest = Math.max(slowest, this.#roundTrips[peer]!);
    return Math.max(base, Math.ceil(slowest * roundTrips));
  }

  /** How long to wait on the peers in the bitmask `targets` before widening a thrifty quorum. */
  widenTimeout(targets: number): number {
    let slowest = 0;
    for (let peer = 0; peer < this.#roundTrips.length; peer++) {
      if ((targets & (1 << peer)) !== 0) slowest = Math.max(slowest, this.#roundTrips[peer]!);
    }
    return Math.ceil(slowest * this.timing.widenRoundTrips) + this.timing.widenMarginTicks;
  }

  /** The interval before retransmission number `attempts + 1`: doubling, capped. */
  retransmitTimeout(attempts: number): number {
    const base = this.scaled(this.timing.retransmitTicks, 2);
    return Math.min(Math.max(base, this.timing.maxRetransmitTicks), base * 2 ** attempts);
  }

  /** How long recovery attempt `attempts` may run (and back off) before the next. */
  recoveryAttemptTimeout(attempts: number): number {
    const base = this.scaled(this.timing.recoveryAttemptTicks, 4);
    return Math.min(Math.max(base, this.timing.maxRetransmitTicks * 4), base * 2 ** attempts);
  }
}
