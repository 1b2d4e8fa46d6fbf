/**
 * The simulator's membership changes, as an operator makes them with
 * `deno task admin`: which change to try next from a configuration, and what
 * the proposing replica observes of the members (the `ClusterView` the
 * operator's decider, `decideChange` in `src/core/configuration_change.ts`,
 * judges a change by). The simulation proposes what the decider accepts
 * through the KV `reconf` command, as the admin route does
 * (`src/server/membership_route.ts`).
 *
 * @module
 */

import { type Configuration, MAX_MEMBER_ID, voterIds } from "../core/configuration.ts";
import type {
  ClusterView,
  ConfigurationChange,
  MemberStatus,
} from "../core/configuration_change.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import type { Random } from "../runtime/random.ts";

/** A change the simulator tries: an epoch bump (same members), or an operator's change. */
export type SimChange = { readonly kind: "bump" } | ConfigurationChange;

/** The URL the simulator gives member `id` (the one `defaultConfiguration` gives epoch 1's). */
export function simMemberUrl(id: number): string {
  return `http://replica-${id}.invalid`;
}

/**
 * Draws the next change to try from `config`, among those its shape allows:
 * an epoch bump; add a learner (while fewer than two wait and ids last,
 * `MAX_MEMBER_ID`); promote two learners (voters move in pairs, membership
 * design card, case 2); remove a learner; remove two voters (from five or
 * more). Adds and promotes weigh double, so that runs grow (3 -> 3 + 2
 * learners -> 5) before they shrink. Whether the change may be made now is
 * the decider's to say, not this function's.
 */
export function drawChange(config: Configuration, random: Random): SimChange {
  const learners = config.members.filter((member) => member.role === "learner")
    .map((member) => member.id);
  const voters = voterIds(config);
  const choices: (() => SimChange)[] = [() => ({ kind: "bump" })];
  if (learners.length < 2 && config.nextId <= MAX_MEMBER_ID) {
    const add = () => ({ kind: "add", url: simMemberUrl(config.nextId) }) as const;
    choices.push(add, add);
  }
  if (learners.length >= 2) {
    const promote = () => ({ kind: "promote", ids: pickSome(learners, 2, random) }) as const;
    choices.push(promote, promote);
  }
  if (learners.length >= 1) {
    choices.push(() => ({ kind: "remove", ids: pickSome(learners, 1, random) }));
  }
  if (voters.length >= 5) {
    choices.push(() => ({ kind: "remove", ids: pickSome(voters, 2, random) }));
  }
  return choices[random.int(choices.length)]!();
}

/** `count` distinct ids of `ids`, drawn at random, ascending. */
function pickSome(ids: readonly number[], count: number, random: Random): number[] {
  const left = [...ids];
  const picked: number[] = [];
  while (picked.length < count && left.length > 0) {
    picked.push(left.splice(random.int(left.length), 1)[0]!);
  }
  return picked.sort((a, b) => a - b);
}

/** Settings of {@linkcode observedView}. */
export interface ObservedViewOptions {
  /** A member heard from within this many milliseconds is alive. */
  readonly aliveWithinMs: number;
  /** A member at most this many instances behind the observer is caught up. */
  readonly caughtUpInstances: number;
}

/**
 * What `driver` observes of its configuration's members, as its admin route
 * tells the decider (`describeMembers` and `clusterView` in
 * `src/server/admin_route.ts` and `membership_route.ts`): a member is alive
 * when heard from lately as the incarnation the configuration names, and
 * caught up when not pruned past and at most `caughtUpInstances` behind.
 * `inFlight`: a change proposed here has not finished, or the epoch is fenced.
 */
export function observedView(
  driver: ReplicaDriver,
  inFlight: boolean,
  options: ObservedViewOptions,
): ClusterView {
  const now = driver.now();
  const lag = driver.core.executionLag();
  const prunedPast = new Set(driver.core.prunedPastPeers());
  const contact = new Map(driver.peers().map((peer) => [peer.peer, peer.lastContactMs]));
  const members = new Map<number, MemberStatus>();
  for (const { id } of driver.configuration.members) {
    if (id === driver.id) {
      members.set(id, { alive: true, caughtUp: !driver.catchingUpBySnapshot });
      continue;
    }
    const last = contact.get(id);
    members.set(id, {
      alive: last !== undefined && now - last <= options.aliveWithinMs &&
        driver.heardAsCurrent(id),
      caughtUp: !prunedPast.has(id) && (lag[id] ?? 0) <= options.caughtUpInstances,
    });
  }
  return { inFlight: inFlight || driver.core.fenced, members };
}

/** The size of `config` in one word: voters, and learners if any (`3`, `3+1l`). */
export function describeSize(config: Configuration): string {
  const voters = voterIds(config).length;
  const learners = config.members.length - voters;
  return learners === 0 ? `${voters}` : `${voters}+${learners}l`;
}
