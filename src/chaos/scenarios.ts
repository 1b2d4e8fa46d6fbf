/**
 * The nemeses of the chaos harness: one fault pattern per scenario, applied to
 * real replica processes (signals) and to their peer links (the fault layer).
 * The list covers every fault the seeds tried, including seed 004's packet
 * loss, delay, random kill and duplication, and seed 002's two replicas down.
 *
 * @module
 */

import type { HistoryRecorder, KvEvent } from "../check/mod.ts";
import { BACKUP_RESTORE } from "./backup_scenario.ts";
import { AWAY_PAST_RETENTION } from "./retention_scenario.ts";
import {
  GROW_SHRINK,
  OLD_INCARNATION,
  REMOVE_WHILE_DOWN,
  REPLACE_WIPED,
  SHRINK_GROW,
} from "./membership_scenario.ts";
import { SNAPSHOT_INTERRUPTED } from "./snapshot_interrupt_scenario.ts";
import { LEASE_SCENARIOS } from "./lease_scenarios.ts";
import { KV_SCENARIOS } from "./kv_scenarios.ts";
import type { SeededRandom } from "../runtime/random.ts";
import type { FaultConfig } from "../transport/faults.ts";
import type { ProcessCluster } from "./process_cluster.ts";
import { blockLinks, killRandomReplicas } from "./nemeses.ts";
import type { ChaosWorkload, WorkloadOptions } from "./workload.ts";

/** What a nemesis can act on. */
export interface NemesisContext {
  /** The replica processes. */
  readonly cluster: ProcessCluster;
  /** Number of replicas. */
  readonly replicas: number;
  /** Seeded choices. */
  readonly random: SeededRandom;
  /** How long the fault phase lasts, in milliseconds. */
  readonly faultMs: number;
  /** Sets replica `id`'s outgoing-link faults. */
  setFaults(id: number, config: FaultConfig): Promise<void>;
  /** Waits `ms` milliseconds (or less if the run is being stopped). */
  sleep(ms: number): Promise<void>;
  /** Notes an event in the run's log. */
  note(line: string): void;
  /** The workload's history, for a nemesis that also reads (a backup). */
  readonly history: HistoryRecorder;
  /** The workload's keys are `chaos-0` to `chaos-{keys - 1}`. */
  readonly keys: number;
  /** Milliseconds since the workload started: the history's `time` stamps. */
  elapsedMs(): number;
}

/** What a scenario's own verdict sees once the run is over (see {@linkcode Scenario.inject}). */
export interface FinishedRun {
  /** The workload's history (final reads included), stamped with `elapsedMs` times. */
  readonly events: readonly KvEvent[];
  /** The replica a workload client talked to (undefined for other processes). */
  replicaOf(process: number | string): number | undefined;
  /** The fault phase, in milliseconds of `elapsedMs`. */
  readonly faultWindowMs: readonly [number, number];
  /** Slack on the scenario's timing bounds (`ChaosOptions.timingSlackMs`). */
  readonly timingSlackMs: number;
}

/** A scenario's verdict: what failed, and what it measured. */
export interface ScenarioFindings {
  /** Failed checks (the run fails if any). */
  readonly failures: readonly string[];
  /** Measured figures, by name (reported, e.g. `max_write_gap_ms`). */
  readonly figures: Readonly<Record<string, number>>;
}

/** What a scenario's own workload is built from: the runner's settings and the cluster. */
export interface ScenarioWorkloadOptions extends WorkloadOptions {
  /** The replica processes (to tell how often a client's replica was restarted). */
  readonly cluster: ProcessCluster;
}

