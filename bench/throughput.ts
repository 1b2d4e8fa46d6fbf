/**
 * `deno task bench:throughput [--replicas N] [--duration S] [--connections C]
 * [--workloads a,b] [--skip-etcd] [--out FILE]`: closed-loop throughput of
 * epaxos-kv against etcd, side by side in one run (issue 6).
 *
 * The replicas run as separate processes with real Deno KV files (the command
 * line `deno task start` uses); the load comes from wrk, a separate process,
 * with one thread per replica so its connections spread evenly over all of
 * them. Values are 64 bytes. Workloads: `uniform-writes` (keys uniform over
 * 100,000), `mixed` (the same keys, half reads, half writes) and `hot-key`
 * (every write to one key). Before the first workload every key is written
 * once, so reads find values. Each workload runs on epaxos-kv and then on
 * etcd, each preceded by a warm-up whose numbers are discarded.
 *
 * etcd (Debian package `etcd-server`, installed when missing and running as
 * root) runs three members on loopback with their default durability, driven
 * through its gRPC gateway (`/v3/kv/put`, `/v3/kv/range`) by the same wrk
 * with the same connection count. Where it cannot run, its numbers are null
 * and the reason is printed.
 *
 * After each run a sample of keys is read back through different replicas:
 * values must be ones the benchmark wrote and some must come from that run,
 * and the replicas must converge at the end, so that a broken store fails the
 * benchmark (exit 1) instead of reporting fast numbers.
 *
 * Prints a Markdown table (ops/s, their ratio, p50/p99/p999 latency, errors)
 * and a detail table (errors by kind, wrk's and the machine's CPU use, the
 * servers' CPU use and CPU time per operation, one server's CPU by thread
 * group from `/proc` (`throughput/threads.ts`), the EPaxos fast-path share);
 * `--out` writes the JSON report:
 * `{"workloads": [{"name", "epaxos_ops_per_s", "etcd_ops_per_s",
 * "epaxos_p99_ms", "etcd_p99_ms", ...}], "replicas", "connections", ...}`.
 *
 * @module
 */

import { UsageError } from "../src/cli/args.ts";
import { type ProcessCluster, startProcessCluster } from "../src/chaos/process_cluster.ts";
import {
  ensureEtcd,
  type EtcdCluster,
  type EtcdInstall,
  etcdPost,
  startEtcdCluster,
} from "./throughput/etcd.ts";
import { type System, type Target, targetsOf, threadValue } from "./throughput/lua.ts";
import {
  keyName,
  parseThroughputArgs,
  type ThroughputOptions,
  USAGE,
  VALUE_BYTES,
  type Workload,
  workload,
  WORKLOAD_NAMES,
} from "./throughput/options.ts";
import { busyPercent, cpuTimes, killTracked } from "./throughput/processes.ts";
import {
  cpuBreakdown,
  cpuMicrosPerOp,
  describeBreakdown,
  sampleCpu,
} from "./throughput/threads.ts";
import {
  checkReadback,
  detailTable,
  mergeWorkload,
  type ReadbackSample,
  resultTable,
  summarizeRun,
  type SystemRun,
  type ThroughputReport,
  type WorkloadReport,
} from "./throughput/report.ts";
import { ensureWrk, runWrk, WrkUnavailable, wrkVersion } from "./throughput/wrk.ts";

/** Keys read back after each run of a uniform workload. */
const READBACK_SAMPLES = 100;

/** Concurrent requests of the preload. */
const PRELOAD_CONCURRENCY = 128;

/**
 * Before each warm-up (and after the preload) the run waits, at most this
 * long, until the machine is no busier than with the clusters idle plus a
 * margin, so that one system's background work after its run (compaction,
 * garbage collection) does not fall into the other's measurement.
 */
const SETTLE_LIMIT_MS = 20_000;
const SETTLE_SAMPLE_MS = 1000;
const SETTLE_MARGIN_PCT = 5;

/** The value tag of the preload. */
const PRELOAD_TAG = "preload";

/** Every tag a value this benchmark writes can carry. */
const KNOWN_TAGS = [PRELOAD_TAG, ...WORKLOAD_NAMES];

