/**
 * The dashboard's recent configuration changes: each epoch this replica
 * entered while it ran, with what changed from the epoch before
 * ({@linkcode describeChange}), in a log of bounded length. Nothing of it is
 * stored: a replica that restarts starts a new log at the epoch it is in.
 *
 * @module
 */

import { type Configuration, describeConfiguration } from "../core/configuration.ts";

/** Most changes the log keeps: older ones are dropped. */
export const MAX_LOGGED_CHANGES = 20;

/** One configuration this replica entered, as the dashboard lists it. */
export interface ConfigurationChangeRecord {
  /** The epoch entered. */
  readonly epoch: number;
  /** When this replica saw it, ms since the Unix epoch (by its wall clock). */
  readonly atMs: number;
  /** The configuration, as `describeConfiguration` renders it (`e2 [0v1 1v1 2l1]`). */
  readonly configuration: string;
  /** What changed from the epoch before, in words. */
  readonly change: string;
}

function leasesText(config: Configuration): string {
  const leases = config.leases;
  if (leases === undefined || leases.rules.length === 0) return "none";
  return `${leases.rules.length} rule${leases.rules.length === 1 ? "" : "s"}, ${leases.leaseMs} ms`;
}

/**
 * What changed from `before` to `after`, in words: members added (with their
 * role), removed, promoted, demoted or replaced (a new incarnation), URLs
 * moved, and the lease rules. `before` undefined: the configuration this
 * replica was in when it started.
 */
export function describeChange(before: Configuration | undefined, after: Configuration): string {
  if (before === undefined) return `in force when this replica started (epoch ${after.epoch})`;
  const parts: string[] = [];
  const old = new Map(before.members.map((member) => [member.id, member]));
  const now = new Map(after.members.map((member) => [member.id, member]));
  for (const member of after.members) {
    const was = old.get(member.id);
    if (was === undefined) {
      parts.push(`added ${member.id} as ${member.role} (${member.url})`);
      continue;
    }
    if (was.incarnation !== member.incarnation) {
      parts.push(`replaced ${member.id} (incarnation ${member.incarnation})`);
    }
    if (was.role !== member.role) {
      parts.push(`${member.role === "voter" ? "promoted" : "demoted"} ${member.id}`);
    }
    if (was.url !== member.url) parts.push(`moved ${member.id} to ${member.url}`);
  }
  for (const member of before.members) {
    if (!now.has(member.id)) parts.push(`removed ${member.id}`);
  }
  const leasesBefore = JSON.stringify(before.leases ?? null);
  const leasesAfter = JSON.stringify(after.leases ?? null);
  if (leasesBefore !== leasesAfter) parts.push(`leases: ${leasesText(after)}`);
  return parts.length === 0 ? "no member changed" : parts.join("; ");
}

/**
 * The last {@linkcode MAX_LOGGED_CHANGES} (or `max`) configurations this
 * replica entered, newest first. `observe` is cheap when the epoch did not
 * change, so it may run after every applied instance.
 */
export class ConfigurationLog {
  readonly #max: number;
  readonly #records: ConfigurationChangeRecord[] = [];
  #last: Configuration | undefined;

  /** An empty log keeping at most `max` changes. */
  constructor(max: number = MAX_LOGGED_CHANGES) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError("max must be a positive integer");
    this.#max = max;
  }

  /** Notes `config` (seen at `atMs`) if its epoch is not the last one noted. */
  observe(config: Configuration, atMs: number): void {
    if (this.#last !== undefined && this.#last.epoch === config.epoch) return;
    this.#records.unshift({
      epoch: config.epoch,
      atMs,
      configuration: describeConfiguration(config),
      change: describeChange(this.#last, config),
    });
    if (this.#records.length > this.#max) this.#records.length = this.#max;
    this.#last = config;
  }

  /** The changes noted, newest first. */
  entries(): readonly ConfigurationChangeRecord[] {
    return this.#records;
  }
}
