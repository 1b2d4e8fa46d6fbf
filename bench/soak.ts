/**
 * `deno task bench:soak [--duration S] [--fraction F] [--peak OPS]
 * [--replicas N] [--connections C] [--segment S] [--warmup S] [--out FILE]`:
 * sustained load on real replica processes, to show that memory stays flat
 * and the Deno KV files stay bounded (issue 6).
 *
 * It starts the replicas as `bench:throughput` does (separate processes, real
 * Deno KV files), measures the peak of `uniform-writes` (100,000 keys, 64-byte
 * values) with a short closed-loop wrk run unless `--peak` gives it, then
 * drives `--fraction` (0.8) of that peak for `--duration` seconds (600) in
 * segments of `--segment` seconds (30), each a wrk run whose think time per
 * request is adjusted from the last segment's rate. Between segments it
 * samples each replica's resident memory (`ps -o rss`), the size of
 * its data directory (the Deno KV file with its WAL), and the commands it
 * holds for peers (`/status`).
 *
 * Verdicts, on the samples after `--warmup` seconds (120): memory is flat when
 * each replica's resident size varies by at most 20 %; storage is bounded
 * when each replica's largest size in the second half of the run is at most
 * 1.2 times its largest in the first half. Exit 0 when both hold, 1 when one
 * does not, 2 on a usage error. `--out` writes the samples and verdicts as JSON.
 *
 * @module
 */

import { integerOption, option, parseArgs, UsageError } from "../src/cli/args.ts";
import { type ProcessCluster, startProcessCluster } from "../src/chaos/process_cluster.ts";
import { judgeSoak, nextDelayMs, type SoakSample, type SoakVerdict } from "./soak/verdict.ts";
import { targetsOf } from "./throughput/lua.ts";
import { workload } from "./throughput/options.ts";
import { killTracked } from "./throughput/processes.ts";
import { summarizeRun } from "./throughput/report.ts";
import { ensureWrk, runWrk } from "./throughput/wrk.ts";

const USAGE =
  `usage: deno task bench:soak [--duration S] [--fraction F] [--peak OPS] [--replicas 3|5|7]
       [--connections C] [--segment S] [--warmup S] [--keys N] [--out FILE]`;

/** Settings of a soak run. */
export interface SoakOptions {
  /** Seconds of load at the target rate. */
  readonly durationS: number;
  /** Share of the peak to drive. */
  readonly fraction: number;
  /** The peak in ops/s, if given (else measured). */
  readonly peak?: number;
  /** Replica processes. */
  readonly replicas: number;
  /** wrk connections. */
  readonly connections: number;
  /** Seconds per load segment (a sample after each). */
  readonly segmentS: number;
  /** Seconds after which samples count for the verdicts. */
  readonly warmupS: number;
  /** Keys of the workload. */
  readonly keys: number;
  /** Where to write the JSON report. */
  readonly out?: string;
}

/** The JSON report. */
export interface SoakReport {
  readonly replicas: number;
  readonly connections: number;
  readonly peak_ops_per_s: number;
  readonly target_ops_per_s: number;
  readonly mean_ops_per_s: number;
  readonly duration_s: number;
  readonly warmup_s: number;
  readonly samples: readonly SoakSample[];
  readonly verdict: SoakVerdict;
}