/** One chaos scenario. */
export interface Scenario {
  /** Name used on the command line. */
  readonly name: string;
  /** What it does, for reports. */
  readonly description: string;
  /** A cluster size this scenario needs, if fixed. */
  readonly replicas?: number;
  /** Whether the cluster is expected to keep committing during the fault phase. */
  readonly availableDuringFault: boolean;
  /**
   * Slots beyond `replicas` with a URL but no process, for members the
   * scenario adds (`ProcessCluster.join`); it must leave only the first
   * `replicas` as members, which the runner then checks.
   */
  readonly spareSlots?: number;
  /** Flags every replica of this scenario is started with (after the usual ones). */
  readonly replicaArgs?: readonly string[];
  /** Flags replica `id` alone is started with (after `replicaArgs`), e.g. a clock fault. */
  replicaArgsFor?(id: number, replicas: number): readonly string[];
  /** Keys the workload shares, unless the run says (default 5). */
  readonly keys?: number;
  /** The cluster file's `leases` (`src/server/config.ts`); absent: none. */
  readonly leases?: unknown;
  /** Read-only workload clients per replica (see `WorkloadOptions.readersPerReplica`). */
  readonly readersPerReplica?: number;
  /**
   * A round-trip matrix to emulate (`--emulate-wan`, one region per replica)
   * instead of the fault layer: such a scenario cannot set faults, only kill
   * and pause.
   */
  readonly wanMatrix?: string;
  /**
   * A negative check: the scenario breaks an assumption the system states
   * (say, clock drift beyond the declared bound), and the run passes only if
   * the history checker catches it (the history is not linearizable).
   */
  readonly negative?: boolean;
  /**
   * The scenario's own workload (Deno KV clients, `kv_workload.ts`); absent:
   * the curl clients of `workload.ts`.
   */
  workload?(options: ScenarioWorkloadOptions): ChaosWorkload;
  /**
   * Applies the faults for the fault phase; healing is done by the runner
   * afterwards. It may return its own verdict, called once the history is
   * complete, with what it measured during the fault phase in its closure.
   */
  inject(
    context: NemesisContext,
  ): Promise<void | ((run: FinishedRun) => ScenarioFindings)>;
}

