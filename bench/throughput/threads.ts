/**
 * Where a server's CPU goes during a measured run, by thread: read from
 * `/proc/PID/task/TID/stat` of every server process before and after the run,
 * so that the accounting behind a closing note ("each replica 55 % of a core,
 * of which the JS thread 38 %") is one command, not a hand-run sampler.
 *
 * Threads are grouped by what they are in a Deno process: `main` (the JS
 * thread: JavaScript, the event loop, HTTP parsing, the synchronous part of
 * every op), `v8` (V8's worker threads: concurrent and parallel GC, the
 * optimizing compiler), `blocking` (Deno's `sw-` blocking pool: Deno KV's
 * SQLite transactions and their fsyncs) and `other` (every other thread, and
 * threads that exited during the run). A Go server such as etcd shows its
 * main thread and `other`.
 *
 * @module
 */

import { runCommand } from "./processes.ts";

/** Linux's USER_HZ, the unit of the times in `/proc/.../stat` (fixed at 100 by the ABI). */
export const CLOCK_TICKS_PER_S = 100;

/** The thread groups, in report order. */
export const THREAD_GROUPS = ["main", "v8", "blocking", "other"] as const;

/** A thread group's name. */
export type ThreadGroup = typeof THREAD_GROUPS[number];

/** One thread's CPU time so far. */
export interface ThreadSample {
  /** The process. */
  readonly pid: number;
  /** The thread (equal to `pid` for the main thread). */
  readonly tid: number;
  /** The thread's name (`comm`). */
  readonly name: string;
  /** User plus system time, in clock ticks. */
  readonly ticks: number;
}

/** Most processes one sample reads (a run has at most 7 replicas or 3 etcd members). */
const MAX_PROCESSES = 16;

/**
 * The `tid`, name and CPU ticks of one line of `/proc/PID/task/TID/stat`;
 * undefined when the line is not one. The name sits in parentheses and may
 * itself hold spaces and parentheses, so the fields are counted from the last
 * `)`: `utime` and `stime` are fields 14 and 15 of proc(5).
 */
export function parseTaskStat(line: string): Omit<ThreadSample, "pid"> | undefined {
  const open = line.indexOf("(");
  const close = line.lastIndexOf(")");
  if (open < 1 || close < open) return undefined;
  const tid = Number(line.slice(0, open).trim());
  // Fields after the name start at field 3 (state).
  const rest = line.slice(close + 1).trim().split(/\s+/);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isSafeInteger(tid) || !Number.isFinite(utime) || !Number.isFinite(stime)) {
    return undefined;
  }
  return { tid, name: line.slice(open + 1, close), ticks: utime + stime };
}

/** The group of a thread of a Deno (or other) server process. */
export function threadGroup(sample: ThreadSample): ThreadGroup {
  if (sample.tid === sample.pid) return "main";
  if (sample.name.startsWith("V8 ")) return "v8";
  if (sample.name.startsWith("sw-")) return "blocking";
  return "other";
}

/** CPU time so far of some processes: each process in all, and each live thread. */
export interface CpuSample {
  /** Per process: user plus system time of all its threads, exited ones included, in ticks. */
  readonly processes: ReadonlyMap<number, number>;
  /** Every live thread. */
  readonly threads: readonly ThreadSample[];
}

/**
 * The CPU time of processes `pids` now; undefined when `/proc` cannot be read.
 * A process that has exited contributes nothing.
 */
export async function sampleCpu(pids: readonly number[]): Promise<CpuSample | undefined> {
  const valid = pids.filter((pid) => Number.isSafeInteger(pid) && pid > 0).slice(
    0,
    MAX_PROCESSES,
  );
  if (valid.length === 0) return undefined;
  // Deno lets only --allow-all read /proc itself; a shell with cat may. A
  // thread's stat line names no process, so marker lines say whose lines follow.
  const script = valid.map((pid) =>
    `echo "process ${pid}"; cat /proc/${pid}/stat; echo "threads ${pid}"; cat /proc/${pid}/task/*/stat`
  ).join("; ");
  try {
    const output = await runCommand("sh", ["-c", `{ ${script}; } 2>/dev/null; true`], {
      timeoutMs: 5000,
    });
    if (output.code !== 0) return undefined;
    const sample = parseCpuSample(output.stdout);
    // The shell always succeeds; nothing read means /proc was not readable.
    return sample.processes.size === 0 ? undefined : sample;
  } catch {
    return undefined;
  }
}