/** Parses the command line; throws {@link UsageError} with a clear message. */
export function parseSoakArgs(argv: readonly string[]): SoakOptions {
  const args = parseArgs(argv, {
    options: [
      "duration",
      "fraction",
      "peak",
      "replicas",
      "connections",
      "segment",
      "warmup",
      "keys",
      "out",
    ],
    flags: [],
  });
  if (args.positional.length > 0) throw new UsageError(`Unexpected argument ${args.positional[0]}`);
  const replicas = integerOption(args, "replicas", { min: 3, max: 7, fallback: 3 })!;
  if (replicas % 2 === 0) throw new UsageError(`--replicas must be 3, 5 or 7, got ${replicas}`);
  const fractionText = option(args, "fraction", "0.8")!;
  const fraction = Number(fractionText);
  if (!(fraction > 0 && fraction <= 1)) {
    throw new UsageError(`--fraction must be a number in (0, 1], got ${fractionText}`);
  }
  const peak = integerOption(args, "peak", { min: 1, max: 10_000_000 });
  const durationS = integerOption(args, "duration", { min: 10, max: 24 * 3600, fallback: 600 })!;
  const out = option(args, "out");
  return {
    durationS,
    fraction,
    ...(peak === undefined ? {} : { peak }),
    replicas,
    connections: integerOption(args, "connections", { min: replicas, max: 10_000, fallback: 256 })!,
    segmentS: integerOption(args, "segment", { min: 5, max: 600, fallback: 30 })!,
    warmupS: integerOption(args, "warmup", {
      min: 0,
      max: durationS,
      fallback: Math.min(120, Math.floor(durationS / 5)),
    })!,
    keys: integerOption(args, "keys", { min: 1, max: 1_000_000, fallback: 100_000 })!,
    ...(out === undefined ? {} : { out }),
  };
}

/**
 * Resident memory of process `pid` in MiB, or null when it cannot be read.
 * Through `ps` (procps): Deno lets only `--allow-all` read `/proc` files.
 */
async function residentMib(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  try {
    const output = await new Deno.Command("ps", {
      args: ["-o", "rss=", "-p", String(pid)],
      stdout: "piped",
      stderr: "null",
    }).output();
    const kib = Number(new TextDecoder().decode(output.stdout).trim());
    return output.success && kib > 0 ? kib / 1024 : null;
  } catch {
    return null;
  }
}

/** Bytes of the files directly in `dir`, in MiB (0 when it is missing). */
async function directoryMib(dir: string): Promise<number> {
  let bytes = 0;
  try {
    // Bounded by the handful of files a replica keeps (the KV file, its WAL and SHM).
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      bytes += (await Deno.stat(`${dir}/${entry.name}`)).size;
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return bytes / (1024 * 1024);
}

async function heldCommands(url: string): Promise<number | null> {
  try {
    const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(5000) });
    const status = await response.json();
    return typeof status.retention?.heldCommands === "number"
      ? status.retention.heldCommands
      : null;
  } catch {
    return null;
  }
}

async function sample(
  cluster: ProcessCluster,
  tS: number,
  opsPerS: number,
): Promise<SoakSample> {
  const ids = cluster.urls.map((_, id) => id);
  return {
    t_s: Math.round(tS),
    ops_per_s: Math.round(opsPerS),
    rss_mib: await Promise.all(ids.map(async (id) => round1(await residentMib(cluster.pid(id))))),
    file_mib: await Promise.all(
      ids.map(async (id) => round1(await directoryMib(`${cluster.root}/replica-${id}`))!),
    ),
    held_commands: await Promise.all(cluster.urls.map(heldCommands)),
  };
}

function round1(value: number | null): number | null {
  return value === null ? null : Math.round(value * 10) / 10;
}

