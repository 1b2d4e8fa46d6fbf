/**
 * `deno task bench:kvconnect [--runs N] [--duration S] [--warmup S]
 * [--clients N] [--procs N] [--keys N] [--watch-samples N] [--modes a,b]
 * [--rate OPS] [--out FILE] [--cpu-prof DIR]`: the Deno KV path against the curl API on one cluster in one
 * run (issue 17).
 *
 * One cluster of three replica processes with Deno KV files (the command
 * line `deno task start` uses, fsync on commit). Every mode runs `--clients`
 * closed-loop clients (64 by default) spread over the replicas and over
 * `--procs` load processes (`kvconnect/load.ts`, 2 by default, so that one
 * JavaScript thread is not the limit; their CPU is measured):
 *
 * - `kv-atomic`: `kv.atomic().set(key, value).commit()` through one
 *   `Deno.Kv` per client (`Deno.openKv`), keys uniform over `--keys`;
 * - `put`: blind `PUT /kv/key` (answered at commit), the same keys;
 * - `put-h2`: the same PUTs over cleartext HTTP/2, the protocol Deno's KV
 *   client speaks (`put` speaks HTTP/1.1), for reference;
 * - `kv-check-set` and `put-if-match`: the same guarded by the version the
 *   client's last write of the key got (answered after execution), for
 *   reference.
 *
 * Values are 64 bytes. Each round measures every mode (after `--warmup`
 * seconds of load), then `--watch-samples` watch deliveries: a writer at one
 * replica sets a key, a watcher at another waits for it; the latency after
 * the write was sent and after it was acknowledged. `--runs` rounds (3 by
 * default) interleave the modes, so a slow phase of the machine falls on
 * each alike; the report gives medians, the ratio atomic / PUT (goal ≥
 * 0.8x), client and server CPU per operation, the machine's load before
 * each window, and `uptime` before and after. Prints Markdown tables;
 * `--out` writes the JSON report (`kvconnect/report.ts`, `KvConnectReport`).
 * `--rate OPS` paces the clients to offer that many operations per second
 * in every mode instead of a closed loop: at the same load (the same
 * batching), server CPU per operation compares the paths themselves.
 * `--cpu-prof DIR` writes a V8 CPU profile of every replica there
 * (`deno run --cpu-prof`; read them with `bench/cpu_profile.ts`).
 * Exits 1 if the replicas do not converge or the Deno KV writes cannot be
 * read back through another replica.
 *
 * @module
 */

import { UsageError } from "../src/cli/args.ts";
import {
  type ProcessCluster,
  replicaStatus,
  startProcessCluster,
  waitUntil,
} from "../src/chaos/process_cluster.ts";
import type { LoadSpec } from "./kvconnect/load.ts";
import {
  cpuRatioOf,
  type KvConnectBenchOptions,
  type KvConnectReport,
  LatencyHistogram,
  median,
  type ModeRun,
  pairedRatios,
  parseKvConnectArgs,
  quantileOf,
  ratioOf,
  reportTable,
  summarizeModes,
  type ThroughputMode,
  USAGE,
  type WatchRun,
} from "./kvconnect/report.ts";
import { busyPercent, cpuTimes, killTracked, runCommand, track } from "./throughput/processes.ts";
import { sampleCpu } from "./throughput/threads.ts";

/** The Deno KV database of the benchmark. */
const DATABASE = "bench";
const REPLICAS = 3;
const LOAD_SCRIPT = new URL("./kvconnect/load.ts", import.meta.url).pathname;
/** Most lines of a load process's stderr kept for a failure report. */
const STDERR_LINES = 20;

/** A running load process and its line-based conversation. */
interface LoadProcess {
  readonly child: Deno.ChildProcess;
  /** The next JSON line it prints. */
  next(): Promise<Record<string, unknown>>;
  /** Sends one command line. */
  send(line: string): Promise<void>;
  /** The tail of its stderr. */
  stderr(): string;
}

