/**
 * Chaos scenarios for quorum leases (issue 16; `src/core/lease.ts`): the
 * cluster runs with leases on every key to every replica (`leases: "all"`),
 * the workload mixes reads (served locally under a lease) with writes, and
 * read-only clients keep asking every replica, so that a holder that is cut
 * off is asked for reads all the while. Every run's history is checked for
 * linearizability by the runner; these scenarios add their own findings:
 *
 * - faults on one holder (partition both ways, pause, and each one-way
 *   partition): acknowledged writes at the other replicas stall no longer
 *   than a lease stretched twice by the drift plus 1 s
 *   ({@linkcode writeStallBoundMs}); a holder that can reach nobody says its
 *   lease is invalid (`/status` `leases.valid`) and serves no read locally
 *   once its lease would have ended (its `localReads` count, and the
 *   history: no read of its clients answered after that);
 * - a grantor killed (SIGKILL) and restarted while others hold its grants;
 * - a test-only clock-rate fault (`--unsafe-clock-rate`): rates within the
 *   declared drift must pass; a holder's clock at half speed, cut off, is a
 *   negative check the history checker must catch;
 * - a write acknowledged in one region and read at once in another under
 *   wide-area emulation (`lease_wan_scenario.ts`).
 *
 * @module
 */

import { DEFAULT_DRIFT, DEFAULT_LEASE_MS } from "../core/lease.ts";
import {
  leaseEndFindings,
  type LeaseSample,
  maxWriteGap,
  readsAnsweredBetween,
  timedOperations,
  writeStallBoundMs,
} from "./lease_findings.ts";
import { LEASE_WAN_READ_AFTER_WRITE } from "./lease_wan_scenario.ts";
import { answers, replicaStatus, waitUntil } from "./process_cluster.ts";
import type { FinishedRun, NemesisContext, Scenario, ScenarioFindings } from "./scenarios.ts";

/** The `leases` of every lease scenario's cluster file: every key to every replica, defaults. */
export const LEASES_ALL = "all";
/** Read-only clients per replica in the lease scenarios. */
const READERS_PER_REPLICA = 1;
/**
 * Keys of the lease scenarios' workload. More than the usual 5: under load
 * every one of 5 keys has a write in flight when a holder is cut off, whose
 * notice reached it and whose commit never will, so it holds every read and
 * serves none locally; with more keys, most are quiet, and the holder goes
 * on serving them until its lease ends, which is what is under test.
 */
const LEASE_KEYS = 20;
/** How often a cut-off holder's `/status` is sampled. */
const SAMPLE_EVERY_MS = 100;
/** Samples kept per fault (a 30 s fault takes 300). */
const MAX_SAMPLES = 10_000;

/** The part of `/status` `leases` these scenarios read. */
interface LeaseView {
  readonly valid: boolean;
  readonly grantRemainingMs: Readonly<Record<string, number>>;
  readonly reads: { readonly localReads: number };
  readonly writes: { readonly heldForHolders: number; readonly released: number };
}

async function leaseView(url: string, timeoutMs = 1000): Promise<LeaseView | undefined> {
  return (await replicaStatus<{ leases: LeaseView }>(url, timeoutMs))?.leases;
}

/**
 * Waits until every replica holds a valid lease, so that the fault hits
 * leases in use; throws after 15 s (leases that never work are a failure).
 */
async function leasesInUse(context: NemesisContext): Promise<void> {
  const urls = context.cluster.urls.slice(0, context.replicas);
  await waitUntil(
    async () => (await Promise.all(urls.map((url) => leaseView(url)))).every((v) => v?.valid),
    { deadlineMs: 15_000, what: "every replica to hold a valid lease", intervalMs: 100 },
  );
}

/** Sums a counter of `/status` `leases.writes` over the replicas other than `except`. */
async function writeCounters(
  context: NemesisContext,
  except: number,
): Promise<{ heldForHolders: number; released: number }> {
  const views = await Promise.all(
    context.cluster.urls.slice(0, context.replicas).map((url, id) =>
      id === except ? undefined : leaseView(url, 3000)
    ),
  );
  let heldForHolders = 0;
  let released = 0;
  for (const view of views) {
    heldForHolders += view?.writes.heldForHolders ?? 0;
    released += view?.writes.released ?? 0;
  }
  return { heldForHolders, released };
}

/** How a holder is cut off. */
export type HolderFault =
  /** Both directions of every link between it and the others blocked. */
  | "partition"
  /** SIGSTOP, then SIGCONT. */
  | "pause"
  /** It hears the others, they do not hear it (its outgoing links blocked). */
  | "mute"
  /** They hear it, it does not hear them (their links to it blocked). */
  | "deaf";

