/**
 * The quorum-lease invariants the simulator checks at every local read
 * served (the design card `leases.md`, "Testing"; the argument is in
 * `src/core/lease.ts`):
 *
 * - **Decided writes are seen.** Every write to the read's keys committed
 *   anywhere before the read (simulation-wide knowledge) is applied to the
 *   state the read was served from, and none was committed in a later epoch.
 *   A decided write either had the holder's acknowledgement (the holder then
 *   holds the read until it executes) or its promises ran out, and every
 *   later grant carries a frontier past it.
 * - **The holder's lease ends first.** For every grant the holder counts,
 *   its end (holder clock) comes, in simulated time, no later than the end
 *   of that grantor's promise to it (grantor clock), the restart rule's
 *   bound included: a grantor that restarted still names the holder.
 *
 * @module
 */

import type { Access } from "../core/conflict.ts";
import { describeId } from "../core/instance.ts";
import type { SimHost } from "./host.ts";
import { type InvariantChecker, InvariantViolation } from "./invariants.ts";

/** Slack for float error when comparing ends of leases (simulated ms). */
const EPSILON_MS = 1e-6;

/** What the lease checks need from the simulation. */
export interface LeaseChecksOptions {
  /** The replicas' processes. */
  readonly hosts: readonly SimHost[];
  /** The protocol invariants' record of what was committed where. */
  readonly checker: InvariantChecker;
  /** Simulated time now. */
  readonly now: () => number;
  /** Per replica, how fast its clock runs against simulated time. */
  readonly clockRate: (id: number) => number;
  /** Check that holders' leases end before their grantors' promises (default true). */
  readonly checkExpiry?: boolean;
}

/** Checks every local read as it is served. */
export class LeaseChecks {
  readonly #options: LeaseChecksOptions;
  /** Local reads checked. */
  reads = 0;
  /** Grants compared with their grantor's promise. */
  grantsCompared = 0;

  /** Creates the checks over `options.hosts`. */
  constructor(options: LeaseChecksOptions) {
    this.#options = options;
  }

  /** Replica `id` served a read of `accesses` from its state, just now. */
  onLocalRead(id: number, accesses: readonly Access[]): void {
    const driver = this.#options.hosts[id]!.driver;
    if (driver === undefined) return;
    this.reads++;
    this.#checkDecidedWrites(id, accesses);
    if (this.#options.checkExpiry !== false) this.#checkExpiry(id);
  }

  #checkDecidedWrites(id: number, accesses: readonly Access[]): void {
    const driver = this.#options.hosts[id]!.driver!;
    const epoch = driver.configuration.epoch;
    for (const write of this.#options.checker.decidedWrites(accesses, epoch)) {
      const applied = write.epoch === epoch && driver.hasApplied(write.owner, write.number);
      if (applied) continue;
      throw new InvariantViolation(
        "a local read sees every decided write",
        `replica ${id} (epoch ${epoch}) served a read of ${
          describeAccesses(accesses)
        } at ${this.#options.now()} without ${
          describeId(write.owner, write.number)
        } of epoch ${write.epoch}, ` +
          `committed before it`,
      );
    }
  }

  #checkExpiry(id: number): void {
    const { hosts, now, clockRate } = this.#options;
    const holder = hosts[id]!.driver!;
    const epoch = holder.configuration.epoch;
    const remaining = holder.core.leaseStatus(holder.now()).remainingMs;
    const at = now();
    for (let grantor = 0; grantor < remaining.length; grantor++) {
      const left = remaining[grantor]!;
      if (left <= 0 || grantor === id) continue;
      const driver = hosts[grantor]?.driver;
      // A grantor that is down forgot its promises: it names every holder
      // when it comes back (the restart rule), checked from then on.
      if (driver === undefined || driver.configuration.epoch !== epoch) continue;
      this.grantsCompared++;
      const holderEnds = at + left / clockRate(id);
      const promised = driver.core.leasePromises()[id] ?? Number.NEGATIVE_INFINITY;
      const grantorEnds = at + (promised - driver.now()) / clockRate(grantor);
      if (holderEnds <= grantorEnds + EPSILON_MS) continue;
      throw new InvariantViolation(
        "a holder's lease ends before its grantor's promise",
        `at ${at}, replica ${id} counts a grant of replica ${grantor} until ${
          holderEnds.toFixed(3)
        }, which promised it until ${
          Number.isFinite(grantorEnds) ? grantorEnds.toFixed(3) : "never"
        } (simulated ms)`,
      );
    }
  }
}

function describeAccesses(accesses: readonly Access[]): string {
  return accesses.map((access) =>
    access.end === undefined ? access.key : `[${access.key},${access.end})`
  ).join(" ");
}
