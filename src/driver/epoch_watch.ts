/**
 * What a replica does when it learns that a peer is in a later epoch (from
 * the peer's batch, or from its refusal of a batch of ours: `BatchRefusal`):
 * it asks that peer for its configuration, and retires, installing nothing,
 * if that later epoch does not have it as the member it is (a member
 * removed or replaced while it was down learns it this way: nobody sends a
 * non-member anything). A replica that is leaving (`Leaving`: it executed
 * the change that ended its membership) counts the new configuration's
 * voters that run it, asking those not yet known, and stops answering its
 * old epoch once enough do.
 *
 * @module
 */

import type { Configuration } from "../core/configuration.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Membership } from "./membership.ts";
import type { ReplicaDriverOptions } from "./options.ts";
import { ConfigurationChecks } from "./retirement.ts";

/** What {@linkcode EpochWatch} needs of its driver. */
export interface EpochWatchHost {
  /** This replica's id (for logs). */
  readonly id: number;
  /** The driver's settings (`fetchConfiguration`, `log`). */
  readonly options: ReplicaDriverOptions;
  /** Time and timers. */
  readonly clock: Clock;
  /** This process's membership. */
  readonly membership: Membership;
  /** Whether the driver is stopping. */
  stopped(): boolean;
  /** Whether a snapshot is being installed. */
  installing(): boolean;
  /** Whether this process has persisted instance records. */
  persistedRecords(): boolean;
  /** Retires for `reason`, with `configuration` (the later epoch's) as its own. */
  retire(reason: string, configuration: Configuration): void;
}

/** Watches for later epochs that no longer have this process as a member. */
export class EpochWatch {
  readonly #host: EpochWatchHost;
  /** Asks peers for their configuration, if the driver can. */
  readonly #checks: ConfigurationChecks | undefined;

  /** Nothing asked yet. */
  constructor(host: EpochWatchHost) {
    this.#host = host;
    const { options } = host;
    this.#checks = options.fetchConfiguration === undefined ? undefined : new ConfigurationChecks({
      id: host.id,
      clock: host.clock,
      fetch: options.fetchConfiguration,
      ...(options.log === undefined ? {} : { log: options.log }),
    });
  }

  /**
   * Peer `peer` is in `epoch`, later than this replica's. A replica that may
   * have missed being removed or replaced asks it for its configuration.
   */
  peerAhead(peer: number, epoch: number): void {
    const { membership, clock } = this.#host;
    const now = clock.now();
    membership.noteAhead(peer, epoch, now);
    if (membership.leaving !== undefined) {
      this.tick(now);
      return;
    }
    if (membership.retired !== undefined || membership.joining) return;
    this.#ask(peer);
  }

  /** While leaving: ends it once done, else asks the new voters not yet known to run their epoch. */
  tick(nowMs: number): void {
    const membership = this.#host.membership;
    const leaving = membership.leaving;
    if (leaving === undefined) return;
    const done = leaving.doneReason(nowMs);
    if (done !== undefined) {
      membership.stopLeaving(done);
      return;
    }
    for (const peer of leaving.unknown()) this.#ask(peer);
  }

  /** Asks nothing more. */
  stop(): void {
    this.#checks?.stop();
  }

  #ask(peer: number): void {
    this.#checks?.ask(peer, (configuration) => this.#answered(peer, configuration));
  }

  /**
   * Peer `peer` runs `configuration`: a leaving replica counts it; any other
   * retires if that later epoch does not have it as the member it is.
   */
  #answered(peer: number, configuration: Configuration): void {
    const host = this.#host;
    if (host.stopped()) return;
    const membership = host.membership;
    const leaving = membership.leaving;
    if (leaving !== undefined) {
      leaving.noteRunning(peer, configuration.epoch);
      this.tick(host.clock.now());
      return;
    }
    if (membership.retired !== undefined || host.installing()) return;
    const reason = membership.foreignReason(configuration, host.persistedRecords());
    if (reason !== undefined) host.retire(reason, configuration);
  }
}
