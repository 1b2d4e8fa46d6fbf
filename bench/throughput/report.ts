/**
 * Results of `deno task bench:throughput`: one system's run summarized from
 * its load generator's numbers (wrk's, or `etcd_load`'s in the same shape),
 * workloads merged side by side with ratios, the Markdown tables, and the
 * read-back check that makes a broken store fail loudly.
 *
 * @module
 */

import { valueTag, type WrkErrors } from "./lua.ts";
import type { ThreadGroup } from "./threads.ts";
import type { WrkRunResult } from "./wrk.ts";

/** One system's measured run of one workload. */
export interface SystemRun {
  /** Successful operations per second (answers with status below 400). */
  readonly ops_per_s: number;
  /** Completed requests, error statuses included. */
  readonly requests: number;
  /** Measured seconds. */
  readonly duration_s: number;
  /** All errors: socket errors, error statuses and timeouts. */
  readonly errors: number;
  /** wrk's error counts. */
  readonly error_detail: WrkErrors;
  /** Latency percentiles in milliseconds (null when nothing completed). */
  readonly p50_ms: number | null;
  readonly p90_ms: number | null;
  readonly p99_ms: number | null;
  readonly p999_ms: number | null;
  readonly mean_ms: number | null;
  readonly max_ms: number | null;
  /** Reads and writes the load generator sent. */
  readonly sent_reads: number;
  readonly sent_writes: number;
  /** Connections wrk opened; clients (one request outstanding each) of `etcd_load`. */
  readonly connections: number;
  /** wrk threads; gRPC connections of `etcd_load`. */
  readonly threads: number;
  /** The load generator's CPU use (wrk's or `etcd_load`'s), in percent of one core. */
  readonly wrk_cpu_pct: number;
  /** etcd through gRPC only: the gRPC connections its clients shared. */
  readonly grpc_connections?: number;
  /** Busy share of all the machine's cores during the run, in percent. */
  readonly machine_cpu_pct: number | null;
  /** EPaxos only: share of the instances committed on the fast path during the run. */
  readonly fast_path_ratio?: number | null;
  /** CPU use of the server processes together, in percent of one core (`threads.ts`). */
  readonly server_cpu_pct?: number;
  /** Server CPU microseconds per successful operation. */
  readonly server_cpu_us_per_op?: number | null;
  /** Mean CPU use of one server process by thread group, in percent of one core. */
  readonly server_process_cpu_pct?: Readonly<Record<ThreadGroup, number>>;
}

function round(value: number, digits: number): number {
  return Number(value.toFixed(digits));
}

function ms(microseconds: number | undefined): number | null {
  return microseconds === undefined ? null : round(microseconds / 1000, 2);
}

/** Summarizes a wrk run. */
export function summarizeRun(result: WrkRunResult): SystemRun {
  const durationS = result.duration_us / 1e6;
  const { errors } = result;
  const ok = Math.max(0, result.requests - errors.status);
  return {
    ops_per_s: durationS > 0 ? round(ok / durationS, 1) : 0,
    requests: result.requests,
    duration_s: round(durationS, 3),
    errors: errors.connect + errors.read + errors.write + errors.status + errors.timeout,
    error_detail: errors,
    p50_ms: ms(result.latency_us?.p50),
    p90_ms: ms(result.latency_us?.p90),
    p99_ms: ms(result.latency_us?.p99),
    p999_ms: ms(result.latency_us?.p999),
    mean_ms: ms(result.latency_us?.mean),
    max_ms: ms(result.latency_us?.max),
    sent_reads: result.sent_reads,
    sent_writes: result.sent_writes,
    connections: result.connections,
    threads: result.threads,
    wrk_cpu_pct: durationS > 0 ? round(result.cpu_s / durationS * 100, 1) : 0,
    machine_cpu_pct: result.machine_cpu_pct === null ? null : round(result.machine_cpu_pct, 1),
  };
}

