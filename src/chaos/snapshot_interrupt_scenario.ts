/**
 * The `snapshot-interrupted` chaos scenario: a snapshot transfer killed
 * midway, first on the receiving side, then on the sending side. The
 * replicas run with a small retention bound and a snapshot rate of 1 MB/s,
 * and the state is made a few MB (filler keys `fill-*`, outside the
 * workload's history), so a transfer lasts seconds.
 *
 * 1. Target killed midway: a replica is killed and kept down until it can
 *    only catch up by snapshot (a peer's `/status` shows it pruned past, and
 *    every running peer's prune floor is above what it had executed);
 *    restarted, it fetches a snapshot; a second into the transfer it is
 *    killed again. Restarted once more, it must resume the transfer from the
 *    bytes it kept, from the same source (`src/net/snapshot_fetch.ts` logs
 *    "resuming the snapshot from replica URL at byte N", the source's route
 *    logs the resumed stream), and install a snapshot. (That may be a later
 *    one: under load, one streamed at 1 MB/s can be stale on arrival, and the
 *    replica then fetches again.)
 * 2. Source killed midway: the same replica is kept down past the bound the
 *    same way (its kept partial file, if a later fetch left one, removed, so
 *    that a new transfer starts); restarted, it fetches a snapshot, and a
 *    second into the transfer its source (named by the partial file's
 *    sidecar) is killed and restarted. The cut stream must fail the fetch at
 *    once, and the replica must still install a snapshot, from another
 *    source or from the restarted one (`src/driver/snapshot_fetcher.ts`
 *    moves on after a failure).
 *
 * Replica output is read from the cluster's log files, which hold every run
 * of a replica (the in-memory tail `ProcessCluster.output` is bounded).
 *
 * @module
 */

import { replicaStatus } from "./process_cluster.ts";
import type { NemesisContext, Scenario } from "./scenarios.ts";

/** Filler keys written to make the state a few MB (`fill-00000` ...): about 2.6 MB. */
const FILL_KEYS = 10_000;
/** Bytes of each filler value. */
const FILL_VALUE_BYTES = 150;
/** Filler writes in flight at once. */
const FILL_CONCURRENCY = 64;
/** Attempts per filler write (a refused one is tried again, on another replica). */
const FILL_ATTEMPTS = 3;
/** Most filler writes made while waiting for the peers to prune past a replica. */
const MAX_PUMP_WRITES = 20_000;
/** Longest wait for the peers to prune past a replica that is down, in milliseconds. */
const PRUNE_DEADLINE_MS = 30_000;
/** How long the transfer runs before it is cut, in milliseconds. */
const CUT_AFTER_MS = 1000;
/** The line the driver logs when it starts fetching a snapshot (names the source it chose). */
const FETCHING_LINE = /fetching a snapshot from replica (\d+)/;
/** The line `fetchSnapshot` logs when it resumes a kept transfer. */
const RESUMING_LINE = /resuming the snapshot from replica (\S+) at byte (\d+) \(barrier (\S+)\)/;
/** The line the driver logs when it installed a snapshot. */
const INSTALLED_LINE = /installed a snapshot of \d+ keys at (\S+)/;
/** The line the driver logs when a fetch (or its install) failed. */
const FAILED_LINE = /snapshot from replica \d+ failed \(([^\n]*)\); next try/;
/** The line `fetchSnapshot` logs when it starts a transfer from byte 0. */
const AFRESH_LINE = /fetching the snapshot from replica \S+ afresh[^\n]*/;

/** What the scenario reads of a replica's `/status`. */
interface Status {
  readonly frontiers: { readonly executed: readonly number[]; readonly pruned: readonly number[] };
  readonly retention: {
    readonly prunedPast: readonly number[];
    readonly snapshotsInstalled: number;
  };
}

function statusOf(url: string): Promise<Status | undefined> {
  return replicaStatus<Status>(url, 2000);
}

/**
 * Polls `what` every `everyMs` until it returns a value other than undefined,
 * or throws `failure` after `deadlineMs`.
 */
async function waitFor<T>(
  context: NemesisContext,
  what: () => Promise<T | undefined>,
  options: {
    readonly deadlineMs: number;
    readonly failure: () => string;
    readonly everyMs?: number;
  },
): Promise<T> {
  const deadline = Date.now() + options.deadlineMs;
  for (;;) {
    const value = await what();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(options.failure());
    await context.sleep(options.everyMs ?? 100);
  }
}

/** Replica `id`'s whole output (every run of it) from character `from` on. */
async function outputSince(context: NemesisContext, id: number, from: number): Promise<string> {
  try {
    return (await Deno.readTextFile(`${context.cluster.root}/replica-${id}.log`)).slice(from);
  } catch {
    return "";
  }
}

