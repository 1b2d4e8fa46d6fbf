/**
 * The pure parts of etcd's gRPC path in `deno task bench:throughput`: the
 * load generator's command line and result line, the version parsers, the
 * cache directory, the options that drive it, and that the Go source agrees
 * with the TypeScript on its flags and constants (read as text: the tests
 * need no Go).
 */

import assert from "node:assert/strict";
import { UsageError } from "../../src/cli/args.ts";
import {
  ETCD_LOAD_MARKER,
  etcdLoadArgs,
  etcdLoadCacheDir,
  parseEtcdLoadOutput,
  parseEtcdSourceVersion,
  parseGoVersion,
} from "../../bench/throughput/etcd_load.ts";
import {
  defaultGrpcConnections,
  parseThroughputArgs,
  VALUE_BYTES,
  workload,
} from "../../bench/throughput/options.ts";
import { summarizeRun } from "../../bench/throughput/report.ts";

const GO_SOURCE = await Deno.readTextFile(
  new URL("../../bench/throughput/etcd_load/main.go", import.meta.url),
);

function resultLine(fields: Record<string, unknown> = {}): string {
  return `${ETCD_LOAD_MARKER} ${
    JSON.stringify({
      requests: 94_050,
      duration_us: 10_000_000,
      bytes: 0,
      errors: { connect: 0, read: 0, write: 0, status: 2, timeout: 1 },
      latency_us: {
        min: 461,
        mean: 27_000,
        max: 190_000,
        p50: 24_000,
        p90: 41_000,
        p99: 80_000,
        p999: 120_000,
      },
      sent_reads: 0,
      sent_writes: 94_300,
      threads: 26,
      cpu_s: 4.25,
      clients: 256,
      grpc_connections: 26,
      ...fields,
    })
  }`;
}

Deno.test("etcd_load arguments: the workload, clients, connections and bounds", () => {
  const args = etcdLoadArgs({
    endpoints: ["http://127.0.0.1:2379", "http://127.0.0.1:2380"],
    workload: workload("mixed", 100_000),
    clients: 256,
    grpcConnections: 26,
    durationS: 10,
    timeoutS: 5,
    seed: 7,
  });
  assert.deepEqual(args, [
    "-endpoints=http://127.0.0.1:2379,http://127.0.0.1:2380",
    "-clients=256",
    "-conns=26",
    "-duration=10",
    "-timeout=5",
    "-key-prefix=kv-",
    "-keys=100000",
    "-read-percent=50",
    "-tag=mixed",
    "-seed=7",
  ]);
  const hot = etcdLoadArgs({
    endpoints: ["h:1"],
    workload: workload("hot-key", 100_000),
    clients: 3,
    grpcConnections: 1,
    durationS: 1,
    timeoutS: 1,
    seed: 1,
  });
  assert.ok(hot.includes("-key-prefix=hot") && hot.includes("-keys=1"));
  assert.ok(hot.includes("-read-percent=0") && hot.includes("-tag=hot-key"));
});

