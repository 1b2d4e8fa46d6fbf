/**
 * `deno task bench:snapshot [--keys N] [--runs N] [--window S] [--connections C]
 * [--out FILE]`: what a snapshot transfer costs a live cluster, how fast it
 * goes, and how long a replica its peers pruned past takes to return
 * (issue 15).
 *
 * Three replica processes on Deno KV (the command line `deno task start`
 * uses, with a retention bound of `--retention` commands, default 100,000,
 * about 20 s of these writes, passed as `--max-held-commands`) are
 * loaded with `--keys` keys of 64-byte values. Then, `--runs` times,
 * interleaved, with `--connections` closed-loop blind writers on replicas 0
 * and 1 throughout:
 *
 * 1. a steady window of `--window` seconds;
 * 2. a snapshot streamed from replica 0 as a peer fetches one
 *    (`GET /peer/v1/snapshot`, the replica's default rate), while the writers
 *    go on: its size, time and MB/s, and the write throughput meanwhile as a
 *    fraction of the steady window's;
 * 3. replica 2 is killed, the writers go on until its peers prune past it
 *    (`/status` `retention.prunedPast`), and it is started again: the time
 *    from its start until it has installed a snapshot and `/readyz` answers
 *    200, and until it holds the same state as the others once the writers
 *    pause.
 *
 * Medians over runs; each fraction is a run's own. The writers run in this
 * process, on the same two cores as the replicas.
 *
 * @module
 */

import { integerOption, option, parseArgs } from "../src/cli/args.ts";
import {
  answers,
  replicaStatus,
  startProcessCluster,
  waitUntil,
} from "../src/chaos/process_cluster.ts";
import { SNAPSHOT_PATH } from "../src/net/snapshot_fetch.ts";
import { preload, writers } from "./cluster_load.ts";
import { median as medianOrNull } from "./throughput/runs.ts";

const args = parseArgs(Deno.args, {
  options: ["keys", "runs", "window", "connections", "out", "retention"],
});
const keys = integerOption(args, "keys", { min: 100, max: 1_000_000, fallback: 100_000 })!;
const runs = integerOption(args, "runs", { min: 1, max: 20, fallback: 3 })!;
const windowSeconds = integerOption(args, "window", { min: 2, max: 120, fallback: 8 })!;
const connections = integerOption(args, "connections", { min: 1, max: 512, fallback: 64 })!;
const out = option(args, "out");
const retentionCommands = integerOption(args, "retention", {
  min: 1000,
  max: 10_000_000,
  fallback: 100_000,
})!;

const VALUE = "v".repeat(64);
const VICTIM = 2;

