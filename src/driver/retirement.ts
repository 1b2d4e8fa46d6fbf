/**
 * When a replica process stops taking part in its cluster (retires): a
 * configuration change it executed removed it or replaced it by a new
 * incarnation; or it learns of a later epoch that does not have it as the
 * member it is (it was removed or replaced while away, or it comes back
 * with its data lost). A retired process installs nothing of the new epoch
 * and serves nothing; its storage keeps saying who it is.
 *
 * @module
 */

import type { Configuration } from "../core/configuration.ts";
import { memberOf } from "./epoch.ts";

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