/** Runs the soak; returns its report. */
export async function runSoak(
  options: SoakOptions,
  log: (line: string) => void = () => {},
): Promise<SoakReport> {
  const wrk = await ensureWrk(log);
  const dir = await Deno.makeTempDir({ prefix: "epaxos-kv-soak-" });
  log(`starting ${options.replicas} epaxos-kv replicas`);
  const cluster = await startProcessCluster(options.replicas);
  const stop = () => {
    killTracked();
    return cluster.stop();
  };
  const onSignal = () => {
    stop().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    const spec = workload("uniform-writes", options.keys);
    const targets = targetsOf(cluster.urls);
    const threads = Math.max(options.replicas, 3);
    const run = (durationS: number, delayMs?: number, seed = 1) =>
      runWrk({
        wrk,
        dir,
        connections: options.connections,
        durationS,
        timeoutS: 10,
        script: {
          system: "epaxos",
          targets,
          threads,
          workload: spec,
          seed,
          ...(delayMs === undefined ? {} : { delayMs }),
        },
      });
    let peak = options.peak;
    if (peak === undefined) {
      log("measuring the peak: 20 s of closed-loop uniform-writes");
      peak = summarizeRun(await run(20)).ops_per_s;
    }
    const target = peak * options.fraction;
    log(
      `peak ${Math.round(peak)} ops/s; driving ${Math.round(target)} ops/s (${
        Math.round(options.fraction * 100)
      } %) for ${options.durationS} s in ${options.segmentS} s segments`,
    );
    const samples: SoakSample[] = [await sample(cluster, 0, 0)];
    let delayMs = nextDelayMs({
      connections: options.connections,
      targetOpsPerS: target,
      delayMs: 0,
      measuredOpsPerS: peak,
    });
    let elapsed = 0;
    let operations = 0;
    const started = performance.now();
    // Bounded by duration / segment.
    for (let segment = 0; elapsed < options.durationS; segment++) {
      const length = Math.min(options.segmentS, options.durationS - elapsed);
      const summary = summarizeRun(await run(length, delayMs, segment + 2));
      elapsed += length;
      operations += summary.ops_per_s * summary.duration_s;
      const taken = await sample(cluster, (performance.now() - started) / 1000, summary.ops_per_s);
      samples.push(taken);
      log(
        `t=${taken.t_s}s ${taken.ops_per_s} ops/s (think ${
          delayMs.toFixed(1)
        } ms, p99 ${summary.p99_ms} ms, ${summary.errors} errors) rss MiB ${
          taken.rss_mib.join("/")
        } files MiB ${taken.file_mib.join("/")} held ${taken.held_commands.join("/")}`,
      );
      delayMs = nextDelayMs({
        connections: options.connections,
        targetOpsPerS: target,
        delayMs,
        measuredOpsPerS: summary.ops_per_s,
      });
    }
    const verdict = judgeSoak(samples, {
      warmupS: options.warmupS,
      rssTolerance: 0.2,
      fileTolerance: 0.2,
    });
    return {
      replicas: options.replicas,
      connections: options.connections,
      peak_ops_per_s: Math.round(peak),
      target_ops_per_s: Math.round(target),
      mean_ops_per_s: Math.round(operations / Math.max(1, elapsed)),
      duration_s: elapsed,
      warmup_s: options.warmupS,
      samples,
      verdict,
    };
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    await stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Renders the verdict lines. */
export function describeSoak(report: SoakReport): string {
  const { verdict } = report;
  const percent = (value: number | null) => value === null ? "-" : `${(value * 100).toFixed(1)} %`;
  const ratio = (value: number | null) => value === null ? "-" : `${value.toFixed(2)}x`;
  return [
    `${report.replicas} replicas, ${report.connections} connections, ${report.duration_s} s at ` +
    `${report.mean_ops_per_s} ops/s (target ${report.target_ops_per_s}, peak ${report.peak_ops_per_s}); ` +
    `verdicts on ${verdict.samples_after_warmup} samples after ${report.warmup_s} s`,
    `memory: spread after warm-up ${verdict.rss_spread.map(percent).join(" / ")} -> ` +
    (verdict.rss_flat ? "flat (within 20 %)" : "NOT flat"),
    `storage: largest size, second half over first ${
      verdict.file_growth.map(ratio).join(" / ")
    } -> ` +
    (verdict.file_bounded ? "bounded" : "NOT bounded"),
  ].join("\n");
}

if (import.meta.main) {
  let options: SoakOptions;
  try {
    options = parseSoakArgs(Deno.args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n${USAGE}`);
    Deno.exit(2);
  }
  const report = await runSoak(options, (line) => console.log(line));
  console.log(describeSoak(report));
  if (options.out !== undefined) {
    await Deno.writeTextFile(options.out, JSON.stringify(report, null, 2) + "\n");
    console.log(`wrote ${options.out}`);
  }
  Deno.exit(report.verdict.rss_flat && report.verdict.file_bounded ? 0 : 1);
}
