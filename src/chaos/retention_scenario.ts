/**
 * The `away-past-retention` chaos scenario: a replica is killed and stays down
 * while the others write far past the retention bound (the replicas run with
 * a small `--max-held-commands`). The others must prune past it instead of
 * refusing writes (their held commands stay bounded, and the workload keeps
 * committing), and when it returns it must install a snapshot from a peer and
 * converge (src/core/retention.ts).
 *
 * @module
 */

import { hardHeldLimit } from "../driver/driver.ts";
import { replicaStatus } from "./process_cluster.ts";
import type { NemesisContext, Scenario } from "./scenarios.ts";

/** The retention bound the replicas of this scenario run with. */
export const SCENARIO_RETENTION_COMMANDS = 1000;

interface RetentionStatus {
  readonly heldCommands: number;
  readonly limit: number;
  readonly prunedPast: readonly number[];
  readonly snapshotsInstalled: number;
}

async function retentionOf(url: string): Promise<RetentionStatus | undefined> {
  return (await replicaStatus<{ retention: RetentionStatus }>(url, 2000))?.retention;
}

/** Polls `what` every 250 ms until it holds or `deadlineMs` passes; returns whether it held. */
async function within(
  context: NemesisContext,
  deadlineMs: number,
  what: () => Promise<boolean>,
): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (await what()) return true;
    await context.sleep(250);
  }
  return false;
}

async function inject(context: NemesisContext): Promise<void> {
  const victim = context.random.int(context.replicas);
  const others = context.cluster.urls.filter((_, id) => id !== victim);
  context.note(`SIGKILL replica ${victim}; it stays down past the retention bound`);
  await context.cluster.kill(victim, "SIGKILL");
  const downUntil = Date.now() + context.faultMs * 0.7;
  let prunedPast = false;
  let mostHeld = 0;
  while (Date.now() < downUntil) {
    for (const url of others) {
      const retention = await retentionOf(url);
      if (retention === undefined) continue;
      mostHeld = Math.max(mostHeld, retention.heldCommands);
      if (retention.prunedPast.includes(victim)) prunedPast = true;
      if (retention.heldCommands >= hardHeldLimit(retention.limit)) {
        throw new Error(
          `${url} holds ${retention.heldCommands} commands, its hard limit: it refuses writes`,
        );
      }
    }
    await context.sleep(250);
  }
  context.note(`peers pruned past replica ${victim}: ${prunedPast}; most held ${mostHeld}`);
  if (!prunedPast) throw new Error(`no peer pruned past replica ${victim} while it was down`);
  context.note(`restart replica ${victim}`);
  await context.cluster.start(victim);
  const url = context.cluster.urls[victim]!;
  const installed = await within(
    context,
    Math.max(15_000, context.faultMs * 0.3),
    async () => ((await retentionOf(url))?.snapshotsInstalled ?? 0) > 0,
  );
  if (!installed) throw new Error(`replica ${victim} did not install a snapshot after it returned`);
  context.note(`replica ${victim} installed a snapshot`);
}

/** See the module documentation. */
export const AWAY_PAST_RETENTION: Scenario = {
  name: "away-past-retention",
  description:
    "SIGKILL a replica and keep it down while the others write past the retention bound; it returns by snapshot",
  availableDuringFault: true,
  replicaArgs: ["--max-held-commands", String(SCENARIO_RETENTION_COMMANDS)],
  inject,
};
