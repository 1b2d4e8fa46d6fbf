/**
 * `deno task bench:core`: the core's throughput and memory, and the
 * linearizability checker's speed, side by side in one run.
 *
 * - Commands per second committed and executed on all 5 replicas of the
 *   in-memory cluster on one thread, at 0 % and 100 % conflict, unbatched and
 *   with 100-command batches (best of several runs after a warm-up).
 * - Heap after 1,000,000 commands against the heap after 100,000 (pruning must
 *   keep a long run's memory flat).
 * - How long the checker takes on each `c50-*` history.
 *
 * Targets (issue 2): at least 50,000 commands/s unbatched at 0 % conflict;
 * heap ratio at most 1.5; each c50 file decided in under a second.
 *
 * Options: `--quick` (fewer runs, for a smoke test), `--out FILE` (JSON).
 *
 * @module
 */

import { benchCheckHistory } from "./check_history.ts";
import { runLoad } from "./core_cluster.ts";

interface ThroughputRow {
  readonly workload: string;
  readonly conflictPct: number;
  readonly batch: number;
  readonly commands: number;
  readonly bestCommandsPerSecond: number;
  readonly medianCommandsPerSecond: number;
  readonly fastPathRatio: number;
}

function parseArgs(args: readonly string[]): { quick: boolean; out: string } {
  let quick = false;
  let out = "bench/results/core.json";
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--quick") {
      quick = true;
    } else if (args[i] === "--out" && args[i + 1] !== undefined) {
      out = args[++i]!;
    } else {
      throw new TypeError(`Unknown argument ${args[i]}; usage: bench:core [--quick] [--out FILE]`);
    }
  }
  return { quick, out };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function heapMegabytes(): number {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (collect !== undefined) {
    collect();
    collect();
  }
  return Deno.memoryUsage().heapUsed / (1024 * 1024);
}

async function main(): Promise<void> {
  const { quick, out } = parseArgs(Deno.args);
  const runs = quick ? 2 : 5;
  const workloads = [
    { workload: "0% conflict, unbatched", conflict: 0, batch: 1, commands: 60_000 },
    { workload: "100% conflict, unbatched", conflict: 1, batch: 1, commands: 60_000 },
    { workload: "0% conflict, batches of 100", conflict: 0, batch: 100, commands: 400_000 },
    { workload: "100% conflict, batches of 100", conflict: 1, batch: 100, commands: 400_000 },
  ];
  const rows: ThroughputRow[] = [];
  for (const spec of workloads) {
    const options = {
      replicas: 5,
      commands: quick ? Math.floor(spec.commands / 4) : spec.commands,
      batch: spec.batch,
      conflict: spec.conflict,
      window: 16,
      keysPerReplica: 1000,
    };
    runLoad({ ...options, commands: Math.floor(options.commands / 4) }); // warm-up
    const results = Array.from({ length: runs }, () => runLoad(options));
    const rates = results.map((result) => result.commandsPerSecond);
    rows.push({
      workload: spec.workload,
      conflictPct: spec.conflict * 100,
      batch: spec.batch,
      commands: options.commands,
      bestCommandsPerSecond: Math.round(Math.max(...rates)),
      medianCommandsPerSecond: Math.round(median(rates)),
      fastPathRatio: results[0]!.fastRatio,
    });
  }

  // Memory: one long unbatched run at 0 % conflict, heap sampled after a full GC.
  const heapSamples = new Map<number, number>();
  const memoryCommands = quick ? 200_000 : 1_000_000;
  const memoryRun = runLoad({
    replicas: 5,
    commands: memoryCommands,
    batch: 1,
    conflict: 0,
    window: 16,
    keysPerReplica: 1000,
    sampleEvery: 100_000,
    onProgress: (executed) => heapSamples.set(executed, heapMegabytes()),
  });
  const heapAt100k = heapSamples.get(100_000)!;
  const heapAtEnd = heapSamples.get(memoryCommands) ?? heapMegabytes();
  const heapRatio = heapAtEnd / heapAt100k;

  const checker = await benchCheckHistory();
  const c50 = checker.filter((row) => row.file.includes("c50-"));

  const unbatched = rows[0]!.bestCommandsPerSecond;
  const lines = [
    "## bench:core (n = 5, in-memory cluster, one thread)",
    "",
    "| workload | commands | best cmd/s | median cmd/s | fast-path ratio |",
    "|---|---:|---:|---:|---:|",
    ...rows.map((row) =>
      `| ${row.workload} | ${row.commands} | ${row.bestCommandsPerSecond} | ${row.medianCommandsPerSecond} | ${
        row.fastPathRatio.toFixed(3)
      } |`
    ),
    "",
    `Batching gain at 0 % conflict: ${(rows[2]!.bestCommandsPerSecond / unbatched).toFixed(1)}x; ` +
    `at 100 %: ${(rows[3]!.bestCommandsPerSecond / rows[1]!.bestCommandsPerSecond).toFixed(1)}x. ` +
    `100 % vs 0 % conflict, unbatched: ${
      (rows[1]!.bestCommandsPerSecond / unbatched).toFixed(2)
    }x.`,
    "",
    `| heap | MB |`,
    `|---|---:|`,
    ...[...heapSamples].map(([executed, megabytes]) =>
      `| after ${executed} commands | ${megabytes.toFixed(1)} |`
    ),
    "",
    `Heap after ${memoryCommands} / after 100000: ${heapRatio.toFixed(2)}x ` +
    `(instances still held by a replica at the end: ${memoryRun.instancesHeld}).`,
    "",
    "| checker input | events | keys | median ms |",
    "|---|---:|---:|---:|",
    ...c50.map((row) => `| ${row.file} | ${row.events} | ${row.keys} | ${Math.round(row.ms)} |`),
    "",
    "Targets:",
    `- unbatched, 0 % conflict >= 50000 cmd/s: ${unbatched} (${
      unbatched >= 50_000 ? "met" : "NOT met"
    })`,
    `- heap ratio <= 1.5: ${heapRatio.toFixed(2)} (${heapRatio <= 1.5 ? "met" : "NOT met"})`,
    `- each c50 file < 1000 ms: ${c50.map((row) => Math.round(row.ms)).join(", ")} (${
      c50.every((row) => row.ms < 1000) ? "met" : "NOT met"
    })`,
  ];
  console.log(lines.join("\n"));
  await Deno.mkdir(new URL("../bench/results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    out,
    JSON.stringify(
      { throughput: rows, heap: Object.fromEntries(heapSamples), heapRatio, checker: c50 },
      null,
      2,
    ) +
      "\n",
  );
}

if (import.meta.main) await main();
