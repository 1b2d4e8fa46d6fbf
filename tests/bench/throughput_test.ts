/**
 * The pure parts of `deno task bench:throughput`: arguments, the generated wrk
 * Lua (run under fengari, a Lua VM in JavaScript, with wrk's API mocked, so no
 * wrk is needed), result parsing, merging, tables and checks. The benchmark
 * itself needs wrk and etcd and is not part of the tests.
 */

import assert from "node:assert/strict";
import fengari from "fengari";
import { UsageError } from "../../src/cli/args.ts";
import { etcdMemberArgs, gatewayPrefix, parseEtcdVersion } from "../../bench/throughput/etcd.ts";
import {
  base64,
  parseWrkOutput,
  RESULT_MARKER,
  type ScriptSpec,
  threadValue,
  valueTag,
  wrkScript,
} from "../../bench/throughput/lua.ts";
import {
  keyName,
  parseThroughputArgs,
  VALUE_BYTES,
  workload,
} from "../../bench/throughput/options.ts";
import { busyPercent, lastLines, parseProcStat } from "../../bench/throughput/processes.ts";
import {
  cpuBreakdown,
  cpuMicrosPerOp,
  type CpuSample,
  describeBreakdown,
  parseCpuSample,
  parseTaskStat,
  sampleCpu,
  threadGroup,
} from "../../bench/throughput/threads.ts";
import {
  checkReadback,
  detailTable,
  mergeWorkload,
  resultTable,
  summarizeRun,
  type ThroughputReport,
} from "../../bench/throughput/report.ts";
import type { WrkRunResult } from "../../bench/throughput/wrk.ts";

// --- Arguments -------------------------------------------------------------

Deno.test("arguments: defaults follow the issue", () => {
  const options = parseThroughputArgs([]);
  assert.equal(options.replicas, 3);
  assert.equal(options.durationS, 20);
  assert.equal(options.warmupS, 3);
  assert.equal(options.connections, 256);
  assert.deepEqual(options.workloads, ["uniform-writes", "mixed", "hot-key"]);
  assert.equal(options.keys, 100_000);
  assert.equal(options.skipEtcd, false);
  assert.equal(options.skipPreload, false);
  assert.equal(options.out, undefined);
  assert.equal(options.timeoutS, 10);
});

Deno.test("arguments: every option", () => {
  const options = parseThroughputArgs([
    "--replicas",
    "5",
    "--duration=15",
    "--warmup",
    "0",
    "--connections",
    "64",
    "--workloads",
    "hot-key, mixed",
    "--keys",
    "1000",
    "--skip-etcd",
    "--skip-preload",
    "--out",
    "bench/results/throughput.json",
    "--data-root",
    "/var/tmp",
    "--seed",
    "7",
    "--timeout",
    "5",
  ]);
  assert.equal(options.replicas, 5);
  assert.equal(options.durationS, 15);
  assert.equal(options.warmupS, 0);
  assert.equal(options.connections, 64);
  assert.deepEqual(options.workloads, ["hot-key", "mixed"]);
  assert.equal(options.keys, 1000);
  assert.equal(options.skipEtcd, true);
  assert.equal(options.skipPreload, true);
  assert.equal(options.out, "bench/results/throughput.json");
  assert.equal(options.dataRoot, "/var/tmp");
  assert.equal(options.seed, 7);
  assert.equal(options.timeoutS, 5);
});