/** Where replica `id`'s output ends now, for {@linkcode outputSince}. */
async function outputMark(context: NemesisContext, id: number): Promise<number> {
  return (await outputSince(context, id, 0)).length;
}

/** Bytes of replica `id`'s kept snapshot transfer, if one is kept. */
async function partialBytes(context: NemesisContext, id: number): Promise<number | undefined> {
  try {
    return (await Deno.stat(`${context.cluster.root}/replica-${id}/snapshot.partial`)).size;
  } catch {
    return undefined;
  }
}

/**
 * Writes `count` filler values (keys `fill-NNNNN`, from `first` on, modulo
 * {@linkcode FILL_KEYS}) to the running replicas, {@linkcode FILL_CONCURRENCY}
 * at a time, until done or `stop` says so; returns how many were acknowledged.
 */
async function fill(
  context: NemesisContext,
  first: number,
  count: number,
  stop: () => boolean = () => false,
): Promise<number> {
  const filler = "x".repeat(FILL_VALUE_BYTES);
  let next = 0;
  let acknowledged = 0;
  const writer = async (lane: number) => {
    while (next < count && !stop()) {
      const index = (first + next++) % FILL_KEYS;
      const key = `fill-${String(index).padStart(5, "0")}`;
      for (let attempt = 0; attempt < FILL_ATTEMPTS; attempt++) {
        const live = context.cluster.urls.filter((_, id) => context.cluster.running(id));
        const url = live[(lane + index + attempt) % live.length];
        if (url === undefined) return;
        try {
          const response = await fetch(`${url}/kv/${key}`, {
            method: "PUT",
            body: `${filler}-${first + next}`,
            signal: AbortSignal.timeout(5000),
          });
          await response.body?.cancel();
          if (response.ok) {
            acknowledged++;
            break;
          }
        } catch {
          // Refused or timed out: another replica, up to the attempts.
        }
      }
    }
  };
  await Promise.all(Array.from({ length: FILL_CONCURRENCY }, (_, lane) => writer(lane)));
  return acknowledged;
}

/**
 * Kills replica `victim` and keeps it down until it cannot catch up without
 * a snapshot: a running peer's `/status` shows it pruned past the victim,
 * and every running peer's prune floor is above what the victim had
 * executed (a peer still holding all it missed would let it catch up
 * instance by instance, once its source is killed). Writes filler
 * meanwhile, so that the peers get there sooner.
 */
async function killPastRetention(context: NemesisContext, victim: number): Promise<void> {
  const executed = await waitFor(
    context,
    async () => (await statusOf(context.cluster.urls[victim]!))?.frontiers.executed,
    { deadlineMs: 10_000, failure: () => `replica ${victim} did not answer /status` },
  );
  await context.cluster.kill(victim, "SIGKILL");
  context.note(`SIGKILL replica ${victim} (executed up to ${executed.join(",")})`);
  const started = Date.now();
  let done = false;
  let holding: number[] = [];
  const check = async () => {
    let prunedPast = false;
    holding = [];
    for (let id = 0; id < context.replicas; id++) {
      if (id === victim || !context.cluster.running(id)) continue;
      const status = await statusOf(context.cluster.urls[id]!);
      if (status?.retention.prunedPast.includes(victim)) prunedPast = true;
      if (!status?.frontiers.pruned.some((floor, row) => floor > executed[row]!)) {
        holding.push(id);
      }
    }
    return prunedPast && holding.length === 0;
  };
  const watching = (async () => {
    while (!done && Date.now() - started < PRUNE_DEADLINE_MS) {
      done = await check();
      if (!done) await context.sleep(250);
    }
  })();
  const written = await fill(
    context,
    context.random.int(FILL_KEYS),
    MAX_PUMP_WRITES,
    () => done || Date.now() - started > PRUNE_DEADLINE_MS,
  );
  await watching;
  if (!done) {
    throw new Error(
      `the peers did not prune past replica ${victim} within ${PRUNE_DEADLINE_MS / 1000} s ` +
        `(still holding what it missed: ${holding.join(", ") || "none"}; ${written} filler writes)`,
    );
  }
  context.note(
    `every running peer pruned past replica ${victim} ${Date.now() - started} ms after ` +
      `its kill (${written} filler writes meanwhile)`,
  );
}

/** Replica `id`'s transfer in flight: the bytes in its partial file and their source (by its sidecar). */
async function transferOf(
  context: NemesisContext,
  id: number,
): Promise<{ readonly source: number; readonly bytes: number } | undefined> {
  const bytes = await partialBytes(context, id);
  if (bytes === undefined || bytes === 0) return undefined;
  try {
    const path = `${context.cluster.root}/replica-${id}/snapshot.partial.json`;
    const { peerUrl } = JSON.parse(await Deno.readTextFile(path));
    const source = context.cluster.urls.indexOf(peerUrl);
    return source < 0 ? undefined : { source, bytes };
  } catch {
    return undefined;
  }
}

