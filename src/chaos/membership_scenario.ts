/**
 * Chaos scenarios of membership changes, under the chaos workload with its
 * history checked across epochs.
 *
 * The `replace-wiped` scenario: a replica is killed and its disk lost
 * (its data directory deleted) while the workload runs; an operator replaces
 * it (`deno task admin replace ID`: a configuration change giving it a new
 * incarnation) and starts it again with `--join` on the empty directory. The
 * others keep committing throughout (the change needs a majority of the old
 * voters); the replacement installs a snapshot and serves; the history stays
 * linearizable, across two epochs.
 *
 * The `shrink-grow` scenario (5 replicas): two voters are removed (three
 * remain), their processes killed and their disks wiped; two learners are
 * added at their URLs (new ids), started with `--join`, and promoted once
 * caught up: five voters again, over three epochs, while the workload runs.
 *
 * The `grow-shrink` scenario (3 replicas and 4 spare slots): grows to five
 * voters and then seven (learners added in pairs, joined, promoted once
 * caught up), then shrinks to five and three again, under load.
 *
 * The `remove-while-down` scenario (5 replicas): two replicas are killed,
 * and removing two others (which would leave the two dead among three
 * voters, no majority alive) is refused with nothing changed. The two dead
 * ones are removed instead; one of them is started again on its disk, in
 * the old epoch: nobody sends a non-member anything, but its peers refuse
 * its batches with their epoch, and it learns from one of them that it was
 * removed and retires (`/readyz` and `/status` say so). Both are then wiped
 * and added back at their URLs (new ids), joined and promoted, as in
 * `shrink-grow`.
 *
 * The `old-incarnation` scenario: a replica is killed and replaced (a new
 * incarnation) while its disk is intact; its old process is started again on
 * that disk, as an operator might by mistake: it learns it was replaced and
 * serves nothing (`/readyz` says so, peers take none of its batches). It is
 * stopped, its disk wiped, and the replacement joins.
 *
 * @module
 */

import { answers, replicaStatus, waitUntil } from "./process_cluster.ts";
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

/** One member as `GET /admin/members` shows it (the fields read here). */
interface MemberView {
  readonly id: number;
  readonly role: string;
  readonly state: string;
  readonly alive: boolean;
}

async function membersOf(context: NemesisContext, url: string): Promise<readonly MemberView[]> {
  try {
    const response = await fetch(`${url}/admin/members`, {
      headers: { authorization: `Bearer ${context.cluster.secret}` },
      signal: AbortSignal.timeout(2000),
    });
    return response.ok ? (await response.json()).members : [];
  } catch {
    return [];
  }
}

/** Proposes `change` at `url`, and fails the scenario on a refusal. */
async function change(
  context: NemesisContext,
  url: string,
  what: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const asked = Date.now();
  const { status, body } = await proposeChange(context, url, what);
  if (status !== 200) throw new Error(`${JSON.stringify(what)} refused (${status}): ${body.error}`);
  context.note(
    `${what.kind} ${JSON.stringify(what.ids ?? what.url ?? what.id)}: epoch ${body.epoch} in ${
      Date.now() - asked
    } ms`,
  );
  return body;
}

async function shrinkGrow(context: NemesisContext): Promise<void> {
  const { cluster } = context;
  const via = cluster.urls[0]!;
  const leaving = [context.replicas - 2, context.replicas - 1];
  await change(context, via, { kind: "remove", ids: leaving });
  for (const slot of leaving) {
    await cluster.kill(slot, "SIGKILL");
    await cluster.wipe(slot);
  }
  context.note(`removed replicas ${leaving.join(", ")} stopped and wiped`);
  await context.sleep(context.faultMs * 0.1);
  await growBy(context, via, leaving);
}

/** The configuration `url` is in, as `GET /admin/configuration` answers it. */
async function configurationAt(context: NemesisContext, url: string): Promise<string> {
  const response = await fetch(`${url}/admin/configuration`, {
    headers: { authorization: `Bearer ${context.cluster.secret}` },
    signal: AbortSignal.timeout(5000),
  });
  return await response.text();
}

async function removeWhileDown(context: NemesisContext): Promise<void> {
  const { cluster } = context;
  const dead = [context.replicas - 2, context.replicas - 1];
  for (const id of dead) await cluster.kill(id, "SIGKILL");
  context.note(`SIGKILL replicas ${dead.join(", ")}`);
  // Their peers stop counting them alive after a few seconds of silence.
  await context.sleep(Math.max(4000, context.faultMs * 0.3));
  const via = cluster.urls[0]!;
  const before = await configurationAt(context, via);
  const { status, body } = await proposeChange(context, via, { kind: "remove", ids: [1, 2] });
  if (status !== 409) {
    throw new Error(`removing 1 and 2 while ${dead.join(" and ")} are down answered ${status}`);
  }
  context.note(`remove [1,2] refused: ${body.error}`);
  if (await configurationAt(context, via) !== before) {
    throw new Error("a refused change changed the configuration");
  }
  // Removing the dead ones leaves three voters, all alive: allowed.
  await change(context, via, { kind: "remove", ids: dead });
  const [returning] = dead as [number, number];
  context.note(`start replica ${returning}'s process again on its disk, after its removal`);
  await cluster.start(returning);
  const url = cluster.urls[returning]!;
  await waitUntil(async () => {
    const status = await replicaStatus<{ retired: string | null }>(url, 1000);
    if (status?.retired === null || status?.retired === undefined) return false;
    const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) })
      .catch(() => undefined);
    const text = await ready?.text();
    return ready?.status === 503 && /takes no part/.test(text ?? "") &&
      /does not have it as a member/.test(status.retired);
  }, {
    deadlineMs: READY_DEADLINE_MS,
    what: `replica ${returning}, removed while it was down, to learn it and retire`,
  });
  context.note(`replica ${returning} learned it was removed while down and serves nothing`);
  await cluster.kill(returning, "SIGKILL");
  for (const slot of dead) await cluster.wipe(slot);
  await growBy(context, via, dead);
}

