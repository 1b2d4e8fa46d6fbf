/**
 * Cluster configurations with epochs: members with id, incarnation, URL and
 * role, a validator for configurations read from disk or a peer, and the first
 * configuration of a new cluster. The changes between configurations are
 * decided in `configuration_change.ts`; the protocol that commits them (the
 * RECONF barrier command) is not here.
 *
 * @module
 */

import { type LeaseConfiguration, leaseConfigurationProblem } from "./lease.ts";
import { MAX_REPLICAS } from "./quorum.ts";

/** A voter counts in every quorum; a learner receives everything and counts in none. */
export type MemberRole = "voter" | "learner";

/** One member of a configuration. */
export interface Member {
  /** Its id; never reused for another member, even after it is removed. */
  readonly id: number;
  /** Starts at 1; raised by each replace, so an old process of this id is told apart. */
  readonly incarnation: number;
  /** Where peers reach it: an origin such as `http://host:port`. */
  readonly url: string;
  /** Whether it counts in quorums. */
  readonly role: MemberRole;
}

/** The members of one epoch. */
export interface Configuration {
  /** Starts at 1; every change raises it by one. */
  readonly epoch: number;
  /** The members, by ascending id. */
  readonly members: readonly Member[];
  /** The id the next added member gets: above every id ever used. */
  readonly nextId: number;
  /**
   * Quorum leases (`lease.ts`): every replica must run the same rules, so
   * they are part of the configuration and change only through it. Leases
   * end with an epoch and are granted again in the next. Absent: none.
   */
  readonly leases?: LeaseConfiguration;
}

/** The size of a majority of `voters` voters: `floor(voters / 2) + 1`. */
export function majority(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** The ids of the voters of `config`, in its order. */
export function voterIds(config: Configuration): number[] {
  return config.members.filter((member) => member.role === "voter").map((member) => member.id);
}

/**
 * Highest member id a configuration may hold: a member's position in the
 * core is its id, and the core holds at most `MAX_REPLICAS` (9) positions.
 * Ids are never reused (a replace keeps the id), so a cluster can add
 * members up to this id over its life before it must be seeded anew from a
 * backup.
 */
export const MAX_MEMBER_ID = MAX_REPLICAS - 1;

/**
 * Rows of an epoch's instance space: the highest member id plus one. A
 * member's position in the core is its id (ids are never reused), so removed
 * members leave rows that stay empty, and an id means the same member in
 * every epoch.
 */
export function positionCount(config: Configuration): number {
  let highest = -1;
  for (const member of config.members) highest = Math.max(highest, member.id);
  return highest + 1;
}

/** The ids of every member of `config` (voters and learners), in its order. */
export function memberIds(config: Configuration): number[] {
  return config.members.map((member) => member.id);
}

/** Whether `a` and `b` are the same configuration, field by field. */
export function sameConfiguration(a: Configuration, b: Configuration): boolean {
  if (a.epoch !== b.epoch || a.nextId !== b.nextId || a.members.length !== b.members.length) {
    return false;
  }
  return a.members.every((member, index) => {
    const other = b.members[index]!;
    return member.id === other.id && member.incarnation === other.incarnation &&
      member.url === other.url && member.role === other.role;
  }) && JSON.stringify(a.leases ?? null) === JSON.stringify(b.leases ?? null);
}

/**
 * One short line for logs and failure reports: the epoch, then each member as
 * id, `v` (voter) or `l` (learner), and incarnation, e.g. `e3 [0v1 1v1 2v2 3l1]`.
 */
export function describeConfiguration(config: Configuration): string {
  const members = config.members.map((member) =>
    `${member.id}${member.role === "voter" ? "v" : "l"}${member.incarnation}`
  );
  return `e${config.epoch} [${members.join(" ")}]`;
}

/**
 * Why `url` cannot be a member's URL, or `undefined` if it can: it must be an
 * http or https origin (no path, query or credentials), as peers address
 * their routes from the origin alone.
 */
export function memberUrlProblem(url: unknown): string | undefined {
  if (typeof url !== "string") return "url must be a string";
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `url is not a URL: ${JSON.stringify(url)}`;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return `url must be http or https: ${url}`;
  }
  if (parsed.origin !== url) return `url must be an origin such as ${parsed.origin}: ${url}`;
  return undefined;
}

