/**
 * The deciders of configuration changes, as pure functions in the manner of
 * etcd raft's `confchange/` and `quorum/` packages: each takes the current
 * configuration, the change asked for and what the deciding replica observes,
 * as plain data, and returns the next configuration or a one-line refusal that
 * says what to do instead. A refusal changes nothing.
 * `tests/core/configuration_test.ts` checks each rule row by row.
 *
 * The rules come from etcd's `--strict-reconfig-check` (`mayAddMember`,
 * `mayPromoteMember`, `mayRemoveMember`), Consul autopilot (`min_quorum`,
 * servers join as non-voters) and the membership design card's cases
 * (replace in place with a new incarnation; voters move in pairs; one change
 * in flight; replace or remove a dead member before adding). The protocol
 * that commits a change (the RECONF barrier command) is not here.
 *
 * @module
 */

import {
  type Configuration,
  isMemberId,
  majority,
  MAX_MEMBER_ID,
  type Member,
  memberUrlProblem,
  normalizedUrl,
  voterIds,
} from "./configuration.ts";
import { leasesFromSetting } from "./lease.ts";

/** The fewest voters a change may leave (Consul autopilot's `min_quorum`). */
export const DEFAULT_MINIMUM_VOTERS = 3;

/**
 * A change an operator asks for: add a learner at `url`; promote learners to
 * voters; remove members; give member `id`, whose data is lost, a new
 * incarnation (at `url`, or its old one); set the quorum leases (every
 * replica must run the same rules, so they change only with the epoch).
 */
export type ConfigurationChange =
  | { readonly kind: "add"; readonly url: string }
  | { readonly kind: "promote"; readonly ids: readonly number[] }
  | { readonly kind: "remove"; readonly ids: readonly number[] }
  | { readonly kind: "replace"; readonly id: number; readonly url?: string }
  | {
    /** Sets the quorum leases (`leasesFromSetting`: "all", "none" or rules). */
    readonly kind: "leases";
    readonly leases: unknown;
  };

/** What the deciding replica observes of one member. */
export interface MemberStatus {
  /** It was started and answers (within the health interval). */
  readonly alive: boolean;
  /** Its executed frontier is within the bound of the voters'. */
  readonly caughtUp: boolean;
}

/** What the deciding replica observes of the cluster. */
export interface ClusterView {
  /** Whether a configuration change is proposed and not yet committed. */
  readonly inFlight: boolean;
  /** Each member's status by id; a member missing here is neither alive nor caught up. */
  readonly members: ReadonlyMap<number, MemberStatus>;
}

/** Settings of {@linkcode decideChange}. */
export interface DecideChangeOptions {
  /** The fewest voters a change may leave (default {@linkcode DEFAULT_MINIMUM_VOTERS}). */
  readonly minimumVoters?: number;
}

/** The outcome of {@linkcode decideChange}. */
export type ChangeDecision =
  | {
    /** The change is accepted. */
    readonly ok: true;
    /** The configuration of the next epoch. */
    readonly next: Configuration;
    /** The member an `add` created. */
    readonly added?: Member;
  }
  | {
    /** The change is refused; nothing changes. */
    readonly ok: false;
    /** One line: why, and what to do instead. */
    readonly reason: string;
  };

/** A change applied to the members, before the guards look at it. */
interface Plan {
  readonly next: Configuration;
  readonly added?: Member;
  /** The member replaced: its new incarnation has empty storage. */
  readonly replaced?: number;
  /** The learners promoted. */
  readonly promoted?: readonly number[];
}