function shuffled(random: SeededRandom, count: number): number[] {
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = random.int(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

async function everyLink(context: NemesisContext, faults: FaultConfig["default"]): Promise<void> {
  for (let id = 0; id < context.replicas; id++) await context.setFaults(id, { default: faults! });
  await context.sleep(context.faultMs);
}

/** Blocks the directed links for which `blocked(from, to)` holds for the fault phase. */
async function partition(
  context: NemesisContext,
  blocked: (from: number, to: number) => boolean,
): Promise<void> {
  await blockLinks(context, blocked);
  await context.sleep(context.faultMs);
}

const maxFailures = (replicas: number) => (replicas - 1) / 2;

/** Every scenario without leases, by name (tests/chaos/chaos_test.ts runs each). */
export const SCENARIOS: readonly Scenario[] = [
  {
    name: "kill-random",
    description: "SIGKILL a random replica, restart it; twice",
    availableDuringFault: true,
    inject: (context) => killRandomReplicas(context, 2),
  },
  {
    name: "kill-f",
    description: "SIGKILL f replicas at once, restart them",
    availableDuringFault: true,
    async inject(context) {
      const victims = shuffled(context.random, context.replicas).slice(
        0,
        maxFailures(context.replicas),
      );
      context.note(`SIGKILL replicas ${victims.join(", ")}`);
      await Promise.all(victims.map((victim) => context.cluster.kill(victim, "SIGKILL")));
      await context.sleep(context.faultMs * 0.7);
      context.note(`restart replicas ${victims.join(", ")}`);
      for (const victim of victims) await context.cluster.start(victim);
      await context.sleep(context.faultMs * 0.3);
    },
  },
  {
    name: "pause",
    description: "SIGSTOP a random replica, SIGCONT it; twice",
    availableDuringFault: true,
    async inject(context) {
      for (let round = 0; round < 2; round++) {
        const victim = context.random.int(context.replicas);
        context.note(`SIGSTOP replica ${victim}`);
        await context.cluster.kill(victim, "SIGSTOP");
        await context.sleep(context.faultMs / 4);
        context.note(`SIGCONT replica ${victim}`);
        await context.cluster.kill(victim, "SIGCONT");
        await context.sleep(context.faultMs / 4);
      }
    },
  },
  {
    name: "partition-one",
    description: "isolate one replica from all others",
    availableDuringFault: true,
    inject(context) {
      const isolated = context.random.int(context.replicas);
      context.note(`isolate replica ${isolated}`);
      return partition(context, (from, to) => from === isolated || to === isolated);
    },
  },
  {
    name: "partition-split",
    description: "split into a minority and a majority",
    availableDuringFault: true,
    inject(context) {
      const minority = new Set(
        shuffled(context.random, context.replicas).slice(0, maxFailures(context.replicas)),
      );
      context.note(`minority ${[...minority].join(", ")} | majority`);
      return partition(context, (from, to) => minority.has(from) !== minority.has(to));
    },
  },
  {
    name: "partition-ring",
    description: "each replica reaches only its two neighbours in a ring",
    availableDuringFault: true,
    inject(context) {
      const order = shuffled(context.random, context.replicas);
      const position = new Map(order.map((replica, index) => [replica, index]));
      context.note(`ring ${order.join(" - ")}`);
      return partition(context, (from, to) => {
        const distance = Math.abs(position.get(from)! - position.get(to)!);
        return distance > 1 && distance < context.replicas - 1;
      });
    },
  },
  {
    name: "partition-asymmetric",
    description: "one replica can send to the others but hears nothing back",
    availableDuringFault: true,
    inject(context) {
      const deaf = context.random.int(context.replicas);
      context.note(`links into replica ${deaf} blocked (one way)`);
      return partition(context, (_from, to) => to === deaf);
    },
  },
  {
    name: "loss-10",
    description: "10 % of peer batches lost (seed 004)",
    availableDuringFault: true,
    inject: (context) => everyLink(context, { drop: 0.1 }),
  },
  {
    name: "delay-1000",
    description: "1000 ms one-way delay on every link (seed 004)",
    availableDuringFault: true,
    inject: (context) => everyLink(context, { delayMs: 1000, jitterMs: 50 }),
  },
  {
    name: "dup-0.1",
    description: "0.1 % of peer batches duplicated (seed 004)",
    availableDuringFault: true,
    inject: (context) => everyLink(context, { duplicate: 0.001 }),
  },
  {
    name: "dup-5",
    description: "5 % of peer batches duplicated",
    availableDuringFault: true,
    inject: (context) => everyLink(context, { duplicate: 0.05 }),
  },
  {
    name: "reorder",
    description: "30 % of peer batches held back up to 100 ms, so later ones overtake them",
    availableDuringFault: true,
    inject: (context) => everyLink(context, { reorder: 0.3, reorderMs: 100, jitterMs: 5 }),
  },
  {
    name: "kill-coordinator",
    description: "SIGKILL the coordinator of in-flight commands (forces recovery); three times",
    availableDuringFault: true,
    async inject(context) {
      for (let round = 0; round < 3; round++) {
        const victim = context.random.int(context.replicas);
        const url = context.cluster.urls[victim]!;
        // A burst of writes to the victim, then kill it while they are in flight.
        const burst = Array.from(
          { length: 20 },
          (_, i) =>
            fetch(`${url}/kv/chaos-burst-${round}-${i}`, {
              method: "PUT",
              body: `burst-${round}-${i}`,
              signal: AbortSignal.timeout(2000),
            }).then((response) => response.body?.cancel()).catch(() => {}),
        );
        await context.sleep(3);
        context.note(`SIGKILL replica ${victim} with a burst in flight`);
        await context.cluster.kill(victim, "SIGKILL");
        await Promise.all(burst);
        await context.sleep(context.faultMs / 6);
        context.note(`restart replica ${victim}`);
        await context.cluster.start(victim);
        await context.sleep(context.faultMs / 6);
      }
    },
  },
  {
    name: "seed-002",
    description:
      "5 replicas; 2 down for most of the fault phase, then restarted, under steady load (seed 002)",
    replicas: 5,
    availableDuringFault: true,
    async inject(context) {
      const victims = shuffled(context.random, context.replicas).slice(0, 2);
      context.note(`SIGKILL replicas ${victims.join(", ")}`);
      await Promise.all(victims.map((victim) => context.cluster.kill(victim, "SIGKILL")));
      await context.sleep(context.faultMs * 0.8);
      context.note(`restart replicas ${victims.join(", ")}`);
      for (const victim of victims) await context.cluster.start(victim);
      await context.sleep(context.faultMs * 0.2);
    },
  },
  {
    name: "durability",
    description:
      "SIGKILL every replica mid-load, restart all; every acknowledged write must survive",
    availableDuringFault: false,
    async inject(context) {
      context.note("SIGKILL every replica");
      await Promise.all(
        Array.from({ length: context.replicas }, (_, id) => context.cluster.kill(id, "SIGKILL")),
      );
      await context.sleep(Math.min(2000, context.faultMs / 4));
      context.note("restart every replica");
      for (let id = 0; id < context.replicas; id++) await context.cluster.start(id);
      await context.sleep(context.faultMs / 2);
    },
  },
  BACKUP_RESTORE,
  AWAY_PAST_RETENTION,
  SNAPSHOT_INTERRUPTED,
  REPLACE_WIPED,
  SHRINK_GROW,
  REMOVE_WHILE_DOWN,
  OLD_INCARNATION,
  GROW_SHRINK,
];

/**
 * Every scenario: those above, then those with quorum leases
 * (`lease_scenarios.ts`; tests/chaos/lease_chaos_test.ts runs them at CI
 * size), then those with Deno KV clients (`kv_scenarios.ts`;
 * tests/chaos/kv_chaos_test.ts).
 */
export const EVERY_SCENARIO: readonly Scenario[] = [
  ...SCENARIOS,
  ...LEASE_SCENARIOS,
  ...KV_SCENARIOS,
];

/** The scenario called `name`. */
export function scenarioNamed(name: string): Scenario | undefined {
  return EVERY_SCENARIO.find((scenario) => scenario.name === name);
}
