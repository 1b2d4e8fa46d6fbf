/**
 * Repeated runs of `deno task bench:throughput`: the interleaved schedule,
 * medians, ratios of medians, the per-run arrays, and the tables with etcd
 * through gRPC and through its gateway side by side.
 */

import assert from "node:assert/strict";
import {
  detailTable,
  resultTable,
  type SystemRun,
  type ThroughputReport,
} from "../../bench/throughput/report.ts";
import { interleave, median, medianRun, mergeRuns } from "../../bench/throughput/runs.ts";

function systemRun(ops: number, overrides: Partial<SystemRun> = {}): SystemRun {
  return {
    ops_per_s: ops,
    requests: ops * 10,
    duration_s: 10,
    errors: 0,
    error_detail: { connect: 0, read: 0, write: 0, status: 0, timeout: 0 },
    p50_ms: 20,
    p90_ms: 30,
    p99_ms: 60,
    p999_ms: 120,
    mean_ms: 22,
    max_ms: 200,
    sent_reads: 0,
    sent_writes: ops * 10,
    connections: 255,
    threads: 3,
    wrk_cpu_pct: 10,
    machine_cpu_pct: 95,
    ...overrides,
  };
}

Deno.test("interleave: every system once per round, in order, rounds in order", () => {
  assert.deepEqual(
    interleave(["epaxos", "etcd-grpc", "etcd-gateway"], 3).map(({ system, run }) =>
      `${system}#${run}`
    ),
    [
      "epaxos#1",
      "etcd-grpc#1",
      "etcd-gateway#1",
      "epaxos#2",
      "etcd-grpc#2",
      "etcd-gateway#2",
      "epaxos#3",
      "etcd-grpc#3",
      "etcd-gateway#3",
    ],
  );
  assert.deepEqual(interleave(["epaxos"], 2), [
    { system: "epaxos", run: 1 },
    { system: "epaxos", run: 2 },
  ]);
  assert.deepEqual(interleave([], 3), []);
  assert.throws(() => interleave(["a"], 0), /at least 1/);
  assert.throws(() => interleave(["a"], 1.5), /at least 1/);
});

Deno.test("median: middle value, mean of the middle two, nulls left out", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([9405]), 9405);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([10, null, 30]), 20);
  assert.equal(median([null, null]), null);
  assert.equal(median([]), null);
  const values = [5, 1, 4];
  median(values);
  assert.deepEqual(values, [5, 1, 4], "the input is left alone");
});

Deno.test("medianRun: median ops/s and latencies, total errors, the median run's details", () => {
  const runs = [
    systemRun(9000, { p99_ms: 90, errors: 1, server_cpu_pct: 150, fast_path_ratio: 0.9 }),
    systemRun(12000, { p99_ms: 50, server_cpu_pct: 180, fast_path_ratio: 0.97 }),
    systemRun(11000, { p99_ms: 70, errors: 4, server_cpu_pct: 170, fast_path_ratio: 0.95 }),
  ];
  const merged = medianRun(runs);
  assert.equal(merged.ops_per_s, 11000);
  assert.equal(merged.p99_ms, 70);
  assert.equal(merged.errors, 5, "no run's errors hide behind a median");
  assert.equal(merged.server_cpu_pct, 170, "the median run's own numbers");
  assert.equal(merged.fast_path_ratio, 0.95);
  // Percentiles take their medians one by one.
  const mixed = medianRun([
    systemRun(1, { p50_ms: 1, p999_ms: 300 }),
    systemRun(2, { p50_ms: 3, p999_ms: 100 }),
    systemRun(3, { p50_ms: 2, p999_ms: null }),
  ]);
  assert.equal(mixed.p50_ms, 2);
  assert.equal(mixed.p999_ms, 200, "nulls left out");
  // An even count: the mean of the middle two, the lower one's details.
  const even = medianRun([systemRun(100.1), systemRun(300), systemRun(200.2), systemRun(400)]);
  assert.equal(even.ops_per_s, 250.1);
  assert.equal(even.requests, 2002);
  assert.deepEqual(medianRun([runs[0]!]), runs[0]);
  assert.throws(() => medianRun([]), /at least one run/);
});