/**
 * Decides whether `change` may be proposed from `config`, given what this
 * replica observes (`view`). Refuses, in this order:
 *
 * 1. a second change while one is in flight (etcd raft's pending conf change;
 *    the card's case 2);
 * 2. a malformed change: unknown ids (etcd `ErrIDNotFound`), an add whose URL a
 *    member already has (etcd `ErrPeerURLexists`), a promote of a non-learner
 *    (etcd `ErrMemberNotLearner`), a replace of a non-member;
 * 3. a change that lowers the voters below `minimumVoters` (Consul autopilot's
 *    `min_quorum`); a change that keeps or raises the count is allowed, so a
 *    smaller cluster can grow;
 * 4. an even number of voters (the card: voters move in pairs or in place);
 * 5. a change that cannot commit in the old epoch: fewer than a majority of its
 *    voters alive, the replaced member not counted (the card's case 1; etcd
 *    `mayRemoveMember` "protect quorum if some members are down");
 * 6. promoting a learner that does not answer or is not caught up (etcd
 *    `isLearnerReady`);
 * 7. adding while a voter does not answer (etcd `mayAddMember` requires every
 *    voter connected; the card: replace or remove a dead member before adding);
 * 8. a new configuration whose quorums are not reachable: fewer than a majority
 *    of its voters alive and caught up, a replacement counted as neither (etcd
 *    `IsReadyToAddVotingMember` / `IsReadyToRemoveVotingMember`).
 *
 * Only majorities are required: the fast quorum of EPaxos* is an optimization,
 * and a configuration whose slow quorum is reachable stays live (commands take
 * the slow path), so a change never waits for a fast quorum.
 *
 * An accepted change raises the epoch by one. An add creates a learner with id
 * `nextId` and incarnation 1, and raises `nextId`; a replace keeps the id and
 * role and raises the incarnation.
 *
 * @throws {RangeError} if `options.minimumVoters` is not a positive integer.
 */
export function decideChange(
  config: Configuration,
  change: ConfigurationChange,
  view: ClusterView,
  options: DecideChangeOptions = {},
): ChangeDecision {
  const minimumVoters = options.minimumVoters ?? DEFAULT_MINIMUM_VOTERS;
  if (!Number.isSafeInteger(minimumVoters) || minimumVoters < 1) {
    throw new RangeError(`minimumVoters must be a positive integer, got ${minimumVoters}`);
  }
  if (view.inFlight) {
    return refuse(
      `a configuration change from epoch ${config.epoch} is in flight; wait until it commits, then retry`,
    );
  }
  const plan = planChange(config, change);
  if (typeof plan === "string") return refuse(plan);
  const problem = guardProblem(config, plan, view, minimumVoters);
  if (problem !== undefined) return refuse(problem);
  return plan.added === undefined
    ? { ok: true, next: plan.next }
    : { ok: true, next: plan.next, added: plan.added };
}

function refuse(reason: string): ChangeDecision {
  return { ok: false, reason };
}

/** The change applied to the members, or why it names the wrong members. */
function planChange(config: Configuration, change: ConfigurationChange): Plan | string {
  const epoch = config.epoch + 1;
  const byId = new Map(config.members.map((member) => [member.id, member]));
  switch (change?.kind) {
    case "add": {
      const url = typeof change.url === "string" ? normalizedUrl(change.url) : change.url;
      const urlProblem = memberUrlProblem(url);
      if (urlProblem !== undefined) return `cannot add: ${urlProblem}`;
      const holder = config.members.find((member) => member.url === url);
      if (holder !== undefined) {
        return `cannot add ${url}: member ${holder.id} has that url; replace ${holder.id} to give it a new incarnation, or use another url`;
      }
      if (config.nextId > MAX_MEMBER_ID) {
        return `cannot add: member ids are exhausted (at most ${MAX_MEMBER_ID}; ` +
          "seed a new cluster from a backup)";
      }
      const added: Member = { id: config.nextId, incarnation: 1, url, role: "learner" };
      return {
        next: { ...config, epoch, members: [...config.members, added], nextId: config.nextId + 1 },
        added,
      };
    }
    case "promote":
    case "remove": {
      const problem = idsProblem(change.kind, change.ids, byId, config.epoch);
      if (problem !== undefined) return problem;
      const ids = new Set(change.ids);
      if (change.kind === "remove") {
        const members = config.members.filter((member) => !ids.has(member.id));
        return { next: { ...config, epoch, members } };
      }
      const voter = change.ids.find((id) => byId.get(id)!.role !== "learner");
      if (voter !== undefined) {
        return `cannot promote member ${voter}: it is already a voter; promote only learners`;
      }
      const members = config.members.map((member) =>
        ids.has(member.id) ? { ...member, role: "voter" as const } : member
      );
      return { next: { ...config, epoch, members }, promoted: [...change.ids] };
    }
    case "replace": {
      const old = byId.get(change.id);
      if (old === undefined) {
        return `cannot replace ${
          JSON.stringify(change.id)
        }: no such member in epoch ${config.epoch}; add a new member instead`;
      }
      let url = old.url;
      if (change.url !== undefined) {
        url = typeof change.url === "string" ? normalizedUrl(change.url) : change.url;
        const urlProblem = memberUrlProblem(url);
        if (urlProblem !== undefined) return `cannot replace ${old.id}: ${urlProblem}`;
        const holder = config.members.find((member) => member.url === url && member !== old);
        if (holder !== undefined) {
          return `cannot replace ${old.id} at ${url}: member ${holder.id} has that url; use another url`;
        }
      }
      const members = config.members.map((member) =>
        member === old ? { ...old, incarnation: old.incarnation + 1, url } : member
      );
      return { next: { ...config, epoch, members }, replaced: old.id };
    }
    case "leases": {
      const parsed = leasesFromSetting(change.leases, config.nextId);
      if ("problem" in parsed) return `cannot set leases: ${parsed.problem}`;
      const { leases: _old, ...rest } = config;
      return {
        next: parsed.leases === undefined
          ? { ...rest, epoch }
          : { ...rest, epoch, leases: parsed.leases },
      };
    }
    default:
      return `unknown change ${
        JSON.stringify((change as { kind?: unknown })?.kind)
      }; use add, promote, remove, replace or leases`;
  }
}

