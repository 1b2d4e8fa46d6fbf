/**
 * Quorum leases in the simulator (`src/core/lease.ts`, the design card
 * `leases.md`, "Testing"): the lease configuration of a run and a clock rate
 * per replica within its declared drift, drawn from the seed on a stream of
 * their own (so a run without leases draws as it did before they existed).
 *
 * @module
 */

import type { LeaseConfiguration, LeaseRule } from "../core/lease.ts";
import { MAX_REPLICAS } from "../core/quorum.ts";
import { SeededRandom } from "../runtime/random.ts";

/** Share of seeds that run leases when the request does not say. */
export const LEASE_SHARE = 0.5;

/** The leases of one run: what every replica's configuration says, and how its clock runs. */
export interface SimLeases {
  /** The lease configuration (epoch 1's, carried by every change). */
  readonly configuration: LeaseConfiguration;
  /**
   * Per member position, how fast its clock runs against simulated time:
   * any two within `1 + drift` of each other (the declared bound), so that
   * the lease argument holds; a negative test breaks it on purpose.
   */
  readonly clockRates: readonly number[];
  /** Per member position, where its clock starts (ms): clocks agree on nothing. */
  readonly clockOffsetsMs: readonly number[];
  /**
   * Share of local reads that stall (the process stops, a GC pause) between
   * their verdict and their state read, in the safety phase: the lease must
   * be checked again after the state read (riak_ensemble #41).
   */
  readonly readStallShare: number;
}

/**
 * Draws a run's leases: on for `want` "on", off for "off", else for a
 * {@linkcode LEASE_SHARE} of seeds. Durations are scaled to simulated time
 * (lease 400-2000 ms, renewal at most a quarter of it) and the drift is
 * 1-5 %. Rules lease every key to every member in most runs, else shared
 * keys only, or to some members only (non-holders' reads go through the
 * protocol, and writes wait only for the holders).
 */
export function deriveLeases(
  seed: number,
  replicas: number,
  want: "on" | "off" | undefined,
): SimLeases | undefined {
  const random = new SeededRandom(seed ^ 0x1ea5e5);
  const pick = (low: number, high: number) => low + random.next() * (high - low);
  const on = random.next() < LEASE_SHARE;
  const leaseMs = 400 + random.int(1601);
  const renewMs = Math.max(20, Math.floor(leaseMs / pick(4, 10)));
  const drift = Math.round(pick(0.01, 0.05) * 1000) / 1000;
  const rules = drawRules(random, replicas);
  // Each clock at the slowest or the fastest rate the drift allows, or in
  // between: the extremes are where a mistake in the bound shows.
  const clockRates = Array.from({ length: MAX_REPLICAS }, () => {
    const roll = random.next();
    return roll < 0.35 ? 1 : roll < 0.7 ? 1 + drift : 1 + random.next() * drift;
  });
  const clockOffsetsMs = Array.from({ length: MAX_REPLICAS }, () => random.int(100_000));
  const stallDraw = random.next();
  const readStallShare = stallDraw < 0.3 ? 0.01 + random.next() * 0.04 : 0;
  if (want === "off" || (want === undefined && !on)) return undefined;
  return {
    configuration: { leaseMs, renewMs, drift, rules },
    clockRates,
    clockOffsetsMs,
    readStallShare,
  };
}

function drawRules(random: SeededRandom, replicas: number): LeaseRule[] {
  const roll = random.next();
  if (roll < 0.6) return [{ prefix: "", holders: "all" }];
  // As many draws whatever the size, so that the size changes nothing else.
  const some: number[] = [];
  for (let position = 0; position < MAX_REPLICAS; position++) {
    if (random.next() < 0.5 && position < replicas) some.push(position);
  }
  if (roll < 0.8) {
    // The shared keys (`k…`) to every member; clients' own keys to nobody.
    return [{ prefix: "k", holders: "all" }];
  }
  // Every key to some members, one shared key to every member.
  return [{ prefix: "", holders: some }, { prefix: "k1", holders: "all" }];
}
