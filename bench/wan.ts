/**
 * `deno task bench:wan [--matrix FILE] [--conflict PCT] [--reads PCT]
 * [--leases all|none] [--ops N] [--clients K] [--kill REGION] [--out FILE]`:
 * wide-area latency against the physical floor.
 *
 * One replica process per region of the round-trip matrix, with every directed
 * link delayed by RTT/2 (`--emulate-wan`), and K closed-loop clients co-located
 * with each replica (0 ms to it). Each client writes its own keys, except that
 * with probability `--conflict` % an operation touches one key shared by every
 * region. With probability `--reads` % (default 0) an operation is a
 * linearizable GET of that key instead of a blind PUT (answered at commit once
 * the decision is durable, README "HTTP API"). `--leases all` runs the cluster
 * with quorum leases on every key to every replica (`none`, the default: no
 * leases), so reads are served locally.
 *
 * Per region it reports p50 and p99 latency, the fast-path ratio of the
 * commands that replica coordinated, the fast-path floor (round trip to the
 * farthest member of the nearest fast quorum), the slow-path floor and the best
 * leader-based latency, as a Markdown table and as JSON (`--out`):
 * `{"regions": [{region, p50_ms, p99_ms, floor_ms, slow_floor_ms, leader_ms,
 * fast_path_ratio, read_p50_ms, read_p99_ms, reads, local_read_ratio}],
 * conflict_pct, reads_pct, leases, matrix}`. `p50_ms` and `p99_ms` are the
 * writes'; `floor_ms` with leases is the larger of the fast-path floor and the
 * round trip to the farthest holder (every other region).
 *
 * With `--kill REGION`, that region's replica is killed before the run and
 * floors are recomputed without it.
 *
 * Replicas persist in Deno KV under `--data-root` (default: the system's
 * temporary directory), fsync included. Every region here shares this
 * machine's one disk, so one replica's WAL checkpoint stalls every other
 * replica's fsync at once, a correlation no real multi-region deployment has.
 * `--volatile-storage` keeps records in memory instead, which isolates the
 * protocol and the network from the disk (the report says which was used).
 *
 * @module
 */

import { integerOption, option, parseArgs, UsageError } from "../src/cli/args.ts";
import { startProcessCluster, waitUntil } from "../src/chaos/process_cluster.ts";
import { SeededRandom } from "../src/runtime/random.ts";
import {
  fastFloor,
  leaderLatencies,
  loadRttMatrix,
  type RttMatrix,
  slowFloor,
} from "../src/wan/matrix.ts";

/** One region's results. */
export interface RegionResult {
  readonly region: string;
  readonly p50_ms: number;
  readonly p99_ms: number;
  readonly floor_ms: number;
  readonly slow_floor_ms: number;
  readonly leader_ms: number;
  readonly fast_path_ratio: number | null;
  readonly operations: number;
  /**
   * Median time from proposing to deciding an instance at this replica (its
   * \`/status\`, last 1024 instances): what the commit protocol alone costs,
   * before execution waits for dependencies.
   */
  readonly commit_p50_ms: number | null;
  /** Median and 99th percentile of the region's linearizable GETs (null without reads). */
  readonly read_p50_ms: number | null;
  readonly read_p99_ms: number | null;
  /** GETs measured. */
  readonly reads: number;
  /** Of the GETs the replica answered in the run, the share served locally under a lease. */
  readonly local_read_ratio: number | null;
  /** Local reads that were held for a pending write to their key first. */
  readonly held_reads: number;
}

/** A run's results. */
export interface WanReport {
  readonly regions: readonly RegionResult[];
  /** `deno-kv` (fsync'd) or `volatile`. */
  readonly storage: "deno-kv" | "volatile";
  readonly conflict_pct: number;
  readonly reads_pct: number;
  readonly leases: "all" | "none";
  readonly matrix: RttMatrix;
  readonly killed: string | null;
}

