/**
 * The pure parts of `deno task bench:kvconnect` (`../kvconnect.ts`):
 * arguments, latency histograms that load processes merge, medians over runs,
 * and the Markdown table.
 *
 * @module
 */

import { integerOption, option, parseArgs, UsageError } from "../../src/cli/args.ts";

/** The throughput modes, in the order a run measures them (interleaved). */
export const THROUGHPUT_MODES = [
  "kv-atomic",
  "put",
  "put-h2",
  "kv-check-set",
  "put-if-match",
] as const;

/** A throughput mode (`load.ts` describes each). */
export type ThroughputMode = typeof THROUGHPUT_MODES[number];

/** Usage line. */
export const USAGE =
  "usage: deno task bench:kvconnect [--runs N] [--duration S] [--warmup S] [--clients N] " +
  "[--procs N] [--keys N] [--watch-samples N] [--modes a,b] [--rate OPS] [--out FILE] " +
  "[--cpu-prof DIR]";

/** Settings of a benchmark run. */
export interface KvConnectBenchOptions {
  /** Interleaved rounds (every mode, then the watch samples, per round). */
  readonly runs: number;
  /** Seconds each mode is measured per round. */
  readonly durationS: number;
  /** Seconds of load before each measurement, not counted. */
  readonly warmupS: number;
  /** Concurrent clients of every mode. */
  readonly clients: number;
  /** Load processes the clients are spread over. */
  readonly procs: number;
  /** Keys of the uniform modes. */
  readonly keys: number;
  /** Watch delivery samples per round. */
  readonly watchSamples: number;
  /** Modes measured. */
  readonly modes: readonly ThroughputMode[];
  /**
   * Operations per second offered in every mode (paced clients), to compare
   * CPU per operation at the same load; absent: closed loop (throughput).
   */
  readonly rate?: number;
  /** Where to write the JSON report. */
  readonly out?: string;
  /** Directory for a V8 CPU profile of every replica (`deno run --cpu-prof`), written when they stop. */
  readonly cpuProfDir?: string;
}

/**
 * Parses the command line.
 *
 * @throws {UsageError} for an unknown option, a value out of range or an unknown mode.
 */
export function parseKvConnectArgs(args: readonly string[]): KvConnectBenchOptions {
  const parsed = parseArgs(args, {
    options: [
      "runs",
      "duration",
      "warmup",
      "clients",
      "procs",
      "keys",
      "watch-samples",
      "modes",
      "out",
      "cpu-prof",
      "rate",
    ],
  });
  if (parsed.positional.length > 0) {
    throw new UsageError(`Unexpected argument ${parsed.positional[0]}`);
  }
  const modes = (option(parsed, "modes") ?? THROUGHPUT_MODES.join(",")).split(",").filter((m) =>
    m !== ""
  );
  for (const mode of modes) {
    if (!(THROUGHPUT_MODES as readonly string[]).includes(mode)) {
      throw new UsageError(`Unknown mode ${mode}; modes: ${THROUGHPUT_MODES.join(", ")}`);
    }
  }
  const clients = integerOption(parsed, "clients", { min: 1, max: 1024, fallback: 64 })!;
  const procs = integerOption(parsed, "procs", { min: 1, max: 16, fallback: 2 })!;
  if (procs > clients) throw new UsageError(`--procs ${procs} is more than --clients ${clients}`);
  const out = option(parsed, "out");
  const cpuProfDir = option(parsed, "cpu-prof");
  const rate = integerOption(parsed, "rate", { min: 1, max: 1_000_000 });
  return {
    runs: integerOption(parsed, "runs", { min: 1, max: 20, fallback: 3 })!,
    durationS: integerOption(parsed, "duration", { min: 1, max: 600, fallback: 15 })!,
    warmupS: integerOption(parsed, "warmup", { min: 0, max: 60, fallback: 3 })!,
    clients,
    procs,
    keys: integerOption(parsed, "keys", { min: 1, max: 1_000_000, fallback: 10_000 })!,
    watchSamples: integerOption(parsed, "watch-samples", { min: 0, max: 100_000, fallback: 300 })!,
    modes: modes as ThroughputMode[],
    ...(out === undefined ? {} : { out }),
    ...(cpuProfDir === undefined ? {} : { cpuProfDir }),
    ...(rate === undefined ? {} : { rate }),
  };
}

