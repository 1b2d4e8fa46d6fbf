/**
 * Benchmark of the linearizability checker on the public test histories in
 * `tests/testdata/linearizability/`: the `c50-*` porcupine kv files (the
 * performance test) and the largest jepsen-etcd logs.
 *
 * ```sh
 * deno run --allow-read bench/check_history.ts
 * ```
 *
 * @module
 */

import { checkHistoryText, type Verdict } from "../src/check/mod.ts";

/** The timing of one history file. */
export interface CheckHistoryTiming {
  /** The file name, relative to the test data folder. */
  readonly file: string;
  /** Invocations and completions in the file. */
  readonly events: number;
  /** Distinct keys. */
  readonly keys: number;
  /** Median wall-clock milliseconds to parse and check, over the repeats. */
  readonly ms: number;
  /** Milliseconds of the first run, before the JIT has warmed up. */
  readonly firstMs: number;
  /** Search steps of one run. */
  readonly steps: number;
  /** The verdict. */
  readonly verdict: Verdict;
}

/** Options of {@linkcode benchCheckHistory}. */
export interface BenchCheckHistoryOptions {
  /** The `testdata/linearizability/` folder; default the project's `tests/testdata/...`. */
  readonly testdata?: URL;
  /** Runs per file; the median is reported. Default 5. */
  readonly repeats?: number;
  /** How many of the largest jepsen-etcd logs to include. Default 3. */
  readonly jepsenLogs?: number;
}

const DEFAULT_TESTDATA = new URL("../tests/testdata/linearizability/", import.meta.url);

async function largestJepsenLogs(testdata: URL, count: number): Promise<string[]> {
  const logs: { name: string; size: number }[] = [];
  const folder = new URL("jepsen-etcd/", testdata);
  for await (const entry of Deno.readDir(folder)) {
    if (!entry.isFile || !entry.name.endsWith(".log")) continue;
    const { size } = await Deno.stat(new URL(entry.name, folder));
    logs.push({ name: entry.name, size });
  }
  logs.sort((a, b) => b.size - a.size || a.name.localeCompare(b.name));
  return logs.slice(0, count).map((log) => `jepsen-etcd/${log.name}`);
}

async function c50Files(testdata: URL): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL("kv/", testdata))) {
    if (entry.isFile && entry.name.startsWith("c50-")) files.push(`kv/${entry.name}`);
  }
  return files.sort();
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * Times the checker (parse and check) on every `c50-*` kv file and the
 * largest jepsen-etcd logs.
 */
export async function benchCheckHistory(
  options: BenchCheckHistoryOptions = {},
): Promise<CheckHistoryTiming[]> {
  const testdata = options.testdata ?? DEFAULT_TESTDATA;
  const repeats = Math.max(1, options.repeats ?? 5);
  const files = [
    ...await c50Files(testdata),
    ...await largestJepsenLogs(testdata, options.jepsenLogs ?? 3),
  ];
  const timings: CheckHistoryTiming[] = [];
  for (const file of files) {
    const text = await Deno.readTextFile(new URL(file, testdata));
    const times: number[] = [];
    let last = checkHistoryText(text, { source: file });
    times.push(last.ms);
    for (let i = 1; i < repeats; i++) {
      last = checkHistoryText(text, { source: file });
      times.push(last.ms);
    }
    timings.push({
      file,
      events: last.eventCount,
      keys: last.keyCount,
      ms: median(times),
      firstMs: times[0],
      steps: last.result.steps,
      verdict: last.result.verdict,
    });
  }
  return timings;
}

/** Renders timings as a Markdown table. */
export function formatCheckHistoryTable(timings: readonly CheckHistoryTiming[]): string {
  const rows = [
    "| file | events | keys | verdict | steps | first ms | median ms |",
    "|---|---:|---:|---|---:|---:|---:|",
  ];
  for (const t of timings) {
    rows.push(
      `| ${t.file} | ${t.events} | ${t.keys} | ${t.verdict} | ${t.steps} | ${
        t.firstMs.toFixed(1)
      } | ${t.ms.toFixed(1)} |`,
    );
  }
  return rows.join("\n");
}

if (import.meta.main) {
  console.log(formatCheckHistoryTable(await benchCheckHistory()));
}