/** One holder and how it is cut off. */
interface HolderCut {
  readonly holder: number;
  readonly fault: HolderFault;
}

async function applyHolderFault(context: NemesisContext, cut: HolderCut): Promise<void> {
  const { holder, fault } = cut;
  if (fault === "pause") return await context.cluster.kill(holder, "SIGSTOP");
  const block = { blocked: true };
  for (let id = 0; id < context.replicas; id++) {
    const links: Record<string, { blocked: boolean }> = {};
    if (id === holder && fault !== "deaf") {
      for (let to = 0; to < context.replicas; to++) if (to !== holder) links[String(to)] = block;
    }
    if (id !== holder && fault !== "mute") links[String(holder)] = block;
    await context.setFaults(id, { links });
  }
}

async function clearHolderFault(context: NemesisContext, cut: HolderCut): Promise<void> {
  if (cut.fault === "pause") return await context.cluster.kill(cut.holder, "SIGCONT");
  for (let id = 0; id < context.replicas; id++) await context.setFaults(id, {});
}

/** Samples `url`'s lease every {@linkcode SAMPLE_EVERY_MS} until `until` (elapsed ms). */
async function sampleLease(
  context: NemesisContext,
  target: { readonly url: string; readonly until: number },
): Promise<LeaseSample[]> {
  const { url, until } = target;
  const samples: LeaseSample[] = [];
  while (context.elapsedMs() < until && samples.length < MAX_SAMPLES) {
    const sentAt = context.elapsedMs();
    const view = await leaseView(url, SAMPLE_EVERY_MS * 5);
    if (view !== undefined) {
      samples.push({ sentAt, valid: view.valid, localReads: view.reads.localReads });
    }
    await context.sleep(Math.max(0, Math.min(SAMPLE_EVERY_MS, until - context.elapsedMs())));
  }
  return samples;
}

/** Settings of {@linkcode holderFaultScenario}. */
export interface HolderFaultOptions {
  /** Scenario name. */
  readonly name: string;
  /** What it does. */
  readonly description: string;
  /** How the holder is cut off. */
  readonly fault: HolderFault;
  /** A fixed cluster size. */
  readonly replicas?: number;
  /** How long the fault lasts (default: the fault phase less a recovery second). */
  readonly faultMs?: number;
  /** The holder (default: one chosen by the seed). */
  readonly holder?: number;
  /** Clock rates by replica (`--unsafe-clock-rate`); others run at 1. */
  readonly clockRates?: Readonly<Record<number, number>>;
}

/**
 * A scenario that cuts one lease holder off for the fault phase under load,
 * then measures the longest stall of writes acknowledged at the other
 * replicas and, for a holder that can reach nobody, when it stopped serving
 * reads locally (see the module documentation).
 */