/** A system under test, as the benchmark drives it. */
interface SystemUnderTest {
  readonly name: System;
  /** Where wrk threads send their requests. */
  readonly targets: readonly Target[];
  /** etcd's gateway prefix. */
  readonly apiPrefix?: string;
  /** Writes `value` at `key` through target `via`; throws on failure. */
  put(via: number, key: string, value: string): Promise<void>;
  /** Reads `key` through target `via`: its value, or null when absent; throws on failure. */
  get(via: number, key: string): Promise<string | null>;
  /** EPaxos only: fast and slow commits summed over every replica. */
  commits?(): Promise<{ fast: number; slow: number }>;
  /** EPaxos only: counters of `/metrics` summed over every replica. */
  counters?(): Promise<Map<string, number>>;
  /** The server processes, for CPU accounting by thread. */
  pids(): number[];
}

/** The `/metrics` series a run reports on, summed over replicas. */
const COUNTER_SERIES = [
  "epaxos_batch_commands_sum",
  "epaxos_batch_commands_count",
  "epaxos_storage_commit_duration_seconds_sum",
  "epaxos_storage_commit_duration_seconds_count",
  "epaxos_peer_batches_received_total",
  "epaxos_peer_messages_received_total",
];

/** Sums the unlabelled series named in {@link COUNTER_SERIES} from Prometheus texts. */
export function sumSeries(texts: readonly string[]): Map<string, number> {
  const sums = new Map<string, number>(COUNTER_SERIES.map((name) => [name, 0]));
  for (const text of texts) {
    for (const line of text.split("\n")) {
      const [name, value] = line.split(" ");
      if (name !== undefined && sums.has(name)) sums.set(name, sums.get(name)! + Number(value));
    }
  }
  return sums;
}

/** What the replicas did during a run, from `/metrics` counters before and after. */
export function describeCounters(
  before: Map<string, number>,
  after: Map<string, number>,
  seconds: number,
  replicas: number,
): string {
  const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  const instances = delta("epaxos_batch_commands_count");
  const commits = delta("epaxos_storage_commit_duration_seconds_count");
  const batches = delta("epaxos_peer_batches_received_total");
  return [
    `${(instances / seconds).toFixed(0)} instances/s of ${
      instances === 0 ? "-" : (delta("epaxos_batch_commands_sum") / instances).toFixed(1)
    } commands`,
    `${(commits / seconds / replicas).toFixed(0)} storage commits/s per replica of ${
      commits === 0
        ? "-"
        : (1000 * delta("epaxos_storage_commit_duration_seconds_sum") / commits).toFixed(2)
    } ms`,
    `${(batches / seconds / replicas).toFixed(0)} peer batches/s received per replica of ${
      batches === 0 ? "-" : (delta("epaxos_peer_messages_received_total") / batches).toFixed(1)
    } messages`,
  ].join(", ");
}

