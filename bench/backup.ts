/**
 * `deno task bench:backup [--keys N] [--runs N] [--window S] [--connections C]
 * [--rate MBPS] [--out FILE]`: what a backup costs a live cluster and how fast it and a
 * restore go (issue 15).
 *
 * Three replica processes on Deno KV (the command line `deno task start`
 * uses) are loaded with `--keys` keys of 64-byte values. Then, `--runs` times,
 * interleaved: a window of `--window` seconds of closed-loop blind writes from
 * `--connections` clients (steady state), then the same writes while a backup
 * is taken with the admin CLI (`deno task admin backup`, `--rate` passed on;
 * the replica's default rate otherwise). It reports the
 * backup's time and MB/s, and the write throughput during the backup as a
 * fraction of the steady window's in the same run (medians over runs). Finally a new cluster is started
 * from the last backup with `--restore`, and the time until every replica
 * serves the backed-up state (its state digest) is reported.
 *
 * The writers run in this process (Deno's fetch), on the same two cores as
 * the replicas, in both kinds of window alike.
 *
 * @module
 */

import type { BackupSummary } from "../src/cli/admin_backup.ts";
import { adminProcessArgs } from "../src/cli/admin.ts";
import { integerOption, option, parseArgs } from "../src/cli/args.ts";
import { startProcessCluster, waitUntil } from "../src/chaos/process_cluster.ts";
import { preload, writers } from "./cluster_load.ts";
import { median as medianOrNull } from "./throughput/runs.ts";

const args = parseArgs(Deno.args, {
  options: ["keys", "runs", "window", "connections", "out", "rate"],
});
const keys = integerOption(args, "keys", { min: 100, max: 1_000_000, fallback: 100_000 })!;
const runs = integerOption(args, "runs", { min: 1, max: 20, fallback: 3 })!;
const windowSeconds = integerOption(args, "window", { min: 2, max: 120, fallback: 8 })!;
const connections = integerOption(args, "connections", { min: 1, max: 512, fallback: 64 })!;
const out = option(args, "out");
const rate = integerOption(args, "rate", { min: 1, max: 1000 });

/** Takes a backup as an operator does: `deno task admin backup`, its own process. */
async function backup(server: string, file: string, secret: string): Promise<BackupSummary> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: adminProcessArgs([
      "--server",
      server,
      "backup",
      "--out",
      file,
      ...(rate === undefined ? [] : ["--rate", String(rate)]),
    ]),
    env: { EPAXOS_CLUSTER_SECRET: secret },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

const VALUE = "v".repeat(64);

/** The median of `values`, which are never empty here (runs ≥ 1). */
function median(values: readonly number[]): number {
  return medianOrNull(values)!;
}

async function digests(urls: readonly string[]): Promise<string[]> {
  return await Promise.all(urls.map(async (url) => {
    try {
      const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(3000) });
      return (await response.json()).stateDigest as string;
    } catch {
      return "unreachable";
    }
  }));
}

const work = await Deno.makeTempDir({ prefix: "epaxos-bench-backup-" });
const file = `${work}/backup.jsonl`;
console.log(`starting 3 replicas; preloading ${keys} keys of 64 bytes`);
const source = await startProcessCluster(3, { parentDir: work });
const steadyOps: number[] = [];
const duringOps: number[] = [];
const backupSeconds: number[] = [];
const backupMbPerSecond: number[] = [];
let backupBytes = 0;
let stateDigest = "";
try {
  const preloadStarted = performance.now();
  await preload(source.urls, { keys, value: VALUE });
  const preloadSeconds = (performance.now() - preloadStarted) / 1000;
  console.log(`preloaded in ${preloadSeconds.toFixed(1)} s`);
  for (let run = 1; run <= runs; run++) {
    // Steady state: the same writers, no backup.
    let load = writers(source.urls, { connections, keys, value: VALUE });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const before = load.acknowledged;
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, windowSeconds * 1000));
    const steady = (load.acknowledged - before) / ((performance.now() - started) / 1000);
    await load.stop();
    steadyOps.push(steady);
    // The same writers while a backup is taken.
    load = writers(source.urls, { connections, keys, value: VALUE });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const atStart = load.acknowledged;
    const backupStarted = performance.now();
    const summary = await backup(source.urls[run % 3]!, file, source.secret);
    const seconds = (performance.now() - backupStarted) / 1000;
    const during = (load.acknowledged - atStart) / seconds;
    await load.stop();
    duringOps.push(during);
    backupSeconds.push(seconds);
    backupMbPerSecond.push(summary.bytes / 1e6 / seconds);
    backupBytes = summary.bytes;
    stateDigest = summary.stateDigest;
    console.log(
      `run ${run}: steady ${steady.toFixed(0)} writes/s; backup of ${summary.keys} keys, ` +
        `${(summary.bytes / 1e6).toFixed(1)} MB in ${seconds.toFixed(2)} s ` +
        `(${(summary.bytes / 1e6 / seconds).toFixed(1)} MB/s), ${during.toFixed(0)} writes/s ` +
        `meanwhile (${(during / steady * 100).toFixed(0)} %)`,
    );
  }
} finally {
  await source.stop();
}

console.log("restoring the last backup into a new cluster of 3");
const restoreStarted = performance.now();
const restored = await startProcessCluster(3, {
  parentDir: work,
  extraArgs: ["--restore", file],
  readFiles: [file],
});
let restoreSeconds: number;
try {
  await waitUntil(async () => (await digests(restored.urls)).every((d) => d === stateDigest), {
    deadlineMs: 120_000,
    what: "the restored cluster to hold the backup's state",
  });
  restoreSeconds = (performance.now() - restoreStarted) / 1000;
} finally {
  await restored.stop();
  await Deno.remove(work, { recursive: true });
}

const report = {
  keys,
  rate_mb_per_s: rate ?? "default (4)",
  runs,
  connections,
  window_s: windowSeconds,
  backup_bytes: backupBytes,
  backup_s: Number(median(backupSeconds).toFixed(3)),
  backup_mb_per_s: Number(median(backupMbPerSecond).toFixed(2)),
  steady_writes_per_s: Math.round(median(steadyOps)),
  writes_per_s_during_backup: Math.round(median(duringOps)),
  // The median of each run's own fraction (a ratio of medians would mix runs).
  throughput_fraction_during_backup: Number(
    median(duringOps.map((during, i) => during / steadyOps[i]!)).toFixed(3),
  ),
  restore_to_serving_s: Number(restoreSeconds.toFixed(2)),
  runs_detail: backupSeconds.map((seconds, i) => ({
    steady_writes_per_s: Math.round(steadyOps[i]!),
    writes_per_s_during_backup: Math.round(duringOps[i]!),
    backup_s: Number(seconds.toFixed(3)),
    fraction: Number((duringOps[i]! / steadyOps[i]!).toFixed(3)),
  })),
};
console.log(`
| keys | backup MB | backup s | MB/s | steady writes/s | writes/s during backup | fraction | restore to serving s |
|---:|---:|---:|---:|---:|---:|---:|---:|
| ${keys} | ${
  (backupBytes / 1e6).toFixed(1)
} | ${report.backup_s} | ${report.backup_mb_per_s} | ${report.steady_writes_per_s} | ${report.writes_per_s_during_backup} | ${report.throughput_fraction_during_backup} | ${report.restore_to_serving_s} |
`);
if (out !== undefined) await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
