/**
 * `deno task bench:membership [--keys N] [--runs N] [--connections C] [--out FILE]`:
 * what membership changes cost a live cluster (issue 15): the write
 * unavailability of each kind of change, and the time to replace a wiped
 * replica holding `--keys` keys.
 *
 * Three replica processes on Deno KV (the command line `deno task start`
 * uses) are loaded with `--keys` keys of 64-byte values; two spare slots
 * wait for members added later. Then, `--runs` times, with `--connections`
 * closed-loop blind writers on replicas 0 and 1 throughout:
 *
 * 1. **replace**: replica 2 is killed and its data deleted; `replace 2`
 *    (through the admin route, as `deno task admin` sends it), then its
 *    replacement starts with `--join` on the empty directory: the time from
 *    the replace to the replacement's `/readyz` 200, and from its start;
 * 2. **add** two learners (in the spare slots, started with `--join` once
 *    added), **promote** both once caught up, **remove** both: five voters
 *    and back to three.
 *
 * The write unavailability of a change is the longest interval, from the
 * change's request until its answer plus one second, in which no write was
 * acknowledged anywhere (the writers run in this process, on the same two
 * cores as the replicas). Reported per kind of change: the median and the
 * maximum over runs. Member ids are never reused, and the core holds ids up
 * to 8: three runs use them all (`--runs` at most 3).
 *
 * @module
 */

import { integerOption, option, parseArgs } from "../src/cli/args.ts";
import { answers, startProcessCluster, waitUntil } from "../src/chaos/process_cluster.ts";
import { preload, writers } from "./cluster_load.ts";
import { median } from "./throughput/runs.ts";

const args = parseArgs(Deno.args, { options: ["keys", "runs", "connections", "out"] });
const keys = integerOption(args, "keys", { min: 100, max: 1_000_000, fallback: 100_000 })!;
const runs = integerOption(args, "runs", { min: 1, max: 3, fallback: 3 })!;
const connections = integerOption(args, "connections", { min: 1, max: 512, fallback: 32 })!;
const out = option(args, "out");

const VALUE = "v".repeat(64);
const VICTIM = 2;
const SPARES = [3, 4];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const work = await Deno.makeTempDir({ prefix: "epaxos-bench-membership-" });
console.log(`starting 3 replicas and 2 spare slots; preloading ${keys} keys of 64 bytes`);
const cluster = await startProcessCluster(3, { parentDir: work, spares: SPARES.length });
const via = cluster.urls[0]!;
const acks: number[] = [];
const unavailableMs: Record<string, number[]> = { replace: [], add: [], promote: [], remove: [] };
const replaceToReadyS: number[] = [];
const joinToReadyS: number[] = [];

/** Longest interval in [from, to] with no acknowledged write, in ms. */
function longestGap(from: number, to: number): number {
  let previous = from;
  let longest = 0;
  for (const at of acks) {
    if (at < from) continue;
    if (at > to) break;
    longest = Math.max(longest, at - previous);
    previous = at;
  }
  return Math.max(longest, to - previous);
}

/** Proposes `change` and returns its answer; records its write unavailability under `kind`. */
async function change(
  kind: string,
  body: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const asked = performance.now();
  const response = await fetch(`${via}/admin/members/change`, {
    method: "POST",
    headers: { authorization: `Bearer ${cluster.secret}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${kind}: ${response.status} ${answer.error}`);
  const answered = performance.now();
  await sleep(1000);
  const gap = longestGap(asked, answered + 1000);
  unavailableMs[kind]!.push(gap);
  console.log(
    `  ${kind} ${JSON.stringify(body.ids ?? body.url ?? body.id)}: epoch ${answer.epoch}, ` +
      `answered in ${(answered - asked).toFixed(0)} ms, longest write gap ${gap.toFixed(0)} ms`,
  );
  return answer;
}

async function caughtUp(ids: readonly number[]): Promise<boolean> {
  const response = await fetch(`${via}/admin/members`, {
    headers: { authorization: `Bearer ${cluster.secret}` },
  });
  const members = (await response.json()).members as {
    id: number;
    state: string;
    alive: boolean;
  }[];
  return ids.every((id) => members.some((m) => m.id === id && m.alive && m.state === "caught-up"));
}

try {
  await preload(cluster.urls.slice(0, 3), { keys, value: VALUE });
  console.log("preloaded");
  const load = writers(cluster.urls.slice(0, 2), {
    connections,
    keys,
    value: VALUE,
    onAcknowledged: (at) => acks.push(at),
  });
  try {
    await sleep(2000);
    for (let run = 1; run <= runs; run++) {
      console.log(`run ${run}`);
      await cluster.kill(VICTIM, "SIGKILL");
      await cluster.wipe(VICTIM);
      await sleep(1000);
      const replaced = performance.now();
      await change("replace", { kind: "replace", id: VICTIM });
      const joined = performance.now();
      await cluster.join(VICTIM, via);
      await waitUntil(() => answers(`${cluster.urls[VICTIM]}/readyz`), {
        deadlineMs: 300_000,
        intervalMs: 20,
        what: `replica ${VICTIM}'s replacement to serve`,
      });
      replaceToReadyS.push((performance.now() - replaced) / 1000);
      // As an operator would before the next change: until the others hear it.
      await waitUntil(() => caughtUp([VICTIM]), {
        deadlineMs: 60_000,
        intervalMs: 100,
        what: `replica ${VICTIM}'s replacement to be heard from`,
      });
      joinToReadyS.push((performance.now() - joined) / 1000);
      console.log(
        `  replacement ready ${((performance.now() - joined) / 1000).toFixed(2)} s after it ` +
          `started (${keys} keys)`,
      );

      const added: number[] = [];
      for (const slot of SPARES) {
        const answer = await change("add", { kind: "add", url: cluster.urls[slot] });
        added.push(answer.id as number);
        await cluster.join(slot, via, answer.id as number);
      }
      await waitUntil(() => caughtUp(added), {
        deadlineMs: 300_000,
        intervalMs: 100,
        what: `learners ${added.join(", ")} to catch up`,
      });
      await change("promote", { kind: "promote", ids: added });
      await change("remove", { kind: "remove", ids: added });
      for (const slot of SPARES) {
        await cluster.kill(slot, "SIGKILL");
        await cluster.wipe(slot);
      }
    }
  } finally {
    await load.stop();
  }
} finally {
  await cluster.stop();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

const round = (value: number | null) => value === null ? null : Math.round(value);
const report = {
  keys,
  runs,
  connections,
  write_unavailability_ms: Object.fromEntries(
    Object.entries(unavailableMs).map(([kind, gaps]) => [kind, {
      p50: round(median(gaps)),
      max: round(Math.max(...gaps)),
      runs: gaps.map(Math.round),
    }]),
  ),
  replace_to_ready_s: {
    p50: Number(median(replaceToReadyS)!.toFixed(2)),
    max: Number(Math.max(...replaceToReadyS).toFixed(2)),
  },
  join_to_ready_s: {
    p50: Number(median(joinToReadyS)!.toFixed(2)),
    max: Number(Math.max(...joinToReadyS).toFixed(2)),
  },
};
console.log(JSON.stringify(report, null, 2));
if (out !== undefined) await Deno.writeTextFile(out, `${JSON.stringify(report, null, 2)}\n`);