Deno.test("etcd_load source: every flag the benchmark passes is defined, constants agree", () => {
  const defined = new Set(
    [...GO_SOURCE.matchAll(/flag\.(?:String|Int|Int64)\("([a-z-]+)"/g)].map((match) => match[1]),
  );
  const passed = etcdLoadArgs({
    endpoints: ["h:1"],
    workload: workload("uniform-writes", 10),
    clients: 1,
    grpcConnections: 1,
    durationS: 1,
    timeoutS: 1,
    seed: 1,
  }).map((arg) => /^-([a-z-]+)=/.exec(arg)![1]);
  for (const name of passed) assert.ok(defined.has(name), `main.go defines -${name}`);
  assert.match(GO_SOURCE, new RegExp(`const resultMarker = "${ETCD_LOAD_MARKER}"`));
  assert.match(GO_SOURCE, new RegExp(`const valueBytes = ${VALUE_BYTES}\\b`));
  assert.match(GO_SOURCE, /"go\.etcd\.io\/etcd\/clientv3"/, "etcd's own client");
});

Deno.test("etcd_load output: the result line is found, checked and summarized like wrk's", () => {
  const result = parseEtcdLoadOutput(`some log line\n${resultLine()}\n`);
  assert.equal(result.requests, 94_050);
  assert.equal(result.clients, 256);
  assert.equal(result.grpc_connections, 26);
  assert.equal(result.threads, 26);
  assert.deepEqual(result.errors, { connect: 0, read: 0, write: 0, status: 2, timeout: 1 });
  assert.equal(result.latency_us?.p999, 120_000);
  assert.equal(result.first_error, undefined);
  const run = summarizeRun({ ...result, connections: result.clients, machine_cpu_pct: 99 });
  assert.equal(run.ops_per_s, 9404.8); // (94,050 - 2 error answers) / 10 s
  assert.equal(run.errors, 3);
  assert.equal(run.p50_ms, 24);
  assert.equal(run.p99_ms, 80);
  assert.equal(run.p999_ms, 120);
  assert.equal(run.connections, 256);
  assert.equal(run.wrk_cpu_pct, 42.5);

  assert.equal(
    parseEtcdLoadOutput(resultLine({ first_error: "rpc error: code = Unavailable" })).first_error,
    "rpc error: code = Unavailable",
  );
  assert.equal(
    parseEtcdLoadOutput(resultLine({ requests: 0, latency_us: null })).latency_us,
    null,
    "no latency when nothing completed",
  );
  assert.throws(
    () => parseEtcdLoadOutput("etcd_load: -endpoints is required\n"),
    (error: Error) => {
      assert.match(error.message, /^etcd_load printed no ETCD_LOAD_RESULT line/);
      assert.match(error.message, /-endpoints is required/, "the output is shown");
      return true;
    },
  );
  // wrk's marker is not etcd_load's.
  assert.throws(
    () => parseEtcdLoadOutput(resultLine().replace(ETCD_LOAD_MARKER, "BENCH_THROUGHPUT_RESULT")),
    /no ETCD_LOAD_RESULT line/,
  );
  assert.throws(
    () => parseEtcdLoadOutput(`${ETCD_LOAD_MARKER} {`),
    /etcd_load's result line is not JSON/,
  );
  assert.throws(() => parseEtcdLoadOutput(resultLine({ clients: 0 })), /valid clients/);
  assert.throws(
    () => parseEtcdLoadOutput(resultLine({ grpc_connections: undefined })),
    /grpc_connections/,
  );
  assert.throws(
    () => parseEtcdLoadOutput(resultLine({ sent_writes: -1 })),
    /etcd_load's result has no valid sent_writes/,
  );
  assert.throws(() => parseEtcdLoadOutput(resultLine({ latency_us: null })), /latency/);
});

Deno.test("etcd_load build: versions and the cache directory", () => {
  assert.equal(parseGoVersion("go version go1.19.8 linux/amd64\n"), "go1.19.8");
  assert.equal(parseGoVersion("go version go1.22 linux/arm64"), "go1.22");
  assert.equal(parseGoVersion("bash: go: not found"), undefined);
  assert.equal(
    parseEtcdSourceVersion(
      'var (\n\tMinClusterVersion = "3.0.0"\n\tVersion           = "3.4.23"\n',
    ),
    "3.4.23",
  );
  assert.equal(parseEtcdSourceVersion("package version"), undefined);
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(etcdLoadCacheDir(env({ XDG_CACHE_HOME: "/c/", HOME: "/h" })), "/c/epaxos-kv-bench");
  assert.equal(etcdLoadCacheDir(env({ HOME: "/h" })), "/h/.cache/epaxos-kv-bench");
  assert.equal(etcdLoadCacheDir(env({ TMPDIR: "/t" })), "/t/epaxos-kv-bench");
  assert.equal(etcdLoadCacheDir(env({})), "/tmp/epaxos-kv-bench");
});

Deno.test("arguments: --runs and --grpc-connections", () => {
  const defaults = parseThroughputArgs([]);
  assert.equal(defaults.runs, 3);
  assert.equal(defaults.grpcConnections, 26, "one per ten of the 256 clients");
  assert.equal(defaultGrpcConnections(5), 1);
  assert.equal(defaultGrpcConnections(1000), 100, "as etcd's performance guide");
  const options = parseThroughputArgs([
    "--runs",
    "1",
    "--connections",
    "64",
    "--grpc-connections=8",
  ]);
  assert.equal(options.runs, 1);
  assert.equal(options.grpcConnections, 8);
  assert.equal(parseThroughputArgs(["--connections", "64"]).grpcConnections, 6);
  const cases: [string[], RegExp][] = [
    [["--runs", "0"], /--runs must be an integer from 1 to 20/],
    [["--runs", "1.5"], /--runs/],
    [["--grpc-connections", "0"], /--grpc-connections must be an integer from 1 to 256/],
    [["--connections", "16", "--grpc-connections", "17"], /from 1 to 16/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseThroughputArgs(argv), (error: Error) => {
      assert.ok(error instanceof UsageError, `${argv.join(" ")}: ${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
});
