/**
 * Repeated runs of `deno task bench:throughput`: the interleaved order they
 * run in and the medians the report gives.
 *
 * One run of each system is at the mercy of whatever else the machine did in
 * those seconds (a compaction, a neighbour's burst), so each system runs
 * several times. The runs interleave (epaxos, etcd, etcd gateway, epaxos, ...)
 * rather than run back to back, so that a slow phase of the machine falls on
 * every system alike instead of on one, and the report gives medians, which
 * one outlying run does not move.
 *
 * @module
 */

import { mergeWorkload, type SystemRun, type WorkloadReport, type WorkloadRuns } from "./report.ts";

/** One measured run in a schedule: which system, and which of its runs (from 1). */
export interface ScheduledRun<T> {
  readonly system: T;
  readonly run: number;
}

/** `runs` rounds over `systems`, each round in the given order: a b c a b c ... */
export function interleave<T>(systems: readonly T[], runs: number): ScheduledRun<T>[] {
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`Runs must be at least 1, got ${runs}`);
  const schedule: ScheduledRun<T>[] = [];
  for (let run = 1; run <= runs; run++) {
    for (const system of systems) schedule.push({ system, run });
  }
  return schedule;
}

/**
 * The median of the numbers among `values` (nulls are left out): the middle
 * one, or the mean of the two middle ones when their count is even; null when
 * there is none.
 */
export function median(values: readonly (number | null)[]): number | null {
  const sorted = values.filter((value): value is number => value !== null).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function rounded(value: number | null, digits: number): number | null {
  return value === null ? null : Number(value.toFixed(digits));
}

/**
 * One system's runs as one: the run with the median ops/s (the lower of the
 * two middle ones when their count is even) with its ops/s and latencies
 * replaced by the medians over every run (each percentile's median on its
 * own, so it may come from another run than the ops/s) and its errors by the
 * total over every run, so no run's errors hide behind a median. Its other
 * fields (CPU, requests, fast-path share) are that run's.
 */
export function medianRun(runs: readonly SystemRun[]): SystemRun {
  if (runs.length === 0) throw new Error("A median needs at least one run");
  const byOps = [...runs].sort((a, b) => a.ops_per_s - b.ops_per_s);
  const middle = byOps[Math.floor((byOps.length - 1) / 2)]!;
  const of = (field: "p50_ms" | "p90_ms" | "p99_ms" | "p999_ms" | "mean_ms" | "max_ms") =>
    rounded(median(runs.map((run) => run[field])), 2);
  return {
    ...middle,
    ops_per_s: rounded(median(runs.map((run) => run.ops_per_s)), 1)!,
    errors: runs.reduce((sum, run) => sum + run.errors, 0),
    p50_ms: of("p50_ms"),
    p90_ms: of("p90_ms"),
    p99_ms: of("p99_ms"),
    p999_ms: of("p999_ms"),
    mean_ms: of("mean_ms"),
    max_ms: of("max_ms"),
  };
}

/**
 * One workload's report from every run of every system: medians in the shape
 * of a single run's report ({@link mergeWorkload}, so the ratios are of
 * medians), with each run's ops/s and full numbers beside them. A side with
 * no runs (etcd skipped) is null.
 */
export function mergeRuns(name: string, runs: WorkloadRuns): WorkloadReport {
  if (runs.epaxos.length === 0) throw new Error(`No epaxos run of ${name}`);
  const side = (list: readonly SystemRun[]) => list.length === 0 ? null : medianRun(list);
  const opsOf = (list: readonly SystemRun[]) => list.map((run) => run.ops_per_s);
  const merged = mergeWorkload(
    name,
    medianRun(runs.epaxos),
    side(runs.etcd),
    side(runs.etcd_gateway),
  );
  const { epaxos, etcd, etcd_gateway, ...figures } = merged;
  const tls = runs.epaxos_tls === undefined || runs.epaxos_tls.length === 0
    ? undefined
    : medianRun(runs.epaxos_tls);
  return {
    ...figures,
    ...(tls === undefined ? {} : {
      epaxos_tls: tls,
      epaxos_tls_ops_per_s: tls.ops_per_s,
      epaxos_tls_ops_per_s_runs: opsOf(runs.epaxos_tls!),
      tls_ratio: epaxos.ops_per_s === 0
        ? null
        : Number((tls.ops_per_s / epaxos.ops_per_s).toFixed(3)),
    }),
    epaxos_ops_per_s_runs: opsOf(runs.epaxos),
    etcd_ops_per_s_runs: opsOf(runs.etcd),
    etcd_gateway_ops_per_s_runs: opsOf(runs.etcd_gateway),
    epaxos,
    etcd,
    etcd_gateway,
    runs,
  };
}
