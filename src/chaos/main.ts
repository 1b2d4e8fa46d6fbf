/**
 * `deno task chaos [--scenario NAME|all] [--duration S] [--replicas N] [--seed S]`:
 * runs chaos scenarios against real replica processes, one nemesis at a time,
 * and prints one table row per scenario (operations, indeterminate operations,
 * result, throughput during and after the fault). Each run's throughput
 * timeline goes to `bench/results/chaos/<scenario>.csv`. Exits 0 only if every
 * scenario passed.
 *
 * @module
 */

import { integerOption, option, parseArgs, UsageError } from "../cli/args.ts";
import { type ChaosReport, runChaos } from "./chaos.ts";
import { EVERY_SCENARIO, scenarioNamed } from "./scenarios.ts";

const USAGE = `usage: deno task chaos [--scenario NAME|all] [--duration S] [--replicas N] [--seed S]
scenarios: ${EVERY_SCENARIO.map((scenario) => scenario.name).join(", ")}`;

/** Formats reports as a Markdown table. */
export function chaosTable(reports: readonly ChaosReport[]): string {
  const rows = reports.map((report) =>
    `| ${report.scenario} | ${report.replicas} | ${report.operations} | ${report.indeterminate} | ${
      report.ok ? "pass" : "FAIL"
    } | ${report.throughputDuring.toFixed(1)} | ${report.throughputAfter.toFixed(1)} |`
  );
  return [
    "| scenario | replicas | operations | indeterminate | result | ops/s during fault | ops/s after |",
    "|---|---:|---:|---:|---|---:|---:|",
    ...rows,
  ].join("\n");
}

if (import.meta.main) {
  let args;
  try {
    args = parseArgs(Deno.args, { options: ["scenario", "duration", "replicas", "seed"] });
    if (args.positional.length > 0) {
      throw new UsageError(`Unexpected argument ${args.positional[0]}`);
    }
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  const name = option(args, "scenario", "all")!;
  const scenarios = name === "all" ? EVERY_SCENARIO : [scenarioNamed(name)];
  if (scenarios.some((scenario) => scenario === undefined)) {
    console.error(`Unknown scenario ${name}\n${USAGE}`);
    Deno.exit(2);
  }
  const duration = integerOption(args, "duration", { min: 10, max: 3600, fallback: 30 })!;
  const replicas = integerOption(args, "replicas", { min: 3, max: 9, fallback: 5 })!;
  if (replicas % 2 === 0) {
    console.error(`--replicas must be odd\n${USAGE}`);
    Deno.exit(2);
  }
  const seed = integerOption(args, "seed", {
    min: 0,
    max: 2 ** 31,
    fallback: Math.floor(Math.random() * 2 ** 31),
  })!;
  const directory = new URL("../../bench/results/chaos/", import.meta.url).pathname;
  await Deno.mkdir(directory, { recursive: true });
  const reports: ChaosReport[] = [];
  for (const scenario of scenarios) {
    const report = await runChaos({
      scenario: scenario!,
      durationSeconds: duration,
      replicas,
      seed,
      timelineCsv: `${directory}${scenario!.name}.csv`,
      historyOnFailure: `${directory}${scenario!.name}-history.jsonl`,
      trace: Deno.env.get("CHAOS_TRACE") === "1",
      log: (line) => console.log(line),
    });
    reports.push(report);
    console.log(
      `${
        report.ok ? "pass" : "FAIL"
      } ${report.scenario}: ${report.operations} operations, ${report.indeterminate} indeterminate, ` +
        `${report.throughputDuring.toFixed(1)} ops/s during the fault, ${
          report.throughputAfter.toFixed(1)
        } after; ` +
        `timeline ${report.timeline.join(" ")}`,
    );
    const figures = Object.entries(report.figures);
    if (figures.length > 0) {
      console.log(`  figures: ${figures.map(([name, value]) => `${name}=${value}`).join(" ")}`);
    }
    for (const failure of report.failures) console.log(`  failure: ${failure}`);
    if (!report.ok) {
      console.log(
        `  reproduce: deno task chaos --scenario ${report.scenario} --duration ${duration} --replicas ${replicas} --seed ${seed}`,
      );
    }
  }
  console.log(`\n${chaosTable(reports)}`);
  Deno.exit(reports.every((report) => report.ok) ? 0 : 1);
}