/**
 * Starts replica `victim`, waits until its snapshot transfer is under way
 * (the driver logged it, and bytes reached the partial file), lets it run
 * {@linkcode CUT_AFTER_MS}, and returns the transfer then, with where the
 * victim's output stood before the start and when it started.
 */
async function restartUntilMidway(
  context: NemesisContext,
  victim: number,
): Promise<{ source: number; bytes: number; startedAt: number; mark: number }> {
  const mark = await outputMark(context, victim);
  const startedAt = Date.now();
  context.note(`restart replica ${victim}`);
  await context.cluster.start(victim);
  const asked = await waitFor(context, async () => {
    const match = FETCHING_LINE.exec(await outputSince(context, victim, mark));
    return match === null ? undefined : match[1]!;
  }, {
    deadlineMs: 30_000,
    failure: () => `replica ${victim} did not start fetching a snapshot within 30 s of its restart`,
  });
  const flowing = await waitFor(context, () => transferOf(context, victim), {
    deadlineMs: 30_000,
    failure: () => `replica ${victim} received no snapshot bytes within 30 s of asking`,
    everyMs: 50,
  });
  context.note(
    `replica ${victim} fetches a snapshot (the driver asked replica ${asked}); bytes from ` +
      `replica ${flowing.source} flow ${Date.now() - startedAt} ms after its restart`,
  );
  await context.sleep(CUT_AFTER_MS);
  const midway = await transferOf(context, victim);
  if (midway === undefined || midway.bytes <= flowing.bytes) {
    throw new Error(`replica ${victim}'s snapshot transfer stalled after ${flowing.bytes} bytes`);
  }
  return { ...midway, startedAt, mark };
}

/**
 * Waits until replica `id` (started after `since`) reports a snapshot
 * installed; returns the milliseconds since `since`.
 */
async function awaitInstalled(
  context: NemesisContext,
  id: number,
  since: number,
  deadlineMs: number,
): Promise<number> {
  await waitFor(context, async () => {
    const status = await statusOf(context.cluster.urls[id]!);
    return (status?.retention.snapshotsInstalled ?? 0) > 0 ? true : undefined;
  }, {
    deadlineMs,
    failure: () => `replica ${id} installed no snapshot within ${deadlineMs / 1000} s`,
    everyMs: 200,
  });
  return Date.now() - since;
}

/** Round 1: the receiving replica is killed midway and must resume. */
async function targetKilled(context: NemesisContext, victim: number): Promise<void> {
  context.note(`round 1, the target killed midway`);
  const started = Date.now();
  const written = await fill(context, 0, FILL_KEYS);
  context.note(
    `wrote ${written} of ${FILL_KEYS} filler keys of ${FILL_VALUE_BYTES} bytes in ` +
      `${Date.now() - started} ms`,
  );
  if (written < FILL_KEYS / 2) {
    throw new Error(`only ${written} of ${FILL_KEYS} filler writes were acknowledged`);
  }
  await killPastRetention(context, victim);
  const { source, bytes } = await restartUntilMidway(context, victim);
  await context.cluster.kill(victim, "SIGKILL");
  const kept = (await partialBytes(context, victim)) ?? 0;
  context.note(
    `SIGKILL replica ${victim} midway: ${kept} bytes from replica ${source} kept ` +
      `(${bytes} when last looked)`,
  );
  if (kept === 0) throw new Error(`replica ${victim} kept no bytes of its snapshot transfer`);

  const sourceMark = await outputMark(context, source);
  const mark = await outputMark(context, victim);
  const restartedAt = Date.now();
  context.note(`restart replica ${victim}`);
  await context.cluster.start(victim);
  const resumed = await waitFor(context, async () => {
    const output = await outputSince(context, victim, mark);
    const match = RESUMING_LINE.exec(output);
    if (match !== null) return { url: match[1]!, offset: Number(match[2]), barrier: match[3]! };
    const afresh = AFRESH_LINE.exec(output);
    if (afresh !== null) {
      throw new Error(`replica ${victim} did not resume its snapshot transfer: ${afresh[0]}`);
    }
    return undefined;
  }, {
    deadlineMs: 30_000,
    failure: () => `replica ${victim} did not resume its snapshot transfer within 30 s`,
  });
  const from = context.cluster.urls.indexOf(resumed.url);
  context.note(
    `replica ${victim} resumes from replica ${from} at byte ${resumed.offset} ` +
      `(${Date.now() - restartedAt} ms after its restart)`,
  );
  if (from !== source) {
    throw new Error(`replica ${victim} resumed from replica ${from}, not ${source} that it kept`);
  }
  if (resumed.offset < kept) {
    throw new Error(`replica ${victim} resumed at byte ${resumed.offset}, below the ${kept} kept`);
  }
  let total = resumed.offset;
  const tookMs = await awaitInstalledWatching(context, victim, restartedAt, (bytes) => {
    total = Math.max(total, bytes);
  });
  const output = await outputSince(context, victim, mark);
  const fetches = [...output.matchAll(new RegExp(FETCHING_LINE, "g"))].map((match) => match[1]);
  const installed = INSTALLED_LINE.exec(output)?.[1];
  const failure = FAILED_LINE.exec(output)?.[1];
  context.note(
    `replica ${victim} installed a snapshot ${tookMs} ms after its restart: ` +
      (installed === resumed.barrier
        ? `the resumed one (about ${total} bytes in all, ${total - resumed.offset} after resuming)`
        : `not the resumed one (${failure?.slice(0, 160) ?? "no failure logged"}), a later one`) +
      ` (fetches asked of replicas ${fetches.join(", ")})`,
  );
  const served = /resuming the snapshot at barrier \S+ from byte (\d+)/.exec(
    await outputSince(context, source, sourceMark),
  );
  if (served === null || Number(served[1]) !== resumed.offset) {
    throw new Error(
      `replica ${source} logged no resumed stream from byte ${resumed.offset}` +
        (served === null ? "" : ` (it logged byte ${served[1]})`),
    );
  }
}

