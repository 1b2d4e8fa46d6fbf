/**
 * A counter shared by many clients, written with Deno's own KV API
 * (`Deno.openKv`) against an epaxos-kv cluster: nothing here knows it is not
 * Deno Deploy.
 *
 * Several workers, each its own `Deno.Kv` (a separate client, round-robin
 * over the URLs given, so through different replicas), add one to two
 * counters at once:
 *
 * - `["counter", "checked"]`, a plain number, by **check-and-set**: read it,
 *   then commit `value + 1` only if its versionstamp is still the one read
 *   (`atomic().check(entry)`), else read again and retry;
 * - `["counter", "summed"]`, a `Deno.KvU64`, by **`sum`**: the store adds,
 *   so no retry is ever needed.
 *
 * Meanwhile a **watch** (through the last URL) prints the counters as they
 * change, until both reach their final values. Run it twice: the counters
 * keep counting.
 *
 * ```sh
 * deno task start    # a local cluster on 127.0.0.1:8001-8003
 * DENO_KV_ACCESS_TOKEN=any deno run --unstable-kv --allow-net=127.0.0.1 \
 *   --allow-env=DENO_KV_ACCESS_TOKEN,KV_URL examples/deno_kv_counter.ts \
 *   [URL ...] [--workers 4] [--increments 10]
 * ```
 *
 * URLs default to `$KV_URL`, else `http://127.0.0.1:8001/databases/app/connect`.
 * `DENO_KV_ACCESS_TOKEN` is the cluster's client token, or any value when it
 * has none.
 *
 * @module
 */

/** Where the counter lives when no URL is given and `KV_URL` is not set. */
export const DEFAULT_URL = "http://127.0.0.1:8001/databases/app/connect";

/** The counter incremented by check-and-set (a number). */
export const CHECKED_KEY: Deno.KvKey = ["counter", "checked"];
/** The counter incremented by `sum` (a `Deno.KvU64`). */
export const SUMMED_KEY: Deno.KvKey = ["counter", "summed"];

/** Most attempts of one check-and-set increment before giving up. */
export const MAX_ATTEMPTS = 1000;
/** How long the watch may take to see the final values once every worker is done. */
export const WATCH_DEADLINE_MS = 30_000;

/** What a run did. */
export interface CounterReport {
  /** Increments each counter received in this run (workers × increments). */
  readonly increments: number;
  /** Check-and-set commits refused because another worker wrote first (each retried). */
  readonly retries: number;
  /** `["counter", "checked"]` at the end. */
  readonly checked: number;
  /** `["counter", "summed"]` at the end. */
  readonly summed: bigint;
  /** Frames the watch delivered (it may skip values: watch is eventually consistent). */
  readonly watchFrames: number;
}

/**
 * Adds one to the number at `key` by check-and-set; returns how many
 * attempts lost to a concurrent writer.
 *
 * @throws {Error} after {@linkcode MAX_ATTEMPTS} lost attempts.
 */
export async function incrementChecked(kv: Deno.Kv, key: Deno.KvKey): Promise<number> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const current = await kv.get<number>(key);
    // `check(current)`: commit only if the key still has the versionstamp
    // read (or is still absent, when `current.versionstamp` is null).
    const result = await kv.atomic().check(current).set(key, (current.value ?? 0) + 1).commit();
    if (result.ok) return attempt;
  }
  throw new Error(`No check-and-set of ${JSON.stringify(key)} won in ${MAX_ATTEMPTS} attempts`);
}

/** Reads both counters in one consistent snapshot (`getMany`). */
export async function readCounters(
  kv: Deno.Kv,
): Promise<{ readonly checked: number; readonly summed: bigint }> {
  const [checked, summed] = await kv.getMany<[number, Deno.KvU64]>([CHECKED_KEY, SUMMED_KEY]);
  return { checked: checked.value ?? 0, summed: summed.value?.value ?? 0n };
}

/**
 * Runs `workers` clients, each adding one to both counters `increments`
 * times, while a watch prints the counters (through `log`) until it has
 * seen both reach their final values.
 */
