/**
 * The `replace-wiped` chaos scenario: a replica is killed and its disk lost
 * (its data directory deleted) while the workload runs; an operator replaces
 * it (`deno task admin replace ID`: a configuration change giving it a new
 * incarnation) and starts it again with `--join` on the empty directory. The
 * others keep committing throughout (the change needs a majority of the old
 * voters); the replacement installs a snapshot and serves; the history stays
 * linearizable, across two epochs.
 *
 * @module
 */

import { answers, waitUntil } from "./process_cluster.ts";
import type { NemesisContext, Scenario } from "./scenarios.ts";

/** Longest the replacement may take to serve after it starts. */
const READY_DEADLINE_MS = 30_000;

/** Asks `url`'s admin route for a configuration change; returns the answer's status and body. */
async function proposeChange(
  context: NemesisContext,
  url: string,
  change: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/admin/members/change`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${context.cluster.secret}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(change),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: response.status, body: await response.json() };
}

async function inject(context: NemesisContext): Promise<void> {
  const victim = context.random.int(context.replicas);
  const via = context.cluster.urls[(victim + 1) % context.replicas]!;
  context.note(`SIGKILL replica ${victim} and delete its data directory`);
  await context.cluster.kill(victim, "SIGKILL");
  await context.cluster.wipe(victim);
  await context.sleep(context.faultMs * 0.2);
  const asked = Date.now();
  const { status, body } = await proposeChange(context, via, { kind: "replace", id: victim });
  if (status !== 200) throw new Error(`replace ${victim} refused (${status}): ${body.error}`);
  context.note(`replaced replica ${victim} in ${Date.now() - asked} ms: epoch ${body.epoch}`);
  // The old incarnation is refused everywhere; its replacement joins empty.
  const joined = Date.now();
  await context.cluster.join(victim, via);
  await waitUntil(() => answers(`${context.cluster.urls[victim]}/readyz`), {
    deadlineMs: READY_DEADLINE_MS,
    what: `replica ${victim}'s replacement to serve`,
  });
  context.note(`replacement of replica ${victim} ready ${Date.now() - joined} ms after it started`);
}

/** See the module documentation. */
export const REPLACE_WIPED: Scenario = {
  name: "replace-wiped",
  description:
    "SIGKILL a replica and delete its data; replace it (new incarnation) and start it with --join; it returns by snapshot",
  availableDuringFault: true,
  inject,
};