/** The measured runs of one workload, by side, in the order they ran. */
export interface WorkloadRuns {
  readonly epaxos: readonly SystemRun[];
  /** etcd through its native gRPC API (`etcd_load`). */
  readonly etcd: readonly SystemRun[];
  /** etcd through its JSON gateway (wrk). */
  readonly etcd_gateway: readonly SystemRun[];
  /** epaxos-kv over TLS (`--tls`), a second cluster beside the plain one. */
  readonly epaxos_tls?: readonly SystemRun[];
}

/** A column of the report: epaxos-kv, etcd through gRPC, etcd through its gateway, epaxos-kv over TLS. */
export type Side = keyof WorkloadRuns;

/**
 * One workload, the systems side by side (the issue's fields first). `etcd`
 * is etcd through its native gRPC API, `etcd_gateway` the same cluster
 * through its JSON gateway. With several runs each figure is the median over
 * them (`runs.ts`), and the ratios are of medians.
 */
export interface WorkloadReport {
  readonly name: string;
  readonly epaxos_ops_per_s: number;
  readonly etcd_ops_per_s: number | null;
  readonly epaxos_p99_ms: number | null;
  readonly etcd_p99_ms: number | null;
  /** EPaxos ops/s over etcd's (gRPC) ops/s. */
  readonly ratio: number | null;
  readonly etcd_gateway_ops_per_s: number | null;
  readonly etcd_gateway_p99_ms: number | null;
  /** EPaxos ops/s over etcd's ops/s through the gateway. */
  readonly gateway_ratio: number | null;
  readonly epaxos_p50_ms: number | null;
  readonly epaxos_p999_ms: number | null;
  readonly etcd_p50_ms: number | null;
  readonly etcd_p999_ms: number | null;
  readonly etcd_gateway_p50_ms: number | null;
  readonly etcd_gateway_p999_ms: number | null;
  readonly epaxos_errors: number;
  readonly etcd_errors: number | null;
  readonly etcd_gateway_errors: number | null;
  /** Each run's ops/s, in the order they ran (present when merged from runs). */
  readonly epaxos_ops_per_s_runs?: readonly number[];
  readonly etcd_ops_per_s_runs?: readonly number[];
  readonly etcd_gateway_ops_per_s_runs?: readonly number[];
  /** The full numbers of each system (with several runs, see `medianRun`). */
  readonly epaxos: SystemRun;
  readonly etcd: SystemRun | null;
  readonly etcd_gateway: SystemRun | null;
  /** Every run's full numbers (present when merged from runs). */
  readonly runs?: WorkloadRuns;
  /** With `--tls`: epaxos-kv over TLS, its median run and each run's ops/s. */
  readonly epaxos_tls?: SystemRun;
  readonly epaxos_tls_ops_per_s?: number;
  readonly epaxos_tls_ops_per_s_runs?: readonly number[];
  /** Ops/s over TLS divided by ops/s without (medians). */
  readonly tls_ratio?: number | null;
}

function ratioOf(numerator: number, denominator: SystemRun | null): number | null {
  return denominator === null || denominator.ops_per_s === 0
    ? null
    : round(numerator / denominator.ops_per_s, 3);
}