function spawnLoad(spec: LoadSpec): LoadProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-kv",
      "--allow-net",
      "--allow-env=DENO_KV_ACCESS_TOKEN",
      LOAD_SCRIPT,
      JSON.stringify(spec),
    ],
    env: { DENO_KV_ACCESS_TOKEN: "bench" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  track(child);
  const tail: string[] = [];
  (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      tail.push(...chunk.split("\n").filter((line) => line.trim() !== ""));
      if (tail.length > STDERR_LINES) tail.splice(0, tail.length - STDERR_LINES);
    }
  })();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  return {
    child,
    async next() {
      for (;;) {
        const end = buffered.indexOf("\n");
        if (end >= 0) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 1);
          if (line.trim().startsWith("{")) return JSON.parse(line);
          continue;
        }
        const chunk = await lines.read();
        if (chunk.done) {
          throw new Error(`A load process ended early: ${tail.join(" | ")}`);
        }
        buffered += chunk.value;
      }
    },
    send: (line) => writer.write(encoder.encode(`${line}\n`)),
    stderr: () => tail.join(" | "),
  };
}

/** `/proc/loadavg`'s 1-minute figure, or null. */
async function loadAverage(): Promise<number | null> {
  const output = await runCommand("cat", ["/proc/loadavg"], { timeoutMs: 5000 }).catch(() => null);
  const value = Number(output?.stdout.split(" ")[0]);
  return Number.isFinite(value) ? value : null;
}

async function uptime(): Promise<string> {
  const output = await runCommand("uptime", [], { timeoutMs: 5000 }).catch(() => null);
  return output?.stdout.trim() ?? "unknown";
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined = undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function serverPids(cluster: ProcessCluster): number[] {
  return Array.from({ length: REPLICAS }, (_, id) => cluster.pid(id)).filter((pid) =>
    pid !== undefined
  ) as number[];
}

/** CPU ticks of `pids` between two samples, as percent of one core over `seconds`. */
function cpuPercent(
  before: Awaited<ReturnType<typeof sampleCpu>>,
  after: Awaited<ReturnType<typeof sampleCpu>>,
  seconds: number,
): number | null {
  if (before === undefined || after === undefined || seconds <= 0) return null;
  let ticks = 0;
  for (const [pid, now] of after.processes) {
    const then = before.processes.get(pid);
    if (then !== undefined) ticks += Math.max(0, now - then);
  }
  return Number((ticks / 100 / seconds * 100).toFixed(1));
}

/** The part of `/status` {@linkcode replicaLatencies} reads. */
interface StatusLatencies {
  readonly latencyMs: {
    readonly request: { readonly p50: number | null; readonly p99: number | null };
    readonly commit: { readonly p50: number | null; readonly p99: number | null };
  };
  readonly commits: { readonly fast: number; readonly slow: number };
}

/** Every replica's `/status` latencies and commit counts. */
async function replicaStatuses(cluster: ProcessCluster): Promise<StatusLatencies[]> {
  return (await Promise.all(
    cluster.urls.slice(0, REPLICAS).map((url) => replicaStatus<StatusLatencies>(url)),
  )).filter((status) => status !== undefined);
}

/**
 * The replicas' recent answer and commit latencies (medians over the
 * replicas) at the window's end, and the fast-path share of the instances
 * they committed during the window (`before`: their statuses at its start).
 */
function replicaLatencies(
  before: readonly StatusLatencies[],
  after: readonly StatusLatencies[],
): Pick<
  ModeRun,
  | "server_request_p50_ms"
  | "server_request_p99_ms"
  | "commit_p50_ms"
  | "commit_p99_ms"
  | "fast_ratio"
> {
  const of = (pick: (status: StatusLatencies) => number | null) => median(after.map(pick));
  const commits = (statuses: readonly StatusLatencies[], path: "fast" | "slow") =>
    statuses.reduce((sum, status) => sum + status.commits[path], 0);
  const fast = commits(after, "fast") - commits(before, "fast");
  const slow = commits(after, "slow") - commits(before, "slow");
  const comparable = before.length === after.length && fast + slow > 0;
  return {
    server_request_p50_ms: of((status) => status.latencyMs.request.p50),
    server_request_p99_ms: of((status) => status.latencyMs.request.p99),
    commit_p50_ms: of((status) => status.latencyMs.commit.p50),
    commit_p99_ms: of((status) => status.latencyMs.commit.p99),
    fast_ratio: comparable ? Number((fast / (fast + slow)).toFixed(3)) : null,
  };
}

/** The counters of `/metrics` {@linkcode batchingOf} reads, summed over the replicas. */
interface BatchCounters {
  readonly batches: number;
  readonly commands: number;
  readonly storageCommits: number;
  readonly storageSeconds: number;
}

/** Sums `/metrics` batch and storage commit counters over the replicas (undefined if one fails). */
async function batchCounters(cluster: ProcessCluster): Promise<BatchCounters | undefined> {
  const pages = await Promise.all(
    cluster.urls.slice(0, REPLICAS).map(async (url) => {
      try {
        const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(3000) });
        return response.ok ? await response.text() : (await response.body?.cancel(), undefined);
      } catch {
        return undefined;
      }
    }),
  );
  if (pages.some((page) => page === undefined)) return undefined;
  const total = (name: string) =>
    pages.reduce((sum, page) => {
      const match = new RegExp(`^${name} (\\S+)$`, "m").exec(page!);
      return sum + (match === null ? 0 : Number(match[1]));
    }, 0);
  return {
    batches: total("epaxos_batch_commands_count"),
    commands: total("epaxos_batch_commands_sum"),
    storageCommits: total("epaxos_storage_commit_duration_seconds_count"),
    storageSeconds: total("epaxos_storage_commit_duration_seconds_sum"),
  };
}

