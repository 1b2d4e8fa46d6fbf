/**
 * Quorum leases fitted to EPaxos* (Moraru, Andersen, Kaminsky, "Paxos Quorum
 * Leases", SoCC'14; the design card `leases.md`): the pure deciders and the
 * lease configuration. {@linkcode LeaseState} holds one replica's side of it.
 *
 * Every voter is a grantor; a lease rule maps key prefixes to holders. A
 * holder may read a key locally while it holds unexpired grants from a
 * majority of voters (itself included), each caught up, and no write to the
 * key is pending here. A write is decided only after every holder that a
 * grantor of its deciding quorum named has acknowledged it, or after the
 * promises that named it have run out.
 *
 * Departures from the card, each for a reason the card's own argument gives:
 *
 * - **No guard round.** A holder times its lease from when it *sent* the
 *   request the grant answers (a grant is always an answer), and the grantor
 *   from when it *received* that request, which came later: message delay
 *   only shortens the holder's lease (YugabyteDB #16 timed it from the wrong
 *   end). The grantor's promise is `leaseMs · (1 + drift)` on its own clock.
 * - **Every grant carries the grantor's frontier** (per row, the highest
 *   instance it holds), and a grant counts only once this replica has
 *   executed that far. The card catches up on a fresh grant only; but a
 *   renewal after a write was released without the holder's acknowledgement
 *   (its promise ran out at the coordinator's reckoning while the grantor
 *   kept renewing) would let the holder read past that write. With a
 *   frontier on every grant no renewal is ever "continuous" in a way that
 *   matters, and the holder still reads all the time: the previous caught-up
 *   grant covers it while the next one catches up (a round trip or two,
 *   against a 2 s lease).
 * - **A restarted grantor is not quiet; it names every holder** of a write
 *   for `leaseMs · (1 + drift)` after it starts, as if it had promised them
 *   all (its promises were in memory). Writes then wait for the holders'
 *   acknowledgements, which come in a round trip, instead of stalling for
 *   guard + lease.
 *
 * @module
 */

import type { Access } from "./conflict.ts";
import type { Deps } from "./deps.ts";

/** One rule of a lease configuration: the keys starting with `prefix` are leased to `holders`. */
export interface LeaseRule {
  /** Key prefix ("" for every key). */
  readonly prefix: string;
  /** Member positions holding leases on those keys, or every member. */
  readonly holders: readonly number[] | "all";
}

/** How leases run in a cluster: durations, the declared clock drift, and the rules. */
export interface LeaseConfiguration {
  /** Length of a lease on the holder's clock, from when it sent its request (ms). */
  readonly leaseMs: number;
  /** How often a holder asks each grantor again (ms); well under `leaseMs`. */
  readonly renewMs: number;
  /**
   * The declared bound on clock rates: over any interval, one replica's clock
   * advances at most `1 + drift` times as fast as another's. Grantors and
   * coordinators stretch their waits by it.
   */
  readonly drift: number;
  /** Which keys are leased to whom; the longest matching prefix wins. Empty: no leases. */
  readonly rules: readonly LeaseRule[];
}

/** The card's (and efficient/qlease's) lease length. */
export const DEFAULT_LEASE_MS = 2000;
/** Renewal interval: four renewals per lease, so one lost grant costs nothing. */
export const DEFAULT_RENEW_MS = 500;
/** Declared drift: 1 %, two orders of magnitude above what NTP-disciplined clocks do. */
export const DEFAULT_DRIFT = 0.01;

/** Leases on every key to every member (what `deno task start` runs). */
export function leaseEveryKey(options: Partial<LeaseConfiguration> = {}): LeaseConfiguration {
  return {
    leaseMs: options.leaseMs ?? DEFAULT_LEASE_MS,
    renewMs: options.renewMs ?? DEFAULT_RENEW_MS,
    drift: options.drift ?? DEFAULT_DRIFT,
    rules: options.rules ?? [{ prefix: "", holders: "all" }],
  };
}

/** Checks a lease configuration; returns why it is wrong, or undefined. */
export function leaseConfigurationProblem(
  configuration: LeaseConfiguration,
  positions: number,
): string | undefined {
  const { leaseMs, renewMs, drift, rules } = configuration;
  if (!Number.isFinite(leaseMs) || leaseMs < 10 || leaseMs > 60_000) {
    return "leaseMs must be from 10 to 60000";
  }
  if (!Number.isFinite(renewMs) || renewMs < 1 || renewMs * 2 > leaseMs) {
    return "renewMs must be at least 1 and at most half of leaseMs";
  }
  if (!Number.isFinite(drift) || drift < 0 || drift > 0.5) return "drift must be from 0 to 0.5";
  if (rules.length > 256) return "at most 256 lease rules";
  for (const rule of rules) {
    if (typeof rule.prefix !== "string" || rule.prefix.length > 1024) {
      return "a lease rule's prefix must be a string of at most 1024 characters";
    }
    if (rule.holders === "all") continue;
    for (const holder of rule.holders) {
      if (!Number.isInteger(holder) || holder < 0 || holder >= positions) {
        return `lease holder ${holder} is not a member position`;
      }
    }
  }
  return undefined;
}

// Keys never contain U+FFFF (the key-value layer refuses them), so it ends every prefix span.
const SPAN_END = "\uffff";

function holdersMask(rule: LeaseRule, memberMask: number): number {
  if (rule.holders === "all") return memberMask;
  let mask = 0;
  for (const holder of rule.holders) mask |= 1 << holder;
  return mask & memberMask;
}