async function oldIncarnation(context: NemesisContext): Promise<void> {
  const { cluster } = context;
  const victim = context.random.int(context.replicas);
  const via = cluster.urls[(victim + 1) % context.replicas]!;
  await cluster.kill(victim, "SIGKILL");
  await change(context, via, { kind: "replace", id: victim });
  context.note(`start replica ${victim}'s old process on its disk`);
  await cluster.start(victim);
  const url = cluster.urls[victim]!;
  await waitUntil(async () => {
    try {
      const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
      const text = await response.text();
      return response.status === 503 && /takes no part/.test(text);
    } catch {
      return false;
    }
  }, {
    deadlineMs: READY_DEADLINE_MS,
    what: `replica ${victim}'s old process to say it was replaced`,
  });
  context.note(`the old process of replica ${victim} serves nothing: it was replaced`);
  await cluster.kill(victim, "SIGKILL");
  await cluster.wipe(victim);
  const joined = Date.now();
  await cluster.join(victim, via);
  await waitUntil(() => answers(`${url}/readyz`), {
    deadlineMs: READY_DEADLINE_MS,
    what: `replica ${victim}'s replacement to serve`,
  });
  context.note(`replacement of replica ${victim} ready ${Date.now() - joined} ms after it started`);
}

/** Adds learners at `slots`, joins them, waits until caught up, and promotes them. */
async function growBy(context: NemesisContext, via: string, slots: readonly number[]) {
  const added: number[] = [];
  for (const slot of slots) {
    const body = await change(context, via, { kind: "add", url: context.cluster.urls[slot] });
    added.push(body.id as number);
    await context.cluster.join(slot, via, body.id as number);
  }
  await waitUntil(async () => {
    const members = await membersOf(context, via);
    return added.every((id) =>
      members.some((member) => member.id === id && member.alive && member.state === "caught-up")
    );
  }, { deadlineMs: READY_DEADLINE_MS, what: `learners ${added.join(", ")} to catch up` });
  await change(context, via, { kind: "promote", ids: added });
  return added;
}

async function growShrink(context: NemesisContext): Promise<void> {
  const { cluster } = context;
  const via = cluster.urls[0]!;
  const first = await growBy(context, via, [3, 4]);
  const second = await growBy(context, via, [5, 6]);
  context.note("seven voters");
  for (const [ids, slots] of [[second, [5, 6]], [first, [3, 4]]] as const) {
    await change(context, via, { kind: "remove", ids });
    for (const slot of slots) await cluster.kill(slot, "SIGTERM");
  }
  context.note("three voters again");
}

/** See the module documentation. */
export const GROW_SHRINK: Scenario = {
  name: "grow-shrink",
  description:
    "grow 3 -> 5 -> 7 voters (learners added, joined, promoted) and shrink 7 -> 5 -> 3 under load",
  replicas: 3,
  spareSlots: 4,
  availableDuringFault: true,
  inject: growShrink,
};

/** See the module documentation. */
export const REMOVE_WHILE_DOWN: Scenario = {
  name: "remove-while-down",
  description:
    "SIGKILL two replicas; removing two others is refused; removing the dead ones is not, and one restarted learns it and retires; both join again",
  replicas: 5,
  availableDuringFault: true,
  inject: removeWhileDown,
};

/** See the module documentation. */
export const OLD_INCARNATION: Scenario = {
  name: "old-incarnation",
  description:
    "replace a killed replica, start its old process on its disk: it serves nothing; then wipe and join",
  availableDuringFault: true,
  inject: oldIncarnation,
};

/** See the module documentation. */
export const SHRINK_GROW: Scenario = {
  name: "shrink-grow",
  description:
    "remove two voters and wipe them; add two learners at their URLs, join them, promote them",
  replicas: 5,
  availableDuringFault: true,
  inject: shrinkGrow,
};

/** See the module documentation. */
export const REPLACE_WIPED: Scenario = {
  name: "replace-wiped",
  description:
    "SIGKILL a replica and delete its data; replace it (new incarnation) and start it with --join; it returns by snapshot",
  availableDuringFault: true,
  inject,
};