/** Why `ids` cannot be promoted or removed: empty, malformed, repeated or unknown. */
function idsProblem(
  verb: string,
  ids: unknown,
  byId: ReadonlyMap<number, Member>,
  epoch: number,
): string | undefined {
  if (!Array.isArray(ids) || ids.length === 0) return `${verb} needs at least one member id`;
  const seen = new Set<number>();
  for (const id of ids) {
    if (!isMemberId(id)) {
      return `cannot ${verb} ${JSON.stringify(id)}: ids are non-negative integers`;
    }
    if (seen.has(id)) return `cannot ${verb} member ${id} twice; name each member once`;
    seen.add(id);
    if (!byId.has(id)) {
      return `cannot ${verb} member ${id}: no such member in epoch ${epoch}; see the member list`;
    }
  }
  return undefined;
}

/** The first guard `plan` fails, as a refusal, or `undefined` if it passes them all. */
function guardProblem(
  config: Configuration,
  plan: Plan,
  view: ClusterView,
  minimumVoters: number,
): string | undefined {
  const status = (id: number): MemberStatus =>
    view.members.get(id) ?? { alive: false, caughtUp: false };
  const oldVoters = voterIds(config);
  const newVoters = voterIds(plan.next);
  if (newVoters.length < minimumVoters && newVoters.length < oldVoters.length) {
    return `would leave ${newVoters.length} voters, below the minimum of ${minimumVoters}; replace a lost member instead of removing it, or add and promote learners first`;
  }
  if (newVoters.length % 2 === 0) {
    return `would leave ${newVoters.length} voters, an even number; promote or remove voters two at a time, or replace one in place`;
  }
  // The change commits in the old epoch, so a majority of its voters must
  // answer; a replaced member's process is lost, so it cannot count.
  const oldAlive = oldVoters.filter((id) => id !== plan.replaced && status(id).alive).length;
  if (oldAlive < majority(oldVoters.length)) {
    const without = plan.replaced === undefined ? "" : ` besides member ${plan.replaced}`;
    return `only ${oldAlive} of ${oldVoters.length} voters of epoch ${config.epoch} answer${without}, fewer than a majority (${
      majority(oldVoters.length)
    }); bring voters back before changing the configuration`;
  }
  for (const id of plan.promoted ?? []) {
    const learner = status(id);
    if (!learner.alive || !learner.caughtUp) {
      return `cannot promote learner ${id}: it ${
        learner.alive ? "is not caught up" : "does not answer"
      }; wait until it is caught up`;
    }
  }
  if (plan.added !== undefined) {
    const dead = oldVoters.find((id) => !status(id).alive);
    if (dead !== undefined) {
      return `voter ${dead} does not answer; remove or replace member ${dead} first, then add`;
    }
  }
  // A replacement starts with empty storage: it is neither started nor caught up yet.
  const ready =
    newVoters.filter((id) => id !== plan.replaced && status(id).alive && status(id).caughtUp)
      .length;
  if (ready < majority(newVoters.length)) {
    return `the quorums of epoch ${plan.next.epoch} would not be reachable: only ${ready} of its ${newVoters.length} voters answer and are caught up (a majority is ${
      majority(newVoters.length)
    }); bring members back or let them catch up first`;
  }
  return undefined;
}