export function holderFaultScenario(options: HolderFaultOptions): Scenario {
  const leaseMs = DEFAULT_LEASE_MS;
  const drift = DEFAULT_DRIFT;
  const rates = options.clockRates ?? {};
  return {
    name: options.name,
    description: options.description,
    ...(options.replicas === undefined ? {} : { replicas: options.replicas }),
    availableDuringFault: true,
    leases: LEASES_ALL,
    readersPerReplica: READERS_PER_REPLICA,
    keys: LEASE_KEYS,
    replicaArgsFor: (id) =>
      rates[id] === undefined ? [] : ["--unsafe-clock-rate", String(rates[id])],
    async inject(context) {
      await leasesInUse(context);
      const holder = options.holder ?? context.random.int(context.replicas);
      const url = context.cluster.urls[holder]!;
      const before = await writeCounters(context, holder);
      const faultMs = options.faultMs ?? Math.max(1000, context.faultMs - 1000);
      context.note(`${options.fault} holder ${holder} for ${(faultMs / 1000).toFixed(1)} s`);
      const cut = { holder, fault: options.fault };
      await applyHolderFault(context, cut);
      // Every block is in place: a grant the holder takes from now on
      // answers a request it sent before this, so its lease ends within a
      // lease length of its own clock.
      const blockedAt = context.elapsedMs();
      const until = blockedAt + faultMs;
      const samples = options.fault === "pause"
        ? (await context.sleep(faultMs), [])
        : await sampleLease(context, { url, until });
      await clearHolderFault(context, cut);
      const healedAt = context.elapsedMs();
      context.note(`healed holder ${holder}`);
      // Let the first writes after healing complete, so a stall that lasted
      // to the end is measured whole.
      await context.sleep(1000);
      const after = await writeCounters(context, holder);
      return (run: FinishedRun): ScenarioFindings => {
        const failures: string[] = [];
        const figures: Record<string, number> = {};
        const operations = timedOperations(run.events);
        const atOthers = (operation: { process: number | string }) => {
          const replica = run.replicaOf(operation.process);
          return replica !== undefined && replica !== holder;
        };
        const atHolder = (operation: { process: number | string }) =>
          run.replicaOf(operation.process) === holder;
        const bound = writeStallBoundMs(leaseMs, drift);
        const gap = maxWriteGap(operations, { from: blockedAt, to: healedAt, counted: atOthers });
        figures.write_stall_bound_ms = Math.round(bound);
        figures.writes_held_for_holders = after.heldForHolders - before.heldForHolders;
        figures.writes_released = after.released - before.released;
        if (gap === undefined) {
          failures.push(`no write was acknowledged at the replicas other than ${holder}`);
        } else {
          figures.max_write_gap_ms = Math.round(gap.gapMs);
          if (gap.gapMs > bound + run.timingSlackMs) {
            failures.push(
              `writes at the replicas other than holder ${holder} stalled ${
                Math.round(gap.gapMs)
              } ms (until ${Math.round(gap.endsAt)} ms), more than ${Math.round(bound)} ms` +
                (run.timingSlackMs > 0 ? ` + ${run.timingSlackMs} ms of slack` : ""),
            );
          }
        }
        if (options.fault === "pause") return { failures, figures };
        // The holder can reach no quorum: whatever it answers, it answers
        // locally, and only while its lease lasts on its own clock.
        const leaseEnd = blockedAt + leaseMs / (rates[holder] ?? 1);
        const found = leaseEndFindings(samples, leaseEnd);
        if (found.invalidAt !== undefined) {
          figures.lease_invalid_after_ms = Math.round(found.invalidAt - blockedAt);
        }
        if (found.localReadsAfterEnd === undefined) {
          failures.push(`holder ${holder} was not sampled after its lease ended`);
        } else {
          figures.local_reads_after_lease_end = found.localReadsAfterEnd;
          if (found.validAfterEnd > 0) {
            failures.push(
              `holder ${holder} said its lease was valid in ${found.validAfterEnd} samples ` +
                "taken after it must have ended",
            );
          }
          if (found.localReadsAfterEnd > 0) {
            failures.push(
              `holder ${holder} served ${found.localReadsAfterEnd} reads locally after its lease ended`,
            );
          }
        }
        const late = readsAnsweredBetween(
          operations,
          { from: leaseEnd, to: healedAt, counted: atHolder },
        );
        figures.holder_reads_answered_after_lease_end = late.length;
        if (late.length > 0) {
          failures.push(
            `clients of holder ${holder} got ${late.length} answers to reads sent after its ` +
              `lease ended, the first at ${Math.round(late[0]!.completedAt!)} ms`,
          );
        }
        const served = readsAnsweredBetween(
          operations,
          { from: blockedAt, to: leaseEnd, counted: atHolder },
        );
        figures.holder_reads_answered_during_lease = served.length;
        return { failures, figures };
      };
    },
  };
}

/**
 * SIGKILL a replica and restart it at once, while the others hold its
 * grants (the restart rule of `lease.ts`: a restarted grantor names every
 * holder for a lease length); three times, a different replica each time
 * when the cluster allows.
 */
