/**
 * The load generator of `deno task bench:throughput`: wrk (Debian package
 * `wrk`, installed when missing and running as root), run once per system and
 * workload with a script from {@link wrkScript}.
 *
 * @module
 */

import { parseWrkOutput, type ScriptSpec, type WrkResult, wrkScript } from "./lua.ts";
import { aptInstall, findExecutable, runCommand, runLoadGenerator } from "./processes.ts";

/** wrk is missing and cannot be installed; the message says why. */
export class WrkUnavailable extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "WrkUnavailable";
  }
}

/** The path of wrk, installing the Debian package if it is missing; throws {@link WrkUnavailable}. */
export async function ensureWrk(log: (line: string) => void): Promise<string> {
  const found = await findExecutable("wrk");
  if (found !== undefined) return found;
  const failure = await aptInstall("wrk", log);
  const installed = await findExecutable("wrk");
  if (installed !== undefined) return installed;
  throw new WrkUnavailable(
    `wrk is not installed and could not be installed (${
      failure ?? "apt-get reported success but no wrk binary appeared"
    }); the benchmark has no load generator without it: install the Debian package wrk ` +
      "(apt-get install wrk) and run it again",
  );
}

/** wrk's version line (`wrk debian/4.1.0-3+b2 [epoll] ...`). */
export async function wrkVersion(wrk: string): Promise<string> {
  // wrk prints its version and usage to stdout and exits 1 on -v.
  const result = await runCommand(wrk, ["-v"], { timeoutMs: 5000 });
  const line = (result.stdout + result.stderr).split("\n").find((text) => text.startsWith("wrk"));
  return line === undefined ? "unknown" : line.replace(/\s*Copyright.*$/, "").trim();
}

/** One wrk run. */
export interface WrkRun {
  /** The path of wrk. */
  readonly wrk: string;
  /** A directory for the script (left in place; the caller removes it). */
  readonly dir: string;
  /** What the script does. */
  readonly script: ScriptSpec;
  /** Total connections (wrk gives each thread `connections / threads`). */
  readonly connections: number;
  /** Seconds of load. */
  readonly durationS: number;
  /** Per-request timeout in seconds. */
  readonly timeoutS: number;
  /** Whether the targets speak https (wrk then opens every connection with TLS). */
  readonly https?: boolean;
}

/** A wrk run's result with the machine's CPU use during it. */
export interface WrkRunResult extends WrkResult {
  /** Connections wrk opened (the requested count rounded down to a multiple of the threads). */
  readonly connections: number;
  /** Busy share of all cores during the run, in percent, if known. */
  readonly machine_cpu_pct: number | null;
}

/** Runs wrk once and returns its result; throws when wrk fails or prints no result line. */
export async function runWrk(run: WrkRun): Promise<WrkRunResult> {
  const { script } = run;
  const scriptPath = `${run.dir}/${script.system}-${script.workload.name}.lua`;
  await Deno.writeTextFile(scriptPath, wrkScript(script));
  const first = script.targets[0]!;
  const args = [
    "-t",
    String(script.threads),
    "-c",
    String(run.connections),
    "-d",
    `${run.durationS}s`,
    "--timeout",
    `${run.timeoutS}s`,
    "-s",
    scriptPath,
    `${run.https ? "https" : "http"}://${first.host}:${first.port}/`,
  ];
  const { stdout, machineCpuPct } = await runLoadGenerator("wrk", run.wrk, args, run);
  return {
    ...parseWrkOutput(stdout),
    connections: Math.floor(run.connections / script.threads) * script.threads,
    machine_cpu_pct: machineCpuPct,
  };
}
