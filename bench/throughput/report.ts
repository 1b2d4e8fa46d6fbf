/**
 * Results of `deno task bench:throughput`: one system's run summarized from
 * wrk's numbers, workloads merged side by side with ratios, the Markdown
 * tables, and the read-back check that makes a broken store fail loudly.
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
  /** Connections wrk opened. */
  readonly connections: number;
  /** wrk threads. */
  readonly threads: number;
  /** wrk's CPU use, in percent of one core. */
  readonly wrk_cpu_pct: number;
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

/** One workload, both systems side by side (the issue's fields first). */
export interface WorkloadReport {
  readonly name: string;
  readonly epaxos_ops_per_s: number;
  readonly etcd_ops_per_s: number | null;
  readonly epaxos_p99_ms: number | null;
  readonly etcd_p99_ms: number | null;
  /** EPaxos ops/s over etcd ops/s. */
  readonly ratio: number | null;
  readonly epaxos_p50_ms: number | null;
  readonly epaxos_p999_ms: number | null;
  readonly etcd_p50_ms: number | null;
  readonly etcd_p999_ms: number | null;
  readonly epaxos_errors: number;
  readonly etcd_errors: number | null;
  /** The full numbers of each system. */
  readonly epaxos: SystemRun;
  readonly etcd: SystemRun | null;
}

/** Merges one workload's runs. */
export function mergeWorkload(
  name: string,
  epaxos: SystemRun,
  etcd: SystemRun | null,
): WorkloadReport {
  return {
    name,
    epaxos_ops_per_s: epaxos.ops_per_s,
    etcd_ops_per_s: etcd?.ops_per_s ?? null,
    epaxos_p99_ms: epaxos.p99_ms,
    etcd_p99_ms: etcd?.p99_ms ?? null,
    ratio: etcd === null || etcd.ops_per_s === 0
      ? null
      : round(epaxos.ops_per_s / etcd.ops_per_s, 3),
    epaxos_p50_ms: epaxos.p50_ms,
    epaxos_p999_ms: epaxos.p999_ms,
    etcd_p50_ms: etcd?.p50_ms ?? null,
    etcd_p999_ms: etcd?.p999_ms ?? null,
    epaxos_errors: epaxos.errors,
    etcd_errors: etcd?.errors ?? null,
    epaxos,
    etcd,
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
  /** The etcd cluster that ran, or why none did. */
  readonly etcd: {
    readonly version: string;
    readonly members: number;
    readonly api_prefix: string;
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

/** The main table: ops/s side by side, their ratio, latencies and error counts. */
export function resultTable(report: ThroughputReport): string {
  const rows = report.workloads.map((w) =>
    `| ${w.name} | ${num(w.epaxos_ops_per_s)} | ${num(w.etcd_ops_per_s)} | ${
      w.ratio === null ? "-" : w.ratio.toFixed(2)
    } | ${latencies(w.epaxos)} | ${latencies(w.etcd)} | ${w.epaxos_errors} / ${
      w.etcd_errors ?? "-"
    } |`
  );
  const etcd = "skipped" in report.etcd
    ? `etcd skipped: ${report.etcd.skipped}`
    : `etcd ${report.etcd.version}, ${report.etcd.members} members`;
  return [
    `epaxos-kv ${report.replicas} replicas vs ${etcd}; ${report.connections} connections, ` +
    `${report.duration_s} s per workload, ${report.value_bytes}-byte values, ` +
    `${report.keys.toLocaleString("en-US")} keys` +
    (report.cpus === null ? "" : `; ${report.cpus} CPUs`) +
    (report.idle_machine_cpu_pct === null
      ? ""
      : `, ${report.idle_machine_cpu_pct}% busy with the clusters idle`),
    "",
    "| workload | epaxos ops/s | etcd ops/s | ratio | epaxos p50/p99/p999 ms | etcd p50/p99/p999 ms | errors epaxos / etcd |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...rows,
  ].join("\n");
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
    for (const [system, run] of [["epaxos", w.epaxos], ["etcd", w.etcd]] as const) {
      if (run === null) continue;
      rows.push(
        `| ${w.name} | ${system} | ${run.requests} | ${run.sent_reads} / ${run.sent_writes} | ${
          errorDetail(run.error_detail)
        } | ${run.connections} / ${run.threads} | ${num(run.wrk_cpu_pct)} | ${
          num(run.machine_cpu_pct)
        } | ${serverCpu(run)} | ${
          run.fast_path_ratio === undefined || run.fast_path_ratio === null
            ? "-"
            : `${(run.fast_path_ratio * 100).toFixed(1)}%`
        } |`,
      );
    }
  }
  return [
    "| workload | system | requests | sent reads / writes | errors | connections / threads | wrk CPU % of a core | machine CPU % | server CPU: % of a core, µs per op; per server main / v8 / blocking / other % | fast path |",
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
