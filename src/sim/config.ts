/**
 * Simulation settings, derived from a seed so that one printed line
 * reproduces any run.
 *
 * @module
 */

import { SeededRandom } from "../runtime/random.ts";
import { deriveLeases, type SimLeases } from "./lease_config.ts";

/** Fault rates of one run. Rates are probabilities; durations are simulated milliseconds. */
export interface FaultRates {
  /** Probability that a message is dropped. */
  readonly dropRate: number;
  /** Probability that a message is delivered twice. */
  readonly duplicateRate: number;
  /** Probability that a message is held back long enough to be reordered. */
  readonly reorderRate: number;
  /** Per second, the probability that a partition starts. */
  readonly partitionRate: number;
  /** How long a partition lasts. */
  readonly partitionMs: number;
  /** Per second, the probability that a replica crashes. */
  readonly crashRate: number;
  /** How long a crashed replica stays down. */
  readonly downMs: number;
  /** Fraction of crashes that happen after a Ready is persisted but before it is sent. */
  readonly crashAfterPersistRate: number;
  /** Per second, the probability that a replica is paused. */
  readonly pauseRate: number;
  /** How long a pause lasts. */
  readonly pauseMs: number;
}

/** Everything that defines one simulation run. */
export interface SimConfig {
  /** The seed everything derives from. */
  readonly seed: number;
  /** Number of replicas. */
  readonly replicas: number;
  /** Client operations to issue. */
  readonly commands: number;
  /** Concurrent clients per replica (each with one operation outstanding). */
  readonly clientsPerReplica: number;
  /** Keys shared by all clients; 0 gives every client its own keys (no conflicts). */
  readonly sharedKeys: number;
  /** Smallest one-way message delay. */
  readonly minDelayMs: number;
  /** Largest one-way message delay (before reordering). */
  readonly maxDelayMs: number;
  /** Faults of the safety phase, or `undefined` for none. */
  readonly faults: FaultRates | undefined;
  /** Most simulated time the safety phase lasts. */
  readonly safetyMs: number;
  /** After healing, every operation and every replica must finish within this. */
  readonly livenessMs: number;
  /** A client gives up on an operation (recording it as indeterminate) after this. */
  readonly clientTimeoutMs: number;
  /** How many commands a replica batches into one instance at most. */
  readonly batchSize: number;
  /** Longest virtual fsync of a replica's disk (0: commits complete at once). */
  readonly diskMaxMs: number;
  /**
   * The retention bound (`ReplicaDriverOptions.maxHeldCommands`): small in
   * some runs, so that peers prune past a replica that is down or cut off
   * and it installs a snapshot when it returns.
   */
  readonly retentionCommands: number;
  /**
   * Configuration changes proposed during the safety phase, each from a
   * random live replica: epoch bumps with the same members (the epoch
   * transition of `src/driver/epoch.ts`, under every fault the run draws).
   */
  readonly epochChanges: number;
  /**
   * A replica crashes with amnesia (its disk wiped) in the safety phase, is
   * replaced by a new incarnation (a configuration change proposed at a live
   * replica), and joins again on its empty disk, as an operator replaces a
   * lost replica.
   */
  readonly amnesia: boolean;
  /**
   * Membership changes proposed during the safety phase, each at a random
   * live voter and each drawn from what its configuration allows then: add
   * a learner (a new member id, which joins by snapshot), promote two
   * learners, remove a learner or two voters (the removed stop), or an
   * epoch bump. Each goes through the operator's decider
   * (`decideChange`), against what the proposing replica observes, so
   * cluster sizes change over a run (3 -> 3 + 1 learner -> 5 -> ...), as
   * `deno task admin` changes them.
   */
  readonly memberChanges: number;
  /**
   * Quorum leases, with a clock rate per replica within their declared
   * drift (`lease_config.ts`), or `undefined` for none.
   */
  readonly leases: SimLeases | undefined;
}

/** What a run is asked for on the command line. */
export interface SimRequest {
  /** Seed. */
  readonly seed: number;
  /** Replicas; derived from the seed (3, 5 or 7) when absent. */
  readonly replicas?: number;
  /** Client operations; default 300. */
  readonly commands?: number;
  /** `none` or `all` (rates chosen from the seed, as in a swarm). */
  readonly faults?: "none" | "all";
  /** `some` (shared keys), `none` (disjoint keys) or absent (chosen from the seed). */
  readonly conflicts?: "some" | "none";
  /** `some` (membership changes), `none`, or absent (chosen from the seed). */
  readonly members?: "some" | "none";
  /** `on`, `off`, or absent (on for a share of seeds, `lease_config.ts`). */
  readonly leases?: "on" | "off";
}