export const LEASE_GRANTOR_RESTART: Scenario = {
  name: "lease-grantor-restart",
  description:
    "leases on every key; SIGKILL a replica while the others hold its grants, restart it at once; three times",
  availableDuringFault: true,
  leases: LEASES_ALL,
  readersPerReplica: READERS_PER_REPLICA,
  keys: LEASE_KEYS,
  async inject(context) {
    const restarts: { victim: number; killedAt: number; backAt: number }[] = [];
    let grantsHeld = 0;
    const first = context.random.int(context.replicas);
    for (let round = 0; round < 3; round++) {
      await leasesInUse(context);
      const victim = (first + round) % context.replicas;
      const url = context.cluster.urls[victim]!;
      // The others' grants from the victim, just before it dies.
      const views = await Promise.all(
        context.cluster.urls.slice(0, context.replicas).map((peer, id) =>
          id === victim ? undefined : leaseView(peer)
        ),
      );
      const holding = views.filter((view) => (view?.grantRemainingMs[String(victim)] ?? 0) > 0);
      grantsHeld += holding.length;
      context.note(
        `SIGKILL replica ${victim} (${holding.length} replicas hold its grants) and restart it`,
      );
      await context.cluster.kill(victim, "SIGKILL");
      const killedAt = context.elapsedMs();
      await context.cluster.start(victim);
      await waitUntil(() => answers(`${url}/livez`), {
        deadlineMs: 30_000,
        what: `replica ${victim} to restart`,
        intervalMs: 20,
      });
      const backAt = context.elapsedMs();
      restarts.push({ victim, killedAt, backAt });
      context.note(`replica ${victim} answers again after ${Math.round(backAt - killedAt)} ms`);
      await context.sleep(Math.max(1000, context.faultMs / 3 - (backAt - killedAt)));
    }
    return (run: FinishedRun): ScenarioFindings => {
      const operations = timedOperations(run.events);
      const figures: Record<string, number> = { grants_held_at_kill: grantsHeld };
      let worst = 0;
      for (const { victim, killedAt, backAt } of restarts) {
        // Writes at the others, from the kill to a lease length after the
        // restart (when the restart rule stops naming every holder).
        const gap = maxWriteGap(operations, {
          from: killedAt,
          to: backAt + DEFAULT_LEASE_MS,
          counted: (operation) => {
            const replica = run.replicaOf(operation.process);
            return replica !== undefined && replica !== victim;
          },
        });
        worst = Math.max(worst, gap?.gapMs ?? 0);
      }
      figures.max_write_gap_ms = Math.round(worst);
      figures.max_restart_ms = Math.round(
        Math.max(...restarts.map((restart) => restart.backAt - restart.killedAt)),
      );
      const failures = grantsHeld === 0
        ? ["no replica held a grant of a replica when it was killed: the restart rule went untried"]
        : [];
      return { failures, figures };
    };
  },
};

/**
 * The negative clock check: a holder whose clock runs at half speed believes
 * its lease lasts twice as long as its grantors promised. Cut off, it goes on
 * reading locally after the others have stopped waiting for it and moved on:
 * stale reads the checker must catch. Several short partitions, each long
 * enough for the others to release their writes (a lease and its drift).
 */
export const LEASE_CLOCK_SLOW_HOLDER: Scenario = {
  name: "lease-clock-slow-holder",
  description:
    "negative check: holder 0's clock at half speed (far outside the 1 % drift), cut off again and again: stale reads must be caught",
  negative: true,
  availableDuringFault: true,
  leases: LEASES_ALL,
  // More readers: a read held for a write pending at the cut-off holder
  // keeps its reader away for a while, and the stale window is short.
  readersPerReplica: 3,
  keys: LEASE_KEYS,
  replicaArgsFor: (id) => id === 0 ? ["--unsafe-clock-rate", "0.5"] : [],
  async inject(context) {
    await leasesInUse(context);
    const end = context.elapsedMs() + context.faultMs;
    for (let round = 0; context.elapsedMs() + 4000 <= end; round++) {
      context.note(`round ${round}: partition holder 0 (clock at half speed) for 4 s`);
      await applyHolderFault(context, { holder: 0, fault: "partition" });
      await context.sleep(4000);
      await clearHolderFault(context, { holder: 0, fault: "partition" });
      await context.sleep(Math.min(2000, Math.max(0, end - context.elapsedMs())));
    }
  },
};

/** Every lease scenario, by name (`deno task chaos --scenario NAME`). */
export const LEASE_SCENARIOS: readonly Scenario[] = [
  holderFaultScenario({
    name: "lease-partition-holder",
    description:
      "leases on every key; one holder partitioned both ways; writes stall at most a lease, its local reads stop",
    fault: "partition",
  }),
  holderFaultScenario({
    name: "lease-partition-holder-30s",
    description:
      "the measured run: 5 replicas, leases on every key, one holder partitioned both ways for 30 s under load",
    fault: "partition",
    replicas: 5,
    faultMs: 30_000,
  }),
  holderFaultScenario({
    name: "lease-pause-holder",
    description: "leases on every key; SIGSTOP one holder for the fault phase, then SIGCONT",
    fault: "pause",
  }),
  holderFaultScenario({
    name: "lease-mute-holder",
    description:
      "leases on every key; one holder hears the others but they do not hear it (one-way partition)",
    fault: "mute",
  }),
  holderFaultScenario({
    name: "lease-deaf-holder",
    description:
      "leases on every key; the others hear one holder but it does not hear them (one-way partition)",
    fault: "deaf",
  }),
  LEASE_GRANTOR_RESTART,
  holderFaultScenario({
    name: "lease-clock-within-drift",
    description:
      "leases on every key; holder 0's clock at 0.996 and replica 1's at 1.004 (within the 1 % drift); holder 0 partitioned",
    fault: "partition",
    holder: 0,
    clockRates: { 0: 0.996, 1: 1.004 },
  }),
  LEASE_CLOCK_SLOW_HOLDER,
  LEASE_WAN_READ_AFTER_WRITE,
];
