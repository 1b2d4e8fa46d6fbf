/**
 * Blocking reads of the curl API (issue 17 item 6), in the manner of
 * Consul's blocking queries: `GET /kv/KEY?index=VERSION&wait=30s` answers as
 * soon as the key's version differs from `index` (`absent` for a key that
 * does not exist), or when `wait` has passed (default and most 5 min, as
 * Consul's default; a longer wait is cut to it, as Consul cuts its own), with
 * what a plain `GET` answers then.
 *
 * The wait follows this replica's executed state (a watcher of the shared
 * watch hub, `src/kv/watch_hub.ts`, which holds a flag, not the values in
 * between); the answer comes from a read of the request's consistency
 * (linearizable by default) made after the change was seen, so it is
 * linearizable when it returns. Every blocking read holds one watcher:
 * the hub's bound on watchers is shared with KV Connect's watches and the
 * curl API's streams.
 *
 * @module
 */

import { MAX_CONDITION_VERSION_CHARS } from "../kv/commands.ts";
import type { KvEntry } from "../kv/state_machine.ts";
import { changedWithin, type WatchHub } from "../kv/watch_hub.ts";
import { UnavailableError } from "../errors.ts";

/** Longest and default wait of a blocking read, ms (Consul's default). */
export const MAX_WAIT_MS = 5 * 60_000;

/** The `index` of a key that does not exist: a blocking read with it waits for the key to be created. */
export const ABSENT_INDEX = "absent";

const WAIT_PATTERN = /^(\d{1,9})(ms|s|m)?$/;
const WAIT_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/**
 * The wait `text` gives, in ms: a whole number of milliseconds (`500ms`),
 * seconds (`30s`, or `30`) or minutes (`5m`), at least 1 ms; cut to
 * {@linkcode MAX_WAIT_MS}. Or a problem to answer 400 with.
 */
export function parseWait(text: string): { readonly ms: number } | { readonly problem: string } {
  const match = WAIT_PATTERN.exec(text.trim());
  const ms = match === null ? 0 : Number(match[1]) * WAIT_UNIT_MS[match[2] ?? "s"]!;
  if (!(ms >= 1)) {
    return {
      problem: "wait must be a whole number of milliseconds (500ms), seconds (30s or 30) or " +
        `minutes (5m), at most 5m; got ${JSON.stringify(text.slice(0, 32))}`,
    };
  }
  return { ms: Math.min(ms, MAX_WAIT_MS) };
}

/** Why `index` cannot be a blocking read's index, or `undefined`. */
export function indexProblem(index: string): string | undefined {
  return index.length === 0 || index.length > MAX_CONDITION_VERSION_CHARS
    ? `index must be a version as returned in Kv-Version (1 to ${MAX_CONDITION_VERSION_CHARS} ` +
      `characters), or ${ABSENT_INDEX} for a key that does not exist`
    : undefined;
}

/** The index a blocking read compares with: the entry's version, or {@linkcode ABSENT_INDEX}. */
export function indexOf(entry: KvEntry | undefined): string {
  return entry?.version ?? ABSENT_INDEX;
}

/** What {@linkcode blockingRead} needs. */
export interface BlockingReadOptions {
  /** The replica's watch hub. */
  readonly hub: WatchHub;
  /** The key. */
  readonly key: string;
  /** The version the client has (or {@linkcode ABSENT_INDEX}). */
  readonly index: string;
  /** The longest wait, ms (at most {@linkcode MAX_WAIT_MS}). */
  readonly waitMs: number;
  /** Reads the key as the request asks (linearizable by default). */
  readonly read: () => Promise<KvEntry | undefined>;
  /** Aborted when the client went away: the wait ends and the watcher is freed. */
  readonly signal?: AbortSignal;
}

/**
 * Reads the key, and while its version is `index`, waits for this replica's
 * state to change it, then reads again; returns the last read's entry when
 * it differs, or when the wait is over (or the client went away).
 *
 * @throws {UnavailableError} when the replica holds its most watchers
 *   already (nothing was read or proposed).
 */
export async function blockingRead(options: BlockingReadOptions): Promise<KvEntry | undefined> {
  const { hub, key, index, read, signal } = options;
  // Opened before the first read: a change between the two is not missed
  // (the watcher's first take compares the state with `index` itself).
  const watcher = hub.watch([key]);
  if (watcher === undefined) {
    throw new UnavailableError(`This replica serves ${hub.maxWatchers} watches already`, {
      retryAfterSeconds: 5,
    });
  }
  const onAbort = () => watcher.close();
  signal?.addEventListener("abort", onAbort);
  try {
    const deadline = Date.now() + Math.min(options.waitMs, MAX_WAIT_MS);
    let entry = await read();
    while (indexOf(entry) === index && !watcher.closed) {
      const woke = await changedWithin(watcher, deadline - Date.now());
      if (!woke || watcher.closed) break;
      const taken = watcher.take();
      // Unchanged here since the last look, or changed to the version the
      // client has (this replica was behind it): nothing to read yet.
      if (taken === undefined || indexOf(taken[0]!.entry) === index) continue;
      entry = await read();
    }
    return entry;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    watcher.close();
  }
}
