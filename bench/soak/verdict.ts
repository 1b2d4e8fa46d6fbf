/**
 * The arithmetic of `deno task bench:soak`: the think time that holds a
 * target rate, and the verdicts on memory and storage. Pure, so that it is
 * tested without running anything.
 *
 * @module
 */

/** One sample of the soak, taken between load segments. */
export interface SoakSample {
  /** Seconds since the load started. */
  readonly t_s: number;
  /** Successful operations per second over the segment before the sample. */
  readonly ops_per_s: number;
  /** Resident memory of each replica, in MiB (null when it could not be read). */
  readonly rss_mib: readonly (number | null)[];
  /** Bytes on disk of each replica's data directory, in MiB. */
  readonly file_mib: readonly number[];
  /** Commands each replica holds for peers that have not executed them. */
  readonly held_commands: readonly (number | null)[];
}

/** What the samples say. */
export interface SoakVerdict {
  /** Per replica: (max - min) / min of resident memory after warm-up. */
  readonly rss_spread: readonly (number | null)[];
  /** Whether every replica's memory stayed within `rssTolerance` after warm-up. */
  readonly rss_flat: boolean;
  /** Per replica: largest file size in the second half over the largest in the first (after warm-up). */
  readonly file_growth: readonly (number | null)[];
  /** Whether no replica's files grew by more than `fileTolerance` from the first half to the second. */
  readonly file_bounded: boolean;
  /** Samples after warm-up that the verdicts rest on. */
  readonly samples_after_warmup: number;
}

/**
 * Think time per request that makes `connections` closed-loop connections
 * send `targetOpsPerS` in all, given what the last segment saw: it sent
 * `measuredOpsPerS` with think time `delayMs`, so each request spent
 * `connections / measured - delay` waiting for its answer. Never negative;
 * without a measurement, the think time alone.
 */
export function nextDelayMs(options: {
  readonly connections: number;
  readonly targetOpsPerS: number;
  readonly delayMs: number;
  readonly measuredOpsPerS: number;
}): number {
  const { connections, targetOpsPerS, delayMs, measuredOpsPerS } = options;
  const periodMs = (connections / targetOpsPerS) * 1000;
  if (!(measuredOpsPerS > 0)) return periodMs;
  const latencyMs = Math.max(0, (connections / measuredOpsPerS) * 1000 - delayMs);
  return Math.max(0, periodMs - latencyMs);
}

/**
 * Judges the samples taken after `warmupS`: memory is flat when each
 * replica's resident size varies by at most `rssTolerance` (0.2: 20 %), and
 * storage is bounded when each replica's largest size in the second half of
 * the run is at most `1 + fileTolerance` times its largest in the first half
 * (a store that kept every change would grow with the load instead).
 */
export function judgeSoak(
  samples: readonly SoakSample[],
  options: {
    readonly warmupS: number;
    readonly rssTolerance: number;
    readonly fileTolerance: number;
  },
): SoakVerdict {
  const after = samples.filter((sample) => sample.t_s >= options.warmupS);
  const replicas = Math.max(0, ...samples.map((sample) => sample.rss_mib.length));
  const rssSpread: (number | null)[] = [];
  const fileGrowth: (number | null)[] = [];
  for (let id = 0; id < replicas; id++) {
    const rss = after.map((sample) => sample.rss_mib[id]).filter((v): v is number =>
      typeof v === "number" && v > 0
    );
    rssSpread.push(
      rss.length < 2 ? null : (Math.max(...rss) - Math.min(...rss)) / Math.min(...rss),
    );
    const files = after.map((sample) => sample.file_mib[id] ?? 0);
    const half = Math.floor(files.length / 2);
    const first = Math.max(0, ...files.slice(0, half));
    const second = Math.max(0, ...files.slice(half));
    fileGrowth.push(half === 0 || first === 0 ? null : second / first);
  }
  const enough = after.length >= 4;
  return {
    rss_spread: rssSpread,
    rss_flat: enough &&
      rssSpread.every((spread) => spread !== null && spread <= options.rssTolerance),
    file_growth: fileGrowth,
    file_bounded: enough &&
      fileGrowth.every((growth) => growth !== null && growth <= 1 + options.fileTolerance),
    samples_after_warmup: after.length,
  };
}