/**
 * `url` reduced to its origin when it is an http(s) URL with nothing past the
 * path `/` (so `http://a:1/` is `http://a:1`); otherwise unchanged, for
 * {@linkcode memberUrlProblem} to explain.
 */
export function normalizedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    const bare = parsed.pathname === "/" && parsed.search === "" && parsed.hash === "" &&
      parsed.username === "" && parsed.password === "";
    return bare ? parsed.origin : url;
  } catch {
    return url;
  }
}

/** Whether `value` can be a member id: a non-negative safe integer. */
export function isMemberId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/**
 * Why `value`, read from disk or a peer, is not a valid {@linkcode Configuration},
 * or `undefined` if it is: epoch a safe integer ≥ 1; ids unique non-negative
 * safe integers below `nextId`; incarnations safe integers ≥ 1; urls http(s)
 * origins, unique; roles `voter` or `learner`; an odd number of voters, at
 * least one (a quorum needs a majority; an even count only costs availability).
 */
export function configurationProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "configuration must be an object";
  }
  const record = value as Record<string, unknown>;
  if (!Number.isSafeInteger(record.epoch) || (record.epoch as number) < 1) {
    return "configuration epoch must be an integer ≥ 1";
  }
  if (!isMemberId(record.nextId)) return "configuration nextId must be a non-negative integer";
  if (!Array.isArray(record.members)) return "configuration members must be a list";
  const ids = new Set<number>();
  const urls = new Set<string>();
  let voters = 0;
  for (const [index, entry] of record.members.entries()) {
    const field = `configuration members[${index}]`;
    if (typeof entry !== "object" || entry === null) return `${field} must be an object`;
    const member = entry as Record<string, unknown>;
    if (!isMemberId(member.id)) return `${field}.id must be a non-negative integer`;
    if (member.id > MAX_MEMBER_ID) return `${field}.id must be at most ${MAX_MEMBER_ID}`;
    if (member.id >= (record.nextId as number)) {
      return `${field}.id ${member.id} must be below nextId ${record.nextId}`;
    }
    if (ids.has(member.id)) return `${field}.id ${member.id} repeats`;
    ids.add(member.id);
    if (!Number.isSafeInteger(member.incarnation) || (member.incarnation as number) < 1) {
      return `${field}.incarnation must be an integer ≥ 1`;
    }
    const urlProblem = memberUrlProblem(member.url);
    if (urlProblem !== undefined) return `${field}.${urlProblem}`;
    if (urls.has(member.url as string)) return `${field}.url repeats ${member.url}`;
    urls.add(member.url as string);
    if (member.role === "voter") voters++;
    else if (member.role !== "learner") return `${field}.role must be "voter" or "learner"`;
  }
  if (voters % 2 === 0) return `configuration must have an odd number of voters, has ${voters}`;
  if (record.leases !== undefined) {
    const leases = record.leases as Record<string, unknown>;
    if (
      typeof leases !== "object" || leases === null || !Array.isArray(leases.rules) ||
      !leases.rules.every((rule: unknown) =>
        typeof rule === "object" && rule !== null &&
        ((rule as Record<string, unknown>).holders === "all" ||
          Array.isArray((rule as Record<string, unknown>).holders))
      )
    ) {
      return "configuration leases must be an object with rules of a prefix and holders";
    }
    const problem = leaseConfigurationProblem(
      leases as unknown as LeaseConfiguration,
      record.nextId as number,
    );
    if (problem !== undefined) return `configuration leases: ${problem}`;
  }
  return undefined;
}

/**
 * The first configuration of a new cluster: epoch 1, ids `0..n-1` in the
 * order of `urls`, incarnation 1, every member a voter, with `leases` if
 * given. URLs are reduced to their origin, as the cluster file does.
 *
 * @throws {RangeError} if the result is not a valid configuration (a bad or
 * repeated URL, an even number of URLs).
 */
export function bootstrapConfiguration(
  urls: readonly string[],
  leases?: LeaseConfiguration,
): Configuration {
  const config: Configuration = {
    ...(leases === undefined ? {} : { leases }),
    epoch: 1,
    members: urls.map((url, id) => ({
      id,
      incarnation: 1,
      url: normalizedUrl(url),
      role: "voter" as const,
    })),
    nextId: urls.length,
  };
  const problem = configurationProblem(config);
  if (problem !== undefined) throw new RangeError(`Cannot bootstrap: ${problem}`);
  return config;
}
