/**
 * Linearizable reads without a lease, through a majority of voters
 * (`src/core/quorum_read.ts`): the core asks the voters which instances the
 * read must follow and says when they are applied here; this module waits
 * for that, reads the state, and sends the read through the protocol (a
 * command) when the core gives up on it or is replaced.
 *
 * @module
 */

import type { Access } from "../core/conflict.ts";
import type { QuorumReadOutcome } from "../core/quorum_read.ts";
import type { Clock } from "../runtime/clock.ts";

/** How long a quorum read may take before it goes through the protocol (ms). */
export const DEFAULT_QUORUM_READ_TIMEOUT_MS = 1000;

/**
 * A read still waiting this long past its timeout goes through the protocol
 * whatever its core says: a core that is not ticked (a replica removed or
 * joining) never gives up on its reads itself.
 */
const EXPIRY_MARGIN_MS = 1000;

/** What {@linkcode QuorumReads} needs of the core. */
export interface QuorumReadCore {
  /** Starts a read; undefined when too many are in flight. */
  startQuorumRead(
    accesses: readonly Access[],
    options: { readonly timeoutTicks: number },
  ): number | undefined;
  /** The outcomes since the last call. */
  takeQuorumReadOutcomes(): QuorumReadOutcome[];
  /** Forgets a read. */
  cancelQuorumRead(seq: number): void;
}

/** Counters for `/status` and `/metrics`. */
export interface QuorumReadMetrics {
  /** Reads served from the state after a round trip to a majority. */
  served: number;
  /** Total time from start to answer of those (ms). */
  servedMs: number;
  /** Reads that went through the protocol instead, and why. */
  fallbacks: {
    /** Too many reads in flight. */
    refused: number;
    /** No majority answered, or what it named did not apply, in time. */
    timedOut: number;
    /** The core was replaced (an epoch ended, a snapshot was installed) or stopped. */
    interrupted: number;
  };
}

interface Waiting {
  readonly core: QuorumReadCore;
  readonly since: number;
  readonly serve: () => void;
  readonly fallBack: () => void;
}

/** The quorum reads of one replica, waiting for their core's outcome. */
export class QuorumReads {
  readonly #clock: Clock;
  readonly #tickMs: number;
  readonly #timeoutMs: number;
  /** By read number; bounded by the core's table (`MAX_QUORUM_READS`). */
  readonly #waiting = new Map<number, Waiting>();
  /** Counters. */
  readonly metrics: QuorumReadMetrics = {
    served: 0,
    servedMs: 0,
    fallbacks: { refused: 0, timedOut: 0, interrupted: 0 },
  };

  /** Reads on `clock`, whose core ticks every `tickMs`, given up after `timeoutMs`. */
  constructor(
    clock: Clock,
    options: { readonly tickMs: number; readonly timeoutMs?: number },
  ) {
    this.#clock = clock;
    this.#tickMs = options.tickMs;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_QUORUM_READ_TIMEOUT_MS;
  }

  /** Reads waiting now. */
  get waitingCount(): number {
    return this.#waiting.size;
  }

  /**
   * Starts a read of `accesses` on `core`; `done` gets `{ value: read() }`
   * once the core says the state may be read, or undefined when the read
   * must go through the protocol. `done` is called once, before this
   * returns only when the core refuses the read (too many in flight).
   */
  readThen<T>(
    core: QuorumReadCore,
    accesses: readonly Access[],
    read: () => T,
    done: (result: { value: T } | undefined) => void,
  ): void {
    const since = this.#clock.now();
    const seq = core.startQuorumRead(accesses, {
      timeoutTicks: Math.ceil(this.#timeoutMs / this.#tickMs),
    });
    if (seq === undefined) {
      this.metrics.fallbacks.refused++;
      done(undefined);
      return;
    }
    this.#waiting.set(seq, {
      core,
      since,
      serve: () => {
        const value = read();
        this.metrics.served++;
        this.metrics.servedMs += this.#clock.now() - since;
        done({ value });
      },
      fallBack: () => done(undefined),
    });
  }

  /** Takes `core`'s outcomes: serves the reads it allows, sends the others through the protocol. */
  drain(core: QuorumReadCore): void {
    if (this.#waiting.size === 0) return;
    for (const outcome of core.takeQuorumReadOutcomes()) {
      const waiting = this.#waiting.get(outcome.seq);
      if (waiting === undefined || waiting.core !== core) continue;
      this.#waiting.delete(outcome.seq);
      if (outcome.outcome === "serve") {
        waiting.serve();
      } else {
        this.metrics.fallbacks.timedOut++;
        waiting.fallBack();
      }
    }
  }

  /**
   * Sends through the protocol every read of a core other than `current`
   * (replaced: an epoch ended, a snapshot was installed; undefined: the
   * replica stops), and every read waiting well past its timeout.
   */
  release(current: QuorumReadCore | undefined): void {
    if (this.#waiting.size === 0) return;
    const now = this.#clock.now();
    for (const [seq, waiting] of [...this.#waiting]) {
      const stale = waiting.core !== current;
      // Oldest first: reads of replaced cores, then the current core's in
      // the order they started; past the first one in time, all are.
      if (!stale && now - waiting.since < this.#timeoutMs + EXPIRY_MARGIN_MS) break;
      this.#waiting.delete(seq);
      if (!stale) {
        waiting.core.cancelQuorumRead(seq);
        this.metrics.fallbacks.timedOut++;
      } else {
        this.metrics.fallbacks.interrupted++;
      }
      waiting.fallBack();
    }
  }
}