/** Settings of a run. */
export interface WanOptions {
  readonly matrixPath: string;
  readonly conflictPct: number;
  /** Share of operations that are GETs (%). */
  readonly readsPct?: number;
  /** Quorum leases on every key to every replica, or none. */
  readonly leases?: "all" | "none";
  readonly opsPerRegion: number;
  readonly clientsPerRegion: number;
  readonly kill?: string;
  readonly seed?: number;
  /** Replicas keep their records in memory instead of Deno KV (isolates the disk). */
  readonly volatileStorage?: boolean;
  /** Where replica data goes (see the module documentation). */
  readonly dataRoot?: string;
  readonly log?: (line: string) => void;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

async function replicaStatus(
  url: string,
): Promise<
  {
    commits: { fast: number; slow: number };
    commitP50Ms: number | null;
    localReads: number;
    heldReads: number;
    fallbacks: number;
  }
> {
  const status = await (await fetch(`${url}/status`, { signal: AbortSignal.timeout(5000) })).json();
  const reads = status.leases?.reads;
  const fallbacks = reads === undefined
    ? 0
    : Object.values(reads.fallbacks as Record<string, number>).reduce((a, b) => a + b, 0);
  return {
    commits: status.commits,
    commitP50Ms: status.latencyMs?.commit?.p50 ?? null,
    localReads: reads?.localReads ?? 0,
    heldReads: reads?.heldReads ?? 0,
    fallbacks,
  };
}

/** Runs the benchmark once. */
export async function runWan(options: WanOptions): Promise<WanReport> {
  const log = options.log ?? (() => {});
  const matrixPath = await Deno.realPath(options.matrixPath);
  const matrix = await loadRttMatrix(matrixPath);
  const n = matrix.regions.length;
  const killed = options.kill === undefined ? undefined : matrix.regions.indexOf(options.kill);
  if (killed === -1) throw new UsageError(`No region ${options.kill} in ${options.matrixPath}`);
  const dead = new Set(killed === undefined ? [] : [killed]);
  const leases = options.leases ?? "none";
  const cluster = await startProcessCluster(n, {
    leases,
    extraArgs: [
      "--emulate-wan",
      matrixPath,
      ...(options.volatileStorage ? ["--volatile-storage"] : []),
    ],
    readFiles: [matrixPath],
    ...(options.dataRoot === undefined ? {} : { parentDir: options.dataRoot }),
  });
  try {
    if (killed !== undefined) {
      log(`killing ${matrix.regions[killed]}`);
      await cluster.kill(killed, "SIGKILL");
    }
    const live = [...Array(n).keys()].filter((region) => !dead.has(region));
    // Let every replica measure its round trips before measuring anything.
    await waitUntil(async () => {
      for (const region of live) {
        const status = await (await fetch(`${cluster.urls[region]}/status`)).json();
        for (const peer of status.peers) {
          if (dead.has(peer.id)) continue;
          const expected = matrix.rtt_ms[region]![peer.id]!;
          if (
            peer.roundTripMs === null || Math.abs(peer.roundTripMs - expected) > expected * 0.25 + 5
          ) {
            return false;
          }
        }
      }
      return true;
    }, { deadlineMs: 30_000, what: "round trips to be measured", intervalMs: 200 });
    log("round trips measured");
    const random = new SeededRandom(options.seed ?? 1);
    const latencies: number[][] = Array.from({ length: n }, () => []);
    const readLatencies: number[][] = Array.from({ length: n }, () => []);
    const readsPct = options.readsPct ?? 0;
    const runClients = async (opsPerRegion: number, record: boolean) => {
      const clients: Promise<void>[] = [];
      for (const region of live) {
        let remaining = opsPerRegion;
        for (let client = 0; client < options.clientsPerRegion; client++) {
          const stream = random.fork();
          clients.push((async () => {
            let i = 0;
            while (remaining > 0) {
              remaining--;
              const shared = stream.next() * 100 < options.conflictPct;
              const isRead = stream.next() * 100 < readsPct;
              const key = shared ? "wan-shared" : `wan-${region}-${client}-${i++ % 8}`;
              const started = performance.now();
              const response = await fetch(`${cluster.urls[region]}/kv/${key}`, {
                method: isRead ? "GET" : "PUT",
                ...(isRead ? {} : { body: `${region}.${client}.${i}` }),
                signal: AbortSignal.timeout(20_000),
              });
              await response.arrayBuffer();
              // A GET of a key not written yet is a 404: an answer like any other.
              if (!response.ok && !(isRead && response.status === 404)) {
                throw new Error(
                  `${isRead ? "GET" : "PUT"} ${key} at ${
                    matrix.regions[region]
                  }: ${response.status}`,
                );
              }
              if (record) {
                (isRead ? readLatencies : latencies)[region]!.push(performance.now() - started);
              }
            }
          })());
        }
      }
      await Promise.all(clients);
    };
    await runClients(Math.max(20, Math.floor(options.opsPerRegion / 10)), false);
    const before = await Promise.all(live.map((region) => replicaStatus(cluster.urls[region]!)));
    await runClients(options.opsPerRegion, true);
    const after = await Promise.all(live.map((region) => replicaStatus(cluster.urls[region]!)));
    const leader = leaderLatencies(matrix, dead);
    const regions: RegionResult[] = live.map((region, index) => {
      const sorted = [...latencies[region]!].sort((a, b) => a - b);
      const reads = [...readLatencies[region]!].sort((a, b) => a - b);
      const fast = after[index]!.commits.fast - before[index]!.commits.fast;
      const slow = after[index]!.commits.slow - before[index]!.commits.slow;
      const local = after[index]!.localReads - before[index]!.localReads;
      const fallbacks = after[index]!.fallbacks - before[index]!.fallbacks;
      // With leases on every key, a write also waits for the farthest live holder.
      const holderFloor = leases === "all"
        ? Math.max(
          ...live.filter((peer) => peer !== region).map((peer) => matrix.rtt_ms[region]![peer]!),
        )
        : 0;
      return {
        region: matrix.regions[region]!,
        p50_ms: Number(percentile(sorted, 0.5).toFixed(1)),
        p99_ms: Number(percentile(sorted, 0.99).toFixed(1)),
        floor_ms: Math.max(fastFloor(matrix, region, dead), holderFloor),
        slow_floor_ms: Number(slowFloor(matrix, region, dead).toFixed(1)),
        leader_ms: Number(leader.latencies[region]!.toFixed(1)),
        fast_path_ratio: fast + slow === 0 ? null : Number((fast / (fast + slow)).toFixed(4)),
        operations: sorted.length,
        commit_p50_ms: after[index]!.commitP50Ms,
        read_p50_ms: reads.length === 0 ? null : Number(percentile(reads, 0.5).toFixed(2)),
        read_p99_ms: reads.length === 0 ? null : Number(percentile(reads, 0.99).toFixed(2)),
        reads: reads.length,
        held_reads: after[index]!.heldReads - before[index]!.heldReads,
        local_read_ratio: local + fallbacks === 0
          ? null
          : Number((local / (local + fallbacks)).toFixed(4)),
      };
    });
    return {
      regions,
      storage: options.volatileStorage ? "volatile" : "deno-kv",
      conflict_pct: options.conflictPct,
      reads_pct: readsPct,
      leases,
      matrix,
      killed: killed === undefined ? null : matrix.regions[killed]!,
    };
  } finally {
    await cluster.stop();
  }
}

/** Renders a report as a Markdown table with ratios to the floors. */
export function wanTable(report: WanReport): string {
  const rows = report.regions.map((r) =>
    `| ${r.region} | ${r.operations} | ${r.p50_ms} | ${r.p99_ms} | ${r.floor_ms} | ${
      (r.p50_ms / r.floor_ms).toFixed(3)
    } | ${r.slow_floor_ms} | ${(r.p50_ms / r.slow_floor_ms).toFixed(3)} | ${r.leader_ms} | ${
      r.fast_path_ratio === null ? "-" : (r.fast_path_ratio * 100).toFixed(1) + "%"
    } | ${r.commit_p50_ms ?? "-"} | ${r.reads} | ${r.read_p50_ms ?? "-"} | ${
      r.read_p99_ms ?? "-"
    } | ${r.local_read_ratio === null ? "-" : (r.local_read_ratio * 100).toFixed(1) + "%"} |`
  );
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  return [
    `conflict ${report.conflict_pct}%, reads ${report.reads_pct}%, leases ${report.leases}, storage ${report.storage}${
      report.killed === null ? "" : `, ${report.killed} killed`
    }`,
    "",
    "| region | writes | p50 ms | p99 ms | floor ms | p50/floor | slow floor ms | p50/slow | leader ms | fast path | commit p50 ms | reads | read p50 ms | read p99 ms | local reads |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows,
    `| mean | | ${mean(report.regions.map((r) => r.p50_ms)).toFixed(1)} | | ${
      mean(report.regions.map((r) => r.floor_ms)).toFixed(1)
    } | | | | ${mean(report.regions.map((r) => r.leader_ms)).toFixed(1)} | | | | | | |`,
  ].join("\n");
}

function leasesOption(value: string | undefined): "all" | "none" {
  if (value === undefined || value === "none") return "none";
  if (value === "all") return "all";
  console.error(`--leases must be all or none, got ${value}`);
  Deno.exit(2);
}

if (import.meta.main) {
  let args;
  try {
    args = parseArgs(Deno.args, {
      options: [
        "matrix",
        "conflict",
        "reads",
        "leases",
        "ops",
        "clients",
        "kill",
        "out",
        "seed",
        "data-root",
      ],
      flags: ["volatile-storage"],
    });
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(2);
  }
  const report = await runWan({
    matrixPath: option(args, "matrix", new URL("./wan/aws5.json", import.meta.url).pathname)!,
    conflictPct: integerOption(args, "conflict", { min: 0, max: 100, fallback: 0 })!,
    readsPct: integerOption(args, "reads", { min: 0, max: 100, fallback: 0 })!,
    leases: leasesOption(option(args, "leases")),
    opsPerRegion: integerOption(args, "ops", { min: 10, max: 1_000_000, fallback: 200 })!,
    clientsPerRegion: integerOption(args, "clients", { min: 1, max: 64, fallback: 4 })!,
    seed: integerOption(args, "seed", { min: 0, max: 2 ** 31, fallback: 1 })!,
    volatileStorage: args.flags.has("volatile-storage"),
    ...(option(args, "data-root") === undefined ? {} : { dataRoot: option(args, "data-root")! }),
    ...(option(args, "kill") === undefined ? {} : { kill: option(args, "kill")! }),
    log: (line) => console.error(line),
  });
  console.log(wanTable(report));
  const out = option(args, "out");
  if (out !== undefined) await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
}
