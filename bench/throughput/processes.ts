/**
 * Child processes of `deno task bench:throughput`: bounded command runs, a
 * registry of what is running so that an interrupted run (Ctrl-C) stops it,
 * package installs through apt-get, and CPU accounting from `/proc/stat`.
 *
 * @module
 */

/** Most bytes of a command's output kept (the tail). */
const OUTPUT_LIMIT = 1 << 20;

const running = new Set<Deno.ChildProcess>();

/** Starts tracking `child` (see {@link killTracked}) until it exits. */
export function track(child: Deno.ChildProcess): void {
  running.add(child);
  child.status.finally(() => running.delete(child));
}

/** Sends SIGKILL to every tracked child that is still running. */
export function killTracked(): void {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }
}

/** What a finished command left. */
export interface CommandOutput {
  /** Exit code (137 or similar when killed). */
  readonly code: number;
  /** Whether the command ran past its deadline and was killed. */
  readonly timedOut: boolean;
  /** The tail of its standard output. */
  readonly stdout: string;
  /** The tail of its standard error. */
  readonly stderr: string;
}

async function drain(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (text.length > OUTPUT_LIMIT * 2) text = text.slice(-OUTPUT_LIMIT);
  }
  return text.slice(-OUTPUT_LIMIT);
}

/** Runs `command` to completion, killing it after `timeoutMs`. */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: {
    readonly timeoutMs: number;
    readonly env?: Record<string, string>;
    /** The working directory (default: this process's). */
    readonly cwd?: string;
  },
): Promise<CommandOutput> {
  const child = new Deno.Command(command, {
    args: [...args],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env === undefined ? {} : { env: options.env }),
  }).spawn();
  track(child);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, options.timeoutMs);
  try {
    const [stdout, stderr, status] = await Promise.all([
      drain(child.stdout),
      drain(child.stderr),
      child.status,
    ]);
    return { code: status.code, timedOut, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs a load generator (wrk, etcd_load) that stops on its own after
 * `durationS` seconds; the deadline past that only guards against a hang.
 * Returns its standard output and the machine's busy share during the run, in
 * percent, if known; throws when it hangs or fails.
 */
export async function runLoadGenerator(
  name: string,
  command: string,
  args: readonly string[],
  options: { readonly durationS: number; readonly timeoutS: number },
): Promise<{ readonly stdout: string; readonly machineCpuPct: number | null }> {
  const before = await cpuTimes();
  const output = await runCommand(command, args, {
    timeoutMs: (options.durationS + options.timeoutS + 30) * 1000,
  });
  const after = await cpuTimes();
  if (output.timedOut) throw new Error(`${name} ran past its deadline and was killed`);
  if (output.code !== 0) {
    throw new Error(
      `${name} exited with ${output.code}: ${lastLines(output.stderr + output.stdout, 10)}`,
    );
  }
  return {
    stdout: output.stdout,
    machineCpuPct: before === undefined || after === undefined ? null : busyPercent(before, after),
  };
}

/** The path of executable `name` on PATH or in the usual system directories, if any. */
export async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [
    ...(Deno.env.get("PATH") ?? "").split(":").filter((dir) => dir !== ""),
    "/usr/local/bin",
    "/usr/bin",
    "/usr/sbin",
  ];
  for (const dir of dirs) {
    const path = `${dir}/${name}`;
    try {
      const info = await Deno.stat(path);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return path;
    } catch { /* not there */ }
  }
  return undefined;
}

/** Whether this process runs as root. */
export function isRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

/**
 * Installs Debian package `name` with apt-get (refreshing the package lists
 * once if the first attempt fails). Returns null on success, else why not.
 */
export async function aptInstall(
  name: string,
  log: (line: string) => void,
): Promise<string | null> {
  if (!isRoot()) return "not running as root, so apt-get cannot install it";
  if (await findExecutable("apt-get") === undefined) return "apt-get is not available";
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const install = () =>
    runCommand("apt-get", ["install", "-y", "--no-install-recommends", name], {
      timeoutMs: 300_000,
      env,
    });
  log(`installing the Debian package ${name} (apt-get install -y ${name})`);
  let result = await install();
  if (result.code !== 0) {
    log(`apt-get install ${name} failed; running apt-get update and trying again`);
    const update = await runCommand("apt-get", ["update"], { timeoutMs: 300_000, env });
    if (update.code !== 0) {
      return `apt-get update failed (exit ${update.code}): ${lastLines(update.stderr, 5)}`;
    }
    result = await install();
  }
  if (result.code !== 0) {
    return `apt-get install ${name} failed (exit ${result.code}${
      result.timedOut ? ", timed out" : ""
    }): ${lastLines(result.stderr + result.stdout, 5)}`;
  }
  return null;
}

/** The last `count` non-empty lines of `text`, joined by " | ". */
export function lastLines(text: string, count: number): string {
  return text.split("\n").map((line) => line.trim()).filter((line) => line !== "").slice(-count)
    .join(" | ");
}

/** Busy and total CPU time of the whole machine, in clock ticks. */
export interface CpuTimes {
  /** Ticks not idle and not waiting for I/O. */
  readonly busy: number;
  /** All ticks. */
  readonly total: number;
  /** Logical CPUs. */
  readonly cpus: number;
}

/** Parses `/proc/stat`: the aggregate `cpu` line, and the number of `cpuN` lines. */
export function parseProcStat(text: string): CpuTimes {
  const lines = text.split("\n");
  const aggregate = lines.find((line) => /^cpu\s/.test(line));
  if (aggregate === undefined) throw new Error("/proc/stat has no cpu line");
  const fields = aggregate.trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length < 4 || fields.some((field) => !Number.isFinite(field))) {
    throw new Error(`Malformed cpu line in /proc/stat: ${aggregate}`);
  }
  // user nice system idle iowait irq softirq steal
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3]! + (fields[4] ?? 0);
  const cpus = lines.filter((line) => /^cpu\d+\s/.test(line)).length;
  return { busy: total - idle, total, cpus: Math.max(1, cpus) };
}

/** The machine's CPU times now, or undefined where `/proc/stat` cannot be read. */
export async function cpuTimes(): Promise<CpuTimes | undefined> {
  try {
    // Deno lets only --allow-all read /proc/stat itself; cat may.
    const output = await runCommand("cat", ["/proc/stat"], { timeoutMs: 5000 });
    return output.code === 0 ? parseProcStat(output.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** Busy share of all CPUs between two readings, in percent (100 = every core busy). */
export function busyPercent(before: CpuTimes, after: CpuTimes): number | null {
  const total = after.total - before.total;
  if (total <= 0) return null;
  return (after.busy - before.busy) / total * 100;
}
