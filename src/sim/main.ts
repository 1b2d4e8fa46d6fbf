/**
 * `deno task sim`: runs the seeded simulator.
 *
 * ```
 * deno task sim --seed S --replicas N [--commands K] [--faults none|all] [--conflicts some|none]
 *   [--members some|none] [--leases on|off]
 * deno task sim --swarm COUNT --seed S [--replicas N] [--commands K] [--members some|none]
 *   [--leases on|off]
 * ```
 *
 * `--members some` gives every run membership changes (add, promote,
 * remove), `none` none; without it, half the seeds have them.
 *
 * Exits 0 when every invariant holds; otherwise 1, after printing one line that
 * reproduces the first failure.
 *
 * @module
 */

import { deriveConfig, reproduceCommand, type SimRequest } from "./config.ts";
import { simulate } from "./simulation.ts";

/** Parsed command line. */
export interface SimArguments {
  /** First seed. */
  readonly seed: number;
  /** Seeds to run from `seed` (swarm); 1 for a single run. */
  readonly count: number;
  /** Replicas, if fixed. */
  readonly replicas?: number;
  /** Client operations per run. */
  readonly commands?: number;
  /** Fault mode. */
  readonly faults?: "none" | "all";
  /** Conflict mode. */
  readonly conflicts?: "some" | "none";
  /** Membership changes: `some` in every run, `none`, or absent (chosen from the seed). */
  readonly members?: "some" | "none";
  /** Quorum leases: on, off, or (absent) on for a share of seeds. */
  readonly leases?: "on" | "off";
  /** Print every run's summary, not only failures. */
  readonly verbose: boolean;
  /** Print every traced event whose line contains this text (debugging one seed). */
  readonly trace?: string;
}

/** Parses `args`; throws a `TypeError` with a usage message on bad input. */
export function parseSimArguments(args: readonly string[]): SimArguments {
  const values = new Map<string, string>();
  let verbose = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--verbose" || arg === "-v") {
      verbose = true;
      continue;
    }
    const match = /^--([a-z]+)(?:=(.*))?$/.exec(arg);
    if (match === null) throw new TypeError(`Unexpected argument: ${arg}`);
    const value = match[2] ?? args[++i];
    if (value === undefined) throw new TypeError(`Missing value for --${match[1]}`);
    values.set(match[1]!, value);
  }
  const integer = (name: string, min: number, max: number): number | undefined => {
    const text = values.get(name);
    if (text === undefined) return undefined;
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new TypeError(`--${name} must be an integer from ${min} to ${max}, got ${text}`);
    }
    return value;
  };
  for (const name of values.keys()) {
    const known = [
      "seed",
      "swarm",
      "replicas",
      "commands",
      "faults",
      "conflicts",
      "members",
      "leases",
      "trace",
    ];
    if (!known.includes(name)) {
      throw new TypeError(`Unknown option --${name}`);
    }
  }
  const faults = values.get("faults");
  if (faults !== undefined && faults !== "none" && faults !== "all") {
    throw new TypeError(`--faults must be none or all, got ${faults}`);
  }
  const conflicts = values.get("conflicts");
  if (conflicts !== undefined && conflicts !== "some" && conflicts !== "none") {
    throw new TypeError(`--conflicts must be some or none, got ${conflicts}`);
  }
  const members = values.get("members");
  if (members !== undefined && members !== "some" && members !== "none") {
    throw new TypeError(`--members must be some or none, got ${members}`);
  }
  const leases = values.get("leases");
  if (leases !== undefined && leases !== "on" && leases !== "off") {
    throw new TypeError(`--leases must be on or off, got ${leases}`);
  }
  const replicas = integer("replicas", 3, 9);
  if (replicas !== undefined && replicas % 2 === 0) {
    throw new TypeError(`--replicas must be odd, got ${replicas}`);
  }
  const commands = integer("commands", 1, 1_000_000);
  return {
    seed: integer("seed", 0, 2 ** 32 - 1) ?? Math.floor(Math.random() * 2 ** 31),
    count: integer("swarm", 1, 1_000_000) ?? 1,
    ...(replicas === undefined ? {} : { replicas }),
    ...(commands === undefined ? {} : { commands }),
    ...(faults === undefined ? {} : { faults }),
    ...(conflicts === undefined ? {} : { conflicts }),
    ...(members === undefined ? {} : { members }),
    ...(leases === undefined ? {} : { leases }),
    ...(values.has("trace") ? { trace: values.get("trace")! } : {}),
    verbose,
  };
}

