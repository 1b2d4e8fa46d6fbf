/**
 * `deno task bench:kvconnect` (bench/kvconnect.ts): its pure parts
 * (arguments, mergeable latency histograms, medians, ratios, the table), and
 * one tiny run on a real cluster with every mode, so the benchmark cannot
 * rot: each mode must count operations without errors, and the watch must
 * deliver every sample.
 */

import assert from "node:assert/strict";
import { UsageError } from "../../src/cli/args.ts";
import { runKvConnectBench } from "../../bench/kvconnect.ts";
import {
  cpuRatioOf,
  LatencyHistogram,
  type ModeRun,
  pairedRatios,
  parseKvConnectArgs,
  quantileOf,
  ratioOf,
  reportTable,
  summarizeModes,
  THROUGHPUT_MODES,
} from "../../bench/kvconnect/report.ts";

Deno.test("arguments: defaults follow the issue, bad values are refused", () => {
  const options = parseKvConnectArgs([]);
  assert.equal(options.runs, 3);
  assert.equal(options.clients, 64);
  assert.deepEqual(options.modes, [...THROUGHPUT_MODES]);
  assert.equal(options.out, undefined);
  const chosen = parseKvConnectArgs([
    "--modes",
    "put,kv-atomic",
    "--out",
    "x.json",
    "--procs",
    "4",
  ]);
  assert.deepEqual(chosen.modes, ["put", "kv-atomic"]);
  assert.equal(chosen.out, "x.json");
  assert.equal(chosen.procs, 4);
  assert.throws(() => parseKvConnectArgs(["--modes", "sum"]), UsageError);
  assert.throws(() => parseKvConnectArgs(["--runs", "0"]), UsageError);
  assert.throws(() => parseKvConnectArgs(["--clients", "2", "--procs", "3"]), UsageError);
  assert.throws(() => parseKvConnectArgs(["extra"]), UsageError);
});

Deno.test("latency histogram: quantiles within 2 %, merged across processes", () => {
  const one = new LatencyHistogram();
  const two = new LatencyHistogram();
  for (let ms = 1; ms <= 100; ms++) (ms % 2 === 0 ? one : two).record(ms);
  assert.equal(one.quantile(0.5), quantileAbout(one, 50));
  const merged = new LatencyHistogram();
  merged.merge(one.toJSON());
  merged.merge(two);
  assert.equal(merged.count, 100);
  for (const [q, exact] of [[0.5, 50], [0.99, 99], [1, 100], [0.01, 1]] as const) {
    const value = merged.quantile(q)!;
    assert.ok(value >= exact && value <= exact * 1.02, `q${q}: ${value} vs ${exact}`);
  }
  assert.equal(new LatencyHistogram().quantile(0.5), null);
  // Bad buckets in a process's JSON are ignored, not counted.
  merged.merge({ "-1": 5, "abc": 3, "5": -2, "99999": 1 });
  assert.equal(merged.count, 100);
});

function quantileAbout(histogram: LatencyHistogram, exact: number): number {
  const value = histogram.quantile(0.5)!;
  assert.ok(value >= exact && value <= exact * 1.02 + 1);
  return value;
}

Deno.test("quantileOf: nearest rank", () => {
  assert.equal(quantileOf([3, 1, 2], 0.5), 2);
  assert.equal(quantileOf([1, 2, 3, 4], 0.99), 4);
  assert.equal(quantileOf([], 0.5), null);
});

function modeRun(mode: ModeRun["mode"], run: number, opsPerS: number): ModeRun {
  return {
    mode,
    run,
    ops_per_s: opsPerS,
    errors: run === 1 ? 1 : 0,
    first_error: null,
    p50_ms: 10 * run,
    p99_ms: 20 * run,
    client_cpu_pct: 10,
    client_us_per_op: 100,
    server_cpu_pct: 150,
    server_us_per_op: 500,
    machine_cpu_pct: 90,
    load_1m: 2,
    server_request_p50_ms: 5,
    server_request_p99_ms: 9,
    commit_p50_ms: 4,
    commit_p99_ms: 8,
    fast_ratio: 1,
    commands_per_batch: 4,
    storage_commits_per_s: 300,
    storage_commit_ms: 2,
  };
}

