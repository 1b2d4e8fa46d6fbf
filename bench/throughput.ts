/**
 * `deno task bench:throughput [--replicas N] [--duration S] [--connections C]
 * [--workloads a,b] [--runs N] [--skip-etcd] [--tls] [--out FILE]`: closed-loop
 * throughput of epaxos-kv against etcd, side by side in one run (issue 6).
 *
 * The replicas run as separate processes with real Deno KV files (the command
 * line `deno task start` uses); the load comes from wrk, a separate process,
 * with one thread per replica so its connections spread evenly over all of
 * them. Values are 64 bytes. Workloads: `uniform-writes` (keys uniform over
 * 100,000), `mixed` (the same keys, half reads, half writes) and `hot-key`
 * (every write to one key). Before the first workload every key is written
 * once, so reads find values.
 *
 * etcd (Debian package `etcd-server`, installed when missing and running as
 * root) runs three members on loopback with their default durability, and is
 * measured twice: through its native gRPC API by `etcd_load`, a small Go
 * program on etcd's own client built offline from Debian's packages
 * (`throughput/etcd_load.ts`), with `--connections` clients over
 * `--grpc-connections` gRPC connections as etcd's benchmark tool runs; and
 * through its JSON gateway (`/v3/kv/put`, `/v3/kv/range`) by the same wrk
 * with the same connection count. `etcd_ops_per_s` is the gRPC figure, the
 * one etcd's users see; `etcd_gateway_ops_per_s` the gateway's. Where etcd
 * (or Go) cannot run, its numbers are null and the reason is printed.
 *
 * Each workload runs `--runs` times (3 by default) on every system,
 * interleaved (epaxos, etcd-grpc, etcd-gateway, epaxos, ...; `runs.ts`), each
 * run preceded by a warm-up whose numbers are discarded; the report gives
 * medians, and ratios of medians.
 *
 * After each run a sample of keys is read back through different replicas:
 * values must be ones the benchmark wrote and some must come from that run,
 * and the replicas must converge at the end, so that a broken store fails the
 * benchmark (exit 1) instead of reporting fast numbers.
 *
 * `--tls` starts a second epaxos-kv cluster whose replicas speak TLS to
 * clients and to each other (`startProcessCluster`'s `tls`: https URLs, a
 * development CA, each replica trusting it alone), measured interleaved with
 * the plain one by the same wrk over https (HTTP/1.1, as wrk speaks), and
 * adds a table of TLS ops/s over plain ops/s (`tls_ratio` in the JSON).
 *
 * Prints a Markdown table (ops/s, their ratios, p50/p99/p999 latency, errors)
 * and a detail table (errors by kind, the load generator's and the machine's
 * CPU use, the servers' CPU use and CPU time per operation, one server's CPU
 * by thread group from `/proc` (`throughput/threads.ts`), the EPaxos
 * fast-path share); `--out` writes the JSON report:
 * `{"workloads": [{"name", "epaxos_ops_per_s", "etcd_ops_per_s",
 * "epaxos_p99_ms", "etcd_p99_ms", "ratio", "etcd_gateway_ops_per_s", ...,
 * "epaxos_ops_per_s_runs", ...}], "replicas", "connections", "runs", ...}`.
 *
 * @module
 */

import { UsageError } from "../src/cli/args.ts";
import { type ProcessCluster, startProcessCluster } from "../src/chaos/process_cluster.ts";
import {
  ensureEtcd,
  type EtcdCluster,
  type EtcdInstall,
  startEtcdCluster,
} from "./throughput/etcd.ts";
import { ensureEtcdLoad, type EtcdLoadInstall, runEtcdLoad } from "./throughput/etcd_load.ts";
import { threadValue } from "./throughput/lua.ts";
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
  type ReadbackSample,
  resultTable,
  type Side,
  summarizeRun,
  type SystemRun,
  type ThroughputReport,
  type WorkloadReport,
} from "./throughput/report.ts";
import { interleave, mergeRuns } from "./throughput/runs.ts";
import {
  describeCounters,
  epaxosSystem,
  etcdSystems,
  type SystemUnderTest,
} from "./throughput/systems.ts";
import {
  ensureWrk,
  runWrk,
  type WrkRunResult,
  WrkUnavailable,
  wrkVersion,
} from "./throughput/wrk.ts";

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
          if (attempt >= 5) throw new Error(`Preloading ${system.label}: ${error}`);
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
        const response = await cluster.fetch(`${url}/status`, {
          signal: AbortSignal.timeout(5000),
        });
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