/** Runs the simulations `args` asks for; returns the exit code. */
export function runSimulations(args: SimArguments, log: (line: string) => void): number {
  let failures = 0;
  let snapshots = 0;
  let epochChanges = 0;
  let replacements = 0;
  let backups = 0;
  let memberChanges = 0;
  let resized = 0;
  let stranded = 0;
  let quorumReads = 0;
  let leaseRuns = 0;
  let localReads = 0;
  let released = 0;
  const started = performance.now();
  for (let offset = 0; offset < args.count; offset++) {
    const request: SimRequest = {
      seed: (args.seed + offset) >>> 0,
      ...(args.replicas === undefined ? {} : { replicas: args.replicas }),
      ...(args.commands === undefined ? {} : { commands: args.commands }),
      ...(args.faults === undefined ? {} : { faults: args.faults }),
      ...(args.conflicts === undefined ? {} : { conflicts: args.conflicts }),
      ...(args.members === undefined ? {} : { members: args.members }),
      ...(args.leases === undefined ? {} : { leases: args.leases }),
    };
    const config = deriveConfig(request);
    const runStarted = performance.now();
    let result;
    try {
      const filter = args.trace;
      result = simulate(
        config,
        filter === undefined ? undefined : (line) => {
          if (filter === "*" || line.includes(filter)) log(line);
        },
      );
    } catch (error) {
      failures++;
      log(`FAIL seed ${request.seed}: crashed: ${(error as Error).stack ?? error}`);
      log(`reproduce: ${reproduceCommand(request, config)}`);
      if (args.count > 1) continue;
      return 1;
    }
    const elapsed = Math.round(performance.now() - runStarted);
    snapshots += result.snapshotsInstalled;
    epochChanges += result.epochChanges;
    replacements += result.replacements;
    backups += result.backups;
    memberChanges += result.memberChanges;
    if (new Set(result.sizes).size > 1) resized++;
    stranded += result.stranded;
    quorumReads += result.quorumReads.served;
    if (config.leases !== undefined) leaseRuns++;
    localReads += result.localReads;
    released += result.leaseWritesReleased;
    if (!result.ok) {
      failures++;
      log(`FAIL seed ${request.seed}: ${result.failure}`);
      log(`reproduce: ${reproduceCommand(request, config)}`);
    } else if (args.verbose || args.count === 1) {
      log(
        `ok seed ${request.seed} n=${config.replicas} ops=${result.completed}+${result.indeterminate}? ` +
          `decided=${result.decided} fast=${result.fastCommits} slow=${result.slowCommits} ` +
          `recoveries=${result.recoveries} faults=${result.faultEvents} ` +
          `backups=${result.backups} snapshots=${result.snapshotsInstalled} ` +
          `epochs=${result.epochChanges}->e${result.epoch} replaced=${result.replacements} ` +
          `members=${result.memberChanges}(${result.refusedChanges} refused) ` +
          `sizes=${result.sizes.join(">")} stranded=${result.stranded} ` +
          `qreads=${result.quorumReads.served}/${result.quorumReads.commands} ` +
          `leases=${
            config.leases === undefined ? "off" : "on"
          } localReads=${result.localReads} released=${result.leaseWritesReleased} ` +
          `sim=${result.simulatedMs}ms msgs=${result.messages} wall=${elapsed}ms`,
      );
    }
  }
  if (args.count > 1) {
    log(
      `${args.count - failures}/${args.count} seeds passed from seed ${args.seed} in ${
        Math.round((performance.now() - started) / 1000)
      } s (${backups} backups answered, ${snapshots} snapshots installed, ` +
        `${epochChanges} epoch changes proposed, ${replacements} wiped replicas replaced, ` +
        `${memberChanges} membership changes proposed, ${resized} runs changed size, ` +
        `${stranded} operations stranded at removed replicas, ` +
        `${quorumReads} reads served through a majority, ` +
        `${leaseRuns} runs with leases, ${localReads} local reads checked, ` +
        `${released} writes released past silent holders)`,
    );
  }
  return failures === 0 ? 0 : 1;
}

if (import.meta.main) {
  let args: SimArguments;
  try {
    args = parseSimArguments(Deno.args);
  } catch (error) {
    console.error(`${(error as Error).message}
usage: deno task sim --seed S --replicas N [--commands K] [--faults none|all] [--conflicts some|none]
         [--members some|none] [--leases on|off]
       deno task sim --swarm COUNT --seed S [--replicas N] [--commands K] [--members some|none]
         [--leases on|off]`);
    Deno.exit(2);
  }
  Deno.exit(runSimulations(args, (line) => console.log(line)));
}