/** Merges one workload's numbers, one run (or one median) per system. */
export function mergeWorkload(
  name: string,
  epaxos: SystemRun,
  etcd: SystemRun | null,
  etcdGateway: SystemRun | null = null,
): WorkloadReport {
  return {
    name,
    epaxos_ops_per_s: epaxos.ops_per_s,
    etcd_ops_per_s: etcd?.ops_per_s ?? null,
    epaxos_p99_ms: epaxos.p99_ms,
    etcd_p99_ms: etcd?.p99_ms ?? null,
    ratio: ratioOf(epaxos.ops_per_s, etcd),
    etcd_gateway_ops_per_s: etcdGateway?.ops_per_s ?? null,
    etcd_gateway_p99_ms: etcdGateway?.p99_ms ?? null,
    gateway_ratio: ratioOf(epaxos.ops_per_s, etcdGateway),
    epaxos_p50_ms: epaxos.p50_ms,
    epaxos_p999_ms: epaxos.p999_ms,
    etcd_p50_ms: etcd?.p50_ms ?? null,
    etcd_p999_ms: etcd?.p999_ms ?? null,
    etcd_gateway_p50_ms: etcdGateway?.p50_ms ?? null,
    etcd_gateway_p999_ms: etcdGateway?.p999_ms ?? null,
    epaxos_errors: epaxos.errors,
    etcd_errors: etcd?.errors ?? null,
    etcd_gateway_errors: etcdGateway?.errors ?? null,
    epaxos,
    etcd,
    etcd_gateway: etcdGateway,
  };
}

/** A whole run: the issue's fields, then context. */
export interface ThroughputReport {
  readonly workloads: readonly WorkloadReport[];
  readonly replicas: number;
  readonly connections: number;
  readonly duration_s: number;
  readonly warmup_s: number;
  readonly keys: number;
  readonly value_bytes: number;
  /** Quorum leases on every key (`all`: reads served locally) or none; absent in older reports. */
  readonly leases?: "all" | "none";
  /** Measured runs of each system and workload, interleaved; figures are their medians. */
  readonly runs?: number;
  /** The etcd cluster that ran, or why none did. */
  readonly etcd: {
    readonly version: string;
    readonly members: number;
    readonly api_prefix: string;
  } | { readonly skipped: string };
  /** etcd's gRPC load generator and how it connects, or why that path did not run. */
  readonly etcd_grpc?: {
    readonly load_generator: string;
    readonly clients: number;
    readonly grpc_connections: number;
  } | { readonly skipped: string };
  /** wrk's version line. */
  readonly wrk: string;
  /** The machine's logical CPUs, if known. */
  readonly cpus: number | null;
  /** Busy share of all cores with every cluster up and idle, in percent, if known. */
  readonly idle_machine_cpu_pct: number | null;
  readonly started_at: string;
  /** Check failures (empty when every read-back and convergence check passed). */
  readonly failures: readonly string[];
}

function num(value: number | null, digits = 0): string {
  return value === null ? "-" : value.toFixed(digits);
}

function latencies(run: SystemRun | null): string {
  if (run === null) return "-";
  return `${num(run.p50_ms, 1)} / ${num(run.p99_ms, 1)} / ${num(run.p999_ms, 1)}`;
}

