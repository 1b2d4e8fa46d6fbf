/**
 * Command-line options and workload definitions of `deno task bench:throughput`.
 *
 * @module
 */

import { integerOption, option, parseArgs, UsageError } from "../../src/cli/args.ts";

/** The workloads, in the order a run measures them. */
export const WORKLOAD_NAMES = ["uniform-writes", "mixed", "hot-key"] as const;

/** A workload's name. */
export type WorkloadName = typeof WORKLOAD_NAMES[number];

/** What a workload sends. */
export interface Workload {
  /** The workload's name. */
  readonly name: WorkloadName;
  /**
   * Three ASCII bytes every key starts with; six decimal digits follow (the
   * key's index). Three bytes keep a key's base64 a concatenation of
   * per-group encodings, which the Lua script looks up instead of computing.
   */
  readonly keyPrefix: string;
  /** Keys drawn uniformly from indices `[0, keyCount)`. */
  readonly keyCount: number;
  /** Percentage of requests that read (the rest write). */
  readonly readPercent: number;
}

/** Every value written is this many bytes. */
export const VALUE_BYTES = 64;

/** The largest key space the six-digit key format allows. */
export const MAX_KEYS = 1_000_000;

/** The workload named `name` over a key space of `keys` keys. */
export function workload(name: WorkloadName, keys: number): Workload {
  switch (name) {
    case "uniform-writes":
      return { name, keyPrefix: "kv-", keyCount: keys, readPercent: 0 };
    case "mixed":
      return { name, keyPrefix: "kv-", keyCount: keys, readPercent: 50 };
    case "hot-key":
      return { name, keyPrefix: "hot", keyCount: 1, readPercent: 0 };
  }
}

/** The key with index `index` of a workload (`kv-000042`). */
export function keyName(prefix: string, index: number): string {
  return `${prefix}${String(index).padStart(6, "0")}`;
}

/** Settings of a run. */
export interface ThroughputOptions {
  /** EPaxos replicas (3, 5 or 7); etcd always runs three members. */
  readonly replicas: number;
  /** Seconds each workload is measured. */
  readonly durationS: number;
  /** Seconds of load before each measurement, whose numbers are discarded (0: none). */
  readonly warmupS: number;
  /** Concurrent connections of the load generator. */
  readonly connections: number;
  /** Workloads to run, in order. */
  readonly workloads: readonly WorkloadName[];
  /** Keys of the uniform workloads (100,000 by the issue). */
  readonly keys: number;
  /** Whether to leave etcd out. */
  readonly skipEtcd: boolean;
  /**
   * Whether to run a second epaxos-kv cluster over TLS beside the plain one,
   * interleaved with it, and report TLS ops/s over plain ops/s.
   */
  readonly tls: boolean;
  /** Whether to skip writing every key before the first workload. */
  readonly skipPreload: boolean;
  /** Where to write the JSON report, if anywhere. */
  readonly out?: string;
  /** Directory to put replica and etcd data in (default: the system's temporary directory). */
  readonly dataRoot?: string;
  /** Seeds the load generator's key choice. */
  readonly seed: number;
  /** wrk's per-request timeout in seconds; slower answers count as timeouts. */
  readonly timeoutS: number;
  /** Directory for a V8 CPU profile of every replica (`deno run --cpu-prof`), written when they stop. */
  readonly cpuProfDir?: string;
  /** Measured runs of each system and workload, interleaved; the report gives their medians. */
  readonly runs: number;
  /** gRPC connections the etcd load generator shares among its `connections` clients. */
  readonly grpcConnections: number;
  /**
   * Quorum leases on every key to every replica (`all`, what `deno task
   * start` runs: linearizable reads are served locally) or none (every read
   * is a command).
   */
  readonly leases: "all" | "none";
}

/**
 * gRPC connections for `clients` clients by default: one per ten, as etcd's
 * performance guide runs its benchmark tool (1,000 clients over 100 connections).
 */