function epaxosSystem(cluster: ProcessCluster): SystemUnderTest {
  const { urls } = cluster;
  return {
    name: "epaxos",
    targets: targetsOf(urls),
    pids: () => urls.flatMap((_, id) => cluster.pid(id) ?? []),
    async put(via, key, value) {
      const response = await fetch(`${urls[via % urls.length]}/kv/${key}`, {
        method: "PUT",
        body: value,
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`PUT ${key}: ${response.status} ${text.slice(0, 200)}`);
    },
    async get(via, key) {
      const response = await fetch(`${urls[via % urls.length]}/kv/${key}`, {
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      if (response.status === 404) return null;
      if (!response.ok) throw new Error(`GET ${key}: ${response.status} ${text.slice(0, 200)}`);
      return text;
    },
    async counters() {
      return sumSeries(
        await Promise.all(urls.map(async (url) => {
          const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
          return await response.text();
        })),
      );
    },
    async commits() {
      const statuses = await Promise.all(urls.map(async (url) => {
        const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(10_000) });
        return await response.json();
      }));
      return {
        fast: statuses.reduce((sum, status) => sum + status.commits.fast, 0),
        slow: statuses.reduce((sum, status) => sum + status.commits.slow, 0),
      };
    },
  };
}

function etcdSystem(cluster: EtcdCluster): SystemUnderTest {
  const { clientUrls, apiPrefix } = cluster;
  const url = (via: number, path: string) =>
    `${clientUrls[via % clientUrls.length]}${apiPrefix}${path}`;
  return {
    name: "etcd",
    targets: targetsOf(clientUrls),
    pids: () => [...cluster.pids],
    apiPrefix,
    async put(via, key, value) {
      await etcdPost(url(via, "/kv/put"), { key: btoa(key), value: btoa(value) }, 10_000);
    },
    async get(via, key) {
      const answer = await etcdPost(url(via, "/kv/range"), { key: btoa(key) }, 10_000);
      const kvs = answer.kvs as { value?: string }[] | undefined;
      if (kvs === undefined || kvs.length === 0) return null;
      return atob(kvs[0]!.value ?? "");
    },
  };
}

/** Writes every key of the uniform workloads once, `PRELOAD_CONCURRENCY` at a time. */
async function preload(system: SystemUnderTest, keys: number): Promise<number> {
  const started = performance.now();
  const value = threadValue(PRELOAD_TAG, 0);
  let next = 0;
  const worker = async () => {
    while (next < keys) {
      const index = next++;
      const key = keyName("kv-", index);
      for (let attempt = 1;; attempt++) {
        try {
          await system.put(index, key, value);
          break;
        } catch (error) {
          if (attempt >= 5) throw new Error(`Preloading ${system.name}: ${error}`);
          await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PRELOAD_CONCURRENCY, keys) }, worker));
  return (performance.now() - started) / 1000;
}

/** Reads a sample of a workload's keys back, each through another target. */
async function readBack(
  system: SystemUnderTest,
  spec: Workload,
  samples: number,
): Promise<ReadbackSample[]> {
  const keys: string[] = [];
  if (spec.keyCount === 1) {
    // The one key, through every target.
    for (let i = 0; i < system.targets.length; i++) keys.push(keyName(spec.keyPrefix, 0));
  } else {
    for (let i = 0; i < samples; i++) {
      keys.push(keyName(spec.keyPrefix, Math.floor(Math.random() * spec.keyCount)));
    }
  }
  const results: ReadbackSample[] = [];
  for (const [i, key] of keys.entries()) {
    results.push({ key, value: await system.get(i, key) });
  }
  return results;
}

/** The machine's busy share over the next `ms` milliseconds, in percent, if known. */
async function machineBusy(ms: number): Promise<number | null> {
  const before = await cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = await cpuTimes();
  return before === undefined || after === undefined ? null : busyPercent(before, after);
}

/** Waits until every replica holds the same state (bounded); returns what differs, or null. */
async function checkConvergence(cluster: ProcessCluster): Promise<string | null> {
  let last = "";
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      const statuses = await Promise.all(cluster.urls.map(async (url) => {
        const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(5000) });
        return await response.json();
      }));
      const digests = statuses.map((status) => `${status.keys}:${status.stateDigest}`);
      if (digests.every((digest) => digest === digests[0])) return null;
      last = digests.join(", ");
    } catch (error) {
      last = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return `epaxos replicas did not converge within 30 s (keys:digest per replica: ${last})`;
}

/** The run was stopped by SIGINT or SIGTERM (every process it started is stopped). */
export class Interrupted extends Error {
  /** Creates the error. */
  constructor() {
    super("Interrupted");
    this.name = "Interrupted";
  }
}