/** Derives a run's settings from its request; the same request always gives the same run. */
export function deriveConfig(request: SimRequest): SimConfig {
  // Every draw happens whatever the request says, so that a request naming a
  // value explicitly (the printed reproduction line) derives the same run.
  const random = new SeededRandom(request.seed ^ 0x5eed);
  const replicaDraw = [3, 5, 7][random.int(3)]!;
  const replicas = request.replicas ?? replicaDraw;
  const conflictDraw = random.next() < 0.8 ? "some" : "none";
  const conflicts = request.conflicts ?? conflictDraw;
  const pick = (low: number, high: number) => low + random.next() * (high - low);
  const maybe = (probability: number, value: () => number) => {
    const draw = random.next();
    const chosen = value();
    return draw < probability ? chosen : 0;
  };
  const rates: FaultRates = {
    dropRate: maybe(0.7, () => pick(0, 0.15)),
    duplicateRate: maybe(0.5, () => pick(0, 0.1)),
    reorderRate: maybe(0.6, () => pick(0, 0.3)),
    partitionRate: maybe(0.6, () => pick(0.05, 0.6)),
    partitionMs: pick(100, 2000),
    crashRate: maybe(0.6, () => pick(0.05, 0.5)),
    downMs: pick(50, 2000),
    crashAfterPersistRate: pick(0, 1),
    pauseRate: maybe(0.4, () => pick(0.05, 0.5)),
    pauseMs: pick(50, 1500),
  };
  const faults = (request.faults ?? "all") === "none" ? undefined : rates;
  return {
    seed: request.seed,
    replicas,
    commands: request.commands ?? 300,
    // At most 15 clients in all: more only slows the linearizability search.
    clientsPerReplica: Math.min(1 + random.int(3), Math.floor(15 / replicas)),
    sharedKeys: conflicts === "none" ? 0 : 1 + random.int(6),
    minDelayMs: 1 + random.int(3),
    maxDelayMs: 4 + random.int(20),
    faults,
    safetyMs: 6000,
    livenessMs: 30000,
    clientTimeoutMs: 1500,
    batchSize: random.next() < 0.5 ? 1 : 1 + random.int(8),
    diskMaxMs: random.int(4),
    // Drawn last, so that every earlier draw (and every seed's run before
    // retention existed) is unchanged.
    retentionCommands: random.next() < 0.4 ? 10 + random.int(60) : 1_000_000,
    // Drawn after retention, for the same reason.
    epochChanges: random.next() < 0.4 ? 1 + random.int(3) : 0,
    amnesia: faults !== undefined && random.next() < 0.3,
    memberChanges: memberChanges(request, random),
    // From a stream of their own: every draw above is as it was without leases.
    leases: faultFreeLeases(deriveLeases(request.seed, replicas, request.leases), faults),
  };
}

/**
 * The lease settings of a run without faults: no process stalls in local
 * reads. A stall (up to 2.5 lease lengths, the replica answering nothing) is
 * a fault like a pause; drawn anyway, it broke the fault-free runs' promise
 * of fast commits only and no timeouts (seed 792194872, n = 3: a 4,070 ms
 * stall of replica 0 left 9 operations indeterminate; 23 of 300 fault-free
 * runs with leases failed so). The draw stays, so that no other is moved.
 */
function faultFreeLeases(
  leases: SimLeases | undefined,
  faults: SimConfig["faults"],
): SimLeases | undefined {
  if (leases === undefined || faults !== undefined) return leases;
  return { ...leases, readStallShare: 0 };
}

/**
 * The membership changes of a run: half the seeds have 3 to 8 (enough to
 * grow by two voters and shrink again), unless the request says. Drawn
 * after everything else, so that every earlier draw is unchanged and runs
 * without membership changes go as before.
 */
function memberChanges(request: SimRequest, random: SeededRandom): number {
  const some = random.next() < 0.5;
  const count = 3 + random.int(6);
  return (request.members ?? (some ? "some" : "none")) === "some" ? count : 0;
}

/** The command line that reproduces a run. */
export function reproduceCommand(request: SimRequest, config: SimConfig): string {
  const conflicts = config.sharedKeys === 0 ? "none" : "some";
  return `deno task sim --seed ${request.seed} --replicas ${config.replicas} --commands ${config.commands} --faults ${
    config.faults === undefined ? "none" : "all"
  } --conflicts ${conflicts} --members ${config.memberChanges > 0 ? "some" : "none"} --leases ${
    config.leases === undefined ? "off" : "on"
  }`;
}