/** The rule that governs `key`: the longest prefix of it. */
function ruleForKey(key: string, rules: readonly LeaseRule[]): LeaseRule | undefined {
  let best: LeaseRule | undefined;
  for (const rule of rules) {
    if (
      key.startsWith(rule.prefix) && (best === undefined || rule.prefix.length > best.prefix.length)
    ) {
      best = rule;
    }
  }
  return best;
}

/**
 * The holders whose acknowledgement a write with these accesses needs, as a
 * bitmask of member positions: for a single key, those of its rule; for a
 * span, those of every rule whose keys the span may touch (the rule that
 * governs the span's first key included). Read accesses need nobody.
 */
export function leaseHolderMask(
  accesses: readonly Access[],
  rules: readonly LeaseRule[],
  memberMask: number,
): number {
  let mask = 0;
  for (const access of accesses) {
    if (!access.write) continue;
    if (access.end === undefined) {
      const rule = ruleForKey(access.key, rules);
      if (rule !== undefined) mask |= holdersMask(rule, memberMask);
      continue;
    }
    const first = ruleForKey(access.key, rules);
    if (first !== undefined) mask |= holdersMask(first, memberMask);
    for (const rule of rules) {
      // The keys of `rule` are [prefix, prefix + U+FFFF): do they meet [key, end)?
      if (rule.prefix < access.end && access.key < rule.prefix + SPAN_END) {
        mask |= holdersMask(rule, memberMask);
      }
    }
  }
  return mask;
}

/**
 * Whether every key these accesses read is leased to `holder`: single keys
 * by their rule, spans only when one rule's prefix contains the whole span
 * and no longer prefix inside the span says otherwise.
 */
export function leasedTo(
  accesses: readonly Access[],
  rules: readonly LeaseRule[],
  holder: number,
  memberMask: number,
): boolean {
  const bit = 1 << holder;
  for (const access of accesses) {
    const rule = ruleForKey(access.key, rules);
    if (rule === undefined || (holdersMask(rule, memberMask) & bit) === 0) return false;
    if (access.end === undefined) continue;
    if (access.end > rule.prefix + SPAN_END) return false;
    for (const other of rules) {
      if (other === rule || other.prefix.length <= rule.prefix.length) continue;
      const inside = other.prefix < access.end && access.key < other.prefix + SPAN_END;
      if (inside && (holdersMask(other, memberMask) & bit) === 0) return false;
    }
  }
  return true;
}

/** Grants needed to read locally: a majority of the voters (every EPaxos* quorum is at least one). */
export function leaseQuorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** Until when (grantor clock) a grantor promises a holder whose request it handles `now`. */
export function grantorPromiseUntil(now: number, configuration: LeaseConfiguration): number {
  return now + configuration.leaseMs * (1 + configuration.drift);
}

/** Until when (holder clock) a grant answering a request sent at `sentAt` lasts. */
export function holderLeaseUntil(sentAt: number, configuration: LeaseConfiguration): number {
  return sentAt + configuration.leaseMs;
}

/**
 * Until when (coordinator clock) a coordinator must wait for a named holder
 * that stays silent: the grantor's promise had `remainingMs` left on its
 * clock when it replied, and the coordinator's clock may run slower by the
 * declared drift. The reply's travel time only adds margin.
 */
export function releaseAt(
  now: number,
  remainingMs: number,
  configuration: LeaseConfiguration,
): number {
  return now + remainingMs * (1 + configuration.drift);
}

/** Whether a grant whose frontier is `frontier` is caught up with the executed prefix `executed`. */
export function caughtUp(frontier: Deps, executed: Deps): boolean {
  for (let row = 0; row < frontier.length; row++) {
    if ((executed[row] ?? 0) < frontier[row]!) return false;
  }
  return true;
}

/**
 * A lease setting as operators write it (the cluster file's `leases`, the
 * admin `leases` change): `"all"` (every key to every member), `"none"`, or
 * `{ "rules": [{ "prefix", "holders": "all" | [ids] }], "leaseMs"?,
 * "renewMs"?, "drift"? }`. Returns the configuration (absent for none), or
 * what is wrong with it.
 */
export function leasesFromSetting(
  value: unknown,
  positions: number,
): { readonly leases?: LeaseConfiguration } | { readonly problem: string } {
  if (value === undefined || value === null || value === "none") return {};
  if (value === "all") return { leases: leaseEveryKey() };
  if (typeof value !== "object" || Array.isArray(value)) {
    return { problem: 'leases must be "all", "none" or an object with rules' };
  }
  const record = value as Record<string, unknown>;
  const numbers: Partial<Record<"leaseMs" | "renewMs" | "drift", number>> = {};
  for (const name of ["leaseMs", "renewMs", "drift"] as const) {
    const item = record[name];
    if (item === undefined) continue;
    if (typeof item !== "number") return { problem: `${name} must be a number` };
    numbers[name] = item;
  }
  if (!Array.isArray(record.rules)) return { problem: "rules must be a list" };
  const rules: LeaseRule[] = [];
  for (const [index, rule] of record.rules.entries()) {
    const entry = rule as Record<string, unknown> | null;
    if (typeof entry !== "object" || entry === null || typeof entry.prefix !== "string") {
      return { problem: `rules[${index}] must have a string prefix` };
    }
    if (entry.holders !== "all" && !Array.isArray(entry.holders)) {
      return { problem: `rules[${index}].holders must be "all" or a list of member ids` };
    }
    rules.push({
      prefix: entry.prefix,
      holders: entry.holders === "all" ? "all" : [...(entry.holders as number[])],
    });
  }
  const leases = leaseEveryKey({ ...numbers, rules });
  const problem = leaseConfigurationProblem(leases, positions);
  return problem === undefined ? { leases } : { problem };
}