/** Mean commands per proposed instance, and storage commits per second and their mean duration. */
function batchingOf(
  before: BatchCounters | undefined,
  after: BatchCounters | undefined,
  seconds: number,
): Pick<ModeRun, "commands_per_batch" | "storage_commits_per_s" | "storage_commit_ms"> {
  if (before === undefined || after === undefined || seconds <= 0) {
    return { commands_per_batch: null, storage_commits_per_s: null, storage_commit_ms: null };
  }
  const batches = after.batches - before.batches;
  const commits = after.storageCommits - before.storageCommits;
  return {
    commands_per_batch: batches > 0
      ? Number(((after.commands - before.commands) / batches).toFixed(2))
      : null,
    storage_commits_per_s: Number((commits / seconds).toFixed(1)),
    storage_commit_ms: commits > 0
      ? Number(((after.storageSeconds - before.storageSeconds) / commits * 1000).toFixed(2))
      : null,
  };
}

async function measureMode(
  cluster: ProcessCluster,
  options: KvConnectBenchOptions,
  mode: ThroughputMode,
  run: number,
): Promise<ModeRun> {
  const tag = `${mode}-${run}-${crypto.randomUUID().slice(0, 8)}`;
  const processes: LoadProcess[] = [];
  let firstClient = 0;
  for (let index = 0; index < options.procs; index++) {
    const clients = Math.floor(options.clients / options.procs) +
      (index < options.clients % options.procs ? 1 : 0);
    processes.push(spawnLoad({
      mode,
      urls: cluster.urls.slice(0, REPLICAS),
      clients,
      firstClient,
      keys: options.keys,
      tag,
      database: DATABASE,
      ...(options.rate === undefined ? {} : { rate: options.rate * clients / options.clients }),
    }));
    firstClient += clients;
  }
  try {
    await withDeadline(
      Promise.all(processes.map((process) => process.next())),
      60_000,
      `${mode}: load processes to open their clients`,
    );
    await Promise.all(processes.map((process) => process.send("go")));
    await sleep(options.warmupS * 1000);
    const load = await loadAverage();
    const clientPids = processes.map((process) => process.child.pid);
    const [machineBefore, serverBefore, clientBefore, statusBefore, batchBefore] = await Promise
      .all([
        cpuTimes(),
        sampleCpu(serverPids(cluster)),
        sampleCpu(clientPids),
        replicaStatuses(cluster),
        batchCounters(cluster),
      ]);
    const mark = async () => {
      await Promise.all(processes.map((process) => process.send("mark")));
      return await withDeadline(
        Promise.all(processes.map((process) => process.next())),
        30_000,
        `${mode}: load processes to report`,
      );
    };
    const start = await mark();
    const startedAt = performance.now();
    await sleep(options.durationS * 1000);
    const end = await mark();
    const seconds = (performance.now() - startedAt) / 1000;
    const [machineAfter, serverAfter, clientAfter, statusAfter, batchAfter] = await Promise.all([
      cpuTimes(),
      sampleCpu(serverPids(cluster)),
      sampleCpu(clientPids),
      replicaStatuses(cluster),
      batchCounters(cluster),
    ]);
    const sum = (marks: Record<string, unknown>[], field: string) =>
      marks.reduce((total, mark) => total + Number(mark[field]), 0);
    const ops = sum(end, "ops") - sum(start, "ops");
    const opsPerS = ops / seconds;
    const histogram = new LatencyHistogram();
    for (const mark of end) histogram.merge(mark.histogram as Record<string, number>);
    const clientCpu = cpuPercent(clientBefore, clientAfter, seconds);
    const serverCpu = cpuPercent(serverBefore, serverAfter, seconds);
    const perOp = (pct: number | null) =>
      pct === null || opsPerS <= 0 ? null : Number((pct / 100 / opsPerS * 1e6).toFixed(1));
    const machine = machineBefore === undefined || machineAfter === undefined
      ? null
      : busyPercent(machineBefore, machineAfter);
    return {
      mode,
      run,
      ops_per_s: Number(opsPerS.toFixed(1)),
      errors: sum(end, "errors"),
      first_error: (end.find((mark) => mark.firstError !== null)?.firstError as string) ?? null,
      p50_ms: histogram.quantile(0.5),
      p99_ms: histogram.quantile(0.99),
      client_cpu_pct: clientCpu,
      client_us_per_op: perOp(clientCpu),
      server_cpu_pct: serverCpu,
      server_us_per_op: perOp(serverCpu),
      machine_cpu_pct: machine === null ? null : Number(machine.toFixed(1)),
      load_1m: load,
      ...replicaLatencies(statusBefore, statusAfter),
      ...batchingOf(batchBefore, batchAfter, seconds),
    };
  } catch (error) {
    throw new Error(
      `${(error as Error).message}\n${processes.map((process) => process.stderr()).join("\n")}`,
    );
  } finally {
    await Promise.all(processes.map((process) => process.send("stop").catch(() => {})));
    await withDeadline(
      Promise.all(processes.map((process) => process.child.status)),
      60_000,
      `${mode}: load processes to stop`,
    ).catch(() => killTracked());
  }
}

