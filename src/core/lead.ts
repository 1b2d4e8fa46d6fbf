/**
 * Leads: what a replica knows while it coordinates an instance, as its
 * original coordinator (Figure 3) or as a recovery (Figure 5), and the
 * deadline of each. Volatile: a restarted replica rebuilds the leads of its
 * own unfinished proposals from their records and recovers the rest.
 *
 * @module
 */

import type { Deps } from "./deps.ts";
import type { Instance } from "./instance.ts";
import type { Payload, Phase } from "./types.ts";

/** Which message a lead is waiting on answers to. */
export type LeadStage = "preaccept" | "accept" | "recover" | "validate" | "waiting";

/** What this replica knows while it coordinates an instance (original or recovery). */
export interface Lead<C> {
  /** The instance led. */
  readonly instance: Instance<C>;
  /** The ballot of this lead: 0 for the original coordinator. */
  readonly ballot: number;
  /** The current stage. */
  stage: LeadStage;
  /** Bitmask of peers sent the current stage's message. */
  contacted: number;
  /** Whether the current stage already went to every peer. */
  widened: boolean;
  /** Retransmissions in the current stage. */
  attempts: number;
  /** Tick at which the lead times out. */
  deadline: number;
  /**
   * PreAcceptOK deps by replica. The coordinator's own entry is set only once
   * its PreAccepted record is durable (see `Replica.advance`).
   */
  preAcceptReplies: (Deps | undefined)[];
  /** Whether the coordinator's own PreAccepted record is not durable yet (its PreAccepts left early). */
  ownVotePending: boolean;
  /** Bitmask of AcceptOK senders at `ballot`. */
  acks: number;
  /** RecoverOK by replica (including late ones); empty unless recovering. */
  recoverReplies: (RecoverReply<C> | undefined)[];
  /** Recovery: the quorum `Q` of the decision, as a bitmask. */
  quorum: number;
  /** Recovery: `c` under validation. */
  validatedCommand: Payload<C> | undefined;
  /** Recovery: `D` under validation. */
  validatedDeps: Deps | undefined;
  /** Recovery: `|Rmax|`. */
  rmaxSize: number;
  /** Recovery: ValidateOK invalidator triples by replica. */
  validateReplies: (readonly number[] | undefined)[];
  /** Recovery: the set `I`, instance key to the highest phase reported. */
  invalidators: ReadonlyMap<number, Phase>;
  /** Leases: holders named by the replies (bitmask). */
  leaseNamed: number;
  /** Leases: holders known to hold the write (a reply or an acknowledged notice; bitmask). */
  leaseKnown: number;
  /** Leases: holders sent a notice (bitmask). */
  leaseNoticed: number;
  /** Leases: when notices last went out (driver clock, ms). */
  leaseNoticedAt: number;
  /** Leases: until when (own clock) a promise that named a silent holder may last. */
  leaseReleaseAt: number;
  /** Leases: whether the decision ever waited on holders (counted once). */
  leaseHeld: boolean;
  /** Leases: when the gate first held the decision (driver clock, ms); -1 once counted. */
  leaseHeldSince: number;
  /** Leases: whether the decision waiting on holders was taken on a timeout. */
  leaseTimedOut: boolean;
}

/** One replica's answer to `Recover` (the spec's `RecoverOK` fields). */
export interface RecoverReply<C> {
  /** `abal`. */
  readonly acceptedBallot: number;
  /** `phase`. */
  readonly phase: Phase;
  /** `cmd`. */
  readonly command: Payload<C> | undefined;
  /** `dep`. */
  readonly deps: Deps | undefined;
  /** `initDep`. */
  readonly initialDeps: Deps | undefined;
}

/** The leads of one replica by instance key, with their deadlines. */
export class Leads<C> {
  readonly #replicas: number;
  readonly #leads = new Map<number, Lead<C>>();
  /** Recoveries in the post-waiting stage (few): re-evaluated when what they wait on moves. */
  readonly #waiting = new Set<Lead<C>>();
  /** No deadline falls before this tick. */
  #nextDeadline = 0;

  /** Leads for a cluster of `replicas`. */
  constructor(replicas: number) {
    this.#replicas = replicas;
  }