/** Smallest latency bucket bound, in milliseconds. */
const BUCKET_BASE_MS = 0.01;
/** Each bucket's bound is this factor above the previous one's (2 % resolution). */
const BUCKET_GROWTH = 1.02;
/** Buckets (up to about 0.01 ms · 1.02^1200 ≈ 200 s; slower lands in the last). */
const BUCKETS = 1200;

/** Latencies in logarithmic buckets (2 % apart), mergeable across processes. */
export class LatencyHistogram {
  readonly #counts = new Map<number, number>();
  #total = 0;

  /** Samples recorded. */
  get count(): number {
    return this.#total;
  }

  /** Records one latency in milliseconds. */
  record(ms: number): void {
    const index = ms <= BUCKET_BASE_MS
      ? 0
      : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / BUCKET_BASE_MS) / Math.log(BUCKET_GROWTH)));
    this.#counts.set(index, (this.#counts.get(index) ?? 0) + 1);
    this.#total++;
  }

  /** Adds every sample of `other` (a histogram or its JSON). */
  merge(other: LatencyHistogram | Readonly<Record<string, number>>): void {
    const entries = other instanceof LatencyHistogram
      ? [...other.#counts]
      : Object.entries(other).map(([index, count]) => [Number(index), count] as const);
    for (const [index, count] of entries) {
      if (!Number.isInteger(index) || index < 0 || index >= BUCKETS || !(count > 0)) continue;
      this.#counts.set(index, (this.#counts.get(index) ?? 0) + count);
      this.#total += count;
    }
  }

  /**
   * The latency at quantile `q` (0 to 1): the upper bound of the bucket
   * holding it, so at most 2 % above the true value; null when empty.
   */
  quantile(q: number): number | null {
    if (this.#total === 0) return null;
    const rank = Math.max(1, Math.ceil(q * this.#total));
    let seen = 0;
    for (const index of [...this.#counts.keys()].sort((a, b) => a - b)) {
      seen += this.#counts.get(index)!;
      if (seen >= rank) return Number((BUCKET_BASE_MS * BUCKET_GROWTH ** index).toFixed(3));
    }
    return null;
  }

  /** The buckets that hold samples, by index. */
  toJSON(): Record<string, number> {
    return Object.fromEntries(this.#counts);
  }
}

/** The `q` quantile of `values` (nearest rank); null when empty. */
export function quantileOf(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** The median of the numbers among `values` (nulls left out); null when none. */
export function median(values: readonly (number | null)[]): number | null {
  const sorted = values.filter((value): value is number => value !== null).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** One measured window of one mode. */
export interface ModeRun {
  /** The mode. */
  readonly mode: ThroughputMode;
  /** Round number, from 1. */
  readonly run: number;
  /** Acknowledged operations per second. */
  readonly ops_per_s: number;
  /** Failed operations in the window (and the warm-up). */
  readonly errors: number;
  /** The first error's message, if any. */
  readonly first_error: string | null;
  /** Latency percentiles, in ms. */
  readonly p50_ms: number | null;
  readonly p99_ms: number | null;
  /** The load processes' CPU, in percent of one core, together. */
  readonly client_cpu_pct: number | null;
  /** Client CPU per operation, in µs. */
  readonly client_us_per_op: number | null;
  /** The replicas' CPU, in percent of one core, together. */
  readonly server_cpu_pct: number | null;
  /** Server CPU per operation (all replicas), in µs. */
  readonly server_us_per_op: number | null;
  /** Busy share of the whole machine, in percent. */
  readonly machine_cpu_pct: number | null;
  /** `/proc/loadavg`'s 1-minute load before the window. */
  readonly load_1m: number | null;
  /**
   * Replica-side latency from submit to answer (`/status` `latencyMs.request`,
   * the last 1024 answers of each replica at the window's end; the median
   * over the replicas), in ms: at commit for a blind PUT, after execution
   * for the others.
   */
  readonly server_request_p50_ms: number | null;
  readonly server_request_p99_ms: number | null;
  /** Replica-side latency from proposing an instance to deciding it (`latencyMs.commit`), in ms. */
  readonly commit_p50_ms: number | null;
  readonly commit_p99_ms: number | null;
  /** Share of the instances the replicas committed during the window that took the fast path. */
  readonly fast_ratio: number | null;
  /** Mean commands per instance the replicas proposed during the window (`/metrics`). */
  readonly commands_per_batch: number | null;
  /** Storage commits (group commits, each one fsync) per second, all replicas together. */
  readonly storage_commits_per_s: number | null;
  /** Their mean duration, in ms. */
  readonly storage_commit_ms: number | null;
}

/** One round's watch delivery samples. */
export interface WatchRun {
  /** Round number, from 1. */
  readonly run: number;
  /** Samples. */
  readonly samples: number;
  /** Delivery after the write was sent, in ms. */
  readonly sent_p50_ms: number | null;
  readonly sent_p99_ms: number | null;
  /** Delivery after the write was acknowledged to its writer (negative: seen first), in ms. */
  readonly acknowledged_p50_ms: number | null;
  readonly acknowledged_p99_ms: number | null;
  /** `/proc/loadavg`'s 1-minute load before the samples. */
  readonly load_1m: number | null;
}

/** The fields of a mode's runs a summary gives the median of. */
const MEDIAN_FIELDS = [
  "p50_ms",
  "p99_ms",
  "client_cpu_pct",
  "client_us_per_op",
  "server_cpu_pct",
  "server_us_per_op",
  "server_request_p50_ms",
  "server_request_p99_ms",
  "commit_p50_ms",
  "commit_p99_ms",
  "fast_ratio",
  "commands_per_batch",
  "storage_commits_per_s",
  "storage_commit_ms",
] as const;

/** Medians of one mode over its runs (each field of {@linkcode ModeRun} of that name). */
export type ModeSummary =
  & {
    readonly mode: ThroughputMode;
    readonly ops_per_s: number | null;
    readonly ops_per_s_runs: readonly number[];
    /** Errors of every run together. */
    readonly errors: number;
  }
  & { readonly [Field in typeof MEDIAN_FIELDS[number]]: number | null };

/** The JSON report. */
export interface KvConnectReport {
  readonly replicas: number;
  readonly clients: number;
  readonly procs: number;
  readonly runs: number;
  readonly duration_s: number;
  readonly warmup_s: number;
  readonly keys: number;
  /** The offered rate of every mode, ops/s (null: closed loop). */
  readonly rate: number | null;
  /** Median atomic commits per second over median blind PUTs per second (goal ≥ 0.8). */
  readonly ratio_atomic_to_put: number | null;
  /**
   * Each round's atomic commits per second over its blind PUTs per second
   * (measured back to back, so a slow phase of a shared machine falls on
   * both), and their median.
   */
  readonly ratio_atomic_to_put_runs: readonly number[];
  readonly ratio_atomic_to_put_paired: number | null;
  /** Median server CPU per atomic commit over median server CPU per blind PUT. */
  readonly server_cpu_atomic_to_put: number | null;
  /**
   * Median atomic commits per second over median blind PUTs per second over
   * HTTP/2 (`put-h2`), the protocol Deno's KV client speaks: what is left of
   * the gap once both speak it.
   */
  readonly ratio_atomic_to_put_h2: number | null;
  /** Median server CPU per atomic commit over median server CPU per blind PUT over HTTP/2. */
  readonly server_cpu_atomic_to_put_h2: number | null;
  /** Median check-guarded atomic sets over median conditional PUTs. */
  readonly ratio_check_set_to_put_if_match: number | null;
  readonly modes: readonly ModeSummary[];
  readonly watch: {
    readonly samples: number;
    readonly sent_p50_ms: number | null;
    readonly sent_p99_ms: number | null;
    readonly acknowledged_p50_ms: number | null;
    readonly acknowledged_p99_ms: number | null;
  };
  readonly mode_runs: readonly ModeRun[];
  readonly watch_runs: readonly WatchRun[];
  /** `uptime` before and after. */
  readonly uptime: readonly string[];
  readonly deno: string;
  readonly cpus: number;
}

function round(value: number | null, digits = 1): number | null {
  return value === null ? null : Number(value.toFixed(digits));
}

/** Each mode's medians over its runs (modes without runs are left out). */
export function summarizeModes(runs: readonly ModeRun[]): ModeSummary[] {
  return THROUGHPUT_MODES.flatMap((mode) => {
    const own = runs.filter((run) => run.mode === mode);
    if (own.length === 0) return [];
    const medians = Object.fromEntries(
      MEDIAN_FIELDS.map((field) => [
        field,
        round(median(own.map((run) => run[field])), field === "fast_ratio" ? 3 : 2),
      ]),
    ) as Record<typeof MEDIAN_FIELDS[number], number | null>;
    return [{
      mode,
      ops_per_s: round(median(own.map((run) => run.ops_per_s))),
      ops_per_s_runs: own.map((run) => run.ops_per_s),
      errors: own.reduce((sum, run) => sum + run.errors, 0),
      ...medians,
    }];
  });
}

/** Mode `a`'s median `field` over mode `b`'s, or null when either is missing or `b`'s is 0. */
function medianRatio(
  modes: readonly ModeSummary[],
  field: "ops_per_s" | "server_us_per_op",
  pair: { readonly a: ThroughputMode; readonly b: ThroughputMode },
): number | null {
  const top = modes.find((mode) => mode.mode === pair.a)?.[field] ?? null;
  const bottom = modes.find((mode) => mode.mode === pair.b)?.[field] ?? null;
  return top === null || bottom === null || bottom === 0 ? null : round(top / bottom, 3);
}

/** Median ops/s of `a` over that of `b`, or null. */
export function ratioOf(
  modes: readonly ModeSummary[],
  a: ThroughputMode,
  b: ThroughputMode,
): number | null {
  return medianRatio(modes, "ops_per_s", { a, b });
}

/** Per round that measured both, ops/s of `a` over that of `b`. */
export function pairedRatios(
  runs: readonly ModeRun[],
  a: ThroughputMode,
  b: ThroughputMode,
): number[] {
  const ratios: number[] = [];
  for (const top of runs) {
    if (top.mode !== a) continue;
    const bottom = runs.find((run) => run.mode === b && run.run === top.run);
    if (bottom !== undefined && bottom.ops_per_s > 0) {
      ratios.push(round(top.ops_per_s / bottom.ops_per_s, 3)!);
    }
  }
  return ratios;
}

/** Median server µs per operation of `a` over that of `b`, or null. */
export function cpuRatioOf(
  modes: readonly ModeSummary[],
  a: ThroughputMode,
  b: ThroughputMode,
): number | null {
  return medianRatio(modes, "server_us_per_op", { a, b });
}

const show = (value: number | null | undefined) =>
  value === null || value === undefined ? "–" : String(value);

/** The Markdown tables of a report. */
export function reportTable(report: KvConnectReport): string {
  const rows = report.modes.map((mode) =>
    `| ${mode.mode} | ${show(mode.ops_per_s)} | ${mode.ops_per_s_runs.join(" / ")} | ${
      show(mode.p50_ms)
    } | ${show(mode.p99_ms)} | ${mode.errors} | ${show(mode.client_cpu_pct)} | ${
      show(mode.client_us_per_op)
    } | ${show(mode.server_cpu_pct)} | ${show(mode.server_us_per_op)} |`
  );
  const watch = report.watch;
  const split = report.modes.map((mode) =>
    `| ${mode.mode} | ${show(mode.server_request_p50_ms)} | ${show(mode.server_request_p99_ms)} | ${
      show(mode.commit_p50_ms)
    } | ${show(mode.commit_p99_ms)} | ${show(mode.fast_ratio)} | ${
      show(mode.commands_per_batch)
    } | ${show(mode.storage_commits_per_s)} | ${show(mode.storage_commit_ms)} |`
  );
  return [
    `${report.replicas} replicas, ${report.clients} clients in ${report.procs} load processes, ` +
    `${report.runs} interleaved runs of ${report.duration_s} s (medians)`,
    "",
    "| mode | ops/s | runs | p50 ms | p99 ms | errors | client CPU % | client µs/op | server CPU % | server µs/op |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `atomic / PUT: ${show(report.ratio_atomic_to_put)}x (goal ≥ 0.8x; each round: ${
      report.ratio_atomic_to_put_runs.join(" / ")
    }, median ${show(report.ratio_atomic_to_put_paired)}x); server CPU per op atomic / PUT: ${
      show(report.server_cpu_atomic_to_put)
    }x; ` +
    `atomic / PUT over HTTP/2: ${show(report.ratio_atomic_to_put_h2)}x (server CPU ${
      show(report.server_cpu_atomic_to_put_h2)
    }x); ` +
    `check-set / If-Match PUT: ${show(report.ratio_check_set_to_put_if_match)}x`,
    "",
    "| mode | replica submit→answer p50 ms | p99 ms | propose→decide p50 ms | p99 ms | fast path | commands/instance | storage commits/s | ms each |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...split,
    "",
    "| watch delivery | samples | p50 ms | p99 ms |",
    "|---|---:|---:|---:|",
    `| after the write was sent | ${watch.samples} | ${show(watch.sent_p50_ms)} | ${
      show(watch.sent_p99_ms)
    } |`,
    `| after it was acknowledged | ${watch.samples} | ${show(watch.acknowledged_p50_ms)} | ${
      show(watch.acknowledged_p99_ms)
    } |`,
  ].join("\n");
}