/**
 * {@linkcode awaitInstalled} while reporting the size of replica `id`'s
 * partial file as it grows.
 */
async function awaitInstalledWatching(
  context: NemesisContext,
  id: number,
  since: number,
  seen: (bytes: number) => void,
): Promise<number> {
  let done = false;
  const watching = (async () => {
    while (!done) {
      const bytes = await partialBytes(context, id);
      if (bytes !== undefined) seen(bytes);
      await context.sleep(100);
    }
  })();
  try {
    return await awaitInstalled(context, id, since, 30_000);
  } finally {
    done = true;
    await watching;
  }
}

/** Round 2: the sending replica is killed midway; the receiver must still install one. */
async function sourceKilled(context: NemesisContext, victim: number): Promise<void> {
  context.note(`round 2, the source killed midway`);
  await killPastRetention(context, victim);
  // A transfer it kept from round 1's later fetches would be resumed, maybe
  // nearly done: dropped, so that the source is cut early in a transfer.
  for (const suffix of ["", ".json"]) {
    await Deno.remove(`${context.cluster.root}/replica-${victim}/snapshot.partial${suffix}`)
      .catch(() => {});
  }
  const { source, bytes, startedAt, mark } = await restartUntilMidway(context, victim);
  const cutMark = await outputMark(context, victim);
  const cutAt = Date.now();
  await context.cluster.kill(source, "SIGKILL");
  context.note(`SIGKILL replica ${source}, the source, midway: ${bytes} bytes had arrived`);
  await context.cluster.start(source);
  context.note(`restart replica ${source}`);
  const failed = await waitFor(context, async () => {
    const line = FAILED_LINE.exec(await outputSince(context, victim, cutMark));
    return line === null ? undefined : line[1]!;
  }, {
    deadlineMs: 15_000,
    failure: () => `replica ${victim}'s fetch did not fail within 15 s of its source's death`,
  });
  context.note(
    `replica ${victim}'s fetch failed ${Date.now() - cutAt} ms (or less) after the cut: ${
      failed.slice(0, 160)
    }`,
  );
  const tookMs = await awaitInstalled(context, victim, cutAt, 45_000);
  const fetches = [...(await outputSince(context, victim, mark)).matchAll(
    new RegExp(FETCHING_LINE, "g"),
  )].map((match) => match[1]);
  context.note(
    `replica ${victim} installed a snapshot ${tookMs} ms after the cut, ` +
      `${Date.now() - startedAt} ms after its restart (fetches from replicas ${
        fetches.join(", ")
      })`,
  );
}

async function inject(context: NemesisContext): Promise<void> {
  const first = context.random.int(context.replicas);
  await targetKilled(context, first);
  // The same replica again: the others stay healthy sources. (Under load it
  // may still be catching up when round 1 ends: a snapshot streamed at
  // 1 MB/s takes longer than the load needs to pass the retention bound.)
  await sourceKilled(context, first);
}

/** See the module documentation. */
export const SNAPSHOT_INTERRUPTED: Scenario = {
  name: "snapshot-interrupted",
  description: "a snapshot transfer killed midway on the target (it resumes) " +
    "and on the source (the target installs one anyway)",
  // Two replicas down at once (the receiver and its source) must leave a quorum.
  replicas: 5,
  availableDuringFault: true,
  replicaArgs: ["--max-held-commands", "1000", "--snapshot-rate", "1"],
  inject,
};