/** Runs the benchmark once; SIGINT or SIGTERM stop it with {@link Interrupted}. */
export async function runThroughput(
  options: ThroughputOptions,
  log: (line: string) => void = () => {},
): Promise<ThroughputReport> {
  const startedAt = new Date().toISOString();
  const wrk = await ensureWrk(log);
  const wrkVersionLine = await wrkVersion(wrk);
  log(`load generator: ${wrkVersionLine}`);
  let etcdInstall: EtcdInstall | { readonly skipped: string } = options.skipEtcd
    ? { skipped: "--skip-etcd given" }
    : await ensureEtcd(log);

  // What is running, for the cleanup; each stop takes its clusters off first,
  // so stopping twice (signal, then finally) stops each cluster once, and the
  // second waits for the first to finish.
  let running: { epaxos?: ProcessCluster; etcd?: EtcdCluster } = {};
  let stopped: Promise<unknown> = Promise.resolve();
  const stopAll = () => {
    killTracked();
    const clusters = running;
    running = {};
    stopped = Promise.all([stopped, clusters.epaxos?.stop(), clusters.etcd?.stop()]);
    return stopped;
  };
  let interrupted = false;
  const throwIfInterrupted = () => {
    if (interrupted) throw new Interrupted();
  };
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    log("interrupted: stopping every process this run started");
    // Whatever the run awaits then fails, and the run ends through `finally`.
    stopAll();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const scriptDir = await Deno.makeTempDir({ prefix: "bench-throughput-" });
  try {
    log(`starting ${options.replicas} epaxos-kv replicas`);
    if (options.cpuProfDir !== undefined) await Deno.mkdir(options.cpuProfDir, { recursive: true });
    const cluster = await startProcessCluster(options.replicas, {
      ...(options.dataRoot === undefined ? {} : { parentDir: options.dataRoot }),
      ...(options.cpuProfDir === undefined ? {} : {
        denoFlags: ["--cpu-prof", `--cpu-prof-dir=${await Deno.realPath(options.cpuProfDir)}`],
      }),
    });
    running.epaxos = cluster;
    throwIfInterrupted();
    const systems: SystemUnderTest[] = [epaxosSystem(cluster)];
    let etcdCluster: EtcdCluster | undefined;
    if (!("skipped" in etcdInstall)) {
      log(`starting 3 etcd ${etcdInstall.version} members`);
      try {
        etcdCluster = await startEtcdCluster(etcdInstall, {
          ...(options.dataRoot === undefined ? {} : { parentDir: options.dataRoot }),
        });
        running.etcd = etcdCluster;
        throwIfInterrupted();
        systems.push(etcdSystem(etcdCluster));
        log(`etcd gateway at ${etcdCluster.apiPrefix}`);
      } catch (error) {
        throwIfInterrupted();
        etcdInstall = { skipped: `etcd did not start: ${(error as Error).message}` };
      }
    }
    if ("skipped" in etcdInstall) log(`etcd skipped: ${etcdInstall.skipped}`);

    // What both clusters cost the machine while idle: the baseline for the
    // CPU columns and for waiting until background work of a run has ended.
    const cpus = (await cpuTimes())?.cpus ?? null;
    const idle = await machineBusy(3000);
    log(`machine ${idle === null ? "?" : idle.toFixed(1)}% busy with every cluster idle`);

    const specs = options.workloads.map((name) => workload(name, options.keys));
    const preloaded = !options.skipPreload && specs.some((spec) => spec.keyPrefix === "kv-");
    if (preloaded) {
      for (const system of systems) {
        throwIfInterrupted();
        log(`${system.name}: writing all ${options.keys} keys once`);
        const seconds = await preload(system, options.keys);
        log(
          `${system.name}: preloaded in ${seconds.toFixed(1)} s (${
            (options.keys / seconds).toFixed(0)
          } puts/s from Deno's fetch, not a measurement)`,
        );
      }
    }

    const settle = async (what: string) => {
      if (idle === null) return;
      const started = performance.now();
      for (;;) {
        const busy = await machineBusy(SETTLE_SAMPLE_MS);
        const waited = (performance.now() - started) / 1000;
        if (busy === null || busy <= idle + SETTLE_MARGIN_PCT) {
          if (waited > 1.5) log(`${what}: machine settled after ${waited.toFixed(0)} s`);
          return;
        }
        if (waited * 1000 > SETTLE_LIMIT_MS) {
          log(`${what}: machine still ${busy.toFixed(0)}% busy after ${waited.toFixed(0)} s`);
          return;
        }
      }
    };
    if (preloaded) await settle("after the preload");

    const failures: string[] = [];
    const workloads: WorkloadReport[] = [];
    for (const spec of specs) {
      const runs = new Map<System, SystemRun>();
      for (const system of systems) {
        throwIfInterrupted();
        const threads = system.targets.length;
        const script = {
          system: system.name,
          ...(system.apiPrefix === undefined ? {} : { etcdApiPrefix: system.apiPrefix }),
          targets: system.targets,
          threads,
          workload: spec,
          seed: options.seed,
        };
        const wrkRun = {
          wrk,
          dir: scriptDir,
          script,
          connections: options.connections,
          timeoutS: options.timeoutS,
        };
        await settle(`${system.name} ${spec.name}`);
        if (options.warmupS > 0) {
          log(`${system.name} ${spec.name}: warm-up ${options.warmupS} s`);
          await runWrk({ ...wrkRun, durationS: options.warmupS });
        }
        const before = await system.commits?.();
        const countersBefore = await system.counters?.();
        log(`${system.name} ${spec.name}: measuring ${options.durationS} s`);
        const threadsBefore = await sampleCpu(system.pids());
        const sampledAt = performance.now();
        const measured = summarizeRun(await runWrk({ ...wrkRun, durationS: options.durationS }));
        const threadsAfter = await sampleCpu(system.pids());
        const cpu = threadsBefore === undefined || threadsAfter === undefined
          ? undefined
          : cpuBreakdown(threadsBefore, threadsAfter, (performance.now() - sampledAt) / 1000);
        const summary: SystemRun = cpu === undefined ? measured : {
          ...measured,
          server_cpu_pct: cpu.total_pct,
          server_cpu_us_per_op: cpuMicrosPerOp(cpu, measured.ops_per_s),
          server_process_cpu_pct: cpu.per_process_pct,
        };
        if (cpu !== undefined) {
          log(
            `${system.name} ${spec.name}: servers ${describeBreakdown(cpu)}; ` +
              `${summary.server_cpu_us_per_op} µs of server CPU per operation`,
          );
        }
        throwIfInterrupted();
        const after = await system.commits?.();
        const countersAfter = await system.counters?.();
        if (countersBefore !== undefined && countersAfter !== undefined) {
          log(
            `${system.name} ${spec.name}: ${
              describeCounters(countersBefore, countersAfter, options.durationS, threads)
            }`,
          );
        }
        const fast = before === undefined || after === undefined
          ? undefined
          : { fast: after.fast - before.fast, slow: after.slow - before.slow };
        const run: SystemRun = fast === undefined ? summary : {
          ...summary,
          fast_path_ratio: fast.fast + fast.slow === 0
            ? null
            : Number((fast.fast / (fast.fast + fast.slow)).toFixed(4)),
        };
        runs.set(system.name, run);
        log(
          `${system.name} ${spec.name}: ${run.ops_per_s.toFixed(0)} ops/s, p50 ${run.p50_ms} ms, ` +
            `p99 ${run.p99_ms} ms, p999 ${run.p999_ms} ms, ${run.errors} errors, ` +
            `wrk ${run.wrk_cpu_pct}% of a core, machine ${run.machine_cpu_pct}% busy`,
        );
        if (run.requests > 0 && run.errors > run.requests * 0.01) {
          log(`warning: ${system.name} ${spec.name}: ${run.errors} errors in ${run.requests}`);
        }
        // wrk stops with requests in flight: let them finish before reading back.
        await new Promise((resolve) => setTimeout(resolve, 2000));
        const problem = checkReadback({
          system: system.name,
          workload: spec.name,
          samples: await readBack(system, spec, READBACK_SAMPLES),
          writes: run.sent_writes,
          keyCount: spec.keyCount,
          preloaded: preloaded && spec.keyPrefix === "kv-",
          knownTags: KNOWN_TAGS,
        });
        if (problem === null) {
          log(`${system.name} ${spec.name}: read-back ok`);
        } else {
          log(problem);
          failures.push(problem);
        }
      }
      workloads.push(mergeWorkload(spec.name, runs.get("epaxos")!, runs.get("etcd") ?? null));
    }
    const divergence = await checkConvergence(cluster);
    if (divergence === null) {
      log("epaxos replicas converged to the same state");
    } else {
      log(divergence);
      failures.push(divergence);
    }
    return {
      workloads,
      replicas: options.replicas,
      connections: options.connections,
      duration_s: options.durationS,
      warmup_s: options.warmupS,
      keys: options.keys,
      value_bytes: VALUE_BYTES,
      etcd: "skipped" in etcdInstall ? { skipped: etcdInstall.skipped } : {
        version: etcdInstall.version,
        members: 3,
        api_prefix: etcdCluster!.apiPrefix,
      },
      wrk: wrkVersionLine,
      cpus,
      idle_machine_cpu_pct: idle === null ? null : Number(idle.toFixed(1)),
      started_at: startedAt,
      failures,
    };
  } catch (error) {
    throwIfInterrupted();
    throw error;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    const profiled = running.epaxos;
    if (options.cpuProfDir !== undefined && profiled !== undefined && !interrupted) {
      // V8 writes a CPU profile only when the process exits on its own.
      await Promise.all(
        profiled.urls.map((_, id) => profiled.kill(id, "SIGTERM")),
      );
      log(`CPU profiles written to ${options.cpuProfDir}`);
    }
    await stopAll();
    await Deno.remove(scriptDir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  let options: ThroughputOptions;
  try {
    options = parseThroughputArgs(Deno.args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n${USAGE}`);
    Deno.exit(2);
  }
  let report: ThroughputReport;
  try {
    report = await runThroughput(options, (line) => console.error(line));
  } catch (error) {
    if (error instanceof WrkUnavailable) {
      console.error(error.message);
      Deno.exit(1);
    }
    if (error instanceof Interrupted) Deno.exit(130);
    throw error;
  }
  console.log(resultTable(report));
  console.log();
  console.log(detailTable(report));
  if (options.out !== undefined) {
    const dir = options.out.includes("/") ? options.out.slice(0, options.out.lastIndexOf("/")) : "";
    if (dir !== "") await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(options.out, JSON.stringify(report, null, 2) + "\n");
    console.error(`wrote ${options.out}`);
  }
  if (report.failures.length > 0) {
    console.error(`FAILED:\n${report.failures.join("\n")}`);
    Deno.exit(1);
  }
}
