/**
 * Catching up by snapshot: when peers pruned past this replica
 * (`src/core/retention.ts`), it fetches a snapshot from one of them and hands
 * it to the driver to install. One fetch at a time, each with a deadline (a
 * source that crashes or is cut off never answers); after a failure, the next
 * candidate source (the best one may itself wait for a snapshot, pruned past
 * by another peer), after a wait that doubles up to 30 s.
 *
 * @module
 */

import { KvError } from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { Clock } from "../runtime/clock.ts";
import { type ReplicaSnapshot, SnapshotBelowFloorError } from "../storage/types.ts";
import type { DriverMetrics } from "./metrics.ts";

/** First wait after a failed snapshot fetch, in milliseconds; it doubles up to {@linkcode SNAPSHOT_RETRY_MAX_MS}. */
export const SNAPSHOT_RETRY_MS = 1000;
/** Wait after a snapshot that was refused for being below this replica's prune floor, in milliseconds. */
export const SNAPSHOT_SHORT_RETRY_MS = 100;
/** Longest wait between snapshot fetches, in milliseconds. */
export const SNAPSHOT_RETRY_MAX_MS = 30_000;

/** Settings of a {@linkcode SnapshotFetcher}. */
export interface SnapshotFetcherOptions {
  /** This replica's id (for logs). */
  readonly id: number;
  /** Time and timers. */
  readonly clock: Clock;
  /** Fetches a snapshot from a peer; absent, a replica pruned past stays behind (and logs it). */
  readonly fetch?: (peer: number, signal: AbortSignal) => PromiseLike<ReplicaSnapshot<KvCommand>>;
  /** Longest one fetch may take, in milliseconds. */
  readonly timeoutMs: number;
  /** Installs a fetched snapshot, then calls `done` or `fail`. */
  readonly install: (
    snapshot: ReplicaSnapshot<KvCommand>,
    done: () => void,
    fail: (error: unknown) => void,
  ) => void;
  /** Counters to update. */
  readonly metrics: DriverMetrics;
  /** Receives one line per attempt and failure. */
  readonly log?: (line: string) => void;
}

/** Fetches and installs snapshots, one at a time, backing off after failures. */
export class SnapshotFetcher {
  readonly #options: SnapshotFetcherOptions;
  /** The attempt in flight (fetching or installing), if any. */
  #attempt: AbortController | undefined;
  #notBeforeMs = 0;
  #failures = 0;
  /** Sources in a row that refused at once (503), since anything else happened. */
  #refusedInRow = 0;
  #stopped = false;

  /** A fetcher with nothing in flight. */
  constructor(options: SnapshotFetcherOptions) {
    this.#options = options;
  }

  /** Whether a snapshot is being fetched or installed. */
  get busy(): boolean {
    return this.#attempt !== undefined;
  }

  /**
   * Starts an attempt if `sources` (the peers that pruned past this replica,
   * best first) is not empty, none is in flight, and the wait after the last
   * failure is over.
   */
  maybeStart(now: number, sources: readonly number[]): void {
    const options = this.#options;
    if (this.#attempt !== undefined || this.#stopped || now < this.#notBeforeMs) return;
    if (sources.length === 0) return;
    const source = sources[this.#failures % sources.length]!;
    if (options.fetch === undefined) {
      this.#notBeforeMs = now + SNAPSHOT_RETRY_MAX_MS;
      options.log?.(
        `replica ${options.id}: replica ${source} pruned past this replica, and no snapshot can be fetched here`,
      );
      return;
    }
    const attempt = new AbortController();
    this.#attempt = attempt;
    options.log?.(
      `replica ${options.id}: peers pruned past it; fetching a snapshot from replica ${source}`,
    );
    const failed = (error: unknown) => {
      if (this.#attempt !== attempt) return;
      this.#attempt = undefined;
      deadline.cancel();
      if (this.#stopped) return;
      this.#failures++;
      options.metrics.snapshotFetchesFailed++;
      // A snapshot just short of what this replica pruned of its own row (the
      // source has not executed its last instances yet) is no fault of the
      // source's: try the next one at once, without backing off. Nor is a
      // source that answered at once it has nothing to give (503: itself
      // behind, joining, or removed by a later change, as peers seen in a
      // later epoch may be): the next is tried at once, each source once in
      // a row, before the waits double (the simulator, seed 150 at n = 5
      // with membership changes: a joiner's backoff grew past 30 s passing
      // over removed members while three could give it).
      const refused = error instanceof KvError && error.status === 503;
      this.#refusedInRow = refused ? this.#refusedInRow + 1 : 0;
      const wait = error instanceof SnapshotBelowFloorError ||
          (refused && this.#refusedInRow < sources.length)
        ? SNAPSHOT_SHORT_RETRY_MS
        : Math.min(SNAPSHOT_RETRY_MS * 2 ** (this.#failures - 1), SNAPSHOT_RETRY_MAX_MS);
      this.#notBeforeMs = options.clock.now() + wait;
      options.log?.(
        `replica ${options.id}: snapshot from replica ${source} failed (${
          error instanceof Error ? error.message : String(error)
        }); next try in ${wait} ms`,
      );
    };
    // Late answers of an abandoned attempt are ignored (`#attempt` moved on).
    const deadline = options.clock.setTimer(options.timeoutMs, () => {
      attempt.abort();
      failed(new Error("timed out"));
    });
    options.fetch(source, attempt.signal).then((snapshot) => {
      if (this.#stopped || this.#attempt !== attempt) return;
      // Installing has no deadline: storage finishes what it started.
      deadline.cancel();
      options.log?.(
        `replica ${options.id}: fetched a snapshot of ${snapshot.entries.length} keys from replica ` +
          `${source} in ${Math.round(options.clock.now() - now)} ms; installing it`,
      );
      options.install(snapshot, () => {
        if (this.#attempt !== attempt) return;
        this.#attempt = undefined;
        this.#failures = 0;
        this.#refusedInRow = 0;
        options.metrics.snapshotSeconds.observe((options.clock.now() - now) / 1000);
      }, failed);
    }, failed);
  }

  /** Abandons the attempt in flight and starts no other. */
  stop(): void {
    this.#stopped = true;
    this.#attempt?.abort();
  }
}