async function measureWatch(
  cluster: ProcessCluster,
  options: KvConnectBenchOptions,
  run: number,
): Promise<WatchRun> {
  const load = await loadAverage();
  const process = spawnLoad({
    mode: "watch",
    urls: cluster.urls.slice(0, REPLICAS),
    clients: 1,
    firstClient: 0,
    keys: 1,
    tag: `watch-${run}-${crypto.randomUUID().slice(0, 8)}`,
    database: DATABASE,
    samples: options.watchSamples,
  });
  try {
    const result = await withDeadline(
      process.next(),
      60_000 + options.watchSamples * 1000,
      "watch samples",
    );
    const sent = result.sent as number[];
    const acknowledged = result.acknowledged as number[];
    const q = (values: number[], at: number) => {
      const value = quantileOf(values, at);
      return value === null ? null : Number(value.toFixed(2));
    };
    return {
      run,
      samples: sent.length,
      sent_p50_ms: q(sent, 0.5),
      sent_p99_ms: q(sent, 0.99),
      acknowledged_p50_ms: q(acknowledged, 0.5),
      acknowledged_p99_ms: q(acknowledged, 0.99),
      load_1m: load,
    };
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${process.stderr()}`);
  } finally {
    await withDeadline(process.child.status, 30_000, "the watch process to stop").catch(() =>
      killTracked()
    );
  }
}

/** Problems with the cluster after the load: divergence, or Deno KV writes not readable elsewhere. */
async function readBack(cluster: ProcessCluster, wroteKv: boolean): Promise<string[]> {
  const problems: string[] = [];
  const urls = cluster.urls.slice(0, REPLICAS);
  try {
    await waitUntil(async () => {
      const all = await Promise.all(urls.map((url) => replicaStatus(url)));
      return all.every((status) => status !== undefined) &&
        new Set(all.map((status) => status!.stateDigest)).size === 1;
    }, { deadlineMs: 60_000, what: "the replicas to converge", intervalMs: 500 });
  } catch (error) {
    problems.push((error as Error).message);
  }
  if (!wroteKv) return problems;
  Deno.env.set("DENO_KV_ACCESS_TOKEN", Deno.env.get("DENO_KV_ACCESS_TOKEN") ?? "bench");
  const kv = await Deno.openKv(`${urls[REPLICAS - 1]}/databases/${DATABASE}/connect`);
  try {
    const entries = [];
    for await (const entry of kv.list({ prefix: ["b"] }, { limit: 10 })) entries.push(entry);
    if (entries.length === 0) problems.push("no Deno KV write reads back through replica 2");
    for (const entry of entries) {
      if (!(entry.value instanceof Uint8Array) || entry.value.length !== 64) {
        problems.push(`key ${JSON.stringify(entry.key)} reads back ${String(entry.value)}`);
      }
    }
  } finally {
    kv.close();
  }
  return problems;
}

/** Runs the benchmark and returns its report (and any read-back problems). */
export async function runKvConnectBench(
  options: KvConnectBenchOptions,
  log: (line: string) => void = console.log,
): Promise<{ report: KvConnectReport; problems: string[] }> {
  const times = [await uptime()];
  log(`uptime before: ${times[0]}`);
  let denoFlags: string[] = [];
  if (options.cpuProfDir !== undefined) {
    await Deno.mkdir(options.cpuProfDir, { recursive: true });
    denoFlags = ["--cpu-prof", `--cpu-prof-dir=${await Deno.realPath(options.cpuProfDir)}`];
  }
  const cluster = await startProcessCluster(REPLICAS, { denoFlags });
  const modeRuns: ModeRun[] = [];
  const watchRuns: WatchRun[] = [];
  let problems: string[];
  try {
    for (let run = 1; run <= options.runs; run++) {
      for (const mode of options.modes) {
        const measured = await measureMode(cluster, options, mode, run);
        modeRuns.push(measured);
        log(
          `run ${run} ${mode}: ${measured.ops_per_s} ops/s, p50 ${measured.p50_ms} ms, p99 ${measured.p99_ms} ms, ` +
            `${measured.errors} errors, client ${measured.client_cpu_pct}% (${measured.client_us_per_op} µs/op), ` +
            `servers ${measured.server_cpu_pct}% (${measured.server_us_per_op} µs/op), ` +
            `machine ${measured.machine_cpu_pct}%, load ${measured.load_1m}; replica answer p50 ` +
            `${measured.server_request_p50_ms} ms, decide p50 ${measured.commit_p50_ms} ms, fast ` +
            `${measured.fast_ratio}, ${measured.commands_per_batch} commands/batch, ` +
            `${measured.storage_commits_per_s} storage commits/s of ${measured.storage_commit_ms} ms` +
            (measured.first_error === null ? "" : `; first error: ${measured.first_error}`),
        );
      }
      if (options.watchSamples > 0) {
        const watched = await measureWatch(cluster, options, run);
        watchRuns.push(watched);
        log(
          `run ${run} watch: ${watched.samples} samples, after sent p50 ${watched.sent_p50_ms} ms ` +
            `p99 ${watched.sent_p99_ms} ms; after acknowledged p50 ${watched.acknowledged_p50_ms} ms ` +
            `p99 ${watched.acknowledged_p99_ms} ms; load ${watched.load_1m}`,
        );
      }
    }
    problems = await readBack(
      cluster,
      options.modes.includes("kv-atomic"),
    );
  } finally {
    if (options.cpuProfDir !== undefined) {
      // V8 writes a CPU profile only when the process exits on its own.
      await Promise.all(Array.from({ length: REPLICAS }, (_, id) => cluster.kill(id, "SIGTERM")));
      log(`CPU profiles written to ${options.cpuProfDir}`);
    }
    await cluster.stop();
  }
  times.push(await uptime());
  log(`uptime after: ${times[1]}`);
  const modes = summarizeModes(modeRuns);
  const watchMedian = (field: keyof WatchRun) =>
    median(watchRuns.map((run) => run[field] as number | null));
  const report: KvConnectReport = {
    replicas: REPLICAS,
    clients: options.clients,
    procs: options.procs,
    runs: options.runs,
    duration_s: options.durationS,
    warmup_s: options.warmupS,
    keys: options.keys,
    rate: options.rate ?? null,
    ratio_atomic_to_put: ratioOf(modes, "kv-atomic", "put"),
    ratio_atomic_to_put_runs: pairedRatios(modeRuns, "kv-atomic", "put"),
    ratio_atomic_to_put_paired: median(pairedRatios(modeRuns, "kv-atomic", "put")),
    server_cpu_atomic_to_put: cpuRatioOf(modes, "kv-atomic", "put"),
    ratio_atomic_to_put_h2: ratioOf(modes, "kv-atomic", "put-h2"),
    server_cpu_atomic_to_put_h2: cpuRatioOf(modes, "kv-atomic", "put-h2"),
    ratio_check_set_to_put_if_match: ratioOf(modes, "kv-check-set", "put-if-match"),
    modes,
    watch: {
      samples: watchRuns.reduce((sum, run) => sum + run.samples, 0),
      sent_p50_ms: watchMedian("sent_p50_ms"),
      sent_p99_ms: watchMedian("sent_p99_ms"),
      acknowledged_p50_ms: watchMedian("acknowledged_p50_ms"),
      acknowledged_p99_ms: watchMedian("acknowledged_p99_ms"),
    },
    mode_runs: modeRuns,
    watch_runs: watchRuns,
    uptime: times,
    deno: Deno.version.deno,
    cpus: navigator.hardwareConcurrency,
  };
  return { report, problems };
}

if (import.meta.main) {
  let options: KvConnectBenchOptions;
  try {
    options = parseKvConnectArgs(Deno.args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n${USAGE}`);
    Deno.exit(2);
  }
  Deno.addSignalListener("SIGINT", () => {
    killTracked();
    Deno.exit(130);
  });
  const { report, problems } = await runKvConnectBench(options);
  console.log(`\n${reportTable(report)}`);
  if (options.out !== undefined) {
    await Deno.writeTextFile(options.out, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nreport written to ${options.out}`);
  }
  for (const problem of problems) console.error(`problem: ${problem}`);
  Deno.exit(problems.length === 0 ? 0 : 1);
}