/**
 * Parses {@linkcode sampleCpu}'s output: a `process N` marker line before
 * the process's own stat line, a `threads N` marker line before its threads'.
 */
export function parseCpuSample(text: string): CpuSample {
  const processes = new Map<number, number>();
  const threads: ThreadSample[] = [];
  let pid: number | undefined;
  let reading: "process" | "threads" | undefined;
  for (const line of text.split("\n")) {
    const marker = /^(process|threads) (\d+)$/.exec(line);
    if (marker !== null) {
      reading = marker[1] as "process" | "threads";
      pid = Number(marker[2]);
      continue;
    }
    const parsed = pid === undefined ? undefined : parseTaskStat(line);
    if (parsed === undefined) continue;
    if (reading === "process") processes.set(pid!, parsed.ticks);
    else threads.push({ pid: pid!, ...parsed });
  }
  return { processes, threads };
}

/** CPU use of a set of server processes over a run. */
export interface CpuBreakdown {
  /** Processes seen in both samples. */
  readonly processes: number;
  /** Their CPU use together, in percent of one core. */
  readonly total_pct: number;
  /** Mean CPU use of one process by thread group, in percent of one core. */
  readonly per_process_pct: Readonly<Record<ThreadGroup, number>>;
}

/**
 * CPU use between two samples `seconds` apart, of the processes in both. The
 * total is the processes' own, which includes threads that exited between the
 * samples (Deno's blocking pool lets idle threads go); whatever the live
 * threads do not account for is counted as `other`. A thread that started
 * between the samples, or whose id was reused, counts from zero.
 */
export function cpuBreakdown(before: CpuSample, after: CpuSample, seconds: number): CpuBreakdown {
  const earlier = new Map(
    before.threads.map((sample) => [`${sample.pid}/${sample.tid}`, sample.ticks]),
  );
  const groups: Record<ThreadGroup, number> = { main: 0, v8: 0, blocking: 0, other: 0 };
  let total = 0;
  let processes = 0;
  for (const [pid, ticksAfter] of after.processes) {
    const ticksBefore = before.processes.get(pid);
    if (ticksBefore === undefined) continue;
    processes++;
    const processTicks = Math.max(0, ticksAfter - ticksBefore);
    total += processTicks;
    let threadTicks = 0;
    for (const sample of after.threads) {
      if (sample.pid !== pid) continue;
      const previous = earlier.get(`${pid}/${sample.tid}`) ?? 0;
      const ticks = sample.ticks >= previous ? sample.ticks - previous : sample.ticks;
      groups[threadGroup(sample)] += ticks;
      threadTicks += ticks;
    }
    groups.other += Math.max(0, processTicks - threadTicks);
  }
  const pct = (ticks: number) =>
    seconds > 0 ? Number((ticks / CLOCK_TICKS_PER_S / seconds * 100).toFixed(1)) : 0;
  const perProcess = (ticks: number) => processes === 0 ? 0 : pct(ticks / processes);
  return {
    processes,
    total_pct: pct(total),
    per_process_pct: {
      main: perProcess(groups.main),
      v8: perProcess(groups.v8),
      blocking: perProcess(groups.blocking),
      other: perProcess(groups.other),
    },
  };
}

/** CPU microseconds per operation: all server processes together. */
export function cpuMicrosPerOp(breakdown: CpuBreakdown, opsPerS: number): number | null {
  if (opsPerS <= 0) return null;
  return Number((breakdown.total_pct / 100 / opsPerS * 1e6).toFixed(1));
}

/** One line: `3 processes, 165.2% of a core; each main 38.1%, v8 8.0%, ...`. */
export function describeBreakdown(breakdown: CpuBreakdown): string {
  const groups = THREAD_GROUPS.map((group) => `${group} ${breakdown.per_process_pct[group]}%`);
  return `${breakdown.processes} processes, ${breakdown.total_pct}% of a core; each ${
    groups.join(", ")
  }`;
}