/** The main table: ops/s side by side, their ratios, latencies and error counts. */
export function resultTable(report: ThroughputReport): string {
  const rows = report.workloads.map((w) =>
    `| ${w.name} | ${num(w.epaxos_ops_per_s)} | ${num(w.etcd_ops_per_s)} | ${
      w.ratio === null ? "-" : w.ratio.toFixed(2)
    } | ${latencies(w.epaxos)} | ${latencies(w.etcd)} | ${w.epaxos_errors} / ${
      w.etcd_errors ?? "-"
    } | ${num(w.etcd_gateway_ops_per_s ?? null)} | ${
      w.gateway_ratio === null || w.gateway_ratio === undefined ? "-" : w.gateway_ratio.toFixed(2)
    } | ${latencies(w.etcd_gateway ?? null)} | ${w.etcd_gateway_errors ?? "-"} |`
  );
  const etcd = "skipped" in report.etcd
    ? `etcd skipped: ${report.etcd.skipped}`
    : `etcd ${report.etcd.version}, ${report.etcd.members} members`;
  const grpc = report.etcd_grpc === undefined || "skipped" in report.etcd
    ? []
    : "skipped" in report.etcd_grpc
    ? [`etcd through gRPC skipped: ${report.etcd_grpc.skipped}; etcd through its gateway by wrk`]
    : [
      `etcd through gRPC by ${report.etcd_grpc.load_generator} (${report.etcd_grpc.clients} ` +
      `clients over ${report.etcd_grpc.grpc_connections} gRPC connections), and through its ` +
      `JSON gateway by wrk; epaxos-kv by wrk`,
    ];
  const runs = report.runs ?? 1;
  const perRun = runs < 2 ? [] : [
    "",
    `ops/s of each run, in the order they ran (interleaved):`,
    ...report.workloads.map((w) =>
      `- ${w.name}: ${
        [
          ["epaxos", w.epaxos_ops_per_s_runs],
          ["etcd", w.etcd_ops_per_s_runs],
          ["etcd gateway", w.etcd_gateway_ops_per_s_runs],
        ].filter(([, values]) => values !== undefined && values.length > 0).map(
          ([side, values]) =>
            `${side} ${(values as readonly number[]).map((value) => value.toFixed(0)).join(", ")}`,
        ).join("; ")
      }`
    ),
  ];
  return [
    `epaxos-kv ${report.replicas} replicas vs ${etcd}; ${report.connections} connections, ` +
    `${report.duration_s} s per workload, ${report.value_bytes}-byte values, ` +
    `${report.keys.toLocaleString("en-US")} keys` +
    (report.cpus === null ? "" : `; ${report.cpus} CPUs`) +
    (report.idle_machine_cpu_pct === null
      ? ""
      : `, ${report.idle_machine_cpu_pct}% busy with the clusters idle`) +
    (runs < 2 ? "" : `; medians of ${runs} interleaved runs`),
    ...grpc,
    "",
    "| workload | epaxos ops/s | etcd ops/s | ratio | epaxos p50/p99/p999 ms | etcd p50/p99/p999 ms | errors epaxos / etcd | etcd gateway ops/s | ratio to gateway | etcd gateway p50/p99/p999 ms | gateway errors |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows,
    ...perRun,
    ...tlsTable(report),
  ].join("\n");
}

/** With `--tls`: epaxos-kv over TLS against without, in the same run. */
function tlsTable(report: ThroughputReport): string[] {
  const measured = report.workloads.filter((w) => w.epaxos_tls !== undefined);
  if (measured.length === 0) return [];
  return [
    "",
    "| workload | epaxos ops/s | epaxos over TLS ops/s | TLS / plain | plain p50/p99/p999 ms | TLS p50/p99/p999 ms | TLS ops/s of each run |",
    "|---|---:|---:|---:|---:|---:|---|",
    ...measured.map((w) =>
      `| ${w.name} | ${num(w.epaxos_ops_per_s)} | ${num(w.epaxos_tls_ops_per_s ?? null)} | ${
        w.tls_ratio === null || w.tls_ratio === undefined ? "-" : w.tls_ratio.toFixed(2)
      } | ${latencies(w.epaxos)} | ${latencies(w.epaxos_tls!)} | ${
        (w.epaxos_tls_ops_per_s_runs ?? []).map((value) => value.toFixed(0)).join(", ")
      } |`
    ),
  ];
}

function errorDetail(errors: WrkErrors): string {
  const parts = Object.entries(errors).filter(([, count]) => count > 0).map(([kind, count]) =>
    `${kind} ${count}`
  );
  return parts.length === 0 ? "none" : parts.join(", ");
}

/** The server CPU cell: all servers' share of a core, per operation, and one server's by thread group. */
function serverCpu(run: SystemRun): string {
  if (run.server_cpu_pct === undefined) return "-";
  const perOp = run.server_cpu_us_per_op ?? null;
  const groups = run.server_process_cpu_pct;
  return `${num(run.server_cpu_pct)}, ${perOp === null ? "-" : num(perOp)}${
    groups === undefined
      ? ""
      : `; ${num(groups.main)} / ${num(groups.v8)} / ${num(groups.blocking)} / ${num(groups.other)}`
  }`;
}

