/**
 * Time for the parts around the core: a monotonic reading and timers. The core
 * counts ticks; the driver turns a clock's timers into ticks. The process uses
 * the system clock; tests use a manual clock and the simulator a virtual one
 * on its event queue, so the same driver runs on real and on simulated time.
 *
 * @module
 */

/** A pending timer; cancelling a timer that has fired does nothing. */
export interface Timer {
  /** Stops the timer from firing. */
  cancel(): void;
}

/** A monotonic clock in milliseconds, with timers on the same time line. */
export interface Clock {
  /** Milliseconds since an arbitrary origin; never decreases. */
  now(): number;
  /**
   * Calls `callback` once, when at least `delayMs` have passed by this clock
   * (never from inside this call). Timers due at the same time fire in the
   * order they were set.
   */
  setTimer(delayMs: number, callback: () => void): Timer;
  /**
   * Calls `callback` once the current work is done, before any timer of this
   * clock fires: the driver starts its Ready loop here, so that work arriving
   * in the same turn joins one Ready.
   */
  soon(callback: () => void): void;
}

/** The process's monotonic clock (`performance.now()`) and the runtime's timers. */
export class SystemClock implements Clock {
  /** Milliseconds since the process started. */
  now(): number {
    return performance.now();
  }

  /** {@linkcode Clock.setTimer} on `setTimeout`. */
  setTimer(delayMs: number, callback: () => void): Timer {
    const handle = setTimeout(callback, Math.max(0, delayMs));
    return { cancel: () => clearTimeout(handle) };
  }

  /** {@linkcode Clock.soon} as a microtask. */
  soon(callback: () => void): void {
    queueMicrotask(callback);
  }
}

/** Bounds of {@linkcode ScaledClock}'s rate: a test fault, not a way to stop time. */
export const MIN_CLOCK_RATE = 0.1;
/** Upper bound of {@linkcode ScaledClock}'s rate. */
export const MAX_CLOCK_RATE = 10;

/**
 * For tests only, never in production: a clock that runs at `rate` times
 * another (`--unsafe-clock-rate`), readings and timers alike, so that chaos
 * runs can give one replica a clock that drifts. Leases assume clock rates
 * within the declared drift (`src/core/lease.ts`); a rate inside it must keep
 * every read linearizable, and one far outside it is the fault a checker
 * must be able to catch.
 */
export class ScaledClock implements Clock {
  readonly #base: Clock;
  readonly #rate: number;
  /** Base reading at creation: readings start where the base's did and move at the rate. */
  readonly #origin: number;

  /**
   * A clock over `base` at `rate` (from {@linkcode MIN_CLOCK_RATE} to
   * {@linkcode MAX_CLOCK_RATE}).
   *
   * @throws {RangeError} if the rate is outside those bounds.
   */
  constructor(base: Clock, rate: number) {
    if (!(rate >= MIN_CLOCK_RATE && rate <= MAX_CLOCK_RATE)) {
      throw new RangeError(
        `A clock rate must be from ${MIN_CLOCK_RATE} to ${MAX_CLOCK_RATE}, got ${rate}`,
      );
    }
    this.#base = base;
    this.#rate = rate;
    this.#origin = base.now();
  }

  /** The rate against the base clock. */
  get rate(): number {
    return this.#rate;
  }

  /** The base's time since creation, times the rate. */
  now(): number {
    return this.#origin + (this.#base.now() - this.#origin) * this.#rate;
  }

  /** {@linkcode Clock.setTimer}: `delayMs` of this clock, so `delayMs / rate` of the base's. */
  setTimer(delayMs: number, callback: () => void): Timer {
    return this.#base.setTimer(Math.max(0, delayMs) / this.#rate, callback);
  }

  /** {@linkcode Clock.soon}: the base's (no time passes). */
  soon(callback: () => void): void {
    this.#base.soon(callback);
  }
}

interface PendingTimer {
  readonly dueMs: number;
  readonly order: number;
  readonly callback: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to, for tests: timers fire during
 * {@linkcode ManualClock.advance}, each at its due time, and `soon` callbacks
 * run at the next `advance` (or {@linkcode ManualClock.runSoon}).
 */
export class ManualClock implements Clock {
  #now: number;
  #order = 0;
  #timers: PendingTimer[] = [];
  #soon: (() => void)[] = [];

  /** Creates a clock reading `start` milliseconds. */
  constructor(start = 0) {
    this.#now = start;
  }

  /** The current reading. */
  now(): number {
    return this.#now;
  }

  /** Timers waiting to fire. */
  get pendingTimers(): number {
    return this.#timers.filter((timer) => !timer.cancelled).length;
  }

  /** {@linkcode Clock.setTimer}: fires during a later `advance`. */
  setTimer(delayMs: number, callback: () => void): Timer {
    const timer: PendingTimer = {
      dueMs: this.#now + Math.max(0, delayMs),
      order: this.#order++,
      callback,
      cancelled: false,
    };
    this.#timers.push(timer);
    return { cancel: () => timer.cancelled = true };
  }

  /** {@linkcode Clock.soon}: runs at the next `advance` or `runSoon`. */
  soon(callback: () => void): void {
    this.#soon.push(callback);
  }

  /** Runs the `soon` callbacks queued so far, and those they queue. */
  runSoon(): void {
    // Bounded: a callback that queues itself forever is a bug worth a loud stop.
    for (let round = 0; this.#soon.length > 0; round++) {
      if (round >= 10_000) throw new Error("soon callbacks keep queueing more");
      const due = this.#soon;
      this.#soon = [];
      for (const callback of due) callback();
    }
  }

  /**
   * Moves the clock forward by `milliseconds`, firing every timer that falls
   * due on the way at its own time, in due order.
   *
   * @throws {RangeError} if `milliseconds` is negative: the clock is monotonic.
   */
  advance(milliseconds: number): void {
    if (!(milliseconds >= 0)) {
      throw new RangeError(`A clock only moves forward, got ${milliseconds}`);
    }
    const target = this.#now + milliseconds;
    this.runSoon();
    for (;;) {
      const next = this.#nextDue(target);
      if (next === undefined) break;
      this.#now = Math.max(this.#now, next.dueMs);
      next.cancelled = true;
      next.callback();
      this.runSoon();
    }
    this.#now = target;
  }

  #nextDue(target: number): PendingTimer | undefined {
    this.#timers = this.#timers.filter((timer) => !timer.cancelled);
    let next: PendingTimer | undefined;
    for (const timer of this.#timers) {
      if (timer.dueMs > target) continue;
      if (
        next === undefined || timer.dueMs < next.dueMs ||
        (timer.dueMs === next.dueMs && timer.order < next.order)
      ) next = timer;
    }
    return next;
  }
}