export async function runCounter(options: {
  readonly urls: readonly string[];
  readonly workers: number;
  readonly increments: number;
  readonly log?: (line: string) => void;
}): Promise<CounterReport> {
  const { urls, workers, increments } = options;
  const log = options.log ?? console.log;
  const watching = await Deno.openKv(urls[urls.length - 1]!);
  const clients = await Promise.all(
    Array.from({ length: workers }, (_, i) => Deno.openKv(urls[i % urls.length]!)),
  );
  try {
    const before = await readCounters(watching);
    const total = workers * increments;
    const target = { checked: before.checked + total, summed: before.summed + BigInt(total) };
    log(`counters before: checked=${before.checked} summed=${before.summed}`);

    // The watch's first frame holds both keys as they are now; each later
    // frame, their latest values after a change (values in between may be
    // skipped).
    const reader = watching.watch<[number, Deno.KvU64]>([CHECKED_KEY, SUMMED_KEY]).getReader();
    let watchFrames = 0;
    const watched = (async () => {
      for (;;) {
        const frame = await reader.read();
        if (frame.done) throw new Error("The watch ended before the final values");
        watchFrames++;
        const checked = frame.value[0].value ?? 0;
        const summed = frame.value[1].value?.value ?? 0n;
        log(`watch: checked=${checked} summed=${summed}`);
        if (checked >= target.checked && summed >= target.summed) return;
      }
    })();
    // Awaited below; if a worker fails first, the closing watch must not
    // also surface as an unhandled rejection.
    watched.catch(() => {});

    const retries = await Promise.all(clients.map(async (kv) => {
      let lost = 0;
      for (let i = 0; i < increments; i++) {
        lost += await incrementChecked(kv, CHECKED_KEY);
        await kv.atomic().sum(SUMMED_KEY, 1n).commit();
      }
      return lost;
    }));

    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new Error(`The watch did not see the final values in ${WATCH_DEADLINE_MS} ms`)),
        WATCH_DEADLINE_MS,
      );
    });
    try {
      await Promise.race([watched, deadline]);
    } finally {
      clearTimeout(timer);
      await reader.cancel();
    }

    const after = await readCounters(watching);
    const report: CounterReport = {
      increments: total,
      retries: retries.reduce((sum, lost) => sum + lost, 0),
      checked: after.checked,
      summed: after.summed,
      watchFrames,
    };
    log(
      `done: ${total} increments each; check-and-set retried ${report.retries} times; ` +
        `checked=${report.checked} summed=${report.summed}; ${watchFrames} watch frames`,
    );
    return report;
  } finally {
    watching.close();
    for (const kv of clients) kv.close();
  }
}

/** The URLs and counts of a command line (`[URL ...] [--workers N] [--increments N]`). */
export function parseArgs(
  args: readonly string[],
  env: { readonly KV_URL?: string } = {},
): { readonly urls: string[]; readonly workers: number; readonly increments: number } {
  const urls: string[] = [];
  let workers = 4;
  let increments = 10;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--workers" || arg === "--increments") {
      const value = Number(args[++i]);
      if (!Number.isInteger(value) || value < 1 || value > 1000) {
        throw new Error(`${arg} takes an integer from 1 to 1000`);
      }
      if (arg === "--workers") workers = value;
      else increments = value;
    } else if (arg.startsWith("--")) {
      throw new Error(`Unknown flag ${arg}`);
    } else {
      urls.push(arg);
    }
  }
  if (urls.length === 0) urls.push(env.KV_URL ?? DEFAULT_URL);
  return { urls, workers, increments };
}

if (import.meta.main) {
  const { urls, workers, increments } = parseArgs(Deno.args, {
    KV_URL: Deno.env.get("KV_URL"),
  });
  if (Deno.env.get("DENO_KV_ACCESS_TOKEN") === undefined) {
    console.error(
      "Set DENO_KV_ACCESS_TOKEN: the cluster's client token, or any value if it has none.",
    );
    Deno.exit(2);
  }
  const report = await runCounter({ urls, workers, increments });
  const expected = report.increments;
  if (report.checked < expected || report.summed < BigInt(expected)) {
    console.error("A counter is below the increments of this run");
    Deno.exit(1);
  }
}