  /** How many instances this replica leads. */
  get size(): number {
    return this.#leads.size;
  }

  /** The lead of instance `key`, if any. */
  get(key: number): Lead<C> | undefined {
    return this.#leads.get(key);
  }

  /** Whether this replica leads instance `key`. */
  has(key: number): boolean {
    return this.#leads.has(key);
  }

  /** A copy of the leads in the waiting stage. */
  waiting(): Lead<C>[] {
    return this.#waiting.size === 0 ? [] : [...this.#waiting];
  }

  /** Starts leading `instance` at `ballot` in `stage`, replacing any lead of it. */
  start(instance: Instance<C>, ballot: number, stage: LeadStage): Lead<C> {
    this.drop(instance.key);
    const lead: Lead<C> = {
      instance,
      ballot,
      stage,
      contacted: 0,
      widened: false,
      attempts: 0,
      deadline: Number.POSITIVE_INFINITY,
      preAcceptReplies: stage === "preaccept" ? new Array(this.#replicas) : NO_REPLIES,
      ownVotePending: false,
      acks: 0,
      recoverReplies: stage === "recover" ? new Array(this.#replicas) : NO_REPLIES,
      quorum: 0,
      validatedCommand: undefined,
      validatedDeps: undefined,
      rmaxSize: 0,
      validateReplies: NO_REPLIES,
      invalidators: NO_INVALIDATORS,
      leaseNamed: 0,
      leaseKnown: 0,
      leaseNoticed: 0,
      leaseNoticedAt: Number.NEGATIVE_INFINITY,
      leaseReleaseAt: Number.NEGATIVE_INFINITY,
      leaseHeld: false,
      leaseHeldSince: -1,
      leaseTimedOut: false,
    };
    this.#leads.set(instance.key, lead);
    return lead;
  }

  /** Stops leading instance `key`. */
  drop(key: number): void {
    const lead = this.#leads.get(key);
    if (lead === undefined) return;
    this.#leads.delete(key);
    this.#waiting.delete(lead);
  }

  /** Whether `lead` is still the lead of its instance. */
  isCurrent(lead: Lead<C>): boolean {
    return this.#leads.get(lead.instance.key) === lead;
  }

  /** Moves `lead` to `stage`. */
  setStage(lead: Lead<C>, stage: LeadStage): void {
    lead.stage = stage;
    if (stage === "waiting") {
      this.#waiting.add(lead);
    } else {
      this.#waiting.delete(lead);
    }
  }

  /** Sets `lead`'s deadline `ticks` (at least one) after `now`. */
  setDeadline(lead: Lead<C>, now: number, ticks: number): void {
    lead.deadline = now + Math.max(1, ticks);
    if (lead.deadline < this.#nextDeadline) this.#nextDeadline = lead.deadline;
  }

  /**
   * The leads whose deadline is `now` or earlier. Cheap on most ticks: it
   * scans only when the earliest deadline has come.
   */
  due(now: number): readonly Lead<C>[] {
    if (now < this.#nextDeadline) return NO_LEADS;
    const due: Lead<C>[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const lead of this.#leads.values()) {
      if (lead.deadline <= now) {
        due.push(lead);
      } else if (lead.deadline < next) {
        next = lead.deadline;
      }
    }
    // Handlers of the due leads only lower this through setDeadline.
    this.#nextDeadline = next;
    return due;
  }
}

/** The bitmask of replicas with an entry in `replies`. */
export function repliedMask(replies: readonly unknown[], replicas: number): number {
  let mask = 0;
  for (let replica = 0; replica < replicas; replica++) {
    if (replies[replica] !== undefined) mask |= 1 << replica;
  }
  return mask;
}

/** The number of set bits in `mask`. */
export function popCount(mask: number): number {
  let count = 0;
  for (let bits = mask; bits !== 0; bits &= bits - 1) count++;
  return count;
}

/** Shared empty values for the fields a lead's current stage does not use; never mutated. */
const NO_INVALIDATORS: ReadonlyMap<number, Phase> = new Map();
const NO_REPLIES = Object.freeze([]) as unknown as never[];
const NO_LEADS: readonly Lead<never>[] = Object.freeze([]);