Deno.test("summary: medians per mode, errors summed, ratio of medians, a table", () => {
  const runs = [
    modeRun("kv-atomic", 1, 800),
    modeRun("put", 1, 1000),
    modeRun("kv-atomic", 2, 900),
    modeRun("put", 2, 1200),
    modeRun("kv-atomic", 3, 100),
    modeRun("put", 3, 1100),
  ];
  const modes = summarizeModes(runs);
  assert.deepEqual(modes.map((mode) => mode.mode), ["kv-atomic", "put"]);
  assert.equal(modes[0]!.ops_per_s, 800);
  assert.equal(modes[1]!.ops_per_s, 1100);
  assert.equal(modes[0]!.errors, 1);
  assert.deepEqual(modes[0]!.ops_per_s_runs, [800, 900, 100]);
  assert.equal(modes[0]!.p50_ms, 20);
  assert.equal(ratioOf(modes, "kv-atomic", "put"), 0.727);
  assert.equal(ratioOf(modes, "kv-check-set", "put-if-match"), null);
  // Each round on its own: 800/1000, 900/1200, 100/1100.
  assert.deepEqual(pairedRatios(runs, "kv-atomic", "put"), [0.8, 0.75, 0.091]);
  assert.equal(cpuRatioOf(modes, "kv-atomic", "put"), 1);
  const table = reportTable({
    replicas: 3,
    clients: 64,
    procs: 2,
    runs: 3,
    duration_s: 10,
    warmup_s: 3,
    keys: 100,
    rate: null,
    ratio_atomic_to_put: 0.727,
    ratio_atomic_to_put_runs: pairedRatios(runs, "kv-atomic", "put"),
    ratio_atomic_to_put_paired: 0.8,
    server_cpu_atomic_to_put: cpuRatioOf(modes, "kv-atomic", "put"),
    ratio_atomic_to_put_h2: null,
    server_cpu_atomic_to_put_h2: null,
    ratio_check_set_to_put_if_match: null,
    modes,
    watch: {
      samples: 0,
      sent_p50_ms: null,
      sent_p99_ms: null,
      acknowledged_p50_ms: null,
      acknowledged_p99_ms: null,
    },
    mode_runs: runs,
    watch_runs: [],
    uptime: [],
    deno: "2",
    cpus: 2,
  });
  assert.match(table, /\| kv-atomic \| 800 \| 800 \/ 900 \/ 100 \|/);
  assert.match(table, /atomic \/ PUT: 0\.727x \(goal ≥ 0\.8x; each round: 0\.8 \/ 0\.75 \/ 0\.091/);
  assert.match(table, /atomic \/ PUT over HTTP\/2: –x/);
});

Deno.test({
  name: "a tiny run of every mode and the watch on a real cluster",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { report, problems } = await runKvConnectBench({
      runs: 1,
      durationS: 1,
      warmupS: 0,
      clients: 4,
      procs: 2,
      keys: 20,
      watchSamples: 5,
      modes: [...THROUGHPUT_MODES],
    }, () => {});
    assert.deepEqual(problems, []);
    assert.deepEqual(report.modes.map((mode) => mode.mode), [...THROUGHPUT_MODES]);
    for (const mode of report.modes) {
      assert.ok(mode.ops_per_s! > 0, `${mode.mode} counted operations`);
      assert.equal(mode.errors, 0, `${mode.mode} had no errors`);
      assert.ok(mode.p50_ms! > 0);
    }
    assert.ok(report.ratio_atomic_to_put! > 0);
    assert.equal(report.watch.samples, 5);
    assert.ok(report.watch.sent_p50_ms! > 0);
    assert.ok(report.mode_runs.every((run) => run.server_us_per_op !== null));
  },
});