function median(values: readonly number[]): number {
  return medianOrNull(values)!;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What the benchmark reads of a replica's `/status`. */
interface Status {
  readonly stateDigest: string;
  readonly retention: { readonly prunedPast: number[]; readonly snapshotsInstalled: number };
}

const status = (url: string) => replicaStatus<Status>(url);

/** Streams a snapshot from `url` as a peer would, counting its bytes. */
async function streamSnapshot(url: string, secret: string): Promise<number> {
  const response = await fetch(`${url}${SNAPSHOT_PATH}`, {
    headers: { authorization: `Bearer ${secret}` },
    signal: AbortSignal.timeout(300_000),
  });
  if (!response.ok) throw new Error(`snapshot: ${response.status} ${await response.text()}`);
  let bytes = 0;
  for await (const chunk of response.body!) bytes += chunk.length;
  return bytes;
}

const work = await Deno.makeTempDir({ prefix: "epaxos-bench-snapshot-" });
console.log(
  `starting 3 replicas (retention ${retentionCommands} commands); preloading ${keys} keys of 64 bytes`,
);
const cluster = await startProcessCluster(3, {
  parentDir: work,
  extraArgs: ["--max-held-commands", String(retentionCommands)],
});
const writeUrls = cluster.urls.filter((_, id) => id !== VICTIM);
const steadyOps: number[] = [];
const duringOps: number[] = [];
const snapshotSeconds: number[] = [];
const snapshotMbPerSecond: number[] = [];
const returnToReadySeconds: number[] = [];
const returnToConvergedSeconds: number[] = [];
let snapshotBytes = 0;
try {
  await preload(cluster.urls, { keys, value: VALUE });
  console.log("preloaded");
  for (let run = 1; run <= runs; run++) {
    let load = writers(writeUrls, { connections, keys, value: VALUE });
    await sleep(1000);
    let before = load.acknowledged;
    let started = performance.now();
    await sleep(windowSeconds * 1000);
    const steady = (load.acknowledged - before) / ((performance.now() - started) / 1000);
    await load.stop();
    steadyOps.push(steady);

    load = writers(writeUrls, { connections, keys, value: VALUE });
    await sleep(1000);
    before = load.acknowledged;
    started = performance.now();
    const bytes = await streamSnapshot(cluster.urls[0]!, cluster.secret);
    const seconds = (performance.now() - started) / 1000;
    const during = (load.acknowledged - before) / seconds;
    snapshotBytes = bytes;
    snapshotSeconds.push(seconds);
    snapshotMbPerSecond.push(bytes / 1e6 / seconds);
    duringOps.push(during);

    // The writers go on while replica 2 is down, past the retention bound.
    await cluster.kill(VICTIM, "SIGKILL");
    await waitUntil(
      async () =>
        (await Promise.all(writeUrls.map(status))).every((body) =>
          body?.retention.prunedPast.includes(VICTIM) ?? false
        ),
      { deadlineMs: 120_000, what: `the peers to prune past replica ${VICTIM}` },
    );
    const restarted = performance.now();
    await cluster.start(VICTIM);
    const victimUrl = cluster.urls[VICTIM]!;
    await waitUntil(
      async () =>
        // A restarted process counts its installs from zero.
        ((await status(victimUrl))?.retention.snapshotsInstalled ?? 0) > 0 &&
        await answers(`${victimUrl}/readyz`),
      { deadlineMs: 300_000, intervalMs: 20, what: `replica ${VICTIM} to install a snapshot` },
    );
    const toReady = (performance.now() - restarted) / 1000;
    await load.stop();
    await waitUntil(
      async () => {
        const all = await Promise.all(cluster.urls.map(status));
        return all.every((body) => body !== undefined) &&
          new Set(all.map((body) => body!.stateDigest)).size === 1;
      },
      { deadlineMs: 120_000, intervalMs: 20, what: "the replicas to converge" },
    );
    const toConverged = (performance.now() - restarted) / 1000;
    // Where the time went, from the returning replica's own log.
    for (const line of cluster.output(VICTIM).split("\n")) {
      if (/snapshot|loaded|listening/.test(line)) {
        console.log(`  replica ${VICTIM}: ${line.trim()}`);
      }
    }
    returnToReadySeconds.push(toReady);
    returnToConvergedSeconds.push(toConverged);
    console.log(
      `run ${run}: steady ${steady.toFixed(0)} writes/s; snapshot ${(bytes / 1e6).toFixed(1)} MB ` +
        `in ${seconds.toFixed(2)} s (${(bytes / 1e6 / seconds).toFixed(1)} MB/s), ` +
        `${during.toFixed(0)} writes/s meanwhile (${(during / steady * 100).toFixed(0)} %); ` +
        `replica ${VICTIM} pruned past, back and ready ${toReady.toFixed(2)} s after its start, ` +
        `converged ${toConverged.toFixed(2)} s`,
    );
  }
} finally {
  await cluster.stop();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

const report = {
  keys,
  retention_commands: retentionCommands,
  runs,
  connections,
  window_s: windowSeconds,
  snapshot_bytes: snapshotBytes,
  snapshot_s: Number(median(snapshotSeconds).toFixed(3)),
  snapshot_mb_per_s: Number(median(snapshotMbPerSecond).toFixed(2)),
  steady_writes_per_s: Math.round(median(steadyOps)),
  writes_per_s_during_snapshot: Math.round(median(duringOps)),
  throughput_fraction_during_snapshot: Number(
    median(duringOps.map((during, i) => during / steadyOps[i]!)).toFixed(3),
  ),
  return_to_ready_s: Number(median(returnToReadySeconds).toFixed(2)),
  return_to_converged_s: Number(median(returnToConvergedSeconds).toFixed(2)),
  runs_detail: steadyOps.map((steady, i) => ({
    steady_writes_per_s: Math.round(steady),
    writes_per_s_during_snapshot: Math.round(duringOps[i]!),
    fraction: Number((duringOps[i]! / steady).toFixed(3)),
    snapshot_s: Number(snapshotSeconds[i]!.toFixed(3)),
    return_to_ready_s: Number(returnToReadySeconds[i]!.toFixed(2)),
  })),
};
console.log(`
| keys | snapshot MB | s | MB/s | steady writes/s | during | fraction | back to ready s | converged s |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${keys} | ${
  (snapshotBytes / 1e6).toFixed(1)
} | ${report.snapshot_s} | ${report.snapshot_mb_per_s} | ${report.steady_writes_per_s} | ${report.writes_per_s_during_snapshot} | ${report.throughput_fraction_during_snapshot} | ${report.return_to_ready_s} | ${report.return_to_converged_s} |
`);
if (out !== undefined) await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