Deno.test("arguments: clear errors", () => {
  const cases: [string[], RegExp][] = [
    [["--replicas", "4"], /3, 5 or 7/],
    [["--replicas", "9"], /from 3 to 7/],
    [["--connections", "4", "--replicas", "5"], /at least 5/],
    [["--workloads", "reads"], /Unknown workload "reads"/],
    [["--workloads", "mixed,mixed"], /named twice/],
    [["--duration", "0"], /--duration must be an integer from 1/],
    [["--keys", "2000000"], /--keys/],
    [["--bogus"], /Unknown option --bogus/],
    [["extra"], /Unexpected argument extra/],
    [["--skip-etcd=yes"], /takes no value/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseThroughputArgs(argv), (error: Error) => {
      assert.ok(error instanceof UsageError, `${argv.join(" ")}: ${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("workloads and keys", () => {
  assert.deepEqual(workload("uniform-writes", 100_000), {
    name: "uniform-writes",
    keyPrefix: "kv-",
    keyCount: 100_000,
    readPercent: 0,
  });
  assert.equal(workload("mixed", 10).readPercent, 50);
  assert.equal(workload("hot-key", 100_000).keyCount, 1);
  assert.equal(keyName("kv-", 42), "kv-000042");
  assert.equal(keyName("hot", 0), "hot000000");
  assert.equal(keyName("kv-", 999_999), "kv-999999");
});

Deno.test("values are 64 bytes and name their writer", () => {
  const value = threadValue("uniform-writes", 3);
  assert.equal(value.length, VALUE_BYTES);
  assert.ok(value.startsWith("uniform-writes-t3-."));
  assert.equal(valueTag(value), "uniform-writes");
  assert.equal(valueTag(threadValue("preload", 0)), "preload");
  assert.equal(valueTag("hot-key-t1-"), undefined, "too short");
  assert.equal(valueTag("x".repeat(64)), undefined);
  assert.throws(() => threadValue("x".repeat(70), 1), /too long/);
});

// --- The Lua scripts, run under fengari ---------------------------------------

const { lua, lauxlib, lualib, to_luastring } = fengari;

/** Runs `code` in a fresh Lua state and returns its results as strings. */
function runLua(code: string, results: number): string[] {
  const L = lauxlib.luaL_newstate();
  lualib.luaL_openlibs(L);
  if (lauxlib.luaL_loadstring(L, to_luastring(code)) !== lua.LUA_OK) {
    throw new Error(`Lua does not load: ${lua.lua_tojsstring(L, -1)}`);
  }
  if (lua.lua_pcall(L, 0, results, 0) !== lua.LUA_OK) {
    throw new Error(`Lua failed: ${lua.lua_tojsstring(L, -1)}`);
  }
  return Array.from({ length: results }, (_, i) => lua.lua_tojsstring(L, i + 1));
}

/** wrk's setup phase and done phase, in one state, with wrk's API mocked. */
function setupAndDone(script: string, threads: number) {
  const [setups, printed] = runLua(
    `${script}
wrk = { lookup = function(host, port) return { host .. ":" .. port } end }
local mocks = {}
for i = 1, ${threads} do
  local vars = {}
  local thread = { vars = vars }
  function thread:set(name, value) vars[name] = value end
  function thread:get(name) return vars[name] end
  setup(thread)
  mocks[i] = thread
end
local lines = {}
for i, thread in ipairs(mocks) do
  lines[i] = thread.addr .. " " .. thread.vars.thread_index .. " " .. thread.vars.host_header
  thread.vars.reads = 10 * i
  thread.vars.writes = 100 * i
end
local printed = ""
io.write = function(text) printed = printed .. text end
done(
  { duration = 2000000, requests = 1234, bytes = 5678,
    errors = { connect = 1, read = 2, write = 3, status = 4, timeout = 5 } },
  { min = 100, mean = 2500.4, max = 90000, stdev = 7,
    percentile = function(self, p) return p * 100 end },
  {})
return table.concat(lines, "\\n"), printed`,
    2,
  );
  return { setups: setups!.split("\n"), printed: printed! };
}

interface HttpRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Map<string, string>;
  readonly body: string;
}

/** One thread's running phase: init, then `count` requests, parsed. */
function threadRequests(script: string, thread: number, host: string, count: number) {
  const [joined, reads, writes] = runLua(
    `${script}
thread_index = ${thread}
host_header = "${host}"
init({})
local out = {}
for i = 1, ${count} do out[i] = request() end
return table.concat(out, "\\1"), tostring(reads), tostring(writes)`,
    3,
  );
  const requests = joined!.split("\u0001").map((text): HttpRequest => {
    const split = text.indexOf("\r\n\r\n");
    assert.ok(split > 0, `a request has a head: ${JSON.stringify(text)}`);
    const [requestLine, ...headerLines] = text.slice(0, split).split("\r\n");
    const match = /^([A-Z]+) (\S+) HTTP\/1\.1$/.exec(requestLine!);
    assert.ok(match !== null, `request line ${requestLine}`);
    const headers = new Map(headerLines.map((line) => {
      const colon = line.indexOf(": ");
      assert.ok(colon > 0, `header ${line}`);
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 2)];
    }));
    return { method: match[1]!, path: match[2]!, headers, body: text.slice(split + 4) };
  });
  return { requests, reads: Number(reads), writes: Number(writes) };
}

const targets = [
  { host: "127.0.0.1", port: 8001 },
  { host: "127.0.0.1", port: 8002 },
  { host: "127.0.0.1", port: 8003 },
];

function spec(overrides: Partial<ScriptSpec> = {}): ScriptSpec {
  return {
    system: "epaxos",
    targets,
    threads: 6,
    workload: workload("mixed", 100_000),
    seed: 1,
    ...overrides,
  };
}

Deno.test("lua: setup spreads threads over every target, done prints one parsable line", () => {
  for (const system of ["epaxos", "etcd"] as const) {
    const script = wrkScript(spec({ system, etcdApiPrefix: "/v3" }));
    const { setups, printed } = setupAndDone(script, 6);
    assert.deepEqual(setups, [
      "127.0.0.1:8001 1 127.0.0.1:8001",
      "127.0.0.1:8002 2 127.0.0.1:8002",
      "127.0.0.1:8003 3 127.0.0.1:8003",
      "127.0.0.1:8001 4 127.0.0.1:8001",
      "127.0.0.1:8002 5 127.0.0.1:8002",
      "127.0.0.1:8003 6 127.0.0.1:8003",
    ]);
    assert.equal(printed.split("\n").filter((line) => line.startsWith(RESULT_MARKER)).length, 1);
    const result = parseWrkOutput(`Running 1s test @ http://127.0.0.1:8001/\n${printed}`);
    assert.equal(result.requests, 1234);
    assert.equal(result.duration_us, 2_000_000);
    assert.equal(result.bytes, 5678);
    assert.deepEqual(result.errors, { connect: 1, read: 2, write: 3, status: 4, timeout: 5 });
    assert.deepEqual(result.latency_us, {
      min: 100,
      mean: 2500,
      max: 90000,
      p50: 5000,
      p90: 9000,
      p99: 9900,
      p999: 9990,
    });
    assert.equal(result.sent_reads, 10 * (1 + 2 + 3 + 4 + 5 + 6));
    assert.equal(result.sent_writes, 100 * (1 + 2 + 3 + 4 + 5 + 6));
    assert.equal(result.threads, 6);
    assert.ok(result.cpu_s >= 0);
  }
});

Deno.test("lua: epaxos mixed sends GETs and 64-byte PUTs over the whole key space", () => {
  const script = wrkScript(spec());
  const { requests, reads, writes } = threadRequests(script, 2, "127.0.0.1:8002", 4000);
  assert.equal(reads + writes, 4000);
  assert.ok(reads > 1800 && reads < 2200, `about half are reads: ${reads}`);
  const indices = new Set<number>();
  for (const request of requests) {
    const match = /^\/kv\/kv-(\d{6})$/.exec(request.path);
    assert.ok(match !== null, request.path);
    const index = Number(match[1]);
    assert.ok(index >= 0 && index < 100_000);
    indices.add(index);
    assert.equal(request.headers.get("host"), "127.0.0.1:8002");
    if (request.method === "GET") {
      assert.equal(request.body, "");
      assert.equal(request.headers.has("content-length"), false);
    } else {
      assert.equal(request.method, "PUT");
      assert.equal(request.body, threadValue("mixed", 2));
      assert.equal(request.headers.get("content-length"), "64");
    }
  }
  assert.equal(requests.filter((request) => request.method === "GET").length, reads);
  assert.ok(indices.size > 3800, `keys spread: ${indices.size} distinct of 4000`);
  const high = [...indices].filter((index) => index >= 50_000).length;
  assert.ok(high > indices.size * 0.4 && high < indices.size * 0.6, "uniform over the range");
});

Deno.test("lua: threads draw different keys, and the same seed draws the same", () => {
  const script = wrkScript(spec({ workload: workload("uniform-writes", 100_000) }));
  const a = threadRequests(script, 1, "h:1", 50).requests.map((request) => request.path);
  const b = threadRequests(script, 2, "h:2", 50).requests.map((request) => request.path);
  const again = threadRequests(script, 1, "h:1", 50).requests.map((request) => request.path);
  assert.notDeepEqual(a, b);
  assert.deepEqual(a, again);
  const reseeded = wrkScript(spec({ workload: workload("uniform-writes", 100_000), seed: 2 }));
  assert.notDeepEqual(threadRequests(reseeded, 1, "h:1", 50).requests.map((r) => r.path), a);
});

Deno.test("lua: epaxos uniform-writes only writes; hot-key writes one key", () => {
  const uniform = threadRequests(
    wrkScript(spec({ workload: workload("uniform-writes", 100_000) })),
    1,
    "h:1",
    500,
  );
  assert.equal(uniform.reads, 0);
  assert.ok(uniform.requests.every((request) => request.method === "PUT"));
  const hot = threadRequests(
    wrkScript(spec({ workload: workload("hot-key", 100_000) })),
    3,
    "h:3",
    200,
  );
  assert.equal(hot.reads, 0);
  assert.ok(hot.requests.every((request) => request.method === "PUT"));
  assert.deepEqual(
    new Set(hot.requests.map((request) => request.path)),
    new Set(["/kv/hot000000"]),
  );
  assert.equal(hot.requests[0]!.body, threadValue("hot-key", 3));
});

Deno.test("lua: etcd requests are gateway JSON with base64 keys and values", () => {
  for (const prefix of ["/v3", "/v3beta"]) {
    const script = wrkScript(spec({ system: "etcd", etcdApiPrefix: prefix }));
    const { requests, reads, writes } = threadRequests(script, 4, "127.0.0.1:2379", 2000);
    assert.equal(reads + writes, 2000);
    assert.ok(reads > 850 && reads < 1150, `about half are reads: ${reads}`);
    for (const request of requests) {
      assert.equal(request.method, "POST");
      assert.equal(request.headers.get("host"), "127.0.0.1:2379");
      assert.equal(request.headers.get("content-type"), "application/json");
      assert.equal(Number(request.headers.get("content-length")), request.body.length);
      const body = JSON.parse(request.body);
      assert.match(atob(body.key), /^kv-\d{6}$/);
      assert.ok(Number(atob(body.key).slice(3)) < 100_000);
      if (request.path === `${prefix}/kv/range`) {
        assert.deepEqual(Object.keys(body), ["key"]);
      } else {
        assert.equal(request.path, `${prefix}/kv/put`);
        assert.deepEqual(Object.keys(body), ["key", "value"]);
        assert.equal(atob(body.value), threadValue("mixed", 4));
      }
    }
  }
  const hot = threadRequests(
    wrkScript(spec({ system: "etcd", etcdApiPrefix: "/v3", workload: workload("hot-key", 10) })),
    1,
    "h:1",
    100,
  );
  assert.ok(hot.requests.every((request) => JSON.parse(request.body).key === base64("hot000000")));
});

Deno.test("lua: the generator refuses what it cannot express", () => {
  assert.throws(() => wrkScript(spec({ threads: 0 })), /Threads/);
  assert.throws(() => wrkScript(spec({ threads: 65 })), /Threads/);
  assert.throws(() => wrkScript(spec({ targets: [] })), /at least one target/);
  assert.throws(() => wrkScript(spec({ system: "etcd" })), /API prefix/);
  assert.throws(
    () => wrkScript(spec({ workload: { ...workload("mixed", 10), keyPrefix: "ab" } })),
    /three bytes/,
  );
  assert.throws(() => wrkScript(spec({ targets: [{ host: 'a"b\n', port: 1 }] })), /ASCII/);
});

// --- Result parsing ----------------------------------------------------------

const line = (fields: Record<string, unknown>) =>
  `${RESULT_MARKER} ${
    JSON.stringify({
      requests: 100,
      duration_us: 1_000_000,
      bytes: 1000,
      errors: { connect: 0, read: 0, write: 0, status: 0, timeout: 0 },
      latency_us: { min: 1, mean: 2, max: 3, p50: 2, p90: 2, p99: 3, p999: 3 },
      sent_reads: 0,
      sent_writes: 100,
      threads: 3,
      cpu_s: 0.5,
      ...fields,
    })
  }`;

Deno.test("wrk output: the result line is found and checked", () => {
  const wrkText = "Running 10s test @ http://127.0.0.1:1/\n  3 threads and 255 connections\n";
  assert.equal(parseWrkOutput(`${wrkText}${line({})}\n`).requests, 100);
  assert.equal(
    parseWrkOutput(line({ requests: 0, latency_us: null })).latency_us,
    null,
    "no latency when nothing completed",
  );
  assert.throws(() => parseWrkOutput(wrkText), /printed no BENCH_THROUGHPUT_RESULT line/);
  assert.throws(() => parseWrkOutput(`${RESULT_MARKER} {"requests":`), /not JSON/);
  assert.throws(() => parseWrkOutput(line({ requests: -1 })), /requests/);
  assert.throws(() => parseWrkOutput(line({ errors: null })), /errors/);
  assert.throws(() => parseWrkOutput(line({ latency_us: null })), /latency/);
  assert.throws(
    () => parseWrkOutput(line({ latency_us: { min: 1, mean: 1, max: 1, p50: 1, p90: 1, p99: 1 } })),
    /latency.p999/,
  );
  assert.throws(() => parseWrkOutput(line({ cpu_s: "x" })), /cpu_s/);
});

// --- Summaries, merging, tables --------------------------------------------------

function wrkResult(overrides: Partial<WrkRunResult> = {}): WrkRunResult {
  return {
    requests: 10_000,
    duration_us: 2_000_000,
    bytes: 1,
    errors: { connect: 0, read: 0, write: 0, status: 100, timeout: 2 },
    latency_us: {
      min: 100,
      mean: 5000,
      max: 90_000,
      p50: 4000,
      p90: 8000,
      p99: 12_345,
      p999: 50_000,
    },
    sent_reads: 5000,
    sent_writes: 5100,
    threads: 3,
    cpu_s: 0.5,
    connections: 255,
    machine_cpu_pct: 97.25,
    ...overrides,
  };
}

Deno.test("summaries: ops/s counts successes; latencies in ms", () => {
  const run = summarizeRun(wrkResult());
  assert.equal(run.ops_per_s, 4950); // (10,000 - 100 error statuses) / 2 s
  assert.equal(run.errors, 102);
  assert.equal(run.p50_ms, 4);
  assert.equal(run.p99_ms, 12.35);
  assert.equal(run.p999_ms, 50);
  assert.equal(run.wrk_cpu_pct, 25);
  assert.equal(run.machine_cpu_pct, 97.3);
  assert.equal(run.duration_s, 2);
  const empty = summarizeRun(wrkResult({ requests: 0, latency_us: null, duration_us: 0 }));
  assert.equal(empty.ops_per_s, 0);
  assert.equal(empty.p99_ms, null);
});

Deno.test("merging: the issue's fields, ratio, and etcd left out", () => {
  const epaxos = summarizeRun(wrkResult());
  const etcd = summarizeRun(
    wrkResult({ requests: 20_000, errors: { ...wrkResult().errors, status: 0 } }),
  );
  const merged = mergeWorkload("mixed", epaxos, etcd);
  assert.equal(merged.name, "mixed");
  assert.equal(merged.epaxos_ops_per_s, 4950);
  assert.equal(merged.etcd_ops_per_s, 10_000);
  assert.equal(merged.epaxos_p99_ms, 12.35);
  assert.equal(merged.etcd_p99_ms, 12.35);
  assert.equal(merged.ratio, 0.495);
  assert.equal(merged.etcd_errors, 2);
  const alone = mergeWorkload("hot-key", epaxos, null);
  assert.equal(alone.etcd_ops_per_s, null);
  assert.equal(alone.etcd_p99_ms, null);
  assert.equal(alone.ratio, null);

  const report: ThroughputReport = {
    workloads: [merged, alone],
    replicas: 3,
    connections: 256,
    duration_s: 15,
    warmup_s: 3,
    keys: 100_000,
    value_bytes: 64,
    etcd: { version: "3.4.23", members: 3, api_prefix: "/v3" },
    wrk: "wrk 4.1.0",
    cpus: 2,
    idle_machine_cpu_pct: 3.5,
    started_at: "2026-01-01T00:00:00.000Z",
    failures: [],
  };
  const json = JSON.parse(JSON.stringify(report));
  for (const field of ["workloads", "replicas", "connections"]) assert.ok(field in json);
  for (
    const field of ["name", "epaxos_ops_per_s", "etcd_ops_per_s", "epaxos_p99_ms", "etcd_p99_ms"]
  ) {
    assert.ok(field in json.workloads[0], field);
    assert.ok(field in json.workloads[1], field);
  }
  const table = resultTable(report);
  assert.match(table, /etcd 3\.4\.23, 3 members; 256 connections/);
  assert.match(table, /; 2 CPUs, 3\.5% busy with the clusters idle/);
  assert.match(table, /\| mixed \| 4950 \| 10000 \| 0\.49 \| 4\.0 \/ 12\.3 \/ 50\.0 \|/);
  assert.match(table, /\| hot-key \| 4950 \| - \| - \| .* \| - \| 102 \/ - \|/);
  const details = detailTable(report);
  assert.match(details, /\| mixed \| epaxos \| 10000 \| 5000 \/ 5100 \| status 100, timeout 2 \|/);
  assert.match(details, /\| mixed \| epaxos \|.*\| - \| - \|$/m);
  const withCpu = detailTable({
    ...report,
    workloads: [mergeWorkload("mixed", {
      ...epaxos,
      server_cpu_pct: 165.2,
      server_cpu_us_per_op: 333.7,
      server_process_cpu_pct: { main: 38.4, v8: 8, blocking: 9.1, other: 0.6 },
    }, null)],
  });
  assert.match(withCpu, /\| 165, 334; 38 \/ 8 \/ 9 \/ 1 \| - \|$/m);
  assert.equal(details.split("\n").length, 2 + 3);
  assert.match(
    resultTable({ ...report, etcd: { skipped: "--skip-etcd given" } }),
    /etcd skipped: --skip-etcd given/,
  );
});

// --- Read-back checks -----------------------------------------------------------------

Deno.test("read-back: values must be the benchmark's, present, consistent, and some from the run", () => {
  const base = {
    system: "epaxos",
    workload: "uniform-writes",
    writes: 200_000,
    keyCount: 100_000,
    preloaded: true,
    knownTags: ["preload", "uniform-writes", "mixed", "hot-key"],
  };
  const mine = threadValue("uniform-writes", 1);
  const old = threadValue("preload", 0);
  const samples = Array.from(
    { length: 100 },
    (_, i) => ({ key: keyName("kv-", i), value: i % 2 === 0 ? mine : old }),
  );
  assert.equal(checkReadback({ ...base, samples }), null);
  // Nothing from this run although it wrote twice the key space.
  assert.match(
    checkReadback({ ...base, samples: samples.map((s) => ({ ...s, value: old })) })!,
    /none of 100 sampled keys holds a value this run wrote/,
  );
  // Few writes: not finding them is no failure.
  assert.equal(
    checkReadback({ ...base, writes: 10, samples: samples.map((s) => ({ ...s, value: old })) }),
    null,
  );
  const broken = checkReadback({
    ...base,
    samples: [...samples, { key: "kv-000999", value: null }, { key: "kv-000998", value: "junk" }],
  })!;
  assert.match(broken, /^epaxos uniform-writes: read-back failed: /);
  assert.match(broken, /kv-000999 is missing/);
  assert.match(broken, /kv-000998 holds "junk"/);
  assert.equal(
    checkReadback({ ...base, preloaded: false, samples: [...samples, { key: "x", value: null }] }),
    null,
    "absent keys are fine without a preload",
  );
  // The hot key read through three replicas must read the same.
  const hot = { ...base, workload: "hot-key", keyCount: 1, writes: 5 };
  const a = threadValue("hot-key", 1);
  const b = threadValue("hot-key", 2);
  assert.equal(
    checkReadback({
      ...hot,
      samples: [{ key: "hot000000", value: a }, { key: "hot000000", value: a }],
    }),
    null,
  );
  assert.match(
    checkReadback({
      ...hot,
      samples: [{ key: "hot000000", value: a }, { key: "hot000000", value: b }],
    })!,
    /reads differently/,
  );
  assert.match(
    checkReadback({ ...hot, samples: [{ key: "hot000000", value: old }] })!,
    /none of 1 sampled keys/,
  );
});

// --- CPU accounting, etcd helpers -------------------------------------------------------------

Deno.test("cpu: /proc/stat parsing and busy share", () => {
  const before = parseProcStat(
    "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n",
  );
  assert.deepEqual(before, { busy: 150, total: 1000, cpus: 2 });
  const after = parseProcStat("cpu  250 0 100 850 100 0 0 0 0 0\n");
  assert.equal(busyPercent(before, after), 200 / 300 * 100);
  assert.equal(busyPercent(after, after), null);
  assert.throws(() => parseProcStat("intr 1\n"), /no cpu line/);
  assert.throws(() => parseProcStat("cpu  a b c d\n"), /Malformed/);
  assert.equal(lastLines("a\n\nb\nc\n", 2), "b | c");
});

Deno.test("threads: stat lines, groups, and CPU by group over a run", async () => {
  const line = (tid: number, name: string, utime: number, stime: number) =>
    `${tid} (${name}) S 1 ${tid} ${tid} 0 -1 4194560 100 0 0 0 ${utime} ${stime} 0 0 20 0 5 0 1`;
  assert.deepEqual(parseTaskStat(line(7, "deno", 120, 30)), { tid: 7, name: "deno", ticks: 150 });
  // A name may hold spaces and parentheses; fields count from the last ")".
  assert.deepEqual(parseTaskStat(line(8, "V8 DefaultWorke", 5, 1)), {
    tid: 8,
    name: "V8 DefaultWorke",
    ticks: 6,
  });
  assert.deepEqual(parseTaskStat(line(9, "a) (b", 1, 2))?.name, "a) (b");
  assert.equal(parseTaskStat("not a stat line"), undefined);

  // Process 7 has four threads; process 20 one. The process line comes first.
  const sample = (process7: number, ticks: readonly (number | undefined)[]) =>
    parseCpuSample(
      [
        "process 7",
        line(7, "deno", process7, 0),
        "threads 7",
        line(7, "deno", ticks[0]!, 0),
        line(8, "V8 DefaultWorke", ticks[1]!, 0),
        ...(ticks[2] === undefined ? [] : [line(9, "sw-0", ticks[2], 0)]),
        line(10, "tokio-runtime-w", ticks[3]!, 0),
        "process 20",
        line(20, "deno", ticks[4]!, 0),
        "threads 20",
        line(20, "deno", ticks[4]!, 0),
        "",
      ].join("\n"),
    );
  const before = sample(120, [100, 10, 10, 0, 100]);
  assert.deepEqual(before.processes, new Map([[7, 120], [20, 100]]));
  assert.deepEqual(before.threads.map((s) => threadGroup(s)), [
    "main",
    "v8",
    "blocking",
    "other",
    "main",
  ]);
  assert.equal(before.threads[4]!.pid, 20);
  // Over 2 s: process 7's main thread 80 ticks (40 % of a core), process 20's 40 (20 %).
  const after = sample(244, [180, 30, 30, 4, 140]);
  const cpu = cpuBreakdown(before, after, 2);
  assert.equal(cpu.processes, 2);
  assert.equal(cpu.total_pct, (80 + 20 + 20 + 4 + 40) / 2);
  assert.deepEqual(cpu.per_process_pct, { main: 30, v8: 5, blocking: 5, other: 1 });
  assert.equal(cpuMicrosPerOp(cpu, 8200), 100);
  assert.equal(cpuMicrosPerOp(cpu, 0), null);
  assert.match(describeBreakdown(cpu), /^2 processes, 82% of a core; each main 30%, v8 5%/);
  // The blocking thread exited during the run: its time still counts, in the
  // process total, as "other" (the process's 124 ticks less its live threads' 104).
  const exited = cpuBreakdown(before, sample(244, [180, 30, undefined, 4, 140]), 2);
  assert.equal(exited.total_pct, cpu.total_pct);
  assert.deepEqual(exited.per_process_pct, { main: 30, v8: 5, blocking: 0, other: 6 });
  // A process missing from the first sample is not counted.
  const only7: CpuSample = {
    processes: new Map([[7, 120]]),
    threads: before.threads.filter((s) => s.pid === 7),
  };
  assert.equal(cpuBreakdown(only7, after, 2).processes, 1);

  // This process, read for real: its main thread is there, named.
  if (Deno.build.os === "linux") {
    // A process that is not there reads as nothing, not as 0 % CPU.
    assert.equal(await sampleCpu([2 ** 30]), undefined);
    const own = await sampleCpu([Deno.pid]);
    assert.ok(own !== undefined, "/proc is readable on Linux");
    assert.ok(own.processes.get(Deno.pid)! >= 0);
    assert.ok(own.threads.some((s) => s.tid === Deno.pid && threadGroup(s) === "main"));
  }
});

Deno.test("etcd: version, gateway prefix, member flags", () => {
  assert.equal(
    parseEtcdVersion("etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n"),
    "3.4.23",
  );
  assert.equal(parseEtcdVersion("nonsense"), undefined);
  assert.equal(gatewayPrefix("3.4.23"), "/v3");
  assert.equal(gatewayPrefix("3.5.0"), "/v3");
  assert.equal(gatewayPrefix("3.3.25"), "/v3beta");
  assert.equal(gatewayPrefix("3.2.0"), "/v3alpha");
  const args = etcdMemberArgs({
    index: 1,
    dataDir: "/tmp/x/m1",
    clientPorts: [1000, 1001, 1002],
    peerPorts: [2000, 2001, 2002],
    token: "t",
  });
  assert.ok(args.includes("--name=m1"));
  assert.ok(args.includes("--data-dir=/tmp/x/m1"));
  assert.ok(args.includes("--listen-client-urls=http://127.0.0.1:1001"));
  assert.ok(args.includes("--initial-advertise-peer-urls=http://127.0.0.1:2001"));
  assert.ok(
    args.includes(
      "--initial-cluster=m0=http://127.0.0.1:2000,m1=http://127.0.0.1:2001,m2=http://127.0.0.1:2002",
    ),
  );
  assert.ok(args.includes("--initial-cluster-state=new"));
  assert.ok(!args.some((arg) => arg.includes("unsafe-no-fsync")), "default durability");
});