Deno.test("mergeRuns: the old shape of medians, ratios of medians, runs beside them", () => {
  const epaxos = [systemRun(12000), systemRun(13000), systemRun(11500)];
  const etcd = [
    systemRun(9400, { grpc_connections: 26, connections: 256, threads: 26 }),
    systemRun(9000, { grpc_connections: 26, connections: 256, threads: 26 }),
    systemRun(9800, { grpc_connections: 26, connections: 256, threads: 26, errors: 2 }),
  ];
  const gateway = [systemRun(7000), systemRun(6900), systemRun(6800, { p99_ms: 90 })];
  const report = mergeRuns("uniform-writes", { epaxos, etcd, etcd_gateway: gateway });
  assert.equal(report.name, "uniform-writes");
  assert.equal(report.epaxos_ops_per_s, 12000);
  assert.equal(report.etcd_ops_per_s, 9400);
  assert.equal(report.etcd_gateway_ops_per_s, 6900);
  assert.equal(report.ratio, Number((12000 / 9400).toFixed(3)));
  assert.equal(report.gateway_ratio, Number((12000 / 6900).toFixed(3)));
  assert.equal(report.etcd_errors, 2);
  assert.equal(report.etcd_gateway_p99_ms, 60);
  assert.deepEqual(report.epaxos_ops_per_s_runs, [12000, 13000, 11500]);
  assert.deepEqual(report.etcd_ops_per_s_runs, [9400, 9000, 9800]);
  assert.deepEqual(report.etcd_gateway_ops_per_s_runs, [7000, 6900, 6800]);
  assert.equal(report.runs?.etcd.length, 3);
  assert.equal(report.etcd?.grpc_connections, 26);
  // The fields keep their names and come first in the JSON.
  assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(report))).slice(0, 6), [
    "name",
    "epaxos_ops_per_s",
    "etcd_ops_per_s",
    "epaxos_p99_ms",
    "etcd_p99_ms",
    "ratio",
  ]);

  const alone = mergeRuns("hot-key", { epaxos, etcd: [], etcd_gateway: [] });
  assert.equal(alone.etcd_ops_per_s, null);
  assert.equal(alone.etcd_gateway_ops_per_s, null);
  assert.equal(alone.ratio, null);
  assert.equal(alone.gateway_ratio, null);
  assert.equal(alone.etcd, null);
  assert.deepEqual(alone.etcd_ops_per_s_runs, []);
  assert.throws(
    () => mergeRuns("mixed", { epaxos: [], etcd, etcd_gateway: gateway }),
    /No epaxos run/,
  );
});

Deno.test("tables: gRPC and gateway side by side, each run's ops/s, clients over gRPC", () => {
  const runs = {
    epaxos: [systemRun(12000), systemRun(13000), systemRun(11500)],
    etcd: [9400, 9000, 9800].map((ops) =>
      systemRun(ops, { grpc_connections: 26, connections: 256, threads: 26 })
    ),
    etcd_gateway: [systemRun(7000), systemRun(6900), systemRun(6800)],
  };
  const report: ThroughputReport = {
    workloads: [mergeRuns("uniform-writes", runs)],
    replicas: 3,
    connections: 256,
    duration_s: 20,
    warmup_s: 3,
    keys: 100_000,
    value_bytes: 64,
    runs: 3,
    etcd: { version: "3.4.23", members: 3, api_prefix: "/v3" },
    etcd_grpc: {
      load_generator: "etcd_load, clientv3 3.4.23, go1.19.8",
      clients: 256,
      grpc_connections: 26,
    },
    wrk: "wrk 4.1.0",
    cpus: 2,
    idle_machine_cpu_pct: 3,
    started_at: "2026-01-01T00:00:00.000Z",
    failures: [],
  };
  const table = resultTable(report);
  assert.match(table, /; medians of 3 interleaved runs$/m);
  assert.match(
    table,
    /etcd through gRPC by etcd_load, clientv3 3\.4\.23, go1\.19\.8 \(256 clients over 26 gRPC connections\)/,
  );
  assert.match(
    table,
    /\| uniform-writes \| 12000 \| 9400 \| 1\.28 \| 20\.0 \/ 60\.0 \/ 120\.0 \| 20\.0 \/ 60\.0 \/ 120\.0 \| 0 \/ 0 \| 6900 \| 1\.74 \| 20\.0 \/ 60\.0 \/ 120\.0 \| 0 \|/,
  );
  assert.match(
    table,
    /^- uniform-writes: epaxos 12000, 13000, 11500; etcd 9400, 9000, 9800; etcd gateway 7000, 6900, 6800$/m,
  );
  const details = detailTable(report);
  assert.match(details, /\| uniform-writes \| etcd \| 94000 \|.*\| 256 clients \/ 26 gRPC \|/);
  assert.match(details, /\| uniform-writes \| etcd gateway \|.*\| 255 \/ 3 \|/);
  assert.equal(details.split("\n").length, 2 + 3);

  const single = resultTable({
    ...report,
    runs: 1,
    etcd_grpc: { skipped: "Go could not be installed" },
    workloads: [mergeRuns("mixed", { ...runs, etcd: [] })],
  });
  assert.doesNotMatch(single, /medians|each run/);
  assert.match(single, /etcd through gRPC skipped: Go could not be installed/);
  assert.match(single, /\| mixed \| 12000 \| - \| - \|/);
});