/** What a load generator reports: wrk's numbers, and for `etcd_load` its connections. */
type LoadResult = WrkRunResult & {
  readonly grpc_connections?: number;
  readonly first_error?: string;
};

/**
 * One measured run of one system on one workload: a warm-up, the
 * measurement with the servers' CPU by thread and EPaxos's counters around
 * it, then a read-back check. Returns the run and what the check found wrong.
 */
async function measure(args: {
  readonly system: SystemUnderTest;
  readonly spec: Workload;
  /** The run's name in the log. */
  readonly what: string;
  readonly options: ThroughputOptions;
  readonly log: (line: string) => void;
  /** Runs the load for some seconds. */
  readonly load: (durationS: number) => Promise<LoadResult>;
  /** Whether every key of the workload was written before. */
  readonly preloaded: boolean;
}): Promise<{ run: SystemRun; problem: string | null }> {
  const { system, spec, what, options, log, load } = args;
  if (options.warmupS > 0) {
    log(`${what}: warm-up ${options.warmupS} s`);
    await load(options.warmupS);
  }
  const before = await system.commits?.();
  const countersBefore = await system.counters?.();
  log(`${what}: measuring ${options.durationS} s`);
  const threadsBefore = await sampleCpu(system.pids());
  const sampledAt = performance.now();
  const result = await load(options.durationS);
  const threadsAfter = await sampleCpu(system.pids());
  const measured: SystemRun = {
    ...summarizeRun(result),
    ...(result.grpc_connections === undefined ? {} : { grpc_connections: result.grpc_connections }),
  };
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
      `${what}: servers ${describeBreakdown(cpu)}; ` +
        `${summary.server_cpu_us_per_op} µs of server CPU per operation`,
    );
  }
  const after = await system.commits?.();
  const countersAfter = await system.counters?.();
  if (countersBefore !== undefined && countersAfter !== undefined) {
    log(
      `${what}: ${
        describeCounters(countersBefore, countersAfter, options.durationS, system.targets.length)
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
  log(
    `${what}: ${run.ops_per_s.toFixed(0)} ops/s, p50 ${run.p50_ms} ms, ` +
      `p99 ${run.p99_ms} ms, p999 ${run.p999_ms} ms, ${run.errors} errors, ` +
      `load generator ${run.wrk_cpu_pct}% of a core, machine ${run.machine_cpu_pct}% busy`,
  );
  if (run.requests > 0 && run.errors > run.requests * 0.01) {
    log(`warning: ${what}: ${run.errors} errors in ${run.requests}`);
  }
  if (result.first_error !== undefined) log(`${what}: first error: ${result.first_error}`);
  // The load generator stops with requests in flight: let them finish before reading back.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const problem = checkReadback({
    system: system.label,
    workload: spec.name,
    samples: await readBack(system, spec, READBACK_SAMPLES),
    writes: run.sent_writes,
    keyCount: spec.keyCount,
    preloaded: args.preloaded,
    knownTags: KNOWN_TAGS,
  });
  log(problem ?? `${what}: read-back ok`);
  return { run, problem };
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
  const etcdLoad: EtcdLoadInstall | { readonly skipped: string } = "skipped" in etcdInstall
    ? { skipped: etcdInstall.skipped }
    : await ensureEtcdLoad(log);
  if (!("skipped" in etcdInstall)) {
    log(
      "skipped" in etcdLoad
        ? `etcd through gRPC skipped: ${etcdLoad.skipped}`
        : `etcd load generator: ${etcdLoad.description}`,
    );
  }

  // What is running, for the cleanup; each stop takes its clusters off first,
  // so stopping twice (signal, then finally) stops each cluster once, and the
  // second waits for the first to finish.
  let running: { epaxos?: ProcessCluster; epaxosTls?: ProcessCluster; etcd?: EtcdCluster } = {};
  let stopped: Promise<unknown> = Promise.resolve();
  const stopAll = () => {
    killTracked();
    const clusters = running;
    running = {};
    stopped = Promise.all([
      stopped,
      clusters.epaxos?.stop(),
      clusters.epaxosTls?.stop(),
      clusters.etcd?.stop(),
    ]);
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
      leases: options.leases,
      ...(options.dataRoot === undefined ? {} : { parentDir: options.dataRoot }),
      ...(options.cpuProfDir === undefined ? {} : {
        denoFlags: ["--cpu-prof", `--cpu-prof-dir=${await Deno.realPath(options.cpuProfDir)}`],
      }),
    });
    running.epaxos = cluster;
    throwIfInterrupted();
    const systems: SystemUnderTest[] = [epaxosSystem(cluster)];
    if (options.tls) {
      // The same replicas over TLS, measured interleaved with the plain ones.
      log(`starting ${options.replicas} epaxos-kv replicas over TLS`);
      const tlsCluster = await startProcessCluster(options.replicas, {
        leases: options.leases,
        tls: true,
        ...(options.dataRoot === undefined ? {} : { parentDir: options.dataRoot }),
      });
      running.epaxosTls = tlsCluster;
      throwIfInterrupted();
      systems.push(epaxosSystem(tlsCluster));
    }
    let etcdCluster: EtcdCluster | undefined;
    if (!("skipped" in etcdInstall)) {
      log(`starting 3 etcd ${etcdInstall.version} members`);
      try {
        etcdCluster = await startEtcdCluster(etcdInstall, {
          ...(options.dataRoot === undefined ? {} : { parentDir: options.dataRoot }),
        });
        running.etcd = etcdCluster;
        throwIfInterrupted();
        const [grpc, gateway] = etcdSystems(etcdCluster);
        // Without the gRPC load generator the gateway view preloads.
        systems.push(
          ...("skipped" in etcdLoad ? [{ ...gateway, preloads: true }] : [grpc, gateway]),
        );
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
      for (const system of systems.filter((system) => system.preloads)) {
        throwIfInterrupted();
        log(`${system.label}: writing all ${options.keys} keys once`);
        const seconds = await preload(system, options.keys);
        log(
          `${system.label}: preloaded in ${seconds.toFixed(1)} s (${
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
    /** Runs `system`'s load generator on `spec` for some seconds. */
    const loadOf = (system: SystemUnderTest, spec: Workload) => (durationS: number) => {
      if (system.driver === "etcd_load" && !("skipped" in etcdLoad)) {
        return runEtcdLoad({
          path: etcdLoad.path,
          endpoints: system.endpoints,
          workload: spec,
          clients: options.connections,
          grpcConnections: options.grpcConnections,
          durationS,
          timeoutS: options.timeoutS,
          seed: options.seed,
        });
      }
      return runWrk({
        wrk,
        dir: scriptDir,
        script: {
          system: system.system,
          ...(system.apiPrefix === undefined ? {} : { etcdApiPrefix: system.apiPrefix }),
          targets: system.targets,
          threads: system.targets.length,
          workload: spec,
          seed: options.seed,
        },
        connections: options.connections,
        durationS,
        timeoutS: options.timeoutS,
        ...(system.https ? { https: true } : {}),
      });
    };
    if (preloaded) await settle("after the preload");

    const failures: string[] = [];
    const workloads: WorkloadReport[] = [];
    for (const spec of specs) {
      const runs: Record<Side, SystemRun[]> = {
        epaxos: [],
        etcd: [],
        etcd_gateway: [],
        epaxos_tls: [],
      };
      // Interleaved (epaxos, etcd-grpc, etcd-gateway, epaxos, ...), so that a
      // slow phase of the machine falls on every system alike.
      for (const { system, run } of interleave(systems, options.runs)) {
        throwIfInterrupted();
        const what = `${system.label} ${spec.name}${
          options.runs > 1 ? ` (run ${run} of ${options.runs})` : ""
        }`;
        await settle(what);
        throwIfInterrupted();
        const measured = await measure({
          system,
          spec,
          what,
          options,
          log,
          load: loadOf(system, spec),
          preloaded: preloaded && spec.keyPrefix === "kv-",
        });
        runs[system.side].push(measured.run);
        if (measured.problem !== null) failures.push(measured.problem);
      }
      workloads.push(mergeRuns(spec.name, runs));
    }
    const divergence = await checkConvergence(cluster) ??
      (running.epaxosTls === undefined ? null : await checkConvergence(running.epaxosTls));
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
      leases: options.leases,
      runs: options.runs,
      etcd: "skipped" in etcdInstall ? { skipped: etcdInstall.skipped } : {
        version: etcdInstall.version,
        members: 3,
        api_prefix: etcdCluster!.apiPrefix,
      },
      etcd_grpc: "skipped" in etcdInstall
        ? { skipped: etcdInstall.skipped }
        : "skipped" in etcdLoad
        ? { skipped: etcdLoad.skipped }
        : {
          load_generator: etcdLoad.description,
          clients: options.connections,
          grpc_connections: options.grpcConnections,
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