export function defaultGrpcConnections(clients: number): number {
  return Math.max(1, Math.round(clients / 10));
}

/** The usage line. */
export const USAGE =
  `usage: deno task bench:throughput [--replicas 3|5|7] [--duration S] [--warmup S] [--connections C]
       [--workloads ${WORKLOAD_NAMES.join(",")}] [--keys N] [--skip-etcd] [--skip-preload] [--tls]
       [--out FILE] [--data-root DIR] [--seed N] [--timeout S] [--cpu-prof DIR] [--runs N]
       [--grpc-connections N] [--leases all|none]`;

/** Parses the command line; throws {@link UsageError} with a clear message. */
export function parseThroughputArgs(argv: readonly string[]): ThroughputOptions {
  const args = parseArgs(argv, {
    options: [
      "replicas",
      "duration",
      "warmup",
      "connections",
      "workloads",
      "keys",
      "out",
      "data-root",
      "seed",
      "timeout",
      "cpu-prof",
      "runs",
      "grpc-connections",
      "leases",
    ],
    flags: ["skip-etcd", "skip-preload", "tls"],
  });
  if (args.positional.length > 0) throw new UsageError(`Unexpected argument ${args.positional[0]}`);
  const replicas = integerOption(args, "replicas", { min: 3, max: 7, fallback: 3 })!;
  if (replicas % 2 === 0) throw new UsageError(`--replicas must be 3, 5 or 7, got ${replicas}`);
  const connections = integerOption(args, "connections", { min: 1, max: 10_000, fallback: 256 })!;
  // wrk runs one thread per replica (and per etcd member) and needs at least
  // one connection per thread.
  const threads = Math.max(replicas, 3);
  if (connections < threads) {
    throw new UsageError(
      `--connections must be at least ${threads} (one per load-generator thread), got ${connections}`,
    );
  }
  const workloadsText = option(args, "workloads", WORKLOAD_NAMES.join(","))!;
  const workloads: WorkloadName[] = [];
  for (const name of workloadsText.split(",").map((part) => part.trim())) {
    if (!(WORKLOAD_NAMES as readonly string[]).includes(name)) {
      throw new UsageError(
        `Unknown workload ${JSON.stringify(name)}: choose from ${WORKLOAD_NAMES.join(", ")}`,
      );
    }
    if (workloads.includes(name as WorkloadName)) {
      throw new UsageError(`Workload ${name} named twice`);
    }
    workloads.push(name as WorkloadName);
  }
  const leases = option(args, "leases", "all")!;
  if (leases !== "all" && leases !== "none") {
    throw new UsageError(`--leases must be all or none, got ${leases}`);
  }
  const out = option(args, "out");
  const dataRoot = option(args, "data-root");
  const cpuProfDir = option(args, "cpu-prof");
  return {
    replicas,
    durationS: integerOption(args, "duration", { min: 1, max: 3600, fallback: 20 })!,
    warmupS: integerOption(args, "warmup", { min: 0, max: 600, fallback: 3 })!,
    connections,
    workloads,
    keys: integerOption(args, "keys", { min: 1, max: MAX_KEYS, fallback: 100_000 })!,
    skipEtcd: args.flags.has("skip-etcd"),
    tls: args.flags.has("tls"),
    leases,
    skipPreload: args.flags.has("skip-preload"),
    seed: integerOption(args, "seed", { min: 0, max: 2 ** 31, fallback: 1 })!,
    timeoutS: integerOption(args, "timeout", { min: 1, max: 60, fallback: 10 })!,
    runs: integerOption(args, "runs", { min: 1, max: 20, fallback: 3 })!,
    grpcConnections: integerOption(args, "grpc-connections", {
      min: 1,
      max: connections,
      fallback: defaultGrpcConnections(connections),
    })!,
    ...(out === undefined ? {} : { out }),
    ...(dataRoot === undefined ? {} : { dataRoot }),
    ...(cpuProfDir === undefined ? {} : { cpuProfDir }),
  };
}