/** The detail table: what was sent, errors by kind, CPU use, the fast-path share. */
export function detailTable(report: ThroughputReport): string {
  const rows: string[] = [];
  for (const w of report.workloads) {
    const systems = [
      ["epaxos", w.epaxos],
      ["etcd", w.etcd],
      ["etcd gateway", w.etcd_gateway ?? null],
      ["epaxos tls", w.epaxos_tls ?? null],
    ] as const;
    for (const [system, run] of systems) {
      if (run === null) continue;
      rows.push(
        `| ${w.name} | ${system} | ${run.requests} | ${run.sent_reads} / ${run.sent_writes} | ${
          errorDetail(run.error_detail)
        } | ${
          run.grpc_connections === undefined
            ? `${run.connections} / ${run.threads}`
            : `${run.connections} clients / ${run.grpc_connections} gRPC`
        } | ${num(run.wrk_cpu_pct)} | ${num(run.machine_cpu_pct)} | ${serverCpu(run)} | ${
          run.fast_path_ratio === undefined || run.fast_path_ratio === null
            ? "-"
            : `${(run.fast_path_ratio * 100).toFixed(1)}%`
        } |`,
      );
    }
  }
  return [
    "| workload | system | requests | sent reads / writes | errors | connections / threads | load generator CPU % of a core | machine CPU % | server CPU: % of a core, µs per op; per server main / v8 / blocking / other % | fast path |",
    "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ...rows,
  ].join("\n");
}

/** What a read-back sample found. */
export interface ReadbackSample {
  /** The key read. */
  readonly key: string;
  /** The value read, or null when the key was absent. */
  readonly value: string | null;
}

/**
 * Checks values read back after a workload: every value must be one the
 * benchmark writes (64 bytes, a known tag), keys must be present when they
 * were preloaded, a key read more than once must read the same, and when the
 * run wrote so much that a sample misses all its writes with probability
 * below one in a million, one must hold a value the run wrote.
 * Returns what is wrong, or null.
 */
export function checkReadback(options: {
  readonly system: string;
  readonly workload: string;
  readonly samples: readonly ReadbackSample[];
  readonly writes: number;
  readonly keyCount: number;
  readonly preloaded: boolean;
  readonly knownTags: readonly string[];
}): string | null {
  const { samples, system, workload } = options;
  const problems: string[] = [];
  let hits = 0;
  for (const sample of samples) {
    if (sample.value === null) {
      if (options.preloaded) problems.push(`${sample.key} is missing`);
      continue;
    }
    const tag = valueTag(sample.value);
    if (tag === undefined || !options.knownTags.includes(tag)) {
      problems.push(`${sample.key} holds ${JSON.stringify(sample.value.slice(0, 80))}`);
      continue;
    }
    if (tag === workload) hits++;
  }
  // A key read more than once (through different replicas, after the load
  // stopped) must read the same every time.
  const seen = new Map<string, string | null>();
  for (const sample of samples) {
    const earlier = seen.get(sample.key);
    if (earlier !== undefined && earlier !== sample.value) {
      problems.push(
        `${sample.key} reads differently: ${JSON.stringify(earlier?.slice(0, 20) ?? null)} and ${
          JSON.stringify(sample.value?.slice(0, 20) ?? null)
        }`,
      );
    }
    seen.set(sample.key, sample.value);
  }
  const pWritten = 1 - Math.pow(1 - 1 / options.keyCount, options.writes);
  if (Math.pow(1 - pWritten, seen.size) < 1e-6 && hits === 0) {
    problems.push(
      `none of ${seen.size} sampled keys holds a value this run wrote ` +
        `(after ${options.writes} writes over ${options.keyCount} keys)`,
    );
  }
  if (problems.length === 0) return null;
  const shown = problems.slice(0, 5).join("; ");
  return `${system} ${workload}: read-back failed: ${shown}${
    problems.length > 5 ? `; and ${problems.length - 5} more` : ""
  }`;
}
